"""Small building blocks shared by the generators and discriminators."""

from __future__ import annotations

import math

from torch import nn

NORMS = ("batch", "instance", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """A 2-d normalisation by name. Instance norm keeps learnable affine parameters and no
    running statistics, so train and eval mode compute the same thing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


def doubling(c_in: int, c_out: int, upsample: str, *, bias: bool) -> list[nn.Module]:
    """Layers that double the side and map c_in to c_out channels (`upsample`: one of
    training/config.py's UPSAMPLES, which every generator config checks)."""
    if upsample == "resize":
        conv = nn.Conv2d(c_in, c_out, 3, 1, 1, bias=bias)
        return [nn.Upsample(scale_factor=2, mode="nearest"), conv]
    return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias)]


def discriminator_conv(conv: nn.Conv2d, spectral_norm: bool) -> nn.Module:
    """A discriminator convolution, optionally spectrally normalised (Miyato et al., 2018):
    it bounds the discriminator's Lipschitz constant, the usual cure for a discriminator
    that overpowers its generator and for the mode collapse that follows."""
    return nn.utils.parametrizations.spectral_norm(conv) if spectral_norm else conv


def check_size(size: int, low: int = 16, high: int = 1024) -> int:
    """Validate an image side (a power of two in [low, high]) and return its log2."""
    if size < low or size > high or size & (size - 1):
        raise ValueError(f"image size must be a power of two from {low} to {high}, got {size}")
    return int(math.log2(size))


def init_gan_weights(module: nn.Module) -> None:
    """DCGAN's initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
