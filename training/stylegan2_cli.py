"""`synthmed train stylegan2`: one conditional generator over several datasets (one per class)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from synthmed.errors import UserInputError
from synthmed.training.cli import given_options, report_run, require_torch
from synthmed.training.config import field_default
from synthmed.training.stylegan2_config import (
    ARCHITECTURES,
    AUGMENTS,
    RESUMABLE_OVERRIDES,
    StyleGAN2TrainConfig,
)

# Each option's default is the config's, written once there.
_default = functools.partial(field_default, StyleGAN2TrainConfig)


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
@click.option(
    "--size", type=int, default=_default("size"), show_default=True, help="Image side, 64..1024."
)
@click.option("--steps", type=int, default=_default("steps"), show_default=True)
@click.option(
    "--batch-size", type=int, default=_default("batch_size"), show_default=True, help="Per process."
)
@click.option(
    "--lr", type=float, default=_default("lr"), show_default=True, help="Adam lr (G and D)."
)
@click.option("--seed", type=int, default=_default("seed"), show_default=True)
@click.option(
    "--z-dim", type=int, default=_default("z_dim"), show_default=True, help="Latent size."
)
@click.option(
    "--w-dim", type=int, default=_default("w_dim"), show_default=True, help="Style (W) size."
)
@click.option("--mapping-layers", type=int, default=_default("mapping_layers"), show_default=True)
@click.option(
    "--channel-base",
    type=int,
    default=_default("channel_base"),
    show_default=True,
    help="Widths are channel_base / resolution (StyleGAN2 at 1024: 32768).",
)
@click.option(
    "--max-channels",
    type=int,
    default=_default("max_channels"),
    show_default=True,
    help="Width cap.",
)
@click.option(
    "--architecture",
    type=click.Choice(ARCHITECTURES),
    default=_default("architecture"),
    show_default=True,
    help="Generator: summed toRGB outputs (skip) or residual blocks.",
)
@click.option(
    "--r1-gamma",
    type=float,
    default=_default("r1_gamma"),
    help="R1 weight (default: 0.0002 * size^2 / batch).",
)
@click.option(
    "--r1-interval",
    type=int,
    default=_default("r1_interval"),
    show_default=True,
    help="Lazy R1 period.",
)
@click.option(
    "--pl-weight",
    type=float,
    default=_default("pl_weight"),
    show_default=True,
    help="Path length; 0 turns it off.",
)
@click.option("--pl-interval", type=int, default=_default("pl_interval"), show_default=True)
@click.option(
    "--style-mixing",
    type=float,
    default=_default("style_mixing"),
    show_default=True,
    help="Probability per batch.",
)
@click.option("--ema-decay", type=float, default=_default("ema_decay"), show_default=True)
@click.option(
    "--ada-target",
    type=float,
    default=_default("ada_target"),
    show_default=True,
    help="ADA: raise augmentation while E[sign D(real)] is above this.",
)
@click.option("--no-ada", is_flag=True, help="Keep the augmentation probability at --ada-p.")
@click.option(
    "--ada-p", type=float, default=_default("ada_p"), show_default=True, help="Initial probability."
)
@click.option(
    "--ada-kimg",
    type=float,
    default=_default("ada_kimg"),
    show_default=True,
    help="Thousands of real images for p to go from 0 to 1.",
)
@click.option(
    "--augment",
    "augments",
    multiple=True,
    type=click.Choice(AUGMENTS),
    help="Transforms ADA may apply (default: all of them).",
)
@click.option(
    "--mask-threshold",
    type=float,
    default=_default("mask_threshold"),
    help="Binarise many-level masks.",
)
@click.option("--sample-every", type=int, default=_default("sample_every"), show_default=True)
@click.option(
    "--checkpoint-every", type=int, default=_default("checkpoint_every"), show_default=True
)
@click.option("--log-every", type=int, default=_default("log_every"), show_default=True)
@click.option(
    "--device", default=_default("device"), show_default=True, help="auto, cpu, cuda or cuda:N."
)
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
    from synthmed.training.loop import resume_config
    from synthmed.training.train_stylegan2 import ROLE, train_stylegan2

    if no_ada:
        options["ada_target"] = None
    if resume:
        given = given_options(ctx, options)
        if data_dirs:
            given["data"] = tuple(str(d) for d in data_dirs)
        cfg = resume_config(
            out, StyleGAN2TrainConfig, given, role=ROLE, resumable=RESUMABLE_OVERRIDES
        )
    else:
        if not data_dirs:
            raise UserInputError("--data is required: one paired dataset folder per class")
        extra = {"augments": augments} if augments else {}
        cfg = StyleGAN2TrainConfig(
            data=tuple(str(d) for d in data_dirs), class_names=class_names, **extra, **options
        )
    result = train_stylegan2(cfg, out, resume=resume, progress=not quiet)
    report_run(ctx, "stylegan2", out, result, cfg.steps)
