"""Stage I's geometry, measured: how much vessel, how it branches, how wide, how fragmented.

A generator can match the vessel fraction with speckle, or draw plausible trees with no thin
vessels; these numbers show which. Per mask, inside the common field of view:

- vessel fraction: vessel pixels / field-of-view pixels;
- branch points: junctions of the skeleton (skeleton pixels with three or more skeleton
  neighbours, adjacent ones counted as one junction);
- segments: 8-connected vessel components (a real tree is a few; broken vessels are many);
- widths: at every skeleton pixel, 2 * d - 1 pixels, where d is the Euclidean distance to the
  nearest background pixel (1 for a one-pixel line, 3 for a three-pixel one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.morphology import skeletonize

# Width histogram bins: 1, 2, ..., 6 and "7 or more" pixels.
WIDTH_BINS = 7
_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class MaskStatistics:
    """Per-mask numbers, and every skeleton pixel's width pooled over the set."""

    vessel_fraction: np.ndarray
    branch_points: np.ndarray
    segments: np.ndarray
    widths: np.ndarray

    def width_histogram(self) -> np.ndarray:
        """Fraction of skeleton pixels of width 1, 2, ..., and >= WIDTH_BINS pixels."""
        rounded = np.clip(np.round(self.widths).astype(int), 1, WIDTH_BINS)
        counts = np.bincount(rounded - 1, minlength=WIDTH_BINS).astype(float)
        return counts / max(counts.sum(), 1.0)

    def summary(self) -> dict[str, float | list[float]]:
        """Means and standard deviations over masks, for tables and metrics.json."""
        out: dict[str, float | list[float]] = {"masks": float(len(self.vessel_fraction))}
        for name in ("vessel_fraction", "branch_points", "segments"):
            values = getattr(self, name)
            out[f"{name}_mean"] = float(values.mean())
            out[f"{name}_std"] = float(values.std())
        out["width_mean"] = float(self.widths.mean()) if self.widths.size else 0.0
        out["width_histogram"] = [float(v) for v in self.width_histogram()]
        return out


def _branch_points(skeleton: np.ndarray) -> int:
    neighbours = ndimage.convolve(skeleton.astype(np.uint8), _EIGHT.astype(np.uint8)) - 1
    junction_pixels = skeleton & (neighbours >= 3)
    return int(ndimage.label(junction_pixels, structure=_EIGHT)[1])


def count_pieces(mask: np.ndarray) -> int:
    """8-connected vessel pieces of one bool mask [S, S] (the `segments` statistic)."""
    return int(ndimage.label(mask, structure=_EIGHT)[1])


def mask_statistics(masks: np.ndarray, region: np.ndarray) -> MaskStatistics:
    """Statistics of binary masks [N, S, S] inside `region` (bool [S, S])."""
    fractions, branches, segments, widths = [], [], [], []
    area = max(int(region.sum()), 1)
    for mask in masks.astype(bool):
        mask = mask & region
        skeleton = skeletonize(mask)
        distance = ndimage.distance_transform_edt(mask)
        fractions.append(mask.sum() / area)
        branches.append(_branch_points(skeleton))
        segments.append(count_pieces(mask))
        widths.append(2 * distance[skeleton] - 1)
    return MaskStatistics(
        np.asarray(fractions, dtype=float),
        np.asarray(branches, dtype=float),
        np.asarray(segments, dtype=float),
        np.concatenate(widths) if widths else np.zeros(0),
    )
