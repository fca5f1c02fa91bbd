"""Batch augmentation in torch: the same geometry for image, mask and field of view.

Geometric transforms (flips, a small rotation) move all three together so the pixel-exact
labels stay exact; colour jitter touches only the photograph, never the mask. Every random
draw comes from the generator passed in, which the training loop seeds from (seed, step).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from synthmed.training.config import AugmentConfig


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator) * (high - low) + low


def _geometry(
    stacked: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Flip and rotate each sample of `stacked` [N,C,S,S]. Flips move pixels exactly; only a
    rotation resamples (bilinearly), so --rotation-degrees 0 keeps every pixel as it was."""
    n = stacked.shape[0]
    angle = _uniform(n, -cfg.rotation_degrees, cfg.rotation_degrees, generator) * math.pi / 180
    if cfg.flips:
        for dim in (-1, -2):
            flip = (torch.rand(n, generator=generator) < 0.5).view(n, 1, 1, 1)
            stacked = torch.where(flip, stacked.flip(dim), stacked)
    if cfg.rotation_degrees <= 0:
        return stacked
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin, cos
    grid = F.affine_grid(theta.to(stacked), list(stacked.shape), align_corners=False)
    return F.grid_sample(
        stacked, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def _jitter(images: torch.Tensor, amount: float, generator: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast and saturation per sample, on images in [0, 1]."""
    n = images.shape[0]
    shape = (n, 1, 1, 1)
    brightness = _uniform(n, 1 - amount, 1 + amount, generator).view(shape).to(images)
    contrast = _uniform(n, 1 - amount, 1 + amount, generator).view(shape).to(images)
    saturation = _uniform(n, 1 - amount, 1 + amount, generator).view(shape).to(images)
    images = images * brightness
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    images = (images - mean) * contrast + mean
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * saturation + grey
    return images.clamp(0, 1)


def augment(
    images: torch.Tensor,
    masks: torch.Tensor,
    fov: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    *,
    jitter_images: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Augment a batch. Inputs and outputs: images float [N,3,S,S] in [0,1], masks and fov
    float [N,1,S,S] in {0,1}. `jitter_images` turns colour jitter on (stage II only)."""
    if cfg.flips or cfg.rotation_degrees > 0:
        out = _geometry(torch.cat([images, masks, fov], dim=1), cfg, generator)
        fov = (out[:, 4:5] >= 0.5).to(images)
        masks = (out[:, 3:4] >= 0.5).to(images) * fov
        images = out[:, :3].clamp(0, 1)
    if jitter_images and cfg.colour_jitter > 0:
        # Keep the black surround black: jitter must not invent light outside the field of view.
        images = _jitter(images, cfg.colour_jitter, generator) * fov
    return images, masks, fov
