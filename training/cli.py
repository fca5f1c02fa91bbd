"""Training-side commands: `synthmed data ...`, `train`, `train-demo` and `sample`.

Only click is imported here; torch and the models load inside each command, so the CLI
starts (and `--help` works) on a client-only install.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from synthmed.errors import UserInputError
from synthmed.training.config import (
    GAN_LOSSES,
    PRECISIONS,
    RESUMABLE_OVERRIDES,
    UPSAMPLES,
    AugmentConfig,
    TrainConfig,
    field_default,
)
from synthmed.training.demo import DEMO_DATA
from synthmed.training.demo import ROLES as DEMO_ROLES
from synthmed.training.stylegan2_config import AUGMENTS

if TYPE_CHECKING:
    from synthmed.training.loop import TrainResult

TRAIN_EXTRA = "this command needs the training extra: pip install 'synthmed[train]'"


def require_torch() -> None:
    """Refuse, in one line, a training command on an install without the train extra."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise UserInputError(TRAIN_EXTRA) from e


@click.group()
def data() -> None:
    """Make and check paired (image, mask) datasets."""


@data.command("phantom")
@click.option(
    "--kind",
    type=click.Choice(["retina", "cells"]),
    default="retina",
    show_default=True,
    help="retina: fundus photo + vessel tree; cells: microscopy tile + nuclei.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder to write images/, masks/, fov/.",
)
@click.option("--count", type=int, default=100, show_default=True, help="Number of pairs.")
@click.option(
    "--size", type=int, default=256, show_default=True, help="Side of the square images, in pixels."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--grayscale", is_flag=True, help="Write one-channel (luma) images.")
def data_phantom(kind: str, out: Path, count: int, size: int, seed: int, grayscale: bool) -> None:
    """Write procedural (image, mask) pairs: a stand-in for DRIVE where it cannot be downloaded."""
    from synthmed.training.data.phantom import write_phantom_dataset

    names = write_phantom_dataset(kind, out, count, size, seed, grayscale=grayscale, progress=True)
    tone = "grayscale " if grayscale else ""
    click.echo(f"wrote {len(names)} {tone}{kind} pairs of {size}x{size} to {out}")


@data.command("check")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--size", type=int, default=256, show_default=True, help="Training size to fit the images to."
)
@click.option(
    "--mask-threshold",
    type=float,
    default=None,
    help="Binarise many-level masks at this fraction of full range (e.g. 0.5).",
)
@click.option(
    "--split", default="training", show_default=True, help="Subfolder of a DRIVE-style root."
)
def data_check(folder: Path, size: int, mask_threshold: float | None, split: str) -> None:
    """Read every pair in FOLDER as training would, and summarise it (or name the bad file)."""
    require_torch()
    from synthmed.training.data.dataset import load_paired_data
    from synthmed.training.data.layouts import detect_layout, find_pairs, resolve_root

    pairs = find_pairs(folder, split=split)
    dataset = load_paired_data(
        folder, size, mask_threshold=mask_threshold, split=split, progress=True
    )
    layout = detect_layout(resolve_root(folder, split))
    fov = sum(p.fov is not None for p in pairs)
    click.echo(
        f"{folder}: {len(dataset)} pairs ({layout} layout, {fov} with field of view), "
        f"vessel fraction in field of view {dataset.vessel_fraction():.3f}, "
        f"fingerprint {dataset.fingerprint[:16]}"
    )


# Each option's default is the config's, written once there.
def config_option(config: type, flag: str, **kwargs: Any) -> Callable:
    """A click option for the config field named like the flag (--r1-interval: r1_interval),
    with the dataclass's default (written once, there) shown in --help; a --x/--no-x switch
    sets field x."""
    kwargs.setdefault("show_default", True)
    field = flag.split("/")[0].lstrip("-").replace("-", "_")
    return click.option(flag, default=field_default(config, field), **kwargs)


_option = functools.partial(config_option, TrainConfig)
_augment_option = functools.partial(config_option, AugmentConfig)
_AUGMENT_FIELDS = tuple(f.name for f in dataclasses.fields(AugmentConfig))
# Shared with `synthmed train stylegan2` (stylegan2_cli.py).
SEG_STEPS_HELP = "Steps of the frozen segmenter's training on the real pairs."
SEG_WIDTH_HELP = "Base channels of the frozen segmenter (doubled at each of its 3 levels)."
SNAPSHOT_HELP = "Also keep the generator every this many steps in RUN/snapshots/ (0: off)."

