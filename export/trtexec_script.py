"""build_engines.sh: a bash script that builds synthmed's TensorRT engines with trtexec.

A TensorRT engine is compiled for one GPU architecture and one TensorRT release, so it must be
built on the machine that runs it. A Jetson has trtexec but seldom our Python stack, so instead
of `build_engine` it gets the script `write_build_script` writes: one trtexec call per ONNX model,
with each model's real input names and shapes and the flags of one `EngineSpec`.

Pure Python: it needs onnx to read the inputs, never tensorrt. Flags were checked against the
trtexec help text of TensorRT 10 (samples/common/sampleOptions.cpp in NVIDIA/TensorRT).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import synthmed
from synthmed.atomic import write_text_atomic
from synthmed.errors import UserInputError
from synthmed.export.onnx2trt import EngineSpec
from synthmed.export.tensorrt_ops import OnnxInput, onnx_inputs


def _dq(text: str) -> str:
    """`text` made safe inside a double-quoted bash word (which still expands $VARS we add)."""
    return re.sub(r'([$`"\\])', r"\\\1", text)


def _shape_spec(inputs: list[OnnxInput], spec: EngineSpec, which: str) -> str:
    parts = []
    for item in inputs:
        if "'" in item.name:
            raise UserInputError(f"input name {item.name!r} cannot be passed to trtexec")
        # trtexec lets names be wrapped in single quotes (ex: 'Input:0') when they hold ':' or ','.
        name = f"'{item.name}'" if any(c in item.name for c in ":,") else item.name
        parts.append(f"{name}:{'x'.join(str(d) for d in spec.shape(which, item.dims))}")
    return _dq(",".join(parts))


def _trtexec_command(onnx_file: Path, spec: EngineSpec) -> list[str]:
    stem = _dq(onnx_file.stem)
    inputs = onnx_inputs(onnx_file)
    args = [
        f'--onnx="$ONNX_DIR/{_dq(onnx_file.name)}"',
        f'--saveEngine="$ENGINE_DIR/{stem}.plan"',
        *(f'--{w}Shapes="{_shape_spec(inputs, spec, w)}"' for w in ("min", "opt", "max")),
        f"--memPoolSize=workspace:{spec.workspace_mib}M",
    ]
    if spec.precision in ("fp16", "int8"):
        args.append("--fp16")
    if spec.precision == "int8":
        args += ["--int8", f'--calib="$ENGINE_DIR/{stem}.calib"']
    if spec.timing_cache is not None:
        args.append(f'--timingCacheFile="$ENGINE_DIR/{_dq(spec.timing_cache.name)}"')
    if spec.hardware_compatible:
        args.append("--hardwareCompatibilityLevel=ampere+")
    if spec.version_compatible:
        args.append("--versionCompatible")
    # No --inputIOFormats/--outputIOFormats: trtexec then keeps the parsed ONNX I/O types (its
    # sampleEngines.cpp leaves UINT8 inputs as they are), so the uint8 contract survives.
    args.append("--skipInference")
    lines = [f'echo "building $ENGINE_DIR/{stem}.plan"']
    if spec.precision == "int8":
        lines.append(
            f'[[ -f "$ENGINE_DIR/{stem}.calib" ]] || '
            f'{{ echo "missing INT8 calibration cache $ENGINE_DIR/{stem}.calib" >&2; exit 1; }}'
        )
    lines.append('"$TRTEXEC" \\\n  ' + " \\\n  ".join(args))
    return lines


def write_build_script(onnx_dir: Path, out: Path, spec: EngineSpec) -> Path:
    """Write an executable bash script that builds one engine per ONNX model with trtexec.

    Flags are TensorRT 10 trtexec's (--memPoolSize replaced --workspace; --skipInference builds
    without benchmarking). Shapes come from each model's real input names and dimensions. For
    int8, each model's `<stem>.calib` (saved by `build_engine`) must be in ENGINE_DIR: trtexec's
    --int8 without --calib would use placeholder scales.
    """
    onnx_dir, out = Path(onnx_dir), Path(out)
    models = sorted(onnx_dir.glob("*.onnx"))
    if not models:
        raise UserInputError(f"no .onnx models in {onnx_dir}")
    relative = os.path.relpath(onnx_dir.resolve(), out.parent.resolve())
    onnx_default = "$HERE" if relative == "." else f"$HERE/{_dq(relative)}"
    header = [
        "#!/usr/bin/env bash",
        "# Builds synthmed's TensorRT engines with trtexec. Run it ON THE DEVICE THAT WILL RUN",
        "# THEM (e.g. the Jetson, or NVIDIA's TensorRT container on the serving GPU): an engine is",
        "# compiled for one GPU architecture and one TensorRT release and is not portable.",
        f"# Written by synthmed {synthmed.__version__}: precision {spec.precision}, batch "
        f"{spec.min_batch}/{spec.opt_batch}/{spec.max_batch}, workspace {spec.workspace_mib} MiB.",
        "# Plans built here have no synthmed manifest; load_engine refuses them until",
        "# synthmed.export.engine_manifest.write_engine_manifest has written one.",
        "# Set ONNX_DIR, ENGINE_DIR or TRTEXEC in the environment to override the defaults below.",
        "set -euo pipefail",
        "",
        'HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"',
        f'ONNX_DIR="${{ONNX_DIR:-{onnx_default}}}"',
        'ENGINE_DIR="${ENGINE_DIR:-$HERE}"',
        'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
        'mkdir -p "$ENGINE_DIR"',
    ]
    if spec.hardware_compatible:
        header.insert(
            5, "# ampere+ engines need Ampere or newer GPUs; NVIDIA's guide is reported to"
        )
        header.insert(6, "# call hardware compatibility unsupported on JetPack and DRIVE OS.")
    body = []
    for model in models:
        body += ["", *_trtexec_command(model, spec)]
    write_text_atomic(out, "\n".join(header + body) + "\n")
    out.chmod(out.stat().st_mode | 0o111)
    return out
