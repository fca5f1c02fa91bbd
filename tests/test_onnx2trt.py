"""ONNX -> TensorRT builds: engine spec, clear errors, and the build sequence.

TensorRT's builder cannot be installed on the development machine, so everything that needs no
GPU is tested here; the real build-and-run test skips unless tensorrt and a CUDA GPU are present
(NVIDIA's TensorRT container).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from synthmed.errors import SynthmedError, UserInputError
from synthmed.export.engine_manifest import check_engine_manifest, load_engine, manifest_path
from synthmed.export.onnx2trt import EngineBuildError, EngineSpec, build_engine
from synthmed.export.tensorrt_runtime import TensorRTUnavailableError
from tests.test_tensorrt_ops import NZ, RNG, WEIGHTS, H, W, contract_models

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture()
def onnx_dir(tmp_path: Path) -> Path:
    return contract_models(tmp_path / "onnx")


# --- EngineSpec ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"precision": "bf16"}, "unknown precision 'bf16'"),
        ({"min_batch": 0}, "min_batch must be an integer >= 1"),
        ({"workspace_mib": 0}, "workspace_mib must be an integer >= 1"),
        ({"max_batch": True}, "max_batch must be an integer >= 1"),
        ({"min_batch": 4, "opt_batch": 2, "max_batch": 8}, "min <= opt <= max, got 4/2/8"),
        ({"opt_batch": 16, "max_batch": 8}, "got 1/16/8"),
    ],
)
def test_engine_spec_refuses_bad_values(kwargs: dict, fragment: str) -> None:
    with pytest.raises(UserInputError) as info:
        EngineSpec(**kwargs)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_engine_spec_accepts_a_flat_profile() -> None:
    spec = EngineSpec(precision="fp32", min_batch=4, opt_batch=4, max_batch=4)
    assert spec.shape("max", (3, 2)) == (4, 3, 2)


# --- TensorRT itself -------------------------------------------------------------------------


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed here")
def test_build_without_tensorrt_is_a_clear_error(onnx_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "engines"
    with pytest.raises(TensorRTUnavailableError) as info:
        build_engine(onnx_dir / "synthmed_stage1.onnx", out, EngineSpec())
    message = str(info.value)
    assert "TensorRT's builder is not installed" in message and "build_engines.sh" in message
    assert isinstance(info.value, SynthmedError) and "\n" not in message
    assert not out.exists()
    with pytest.raises(TensorRTUnavailableError):
        load_engine(tmp_path / "x.plan")


def test_build_refuses_bad_requests_before_needing_tensorrt(onnx_dir: Path, tmp_path: Path) -> None:
    onnx_path = onnx_dir / "synthmed_stage1.onnx"
    with pytest.raises(UserInputError, match="only used for precision int8"):
        build_engine(onnx_path, tmp_path, EngineSpec(), calibration_batches=[])
    with pytest.raises(UserInputError, match="int8 needs calibration batches"):
        build_engine(onnx_path, tmp_path, EngineSpec(precision="int8"))
    with pytest.raises(UserInputError, match="not found"):
        build_engine(tmp_path / "nope.onnx", tmp_path, EngineSpec())


def _cuda_or_skip() -> None:
    if not HAVE_TENSORRT:
        pytest.skip("tensorrt is not installed (run in NVIDIA's TensorRT container)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible")


def _run(engine: object, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a TensorRT 10 engine once with torch CUDA buffers (name-based tensor API)."""
    import tensorrt as trt
    import torch

    context = engine.create_execution_context()
    buffers = {}
    for name, array in inputs.items():
        buffers[name] = torch.from_numpy(np.ascontiguousarray(array)).cuda()
        context.set_input_shape(name, array.shape)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(context.get_tensor_shape(name))
            buffers[name] = torch.from_numpy(np.empty(shape, dtype)).cuda()
        context.set_tensor_address(name, buffers[name].data_ptr())
    stream = torch.cuda.current_stream()
    assert context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    return {name: buffers[name].cpu().numpy() for name in buffers if name not in inputs}


