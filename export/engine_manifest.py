"""The manifest beside each TensorRT plan, and the refusal to load a plan built for another target.

A TensorRT engine (a ".plan") is compiled for one GPU architecture and one TensorRT release; unlike
the ONNX file it is not portable. Every plan built here gets a JSON manifest beside it naming the
TensorRT version, GPU, precision and batch profile (plans trtexec built can be given one with
`write_engine_manifest`); `load_engine` checks it first, so a mismatch is a one-line error
instead of a deserialization failure or an engine tuned for another GPU.

The manifest check is pure Python and works on machines where TensorRT cannot be installed;
tensorrt (and torch, to name the GPU) are imported only by `load_engine`, through
`tensorrt_runtime`, at call time.
"""

from __future__ import annotations

import json
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import synthmed
from synthmed.atomic import write_text_atomic
from synthmed.errors import UserInputError
from synthmed.export import tensorrt_runtime
from synthmed.export.tensorrt_ops import onnx_inputs
from synthmed.hashing import sha256_file

if TYPE_CHECKING:
    from synthmed.export.onnx2trt import EngineSpec

# Version-compatible plans also run on a later major release only for these (built, running)
# majors: TensorRT 11.4.1 support matrix, "Engine Portability".
_VC_CROSS_MAJOR = {(8, 10), (10, 11)}


class EngineCompatibilityError(UserInputError):
    """A plan whose manifest is missing, corrupt, or names another GPU or TensorRT release."""


def _host_platform() -> str:
    # Plans are not portable across platforms (TensorRT support matrix, "Engine Portability").
    return f"{platform.system()}-{platform.machine()}"


def manifest_path(plan: Path) -> Path:
    """Where the manifest of `plan` lives: `<name>.plan.json` beside it."""
    plan = Path(plan)
    return plan.with_name(plan.name + ".json")


def write_engine_manifest(
    plan: Path,
    onnx_path: Path,
    spec: EngineSpec,
    *,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
) -> Path:
    """Record what `plan` was built from and for (also usable for plans trtexec built)."""
    plan, onnx_path = Path(plan), Path(onnx_path)
    shapes = {
        item.name: {which: list(spec.shape(which, item.dims)) for which in ("min", "opt", "max")}
        for item in onnx_inputs(onnx_path)
    }
    manifest = {
        "plan": plan.name,
        "plan_sha256": sha256_file(plan),
        "onnx_file": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "tensorrt_version": tensorrt_version,
        "gpu_name": gpu_name,
        "compute_capability": list(compute_capability),
        "platform": _host_platform(),
        "precision": spec.precision,
        "profile": {
            "min_batch": spec.min_batch,
            "opt_batch": spec.opt_batch,
            "max_batch": spec.max_batch,
            "shapes": shapes,
        },
        "workspace_mib": spec.workspace_mib,
        "hardware_compatible": spec.hardware_compatible,
        "version_compatible": spec.version_compatible,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "synthmed_version": synthmed.__version__,
    }
    path = manifest_path(plan)
    write_text_atomic(path, json.dumps(manifest, indent=2) + "\n")
    return path


def _version_tuple(version: str, where: str) -> tuple[int, ...]:
    match = re.match(r"\d+(?:\.\d+)*", str(version))
    if not match:
        raise EngineCompatibilityError(f"{where}: unreadable TensorRT version {version!r}")
    return tuple(int(part) for part in match.group().split("."))


_MANIFEST_TYPES = {
    "tensorrt_version": str,
    "gpu_name": str,
    "plan_sha256": str,
    "compute_capability": list,
    "hardware_compatible": bool,
    "version_compatible": bool,
}


