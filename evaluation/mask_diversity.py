"""Stage I's diversity and fidelity, measured by how masks overlap: does it draw as many
different trees as there are patients, does it reach every kind of real tree, and does each tree
it draws look like a real one?

The vessel statistics (mask_statistics.py) compare averages, which a generator can match while
drawing nearly the same tree again and again; overlaps between whole masks show that. Every
number is an IoU (intersection over union) of binary masks inside the common field of view:

- diversity: the mean IoU over all pairs of masks within one set; higher means more alike. The
  real training masks are the target, held-out real masks show how alike two real samples
  are; the headline is the ratio synthetic / real training (the target is at most 1.15).
- coverage: for every held-out real mask, the IoU of the synthetic mask that overlaps it most,
  averaged. Low when the generator never draws trees like some patients'.
- precision: for every synthetic mask, the IoU of the real training mask that overlaps it
  most, averaged. Low when the generator draws trees unlike any patient's.
- reference for both: for every held-out real mask, the IoU of the real training mask that
  overlaps it most, averaged: how close a new patient comes to the training set, which is the
  coverage real training data give and the precision a new real mask has.

Beside these, each mean statistic of the synthetic masks (vessel fraction, branch points,
segments, width) as a % difference from the real training masks (the target is within 20 %).

A nearest neighbour is closer in a larger set, so the synthetic and real training masks are
subsampled to the same number (at most MAX_MASKS, seeded), which also keeps this fast: IoUs come
from one matrix product of the flattened masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthmed.evaluation.mask_statistics import MaskStatistics

MAX_MASKS = 200
# The targets for stage I: mean pairwise IoU at most this times the real one, and every
# mean statistic within this many percent of the real one.
PAIRWISE_RATIO_TARGET = 1.15
GEOMETRY_TARGET_PERCENT = 20.0
# Pixels per matrix product: bounds memory at large sizes, and keeps float32 counts exact.
_CHUNK = 1 << 16
_GEOMETRY = ("vessel_fraction_mean", "branch_points_mean", "segments_mean", "width_mean")


def flatten_masks(masks: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Binary masks [N, S, S] -> bool [N, P]: each mask's pixels inside `region` (bool [S, S])."""
    return masks.astype(bool)[:, region]


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every mask in `a` [Na, P] with every mask in `b` [Nb, P] (bool), as [Na, Nb].

    Two empty masks are identical (IoU 1).
    """
    intersection = np.zeros((len(a), len(b)))
    for start in range(0, a.shape[1], _CHUNK):
        part_a = a[:, start : start + _CHUNK].astype(np.float32)
        part_b = b[:, start : start + _CHUNK].astype(np.float32)
        intersection += part_a @ part_b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def mean_pairwise_iou(masks: np.ndarray) -> float:
    """Mean IoU over all pairs of different masks [N, P]; NaN for fewer than two masks."""
    n = len(masks)
    if n < 2:
        return float("nan")
    iou = iou_matrix(masks, masks)
    return float((iou.sum() - np.trace(iou)) / (n * (n - 1)))


def mean_nearest_iou(queries: np.ndarray, references: np.ndarray) -> float:
    """For every query mask, the IoU of the reference mask that overlaps it most; their mean."""
    return float(iou_matrix(queries, references).max(axis=1).mean())


def _subsample(masks: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    if len(masks) <= count:
        return masks
    return masks[np.sort(rng.choice(len(masks), count, replace=False))]


def _percent_difference(synthetic: float, real: float) -> float:
    return 100.0 * (synthetic - real) / real if real else float("nan")


@dataclass
class MaskDiversity:
    """Diversity, coverage and precision of a synthetic mask set against real masks."""

    masks: dict[str, int]
    pairwise_iou: dict[str, float]
    coverage: float
    precision: float
    nearest_reference: float
    geometry_difference_percent: dict[str, float]

    def ratio_to_real(self, key: str) -> float:
        """A set's mean pairwise IoU / the real training masks' (1: as diverse as they are)."""
        real = self.pairwise_iou["real_train"]
        return self.pairwise_iou[key] / real if real else float("nan")

    @property
    def pairwise_ratio(self) -> float:
        """The headline: the synthetic masks' mean pairwise IoU / the real training masks'."""
        return self.ratio_to_real("synthetic")

    def summary(self) -> dict[str, object]:
        """For tables and metrics.json, with the targets and whether each is met."""
        geometry_ok = {
            k: bool(abs(v) <= GEOMETRY_TARGET_PERCENT)
            for k, v in self.geometry_difference_percent.items()
        }
        return {
            "masks": self.masks,
            "pairwise_iou": self.pairwise_iou,
            "pairwise_iou_ratio": self.pairwise_ratio,
            "pairwise_iou_ratio_target": PAIRWISE_RATIO_TARGET,
            "pairwise_iou_ratio_within_target": bool(self.pairwise_ratio <= PAIRWISE_RATIO_TARGET),
            "coverage": self.coverage,
            "precision": self.precision,
            "nearest_reference": self.nearest_reference,
            "geometry_difference_percent": self.geometry_difference_percent,
            "geometry_target_percent": GEOMETRY_TARGET_PERCENT,
            "geometry_within_target": geometry_ok,
        }


def mask_diversity(
    synthetic: np.ndarray,
    real_train: np.ndarray,
    held_out: np.ndarray,
    region: np.ndarray,
    *,
    real_statistics: MaskStatistics,
    synthetic_statistics: MaskStatistics,
    seed: int = 0,
    max_masks: int = MAX_MASKS,
) -> MaskDiversity:
    """Compare binary masks [N, S, S] of the synthetic set with the real training and held-out
    real masks inside `region` (bool [S, S]); the statistics are those of the real training
    and synthetic masks (mask_statistics.py)."""
    rng = np.random.default_rng(seed)
    shared = min(max_masks, len(synthetic), len(real_train))
    syn = _subsample(flatten_masks(synthetic, region), shared, rng)
    train = _subsample(flatten_masks(real_train, region), shared, rng)
    held = _subsample(flatten_masks(held_out, region), max_masks, rng)
    real_stats, syn_stats = real_statistics.summary(), synthetic_statistics.summary()
    return MaskDiversity(
        masks={"synthetic": len(syn), "real_train": len(train), "held_out": len(held)},
        pairwise_iou={
            "synthetic": mean_pairwise_iou(syn),
            "real_train": mean_pairwise_iou(train),
            "held_out": mean_pairwise_iou(held),
        },
        coverage=mean_nearest_iou(held, syn),
        precision=mean_nearest_iou(syn, train),
        nearest_reference=mean_nearest_iou(held, train),
        geometry_difference_percent={
            key.removesuffix("_mean"): _percent_difference(syn_stats[key], real_stats[key])
            for key in _GEOMETRY
        },
    )
