"""Opt-in int8 stage II for CPUs: onnxruntime static quantization calibrated on stage I masks.

    OUT/synthmed_stage1.onnx   the input's stage I, copied byte for byte (fp32)
    OUT/synthmed_stage2.onnx   stage II with int8 (QDQ) convolutions, same I/O contract
    OUT/export_manifest.json   the input's manifest, stage II's hash, a "quantization" block

Stage II is where the time goes; stage I stays fp32 so masks (the labels) do not change.
Activation ranges come from the masks the exported stage I draws and their latents, not from
random fields, so they fit what stage II sees in production. onnxruntime's CPU provider has no
int8 ConvTranspose kernel: a quantized ConvTranspose runs in fp32 behind DequantizeLinear nodes
and is slower than no quantization. Each stride-s ConvTranspose whose output is s times its
input is therefore rewritten first into s*s small Convs (one per output phase) and a
DepthToSpace, exactly equal in fp32, and those Convs run as QLinearConv. Concat and Relu are
quantized too, so the skip links stay uint8 between convolutions. The output layer stays fp32
(an original ConvTranspose): it is cheap and decides the grey levels; so does a noisy stage
II's projection of z into noise maps (three MatMuls, not quantized). The graph's uint8 Casts at
either end are untouched.
Then the int8 images are compared with the fp32 ones on held-out masks (PSNR, SSIM); below
`min_psnr` nothing is written. The folder is staged beside OUT and renamed into place; it is
used by `synthmed export repository` and `synthmed serve` as it is.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from skimage.metrics import structural_similarity

from synthmed.atomic import staged_folder
from synthmed.contract import EXPORT_MANIFEST, STAGE1, STAGE2
from synthmed.errors import SynthmedError, UserInputError
from synthmed.export.calibration import CALIBRATION_SEED
from synthmed.export.conv_transpose import conv_transpose_to_conv
from synthmed.hashing import sha256_file
from synthmed.latents import latents

PRECISION = "int8-stage2"
# Entropy is not offered: quantize_static cannot set its bin counts, and with the defaults
# (128 bins, 128 quantized bins) it has one candidate range, the MinMax one.
METHODS = ("minmax", "percentile")
# Concat and Relu too: skip links then stay uint8 (QLinearConcat; a Relu before a Conv becomes
# the zero point of the Conv's input) instead of dequantizing to fp32 and back at every level.
OP_TYPES = ("Conv", "Concat", "Relu")
PSNR_CAP_DB = 100.0  # what identical images count as, so that means stay finite
_BATCH = 8
_REWRITE_TOLERANCE = 1  # grey levels; the rewrite is exact but sums in another order


class QuantizationError(SynthmedError):
    """onnxruntime could not quantize the graph, or the result broke a promise it must keep."""


class QuantizationQualityError(SynthmedError):
    """The int8 stage II differs too much from the fp32 one; nothing was written."""


@dataclass(frozen=True)
class Quality:
    """int8 vs fp32 stage II images from the same held-out stage I masks."""

    psnr_mean: float
    psnr_min: float
    ssim_mean: float
    ssim_min: float
    masks_identical: bool


@dataclass
class QuantizationResult:
    """What was written and how it compared with fp32."""

    out: Path
    quality: Quality
    rewritten: list[str]
    fp32_nodes: list[str]


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run a graph batch by batch over same-length inputs (bounded memory at 256x256)."""
    count = len(next(iter(feeds.values())))
    parts = [
        session.run([output], {name: data[i : i + _BATCH] for name, data in feeds.items()})[0]
        for i in range(0, count, _BATCH)
    ]
    return np.concatenate(parts)


