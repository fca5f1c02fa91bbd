"""`synthmed train stylegan2`: one conditional generator over several datasets (one per class)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from synthmed.errors import UserInputError
from synthmed.training.cli import given_options, report_run, require_torch

AUGMENT_CHOICES = ("xflip", "rotate90", "translate", "colour", "cutout")


@click.command("stylegan2")
@click.option(
    "--data",
    "data_dirs",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Paired dataset folder; repeat once per class (label k = the k-th --data).",
)
@click.option(
    "--class-name",
    "class_names",
    multiple=True,
    help="Name of each class, in --data order (default: the folders' names).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Run folder.")
@click.option("--size", type=int, default=64, show_default=True, help="Image side, 64..1024.")
@click.option("--steps", type=int, default=5000, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True, help="Per process.")
@click.option("--lr", type=float, default=0.0025, show_default=True, help="Adam lr (G and D).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--z-dim", type=int, default=128, show_default=True, help="Latent size.")
@click.option("--w-dim", type=int, default=128, show_default=True, help="Style (W) size.")
@click.option("--mapping-layers", type=int, default=4, show_default=True)
@click.option(
    "--channel-base",
    type=int,
    default=4096,
    show_default=True,
    help="Widths are channel_base / resolution (StyleGAN2 at 1024: 32768).",
)
@click.option("--max-channels", type=int, default=256, show_default=True, help="Width cap.")
@click.option(
    "--architecture",
    type=click.Choice(["skip", "resnet"]),
    default="skip",
    show_default=True,
    help="Generator: summed toRGB outputs (skip) or residual blocks.",
)
@click.option(
    "--r1-gamma", type=float, default=None, help="R1 weight (default: 0.0002 * size^2 / batch)."
)
@click.option("--r1-interval", type=int, default=16, show_default=True, help="Lazy R1 period.")
@click.option(
    "--pl-weight", type=float, default=2.0, show_default=True, help="Path length; 0 turns it off."
)
@click.option("--pl-interval", type=int, default=4, show_default=True)
@click.option(
    "--style-mixing", type=float, default=0.9, show_default=True, help="Probability per batch."
)
@click.option("--ema-decay", type=float, default=0.999, show_default=True)
@click.option(
    "--ada-target",
    type=float,
    default=0.6,
    show_default=True,
    help="ADA: raise augmentation while E[sign D(real)] is above this.",
)
@click.option("--no-ada", is_flag=True, help="Keep the augmentation probability at --ada-p.")
@click.option("--ada-p", type=float, default=0.0, show_default=True, help="Initial probability.")
@click.option(
    "--ada-kimg",
    type=float,
    default=100.0,
    show_default=True,
    help="Thousands of real images for p to go from 0 to 1.",
)
@click.option(
    "--augment",
    "augments",
    multiple=True,
    type=click.Choice(AUGMENT_CHOICES),
    help="Transforms ADA may apply (default: all of them).",
)
@click.option("--mask-threshold", type=float, default=None, help="Binarise many-level masks.")
@click.option("--sample-every", type=int, default=250, show_default=True)
@click.option("--checkpoint-every", type=int, default=250, show_default=True)
@click.option("--log-every", type=int, default=10, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly where it stopped.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def stylegan2_cmd(
    ctx: click.Context,
    data_dirs: tuple[Path, ...],
    class_names: tuple[str, ...],
    out: Path,
    no_ada: bool,
    augments: tuple[str, ...],
    resume: bool,
    quiet: bool,
    **options: Any,
) -> None:
    """Conditional StyleGAN2: (z, class) -> image + mask, one class per --data folder.

    Grayscale and colour datasets mix: a class whose images all have R = G = B is generated
    gray. Example: `synthmed train stylegan2 --data retina/ --data cells/ --out run/`.
    """
    require_torch()
    from synthmed.training.stylegan2_config import StyleGAN2TrainConfig
    from synthmed.training.train_stylegan2 import resume_stylegan2_config, train_stylegan2

    if no_ada:
        options["ada_target"] = None
    if resume:
        given = given_options(ctx, options)
        if data_dirs:
            given["data"] = tuple(str(d) for d in data_dirs)
        cfg = resume_stylegan2_config(out, given)
    else:
        if not data_dirs:
            raise UserInputError("--data is required: one paired dataset folder per class")
        extra = {"augments": augments} if augments else {}
        cfg = StyleGAN2TrainConfig(
            data=tuple(str(d) for d in data_dirs), class_names=class_names, **extra, **options
        )
    result = train_stylegan2(cfg, out, resume=resume, progress=not quiet)
    report_run(ctx, "stylegan2", out, result, cfg.steps)
