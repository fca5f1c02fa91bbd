"""int8 stage II: int8 kernels, the same I/O contract, measured quality, nothing left on failure."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from synthmed.contract import ENSEMBLE, STAGE1, STAGE2
from synthmed.export.conv_transpose import conv_transpose_to_conv
from synthmed.export.torch2onnx import export_onnx
from synthmed.latents import latents
from synthmed.serving.repository import (
    RepositoryOptions,
    write_repository,
)
from synthmed.serving.runtime import InProcessRuntime
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2
from tests.conftest import DEMO_SIZE, assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("quantize") / "onnx"
    export_onnx(out, stage1=DEMO_STAGE1, stage2=DEMO_STAGE2, batch_sizes=(1, 2))
    return out


@pytest.fixture(scope="module")
def int8(demo_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo export quantized through the CLI, and what the CLI printed."""
    out = tmp_path_factory.mktemp("quantize") / "int8"
    counts = ["--calibration-count", "16", "--check-count", "16"]
    result = run_cli("export", "int8", "--onnx", demo_onnx, "--out", out, *counts)
    assert result.exit_code == 0, result.output
    return out, result.output


def _session(path: Path, **options: object) -> ort.InferenceSession:
    so = ort.SessionOptions()
    for key, value in options.items():
        setattr(so, key, value)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _masks(onnx_dir: Path, seed: int, count: int) -> np.ndarray:
    stage1 = _session(onnx_dir / "synthmed_stage1.onnx")
    return stage1.run(["mask"], {"z": latents(seed, range(count), 100)})[0]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(255.0**2 / mse) if mse else float("inf")