def _read_manifest(plan: Path) -> dict:
    path = manifest_path(plan)
    if not path.is_file():
        raise EngineCompatibilityError(
            f"{plan.name} has no manifest {path.name}; rebuild the engine on this device"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EngineCompatibilityError(f"manifest {path} is corrupt: {err}") from err
    if not isinstance(manifest, dict):
        raise EngineCompatibilityError(f"manifest {path} is corrupt: not a JSON object")
    for key, kind in _MANIFEST_TYPES.items():
        if not isinstance(manifest.get(key), kind):
            raise EngineCompatibilityError(f"manifest {path} is corrupt: bad or missing {key!r}")
    capability = manifest["compute_capability"]
    if len(capability) != 2 or not all(type(v) is int for v in capability):
        raise EngineCompatibilityError(f"manifest {path} is corrupt: bad 'compute_capability'")
    return manifest


def _check_gpu(plan: Path, manifest: dict, gpu_name: str, capability: tuple[int, int]) -> None:
    # Without hardware compatibility a plan runs only on the GPU architecture it was tuned on;
    # AMPERE_PLUS makes it "compatible with Ampere and newer GPUs" (trtexec help), i.e. both
    # compute capabilities >= 8.0. A different model with the same capability is left to
    # TensorRT, which warns. NVIDIA's guide also says hardware compatibility is unsupported on
    # JetPack and DRIVE OS (quoted by third parties; not re-checked in NVIDIA's own text).
    built = tuple(manifest["compute_capability"])
    if built == tuple(capability):
        return
    if manifest["hardware_compatible"] and min(built, tuple(capability)) >= (8, 0):
        return
    raise EngineCompatibilityError(
        f"{plan.name} was built for {manifest['gpu_name']} (compute capability "
        f"{built[0]}.{built[1]}), this GPU is {gpu_name} (compute capability "
        f"{capability[0]}.{capability[1]}); rebuild it on this device"
    )


def _check_tensorrt(plan: Path, manifest: dict, tensorrt_version: str) -> None:
    # "To reuse plan files ... a version compatible engine must be used, otherwise version numbers
    # must match across major, minor, patch, and build versions" (TensorRT Support Policies).
    # Version-compatible plans (built with >= 8.6) run on later releases of the same major, and
    # 8 -> 10 and 10 -> 11 across majors (TensorRT 11.4.1 support matrix); never on older ones.
    built = _version_tuple(manifest["tensorrt_version"], plan.name)
    running = _version_tuple(tensorrt_version, "running TensorRT")
    if built == running:
        return
    if manifest["version_compatible"] and running > built and built[:2] >= (8, 6):
        if built[0] == running[0] or (built[0], running[0]) in _VC_CROSS_MAJOR:
            return
    hint = "" if manifest["version_compatible"] else " (or build it version-compatible)"
    raise EngineCompatibilityError(
        f"{plan.name} was built with TensorRT {manifest['tensorrt_version']}, this is TensorRT "
        f"{tensorrt_version}; rebuild it with this TensorRT{hint}"
    )


def check_engine_manifest(
    plan: Path,
    *,
    tensorrt_version: str,
    gpu_name: str,
    compute_capability: tuple[int, int],
    host_platform: str | None = None,
) -> dict:
    """Return the manifest of `plan` if it may run on this GPU/TensorRT, else raise one line.

    Pure Python: it compares the manifest (and the plan's sha256) with the values given.
    """
    plan = Path(plan)
    manifest = _read_manifest(plan)
    if not plan.is_file():
        raise EngineCompatibilityError(f"engine plan not found: {plan}")
    if sha256_file(plan) != manifest["plan_sha256"]:
        raise EngineCompatibilityError(f"{plan.name} does not match its manifest (sha256 differs)")
    built_platform = manifest.get("platform")
    if host_platform and built_platform and built_platform != host_platform:
        raise EngineCompatibilityError(
            f"{plan.name} was built on {built_platform}, this is {host_platform}"
        )
    _check_gpu(plan, manifest, gpu_name, compute_capability)
    _check_tensorrt(plan, manifest, tensorrt_version)
    return manifest


def load_engine(plan: Path) -> Any:
    """Deserialize `plan` with this machine's TensorRT after checking its manifest."""
    plan = Path(plan)
    trt = tensorrt_runtime.import_tensorrt()
    gpu_name, capability = tensorrt_runtime.cuda_device()
    manifest = check_engine_manifest(
        plan,
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        host_platform=_host_platform(),
    )
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if manifest["version_compatible"]:
        # Version-compatible plans embed TensorRT's lean runtime (host code); it may run only
        # when allowed. This plan's sha256 matched the manifest we wrote when building it.
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise EngineCompatibilityError(
            f"TensorRT could not deserialize {plan.name}; see its log above"
        )
    return engine
