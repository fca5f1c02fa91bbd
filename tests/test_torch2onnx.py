"""ONNX export: verified parity, one file for every batch size, nothing left behind on failure."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from synthmed.export import torch2onnx
from synthmed.export.verify import ExportVerificationError
from synthmed.latents import latents
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2, TwoStagePipeline
from tests.conftest import DEMO_SIZE, TINY_TRAIN, assert_one_line_error, run_cli
from tests.tolerance import assert_same_samples


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "onnx"
    result = run_cli("export", "onnx", "--demo", "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def tiny_runs(retina64: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    runs = {}
    for kind, size in (("stage1", "64"), ("stage2", "64"), ("single", "64"), ("small2", "32")):
        runs[kind] = root / kind
        role = "stage2" if kind == "small2" else kind
        args = ["--data", retina64, "--out", runs[kind], "--size", size, "--steps", "2"]
        assert run_cli("train", role, *args, *TINY_TRAIN).exit_code == 0
    runs["stage1_resize"] = root / "stage1_resize"
    args = [
        "--data",
        retina64,
        "--out",
        runs["stage1_resize"],
        "--steps",
        "2",
        "--upsample",
        "resize",
    ]
    assert run_cli("train", "stage1", *args, *TINY_TRAIN).exit_code == 0
    runs["stage2_resize"] = root / "stage2_resize"
    args = ["--data", retina64, "--out", runs["stage2_resize"], "--steps", "2"]
    noise = ["--noise-channels", "2", "--mode-seeking", "1", "--upsample", "resize"]
    assert run_cli("train", "stage2", *args, *noise, *TINY_TRAIN).exit_code == 0
    runs["stage2_noise"] = root / "stage2_noise"
    args = ["--data", retina64, "--out", runs["stage2_noise"], "--steps", "2"]
    noise = ["--noise-channels", "2", "--mode-seeking", "1"]
    assert run_cli("train", "stage2", *args, *noise, *TINY_TRAIN).exit_code == 0
    return runs


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_demo_export_files_contract_and_metadata(demo_onnx: Path) -> None:
    names = sorted(p.name for p in demo_onnx.iterdir())
    assert names == [
        "export_manifest.json",
        "synthmed_fused.onnx",
        "synthmed_stage1.onnx",
        "synthmed_stage2.onnx",
    ]
    manifest = json.loads((demo_onnx / "export_manifest.json").read_text())
    stage1 = manifest["models"]["synthmed_stage1"]
    assert stage1["inputs"] == {"z": {"dtype": "float32", "shape": [-1, 100]}}
    assert stage1["outputs"] == {"mask": {"dtype": "uint8", "shape": [-1, DEMO_SIZE, DEMO_SIZE]}}
    assert manifest["models"]["synthmed_stage2"]["inputs"]["mask"]["dtype"] == "uint8"
    fused_image = manifest["models"]["synthmed_fused"]["outputs"]["image"]
    assert fused_image["shape"] == [-1, DEMO_SIZE, DEMO_SIZE, 3]
    for name in ("synthmed_stage1", "synthmed_stage2", "synthmed_fused"):
        model = onnx.load(str(demo_onnx / f"{name}.onnx"))
        onnx.checker.check_model(model, full_check=True)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 18
        props = {p.key: p.value for p in model.metadata_props}
        sources = json.loads(props["synthmed.sources"])
        assert props["synthmed.precision"] == "fp32"
        assert all(len(s["weights_sha256"]) == 64 for s in sources)
        assert "lr" in sources[0]["train"]


def test_one_file_serves_batch_sizes_1_3_16_and_matches_pytorch_sampling(demo_onnx: Path) -> None:
    fused = _session(demo_onnx / "synthmed_fused.onnx")
    stage1, stage2 = (
        _session(demo_onnx / "synthmed_stage1.onnx"),
        _session(demo_onnx / "synthmed_stage2.onnx"),
    )
    pipeline = TwoStagePipeline(DEMO_STAGE1, DEMO_STAGE2)
    for batch in (1, 3, 16):
        z = latents(5, range(batch), 100)
        image, mask = fused.run(["image", "mask"], {"z": z})
        ref_image, ref_mask = pipeline(z)
        assert image.shape == (batch, DEMO_SIZE, DEMO_SIZE, 3)
        assert mask.shape == (batch, DEMO_SIZE, DEMO_SIZE)
        # Another runtime's kernels: equal up to rounding (see tests/tolerance.py).
        assert_same_samples((image, mask), (ref_image, ref_mask), image_follows_mask=True)
        # The two-model path (as the Triton ensemble runs it) gives the same result.
        (mask2,) = stage1.run(["mask"], {"z": z})
        (image2,) = stage2.run(["image"], {"mask": mask2, "z": z})
        assert np.array_equal(mask2, mask) and np.array_equal(image2, image)


def test_fresh_tiny_runs_export_with_baseline(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    result = torch2onnx.export_onnx(
        out, stage1=tiny_runs["stage1"], stage2=tiny_runs["stage2"], single=tiny_runs["single"]
    )
    assert sorted(result.models) == [
        "synthmed_fused",
        "synthmed_single",
        "synthmed_stage1",
        "synthmed_stage2",
    ]
    assert {c.batch for c in result.checks} == {1, 3, 16}
    assert all(c.ok for c in result.checks)
    (image,) = _session(out / "synthmed_single.onnx").run(None, {"z": latents(0, range(2), 16)})
    assert image.shape == (2, 64, 64, 3) and image.dtype == np.uint8


def test_resize_generators_export_with_parity(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    """--upsample resize puts nearest-neighbour Resize nodes in stage I's and stage II's
    graphs, verified like the transposed convolutions (batch 1, 3, 16 against PyTorch)."""
    out = tmp_path / "onnx"
    result = torch2onnx.export_onnx(
        out, stage1=tiny_runs["stage1_resize"], stage2=tiny_runs["stage2_resize"]
    )
    assert {c.batch for c in result.checks} == {1, 3, 16}
    assert all(c.ok for c in result.checks)
    ops = {
        graph: {node.op_type for node in onnx.load(str(out / f"synthmed_{graph}.onnx")).graph.node}
        for graph in ("stage1", "stage2")
    }
    assert "Resize" in ops["stage1"] and "Resize" in ops["stage2"]
    assert "ConvTranspose" not in ops["stage2"]  # stage I's latent projection keeps one


def test_noisy_stage2_exports_with_parity_and_renders_from_z(
    tiny_runs: dict[str, Path], tmp_path: Path
) -> None:
    """A stage II with noise maps: verified like any graph (its projection is a constant, no
    random op inside), the image changes with z and only with z, and the fused graph gives
    the two-model path's samples."""
    out = tmp_path / "onnx"
    result = torch2onnx.export_onnx(
        out, stage1=tiny_runs["stage1"], stage2=tiny_runs["stage2_noise"]
    )
    assert {c.batch for c in result.checks} == {1, 3, 16} and all(c.ok for c in result.checks)
    ops = {node.op_type for node in onnx.load(str(out / "synthmed_stage2.onnx")).graph.node}
    assert not {op for op in ops if op.startswith("Random")}
    stage1, stage2 = _session(out / "synthmed_stage1.onnx"), _session(out / "synthmed_stage2.onnx")
    z = latents(4, range(3), 16)
    (mask,) = stage1.run(["mask"], {"z": z})
    (image,) = stage2.run(["image"], {"mask": mask, "z": z})
    (again,) = stage2.run(["image"], {"mask": mask, "z": z})
    (other,) = stage2.run(["image"], {"mask": mask, "z": latents(5, range(3), 16)})
    assert np.array_equal(image, again) and not np.array_equal(image, other)
    fused = _session(out / "synthmed_fused.onnx").run(["image", "mask"], {"z": z})
    assert np.array_equal(fused[1], mask)
    assert_same_samples(tuple(fused), (image, mask), image_follows_mask=True)


