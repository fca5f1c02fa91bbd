"""Class-conditional StyleGAN2: (z, class) -> image + mask channel, and a projection critic.

One generator covers several modalities (retina photographs, microscopy tiles, ...): the
class embedding joins z at the mapping network's input, so each class gets its own region of
W. The synthesis network draws `image_channels` colour channels and one mask channel from
the same features, so every sample comes with its label. Classes trained on grayscale data
are made exactly gray (R = G = B, their mean) inside the generator, so no path can emit a
tinted microscopy tile. Truncation pulls w towards the *class's* average w, which keeps a
truncated sample in its class (a single global average would drift every class towards the
others).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.training.models.layers import check_size
from synthmed.training.models.registry import register_model
from synthmed.training.models.stylegan2_layers import (
    NOISE_MODES,
    EqualConv2d,
    EqualLinear,
    StyledConv,
    ToImage,
    lrelu,
    minibatch_stddev,
    normalize_2nd_moment,
    upsample2x,
)
from synthmed.training.stylegan2_config import ARCHITECTURES

# The tensors indexed by class, per network, for moving weights between runs whose classes
# differ (training/transfer.py): name -> (class axis, or None where the tensor follows from
# the run's data rather than training; whether an equalised-lr gain of 1/sqrt(classes)
# scales it).
CLASS_INDEXED: dict[str, dict[str, tuple[int | None, bool]]] = {
    "generator": {
        "mapping.embed.weight": (1, True),
        "mapping.w_avg": (0, False),
        "grayscale": (None, False),
    },
    "discriminator": {"embed": (0, False)},
}


@dataclass(frozen=True)
class CStyleGAN2Config:
    """Shape of a conditional StyleGAN2 pair. Widths: min(channel_base / resolution, max)."""

    size: int = 64
    classes: tuple[str, ...] = ("class0", "class1")
    grayscale_classes: tuple[int, ...] = ()
    image_channels: int = 3
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    channel_base: int = 16384
    max_channels: int = 512
    architecture: str = "skip"  # generator: toRGB skips summed, or residual blocks
    # Discriminator only: channels it judges beside image and mask (1: a frozen segmenter's
    # view of the image, --seg-discriminator). The generator's saved config keeps 0.
    view_channels: int = 0

    def __post_init__(self) -> None:
        # JSON gives lists back; keep the config hashable and comparable.
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "grayscale_classes", tuple(self.grayscale_classes))
        check_size(self.size, low=8, high=1024)
        if not self.classes:
            raise ValueError("a conditional StyleGAN2 needs at least one class")
        if any(not 0 <= k < len(self.classes) for k in self.grayscale_classes):
            raise ValueError(f"grayscale_classes {self.grayscale_classes} outside the classes")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture}"
            )
        if self.image_channels not in (1, 3):
            raise ValueError(f"image_channels must be 1 or 3, got {self.image_channels}")
        if min(self.z_dim, self.w_dim, self.mapping_layers, self.channel_base) < 1:
            raise ValueError("z_dim, w_dim, mapping_layers and channel_base must be positive")
        if self.view_channels < 0:
            raise ValueError(f"view_channels must be >= 0, got {self.view_channels}")

    @property
    def num_classes(self) -> int:
        """Number of classes (modalities)."""
        return len(self.classes)

    @property
    def resolutions(self) -> list[int]:
        """4, 8, ..., size."""
        return [2**i for i in range(2, check_size(self.size, low=8, high=1024) + 1)]

    @property
    def num_ws(self) -> int:
        """How many w vectors the synthesis network takes (one per layer, + the last toRGB)."""
        return 2 * len(self.resolutions)

    def channels(self, resolution: int) -> int:
        """Feature channels at `resolution`."""
        return max(1, min(self.channel_base // resolution, self.max_channels))


class MappingNetwork(nn.Module):
    """(z, class) -> w, and the running average of w per class for truncation."""

    def __init__(self, config: CStyleGAN2Config) -> None:
        super().__init__()
        self.embed = EqualLinear(config.num_classes, config.w_dim)
        dims = [config.z_dim + config.w_dim] + [config.w_dim] * config.mapping_layers
        self.layers = nn.Sequential(
            *(
                EqualLinear(a, b, lr_mul=0.01, activation=True)
                for a, b in zip(dims, dims[1:], strict=False)
            )
        )
        self.register_buffer("w_avg", torch.zeros(config.num_classes, config.w_dim))
        self.num_classes = config.num_classes

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor, truncation: torch.Tensor | float = 1.0
    ) -> torch.Tensor:
        """z [N, z_dim], labels int [N], truncation float or [N] -> w [N, w_dim]."""
        onehot = F.one_hot(labels.long(), self.num_classes).to(z.dtype)
        x = torch.cat([normalize_2nd_moment(z), normalize_2nd_moment(self.embed(onehot))], dim=1)
        w = self.layers(x)
        if isinstance(truncation, torch.Tensor) or truncation != 1.0:
            psi = torch.as_tensor(truncation, dtype=w.dtype, device=w.device).reshape(-1, 1)
            avg = self.w_avg[labels.long()]
            w = avg + psi * (w - avg)
        return w

    @torch.no_grad()
    def track_average(self, w: torch.Tensor, labels: torch.Tensor, beta: float = 0.995) -> None:
        """Move each class's average w towards this batch's mean w of that class (w may be
        bf16 under autocast; the average stays fp32)."""
        for k in labels.unique().tolist():
            self.w_avg[k].lerp_(w[labels == k].float().mean(dim=0), 1 - beta)


class SynthesisBlock(nn.Module):
    """One resolution: (upsample +) two styled convolutions, and a toRGB for skip outputs."""

    def __init__(self, config: CStyleGAN2Config, resolution: int, last: bool) -> None:
        super().__init__()
        c_out = config.channels(resolution)
        self.first = resolution == 4
        self.residual = config.architecture == "resnet" and not self.first
        out_ch = config.image_channels + 1
        if self.first:
            self.const = nn.Parameter(torch.randn(c_out, 4, 4))
        else:
            c_in = config.channels(resolution // 2)
            self.conv0 = StyledConv(c_in, c_out, config.w_dim, resolution, up=True)
            if self.residual:
                self.skip = EqualConv2d(c_in, c_out, 1, bias=False)
        self.conv1 = StyledConv(c_out, c_out, config.w_dim, resolution, up=False)
        skip_outputs = config.architecture == "skip"
        self.to_image = ToImage(c_out, out_ch, config.w_dim) if (last or skip_outputs) else None

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """ws [N, 3, w_dim]: the w of conv0, conv1 and toRGB of this block."""
        if self.first:
            x = self.const[None].expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, ws[:, 0], noise_mode)
        elif self.residual:
            y = self.skip(upsample2x(x))
            x = self.conv1(self.conv0(x, ws[:, 0], noise_mode), ws[:, 1], noise_mode)
            x = (x + y) / math.sqrt(2)
        else:
            x = self.conv1(self.conv0(x, ws[:, 0], noise_mode), ws[:, 1], noise_mode)
        if self.to_image is not None:
            y = self.to_image(x, ws[:, 1 if self.first else 2])
            img = y if img is None else upsample2x(img) + y
        return x, img


@register_model("cstylegan2_generator", CStyleGAN2Config)
class CStyleGAN2Generator(nn.Module):
    """(z [N, z_dim], class [N]) -> [N, image_channels + 1, size, size]; the last channel is
    the mask (> 0 is foreground), the others the image in about [-1, 1]."""

    def __init__(self, config: CStyleGAN2Config) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        resolutions = config.resolutions
        self.blocks = nn.ModuleList(
            SynthesisBlock(config, r, last=r == resolutions[-1]) for r in resolutions
        )
        gray = torch.zeros(config.num_classes)
        gray[list(config.grayscale_classes)] = 1.0
        self.register_buffer("grayscale", gray)

    def synthesis(
        self, ws: torch.Tensor, labels: torch.Tensor, noise_mode: str = "random"
    ) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> image + mask channels."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        x = img = None
        for i, block in enumerate(self.blocks):
            start = max(0, 2 * i - 1)  # block 0 uses ws 0-1; block i >= 1 uses 2i-1 .. 2i+1
            x, img = block(x, img, ws[:, start : start + 3], noise_mode)
        return self.to_class_colour(img, labels)

    def to_class_colour(self, out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Make the image channels of grayscale classes their mean; the mask is untouched."""
        if not self.config.grayscale_classes or self.config.image_channels == 1:
            return out
        c = self.config.image_channels
        gray = self.grayscale[labels.long()].to(out.dtype)[:, None, None, None]
        image = out[:, :c]
        # A blend whose weights are exactly 0 or 1, so a gray class is R = G = B to the bit.
        mixed = image * (1 - gray) + image.mean(dim=1, keepdim=True) * gray
        return torch.cat([mixed, out[:, c:]], dim=1)

    def forward(
        self,
        z: torch.Tensor,
        labels: torch.Tensor,
        truncation: torch.Tensor | float = 1.0,
        noise_mode: str = "const",
    ) -> torch.Tensor:
        """Sample: every layer gets the same w (no style mixing); noise fixed by default."""
        w = self.mapping(z, labels, truncation)
        ws = w[:, None].expand(-1, self.config.num_ws, -1)
        return self.synthesis(ws, labels, noise_mode)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convolutions then 2x average pooling, plus a 1x1 skip."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0 = EqualConv2d(c_in, c_in, 3)
        self.conv1 = EqualConv2d(c_in, c_out, 3)
        self.skip = EqualConv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, c_in, H, W] -> [N, c_out, H/2, W/2]."""
        y = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(lrelu(self.conv1(lrelu(self.conv0(x)))), 2)
        return (x + y) / math.sqrt(2)


@register_model("cstylegan2_discriminator", CStyleGAN2Config)
class CStyleGAN2Discriminator(nn.Module):
    """(image + mask [+ view] [N, C + 1 + V, S, S], class [N]) -> one logit per sample [N].

    Conditioned by projection (Miyato & Koyama, 2018): logit = psi(h) + <embed(class), h>,
    with h the image features, so the critic judges "a real sample *of this class*".
    """

    def __init__(self, config: CStyleGAN2Config) -> None:
        super().__init__()
        resolutions = list(reversed(config.resolutions))  # size ... 4
        judged = config.image_channels + 1 + config.view_channels
        self.from_image = EqualConv2d(judged, config.channels(config.size), 1)
        self.blocks = nn.Sequential(
            *(
                DiscriminatorBlock(config.channels(r), config.channels(r // 2))
                for r in resolutions[:-1]
            )
        )
        c4 = config.channels(4)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, activation=True)
        self.out = EqualLinear(c4, 1)
        self.embed = nn.Parameter(torch.randn(config.num_classes, c4))
        self.embed_gain = 1 / math.sqrt(c4)

    def forward(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits, not probabilities: the losses apply softplus."""
        x = self.blocks(lrelu(self.from_image(image)))
        x = lrelu(self.conv(minibatch_stddev(x, labels)))
        h = self.fc(x.flatten(1))
        projection = (h * self.embed[labels.long()]).sum(dim=1) * self.embed_gain
        return self.out(h).squeeze(1) + projection
