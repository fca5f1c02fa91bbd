"""The training run's settings, as one dataclass saved inside every checkpoint.

CLI options map onto these fields and take their defaults from them (`field_default`); a
resume rebuilds the run from the saved copy, so a run can always be continued (or
reproduced) from its folder alone. No torch here: the CLI reads this module to draw --help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from synthmed.errors import UserInputError
from synthmed.training.stylegan2_config import AUGMENTS, SEG_STEPS, SEG_WIDTH

KINDS = ("stage1", "stage2", "single")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

GAN_LOSSES = ("bce", "hinge")
# How a generator doubles its side. "transposed": a stride-2 4x4 transposed convolution
# (Radford et al.; pix2pix). "resize": nearest-neighbour doubling, then a 3x3 convolution,
# which has no uneven kernel overlap and so no checkerboard (Odena et al., 2016,
# "Deconvolution and Checkerboard Artifacts"), the pattern that breaks stage I's 1-px vessels
# into specks and lies over stage II's photographs at a period of 2 px (docs/quality.md).
UPSAMPLES = ("transposed", "resize")
# The differentiable transforms of adaptive_augment.py that each kind's discriminator input
# can take: a mask has no colour; stage II's pairs are not augmented this way.
DIFF_AUGMENTS = {
    "stage1": tuple(name for name in AUGMENTS if name != "colour"),
    "single": AUGMENTS,
    "stage2": (),
}
_POSITIVE_INTS = (
    "steps",
    "seg_steps",
    "seg_width",
    "d_scales",
    "d_layers",
    "batch_size",
    "nz",
    "r1_interval",
    "ngf",
    "ndf",
    "max_channels",
    "log_every",
    "instance_noise_steps",
    "sample_every",
    "checkpoint_every",
)

# Settings that may differ on resume without changing what has been trained: the length of
# the run, and whether its last steps fix the batch-norm statistics (so that a run trained
# without them can be finished with them).
RESUMABLE_OVERRIDES = (
    "steps",
    "fixed_bn_steps",
    "sample_every",
    "checkpoint_every",
    "snapshot_every",
    "log_every",
    "device",
    "precision",
    "data",
)


def field_default(config: type, name: str) -> Any:
    """The default of a config dataclass's field, for the click option that sets it: each
    default is written once, in the dataclass, and --help shows that value."""
    return {f.name: f for f in dataclasses.fields(config)}[name].default


@dataclass(frozen=True)
class AugmentConfig:
    """What to randomise; the defaults suit fundus photographs and microscopy tiles alike."""

    flips: bool = True
    rotation_degrees: float = 0.0  # a rotation resamples, softening 1-2 px vessels (quality.md)
    colour_jitter: float = 0.1

    def __post_init__(self) -> None:
        if not 0 <= self.rotation_degrees <= 180:
            raise UserInputError(
                f"--rotation-degrees must be in [0, 180], got {self.rotation_degrees}"
            )
        if not 0 <= self.colour_jitter < 1:
            raise UserInputError(f"--colour-jitter must be in [0, 1), got {self.colour_jitter}")

    @property
    def enabled(self) -> bool:
        """Whether any transform is on."""
        return self.flips or self.rotation_degrees > 0 or self.colour_jitter > 0


@dataclass(frozen=True)
class TrainConfig:
    """One GAN training run. Sizes and widths default to the paper-scale models."""

    kind: str
    data: str
    size: int = 64
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    max_channels: int = 512
    norm: str = "batch"
    dropout: float = 0.0  # exported U-Nets run without it; 0.5 (pix2pix's) measured worse
    l1_lambda: float = 100.0
    # Stage II: weight of the segmentation-consistency term (0: off) and the steps of the
    # frozen segmenter it uses, trained on the real pairs before the GAN starts.
    seg_lambda: float = 0.0
    seg_steps: int = SEG_STEPS
    # Base channels of that segmenter (its U-Net doubles them at each of 3 levels). Its passes
    # over every batch are most of a --seg-discriminator step's arithmetic.
    seg_width: int = SEG_WIDTH
    # Stage II: weight of the segmenter-matching term (0: off): the same frozen segmenter must
    # respond to a render as it does to the paired photograph (tasks.segmenter_match).
    seg_match_lambda: float = 0.0
    # Stage II: the PatchGAN also sees that segmenter's vessel probabilities of each image it
    # judges (tasks.Pix2PixTask.judged), a fifth input channel.
    seg_discriminator: bool = False
    # Stage II: pix2pixHD's discriminator scales and feature-matching weight (0: off).
    d_scales: int = 1
    fm_lambda: float = 0.0
    # Stage II: strided layers of each PatchGAN (3: pix2pix's 70x70 receptive field, which at
    # 64x64 is the whole image; 2: 34x34, 1: 16x16, a judge of local texture and vessels).
    d_layers: int = 3
    # Stage II: per-pixel noise maps spread from a latent (0: a deterministic render of the
    # mask). With --mode-seeking the two renders of one mask must differ (UNetGeneratorConfig).
    noise_channels: int = 0
    noise_rank: int = 32  # the rank of each noise map (UNetGeneratorConfig)
    gan_loss: str = "bce"
    spectral_norm: bool = False
    minibatch_std: bool = True
    # Discriminator stabilisers; without them stage I's discriminator wins within 100 steps
    # (real masks are exactly binary) and the generator only ever draws speckle.
    instance_noise: float = 0.3
    instance_noise_steps: int = 2000
    label_smoothing: float = 0.1
    ema_decay: float = 0.999
    # pix2pix's schedule: over the last lr_decay_steps of --steps both learning rates fall
    # linearly to 0 (0: constant). A function of (step, --steps) alone, so a resumed run
    # follows it exactly; raising --steps on --resume moves the decay to the new end.
    lr_decay_steps: int = 0
    # Over the last fixed_bn_steps of --steps the generator trains with batch-norm statistics
    # measured once and then fixed (its norm layers in eval mode), so that the discriminator
    # judges the renders as exported rather than as normalised by their batch (0: off).
    # Like lr_decay_steps, a function of (step, --steps).
    fixed_bn_steps: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Stage I and the single GAN: DiffAugment (Zhao et al., 2020), transforms applied to every
    # discriminator input, real and generated, differentiably; and an R1 penalty on reals,
    # every r1_interval steps (0: off). Both keep a discriminator from memorising 500 masks.
    diff_augment: tuple[str, ...] = ()
    r1_gamma: float = 0.0
    r1_interval: int = 4
    # MSGAN's mode-seeking term (Mao et al., 2019; 0: off). The generator is penalised when
    # two latents far apart give near-identical outputs, which is how a collapsing DCGAN draws
    # the same vessel tree for most of its latent space, and how a stage II with noise maps
    # learns to ignore them (its two renders of one mask are compared).
    mode_seeking: float = 0.0
    # How the generator doubles its side (UPSAMPLES): the DCGAN's layers, or stage II's U-Net
    # decoder.
    upsample: str = "transposed"
    # Stage I: the discriminator judges the generator's masks binarised (straight-through).
    binary_fakes: bool = False
    # Stage I: the hysteresis confidence of the exported masks (DCGANConfig.mask_confidence);
    # None: chosen at each checkpoint from the training masks (training/mask_confidence.py).
    mask_confidence: float | None = None
    mask_threshold: float | None = None
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 250
    # Keep a copy of the generator every this many steps in RUN/snapshots/ (0: off).
    snapshot_every: int = 0
    precision: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "diff_augment", tuple(self.diff_augment))
        problem = next(self._problems(), None)
        if problem is not None:
            raise UserInputError(problem)

    @property
    def uses_segmenter(self) -> bool:
        """Whether stage II trains a frozen segmenter first: some term looks through it."""
        return self.seg_lambda > 0 or self.seg_match_lambda > 0 or self.seg_discriminator

    def _problems(self) -> Iterator[str]:
        """Each invalid setting as a message naming its CLI option, expected vs got."""

        def option(name: str) -> str:
            return "--" + name.replace("_", "-")

        allowed = DIFF_AUGMENTS[self.kind] if self.kind in KINDS else ()
        for name in self.diff_augment:
            if name not in allowed:
                expected = (
                    f"one of {', '.join(allowed)}"
                    if allowed
                    else "none (its discriminator judges mask-image pairs)"
                )
                yield f"--diff-augment {name!r} for {self.kind}: expected {expected}"

        choices = (
            ("kind", KINDS),
            ("precision", PRECISIONS),
            ("gan_loss", GAN_LOSSES),
            ("upsample", UPSAMPLES),
        )
        for name, allowed in choices:
            value = getattr(self, name)
            if value not in allowed:
                yield f"{option(name)} must be one of {', '.join(allowed)}, got {value!r}"
        if self.size < 32 or self.size > 1024 or self.size & (self.size - 1):
            yield f"--size must be a power of two from 32 to 1024, got {self.size}"
        for name in _POSITIVE_INTS:
            if getattr(self, name) < 1:
                yield f"{option(name)} must be >= 1, got {getattr(self, name)}"
        if not self.lr > 0:
            yield f"--lr must be > 0, got {self.lr}"
        yield from self._window_problems(option)
        yield from self._range_problems(option)
        if self.mask_threshold is not None and not 0 < self.mask_threshold < 1:
            yield f"--mask-threshold must be in (0, 1), got {self.mask_threshold}"

    def _window_problems(self, option: Callable[[str], str]) -> Iterator[str]:
        """Schedules over the last N steps: N must fit in the run."""
        for name in ("lr_decay_steps", "fixed_bn_steps"):
            value = getattr(self, name)
            if not 0 <= value <= self.steps:
                yield f"{option(name)} must be in [0, --steps {self.steps}], got {value}"

    def _range_problems(self, option: Callable[[str], str]) -> Iterator[str]:
        """Weights that must not be negative, fractions that must stay below a bound, and
        discriminator scales that the image size can hold."""
        if self.size >> (self.d_scales - 1) < 32:
            most = max(1, (self.size // 32).bit_length())
            yield (
                f"--d-scales {self.d_scales} at --size {self.size}: the coarsest scale would "
                f"be {self.size >> (self.d_scales - 1)} px (at least 32); at most {most} here"
            )
        yield from self._noise_problems()
        if self.mask_confidence is not None and not 0 <= self.mask_confidence < 1:
            yield f"--mask-confidence must be in [0, 1), got {self.mask_confidence}"
        if self.mask_confidence is not None and self.kind != "stage1":
            yield f"--mask-confidence for {self.kind}: only stage I draws masks"
        if self.binary_fakes and self.kind != "stage1":
            yield f"--binary-fakes for {self.kind}: only stage I draws masks"
        if self.d_layers != 3 and self.kind != "stage2":
            yield f"--d-layers for {self.kind}: only stage II's PatchGAN has it"
        for name in (
            "instance_noise",
            "seg_lambda",
            "seg_match_lambda",
            "fm_lambda",
            "r1_gamma",
            "mode_seeking",
            "noise_channels",
            "snapshot_every",
        ):
            if getattr(self, name) < 0:
                yield f"{option(name)} must be >= 0, got {getattr(self, name)}"
        for name in ("seg_lambda", "seg_match_lambda", "seg_discriminator"):
            if getattr(self, name) > 0 and self.kind != "stage2":
                yield f"{option(name)} for {self.kind}: only stage II learns from a segmenter"
        for name, high in (("ema_decay", 1.0), ("label_smoothing", 0.5), ("dropout", 1.0)):
            if not 0 <= getattr(self, name) < high:
                yield f"{option(name)} must be in [0, {high}), got {getattr(self, name)}"

    def _noise_problems(self) -> Iterator[str]:
        """Stage II's noise maps and the mode-seeking comparison of its renders."""
        if self.mode_seeking and self.kind == "stage2" and not self.noise_channels:
            yield (
                "--mode-seeking for stage2 needs --noise-channels >= 1 (without noise every "
                "render of a mask is the same)"
            )
        if self.noise_channels and self.kind != "stage2":
            yield f"--noise-channels for {self.kind}: only stage II renders from noise maps"
        if not 1 <= self.noise_rank <= self.size:
            yield f"--noise-rank must be in [1, --size {self.size}], got {self.noise_rank}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (the augment settings nested)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`, as read back from a checkpoint's config.json."""
        data = dict(data)
        data["augment"] = AugmentConfig(**data.get("augment", {}))
        return cls(**data)