def test_real_fp16_engine_builds_loads_and_runs(onnx_dir: Path, tmp_path: Path) -> None:
    _cuda_or_skip()
    cache = tmp_path / "timing.cache"
    spec = EngineSpec(precision="fp16", min_batch=1, opt_batch=2, max_batch=4, timing_cache=cache)
    plan = build_engine(onnx_dir / "synthmed_stage1.onnx", tmp_path / "engines", spec)
    assert plan.is_file() and manifest_path(plan).is_file() and cache.is_file()
    z = RNG.standard_normal((3, NZ)).astype(np.float32)
    mask = _run(load_engine(plan), {"z": z})["mask"]
    logits = (z @ WEIGHTS).reshape(3, H, W)
    expected = np.where(logits > 0, 255, 0).astype(np.uint8)
    assert mask.dtype == np.uint8 and mask.shape == (3, H, W)
    unsure = np.abs(logits) < 0.05  # fp16 may flip the sign of values this close to 0
    assert np.array_equal(mask[~unsure], expected[~unsure])
    # The saved timing cache is reused by a second build of the uint8-input graph.
    build_engine(onnx_dir / "synthmed_stage2.onnx", tmp_path / "engines", spec)
    image = _run(load_engine(tmp_path / "engines" / "synthmed_stage2.plan"), {"mask": expected})
    assert np.array_equal(image["image"], np.repeat(255 - expected[..., None], 3, axis=-1))


# --- the build sequence against a stand-in tensorrt module ---------------------------------
# Not a substitute for the real test above: it checks synthmed's own sequencing (profile shapes,
# flags, calibrator feeding, timing cache round trip, nothing written on failure) on machines
# without TensorRT, using only the TensorRT 10 Python API names build_engine calls.


class _Recorder:
    """Stands for network, config, profile, parser: records every method call and attribute set."""

    def __init__(self, trt: FakeTensorRT) -> None:
        object.__setattr__(self, "trt", trt)

    def __getattr__(self, name: str) -> object:
        def record(*args: object, **kwargs: object) -> object:
            self.trt.calls.append((name, args + tuple(kwargs.items())))
            return self.trt.results.get(name, True)

        return record

    def __setattr__(self, name: str, value: object) -> None:
        self.trt.calls.append((f"set {name}", (value,)))
        if name == "int8_calibrator":
            self.trt.calibrator = value


class FakeTensorRT:
    """The attributes of `tensorrt` that build_engine touches, recording how they are used."""

    __version__ = "10.3.0.30"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple]] = []
        self.calibrator: object = None
        self.build_ok = True
        recorder = _Recorder(self)
        self.results = {
            "parse_from_file": True,
            "create_network": recorder,
            "create_builder_config": recorder,
            "create_optimization_profile": recorder,
            "get_error": recorder,
            "desc": "In node 3 (parseGraph): INVALID_NODE: bad thing\nsecond line",
            "create_timing_cache": recorder,
            "get_timing_cache": recorder,
            "serialize": b"timings",
        }
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
        self.Builder = lambda logger: _Builder(self)
        self.OnnxParser = lambda network, logger: _Parser(self)
        self.MemoryPoolType = type("MemoryPoolType", (), {"WORKSPACE": "WORKSPACE"})
        flags = {"FP16": "FP16", "INT8": "INT8", "VERSION_COMPATIBLE": "VC"}
        self.BuilderFlag = type("BuilderFlag", (), flags)
        self.HardwareCompatibilityLevel = type("HCL", (), {"AMPERE_PLUS": "AMPERE_PLUS"})
        self.NetworkDefinitionCreationFlag = type("NDCF", (), {"STRONGLY_TYPED": 1})
        self.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {})


class _Parser(_Recorder):
    num_errors = 2


class _Builder(_Recorder):
    def build_serialized_network(self, network: object, config: object) -> bytes | None:
        calibrator = self.trt.calibrator
        if calibrator is not None and calibrator.read_calibration_cache() is None:
            while calibrator.get_batch(["z"]) is not None:  # as TensorRT pulls batches
                pass
            calibrator.write_calibration_cache(memoryview(b"calibrated"))
        return b"PLAN" if self.trt.build_ok else None


@pytest.fixture()
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    import sys

    from synthmed.export import tensorrt_runtime

    trt = FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(tensorrt_runtime, "cuda_device", lambda: ("Fake GPU", (8, 7)))
    return trt


def _calls(trt: FakeTensorRT, name: str) -> list[tuple]:
    return [args for called, args in trt.calls if called == name]


