"""Stage I's mask confidence: how sure the generator must be of a vessel piece to keep it.

A DCGAN mask generator draws its vessel trees with outputs near 1 and, beside them, specks and
broken twigs whose outputs barely cross 0: thresholded at 0, the 64x64 demo's stage I drew 8.1
8-connected pieces per mask where the real masks have 2.7 (docs/quality.md). Hysteresis
(`binary_mask` in training/pixels.py) keeps only the pieces whose output reaches a
confidence somewhere along them, and leaves every kept vessel as wide as it was drawn.

The confidence is a property of one trained generator (a more hesitant one needs a lower
one), so it is chosen after training from the training masks alone: the lowest candidate
whose masks have at most (1 + TOLERANCE) times the training masks' pieces per mask, so that
no more is removed than that takes; the highest candidate if none gets there.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from synthmed.evaluation.mask_statistics import count_pieces
from synthmed.latents import latents
from synthmed.training.pixels import reachable_output

# The top three serve strong mode-seeking weights, whose generators draw even their specks
# with saturated outputs (128x128, weight 8: segments +24 % at 0.999, +12 % at 0.9995).
CANDIDATES = (0.0, 0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999, 0.9995, 0.9999)
TOLERANCE = 0.15
MASKS = 500
# Latents of a run seeded this way, so that the choice is not made on the samples of
# `synthmed generate --seed 0`, which `synthmed evaluate` judges.
SEED = 99_991


def pieces_per_mask(masks: np.ndarray, region: np.ndarray) -> float:
    """Mean number of 8-connected pieces of the bool masks [N, S, S] inside `region`."""
    return float(np.mean([count_pieces(mask & region) for mask in masks]))


@torch.no_grad()
def calibrate_mask_confidence(
    generator: nn.Module, real_masks: np.ndarray, region: np.ndarray
) -> tuple[float, dict[str, float]]:
    """The confidence for `generator` (a stage I DCGAN, eval mode) against the training masks
    (bool [N, S, S]) inside `region` (bool [S, S]), and the pieces per mask behind the choice
    (the training masks' and each candidate's)."""
    device = next(generator.parameters()).device
    nz = generator.config.nz
    outputs = torch.cat([
        generator(torch.from_numpy(latents(SEED, range(i, min(i + 64, MASKS)), nz)).to(device))
        for i in range(0, MASKS, 64)
    ]).float().cpu()  # fmt: skip
    reach = reachable_output(outputs)[:, 0].numpy()
    target = pieces_per_mask(real_masks, region)
    found = {"training_masks": target}
    for confidence in CANDIDATES:
        masks = reach > confidence
        found[str(confidence)] = pieces_per_mask(masks, region)
        if found[str(confidence)] <= (1 + TOLERANCE) * target:
            return confidence, found
    return CANDIDATES[-1], found