class _StageTwoReader(CalibrationDataReader):
    """onnxruntime's CalibrationDataReader protocol over stage II's inputs (stage I masks and
    their latents), a batch at a time."""

    def __init__(self, feeds: dict[str, np.ndarray]) -> None:
        count = len(next(iter(feeds.values())))
        self._batches = iter(
            [{k: v[i : i + _BATCH] for k, v in feeds.items()} for i in range(0, count, _BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch, or None when calibration has seen them all."""
        return next(self._batches, None)


def _quantize(
    source: Path, target: Path, feeds: dict[str, np.ndarray], method: str, keep: list[str]
) -> None:
    """quantize_static: QDQ, per-channel S8 weights, U8 activations (the x86 VNNI choice).

    No quant_pre_process: the exporter's graph is already folded and shape-inferred, and the
    pre-processed graph was node for node the same.
    """
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    # The quantizer warns on the root logger and prints histogram sizes; keep the CLI's output
    # to what the user needs.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                str(source),
                str(target),
                _StageTwoReader(feeds),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(OP_TYPES),
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep,
                calibrate_method=methods[method],
                extra_options={"CalibPercentile": 99.99},
            )
    except Exception as e:  # onnxruntime raises many unrelated types; all mean the same here
        raise QuantizationError(
            f"{STAGE2}: onnxruntime quantize_static failed ({type(e).__name__}: {e})"
        ) from e
    finally:
        root.setLevel(level)


def _output_layer(model: onnx.ModelProto) -> list[str]:
    """The last convolution (kept fp32: cheap, and it decides the grey levels)."""
    convs = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    return convs[-1:]


def _signature(model: onnx.ModelProto) -> list[tuple]:
    """Inputs and outputs: name, element type, dims (symbolic batch axis by its name)."""
    values = [(v.name, v.type.tensor_type) for v in [*model.graph.input, *model.graph.output]]
    return [
        (name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]) for name, t in values
    ]


def _fp32_compute_nodes(model: onnx.ModelProto) -> list[str]:
    """Conv/ConvTranspose/MatMul/Gemm nodes whose weights are not dequantized int8."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    compute = ("Conv", "ConvTranspose", "MatMul", "Gemm")
    return [
        n.name
        for n in model.graph.node
        if n.op_type in compute and (len(n.input) < 2 or n.input[1] not in dequantized)
    ]


def _finish(quantized: Path, original: onnx.ModelProto, target: Path) -> list[str]:
    """Keep the I/O contract and provenance of `original`, run the checker, save to `target`."""
    model = onnx.load(str(quantized))
    if _signature(model) != _signature(original):
        raise QuantizationError(
            f"{STAGE2}: quantization changed the inputs/outputs {_signature(original)} "
            f"to {_signature(model)}"
        )
    props = {p.key: p.value for p in model.metadata_props}
    props.update({p.key: p.value for p in original.metadata_props})
    props["synthmed.precision"] = "int8"
    helper.set_model_props(model, props)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise QuantizationError(f"{STAGE2}: onnx.checker rejected the int8 graph ({e})") from e
    onnx.save(model, str(target))
    return _fp32_compute_nodes(model)


def _check_rewrite(
    fp32: ort.InferenceSession, rewritten: Path, feeds: dict[str, np.ndarray]
) -> None:
    """The phase-Conv graph must give the fp32 graph's images (it is the same arithmetic)."""
    expected = _run(fp32, "image", feeds)
    got = _run(_session(rewritten), "image", feeds)
    diff = int(np.abs(got.astype(np.int16) - expected).max(initial=0))
    if diff > _REWRITE_TOLERANCE:
        raise QuantizationError(
            f"{STAGE2}: the ConvTranspose rewrite changed fp32 images by up to {diff} grey "
            f"levels (allowed {_REWRITE_TOLERANCE}); nothing was written"
        )


def _psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB, peak 255) of uint8 image stacks, capped at PSNR_CAP_DB."""
    mse = ((a.astype(np.float64) - b) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(255.0**2 / mse)
    return np.minimum(psnr, PSNR_CAP_DB)


def _ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 RGB image stacks."""
    return np.array(
        [
            structural_similarity(x, y, channel_axis=-1, data_range=255)
            for x, y in zip(a, b, strict=True)
        ]
    )


def _quality(fp32: dict[str, Path], int8: dict[str, Path], z: np.ndarray) -> Quality:
    """Masks of both stage I files, then int8 vs fp32 stage II images from those masks."""
    masks = _run(_session(fp32[STAGE1]), "mask", {"z": z})
    int8_masks = _run(_session(int8[STAGE1]), "mask", {"z": z})
    expected = _run(_session(fp32[STAGE2]), "image", {"mask": masks, "z": z})
    got = _run(_session(int8[STAGE2]), "image", {"mask": int8_masks, "z": z})
    psnr, ssim = _psnr(got, expected), _ssim(got, expected)
    return Quality(
        psnr_mean=float(psnr.mean()),
        psnr_min=float(psnr.min()),
        ssim_mean=float(ssim.mean()),
        ssim_min=float(ssim.min()),
        masks_identical=bool(np.array_equal(masks, int8_masks)),
    )


def _require(quality: Quality, min_psnr: float) -> None:
    """Refuse a result whose masks moved or whose images drifted below `min_psnr`."""
    if not quality.masks_identical:
        raise QuantizationError(f"{STAGE1}: the copied stage I draws other masks; nothing written")
    if quality.psnr_mean < min_psnr:
        raise QuantizationQualityError(
            f"{STAGE2}: int8 images differ from fp32 by PSNR {quality.psnr_mean:.2f} dB on "
            f"average (min {quality.psnr_min:.2f}, SSIM {quality.ssim_mean:.4f}), below "
            f"--min-psnr {min_psnr:g}; nothing was written"
        )


def _read_manifest(onnx_dir: Path) -> dict:
    """The input's manifest, refusing folders that are not an fp32 `synthmed export onnx`."""
    if not onnx_dir.is_dir():
        raise UserInputError(f"{onnx_dir}: ONNX folder does not exist")
    path = onnx_dir / EXPORT_MANIFEST
    if not path.is_file():
        raise UserInputError(
            f"{onnx_dir}: no {EXPORT_MANIFEST}; is it a `synthmed export onnx` folder?"
        )
    manifest = json.loads(path.read_text())
    missing = [n for n in (STAGE1, STAGE2) if n not in manifest.get("models", {})]
    if missing:
        raise UserInputError(f"{onnx_dir}: int8 stage II needs {' and '.join(missing)}")
    if manifest.get("precision") != "fp32":
        raise UserInputError(
            f"{onnx_dir}: a {manifest.get('precision')} export; quantize an fp32 export"
        )
    for name in (STAGE1, STAGE2):
        if not (onnx_dir / manifest["models"][name]["file"]).is_file():
            raise UserInputError(f"{onnx_dir / manifest['models'][name]['file']}: missing")
    return manifest


def _check_request(
    onnx_dir: Path, out: Path, force: bool, counts: dict[str, int], method: str
) -> None:
    if any(count < 1 for count in counts.values()):
        raise UserInputError(f"{' and '.join(counts)} must be >= 1")
    if method not in METHODS:
        raise UserInputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if out.resolve() == onnx_dir.resolve():
        raise UserInputError(f"{out}: --out must not be the --onnx folder it reads")
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserInputError(f"{out}: folder is not empty; pass --force to replace it")


def _manifest(source: dict, stage2: Path, block: dict) -> dict:
    """The input's manifest with stage I and stage II only, stage II's new hash, and `block`."""
    manifest = {k: v for k, v in source.items() if k != "models"}
    manifest["precision"] = PRECISION
    models = {name: dict(source["models"][name]) for name in (STAGE1, STAGE2)}
    models[STAGE2]["fp32_sha256"] = models[STAGE2]["sha256"]
    models[STAGE2]["sha256"] = sha256_file(stage2)
    manifest["models"] = models
    manifest["quantization"] = block
    return manifest


def _int8_stage2(
    stage2: Path, target: Path, calibration: dict[str, np.ndarray], method: str, report: Callable
) -> tuple[list[str], list[str]]:
    """Rewrite, check, quantize and finish stage II; returns (rewritten, fp32 nodes)."""
    work = target.parent / "work"
    work.mkdir()
    original = onnx.load(str(stage2))
    keep = _output_layer(original)
    model, rewritten = conv_transpose_to_conv(onnx.load(str(stage2)), keep=keep)
    onnx.save(model, str(work / "rewritten.onnx"))
    report(f"{STAGE2}: {len(rewritten)} ConvTranspose rewritten as phase Convs")
    first = {name: data[:_BATCH] for name, data in calibration.items()}
    _check_rewrite(_session(stage2), work / "rewritten.onnx", first)
    report(f"{STAGE2}: quantizing ({method}, {len(calibration['mask'])} masks)")
    _quantize(work / "rewritten.onnx", work / "int8.onnx", calibration, method, keep)
    fp32_nodes = _finish(work / "int8.onnx", original, target)
    shutil.rmtree(work)
    return rewritten, fp32_nodes


def quantize_stage2(
    onnx_dir: Path | str,
    out: Path | str,
    *,
    calibration_count: int = 64,
    check_count: int = 64,
    seed: int = CALIBRATION_SEED,
    method: str = "minmax",
    min_psnr: float = 35.0,
    force: bool = False,
    report: Callable[[str], None] = lambda line: None,
) -> QuantizationResult:
    """Write an int8-stage-II copy of an fp32 export to `out` (see the module docstring).

    Calibration uses stage I's masks for latents (`seed`, 0..calibration_count-1); the check
    uses other latents (`seed` + 1), so the figures are not measured on the calibration set.
    MinMax is the default: on the demo models it was 0.4 dB better than Percentile (99.99).
    """
    onnx_dir, out = Path(onnx_dir), Path(out)
    source = _read_manifest(onnx_dir)
    counts = {"--calibration-count": calibration_count, "--check-count": check_count}
    _check_request(onnx_dir, out, force, counts, method)
    files = {name: source["models"][name]["file"] for name in (STAGE1, STAGE2)}
    fp32 = {name: onnx_dir / file for name, file in files.items()}
    nz = int(source["models"][STAGE1]["inputs"]["z"]["shape"][1])
    report(f"{STAGE1}: drawing {calibration_count} calibration masks")
    z = latents(seed, range(calibration_count), nz)
    calibration = {"mask": _run(_session(fp32[STAGE1]), "mask", {"z": z}), "z": z}
    with staged_folder(out) as staging:
        int8 = {name: staging / file for name, file in files.items()}
        rewritten, fp32_nodes = _int8_stage2(
            fp32[STAGE2], int8[STAGE2], calibration, method, report
        )
        shutil.copyfile(fp32[STAGE1], int8[STAGE1])
        report(f"{STAGE2}: comparing with fp32 on {check_count} held-out masks")
        quality = _quality(fp32, int8, latents(seed + 1, range(check_count), nz))
        _require(quality, min_psnr)
        block = {
            "method": method,
            "calibration": {"count": calibration_count, "seed": seed},
            "check": {"count": check_count, "seed": seed + 1},
            "per_channel": True,
            "format": "QDQ",
            "activations": "uint8",
            "weights": "int8",
            "op_types": list(OP_TYPES),
            "rewritten_conv_transpose": rewritten,
            "fp32_nodes": fp32_nodes,
            "psnr_db": {"mean": quality.psnr_mean, "min": quality.psnr_min},
            "ssim": {"mean": quality.ssim_mean, "min": quality.ssim_min},
            "masks_identical": quality.masks_identical,
            "min_psnr_db": min_psnr,
            "onnxruntime_version": ort.__version__,
        }
        manifest = _manifest(source, int8[STAGE2], block)
        (staging / EXPORT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return QuantizationResult(out, quality, rewritten, fp32_nodes)
