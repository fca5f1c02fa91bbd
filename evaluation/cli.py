"""`synthmed evaluate`: the downstream, distribution and privacy verdict on a synthetic set."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from synthmed.errors import UserInputError

EVALUATE_EXTRA = "evaluate needs the evaluation extra: pip install 'synthmed[evaluate]'"
_PATH = click.Path(path_type=Path)


def _sizes(value: str) -> tuple[int, ...]:
    """'5,10,20' -> (5, 10, 20), or a one-line error."""
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError as e:
        raise UserInputError(f"--small-data: expected numbers like 5,10,20, got {value!r}") from e


@click.command("evaluate")
@click.option("--real", type=_PATH, required=True, help="Real pairs the generator was trained on.")
@click.option(
    "--real-test",
    type=_PATH,
    default=None,
    help="Held-out real pairs, split into validation and test (default: REAL's test/ split).",
)
@click.option(
    "--synthetic",
    type=_PATH,
    default=None,
    help="A synthetic folder (images/ + masks/, e.g. from `synthmed generate`); "
    "default: sample --count pairs in-process from --stage1/--stage2.",
)
@click.option("--stage1", type=_PATH, default=None, help="Stage I run (default: bundled demo).")
@click.option("--stage2", type=_PATH, default=None, help="Stage II run (default: bundled demo).")
@click.option(
    "--cstylegan2",
    type=_PATH,
    default=None,
    help="A conditional StyleGAN2 run: sample --count pairs of class --label in-process "
    "(instead of the dual GAN); --real and --real-test are then that class's real data.",
)
@click.option(
    "--label",
    default=None,
    help="With --cstylegan2: the class to evaluate, by name or index (label k = k-th --data).",
)
@click.option(
    "--truncation",
    type=float,
    default=None,
    help="With --cstylegan2: truncation psi towards the class's average w  [default: 1]",
)
@click.option("--count", type=int, default=500, show_default=True, help="Pairs sampled in-process.")
@click.option("--single", type=_PATH, default=None, help="A single-GAN baseline run to compare.")
@click.option(
    "--out", type=_PATH, default=Path("evaluation"), show_default=True, help="Report folder."
)
@click.option("--force", is_flag=True, help="Replace a non-empty --out folder.")
@click.option("--size", type=int, default=None, help="Check the synthetic data are this size.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Samples, splits and U-Net weights."
)
@click.option(
    "--repeats",
    type=int,
    default=1,
    show_default=True,
    help="Train every U-Net arm this many times (seeds SEED, SEED+1, ...; small-data subsets "
    "reshuffled each time) and report mean ± std.",
)
@click.option(
    "--no-oracle",
    is_flag=True,
    help="Leave out the oracle arm (stage II on the real training masks; dual GAN only).",
)
@click.option(
    "--validation-fraction",
    type=float,
    default=0.2,
    show_default=True,
    help="Share of --real-test used to choose the threshold.",
)
@click.option("--seg-steps", type=int, default=300, show_default=True, help="U-Net steps per arm.")
@click.option("--seg-batch-size", type=int, default=8, show_default=True, help="U-Net batch.")
@click.option("--seg-width", type=int, default=16, show_default=True, help="U-Net base channels.")
@click.option("--seg-depth", type=int, default=3, show_default=True, help="U-Net poolings.")
@click.option(
    "--small-data",
    default="",
    help="Also train with only these many real images, e.g. 5,10,20.",
)
@click.option(
    "--inception",
    type=_PATH,
    default=None,
    help="Local ONNX feature extractor for FID/KID (see docs/evaluation.md); never downloaded.",
)
@click.option("--fid", is_flag=True, help="Require FID/KID (fails without --inception).")
@click.option(
    "--copy-factor",
    type=float,
    default=0.5,
    show_default=True,
    help="Flag a sample closer to a training image than this x the closest held-out image.",
)
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.pass_context
def evaluate(ctx: click.Context, **kw: Any) -> None:
    """Judge a synthetic set: train a U-Net on it and test on real images, measure its distance
    to the real distribution, and audit it for copies of training patients.

    Writes OUT/report.md, OUT/report.html, OUT/metrics.json and the figures they show.
    """
    try:
        # Loaded only when the report is written: import it now, so a missing plotting
        # library is named before the evaluation runs rather than after.
        import synthmed.evaluation.report  # noqa: F401
        from synthmed.evaluation.evaluate import (
            EvaluateOptions,
            prepare_output,
            run_evaluation,
            write_evaluation,
        )
        from synthmed.training.segmenter import SegmenterBudget
    except ImportError as e:
        raise UserInputError(f"{EVALUATE_EXTRA} ({e.name} is missing)") from e

    out: Path = kw["out"]
    prepare_output(out, kw["force"])
    options = EvaluateOptions(
        real=kw["real"],
        real_test=kw["real_test"],
        synthetic=kw["synthetic"],
        stage1=kw["stage1"],
        stage2=kw["stage2"],
        cstylegan2=kw["cstylegan2"],
        label=kw["label"],
        truncation=kw["truncation"],
        count=kw["count"],
        single=kw["single"],
        size=kw["size"],
        validation_fraction=kw["validation_fraction"],
        seed=kw["seed"],
        repeats=kw["repeats"],
        oracle=not kw["no_oracle"],
        budget=SegmenterBudget(
            steps=kw["seg_steps"],
            batch_size=kw["seg_batch_size"],
            base_channels=kw["seg_width"],
            depth=kw["seg_depth"],
        ),
        small_data=_sizes(kw["small_data"]),
        inception=kw["inception"],
        fid=kw["fid"],
        copy_factor=kw["copy_factor"],
    )
    evaluation = run_evaluation(options, progress=not kw["quiet"])
    write_evaluation(evaluation, out, _reproduce(ctx))
    _summary(evaluation.metrics(), out)


def _reproduce(ctx: click.Context) -> str:
    """The command line that reproduces this report: every option not left at its default."""
    args = ["synthmed", "evaluate"]
    for param in ctx.command.params:
        value = ctx.params[param.name]
        if param.name in ("force", "quiet") or value in (None, False) or value == param.default:
            continue
        flag = param.opts[0]
        args += [flag] if getattr(param, "is_flag", False) else [flag, str(value)]
    return shlex.join(args)


def _summary(metrics: dict, out: Path) -> None:
    """The headline numbers on the terminal; the rest is in the report."""

    def score(row: dict, key: str) -> str:
        spread = f" ± {row[key + '_std']:.4f}" if metrics["repeats"] > 1 else ""
        return f"{row[key]:.4f}{spread}"

    repeats = f", mean ± std of {metrics['repeats']} repeats" if metrics["repeats"] > 1 else ""
    for row in metrics["downstream"]:
        click.echo(
            f"U-Net trained on {row['arm']:<15} test F1 {score(row, 'f1_at_threshold')} "
            f"(at 0.5: {score(row, 'f1_at_half')})  AUC {score(row, 'auc_roc')}  "
            f"F1/real {score(row, 'f1_ratio_to_real')}{repeats}"
        )
    diversity = metrics["mask_diversity"]
    click.echo(
        f"masks: mean pairwise IoU {diversity['pairwise_iou_ratio']:.2f}x real "
        f"(target <= {diversity['pairwise_iou_ratio_target']:g}x), "
        f"coverage {diversity['coverage']:.4f}, precision {diversity['precision']:.4f} "
        f"(real: {diversity['nearest_reference']:.4f})"
    )
    for label, kl in metrics["intensity_kl"].items():
        click.echo(f"intensity KL, real vs {label:<22} {kl['mean']:.4f}")
    for label, audit in metrics["privacy"].items():
        click.echo(f"privacy: {audit['flagged']} {label} samples flagged as near-copies")
    click.echo(f"report: {out / 'report.html'}")
