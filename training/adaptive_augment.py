"""Differentiable augmentation of everything the discriminator sees, with an adaptive strength.

With a few hundred medical images a discriminator memorises the training set and the
generator's gradients become noise. ADA (Karras et al., 2020) augments real *and* generated
samples before the discriminator, differentiably, so the generator learns through the
augmentation and never learns to produce it; the probability `p` of each transform is raised
while the discriminator is over-confident on reals (E[sign D(real)] above a target, 0.6) and
lowered otherwise. Augmentations that are applied with p < 0.8 do not leak into samples.

Geometric transforms move image and mask channels together, so a mask stays on its image;
colour transforms touch the image channels only, and cutout blanks both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from synthmed.training.distributed import Distributed
from synthmed.training.stylegan2_config import AUGMENTS


def _chosen(n: int, p: float, device: torch.device) -> torch.Tensor:
    """A [N] float mask: 1 where a sample gets this transform (each with probability p)."""
    return (torch.rand(n, device=device) < p).float()


def _geometry(x: torch.Tensor, p: float, enabled: set[str]) -> torch.Tensor:
    """xflip, rotations by multiples of 90 degrees and integer translation (1/8 of the side),
    composed into one pixel-exact nearest-neighbour resampling with reflected borders."""
    n, device = x.shape[0], x.device
    eye = torch.eye(3, device=device).expand(n, 3, 3).clone()
    if "xflip" in enabled:
        flip = 1 - 2 * _chosen(n, p, device)
        eye[:, 0, 0] = flip
    matrix = eye
    if "rotate90" in enabled:
        k = torch.randint(0, 4, (n,), device=device) * _chosen(n, p, device)
        angle = k * (math.pi / 2)
        rot = torch.zeros(n, 3, 3, device=device)
        rot[:, 0, 0], rot[:, 0, 1] = torch.cos(angle).round(), -torch.sin(angle).round()
        rot[:, 1, 0], rot[:, 1, 1] = torch.sin(angle).round(), torch.cos(angle).round()
        rot[:, 2, 2] = 1
        matrix = rot @ matrix
    if "translate" in enabled:
        side = x.shape[-1]
        shift = torch.randint(-(side // 8), side // 8 + 1, (n, 2), device=device).float()
        shift = shift * _chosen(n, p, device)[:, None] * (2 / side)  # pixels -> [-1, 1] units
        matrix = matrix.clone()
        matrix[:, :2, 2] += shift
    if torch.equal(matrix, torch.eye(3, device=device).expand(n, 3, 3)):
        return x
    grid = F.affine_grid(matrix[:, :2], list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="reflection", align_corners=False)


def _colour(image: torch.Tensor, p: float) -> torch.Tensor:
    """Brightness, contrast and saturation, each with probability p (ADA's strengths)."""
    n, device = image.shape[0], image.device
    brightness = (
        torch.randn(n, 1, 1, 1, device=device) * 0.2 * _chosen(n, p, device)[:, None, None, None]
    )
    image = image + brightness
    contrast = torch.exp2(
        torch.randn(n, 1, 1, 1, device=device) * 0.5 * _chosen(n, p, device)[:, None, None, None]
    )
    mean = image.mean(dim=(1, 2, 3), keepdim=True)
    image = (image - mean) * contrast + mean
    if image.shape[1] == 3:
        saturation = torch.exp2(
            torch.randn(n, 1, 1, 1, device=device) * _chosen(n, p, device)[:, None, None, None]
        )
        luma = image.mean(dim=1, keepdim=True)
        image = luma + (image - luma) * saturation
    return image


def _cutout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Blank a square of half the side at a random place (DeVries & Taylor), with probability p."""
    n, _, h, w = x.shape
    centre = torch.rand(n, 2, 1, 1, device=x.device)
    rows = (torch.arange(h, device=x.device) + 0.5) / h
    cols = (torch.arange(w, device=x.device) + 0.5) / w
    inside = ((rows[None, :, None] - centre[:, 0]).abs() < 0.25) & (
        (cols[None, None, :] - centre[:, 1]).abs() < 0.25
    )
    keep = 1 - inside.float() * _chosen(n, p, x.device)[:, None, None]
    return x * keep[:, None]


def augment(
    x: torch.Tensor, p: float, image_channels: int, enabled: tuple[str, ...] = AUGMENTS
) -> torch.Tensor:
    """Augment a batch of discriminator inputs [N, image_channels + 1, H, W] in [-1, 1]."""
    if p <= 0:
        return x
    chosen = set(enabled)
    x = _geometry(x, p, chosen)
    if "colour" in chosen:
        x = torch.cat([_colour(x[:, :image_channels], p), x[:, image_channels:]], dim=1)
    if "cutout" in chosen:
        x = _cutout(x, p)
    return x


@dataclass
class AdaptiveProbability:
    """ADA's controller: p follows the sign of the discriminator's outputs on reals.

    Every `interval` steps p moves by (batch * interval) / (speed_kimg * 1000) towards more
    augmentation when E[sign D(real)] > target, towards less otherwise, so p can go from 0 to
    1 in `speed_kimg` thousand real images.
    """

    p: float = 0.0
    target: float = 0.6
    speed_kimg: float = 100.0
    interval: int = 4
    _signs: float = 0.0
    _count: int = 0

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) of one step."""
        self._signs += float(real_logits.detach().sign().sum())
        self._count += real_logits.numel()

    def update(self, batch_size: int, dist: Distributed | None = None) -> float:
        """Adjust p once `interval` steps of `batch_size` (all ranks) have been observed;
        returns E[sign D(real)] then, nan otherwise. Every rank moves p identically."""
        if self._count * (dist.world_size if dist else 1) < batch_size * self.interval:
            return math.nan
        totals = torch.tensor([self._signs, float(self._count)])
        if dist is not None and dist.world_size > 1:
            totals = dist.sum(totals.to(dist.device)).cpu()
        rt = float(totals[0] / totals[1])
        step = batch_size * self.interval / (self.speed_kimg * 1000)
        self.p = min(max(self.p + math.copysign(step, rt - self.target), 0.0), 1.0)
        self._signs, self._count = 0.0, 0
        return rt

    def state(self) -> dict[str, float]:
        """What a resume needs."""
        return {"p": self.p, "signs": self._signs, "count": self._count}

    def load(self, state: dict[str, float]) -> None:
        """Inverse of `state`."""
        self.p, self._signs, self._count = state["p"], state["signs"], int(state["count"])