_TRAIN_OPTIONS = [
    click.option(
        "--data",
        "data_dir",
        type=click.Path(path_type=Path),
        help="Paired dataset folder, any recognised layout (required unless --resume).",
    ),
    click.option(
        "--out",
        type=click.Path(path_type=Path),
        required=True,
        help="Run folder: checkpoints, logs, samples.",
    ),
    _option("--size", type=int, help="Image side (power of two, 32..1024)."),
    _option("--steps", type=int, help="Total optimisation steps."),
    _option("--batch-size", type=int, help="Batch size per process."),
    _option("--lr", type=float, help="Adam learning rate (G and D)."),
    _option(
        "--lr-decay-steps",
        type=int,
        help="Over the last this many steps both learning rates fall linearly to 0 "
        "(pix2pix's schedule); 0: constant.",
    ),
    _option(
        "--fixed-bn-steps",
        type=int,
        help="Over the last this many steps the generator trains with its batch-norm "
        "statistics measured and fixed, as it is exported; 0: batch statistics throughout.",
    ),
    _option("--beta1", type=float, help="Adam beta1."),
    _option("--seed", type=int, help="Seeds init, batches, augmentation, noise."),
    _option("--nz", type=int, help="Latent size (stage1, single; stage2 with noise channels)."),
    _option("--ngf", type=int, help="Generator base width."),
    _option("--ndf", type=int, help="Discriminator base width."),
    _option("--max-channels", type=int, help="Cap on any layer's width."),
    _option("--norm", type=click.Choice(["batch", "instance", "none"])),
    _option("--l1-lambda", type=float, help="Weight of stage II's L1 term."),
    _option(
        "--dropout",
        type=float,
        help="Stage II U-Net dropout while training (exported generators run without it).",
    ),
    _option(
        "--seg-lambda",
        type=float,
        help="Stage II: weight of the segmentation-consistency loss (a segmenter trained on "
        "the real pairs, frozen, must recover the mask from the generated image); 0: off.",
    ),
    _option(
        "--seg-match-lambda",
        type=float,
        help="Stage II: weight of the segmenter-matching loss (the same frozen segmenter's "
        "vessel probabilities on a render against those on the paired photograph); 0: off.",
    ),
    _option(
        "--seg-discriminator/--no-seg-discriminator",
        help="Stage II: the PatchGAN also sees the same frozen segmenter's vessel "
        "probabilities of each image it judges, so renders must look as ambiguous to a "
        "segmenter as photographs do.",
    ),
    _option("--seg-steps", type=int, help=SEG_STEPS_HELP),
    _option("--seg-width", type=int, help=SEG_WIDTH_HELP),
    _option(
        "--d-scales",
        type=int,
        help="Stage II: PatchGAN discriminators at this many resolutions, each half the "
        "previous; the coarsest must be at least 32 px (pix2pixHD: 3).",
    ),
    _option(
        "--d-layers",
        type=int,
        help="Stage II: strided layers of each PatchGAN: 3 judges 70x70 patches (pix2pix), "
        "2 34x34, 1 16x16.",
    ),
    _option(
        "--fm-lambda",
        type=float,
        help="Stage II: weight of discriminator feature matching (pix2pixHD: 10); 0: off.",
    ),
    _option(
        "--gan-loss",
        type=click.Choice(GAN_LOSSES),
        help="Adversarial loss: the original (bce) or hinge.",
    ),
    _option(
        "--spectral-norm",
        is_flag=True,
        help="Spectrally normalise the discriminator.",
        show_default=False,
    ),
    _option(
        "--minibatch-std/--no-minibatch-std",
        help="Let the DCGAN discriminator see the batch's spread (fights mode collapse).",
    ),
    _option(
        "--instance-noise",
        type=float,
        help="Std of noise on discriminator inputs, annealed linearly to 0.",
    ),
    _option(
        "--instance-noise-steps", type=int, help="Steps over which the instance noise anneals to 0."
    ),
    _option(
        "--label-smoothing",
        type=float,
        help="One-sided: real targets of the discriminator become 1 - this.",
    ),
    _option(
        "--diff-augment",
        multiple=True,
        type=click.Choice(AUGMENTS),
        show_default=False,
        help="Stage I / single: DiffAugment, a transform applied to every discriminator "
        "input, real and generated (repeat the option; stage I: translate and cutout).",
    ),
    _option("--r1-gamma", type=float, help="Weight of the R1 penalty on reals; 0: off."),
    _option("--r1-interval", type=int, help="Steps between R1 penalties (lazy R1)."),
    _option(
        "--mode-seeking",
        type=float,
        help="Weight of MSGAN's mode-seeking term against collapse (stage II: needs "
        "--noise-channels); 0: off.",
    ),
    _option(
        "--noise-channels",
        type=int,
        help="Stage II: per-pixel noise maps spread from the latent z, for texture that varies "
        "between renders; 0: a deterministic render of the mask.",
    ),
    _option(
        "--noise-rank",
        type=int,
        help="Stage II: rank r of each noise map (U M V^T, M r x r from z); the stored "
        "projection holds noise-channels * r^2 * nz numbers, whatever the size.",
    ),
    _option(
        "--binary-fakes/--no-binary-fakes",
        help="Stage I: the discriminator sees the generated masks binarised, as stage II gets "
        "them (straight-through gradient).",
    ),
    _option(
        "--mask-confidence",
        type=float,
        help="Stage I: keep a vessel piece only where the generator's output exceeds this "
        "somewhere along it (0: every pixel > 0); default: chosen at each checkpoint so the "
        "masks have about as many pieces as the training masks.",
    ),
    _option(
        "--upsample",
        type=click.Choice(UPSAMPLES),
        help="The generator's doubling layers (stage I and single: the DCGAN's; stage II: "
        "the U-Net decoder's); resize (nearest, then 3x3) avoids the transposed "
        "convolution's checkerboard.",
    ),
    _option("--ema-decay", type=float, help="EMA of generator weights."),
    click.option("--no-augment", is_flag=True, help="Turn off flips, rotation and colour jitter."),
    _augment_option("--flips/--no-flips", help="Random horizontal and vertical flips."),
    _augment_option(
        "--rotation-degrees",
        type=float,
        help="Largest random rotation. Rotating resamples the photograph bilinearly, which "
        "softens structures 1-2 px wide: 0 keeps stage II's targets sharp.",
    ),
    _augment_option(
        "--colour-jitter",
        type=float,
        help="Stage II: random brightness, contrast and saturation, as a fraction.",
    ),
    _option(
        "--mask-threshold",
        type=float,
        help="Binarise many-level masks at this fraction.",
        show_default=False,
    ),
    _option("--sample-every", type=int, help="Steps between sample grids."),
    _option("--checkpoint-every", type=int, help="Steps between checkpoints."),
    _option("--snapshot-every", type=int, help=SNAPSHOT_HELP),
    _option("--log-every", type=int, help="Steps between losses.csv rows."),
    _option(
        "--precision",
        type=click.Choice(PRECISIONS),
        help="auto: bf16 autocast on CUDA, fp32 on CPU. bf16 on a CPU with AVX-512 BF16 or "
        "AMX trains about 1.5x faster than fp32.",
    ),
    _option("--device", help="auto, cpu, cuda or cuda:N."),
    click.option(
        "--resume", is_flag=True, help="Continue the run in --out exactly where it stopped."
    ),
    click.option("--quiet", is_flag=True, help="No progress bar."),
]


