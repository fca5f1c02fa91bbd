"""TensorRT engines from synthmed's ONNX graphs, built on this machine's GPU.

A TensorRT engine (a ".plan") is compiled for one GPU architecture and one TensorRT release; unlike
the ONNX file it is not portable. So engines are built on the machine that runs them, either here
with `build_engine` (NVIDIA's TensorRT container) or with the `build_engines.sh` that
`trtexec_script.write_build_script` writes for trtexec on the device (a Jetson has trtexec but
seldom our Python stack). Every plan built here gets the JSON manifest of `engine_manifest` beside
it, which `load_engine` checks before deserializing; the operator check and the graph's inputs
come from `tensorrt_ops`. `EngineSpec` (precision, batch profile, portability flags) is shared by
both ways of building.

tensorrt is imported only inside the functions that need it: the script writer, the operator check
and the manifest check (`trtexec_script`, `tensorrt_ops`, `engine_manifest`) are pure Python and
work on machines where TensorRT cannot be installed.

API facts were checked against NVIDIA's TensorRT 10 Python bindings (python/src/infer/pyCore.cpp,
pyInt8.cpp in NVIDIA/TensorRT), the trtexec help text (samples/common/sampleOptions.cpp) and the
TensorRT 10.16 / 11.x documentation pages cited below.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from synthmed.atomic import write_bytes_atomic
from synthmed.errors import SynthmedError, UserInputError
from synthmed.export import tensorrt_runtime
from synthmed.export.engine_manifest import write_engine_manifest
from synthmed.export.tensorrt_ops import OnnxInput, onnx_inputs, unsupported_operators

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")


class EngineBuildError(SynthmedError):
    """TensorRT refused the ONNX graph or failed to build an engine from it."""


@dataclass(frozen=True)
class EngineSpec:
    """How to build an engine: precision, batch optimization profile and portability flags."""

    precision: str = "fp16"  # int8 also needs calibration data (or a saved .calib cache)
    min_batch: int = 1  # the engine accepts batches min..max; kernels are tuned for opt
    opt_batch: int = 8
    max_batch: int = 32
    workspace_mib: int = 1024  # scratch memory TensorRT's kernels may use while running
    hardware_compatible: bool = False  # one plan for all Ampere-or-newer GPUs, maybe slower
    version_compatible: bool = False  # plan also runs on later TensorRT releases, maybe slower
    timing_cache: Path | None = None  # kernel timings reused by later builds on the same GPU

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserInputError(
                f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}"
            )
        for name in ("min_batch", "opt_batch", "max_batch", "workspace_mib"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserInputError(f"{name} must be an integer >= 1, got {value!r}")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserInputError(
                "batch profile needs min <= opt <= max, got "
                f"{self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )

    def shape(self, which: str, dims: tuple[int, ...]) -> tuple[int, ...]:
        """The full shape of an input with non-batch `dims` at profile point min, opt or max."""
        return (getattr(self, f"{which}_batch"), *dims)


def _make_calibrator(
    trt: Any, inputs: list[OnnxInput], spec: EngineSpec, batches: Any, cache: Any
) -> Any:
    """An IInt8EntropyCalibrator2 fed with real input batches copied into torch CUDA tensors.

    torch is already required to build (it names the GPU), so its CUDA tensors serve as the device
    buffers rather than adding cuda-python; TensorRT only needs each buffer's address
    (`data_ptr()`), and the tensors are kept until the next batch so the memory stays valid.
    Exceptions cannot cross back into TensorRT's C++ callback, so they are stored and re-raised
    after the build. get_batch_size() is 1, as Polygraphy's calibrator returns for explicit-batch
    networks; the batch size is the arrays' dim 0, which must be the profile's opt batch (the shape
    used to calibrate with `set_calibration_profile`; that it is the opt shape is from memory of
    the Developer Guide, not re-checked).
    """
    import torch

    expected = {item.name: (item.dtype, spec.shape("opt", item.dims)) for item in inputs}

    class _EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # required by the pybind11 trampoline
            self.batches = iter(batches)
            self.cache = cache
            self.device: list[Any] = []
            self.error: Exception | None = None
            self.count = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                batch = next(self.batches)
                self.device = [
                    _calibration_tensor(torch, batch, name, *expected[name]) for name in names
                ]
            except StopIteration:
                return None
            except Exception as err:  # re-raised by build_engine after the build
                self.error = err
                return None
            self.count += 1
            return [tensor.data_ptr() for tensor in self.device]

        def read_calibration_cache(self) -> bytes | None:
            return self.cache

        def write_calibration_cache(self, data: Any) -> None:
            self.cache = bytes(data)

    return _EntropyCalibrator()


def _calibration_tensor(torch: Any, batch: Any, name: str, dtype: np.dtype, shape: tuple) -> Any:
    if name not in batch:
        raise UserInputError(f"calibration batch has no array for input {name!r}")
    array = np.ascontiguousarray(batch[name])
    if array.dtype != dtype or array.shape != shape:
        raise UserInputError(
            f"calibration input {name!r} must be {dtype} {list(shape)} (opt batch), "
            f"got {array.dtype} {list(array.shape)}"
        )
    return torch.from_numpy(array).to("cuda")


def graph_precision(onnx_path: Path) -> str:
    """ "fp16" for a graph `synthmed export onnx --fp16` wrote, else "fp32" (its metadata)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    return props.get("synthmed.precision", "fp32")


