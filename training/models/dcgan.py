"""DCGAN: noise -> image. Stage I (a 1-channel vessel mask) and the single-GAN baseline (RGB).

Radford et al.'s architecture, grown to any power-of-two size: a 4x4 projection of the
latent, then stride-2 transposed convolutions doubling the side until the target size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from synthmed.training.config import UPSAMPLES
from synthmed.training.models.layers import (
    check_size,
    discriminator_conv,
    doubling,
    init_gan_weights,
    norm_layer,
)
from synthmed.training.models.registry import register_model
from synthmed.training.pixels import binary_mask


@dataclass(frozen=True)
class DCGANConfig:
    """Shape of a DCGAN pair; `out_channels` is 1 for stage I masks, 3 for the baseline."""

    size: int = 64
    nz: int = 100
    out_channels: int = 1
    ngf: int = 64
    ndf: int = 64
    max_channels: int = 512
    norm: str = "batch"
    spectral_norm: bool = False  # discriminator only; replaces its norm layers
    minibatch_std: bool = False  # discriminator only; see DCGANDiscriminator
    # Generator only: how each layer doubles the side (layers.UPSAMPLES).
    upsample: str = "transposed"
    # Stage I only: binarisation with hysteresis (training/pixels.py's binary_mask). A vessel
    # piece is kept only where the output exceeds this somewhere along it; 0 keeps every
    # pixel > 0. Chosen after training, on the training masks (training/mask_confidence.py).
    mask_confidence: float = 0.0

    def __post_init__(self) -> None:
        check_size(self.size, low=8)
        if self.nz < 1 or self.ngf < 1 or self.ndf < 1 or self.out_channels < 1:
            raise ValueError("nz, ngf, ndf and out_channels must be positive")
        norm_layer(self.norm, 1)
        if self.upsample not in UPSAMPLES:
            expected = ", ".join(UPSAMPLES)
            raise ValueError(f"upsample must be one of {expected}, got {self.upsample!r}")
        if not 0 <= self.mask_confidence < 1:
            raise ValueError(f"mask_confidence must be in [0, 1), got {self.mask_confidence}")

    def widths(self, base: int) -> list[int]:
        """Channels per resolution from 4x4 up to size/2 (generator order)."""
        levels = check_size(self.size, low=8) - 2
        return [min(base * 2 ** (levels - 1 - i), self.max_channels) for i in range(levels)]


@register_model("dcgan_generator", DCGANConfig)
class DCGANGenerator(nn.Module):
    """z [N, nz] -> image [N, out_channels, size, size] in [-1, 1] (tanh)."""

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.widths(config.ngf)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(config.nz, widths[0], 4, 1, 0, bias=False),
            norm_layer(config.norm, widths[0]),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [
                *doubling(c_in, c_out, config.upsample, bias=False),
                norm_layer(config.norm, c_out),
                nn.ReLU(inplace=True),
            ]
        last = doubling(widths[-1], config.out_channels, config.upsample, bias=True)
        layers += [*last, nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_gan_weights(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Generate from flat latents; [N, nz, 1, 1] is accepted too."""
        return self.net(z.reshape(z.shape[0], self.config.nz, 1, 1))

    def mask(self, z: torch.Tensor) -> torch.Tensor:
        """Stage I's vessel mask in {0., 1.} [N, 1, size, size], as every path serves it."""
        return binary_mask(self(z), self.config.mask_confidence)


@register_model("dcgan_discriminator", DCGANConfig)
class DCGANDiscriminator(nn.Module):
    """image [N, out_channels, size, size] -> one real/fake logit per image [N]."""

    def __init__(self, config: DCGANConfig) -> None:
        super().__init__()
        widths = list(reversed(config.widths(config.ndf)))
        sn = config.spectral_norm
        norm = "none" if sn else config.norm
        layers: list[nn.Module] = [
            discriminator_conv(nn.Conv2d(config.out_channels, widths[0], 4, 2, 1), sn),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [
                discriminator_conv(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=sn), sn),
                norm_layer(norm, c_out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.minibatch_std = config.minibatch_std
        extra = 1 if config.minibatch_std else 0
        self.head = discriminator_conv(nn.Conv2d(widths[-1] + extra, 1, 4, 1, 0), sn)
        init_gan_weights(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits, not probabilities: the loss applies the sigmoid stably.

        With `minibatch_std` the head also sees how much the batch varies (ProGAN's
        minibatch standard deviation), so a generator that collapses to one output is caught.
        """
        x = self.features(image)
        if self.minibatch_std:
            spread = x.std(dim=0, unbiased=False).mean().expand(x.shape[0], 1, *x.shape[2:])
            x = torch.cat([x, spread], dim=1)
        return self.head(x).flatten()
