"""The report's pictures: sample grids (Pillow) and plots (matplotlib, drawn without a display).

Every function writes one PNG and returns nothing; the report links the files by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from synthmed.evaluation.distribution import CHANNELS  # noqa: E402
from synthmed.evaluation.mask_statistics import WIDTH_BINS, MaskStatistics  # noqa: E402
from synthmed.evaluation.privacy import PrivacyAudit  # noqa: E402

# Small images are enlarged (nearest neighbour, so pixels stay honest) to at least this size.
MIN_TILE = 128


def _rgb(tile: np.ndarray) -> np.ndarray:
    """HxW (mask or probability in [0, 255]) or HxWx3 uint8 -> HxWx3 uint8."""
    tile = np.asarray(tile)
    return np.repeat(tile[:, :, None], 3, axis=2) if tile.ndim == 2 else tile


def save_grid(path: Path, rows: Sequence[Sequence[np.ndarray]], gap: int = 2) -> None:
    """Tiles (uint8, HxW or HxWx3, all one size) in rows, with a white gap between them."""
    height, width = np.asarray(rows[0][0]).shape[:2]
    scale = max(1, -(-MIN_TILE // max(height, width)))
    h, w = height * scale, width * scale
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            big = _rgb(tile).repeat(scale, axis=0).repeat(scale, axis=1)
            canvas[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = big
    Image.fromarray(canvas).save(path)


def to_tiles(images: np.ndarray, count: int) -> list[np.ndarray]:
    """The first `count` images of a uint8 set [N, 3, S, S] or masks [N, 1, S, S] as tiles."""
    images = np.asarray(images[:count])
    if images.shape[1] == 1:
        return list(images[:, 0] * (255 if images.max(initial=0) <= 1 else 1))
    return list(images.transpose(0, 2, 3, 1))


def plot_intensity_histograms(path: Path, histograms: dict[str, np.ndarray]) -> None:
    """One panel per colour channel; each set's histogram [3, 256], normalised."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), sharey=True)
    for i, (axis, channel) in enumerate(zip(axes, CHANNELS, strict=True)):
        for label, counts in histograms.items():
            axis.plot(counts[i] / max(counts[i].sum(), 1), label=label, linewidth=1.2)
        axis.set_title(f"{channel} channel, inside the field of view")
        axis.set_xlabel("8-bit intensity")
    axes[0].set_ylabel("fraction of pixels")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_width_histograms(path: Path, statistics: dict[str, MaskStatistics]) -> None:
    """Side-by-side bars: fraction of skeleton pixels per vessel width."""
    fig, axis = plt.subplots(figsize=(6, 3.2))
    bar = 0.8 / len(statistics)
    x = np.arange(WIDTH_BINS)
    for i, (label, stats) in enumerate(statistics.items()):
        axis.bar(x + i * bar, stats.width_histogram(), width=bar, label=label)
    axis.set_xticks(x + 0.4 - bar / 2, [str(w) for w in range(1, WIDTH_BINS)] + [f">={WIDTH_BINS}"])
    axis.set_xlabel("vessel width at the centreline (pixels)")
    axis.set_ylabel("fraction of centreline")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_nearest_distances(path: Path, audits: dict[str, PrivacyAudit]) -> None:
    """Nearest-training-image distances of each synthetic set and of held-out real images,
    with the near-copy threshold, in pixel and in feature space."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4))
    for axis, space in zip(axes, ("pixel", "feature"), strict=True):
        first = getattr(next(iter(audits.values())), space)
        everything = [first.held_out.distance] + [
            getattr(a, space).synthetic.distance for a in audits.values()
        ]
        bins = np.linspace(0, max(float(np.max(np.concatenate(everything))), 1e-9), 40)
        axis.hist(
            first.held_out.distance, bins=bins, density=True, alpha=0.6, label="held-out real"
        )
        for label, audit in audits.items():
            distances = getattr(audit, space).synthetic.distance
            axis.hist(distances, bins=bins, density=True, alpha=0.5, label=label)
        axis.axvline(first.threshold, color="red", linestyle="--", label="near-copy threshold")
        axis.set_title(f"distance to the nearest training image ({space} space)")
        axis.set_xlabel("RMS pixel difference" if space == "pixel" else "feature distance")
    axes[0].set_ylabel("density")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_small_data(
    path: Path, rows: list[dict[str, object]], references: dict[str, tuple[float, float]]
) -> None:
    """Test F1 against the number of real training images, with error bars of one standard
    deviation over repeats; `references` are arms that use no real image (label -> F1 mean,
    std), drawn as horizontal lines with a band."""
    fig, axis = plt.subplots(figsize=(6, 3.4))
    for arm, marker in (("real", "o"), ("real+synthetic", "s")):
        points = sorted(
            (r["real_images"], r["f1_at_threshold"], r["f1_at_threshold_std"])
            for r in rows
            if r["arm"] == arm
        )
        x, y, std = zip(*points, strict=True)
        axis.errorbar(x, y, yerr=std, marker=marker, capsize=3, label=arm)
    for (label, (mean, std)), style in zip(references.items(), ("--", ":"), strict=False):
        line = axis.axhline(mean, color="grey", linestyle=style, label=label)
        if std > 0:
            axis.axhspan(mean - std, mean + std, color=line.get_color(), alpha=0.15)
    axis.set_xlabel("real training images")
    axis.set_ylabel("test F1 (validation threshold)")
    axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
