"""Export commands: `synthmed export onnx`, `int8` (CPU stage II) and the TensorRT steps."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from synthmed.contract import FUSED, STAGE1, STAGE2
from synthmed.errors import UserInputError

_onnx_dir_option = click.option(
    "--onnx",
    "onnx_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder written by `synthmed export onnx`.",
)


@contextlib.contextmanager
def _needs_export_extra(command: str) -> Iterator[None]:
    """Turn an ImportError in the block (the command's imports, before any work) into one line
    naming the extra that installs what is missing, instead of a traceback."""
    try:
        yield
    except ImportError as e:
        raise UserInputError(
            f"synthmed export {command} needs the export extra: pip install 'synthmed[export]' "
            f"({e.name or e} is missing)"
        ) from e


@click.group()
def export() -> None:
    """Export trained runs to verified ONNX graphs and TensorRT engines."""


@export.command("onnx")
@click.option("--stage1", type=click.Path(path_type=Path), help="Stage I run folder.")
@click.option("--stage2", type=click.Path(path_type=Path), help="Stage II run folder.")
@click.option("--single", type=click.Path(path_type=Path), help="Single-GAN baseline run folder.")
@click.option(
    "--cstylegan2",
    type=click.Path(path_type=Path),
    help="Conditional StyleGAN2 run folder (`synthmed train stylegan2`).",
)
@click.option("--demo", is_flag=True, help="Export the bundled demo stage I + stage II.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write.")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (17..21).")
@click.option("--fp16", is_flag=True, help="Half-precision weights and compute; same I/O types.")
@click.option(
    "--tolerance",
    type=int,
    default=None,
    help="Grey levels a value may differ from PyTorch (default 1, fp16: 8).",
)
@click.option(
    "--max-mismatch",
    type=float,
    default=None,
    help="Fraction of values allowed beyond --tolerance (default 0.001, fp16: 0.01).",
)
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
def export_onnx_cmd(
    stage1: Path | None,
    stage2: Path | None,
    single: Path | None,
    cstylegan2: Path | None,
    demo: bool,
    out: Path,
    opset: int,
    fp16: bool,
    tolerance: int | None,
    max_mismatch: float | None,
    force: bool,
) -> None:
    """Export stage I, stage II, the fused pipeline (and --single, --cstylegan2) to ONNX, verified.

    Each graph passes onnx.checker's full check and must match PyTorch under onnxruntime
    at batch sizes 1, 3 and 16 before anything is written to --out.
    """
    with _needs_export_extra("onnx"):
        import onnxscript  # noqa: F401 (torch.onnx imports it only halfway through an export)

        from synthmed.export.torch2onnx import export_onnx
        from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2

    if demo:
        stage1, stage2 = stage1 or DEMO_STAGE1, stage2 or DEMO_STAGE2
    result = export_onnx(
        out,
        stage1=stage1,
        stage2=stage2,
        single=single,
        cstylegan2=cstylegan2,
        opset=opset,
        fp16=fp16,
        tolerance=tolerance,
        max_fraction=max_mismatch,
        force=force,
        report=click.echo,
    )
    click.echo(f"{'model':19s} {'output':7s} {'batch':>5s} {'max diff':>8s} {'mismatch':>9s}")
    for c in result.checks:
        click.echo(
            f"{c.model:19s} {c.output:7s} {c.batch:5d} {c.max_abs_diff:8d} "
            f"{c.mismatch_fraction:9.5%}"
        )
    click.echo(f"wrote {', '.join(p.name for p in result.models.values())} to {out}")


@export.command("int8")
@_onnx_dir_option
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write: stage I as is, int8 stage II, export_manifest.json.",
)
@click.option(
    "--calibration-count",
    type=int,
    default=64,
    show_default=True,
    help="Stage I masks that set stage II's activation ranges.",
)
@click.option(
    "--check-count",
    type=int,
    default=64,
    show_default=True,
    help="Held-out stage I masks (other latents) on which int8 is compared with fp32.",
)
@click.option(
    "--min-psnr",
    type=float,
    default=35.0,
    show_default=True,
    help="Least mean PSNR (dB) of int8 vs fp32 images; below it nothing is written.",
)
@click.option(
    "--method",
    type=click.Choice(["minmax", "percentile"]),
    default="minmax",
    show_default=True,
    help="How activation ranges are set: full range, or the 99.99th percentile.",
)
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
def export_int8_cmd(
    onnx_dir: Path,
    out: Path,
    calibration_count: int,
    check_count: int,
    min_psnr: float,
    method: str,
    force: bool,
) -> None:
    """Quantize stage II to int8 for CPUs (onnxruntime), calibrated on stage I's own masks.

    Stage I is copied unchanged, so masks stay identical; stage II keeps its uint8 inputs and
    outputs. The int8 images are compared with fp32 on held-out masks before anything is
    written; the folder serves with `synthmed export repository` like any export.
    """
    with _needs_export_extra("int8"):
        from synthmed.export.quantize import quantize_stage2

    result = quantize_stage2(
        onnx_dir,
        out,
        calibration_count=calibration_count,
        check_count=check_count,
        min_psnr=min_psnr,
        method=method,
        force=force,
        report=click.echo,
    )
    q = result.quality
    click.echo(
        f"int8 vs fp32 on {check_count} held-out masks: PSNR {q.psnr_mean:.2f} dB "
        f"(min {q.psnr_min:.2f}), SSIM {q.ssim_mean:.4f} (min {q.ssim_min:.4f}), "
        f"masks identical: {'yes' if q.masks_identical else 'no'}"
    )
    if result.fp32_nodes:
        click.echo(f"kept fp32: {', '.join(result.fp32_nodes)}")
    click.echo(f"wrote {STAGE1}.onnx, {STAGE2}.onnx (int8) to {out}")


@export.command("tensorrt")
@_onnx_dir_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for engines.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),
    default="fp16",
    show_default=True,
    help="int8 calibrates on real inputs (stage I masks for stage II).",
)
@click.option("--min-batch", type=int, default=1, show_default=True)
@click.option("--opt-batch", type=int, default=8, show_default=True, help="Batch tuned for.")
@click.option("--max-batch", type=int, default=32, show_default=True)
@click.option("--workspace-mib", type=int, default=1024, show_default=True)
@click.option("--hardware-compatible", is_flag=True, help="One plan for every Ampere+ GPU.")
@click.option("--version-compatible", is_flag=True, help="Plan also runs on later TensorRT.")
@click.option(
    "--timing-cache",
    type=click.Path(path_type=Path),
    default=None,
    help="Kernel timings file, loaded if present and saved back (default: OUT/timing.cache).",
)
@click.option("--calibration-batches", type=int, default=16, show_default=True)
@click.option("--script-only", is_flag=True, help="Only write build_engines.sh (no TensorRT).")
def export_tensorrt_cmd(
    onnx_dir: Path,
    out: Path,
    precision: str,
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    workspace_mib: int,
    hardware_compatible: bool,
    version_compatible: bool,
    timing_cache: Path | None,
    calibration_batches: int,
    script_only: bool,
) -> None:
    """Build TensorRT engines from exported ONNX, plus build_engines.sh for the target device.

    Engines are compiled for one GPU and one TensorRT release: build them where they run.
    build_engines.sh (trtexec) is always written to --out, so engines for an edge GPU such as
    a Jetson can be built there; this command builds engines on this machine's GPU.
    """
    with _needs_export_extra("tensorrt"):
        from synthmed.export.onnx2trt import EngineSpec, build_engine
        from synthmed.export.trtexec_script import write_build_script

    if not onnx_dir.is_dir():
        raise UserInputError(f"{onnx_dir}: ONNX folder does not exist")
    spec = EngineSpec(
        precision=precision,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_mib=workspace_mib,
        hardware_compatible=hardware_compatible,
        version_compatible=version_compatible,
        timing_cache=timing_cache or out / "timing.cache",
    )
    out.mkdir(parents=True, exist_ok=True)
    script = write_build_script(onnx_dir, out / "build_engines.sh", spec)
    click.echo(f"wrote {script}")
    if script_only:
        return
    with _needs_export_extra("tensorrt"):  # onnxruntime: calibration inputs from stage I
        from synthmed.export.calibration import calibration_batches as make_batches

    for model in sorted(onnx_dir.glob("*.onnx")):
        batches = (
            make_batches(model, calibration_batches, opt_batch) if precision == "int8" else None
        )
        plan = build_engine(model, out, spec, batches)
        click.echo(f"built {plan}")


@export.command("repository")
@_onnx_dir_option
@click.option(
    "--engines",
    type=click.Path(path_type=Path),
    default=None,
    help="Folder written by `synthmed export tensorrt` (for --backend tensorrt).",
)
@click.option(
    "--backend",
    type=click.Choice(["onnxruntime", "tensorrt", "python"]),
    default="python",
    show_default=True,
    help="python runs on any Triton build, CPU-only included; the others need NVIDIA's container.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Repository folder.")
@click.option("--max-batch-size", type=int, default=32, show_default=True)
@click.option("--max-queue-delay-us", type=int, default=2000, show_default=True)
@click.option("--instances", type=int, default=1, show_default=True, help="Instances per model.")
@click.option("--version", type=int, default=1, show_default=True, help="Version folder to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing version.")
@click.option("--no-fused", is_flag=True, help=f"Leave out {FUSED}.")
@click.option(
    "--tensorrt-accelerator", is_flag=True, help="onnxruntime backend: TensorRT execution (FP16)."
)
@click.option(
    "--max-inflight-requests",
    type=int,
    default=0,
    show_default=True,
    help="Ensemble back-pressure (Triton 25.11+; 0 leaves the field out).",
)
@click.option(
    "--cpu-threads",
    type=int,
    default=0,
    show_default=True,
    help="python backend: onnxruntime threads per instance (0: all cores).",
)
@click.option(
    "--cpu-spinning",
    is_flag=True,
    help="python backend: idle onnxruntime threads spin-wait (off: measured faster on 2 cores).",
)
@click.option(
    "--instance-kind",
    type=click.Choice(["cpu", "gpu"]),
    default=None,
    help="Where model instances run; Triton refuses gpu on a node without GPUs.  "
    "[default: cpu for python, gpu for onnxruntime and tensorrt]",
)
@click.option(
    "--warmup/--no-warmup",
    default=True,
    show_default=True,
    help="Warm-up requests (batch 1 and --max-batch-size) that each model instance runs "
    "before Triton reports the model ready.",
)
def export_repository_cmd(
    onnx_dir: Path,
    engines: Path | None,
    backend: str,
    out: Path,
    max_batch_size: int,
    max_queue_delay_us: int,
    instances: int,
    version: int,
    overwrite: bool,
    no_fused: bool,
    tensorrt_accelerator: bool,
    max_inflight_requests: int,
    cpu_threads: int,
    cpu_spinning: bool,
    instance_kind: str | None,
    warmup: bool,
) -> None:
    """Write a Triton model repository from an export: stage I, stage II, the ensemble
    `synthmed` (+ fused) when it holds the dual GAN, `synthmed_cstylegan2` when it holds that."""
    from synthmed.serving.repository import RepositoryOptions, write_repository

    preferred = tuple(b for b in (8, 16, 32) if b <= max_batch_size) or (max_batch_size,)
    options = RepositoryOptions(
        backend=backend,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=preferred,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        tensorrt_accelerator=tensorrt_accelerator,
        max_inflight_requests=max_inflight_requests,
        version=version,
        fused=not no_fused,
        cpu_threads=cpu_threads,
        cpu_spinning=cpu_spinning,
        instance_kind=instance_kind,
        warmup=warmup,
    )
    names = write_repository(onnx_dir, out, options, engines_dir=engines, overwrite=overwrite)
    click.echo(
        f"wrote {', '.join(names)} (version {version}, {backend} backend, "
        f"{options.kind} instances) to {out}"
    )
