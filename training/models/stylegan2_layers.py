"""StyleGAN2's building blocks (Karras et al., 2020), written to export to ONNX as they are.

Every weight is stored N(0, 1) and scaled by 1/sqrt(fan_in) at run time ("equalised learning
rate"), so Adam moves all layers at the same relative speed. The modulated convolution
scales the *activations* by the style before a shared convolution and the outputs by the
demodulation factor after it (the `fused_modconv=False` form of the official code), instead
of building one grouped weight per sample: the graph then has one ordinary Conv whatever the
batch size, which is what lets it export with a dynamic batch axis and run on every runtime.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)
NOISE_MODES = ("random", "paired", "const", "none")


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU (slope 0.2) scaled by sqrt(2), so activations keep unit variance."""
    return F.leaky_relu(x, 0.2) * LRELU_GAIN


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each row to unit root mean square (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqualLinear(nn.Module):
    """A linear layer with equalised learning rate; `lr_mul` slows it further (mapping: 0.01)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_features)
        self.lr_mul, self.activation = lr_mul, activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, in] -> [N, out]."""
        y = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return lrelu(y) if self.activation else y


class EqualConv2d(nn.Module):
    """A same-padded convolution with equalised learning rate (discriminator layers)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, *, bias: bool = True
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1 / math.sqrt(in_channels * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, in, H, W] -> [N, out, H, W]."""
        return F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Double the side with bilinear interpolation: the [1, 3, 3, 1] FIR upsampling filter of
    StyleGAN2 at half-pixel phase, as one ONNX Resize."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled per sample by an affine map of `w`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        w_dim: int,
        *,
        demodulate: bool = True,
        up: bool = False,
    ) -> None:
        super().__init__()
        self.affine = EqualLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel * kernel)
        self.demodulate, self.up, self.padding = demodulate, up, kernel // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [N, in, H, W], w [N, w_dim] -> [N, out, H', W'] (H' = 2H with `up`)."""
        styles = self.affine(w)  # [N, in]
        weight = self.weight * self.weight_gain
        if not self.demodulate:  # toRGB: scaled like StyleGAN2's, no demodulation
            styles = styles * self.weight_gain
            weight = self.weight
        x = x * styles[:, :, None, None]
        if self.up:
            x = upsample2x(x)
        y = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # 1 / ||w * s|| per (sample, output channel): sum_i s_i^2 * sum_kk w_oikk^2.
            demod = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()
            y = y * demod[:, :, None, None]
        return y


def pair_halves(first: torch.Tensor, n: int) -> torch.Tensor:
    """A batch of n in which sample i and i + n // 2 share row i of `first` (n - n // 2 rows;
    an odd last sample keeps a row of its own): how mode seeking pairs its samples."""
    return torch.cat([first[: n // 2], first])


class NoiseInjection(nn.Module):
    """Per-pixel noise with a learned strength; `const` mode uses a fixed stored pattern.

    Training draws fresh noise ("random"; "paired" for mode seeking, where sample i and
    sample i + N/2 get the same draw, so that their difference is the latents' doing). Exported
    graphs use "const", so an image is a pure function of (z, class, truncation): reproducible
    synthesis needs no RNG inside the graph.
    """

    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))

    def forward(self, x: torch.Tensor, mode: str) -> torch.Tensor:
        """Add strength * noise to x [N, C, H, W]."""
        if mode == "none":
            return x
        if mode == "random":
            noise = torch.randn(x.shape[0], 1, x.shape[2], x.shape[3], device=x.device)
        elif mode == "paired":
            n = x.shape[0]
            draws = torch.randn(n - n // 2, 1, x.shape[2], x.shape[3], device=x.device)
            noise = pair_halves(draws, n)
        else:
            noise = self.noise_const
        return x + noise * self.strength


class StyledConv(nn.Module):
    """Modulated 3x3 convolution + noise + bias + leaky ReLU: one synthesis layer."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim, up=up)
        self.noise = NoiseInjection(resolution)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str) -> torch.Tensor:
        """x [N, in, H, W] -> [N, out, H', W']."""
        x = self.noise(self.conv(x, w), noise_mode)
        return lrelu(x + self.bias[None, :, None, None])


class ToImage(nn.Module):
    """1x1 modulated convolution (no demodulation) to image channels + the mask channel."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [N, in, H, W] -> [N, out, H, W]."""
        return self.conv(x, w) + self.bias[None, :, None, None]


def minibatch_stddev(
    x: torch.Tensor, labels: torch.Tensor | None = None, group: int = 4
) -> torch.Tensor:
    """Append the average standard deviation over groups of samples as one more channel
    (ProGAN), so the discriminator can tell a collapsed batch from a varied one.

    With `labels`, a group holds samples of one class only (about `group` of them): in a
    group that mixes a retina with a cell image the spread between the classes swamps the
    spread within either, and the discriminator is blind to one class collapsing."""
    n, c, h, w = x.shape
    if labels is None:
        labels = torch.zeros(n, dtype=torch.int64, device=x.device)
    spread = torch.zeros(n, dtype=x.dtype, device=x.device)
    for k in labels.unique().tolist():
        members = (labels == k).nonzero().flatten()
        for chunk in torch.tensor_split(members, max(1, len(members) // group)):
            if len(chunk) > 1:
                var = x[chunk].var(dim=0, unbiased=False)
                spread[chunk] = (var + 1e-8).sqrt().mean().to(x.dtype)
    return torch.cat([x, spread.reshape(n, 1, 1, 1).expand(n, 1, h, w)], dim=1)
