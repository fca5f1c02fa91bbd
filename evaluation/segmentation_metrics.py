"""Pixel-wise segmentation scores, computed the way retinal vessel papers report them.

Every score pools all test pixels inside the field of view (the black frame around a fundus is
trivially background and would inflate accuracy), as DRIVE's benchmark does. F1 equals Dice
for binary masks. The threshold is chosen on validation data and then applied unchanged to
the test data, so no test label influences the reported F1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import rankdata

# Candidate thresholds for the validation search: 0.01 .. 0.99.
THRESHOLDS = np.round(np.arange(1, 100) / 100, 2)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores on one test set; `threshold` is the one chosen on validation."""

    f1_at_half: float
    threshold: float
    f1_at_threshold: float
    auc_roc: float
    accuracy: float

    def as_dict(self) -> dict[str, float]:
        """Plain floats, for metrics.json."""
        return {k: float(v) for k, v in asdict(self).items()}


def _inside_fov(
    probs: np.ndarray, masks: np.ndarray, fov: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Flatten probabilities and labels of the pixels inside the field of view."""
    if not (probs.shape == masks.shape == fov.shape):
        raise ValueError(f"shapes differ: {probs.shape}, {masks.shape}, {fov.shape}")
    inside = fov.astype(bool)
    return probs[inside].astype(np.float64), masks[inside].astype(bool)


def f1_score(predicted: np.ndarray, labels: np.ndarray) -> float:
    """F1 (Dice) of boolean predictions against boolean labels; 1.0 when both are empty."""
    tp = np.count_nonzero(predicted & labels)
    denominator = np.count_nonzero(predicted) + np.count_nonzero(labels)
    return 1.0 if denominator == 0 else 2.0 * tp / denominator


def auc_roc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve, exactly, by the Mann-Whitney rank sum (ties count half)."""
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def best_threshold(probs: np.ndarray, masks: np.ndarray, fov: np.ndarray) -> float:
    """The threshold in 0.01..0.99 that maximises F1 on (validation) data; ties pick the lowest."""
    scores, labels = _inside_fov(probs, masks, fov)
    f1 = [f1_score(scores > t, labels) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(f1))])


def score_segmentation(
    probs: np.ndarray, masks: np.ndarray, fov: np.ndarray, threshold: float
) -> SegmentationScores:
    """F1 at 0.5 and at `threshold`, AUC-ROC and accuracy at 0.5, inside the field of view.

    probs: vessel probabilities [N, H, W]; masks and fov: {0, 1} arrays of the same shape.
    """
    scores, labels = _inside_fov(probs, masks, fov)
    at_half = scores > 0.5
    return SegmentationScores(
        f1_at_half=f1_score(at_half, labels),
        threshold=threshold,
        f1_at_threshold=f1_score(scores > threshold, labels),
        auc_roc=auc_roc(scores, labels),
        accuracy=float(np.mean(at_half == labels)) if labels.size else float("nan"),
    )