def _strongly_typed(spec: EngineSpec, onnx_path: Path) -> bool:
    """Whether the network takes its precision from the graph's own types.

    An fp16 graph is built strongly typed: TensorRT runs each layer in the type the graph
    gives it, which is the only mode of TensorRT 11 and works the same on TensorRT 10. An
    fp32 graph built at fp16 or int8 needs TensorRT 10's weakly typed builder flags instead.
    """
    if graph_precision(onnx_path) == "fp16":
        if spec.precision != "fp16":
            raise UserInputError(
                f"{onnx_path.name} is an fp16 graph; build it with precision fp16, "
                f"not {spec.precision}"
            )
        return True
    return False


def _network_flags(trt: Any, strongly_typed: bool) -> int:
    # STRONGLY_TYPED is a creation flag in TensorRT 10 and always on (flag ignored) in 11.
    # Explicit batch is the only mode since TensorRT 10, so no other flag is needed.
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 1 << int(flag) if strongly_typed and flag is not None else 0


def _set_precision(trt: Any, config: Any, spec: EngineSpec, strongly_typed: bool) -> None:
    if spec.precision == "fp32" or strongly_typed:
        return
    # BuilderFlag.FP16/INT8 and the INT8 calibrators are deprecated in TensorRT 10 and removed in
    # TensorRT 11 ("Removed Python APIs and Replacements", TensorRT 11 migration guide).
    needed = [hasattr(trt.BuilderFlag, "FP16")]
    if spec.precision == "int8":
        needed += [hasattr(trt.BuilderFlag, "INT8"), hasattr(trt, "IInt8EntropyCalibrator2")]
    if not all(needed):
        hint = (
            "export the graph with `synthmed export onnx --fp16`, which TensorRT builds "
            "strongly typed"
            if spec.precision == "fp16"
            else "int8 needs an explicitly quantized (Q/DQ) graph, which synthmed does not export"
        )
        raise EngineBuildError(
            f"precision {spec.precision} from an fp32 graph needs TensorRT 10's builder flags, "
            f"removed in TensorRT {trt.__version__}; {hint}"
        )
    # INT8 layer selection falls back to FP16 rather than FP32 when FP16 is also set.
    config.set_flag(trt.BuilderFlag.FP16)
    if spec.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)


