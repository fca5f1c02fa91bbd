"""The segmentation U-Net (Ronneberger et al.) that evaluation trains on real and synthetic data.

This is the downstream judge of the dual-GAN paper: if synthetic pairs train it as well as real
ones, the generator has captured what matters for the task.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.training.models.layers import norm_layer
from synthmed.training.models.registry import register_model


@dataclass(frozen=True)
class SegmentationUNetConfig:
    """Image channels in, one vessel logit out; `depth` poolings, widths doubling per level."""

    in_channels: int = 3
    out_channels: int = 1
    base_channels: int = 32
    depth: int = 4
    norm: str = "batch"

    def __post_init__(self) -> None:
        if self.depth < 1 or self.base_channels < 1:
            raise ValueError("depth and base_channels must be positive")
        norm_layer(self.norm, 1)


def _double_conv(c_in: int, c_out: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        norm_layer(norm, c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        norm_layer(norm, c_out),
        nn.ReLU(inplace=True),
    )


@register_model("segmentation_unet", SegmentationUNetConfig)
class SegmentationUNet(nn.Module):
    """image [N, in, H, W] (H, W divisible by 2**depth) -> logits [N, out, H, W]."""

    def __init__(self, config: SegmentationUNetConfig) -> None:
        super().__init__()
        widths = [config.base_channels * 2**i for i in range(config.depth + 1)]
        self.encoders = nn.ModuleList(
            [_double_conv(config.in_channels, widths[0], config.norm)]
            + [_double_conv(widths[i - 1], widths[i], config.norm) for i in range(1, len(widths))]
        )
        self.decoders = nn.ModuleList(
            [
                _double_conv(widths[i] + widths[i + 1], widths[i], config.norm)
                for i in reversed(range(config.depth))
            ]
        )
        self.head = nn.Conv2d(widths[0], config.out_channels, 1)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The feature map of every encoder level, finest first (evaluation embeds with these)."""
        features = []
        x = image
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits; apply a sigmoid for vessel probabilities."""
        skips = self.encode(image)
        x = skips[-1]
        for decoder, skip in zip(self.decoders, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = decoder(torch.cat([skip, x], dim=1))
        return self.head(x)
