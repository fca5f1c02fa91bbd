"""The repository writer: configs that parse and round-trip, safe versioning, same pixels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from synthmed.contract import ENSEMBLE, FUSED, STAGE1, STAGE2
from synthmed.errors import UserInputError
from synthmed.latents import latents
from synthmed.serving.repository import (
    PYTHON_MODEL,
    RepositoryOptions,
    parse_pbtxt,
    repository_models,
    to_pbtxt,
    write_repository,
)
from synthmed.serving.runtime import InProcessRuntime
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2, TwoStagePipeline
from tests.conftest import assert_one_line_error, run_cli
from tests.tolerance import assert_same_samples


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("repo") / "onnx"
    assert run_cli("export", "onnx", "--demo", "--out", out).exit_code == 0
    return out


@pytest.fixture(scope="module")
def fake_engines(demo_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in plan files: the writer copies them, it never reads them."""
    engines = tmp_path_factory.mktemp("engines")
    for name in (STAGE1, STAGE2, FUSED):
        (engines / f"{name}.plan").write_bytes(b"plan")
        (engines / f"{name}.plan.json").write_text("{}")
    return engines


@pytest.mark.parametrize("backend", ["python", "onnxruntime", "tensorrt"])
def test_every_config_parses_and_round_trips(
    backend: str, demo_onnx: Path, fake_engines: Path, tmp_path: Path
) -> None:
    options = RepositoryOptions(backend=backend, tensorrt_accelerator=backend == "onnxruntime")
    names = write_repository(demo_onnx, tmp_path, options, engines_dir=fake_engines)
    assert sorted(names) == sorted([STAGE1, STAGE2, FUSED, ENSEMBLE])
    assert list(repository_models(tmp_path)) == sorted(names)
    for name in names:
        text = (tmp_path / name / "config.pbtxt").read_text()
        config = parse_pbtxt(text)
        assert config.name == name and config.max_batch_size == 32
        assert to_pbtxt(config) == text
        assert all(len(t.dims) >= 1 for t in [*config.input, *config.output])
    stage2 = parse_pbtxt((tmp_path / STAGE2 / "config.pbtxt").read_text())
    assert list(stage2.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    kind = stage2.instance_group[0].kind
    assert (kind == stage2.instance_group[0].KIND_CPU) == (backend == "python")
    expected_file = {"python": "model.py", "onnxruntime": "model.onnx", "tensorrt": "model.plan"}[
        backend
    ]
    assert (tmp_path / STAGE2 / "1" / expected_file).is_file()
    ensemble = parse_pbtxt((tmp_path / ENSEMBLE / "config.pbtxt").read_text())
    assert ensemble.platform == "ensemble"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [STAGE1, STAGE2]
    assert sorted(o.name for o in ensemble.output) == ["image", "mask"]


def test_existing_version_needs_overwrite_or_new_version(demo_onnx: Path, tmp_path: Path) -> None:
    write_repository(demo_onnx, tmp_path, RepositoryOptions())
    with pytest.raises(UserInputError, match="version 1 of synthmed_stage1"):
        write_repository(demo_onnx, tmp_path, RepositoryOptions())
    write_repository(demo_onnx, tmp_path, RepositoryOptions(version=2))
    assert sorted(p.name for p in (tmp_path / STAGE1).iterdir()) == ["1", "2", "config.pbtxt"]
    write_repository(demo_onnx, tmp_path, RepositoryOptions(), overwrite=True)
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")]


def test_in_process_runtime_matches_pytorch(demo_onnx: Path, tmp_path: Path) -> None:
    write_repository(demo_onnx, tmp_path, RepositoryOptions(fused=False))
    runtime = InProcessRuntime(tmp_path, threads=1)
    z = latents(3, range(7), runtime.nz)
    images, masks = runtime.run(z)
    ref_images, ref_masks = TwoStagePipeline(DEMO_STAGE1, DEMO_STAGE2)(z)
    # onnxruntime against PyTorch: equal up to rounding (see tests/tolerance.py).
    assert_same_samples((images, masks), (ref_images, ref_masks), image_follows_mask=True)
    # Stage II alone, with the noise of the same samples: the same images, in any batching.
    assert np.array_equal(runtime.translate(masks, seed=3), images)
    assert np.array_equal(runtime.translate(masks[4:], seed=3, start=4), images[4:])


def test_bad_input(demo_onnx: Path, tmp_path: Path) -> None:
    no_manifest = tmp_path / "plain"
    no_manifest.mkdir()
    result = run_cli("export", "repository", "--onnx", no_manifest, "--out", tmp_path / "r")
    assert_one_line_error(result, "no export_manifest.json")
    trt = run_cli(
        "export",
        "repository",
        "--onnx",
        demo_onnx,
        "--backend",
        "tensorrt",
        "--out",
        tmp_path / "r",
    )
    assert_one_line_error(trt, "--backend tensorrt needs --engines")
    partial = tmp_path / "partial"
    shutil.copytree(demo_onnx, partial)
    manifest = json.loads((partial / "export_manifest.json").read_text())
    del manifest["models"][STAGE2]
    (partial / "export_manifest.json").write_text(json.dumps(manifest))
    lacks = run_cli("export", "repository", "--onnx", partial, "--out", tmp_path / "r")
    assert_one_line_error(lacks, "needs synthmed_stage2")
    # An export from before stage II took z: the ensemble could not give it the sample's noise.
    manifest = json.loads((demo_onnx / "export_manifest.json").read_text())
    del manifest["models"][STAGE2]["inputs"]["z"]
    (partial / "export_manifest.json").write_text(json.dumps(manifest))
    old = run_cli("export", "repository", "--onnx", partial, "--out", tmp_path / "r")
    assert_one_line_error(old, "synthmed_stage2 takes z of shape None but synthmed_stage1 draws")
    assert not (tmp_path / "r").exists()
    with pytest.raises(UserInputError, match="model repository does not exist"):
        InProcessRuntime(tmp_path / "nowhere")


def test_bundled_repository_is_what_the_writer_writes_today(demo_onnx: Path, tmp_path: Path):
    """The demo repository in git must not drift from the writer: same configs (tuning
    parameters included) and the same python-backend model file."""
    bundled = Path(__file__).resolve().parents[2] / "model_repository"
    write_repository(demo_onnx, tmp_path, RepositoryOptions(fused=False))
    for name in (STAGE1, STAGE2, ENSEMBLE):
        assert (tmp_path / name / "config.pbtxt").read_text() == (
            bundled / name / "config.pbtxt"
        ).read_text(), name
    for name in (STAGE1, STAGE2):
        assert (bundled / name / "1" / "model.py").read_bytes() == PYTHON_MODEL.read_bytes()


def test_cpu_thread_settings_reach_the_config(demo_onnx: Path, tmp_path: Path):
    write_repository(demo_onnx, tmp_path, RepositoryOptions(cpu_threads=1, cpu_spinning=True))
    params = parse_pbtxt((tmp_path / STAGE2 / "config.pbtxt").read_text()).parameters
    assert params["intra_op_threads"].string_value == "1"
    assert params["allow_spinning"].string_value == "1"
