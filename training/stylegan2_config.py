"""Settings of a conditional StyleGAN2 run, saved inside every checkpoint it writes.

Defaults follow StyleGAN2-ADA (Adam lr 0.0025, betas (0, 0.99), lazy R1 every 16 steps, path
length every 4, style mixing 0.9, ADA target 0.6); network widths default to a size that
trains on a laptop, and `--channel-base` / `--max-channels` scale them up to the paper's
(32768 / 512 at 1024x1024). No torch here: the CLI reads the defaults and the choices below
to draw --help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from synthmed.errors import UserInputError

# The generator's architectures (models/stylegan2.py) and the transforms ADA may apply
# (adaptive_augment.py).
ARCHITECTURES = ("skip", "resnet")
AUGMENTS = ("xflip", "rotate90", "translate", "colour", "cutout")
# bf16 autocast (a CPU with bf16 arithmetic, or CUDA): 2.1x the fp32 step on two threads of a
# Xeon with AMX. No fp16: it would need loss scaling through R1's and path length's double
# backward, and a GPU without bf16 trains this model in fp32.
STYLEGAN2_PRECISIONS = ("fp32", "bf16")
# The frozen segmenter a discriminator may look through (--seg-discriminator, in both
# trainers): its training steps on the real pairs and its base channels (doubled at each of
# its 3 levels; 16 is the evaluation's own segmenter's).
SEG_STEPS = 400
SEG_WIDTH = 16

_POSITIVE_INTS = (
    "steps",
    "batch_size",
    "z_dim",
    "w_dim",
    "mapping_layers",
    "channel_base",
    "max_channels",
    "r1_interval",
    "pl_interval",
    "seg_steps",
    "seg_width",
    "log_every",
    "sample_every",
    "checkpoint_every",
)

# The settings that make the networks' shapes: `--init-from` takes them from its source
# unless they are given.
ARCHITECTURE_SETTINGS = (
    "size",
    "z_dim",
    "w_dim",
    "mapping_layers",
    "channel_base",
    "max_channels",
    "architecture",
)

# Settings that may change on resume without changing what is being trained.
RESUMABLE_OVERRIDES = (
    "steps",
    "sample_every",
    "checkpoint_every",
    "snapshot_every",
    "log_every",
    "device",
    "precision",
    "data",
)


@dataclass(frozen=True)
class StyleGAN2TrainConfig:
    """One conditional StyleGAN2 run; `data[k]` is class k's paired dataset folder."""

    data: tuple[str, ...]
    class_names: tuple[str, ...] = ()
    size: int = 64
    steps: int = 5000
    batch_size: int = 16
    lr: float = 0.0025
    beta1: float = 0.0
    beta2: float = 0.99
    seed: int = 0
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 4
    channel_base: int = 4096
    max_channels: int = 256
    architecture: str = "skip"
    r1_gamma: float | None = None  # None: StyleGAN2-ADA's heuristic 0.0002 * size^2 / batch
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    style_mixing: float = 0.9
    ema_decay: float = 0.999
    ada_target: float | None = 0.6  # None: fixed augmentation probability ada_p
    ada_p: float = 0.0
    ada_kimg: float = 100.0
    augments: tuple[str, ...] = AUGMENTS
    mask_threshold: float | None = None
    # What stage I's DCGAN needed against collapse (training/config.py), here too: MSGAN's
    # mode-seeking term between two latents of the same class (0: off), and the discriminator
    # judging the mask channel binarised (straight-through), as the exported sampler emits it.
    mode_seeking: float = 0.0
    binary_fakes: bool = False
    # What won for stage II (docs/quality.md, rows 75-77), here too: the discriminator also
    # sees a frozen segmenter's vessel probabilities of each image, beside image and mask.
    seg_discriminator: bool = False
    seg_steps: int = SEG_STEPS
    seg_width: int = SEG_WIDTH
    # A brake on a discriminator that memorises the reals (training/lecam.py): the weight of
    # LeCam's penalty on logits beyond the other side's moving average (0: off).
    lecam: float = 0.0
    # Start from another run's (or snapshot's) weights instead of from noise: transfer
    # learning (training/transfer.py). None: from noise.
    init_from: str | None = None
    # The weight of a distillation term that holds classes to frozen generators' samples
    # (0: off): init_from's classes to its source's, and each further class to the first of
    # distill_from that has it (training/distillation.py).
    distill: float = 0.0
    distill_from: tuple[str, ...] = ()
    log_every: int = 10
    sample_every: int = 250
    checkpoint_every: int = 250
    # Keep a copy of the generator every this many steps in RUN/snapshots/ (0: off).
    snapshot_every: int = 0
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        for name in ("data", "class_names", "augments", "distill_from"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problem = next(self._problems(), None)
        if problem is not None:
            raise UserInputError(problem)

    def _problems(self) -> Iterator[str]:
        """Each invalid setting as a message naming its CLI option, expected vs got."""
        if not self.data:
            yield "--data is required: one paired dataset folder per class"
        if self.size < 64 or self.size > 1024 or self.size & (self.size - 1):
            yield f"--size must be a power of two from 64 to 1024, got {self.size}"
        if self.architecture not in ARCHITECTURES:
            yield (
                f"--architecture must be one of {', '.join(ARCHITECTURES)}, "
                f"got {self.architecture!r}"
            )
        if self.precision not in STYLEGAN2_PRECISIONS:
            yield (
                f"--precision must be one of {', '.join(STYLEGAN2_PRECISIONS)}, "
                f"got {self.precision!r}"
            )
        if self.distill > 0 and self.init_from is None and not self.distill_from:
            yield "--distill holds classes to other runs' samples: pass --init-from/--distill-from"
        if self.distill_from and not self.distill > 0:
            yield "--distill-from names teachers for --distill: pass --distill WEIGHT too"
        unknown = sorted(set(self.augments) - set(AUGMENTS))
        if unknown:
            yield f"--augment {unknown[0]!r} is not one of {', '.join(AUGMENTS)}"
        yield from self._range_problems()

    def _range_problems(self) -> Iterator[str]:
        """Numbers outside their range."""
        checks = [(name, lambda v: v >= 1, ">= 1") for name in _POSITIVE_INTS]
        checks += [
            ("lr", lambda v: v > 0, "> 0"),
            ("pl_weight", lambda v: v >= 0, ">= 0"),
            ("mode_seeking", lambda v: v >= 0, ">= 0"),
            ("lecam", lambda v: v >= 0, ">= 0"),
            ("distill", lambda v: v >= 0, ">= 0"),
            ("snapshot_every", lambda v: v >= 0, ">= 0"),
            ("ada_kimg", lambda v: v > 0, "> 0"),
            ("r1_gamma", lambda v: v is None or v >= 0, ">= 0"),
            ("style_mixing", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("ada_p", lambda v: 0 <= v <= 1, "in [0, 1]"),
            ("ema_decay", lambda v: 0 <= v < 1, "in [0, 1)"),
            ("ada_target", lambda v: v is None or 0 < v < 1, "in (0, 1)"),
        ]
        for name, ok, expected in checks:
            value = getattr(self, name)
            if not ok(value):
                yield f"--{name.replace('_', '-')} must be {expected}, got {value}"

    @property
    def gamma(self) -> float:
        """The R1 weight: given, or StyleGAN2-ADA's heuristic for this size and batch."""
        if self.r1_gamma is not None:
            return self.r1_gamma
        return 0.0002 * self.size**2 / self.batch_size

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {"kind": "stylegan2", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StyleGAN2TrainConfig:
        """Inverse of `to_dict`, as read back from a checkpoint's config.json."""
        return cls(**{k: v for k, v in data.items() if k != "kind"})
