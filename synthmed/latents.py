"""Reproducible latents: sample `i` of a run with seed `s` is a function of (s, i) alone.

This is what lets results stay identical whatever the batch size, the concurrency, the number
of servers or the point a run was resumed from. It needs numpy only, so the client (no torch)
and in-process PyTorch sampling draw exactly the same latents.
"""

from __future__ import annotations

import numpy as np


def latent(seed: int, index: int, nz: int) -> np.ndarray:
    """The standard-normal latent float32 [nz] of sample `index` in the run seeded `seed`."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    return rng.standard_normal(nz, dtype=np.float32)


def latents(seed: int, indices: range | list[int] | np.ndarray, nz: int) -> np.ndarray:
    """Stacked latents float32 [len(indices), nz] for the given sample indices."""
    return (
        np.stack([latent(seed, int(i), nz) for i in indices])
        if len(indices)
        else np.zeros((0, nz), np.float32)
    )
