"""pix2pix: a U-Net generator (mask -> image) and a PatchGAN discriminator (Isola et al.).

Stage II learns photorealism given the geometry: the U-Net's skip connections carry the
mask's exact vessel positions to the output, the PatchGAN judges local texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


@dataclass(frozen=True)
class UNetGeneratorConfig:
    """A pix2pix U-Net with log2(size) levels, down to 1x1 at the bottleneck.

    `dropout` is pix2pix's noise source in the three innermost decoder blocks; it is active in
    training only, so the exported generator (eval mode) is deterministic.

    `noise_channels` > 0 makes the render stochastic without randomness in the graph: the
    latent z [nz] is spread into that many per-pixel noise maps by a fixed random projection
    (drawn once from `NOISE_SEED`, stored with the weights) and fed beside the mask. The
    texture of a photograph (background grain, vessel contrast) is not a function of the vessel
    mask, and a deterministic U-Net renders every mask with the same average texture; quality.md
    measures what the noise buys. The projection is separable, so that it stays small at any
    size: z gives each map an r x r matrix M (r: `noise_rank`), and the map is U M V^T with
    fixed random U, V [S, r], unit variance per pixel. A dense projection [S*S, nz] per map
    would hold 6.5 MB at 64x64 with four maps, and 420 MB at 512x512.
    """

    size: int = 256
    in_channels: int = 1
    out_channels: int = 3
    ngf: int = 64
    max_channels: int = 512
    norm: str = "batch"
    dropout: float = 0.5
    noise_channels: int = 0
    noise_rank: int = 32
    nz: int = 100
    # How each decoder level doubles the side (layers.UPSAMPLES). pix2pix's transposed
    # convolution leaves a period-2 pattern in the photographs' background, 6.7 times the
    # real power at the checkerboard frequency at 64x64 (docs/quality.md, row 68).
    upsample: str = "transposed"

    def __post_init__(self) -> None:
        check_size(self.size, low=32)
        if self.upsample not in UPSAMPLES:
            expected = ", ".join(UPSAMPLES)
            raise ValueError(f"upsample must be one of {expected}, got {self.upsample!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.noise_channels < 0 or self.nz < 1 or not 1 <= self.noise_rank <= self.size:
            raise ValueError(
                f"noise_channels >= 0, nz >= 1 and 1 <= noise_rank <= size needed, got {self}"
            )
        norm_layer(self.norm, 1)

    def widths(self) -> list[int]:
        """Encoder channels, outermost first."""
        levels = check_size(self.size, low=32)
        return [min(self.ngf * 2**i, self.max_channels) for i in range(levels)]


def _down(c_in: int, c_out: int, norm: str | None, first: bool) -> nn.Sequential:
    layers: list[nn.Module] = [] if first else [nn.LeakyReLU(0.2)]
    layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm is None))
    if norm is not None:
        layers.append(norm_layer(norm, c_out))
    return nn.Sequential(*layers)


def _up(c_in: int, c_out: int, norm: str, dropout: float, upsample: str) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.ReLU(),
        *doubling(c_in, c_out, upsample, bias=False),
        norm_layer(norm, c_out),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


# The seed of the fixed latent -> noise projection; stored with the weights all the same, so a
# checkpoint never depends on how a future torch draws random numbers.
NOISE_SEED = 20260


@register_model("unet_generator", UNetGeneratorConfig)
class UNetGenerator(nn.Module):
    """(mask [N, in, S, S] in [-1, 1], latent [N, nz]) -> image [N, out, S, S] in [-1, 1]
    (tanh). A generator without noise channels ignores the latent."""

    def __init__(self, config: UNetGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths()
        n = len(w)
        if config.noise_channels:
            # For a standard normal z: M's entries ~ N(0, 1) (coefficients N(0, 1/nz)), and
            # U, V entries N(0, 1/r) give each pixel of U M V^T unit variance.
            k, r, s = config.noise_channels, config.noise_rank, config.size
            seeded = torch.Generator().manual_seed(NOISE_SEED)
            for name, shape, fan in (
                ("noise_coefficients", (k * r * r, config.nz), config.nz),
                ("noise_rows", (s, r), r),
                ("noise_columns", (s, r), r),
            ):
                self.register_buffer(name, torch.randn(shape, generator=seeded) / fan**0.5)
        self.down = nn.ModuleList(
            [_down(config.in_channels + config.noise_channels, w[0], None, first=True)]
            + [
                _down(w[i - 1], w[i], config.norm if i < n - 1 else None, False)
                for i in range(1, n)
            ]
        )
        # up[i] maps level i to level i-1; all but the innermost take the skip concatenated.
        up = config.upsample
        ups = [_up(w[n - 1], w[n - 2], config.norm, config.dropout, up)]
        for i in range(n - 2, 0, -1):
            dropout = config.dropout if i >= n - 4 else 0.0
            ups.append(_up(2 * w[i], w[i - 1], config.norm, dropout, up))
        self.up = nn.ModuleList(ups)
        self.out = nn.Sequential(
            nn.ReLU(), *doubling(2 * w[0], config.out_channels, up, bias=True), nn.Tanh()
        )
        init_gan_weights(self)

    def noise(self, z: torch.Tensor) -> torch.Tensor:
        """The per-pixel noise maps [N, noise_channels, S, S] of latents z [N, nz]."""
        r = self.config.noise_rank
        m = (z.to(self.noise_coefficients.dtype) @ self.noise_coefficients.T).view(
            -1, self.config.noise_channels, r, r
        )
        return self.noise_rows @ m @ self.noise_columns.T

    def forward(self, mask: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Encode to 1x1, decode back with a skip from every encoder level."""
        skips = []
        x = mask
        if self.config.noise_channels:
            if z is None:
                raise ValueError("this stage II renders from noise: pass a latent z [N, nz]")
            x = torch.cat([mask, self.noise(z).to(mask.dtype)], dim=1)
        for down in self.down:
            x = down(x)
            skips.append(x)
        x = self.up[0](skips[-1])
        for up, skip in zip(self.up[1:], reversed(skips[1:-1]), strict=True):
            x = up(torch.cat([skip, x], dim=1))
        return self.out(torch.cat([skips[0], x], dim=1))