def test_build_sequence_fp16(fake_trt: FakeTensorRT, onnx_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "timing.cache"
    spec = EngineSpec(
        opt_batch=4, max_batch=16, workspace_mib=256, hardware_compatible=True,
        version_compatible=True, timing_cache=cache,
    )  # fmt: skip
    plan = build_engine(onnx_dir / "synthmed_stage1.onnx", tmp_path / "out", spec)
    assert plan.read_bytes() == b"PLAN" and cache.read_bytes() == b"timings"
    assert _calls(fake_trt, "create_network") == [(0,)]
    assert _calls(fake_trt, "set_memory_pool_limit") == [("WORKSPACE", 256 << 20)]
    assert _calls(fake_trt, "set_shape") == [("z", (1, NZ), (4, NZ), (16, NZ))]
    assert _calls(fake_trt, "set_flag") == [("FP16",), ("VC",)]
    assert _calls(fake_trt, "set hardware_compatibility_level") == [("AMPERE_PLUS",)]
    assert _calls(fake_trt, "create_timing_cache") == [(b"",)]
    assert _calls(fake_trt, "set_timing_cache")[0][1] == ("ignore_mismatch", False)
    assert not _calls(fake_trt, "set int8_calibrator")
    manifest = check_engine_manifest(
        plan, tensorrt_version="10.3.0.30", gpu_name="Fake GPU", compute_capability=(8, 7)
    )
    assert manifest["version_compatible"] and manifest["profile"]["opt_batch"] == 4
    # A second build loads the saved timing cache.
    build_engine(onnx_dir / "synthmed_stage1.onnx", tmp_path / "out", spec)
    assert _calls(fake_trt, "create_timing_cache")[-1] == (b"timings",)


def test_fp16_graph_builds_strongly_typed(
    fake_trt: FakeTensorRT, onnx_dir: Path, tmp_path: Path
) -> None:
    import onnx

    path = onnx_dir / "synthmed_stage1.onnx"
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"synthmed.precision": "fp16"})
    onnx.save(model, str(path))
    build_engine(path, tmp_path / "out", EngineSpec(precision="fp16"))
    # TensorRT 11's only mode, and TensorRT 10's STRONGLY_TYPED flag: no FP16 builder flag.
    assert _calls(fake_trt, "create_network") == [(1 << 1,)]
    assert not _calls(fake_trt, "set_flag")
    with pytest.raises(UserInputError, match="is an fp16 graph; build it with precision fp16"):
        build_engine(path, tmp_path / "out", EngineSpec(precision="fp32"))


def test_fp32_graph_at_fp16_without_builder_flags_points_to_fp16_export(
    fake_trt: FakeTensorRT, onnx_dir: Path, tmp_path: Path
) -> None:
    del fake_trt.BuilderFlag.FP16  # as in TensorRT 11
    with pytest.raises(EngineBuildError, match="synthmed export onnx --fp16"):
        build_engine(onnx_dir / "synthmed_stage1.onnx", tmp_path / "out", EngineSpec())


def test_build_sequence_int8_feeds_real_batches(
    fake_trt: FakeTensorRT, onnx_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from synthmed.export import onnx2trt

    real = onnx2trt._calibration_tensor
    seen = []

    def on_cpu(torch_module: object, batch: dict, name: str, dtype: object, shape: tuple) -> object:
        try:
            return real(torch_module, batch, name, dtype, shape)
        except (RuntimeError, AssertionError):  # no CUDA here: check the same way, keep on CPU
            seen.append(batch[name].shape)
            return torch.from_numpy(np.ascontiguousarray(batch[name]))

    monkeypatch.setattr(onnx2trt, "_calibration_tensor", on_cpu)
    spec = EngineSpec(precision="int8", opt_batch=2, max_batch=4)
    batches = [{"z": RNG.standard_normal((2, NZ)).astype(np.float32)} for _ in range(3)]
    out = tmp_path / "out"
    build_engine(onnx_dir / "synthmed_stage1.onnx", out, spec, calibration_batches=batches)
    assert seen == [(2, NZ)] * 3
    assert _calls(fake_trt, "set_flag") == [("FP16",), ("INT8",)]
    assert len(_calls(fake_trt, "set_calibration_profile")) == 1
    assert (out / "synthmed_stage1.calib").read_bytes() == b"calibrated"
    # Wrongly shaped batches are reported after the build, and nothing new is written.
    (out / "synthmed_stage1.plan").unlink()
    bad = [{"z": np.zeros((3, NZ), np.float32)}]
    with pytest.raises(EngineBuildError, match=r"must be float32 \[2, 8\] \(opt batch\)"):
        build_engine(onnx_dir / "synthmed_stage1.onnx", out, spec, calibration_batches=bad)
    assert not (out / "synthmed_stage1.plan").exists()


def test_parser_and_builder_failures_write_nothing(
    fake_trt: FakeTensorRT, onnx_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    fake_trt.results["parse_from_file"] = False
    with pytest.raises(EngineBuildError) as info:
        build_engine(onnx_dir / "synthmed_stage1.onnx", out, EngineSpec())
    assert str(info.value) == (
        "TensorRT cannot parse synthmed_stage1.onnx: "
        "In node 3 (parseGraph): INVALID_NODE: bad thing (and 1 more)"
    )
    fake_trt.results["parse_from_file"] = True
    fake_trt.build_ok = False
    with pytest.raises(EngineBuildError, match="could not build synthmed_stage1.onnx"):
        build_engine(onnx_dir / "synthmed_stage1.onnx", out, EngineSpec())
    assert not out.exists() or not any(out.iterdir())
