"""`synthmed train stylegan2`: one conditional generator over several datasets (one per class)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from synthmed.errors import UserInputError
from synthmed.training.cli import (
    SEG_STEPS_HELP,
    SEG_WIDTH_HELP,
    SNAPSHOT_HELP,
    config_option,
    given_options,
    report_run,
    require_torch,
)
from synthmed.training.stylegan2_config import (
    ARCHITECTURE_SETTINGS,
    ARCHITECTURES,
    AUGMENTS,
    RESUMABLE_OVERRIDES,
    STYLEGAN2_PRECISIONS,
    StyleGAN2TrainConfig,
)

# Each option's default is the config's, written once there.
_option = functools.partial(config_option, StyleGAN2TrainConfig)


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
@_option("--size", type=int, help="Image side, 64..1024.")
@_option("--steps", type=int)
@_option("--batch-size", type=int, help="Per process.")
@_option("--lr", type=float, help="Adam lr (G and D).")
@_option("--seed", type=int)
@_option("--z-dim", type=int, help="Latent size.")
@_option("--w-dim", type=int, help="Style (W) size.")
@_option("--mapping-layers", type=int)
@_option(
    "--channel-base",
    type=int,
    help="Widths are channel_base / resolution (StyleGAN2 at 1024: 32768).",
)
@_option("--max-channels", type=int, help="Width cap.")
@_option(
    "--architecture",
    type=click.Choice(ARCHITECTURES),
    help="Generator: summed toRGB outputs (skip) or residual blocks.",
)
@_option(
    "--r1-gamma",
    type=float,
    help="R1 weight (default: 0.0002 * size^2 / batch).",
    show_default=False,
)
@_option("--r1-interval", type=int, help="Lazy R1 period.")
@_option("--pl-weight", type=float, help="Path length; 0 turns it off.")
@_option("--pl-interval", type=int)
@_option("--style-mixing", type=float, help="Probability per batch.")
@_option("--ema-decay", type=float)
@_option(
    "--ada-target", type=float, help="ADA: raise augmentation while E[sign D(real)] is above this."
)
@click.option("--no-ada", is_flag=True, help="Keep the augmentation probability at --ada-p.")
@_option("--ada-p", type=float, help="Initial probability.")
@_option("--ada-kimg", type=float, help="Thousands of real images for p to go from 0 to 1.")
@click.option(
    "--augment",
    "augments",
    multiple=True,
    type=click.Choice(AUGMENTS),
    help="Transforms ADA may apply (default: all of them).",
)
@_option("--mask-threshold", type=float, help="Binarise many-level masks.", show_default=False)
@_option(
    "--mode-seeking",
    type=float,
    help="Weight of MSGAN's mode-seeking term between two latents of one class; 0: off.",
)
@_option(
    "--binary-fakes/--no-binary-fakes",
    help="The discriminator sees the generated mask channel binarised (straight-through).",
)
@_option(
    "--seg-discriminator/--no-seg-discriminator",
    help="The discriminator also sees a frozen segmenter's vessel probabilities of each "
    "image (one segmenter, trained on every class's real pairs first).",
)
@_option(
    "--lecam",
    type=float,
    help="Weight of LeCam's penalty on discriminator logits beyond the other side's moving "
    "average, a brake on a discriminator that memorises few reals; 0: off.",
)
@_option("--seg-steps", type=int, help=SEG_STEPS_HELP)
@_option("--seg-width", type=int, help=SEG_WIDTH_HELP)
@_option("--sample-every", type=int)
@_option("--checkpoint-every", type=int)
@_option("--snapshot-every", type=int, help=SNAPSHOT_HELP)
@_option("--log-every", type=int)
@_option("--device", help="auto, cpu, cuda or cuda:N.")
@_option(
    "--precision",
    type=click.Choice(STYLEGAN2_PRECISIONS),
    help="bf16: autocast to bfloat16 (CUDA, or a CPU with AVX-512 BF16 or AMX; fp32 weights); "
    "its quality against fp32 is not yet measured.",
)
@click.option(
    "--init-from",
    type=click.Path(path_type=Path),
    help="Start from the weights of another run folder (generator, discriminator, EMA) or "
    "snapshot (generator only) instead of from noise: fine-tuning. Classes are matched by "
    "name; the architecture options default to the source's.",
)
@_option(
    "--distill",
    type=float,
    help="Weight of a term holding classes to frozen generators' samples: --init-from's "
    "classes to its source's (adding a class without overwriting them), others to "
    "--distill-from's; 0: off.",
)
@click.option(
    "--distill-from",
    "distill_from",
    multiple=True,
    type=click.Path(path_type=Path),
    help="A further generator (run folder or snapshot) whose classes --distill holds to its "
    "samples, e.g. one trained on that class alone; repeatable.",
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
    init_from: Path | None,
    distill_from: tuple[Path, ...],
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
    from synthmed.training.transfer import source_info

    if no_ada:
        options["ada_target"] = None
    if resume and init_from is not None:
        raise UserInputError("--init-from starts a run; --resume continues one: pass one")
    if resume:
        given = given_options(ctx, options)
        if data_dirs:
            given["data"] = tuple(str(d) for d in data_dirs)
        if distill_from:
            given["distill_from"] = tuple(str(d) for d in distill_from)
        cfg = resume_config(
            out, StyleGAN2TrainConfig, given, role=ROLE, resumable=RESUMABLE_OVERRIDES
        )
    else:
        if not data_dirs:
            raise UserInputError("--data is required: one paired dataset folder per class")
        extra: dict[str, Any] = {"augments": augments} if augments else {}
        extra["distill_from"] = tuple(str(d) for d in distill_from)
        if init_from is not None:
            # The source's network shapes, unless typed: a fine-tune rarely wants others.
            source = source_info(init_from, ROLE).model_config
            typed = given_options(ctx, options)
            for name in ARCHITECTURE_SETTINGS:
                if name not in typed:
                    options[name] = getattr(source, name)
            extra["init_from"] = str(init_from)
        cfg = StyleGAN2TrainConfig(
            data=tuple(str(d) for d in data_dirs), class_names=class_names, **extra, **options
        )
    result = train_stylegan2(cfg, out, resume=resume, progress=not quiet)
    report_run(ctx, "stylegan2", out, result, cfg.steps)
