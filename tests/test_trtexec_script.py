"""build_engines.sh: one trtexec call per model, real shapes, quoting that survives odd paths.

Runs the script with a fake trtexec, so no TensorRT is needed.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from synthmed.errors import UserInputError
from synthmed.export.onnx2trt import EngineSpec
from synthmed.export.trtexec_script import write_build_script
from tests.test_tensorrt_ops import contract_models


@pytest.fixture()
def onnx_dir(tmp_path: Path) -> Path:
    return contract_models(tmp_path / "onnx")


def _fake_trtexec(tmp_path: Path) -> Path:
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir()
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> "$TRTEXEC_LOG"\necho ---\n')
    fake.chmod(0o755)
    return fake


def test_build_script_has_one_trtexec_call_per_model(onnx_dir: Path, tmp_path: Path) -> None:
    spec = EngineSpec(
        precision="fp16",
        min_batch=1,
        opt_batch=4,
        max_batch=16,
        workspace_mib=512,
        hardware_compatible=True,
        version_compatible=True,
        timing_cache=tmp_path / "timing.cache",
    )
    script = write_build_script(onnx_dir, onnx_dir / "build_engines.sh", spec)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "ON THE DEVICE THAT WILL RUN" in text and "not portable" in text
    assert text.count('"$TRTEXEC"') == 2
    for flag in (
        '--onnx="$ONNX_DIR/synthmed_stage1.onnx"',
        '--saveEngine="$ENGINE_DIR/synthmed_stage1.plan"',
        '--minShapes="z:1x8"',
        '--optShapes="z:4x8"',
        '--maxShapes="z:16x8"',
        '--minShapes="mask:1x4x4"',
        '--optShapes="mask:4x4x4"',
        '--maxShapes="mask:16x4x4"',
        "--fp16",
        "--memPoolSize=workspace:512M",
        '--timingCacheFile="$ENGINE_DIR/timing.cache"',
        "--hardwareCompatibilityLevel=ampere+",
        "--versionCompatible",
        "--skipInference",
    ):
        assert flag in text, flag
    assert "--int8" not in text
    assert stat.S_IMODE(script.stat().st_mode) & 0o111 == 0o111
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_build_script_runs_trtexec_with_real_paths(onnx_dir: Path, tmp_path: Path) -> None:
    """Run the script with a fake trtexec: the quoting must survive a path with spaces."""
    spaced = tmp_path / "my models"
    shutil.copytree(onnx_dir, spaced)
    script = write_build_script(spaced, tmp_path / "out $x" / "build.sh", EngineSpec())
    log_file = tmp_path / "calls.log"
    env = {**os.environ, "TRTEXEC": str(_fake_trtexec(tmp_path)), "TRTEXEC_LOG": str(log_file)}
    subprocess.run(["bash", str(script)], check=True, env=env, capture_output=True)
    args = log_file.read_text().splitlines()
    paths = {a.split("=", 1)[0]: [] for a in args}
    for a in args:
        flag, _, value = a.partition("=")
        paths[flag].append(Path(value).resolve() if flag in ("--onnx", "--saveEngine") else value)
    assert paths["--onnx"] == [spaced / "synthmed_stage1.onnx", spaced / "synthmed_stage2.onnx"]
    assert tmp_path / "out $x" / "synthmed_stage2.plan" in paths["--saveEngine"]
    assert "--optShapes=mask:8x4x4" in args
    assert not any(a.startswith("--timingCacheFile") or a.startswith("--hardware") for a in args)


def test_int8_build_script_requires_the_calibration_cache(onnx_dir: Path, tmp_path: Path) -> None:
    script = write_build_script(onnx_dir, tmp_path / "b.sh", EngineSpec(precision="int8"))
    text = script.read_text()
    assert "--int8" in text and '--calib="$ENGINE_DIR/synthmed_stage1.calib"' in text
    env = {**os.environ, "TRTEXEC": str(_fake_trtexec(tmp_path)), "TRTEXEC_LOG": "/dev/null"}
    run = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert run.returncode != 0 and "missing INT8 calibration cache" in run.stderr


def test_build_script_needs_models(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="no .onnx models"):
        write_build_script(tmp_path, tmp_path / "b.sh", EngineSpec())
