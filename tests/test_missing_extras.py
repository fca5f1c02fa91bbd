"""A command whose optional dependency is missing ends in one line naming the extra to install.

Nothing is uninstalled: each command runs in a subprocess whose `sitecustomize` puts a finder on
`sys.meta_path` that makes the named modules (and their submodules) fail to import, as they do
on an install without that extra.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

_BLOCKER = '''
import os
import sys

_BLOCKED = tuple(name for name in os.environ.get("SYNTHMED_TEST_BLOCK", "").split(",") if name)


class _Blocker:
    """Refuse the blocked modules and their submodules, as an absent package would."""

    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in _BLOCKED):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
'''


@pytest.fixture(scope="module")
def blocker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the blocking sitecustomize.py, for PYTHONPATH."""
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(_BLOCKER)
    return folder


def run_without(blocker: Path, modules: str, *args: object) -> subprocess.CompletedProcess:
    """Run `synthmed ARGS` in a subprocess where the comma-separated `modules` cannot import."""
    path = [str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "SYNTHMED_TEST_BLOCK": modules}
    return subprocess.run(
        [sys.executable, "-m", "synthmed", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def assert_names_extra(result: subprocess.CompletedProcess, extra: str, missing: str) -> str:
    """Exit code 2 and one `Error: ...` line on stderr naming the extra and what is missing."""
    lines = [line.split("\r")[-1] for line in result.stderr.split("\n")]
    lines = [line for line in lines if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: "), lines[0]
    assert f"pip install 'synthmed[{extra}]'" in lines[0], lines[0]
    assert f"({missing} is missing)" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_export_onnx_without_the_export_extra(blocker: Path, tmp_path: Path, missing: str) -> None:
    out = tmp_path / "onnx"
    result = run_without(blocker, missing, "export", "onnx", "--demo", "--out", out)
    line = assert_names_extra(result, "export", missing)
    assert line.startswith("Error: synthmed export onnx needs the export extra")
    assert not out.exists()


@pytest.mark.parametrize("missing", ["onnxruntime.quantization", "skimage", "onnx"])
def test_export_int8_without_the_export_extra(blocker: Path, tmp_path: Path, missing: str) -> None:
    # The imports come first, so a missing dependency is named before any folder is read.
    args = ["export", "int8", "--onnx", tmp_path / "absent", "--out", tmp_path / "int8"]
    result = run_without(blocker, missing, *args)
    line = assert_names_extra(result, "export", missing)
    assert line.startswith("Error: synthmed export int8 needs the export extra")


def test_export_tensorrt_script_without_onnx(blocker: Path, tmp_path: Path) -> None:
    args = ["export", "tensorrt", "--onnx", tmp_path, "--out", tmp_path / "engines"]
    result = run_without(blocker, "onnx", *args, "--script-only")
    line = assert_names_extra(result, "export", "onnx")
    assert line.startswith("Error: synthmed export tensorrt needs the export extra")


def test_export_repository_needs_no_extra(blocker: Path, tmp_path: Path) -> None:
    # The repository writer runs on the client install: the error is about the folder.
    args = ["export", "repository", "--onnx", tmp_path, "--out", tmp_path / "repo"]
    result = run_without(blocker, "torch,onnx,onnxruntime", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("Error: "), result.stderr
    assert "export_manifest.json" in result.stderr and "extra" not in result.stderr


@pytest.mark.parametrize("missing", ["skimage", "matplotlib"])
def test_evaluate_without_the_evaluate_extra(blocker: Path, tmp_path: Path, missing: str) -> None:
    result = run_without(blocker, missing, "evaluate", "--real", tmp_path, "--out", tmp_path)
    assert_names_extra(result, "evaluate", missing)


def test_train_without_torch_names_the_train_extra(blocker: Path, tmp_path: Path) -> None:
    args = ["train", "stage1", "--data", tmp_path, "--out", tmp_path / "run"]
    result = run_without(blocker, "torch", *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        "Error: this command needs the training extra: pip install 'synthmed[train]'"
    )


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("stage1", "Image side (power of two, 32..1024). [default: 64]"),
        ("stylegan2", "skip|resnet"),
    ],
)
def test_training_help_needs_no_torch(blocker: Path, command: str, shown: str) -> None:
    # The options' defaults and choices come from the config dataclasses, which import no torch.
    result = run_without(blocker, "torch", "train", command, "--help")
    assert result.returncode == 0, result.stderr
    assert shown in " ".join(result.stdout.split())
