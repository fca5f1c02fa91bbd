"""Privacy audit: does any synthetic sample reproduce a training patient?

For every synthetic image we find its nearest training image twice: in pixel space (root mean
square difference of the 8-bit RGB values, scaled to [0, 1]) and in a feature space (the real-
trained segmentation U-Net's encoder, see segmenter.embed), which also catches a copy that was
shifted or re-coloured. The yardstick is how close a *new* patient comes to the training set:
the same nearest-neighbour distance from every held-out real image. A synthetic sample is
flagged as a near-copy when, in either space, it is closer to a training image than
`copy_factor` (default 0.5) times the closest any held-out real image came. Fresh real images
are then never flagged, by construction; a memorised training image, even with noise on it, is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

DEFAULT_COPY_FACTOR = 0.5


@dataclass
class Neighbours:
    """Nearest and second-nearest reference of every query, with their distances."""

    distance: np.ndarray
    index: np.ndarray
    second_distance: np.ndarray


def pixel_vectors(images: torch.Tensor) -> np.ndarray:
    """uint8 images [N, 3, S, S] -> float64 [N, D] scaled so that distances are RMS in [0, 1]."""
    flat = images.reshape(len(images), -1).double().numpy() / 255.0
    return flat / np.sqrt(flat.shape[1])


def nearest_neighbours(
    queries: np.ndarray, references: np.ndarray, *, exclude_same_index: bool = False
) -> Neighbours:
    """Euclidean nearest neighbours of each query row among the reference rows.

    With `exclude_same_index`, query i never matches reference i (leave-one-out, for a set
    compared with itself).
    """
    if len(references) < 2:
        raise ValueError("need at least two reference vectors")
    distances = (
        (queries**2).sum(1)[:, None] + (references**2).sum(1)[None, :] - 2 * queries @ references.T
    )
    distances = np.sqrt(np.clip(distances, 0, None))
    if exclude_same_index:
        n = min(len(queries), len(references))
        distances[np.arange(n), np.arange(n)] = np.inf
    order = np.argsort(distances, axis=1, kind="stable")[:, :2]
    rows = np.arange(len(queries))
    return Neighbours(distances[rows, order[:, 0]], order[:, 0], distances[rows, order[:, 1]])


@dataclass
class SpaceAudit:
    """One space's audit: synthetic and held-out real distances to the training set."""

    synthetic: Neighbours
    held_out: Neighbours
    threshold: float
    flagged: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.flagged = self.synthetic.distance < self.threshold

    def summary(self) -> dict[str, float]:
        """Distribution of the two nearest-neighbour distances, and the flag count."""
        syn, ref = self.synthetic.distance, self.held_out.distance
        return {
            "synthetic_median": float(np.median(syn)),
            "synthetic_p05": float(np.quantile(syn, 0.05)),
            "synthetic_min": float(syn.min()),
            "held_out_median": float(np.median(ref)),
            "held_out_p05": float(np.quantile(ref, 0.05)),
            "held_out_min": float(ref.min()),
            "threshold": self.threshold,
            "closer_than_held_out_p05": float(np.mean(syn < np.quantile(ref, 0.05))),
            "flagged": int(self.flagged.sum()),
        }


def audit_space(
    synthetic: np.ndarray,
    held_out: np.ndarray,
    train: np.ndarray,
    copy_factor: float = DEFAULT_COPY_FACTOR,
) -> SpaceAudit:
    """Audit in one space, given vectors [N, D] of the synthetic, held-out and training sets."""
    reference = nearest_neighbours(held_out, train)
    return SpaceAudit(
        nearest_neighbours(synthetic, train),
        reference,
        copy_factor * float(reference.distance.min()),
    )


@dataclass
class PrivacyAudit:
    """The audit in pixel and feature space; a sample is flagged if either space flags it."""

    pixel: SpaceAudit
    feature: SpaceAudit
    copy_factor: float

    @property
    def flagged(self) -> np.ndarray:
        """Indices of the flagged synthetic samples."""
        return np.flatnonzero(self.pixel.flagged | self.feature.flagged)

    def flagged_rows(self, train_names: list[str]) -> list[dict[str, object]]:
        """One row per flagged sample: its nearest training image and distances."""
        return [
            {
                "sample": int(i),
                "nearest_pixel": train_names[int(self.pixel.synthetic.index[i])],
                "pixel_distance": float(self.pixel.synthetic.distance[i]),
                "nearest_feature": train_names[int(self.feature.synthetic.index[i])],
                "feature_distance": float(self.feature.synthetic.distance[i]),
            }
            for i in self.flagged
        ]

    def summary(self) -> dict[str, object]:
        """For metrics.json."""
        return {
            "copy_factor": self.copy_factor,
            "pixel": self.pixel.summary(),
            "feature": self.feature.summary(),
            "flagged": int(len(self.flagged)),
        }
