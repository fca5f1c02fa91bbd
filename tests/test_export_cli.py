"""`synthmed export tensorrt`: the trtexec script always, engines where TensorRT exists."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from synthmed.export.calibration import CALIBRATION_SEED, calibration_batches
from synthmed.latents import latents
from tests.conftest import DEMO_SIZE, assert_one_line_error, run_cli

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trt") / "onnx"
    assert run_cli("export", "onnx", "--demo", "--out", out).exit_code == 0
    return out


def test_script_only_writes_a_valid_trtexec_script(demo_onnx: Path, tmp_path: Path) -> None:
    result = run_cli("export", "tensorrt", "--onnx", demo_onnx, "--out", tmp_path, "--script-only")
    assert result.exit_code == 0, result.output
    script = tmp_path / "build_engines.sh"
    text = script.read_text()
    for name in ("synthmed_stage1", "synthmed_stage2", "synthmed_fused"):
        assert f"{name}.onnx" in text and f"{name}.plan" in text
    assert '--minShapes="z:1x100"' in text
    # stage II: the mask and its latent
    assert f'--maxShapes="mask:32x{DEMO_SIZE}x{DEMO_SIZE},z:32x100"' in text
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0


@pytest.mark.skipif(
    HAS_TENSORRT, reason="TensorRT is installed; the real build is tested elsewhere"
)
def test_without_tensorrt_the_build_is_a_one_line_error(demo_onnx: Path, tmp_path: Path) -> None:
    result = run_cli("export", "tensorrt", "--onnx", demo_onnx, "--out", tmp_path)
    assert_one_line_error(result, "TensorRT", "not installed")
    assert (tmp_path / "build_engines.sh").exists()
    assert not list(tmp_path.glob("*.plan"))


def test_missing_onnx_folder(tmp_path: Path) -> None:
    result = run_cli("export", "tensorrt", "--onnx", tmp_path / "nope", "--out", tmp_path / "e")
    assert_one_line_error(result, "nope", "does not exist")


def test_int8_calibration_feeds_stage2_real_stage1_masks(demo_onnx: Path, tmp_path: Path) -> None:
    batches = list(calibration_batches(demo_onnx / "synthmed_stage2.onnx", 2, 4))
    assert len(batches) == 2 and batches[0]["mask"].shape == (4, DEMO_SIZE, DEMO_SIZE)
    stage1 = ort.InferenceSession(str(demo_onnx / "synthmed_stage1.onnx"))
    (expected,) = stage1.run(["mask"], {"z": latents(CALIBRATION_SEED, range(4, 8), 100)})
    assert np.array_equal(batches[1]["mask"], expected)
    # ... with the latents they came from, which stage II's noise maps are spread from.
    assert np.array_equal(batches[1]["z"], latents(CALIBRATION_SEED, range(4, 8), 100))
    # Alone, stage II cannot be calibrated on real masks: say so rather than use noise.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(demo_onnx / "synthmed_stage2.onnx", alone)
    with pytest.raises(Exception, match="needs stage I's masks"):
        next(calibration_batches(alone / "synthmed_stage2.onnx", 1, 4))
