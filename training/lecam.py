"""LeCam regularisation (Tseng et al., CVPR 2021): a brake on a discriminator that memorises.

On a few hundred images per class the discriminator learns the training set by heart, its
logits on reals and fakes drift apart (D(real) +3, D(fake) -5 in the conditional StyleGAN2
of docs/quality.md), and ADA's augmentation probability saturates at 1 with nothing left to
hold it back. LeCam anchors each side to the other's recent mean: a real logit above the
fakes' moving average, or a fake logit below the reals', is penalised by the square of the
excess. It needs no extra forward pass, and works beside ADA and R1 rather than instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The paper's moving-average decay of the mean logits.
DECAY = 0.99


class LeCamAnchors:
    """Moving averages of the discriminator's mean logits on reals and on fakes, and the
    penalty that holds each side's logits within the other side's average.

    The averages are debiased (divided by 1 - decay^n), so the first steps anchor to what
    was seen rather than to the zero they start from, and are saved with the run so that a
    resumed run continues exactly.
    """

    def __init__(self, decay: float = DECAY) -> None:
        self.decay = decay
        # Per side: the biased accumulator and how many batches it has seen.
        self.sides = {"real": [0.0, 0], "fake": [0.0, 0]}

    def anchor(self, real: bool) -> float:
        """The debiased moving average of the mean logit on reals (or fakes); 0 before any."""
        total, n = self.sides[_side(real)]
        return total / (1 - self.decay**n) if n else 0.0

    def term(self, logits: torch.Tensor, real: bool, mean: float | None = None) -> torch.Tensor:
        """Record this batch's mean logit on its side, then penalise its logits beyond the
        other side's anchor: reals above the fakes' average, fakes below the reals'.
        `mean` is the batch mean to record when it must be the same on every process (a
        distributed run passes the all-reduced one)."""
        value = float(logits.detach().float().mean()) if mean is None else mean
        own = self.sides[_side(real)]
        own[0], own[1] = self.decay * own[0] + (1 - self.decay) * value, own[1] + 1
        if not self.sides[_side(not real)][1]:  # nothing to anchor to yet
            return logits.new_zeros(())
        other = self.anchor(not real)
        excess = logits.float() - other if real else other - logits.float()
        return F.relu(excess).square().mean()

    def state(self) -> dict[str, list[float]]:
        """JSON-ready state for a checkpoint."""
        return {side: list(value) for side, value in self.sides.items()}

    def load(self, state: dict[str, list[float]]) -> None:
        """Restore what `state` returned."""
        self.sides = {side: [float(state[side][0]), int(state[side][1])] for side in self.sides}


def _side(real: bool) -> str:
    return "real" if real else "fake"