def _with_train_options(func: Any) -> Any:
    for option in reversed(_TRAIN_OPTIONS):
        func = option(func)
    return func


@click.group("train")
def train_group() -> None:
    """Train a generator: the dual GAN's stage1 and stage2, the single-GAN baseline, or a
    conditional StyleGAN2 over several datasets.

    Ctrl-C (or SIGTERM) saves a checkpoint before exiting; --resume continues it. For several
    GPUs run the same command under torchrun, e.g.
    `torchrun --nproc-per-node 4 -m synthmed train stage2 --data DIR --out RUN`.
    """


_DUAL_GAN_HELP = {
    "stage1": "Stage I of the dual GAN: noise -> segmentation mask (a DCGAN).",
    "stage2": "Stage II of the dual GAN: mask -> photograph (pix2pix).",
    "single": "The single-GAN baseline: noise -> photograph, no mask (a DCGAN).",
}


def _dual_gan_command(kind: str) -> click.Command:
    """`synthmed train KIND` for one of the dual GAN's kinds; all share the same options."""

    @click.command(kind, help=_DUAL_GAN_HELP[kind])
    @_with_train_options
    @click.pass_context
    def command(
        ctx: click.Context,
        data_dir: Path | None,
        out: Path,
        resume: bool,
        quiet: bool,
        no_augment: bool,
        **options: Any,
    ) -> None:
        require_torch()
        from synthmed.training.loop import resume_config
        from synthmed.training.train import train

        augment_options = {name: options.pop(name) for name in _AUGMENT_FIELDS}
        if resume:
            given = given_options(ctx, options)
            typed = [*given_options(ctx, augment_options), *(["no_augment"] if no_augment else [])]
            if typed:
                raise UserInputError(
                    f"--{typed[0].replace('_', '-')} cannot change on --resume: the run keeps "
                    "the augmentation it started with"
                )
            if data_dir is not None:
                given["data"] = str(data_dir)
            cfg = resume_config(out, TrainConfig, given, role=kind, resumable=RESUMABLE_OVERRIDES)
        else:
            if data_dir is None:
                raise UserInputError("--data is required (the paired dataset folder to train on)")
            augment = (
                AugmentConfig(flips=False, rotation_degrees=0, colour_jitter=0)
                if no_augment
                else AugmentConfig(**augment_options)
            )
            cfg = TrainConfig(kind=kind, data=str(data_dir), augment=augment, **options)
        result = train(cfg, out, resume=resume, progress=not quiet)
        report_run(ctx, kind, out, result, cfg.steps)

    return command