def _attach_timing_cache(config: Any, path: Path | None) -> None:
    if path is None:
        return
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    # set_timing_cache returns False for a cache from another device/TensorRT: start a fresh one.
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("timing cache %s does not match this GPU/TensorRT; starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _parse(trt: Any, network: Any, logger: Any, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = [str(parser.get_error(i).desc()).splitlines()[0] for i in range(parser.num_errors)]
    for error in errors:
        log.error("%s: %s", onnx_path.name, error)
    first = errors[0] if errors else "unknown parser error"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise EngineBuildError(f"TensorRT cannot parse {onnx_path.name}: {first}{more}")


def _check_build_request(
    onnx_path: Path, spec: EngineSpec, calibration: object, calib_path: Path
) -> list[OnnxInput]:
    if not onnx_path.is_file():
        raise UserInputError(f"ONNX model not found: {onnx_path}")
    inputs = onnx_inputs(onnx_path)
    missing = unsupported_operators(onnx_path)
    if missing:
        raise EngineBuildError(
            f"{onnx_path.name} has ops TensorRT 10 cannot parse: {', '.join(missing)}"
        )
    if calibration is not None and spec.precision != "int8":
        raise UserInputError("calibration batches are only used for precision int8")
    if spec.precision == "int8" and calibration is None and not calib_path.is_file():
        raise UserInputError(f"int8 needs calibration batches or an existing cache {calib_path}")
    return inputs


def _configure(
    trt: Any, builder: Any, inputs: list[OnnxInput], spec: EngineSpec, strongly_typed: bool
) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, spec.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    for item in inputs:
        profile.set_shape(item.name, *(spec.shape(w, item.dims) for w in ("min", "opt", "max")))
    config.add_optimization_profile(profile)
    _set_precision(trt, config, spec, strongly_typed)
    if spec.precision == "int8":
        config.set_calibration_profile(profile)  # deprecated since TensorRT 10.1, removed in 11
    if spec.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if spec.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    _attach_timing_cache(config, spec.timing_cache)
    return config


def build_engine(
    onnx_path: Path,
    out_dir: Path,
    spec: EngineSpec,
    calibration_batches: Iterable[dict[str, np.ndarray]] | None = None,
) -> Path:
    """Build `<out_dir>/<stem>.plan` and its manifest from an ONNX graph, on this machine's GPU.

    One optimization profile spans the batch axis of every input (min/opt/max of `spec`). For
    int8, `calibration_batches` yields {input name: array of opt_batch rows}; if it is None an
    existing `<stem>.calib` cache is reused, and a fresh cache is saved for trtexec's --calib.
    The timing cache, if given, is loaded and saved back so later builds skip tactic timing.
    On failure nothing is written.
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    calib_path = out_dir / f"{onnx_path.stem}.calib"
    inputs = _check_build_request(onnx_path, spec, calibration_batches, calib_path)
    trt = tensorrt_runtime.import_tensorrt()
    gpu_name, capability = tensorrt_runtime.cuda_device()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = _strongly_typed(spec, onnx_path)
    network = builder.create_network(_network_flags(trt, strongly_typed))
    _parse(trt, network, logger, onnx_path)
    config = _configure(trt, builder, inputs, spec, strongly_typed)
    calibrator = None
    if spec.precision == "int8":
        cached = calib_path.read_bytes() if calibration_batches is None else None
        calibrator = _make_calibrator(trt, inputs, spec, calibration_batches or (), cached)
        config.int8_calibrator = calibrator  # deprecated since TensorRT 10.1, removed in 11

    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None and calibrator.error is not None:
        raise EngineBuildError(f"INT8 calibration failed: {calibrator.error}") from calibrator.error
    if calibrator is not None and calibration_batches is not None and not calibrator.count:
        raise EngineBuildError("INT8 calibration got no batches from calibration_batches")
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build {onnx_path.name}; see its log above")

    plan = out_dir / f"{onnx_path.stem}.plan"
    write_bytes_atomic(plan, bytes(serialized))
    try:
        write_engine_manifest(
            plan, onnx_path, spec, tensorrt_version=trt.__version__, gpu_name=gpu_name,
            compute_capability=capability,
        )  # fmt: skip
    except BaseException:
        plan.unlink(missing_ok=True)  # a plan without its manifest would be refused anyway
        raise
    if calibrator is not None and calibrator.cache:
        write_bytes_atomic(calib_path, calibrator.cache)
    if spec.timing_cache is not None:
        write_bytes_atomic(spec.timing_cache, bytes(config.get_timing_cache().serialize()))
    return plan