def test_stage2_is_qdq_and_runs_int8_convolutions(int8: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = int8
    ops = [n.op_type for n in onnx.load(str(out / "synthmed_stage2.onnx")).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # Every ConvTranspose but the fp32 output layer became phase Convs.
    assert ops.count("ConvTranspose") == 1 and "DepthToSpace" in ops
    # onnxruntime fuses the QDQ Convs into int8 kernels.
    optimized = tmp_path / "optimized.onnx"
    _session(
        out / "synthmed_stage2.onnx",
        graph_optimization_level=ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        optimized_model_filepath=str(optimized),
    )
    fused = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert fused.count("QLinearConv") >= 10


def test_io_contract_is_unchanged(demo_onnx: Path, int8: tuple[Path, str]) -> None:
    out, _ = int8
    fp32, q = _session(demo_onnx / "synthmed_stage2.onnx"), _session(out / "synthmed_stage2.onnx")
    for a, b in [(fp32.get_inputs(), q.get_inputs()), (fp32.get_outputs(), q.get_outputs())]:
        assert [(v.name, v.type, v.shape) for v in a] == [(v.name, v.type, v.shape) for v in b]
    assert q.get_inputs()[0].shape == ["batch", DEMO_SIZE, DEMO_SIZE]
    for batch in (1, 3):
        feeds = {"mask": _masks(demo_onnx, 3, batch), "z": latents(3, range(batch), 100)}
        (image,) = q.run(["image"], feeds)
        assert image.shape == (batch, DEMO_SIZE, DEMO_SIZE, 3) and image.dtype == np.uint8


def test_manifest_records_quality_and_stage1_is_copied(
    demo_onnx: Path, int8: tuple[Path, str]
) -> None:
    out, printed = int8
    assert sorted(p.name for p in out.iterdir()) == [
        "export_manifest.json",
        "synthmed_stage1.onnx",
        "synthmed_stage2.onnx",
    ]
    stage1 = (out / "synthmed_stage1.onnx").read_bytes()
    assert stage1 == (demo_onnx / "synthmed_stage1.onnx").read_bytes()
    manifest = json.loads((out / "export_manifest.json").read_text())
    source = json.loads((demo_onnx / "export_manifest.json").read_text())
    assert manifest["precision"] == "int8-stage2"
    assert sorted(manifest["models"]) == [STAGE1, STAGE2]  # no fused graph
    assert manifest["models"][STAGE1] == source["models"][STAGE1]
    stage2 = manifest["models"][STAGE2]
    assert stage2["sha256"] == hashlib.sha256((out / stage2["file"]).read_bytes()).hexdigest()
    assert stage2["inputs"] == source["models"][STAGE2]["inputs"]
    q = manifest["quantization"]
    assert q["psnr_db"]["mean"] >= 35 and q["psnr_db"]["min"] <= q["psnr_db"]["mean"]
    assert 0.95 < q["ssim"]["mean"] <= 1 and q["masks_identical"] is True
    assert q["calibration"]["count"] == 16 and q["check"]["seed"] != q["calibration"]["seed"]
    assert q["per_channel"] and q["method"] == "minmax" and q["onnxruntime_version"]
    # Left in fp32: the output layer and the noise projection's MatMuls (z -> M, U M, U M V^T).
    # Every decoder level of the U-Net (log2(size) of them) but the output layer is rewritten.
    levels = DEMO_SIZE.bit_length() - 1
    assert len(q["fp32_nodes"]) == 4 and len(q["rewritten_conv_transpose"]) == levels - 1
    assert sum("matmul" in name.lower() for name in q["fp32_nodes"]) == 3
    props = {p.key: p.value for p in onnx.load(str(out / "synthmed_stage2.onnx")).metadata_props}
    assert props["synthmed.precision"] == "int8" and json.loads(props["synthmed.sources"])
    assert f"PSNR {q['psnr_db']['mean']:.2f} dB" in printed and "SSIM" in printed


def _conv_transpose(kernel: int, stride: int, pads: list[int], **attrs: object) -> onnx.ModelProto:
    rng = np.random.default_rng(kernel * 10 + stride)
    w = rng.standard_normal((3, 5, kernel, kernel)).astype(np.float32)
    node = helper.make_node(
        "ConvTranspose", ["x", "w", "b"], ["y"], name="up", strides=[stride] * 2, pads=pads, **attrs
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "b"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(
    ("kernel", "stride", "pads"),
    [(4, 2, [1, 1, 1, 1]), (3, 1, [1, 1, 1, 1]), (6, 3, [2, 1, 1, 2]), (4, 2, [0, 2, 2, 0])],
)
def test_phase_rewrite_equals_conv_transpose(kernel: int, stride: int, pads: list[int]) -> None:
    model = _conv_transpose(kernel, stride, pads)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    expected = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    rewritten, names = conv_transpose_to_conv(model)
    assert names == ["up"]
    assert "ConvTranspose" not in [n.op_type for n in rewritten.graph.node]
    got = ort.InferenceSession(rewritten.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_other_conv_transposes_are_left_alone() -> None:
    model = _conv_transpose(3, 2, [1, 1, 1, 1], output_padding=[1, 1])
    _, names = conv_transpose_to_conv(model)
    assert names == [] and model.graph.node[0].op_type == "ConvTranspose"
    _, names = conv_transpose_to_conv(_conv_transpose(4, 2, [1, 1, 1, 1]), keep={"up"})
    assert names == []


def test_impossible_min_psnr_fails_and_writes_nothing(demo_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    args = ["--calibration-count", "8", "--check-count", "8", "--min-psnr", "200"]
    result = run_cli("export", "int8", "--onnx", demo_onnx, "--out", out, *args)
    assert_one_line_error(result, "PSNR", "--min-psnr 200", "nothing was written")
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a staging folder


def test_non_empty_out_needs_force_and_survives_a_failed_replace(
    demo_onnx: Path, tmp_path: Path
) -> None:
    out = tmp_path / "int8"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    result = run_cli("export", "int8", "--onnx", demo_onnx, "--out", out)
    assert_one_line_error(result, "not empty", "--force")
    args = ["--calibration-count", "8", "--check-count", "8", "--min-psnr", "200", "--force"]
    result = run_cli("export", "int8", "--onnx", demo_onnx, "--out", out, *args)
    assert_one_line_error(result, "--min-psnr 200")
    assert [p.name for p in tmp_path.iterdir()] == ["int8"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    ("setup", "args", "fragment"),
    [
        ("missing", [], "does not exist"),
        ("empty", [], "no export_manifest.json"),
        ("export", ["--calibration-count", "0"], "--calibration-count"),
        ("export", ["--check-count", "0"], "--check-count"),
    ],
)
def test_bad_input_is_one_line(
    setup: str, args: list[str], fragment: str, demo_onnx: Path, tmp_path: Path
) -> None:
    onnx_dir = {"missing": tmp_path / "nope", "empty": tmp_path, "export": demo_onnx}[setup]
    result = run_cli("export", "int8", "--onnx", onnx_dir, "--out", tmp_path / "out", *args)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "out").exists()


def test_repository_and_in_process_runtime_use_it_unchanged(
    demo_onnx: Path, int8: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = int8
    names = write_repository(out, tmp_path / "repo", RepositoryOptions())
    assert sorted(names) == sorted([STAGE1, STAGE2, ENSEMBLE])
    runtime = InProcessRuntime(tmp_path / "repo", threads=1)
    z = latents(11, range(4), runtime.nz)
    images, masks = runtime.run(z)
    assert images.shape == (4, DEMO_SIZE, DEMO_SIZE, 3) and images.dtype == np.uint8
    expected_masks = _masks(demo_onnx, 11, 4)
    np.testing.assert_array_equal(masks, expected_masks)
    fp32 = _session(demo_onnx / "synthmed_stage2.onnx").run(["image"], {"mask": masks, "z": z})[0]
    assert _psnr(images, fp32) >= 35
