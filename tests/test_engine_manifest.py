"""Engine manifests: what a plan records, and the refusal of plans built for another target.

The checks are pure Python, so they run without TensorRT against a stand-in plan file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from synthmed.export.engine_manifest import (
    EngineCompatibilityError,
    check_engine_manifest,
    manifest_path,
    write_engine_manifest,
)
from synthmed.export.onnx2trt import EngineSpec
from tests.test_tensorrt_ops import contract_models


@pytest.fixture()
def onnx_dir(tmp_path: Path) -> Path:
    return contract_models(tmp_path / "onnx")


A100 = {"tensorrt_version": "10.3.0.30", "gpu_name": "NVIDIA A100", "compute_capability": (8, 0)}


def _built_plan(onnx_dir: Path, tmp_path: Path, **spec: object) -> Path:
    plan = tmp_path / "synthmed_stage1.plan"
    plan.write_bytes(b"not really a plan")
    write_engine_manifest(plan, onnx_dir / "synthmed_stage1.onnx", EngineSpec(**spec), **A100)
    return plan


def test_manifest_records_build(onnx_dir: Path, tmp_path: Path) -> None:
    plan = _built_plan(onnx_dir, tmp_path, opt_batch=4)
    manifest = json.loads(manifest_path(plan).read_text())
    assert manifest_path(plan).name == "synthmed_stage1.plan.json"
    assert manifest["tensorrt_version"] == "10.3.0.30"
    assert manifest["compute_capability"] == [8, 0]
    assert manifest["profile"]["shapes"] == {"z": {"min": [1, 8], "opt": [4, 8], "max": [32, 8]}}
    assert manifest["onnx_file"] == "synthmed_stage1.onnx" and len(manifest["onnx_sha256"]) == 64
    assert manifest["precision"] == "fp16" and manifest["synthmed_version"]
    assert manifest["created"].endswith("+00:00")
    assert check_engine_manifest(plan, **A100) == manifest


def test_other_compute_capability_is_refused_naming_both(onnx_dir: Path, tmp_path: Path) -> None:
    plan = _built_plan(onnx_dir, tmp_path)
    with pytest.raises(EngineCompatibilityError) as info:
        check_engine_manifest(
            plan, tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability=(8, 7)
        )
    message = str(info.value)
    assert "NVIDIA A100 (compute capability 8.0)" in message
    assert "Orin (compute capability 8.7)" in message and "\n" not in message


def test_hardware_compatible_plan_runs_on_another_ampere_plus_gpu(
    onnx_dir: Path, tmp_path: Path
) -> None:
    plan = _built_plan(onnx_dir, tmp_path, hardware_compatible=True)
    h100 = {**A100, "gpu_name": "H100", "compute_capability": (9, 0)}
    assert check_engine_manifest(plan, **h100)["hardware_compatible"] is True
    turing = {**A100, "gpu_name": "T4", "compute_capability": (7, 5)}
    with pytest.raises(EngineCompatibilityError, match="T4"):
        check_engine_manifest(plan, **turing)


@pytest.mark.parametrize("running", ["10.3.0.26", "10.4.0.26", "10.3.1.30"])
def test_other_tensorrt_version_is_refused(onnx_dir: Path, tmp_path: Path, running: str) -> None:
    plan = _built_plan(onnx_dir, tmp_path)
    with pytest.raises(EngineCompatibilityError) as info:
        check_engine_manifest(plan, **{**A100, "tensorrt_version": running})
    assert "TensorRT 10.3.0.30" in str(info.value) and running in str(info.value)
    assert "version-compatible" in str(info.value)


@pytest.mark.parametrize(
    ("running", "accepted"),
    [("10.8.0.43", True), ("11.0.0.1", True), ("10.3.0.20", False), ("12.0.0.1", False)],
)
def test_version_compatible_plan_runs_on_later_tensorrt_only(
    onnx_dir: Path, tmp_path: Path, running: str, accepted: bool
) -> None:
    plan = _built_plan(onnx_dir, tmp_path, version_compatible=True)
    if accepted:
        check_engine_manifest(plan, **{**A100, "tensorrt_version": running})
    else:
        with pytest.raises(EngineCompatibilityError, match=running):
            check_engine_manifest(plan, **{**A100, "tensorrt_version": running})


def test_missing_or_corrupt_manifest_and_altered_plan_are_refused(
    onnx_dir: Path, tmp_path: Path
) -> None:
    plan = _built_plan(onnx_dir, tmp_path)
    plan.write_bytes(b"a different plan")
    with pytest.raises(EngineCompatibilityError, match="sha256"):
        check_engine_manifest(plan, **A100)
    manifest_path(plan).write_text("{not json")
    with pytest.raises(EngineCompatibilityError, match="corrupt"):
        check_engine_manifest(plan, **A100)
    manifest_path(plan).write_text(json.dumps({"tensorrt_version": "10.3.0.30"}))
    with pytest.raises(EngineCompatibilityError, match="corrupt: bad or missing 'gpu_name'"):
        check_engine_manifest(plan, **A100)
    manifest_path(plan).unlink()
    with pytest.raises(EngineCompatibilityError, match="has no manifest"):
        check_engine_manifest(plan, **A100)


def test_other_platform_is_refused(onnx_dir: Path, tmp_path: Path) -> None:
    plan = _built_plan(onnx_dir, tmp_path)
    with pytest.raises(EngineCompatibilityError, match="Windows-AMD64"):
        check_engine_manifest(plan, **A100, host_platform="Windows-AMD64")
