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
import math
import numbers
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from synthmed.contract import CLASS, MASK, TRUNCATION, Contract, Provenance, Z
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
            return {Z.name: z}
        n = len(batch)
        return {
            Z.name: z,
            CLASS.name: np.full((n, 1), self.label, np.int64),
            TRUNCATION.name: np.full((n, 1), self.psi, np.float32),
        }


@dataclass(frozen=True)
class Request:
    """What a caller asked for, before it is checked against a contract."""

    indices: tuple[int, ...]
    seed: int
    label: int | str | None
    truncation: float | None
    batch_size: int

    def plan(self, contract: Contract) -> Plan:
        """Check the request against a generator's contract (InvalidRequestError or
        UserInputError naming the argument) and fix its batches."""
        check_number("seed", self.seed, 0, integer=True)
        check_number("batch_size", self.batch_size, 1, integer=True)
        for index in self.indices:
            check_number("sample index", index, 0, integer=True)
        label, psi = contract.request(self.label, self.truncation)
        indices = tuple(int(i) for i in self.indices)
        return Plan(self.seed, indices, self.batch_size, label, psi, contract.nz)


def check_number(
    name: str, value: object, minimum: float, *, integer: bool = False, strict: bool = False
) -> None:
    """A finite integer (or, without `integer`, real number; numpy scalars included) >= minimum
    (> with `strict`), or a UserInputError naming the argument: the one check of every numeric
    argument a generator or client takes."""
    kinds = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kinds) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        kind = "an integer" if integer else "a number"
        raise UserInputError(f"{name} must be {kind} {bound}, got {value!r}")


def translate_feeds(masks: np.ndarray, nz: int, seed: int, start: int) -> dict[str, np.ndarray]:
    """Stage II's inputs for rendering user masks uint8 [B, H, W]: mask k is rendered with the
    latent of sample start + k of seed `seed`, so masks drawn by the ensemble from those
    samples come back as the ensemble's images, and a render never depends on batching."""
    masks = np.ascontiguousarray(masks, dtype=np.uint8)
    if masks.ndim != 3:
        raise UserInputError(f"masks must be uint8 [B, H, W], got shape {list(masks.shape)}")
    check_number("seed", seed, 0, integer=True)
    indices = count_indices(len(masks), start) if len(masks) else range(0)
    return {MASK.name: masks, Z.name: latents(seed, indices, nz)}


def count_indices(count: int, start: int) -> range:
    """Samples start .. start + count - 1, after checking both."""
    check_number("count", count, 1, integer=True)
    check_number("start", start, 0, integer=True)
    return range(start, start + count)


class Sampler(abc.ABC):
    """The calls every generator offers, synchronous or asyncio: counts and explicit indices,
    the same arguments and defaults. A subclass decides how a request runs (`_start`)."""

    contract: Contract | None

    def generate(
        self,
        count: int,
        *,
        seed: int = 0,
        label: int | str | None = None,
        truncation: float | None = None,
        start: int = 0,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[Sample] | AsyncIterator[Sample]:
        """Samples start .. start + count - 1 of seed `seed`, in index order. A conditional
        model needs `label` (index or class name) and takes `truncation` (psi; None: the
        model's default); the dual GAN takes neither."""
        indices = count_indices(count, start)
        return self.generate_indices(
            indices, seed=seed, label=label, truncation=truncation, batch_size=batch_size
        )

    def generate_indices(
        self,
        indices: Sequence[int],
        *,
        seed: int = 0,
        label: int | str | None = None,
        truncation: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> Iterator[Sample] | AsyncIterator[Sample]:
        """The samples `indices` of seed `seed`, in the order given (see `generate`)."""
        return self._start(Request(tuple(indices), seed, label, truncation, batch_size))

    @abc.abstractmethod
    def _start(self, request: Request) -> Iterator[Sample] | AsyncIterator[Sample]:
        """Check `request` and return the iterator of its samples."""


class Generator(Sampler):
    """A synchronous generator: arguments are checked on the call, before the first batch
    runs. A subclass sets `contract` and implements `run_batch` (or overrides `_generate` to
    run batches concurrently, as the Triton client does)."""

    contract: Contract

    def _start(self, request: Request) -> Iterator[Sample]:
        return self._generate(request.plan(self.contract))

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
