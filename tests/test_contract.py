"""The public contract is written once: every model name and config key in one module, the
python backend's copies equal to it, and the client install importing neither torch nor onnx."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synthmed import contract

ROOT = Path(__file__).resolve().parents[1]
# Every non-test module of the product, its benchmarks included.
FOLDERS = ("synthmed", "training", "export", "serving", "client", "evaluation", "benchmarks")
SOURCES = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))
PYTHON_BACKEND = ROOT / "serving" / "python_backend" / "model.py"
MODEL_NAMES = [
    contract.STAGE1,
    contract.STAGE2,
    contract.FUSED,
    contract.SINGLE,
    contract.CONDITIONAL,
]
CONFIG_KEYS = [
    contract.PARAM_PROVENANCE,
    contract.PARAM_CLASSES,
    contract.PARAM_GRAYSCALE_CLASSES,
    contract.PARAM_DEFAULT_TRUNCATION,
    contract.PARAM_ONNX_FILE,
    contract.PARAM_INTRA_OP_THREADS,
    contract.PARAM_ALLOW_SPINNING,
]


def _literals(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    ]  # fmt: skip


# The same spelling meaning something else: (module, literal) -> why it is not the contract's.
OTHER_MEANINGS = {
    ("export/engine_manifest.py", "onnx_file"): "a field of the engine manifest",
    ("synthmed/cli.py", "synthmed"): "the program's and the distribution's name",
    ("client/cli.py", "synthmed"): "the program in a dataset card's reproduce command",
    ("evaluation/cli.py", "synthmed"): "the program in a report's reproduce command",
    ("serving/server.py", "synthmed"): "the cache folder of the python backend",
}


def _modules_spelling(word: str, *, exact: bool = False) -> list[str]:
    # A word of its own: not part of a longer name (session.intra_op.allow_spinning is
    # onnxruntime's key, not ours).
    pattern = re.compile(rf"(?<![\w.]){re.escape(word)}(?![\w])")
    found = []
    for path in SOURCES:
        if path == PYTHON_BACKEND:
            continue
        module = str(path.relative_to(ROOT))
        hits = [s for s in _literals(path) if (s == word if exact else pattern.search(s))]
        if hits and (module, word) not in OTHER_MEANINGS:
            found.append(module)
    return found


@pytest.mark.parametrize("word", MODEL_NAMES + CONFIG_KEYS)
def test_each_name_and_key_is_spelled_in_one_module(word: str) -> None:
    assert _modules_spelling(word) == ["synthmed/contract.py"]


def test_the_ensemble_name_is_spelled_in_one_module() -> None:
    # "synthmed" is also the program's and the package's name, so only the exact literal
    # (a model name on its own) is the ensemble.
    assert _modules_spelling(contract.ENSEMBLE, exact=True) == ["synthmed/contract.py"]


def test_python_backend_copies_equal_the_contract() -> None:
    source = PYTHON_BACKEND.read_text()
    namespace: dict = {}
    for line in source.splitlines():
        if re.match(r"^(PARAM_\w+|DEFAULT_PREFIX) = ", line):
            exec(line, namespace)  # noqa: S102 (constant assignments read from our own file)
    assert namespace["PARAM_ONNX_FILE"] == contract.PARAM_ONNX_FILE
    assert namespace["PARAM_INTRA_OP_THREADS"] == contract.PARAM_INTRA_OP_THREADS
    assert namespace["PARAM_ALLOW_SPINNING"] == contract.PARAM_ALLOW_SPINNING
    for spec in contract.MODELS.values():
        for name, (key, _) in (spec.optional or {}).items():
            assert namespace["DEFAULT_PREFIX"] + name == key


def test_provenance_round_trips_in_one_shape() -> None:
    records = [
        contract.Provenance("stage1", 40, "ab" * 32, "cd" * 32, "data/retina"),
        contract.Provenance("cstylegan2", 7, None, None, ["a", "b"]),
    ]
    text = contract.provenance_json(records)
    assert json.loads(text)[0] == {
        "data": "data/retina",
        "data_fingerprint": "cd" * 32,
        "role": "stage1",
        "step": 40,
        "weights_sha256": "ab" * 32,
    }
    assert contract.parse_provenance(text) == records
    assert contract.parse_provenance(json.loads(text)) == records
    assert contract.parse_provenance(None) == [] and contract.parse_provenance("") == []
    assert records[1].data_folders() == ["a", "b"] and records[0].data_folders() == ["data/retina"]


def test_label_rule() -> None:
    conditional = contract.Contract("m", "1", 8, 4, 4, True, ("retina", "cells"), 0.7)
    assert [conditional.request(x)[0] for x in ("cells", " retina ", "1", 0)] == [1, 0, 1, 0]
    assert conditional.request("cells") == (1, 0.7)
    assert conditional.request(0, 0.5) == (0, 0.5)
    for bad, message in (
        (None, "give a label, one of 0=retina, 1=cells"),
        (True, "unknown class True"),
        (1.0, "unknown class 1.0"),
        ("2", r"label 2 is out of range .* 0..1"),
        ("-1", "label -1 is out of range"),
    ):
        with pytest.raises(contract.InvalidRequestError, match=message):
            conditional.request(bad)
    with pytest.raises(contract.InvalidRequestError, match="finite"):
        conditional.request(0, float("inf"))
    dual = contract.Contract("synthmed", "1", 8, 4, 4)
    assert dual.request() == (None, None)
    with pytest.raises(contract.InvalidRequestError, match="takes no label or truncation"):
        dual.request(0, 0.5)


def test_client_install_imports_neither_torch_nor_onnx() -> None:
    code = (
        "import sys\n"
        "import synthmed.cli, synthmed.client, synthmed.serving.repository\n"
        "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