def given_options(ctx: click.Context, options: dict[str, Any]) -> dict[str, Any]:
    """The options typed on the command line (not defaults): what a resume may override."""
    return {
        k: v
        for k, v in options.items()
        if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE
    }


def report_run(ctx: click.Context, kind: str, out: Path, result: TrainResult, steps: int) -> None:
    """Print a run's last losses and metrics; exit 130 if it was interrupted."""
    summary = " ".join(
        f"{k}={v:.4g}" for k, v in {**result.last_losses, **result.eval_metrics}.items()
    )
    click.echo(
        f"{kind}: step {result.step}/{steps}, {result.seconds_per_step:.3f} s/step, {summary}"
    )
    if result.interrupted:
        click.echo(f"interrupted: checkpoint saved in {out}; continue with --resume", err=True)
        ctx.exit(130)
    click.echo(f"checkpoint: {out}")


for _kind in _DUAL_GAN_HELP:
    train_group.add_command(_dual_gan_command(_kind))


@click.command("train-demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for stage1/ and stage2/ (the bundled ones live in training/demo_models).",
)
@click.option(
    "--steps-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiply every run's step count (e.g. 0.01 for a smoke test).",
)
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(DEMO_ROLES),
    help="Rebuild only this stage (repeatable; default: both).",
)
@click.option(
    "--size",
    type=int,
    default=DEMO_DATA["size"],
    show_default=True,
    help="Phantom and model size: 128 is the bundled models' recipe; other sizes train "
    "the 64x64 recipe at that resolution.",
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=TrainConfig.precision,
    show_default=True,
    help="As for `synthmed train`: bf16 on a CPU with AVX-512 BF16 or AMX trains faster, at "
    "the fp32 recipe's quality at 64x64 and 128x128 (docs/quality.md row 102 and #128x128; "
    "the bundled models took 58 minutes in bf16 on 2 AVX-512 BF16 cores).",
)
def train_demo_cmd(
    out: Path, steps_scale: float, roles: tuple[str, ...], size: int, precision: str
) -> None:
    """Rebuild the bundled demo models: retina phantoms, then stage I, then stage II."""
    require_torch()
    from synthmed.training.demo import train_demo

    runs = train_demo(
        out,
        roles=roles or DEMO_ROLES,
        size=size,
        steps_scale=steps_scale,
        precision=precision,
    )
    click.echo("demo models: " + ", ".join(str(p) for p in runs.values()))


@click.command("sample")
@click.option(
    "--stage1",
    type=click.Path(path_type=Path),
    default=None,
    help="Stage I run (default: bundled demo).",
)
@click.option(
    "--stage2",
    type=click.Path(path_type=Path),
    default=None,
    help="Stage II run (default: bundled demo).",
)
@click.option(
    "--count", type=int, default=16, show_default=True, help="Number of (image, mask) pairs."
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder for images/ and masks/."
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Sample i depends on (seed, i) only."
)
@click.option("--batch-size", type=int, default=16, show_default=True)
def sample_cmd(
    stage1: Path | None, stage2: Path | None, count: int, out: Path, seed: int, batch_size: int
) -> None:
    """Synthesize labelled pairs in-process with PyTorch: stage I mask -> stage II image."""
    require_torch()
    from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2, sample_to_folder

    written = sample_to_folder(
        stage1 or DEMO_STAGE1, stage2 or DEMO_STAGE2, out, count, seed=seed, batch_size=batch_size
    )
    click.echo(f"wrote {written} synthetic image/mask pairs to {out}")