def test_fp16_export_keeps_io_types(tiny_runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "onnx16"
    result = torch2onnx.export_onnx(
        out, stage1=tiny_runs["stage1"], stage2=tiny_runs["stage2"], fp16=True
    )
    assert all(c.tolerance == 8 for c in result.checks)
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert manifest["precision"] == "fp16"
    assert manifest["models"]["synthmed_fused"]["inputs"]["z"]["dtype"] == "float32"
    assert manifest["models"]["synthmed_fused"]["outputs"]["image"]["dtype"] == "uint8"


def test_corrupted_weight_fails_verification_and_leaves_nothing(
    tiny_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = torch2onnx._annotate

    def annotate_then_corrupt(job, path: Path, precision: str) -> None:
        original(job, path, precision)
        model = onnx.load(str(path))
        weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
        values = onnx.numpy_helper.to_array(weight) * -3.0
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(model, str(path))

    monkeypatch.setattr(torch2onnx, "_annotate", annotate_then_corrupt)
    out = tmp_path / "onnx"
    with pytest.raises(ExportVerificationError, match="differs from PyTorch"):
        torch2onnx.export_onnx(out, stage1=tiny_runs["stage1"], stage2=tiny_runs["stage2"])
    assert list(tmp_path.iterdir()) == []


def test_zero_tolerance_fp16_export_is_a_one_line_error(demo_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    result = run_cli(
        "export",
        "onnx",
        "--demo",
        "--fp16",
        "--tolerance",
        "0",
        "--max-mismatch",
        "0",
        "--out",
        out,
    )
    assert_one_line_error(result, "differs from PyTorch", "nothing was written")
    assert list(tmp_path.iterdir()) == []


def test_bad_input(tiny_runs: dict[str, Path], demo_onnx: Path, tmp_path: Path) -> None:
    missing = run_cli("export", "onnx", "--stage1", tmp_path / "nope", "--out", tmp_path / "o")
    assert_one_line_error(missing, "nope", "checkpoint folder does not exist")
    sizes = run_cli(
        "export",
        "onnx",
        "--stage1",
        tiny_runs["stage1"],
        "--stage2",
        tiny_runs["small2"],
        "--out",
        tmp_path / "o",
    )
    assert_one_line_error(sizes, "makes 64x64 masks", "takes 32x32")
    opset = run_cli("export", "onnx", "--demo", "--opset", "9", "--out", tmp_path / "o")
    assert_one_line_error(opset, "--opset 9 is not supported (expected 17 to 21)")
    nothing = run_cli("export", "onnx", "--out", tmp_path / "o")
    assert_one_line_error(nothing, "nothing to export")
    exists = run_cli("export", "onnx", "--demo", "--out", demo_onnx)
    assert_one_line_error(exists, "folder is not empty; pass --force")
    assert not (tmp_path / "o").exists()


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    values = [*graph.input, *graph.output, *graph.value_info]
    return {v.name: v.type.tensor_type.elem_type for v in values}


@pytest.mark.parametrize("name", ["synthmed_stage1", "synthmed_stage2", "synthmed_fused"])
def test_uint8_tensors_only_touch_casts(demo_onnx: Path, name: str) -> None:
    """TensorRT takes UINT8 only as a network input or output: nothing but Cast may read or
    write a UINT8 tensor (onnx-tensorrt's operator table)."""
    model = onnx.load(str(demo_onnx / f"{name}.onnx"))
    types = _elem_types(model)
    uint8 = onnx.TensorProto.UINT8
    for node in model.graph.node:
        touches = [t for t in [*node.input, *node.output] if types.get(t) == uint8]
        assert not touches or node.op_type == "Cast", (node.op_type, touches)


@pytest.mark.parametrize("name", ["synthmed_stage1", "synthmed_stage2", "synthmed_fused"])
def test_every_operator_is_supported_by_tensorrt(demo_onnx: Path, name: str) -> None:
    from synthmed.export.tensorrt_ops import unsupported_operators

    assert unsupported_operators(demo_onnx / f"{name}.onnx") == []