@dataclass(frozen=True)
class PatchDiscriminatorConfig:
    """A PatchGAN over (mask, image) pairs; 3 layers give pix2pix's 70x70 receptive field.
    `scales` > 1 adds pix2pixHD's coarser copies, each seeing the pair at half the previous
    resolution: the finest judges texture, the coarser ones layout (disc, field of view)."""

    in_channels: int = 4
    ndf: int = 64
    n_layers: int = 3
    norm: str = "batch"
    spectral_norm: bool = False  # replaces the norm layers
    scales: int = 1

    def __post_init__(self) -> None:
        if self.n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {self.n_layers}")
        if self.scales < 1:
            raise ValueError(f"scales must be >= 1, got {self.scales}")
        norm_layer(self.norm, 1)


def _patch_net(config: PatchDiscriminatorConfig) -> nn.Sequential:
    """One PatchGAN: strided convolutions to a map of logits."""
    ndf, sn = config.ndf, config.spectral_norm
    norm = "none" if sn else config.norm
    layers: list[nn.Module] = [
        discriminator_conv(nn.Conv2d(config.in_channels, ndf, 4, 2, 1), sn),
        nn.LeakyReLU(0.2, True),
    ]
    c_in = ndf
    for i in range(1, config.n_layers + 1):
        c_out = ndf * min(2**i, 8)
        stride = 2 if i < config.n_layers else 1
        layers += [
            discriminator_conv(nn.Conv2d(c_in, c_out, 4, stride, 1, bias=sn), sn),
            norm_layer(norm, c_out),
            nn.LeakyReLU(0.2, True),
        ]
        c_in = c_out
    layers.append(discriminator_conv(nn.Conv2d(c_in, 1, 4, 1, 1), sn))
    return nn.Sequential(*layers)


@register_model("patch_discriminator", PatchDiscriminatorConfig)
class PatchDiscriminator(nn.Module):
    """(mask, image) concatenated [N, in, S, S] -> real/fake logits per patch (and scale)."""

    def __init__(self, config: PatchDiscriminatorConfig) -> None:
        super().__init__()
        self.net = _patch_net(config)
        self.coarser = nn.ModuleList([_patch_net(config) for _ in range(config.scales - 1)])
        init_gan_weights(self)

    def _pyramid(self, pair: torch.Tensor) -> list[tuple[nn.Sequential, torch.Tensor]]:
        """Each scale's network and its input, finest first."""
        inputs = [(self.net, pair)]
        for net in self.coarser:
            pair = F.avg_pool2d(pair, 3, stride=2, padding=1, count_include_pad=False)
            inputs.append((net, pair))
        return inputs

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """Patch logits [N, 1, h, w]; with several scales, every scale's logits flattened and
        concatenated [N, patches] (the losses average over whatever shape they get)."""
        logits = [net(x) for net, x in self._pyramid(pair)]
        return logits[0] if len(logits) == 1 else torch.cat([x.flatten(1) for x in logits], 1)

    def features(self, pair: torch.Tensor) -> list[torch.Tensor]:
        """Every hidden activation of every scale: what feature matching compares."""
        out = []
        for net, x in self._pyramid(pair):
            for layer in net[:-1]:
                x = layer(x)
                if isinstance(layer, nn.LeakyReLU):
                    out.append(x)
        return out
