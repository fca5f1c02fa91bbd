"""One generation interface over every generator: Triton, in-process dual GAN, in-process
conditional StyleGAN2.

Each exposes `.contract` (what it serves) and two calls: `generate(count, start=...)` for a
run of consecutive samples and `generate_indices(indices)` for an explicit list (what a
resumed dataset still lacks). Both yield `(index, image uint8 [H, W, 3], mask uint8 [H, W])`
in the order asked, and sample `i` of seed `s` always comes from `latent(s, i)` with the same
label and psi, so the result never depends on the batch size or on which generator made it.
The arguments are checked here, once, before the first request, with the contract's one rule
for labels and psi.
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from synthmed.contract import Contract, Provenance
from synthmed.errors import UserInputError
from synthmed.latents import latents

Sample = tuple[int, np.ndarray, np.ndarray]
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Plan:
    """A checked request: which samples, in which batches, with which label and psi."""

    seed: int
    indices: tuple[int, ...]
    batch_size: int
    label: int | None
    psi: float | None
    nz: int

    def batches(self) -> Iterator[list[int]]:
        """The sample indices of each request, in order."""
        for start in range(0, len(self.indices), self.batch_size):
            yield list(self.indices[start : start + self.batch_size])

    def inputs(self, batch: Sequence[int]) -> dict[str, np.ndarray]:
        """The request tensors for samples `batch`: z from (seed, i), and for a conditional
        model every sample's label and psi as [B, 1] (Triton's shape for per-sample scalars)."""
        z = latents(self.seed, batch, self.nz)
        if self.label is None:
            return {"z": z}
        n = len(batch)
        return {
            "z": z,
            "class": np.full((n, 1), self.label, np.int64),
            "truncation": np.full((n, 1), self.psi, np.float32),
        }


def plan(
    contract: Contract,
    indices: Sequence[int],
    *,
    seed: int,
    label: int | str | None,
    truncation: float | None,
    batch_size: int,
) -> Plan:
    """Check a request against the generator's contract (InvalidRequestError or
    UserInputError naming the argument) and fix its batches."""
    _check_int("seed", seed, 0)
    _check_int("batch_size", batch_size, 1)
    order = tuple(indices)
    for index in order:
        _check_int("sample index", index, 0)
    label_k, psi = contract.request(label, truncation)
    return Plan(seed, tuple(int(i) for i in order), batch_size, label_k, psi, contract.nz)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserInputError(f"{name} must be an integer >= {minimum}, got {value!r}")


def count_indices(count: int, start: int) -> range:
    """Samples start .. start + count - 1, after checking both."""
    _check_int("count", count, 1)
    _check_int("start", start, 0)
    return range(start, start + count)


class Generator(abc.ABC):
    """The shared half of every generator: argument checks, counts vs indices, and batching.
    A subclass sets `contract` and implements `run_batch` (or overrides `_generate` to run
    batches concurrently, as the Triton client does)."""

    contract: Contract

    def generate(
        self,
        count: int,
        *,
        seed: int = 0,
        label: int | str | None = None,
        truncation: float | None = None,
        start: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[Sample]:
        """Samples start .. start + count - 1 of seed `seed`, in index order. A conditional
        model needs `label` (index or class name) and takes `truncation` (psi; None: the
        model's default); the dual GAN takes neither."""
        return self.generate_indices(
            count_indices(count, start),
            seed=seed,
            label=label,
            truncation=truncation,
            batch_size=batch_size,
        )

    def generate_indices(
        self,
        indices: Sequence[int],
        *,
        seed: int = 0,
        label: int | str | None = None,
        truncation: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[Sample]:
        """The samples `indices` of seed `seed`, in the order given (see `generate`)."""
        checked = plan(
            self.contract,
            indices,
            seed=seed,
            label=label,
            truncation=truncation,
            batch_size=batch_size,
        )
        return self._generate(checked)

    def _generate(self, plan: Plan) -> Iterator[Sample]:
        for batch in plan.batches():
            images, masks = self.run_batch(plan.inputs(batch))
            yield from zip(batch, images, masks, strict=True)

    @abc.abstractmethod
    def run_batch(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One batch's request tensors -> (images, masks)."""

    @abc.abstractmethod
    def provenance(self) -> list[Provenance]:
        """The training runs behind the weights (one record per source run)."""

    @abc.abstractmethod
    def location(self) -> dict:
        """Where the generator runs, for a dataset's record (servers, or a repository)."""
