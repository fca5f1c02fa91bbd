"""The dual-GAN paper's KL divergence between synthetic and real images, defined exactly.

What is compared: for each colour channel, the histogram of 8-bit intensities (256 bins) of
every pixel inside the common field of view, pooled over all images of a set. The common field
of view is where at least half of the real training images have their field of view; real and
synthetic images are measured on that same region, since a generated image has no FOV file.
Each histogram gets one pseudo-count per bin (add-one smoothing, so an intensity a set never
produces costs a finite amount) and is normalised to a distribution. The reported number is

    KL(P_real || Q_other) = sum_i p_i * ln(p_i / q_i)    in nats, averaged over R, G and B,

the extra code length of describing real pixels with the other set's histogram: it grows when
the other set misses intensities the real images have. The reference value is the same
quantity for held-out real images (real vs real), the paper's "real subset" row.
"""

from __future__ import annotations

import numpy as np
import torch

CHANNELS = ("red", "green", "blue")


def common_fov(fov: torch.Tensor) -> np.ndarray:
    """bool [S, S]: where at least half of the images' fields of view [N, 1, S, S] are."""
    return (fov.float().mean(dim=(0, 1)) >= 0.5).numpy()


def intensity_histograms(images: torch.Tensor, region: np.ndarray) -> np.ndarray:
    """Counts int64 [3, 256] of each channel's 8-bit values inside `region`, over all images."""
    pixels = images.permute(1, 0, 2, 3)[:, :, torch.from_numpy(region)]
    return np.stack([np.bincount(c.reshape(-1).numpy(), minlength=256) for c in pixels])


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """KL(P || Q) in nats between two histograms of counts, add-one smoothed."""
    p = (p_counts + 1.0) / (p_counts.sum() + p_counts.size)
    q = (q_counts + 1.0) / (q_counts.sum() + q_counts.size)
    return float(np.sum(p * np.log(p / q)))


def intensity_kl(real: torch.Tensor, other: torch.Tensor, region: np.ndarray) -> dict[str, float]:
    """KL(real || other) per channel and their mean, for uint8 image sets [N, 3, S, S]."""
    p, q = intensity_histograms(real, region), intensity_histograms(other, region)
    per_channel = {name: kl_divergence(p[i], q[i]) for i, name in enumerate(CHANNELS)}
    return {**per_channel, "mean": float(np.mean(list(per_channel.values())))}


def brightness_outliers(real: torch.Tensor, other: torch.Tensor, region: np.ndarray) -> float:
    """The share of `other`'s images whose mean intensity inside `region` is below the darkest
    real image's or above the brightest one's, for uint8 sets [N, 3, S, S]. The KL pools
    pixels, so a few nearly black or washed-out images hide in it; this counts them. A fresh
    image of the real kind lands outside N real ones' range with probability 2 / (N + 1)."""

    def brightness(images: torch.Tensor) -> torch.Tensor:
        return images[:, :, torch.from_numpy(region)].float().mean(dim=(1, 2))

    reference, values = brightness(real), brightness(other)
    outside = (values < reference.min()) | (values > reference.max())
    return float(outside.float().mean())
