"""Export commands: `synthmed export onnx` (and the TensorRT steps that build on it)."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def export() -> None:
    """Export trained runs to verified ONNX graphs and TensorRT engines."""


@export.command("onnx")
@click.option("--stage1", type=click.Path(path_type=Path), help="Stage I run folder.")
@click.option("--stage2", type=click.Path(path_type=Path), help="Stage II run folder.")
@click.option("--single", type=click.Path(path_type=Path), help="Single-GAN baseline run folder.")
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
    demo: bool,
    out: Path,
    opset: int,
    fp16: bool,
    tolerance: int | None,
    max_mismatch: float | None,
    force: bool,
) -> None:
    """Export stage I, stage II, the fused pipeline (and --single) to ONNX, verified.

    Each graph passes onnx.checker's full check and must match PyTorch under onnxruntime
    at batch sizes 1, 3 and 16 before anything is written to --out.
    """
    from synthmed.training.cli import require_torch

    require_torch()
    from synthmed.export.torch2onnx import export_onnx
    from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2

    if demo:
        stage1, stage2 = stage1 or DEMO_STAGE1, stage2 or DEMO_STAGE2
    result = export_onnx(
        out,
        stage1=stage1,
        stage2=stage2,
        single=single,
        opset=opset,
        fp16=fp16,
        tolerance=tolerance,
        max_fraction=max_mismatch,
        force=force,
        report=click.echo,
    )
    click.echo(f"{'model':18s} {'output':7s} {'batch':>5s} {'max diff':>8s} {'mismatch':>9s}")
    for c in result.checks:
        click.echo(
            f"{c.model:18s} {c.output:7s} {c.batch:5d} {c.max_abs_diff:8d} "
            f"{c.mismatch_fraction:9.5%}"
        )
    click.echo(f"wrote {', '.join(p.name for p in result.models.values())} to {out}")
