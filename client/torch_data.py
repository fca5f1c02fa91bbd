"""PyTorch datasets: stream samples from Triton into a training loop, or read a written dataset.

`TritonStream` is an `IterableDataset` over `SynthMedClient`: samples 0 .. count-1 of a seed,
split disjointly over torch.distributed ranks and DataLoader workers, each worker with its own
connection and at most the client's `max_in_flight` requests in flight per server. Sample `i`
comes from (seed, i) alone, so it is the sample `synthmed generate --seed S` writes as `i`,
however the work is split. `WrittenDataset` is a map-style `Dataset` over what `synthmed
generate` wrote: item `i` is sample `i`.

Both yield the same item, an `Item` dict: `index` (int), `image` (uint8 tensor [H, W, 3]) and
`mask` (uint8 tensor [H, W], 0 background / 255 foreground). Tensors, because that is what a
torch training loop consumes and what DataLoader workers pass back through shared memory; each
owns its memory (the client's arrays are read-only views of a whole response, which torch
warns about and which in-place transforms cannot write). The layout and dtype are those of the
files, unchanged: CHW, float and normalisation are the training recipe's choices (a
`collate_fn` or transform makes them, in the workers). A dict names its fields, as MONAI's
dictionary transforms and WebDataset samples do. One item type for both sources lets a
training loop switch between streaming and reading without a change.

This is the only client module that imports torch; `synthmed.client` itself needs none.
"""

from __future__ import annotations

import functools
import operator
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypedDict

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from synthmed.client.client import SynthMedClient
from synthmed.client.core import ClientBase, reason
from synthmed.client.dataset import (
    FORMATS,
    MANIFEST,
    RUN_FILE,
    SAMPLE_FILES,
    decode_sample,
    read_manifest,
)
from synthmed.client.shards import WEBDATASET, ShardSamples, read_run
from synthmed.client.storage import Destination
from synthmed.errors import DataError, UserInputError
from synthmed.sampling import DEFAULT_BATCH_SIZE, check_number

__all__ = [
    "READERS",
    "Item",
    "SampleIndexError",
    "Samples",
    "TritonStream",
    "WrittenDataset",
]


class Item(TypedDict):
    """One sample, from Triton or from disk."""

    index: int  # the sample's index in its run: it is a function of (seed, index)
    image: torch.Tensor  # uint8 [H, W, 3], RGB
    mask: torch.Tensor  # uint8 [H, W], 0 background / 255 foreground


class SampleIndexError(UserInputError, IndexError):
    """An index outside 0 .. len-1. An IndexError too, so `for item in dataset` ends."""


def _item(index: int, image: np.ndarray, mask: np.ndarray) -> Item:
    """An Item over arrays the caller owns (no copy)."""
    return {"index": index, "image": torch.from_numpy(image), "mask": torch.from_numpy(mask)}


# --- streaming from Triton -------------------------------------------------------------------
def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """The arguments where given, else torch.distributed's when it is initialised, else 0 of 1."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if world_size is None:
        world_size = torch.distributed.get_world_size() if distributed else 1
    if rank is None:
        rank = torch.distributed.get_rank() if distributed else 0
    check_number("world_size", world_size, 1, integer=True)
    check_number("rank", rank, 0, integer=True)
    if rank >= world_size:
        raise UserInputError(f"rank must be < world_size, got rank {rank} of {world_size}")
    return int(rank), int(world_size)


STREAM_CHUNK = 8192  # indices per generate_indices call in a stream worker


class TritonStream(IterableDataset):
    """Samples 0 .. count-1 of `seed` from Triton servers, generated while a DataLoader reads.

    Rank r of R takes indices r, r + R, r + 2R, ..., and DataLoader worker w of W of that rank
    every W-th of those from its w-th: disjoint, together exactly 0 .. count-1 once. `rank` and
    `world_size` default to torch.distributed's (read here, as `DistributedSampler` does:
    build the dataset after `init_process_group`). Ranks differ by at most one sample when
    count is not a multiple of the world size; `len()` is this rank's share.

    `urls` and `settings` are `SynthMedClient`'s (protocol, model, max_in_flight, retries,
    timeout_s, ...), and `label`, `truncation` and `batch_size` those of its
    `generate_indices` (a class-conditional model needs `label`). They are checked here,
    without a connection; the server, the model and the label are checked when iteration
    starts. No connection is made in this process before iteration: each worker connects in
    its own process, because gRPC channels do not survive fork and client objects do not
    pickle. The dataset itself pickles, so spawned workers work too.

    Iterating again gives the same samples; for new ones, build a stream with another seed.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        count: int,
        seed: int = 0,
        label: int | str | None = None,
        truncation: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        rank: int | None = None,
        world_size: int | None = None,
        **settings: object,
    ) -> None:
        check_number("count", count, 1, integer=True)
        check_number("seed", seed, 0, integer=True)
        check_number("batch_size", batch_size, 1, integer=True)
        ClientBase(urls, **settings)  # the client's own checks of URLs and settings; no I/O
        self.urls = urls if isinstance(urls, str) else tuple(urls)
        self.settings = settings
        self.count, self.seed, self.batch_size = int(count), int(seed), int(batch_size)
        self.label, self.truncation = label, truncation
        self.rank, self.world_size = _rank_and_world(rank, world_size)

    def indices(self) -> range:
        """This rank's sample indices, in the order its workers share them out."""
        return range(self.rank, self.count, self.world_size)

    def __len__(self) -> int:
        return len(self.indices())

    def __iter__(self) -> Iterator[Item]:
        """This worker's samples, in index order, through its own client."""
        worker = get_worker_info()
        first, step = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        mine = self.indices()[first::step]
        with SynthMedClient(self.urls, **self.settings) as client:
            # In chunks: a request list holds its indices as Python ints, and a stream may be
            # millions long; the pipeline drains only once per chunk.
            for start in range(0, len(mine), STREAM_CHUNK):
                samples = client.generate_indices(
                    mine[start : start + STREAM_CHUNK],
                    seed=self.seed,
                    label=self.label,
                    truncation=self.truncation,
                    batch_size=self.batch_size,
                )
                for index, image, mask in samples:
                    yield _item(index, image.copy(), mask.copy())


# --- reading a written dataset ---------------------------------------------------------------
class Samples(Protocol):
    """A written dataset's samples, as a format's reader opens them."""

    def __len__(self) -> int:
        """The run's sample count."""

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `index` (0 <= index < len): image uint8 [H, W, 3] and mask uint8 [H, W],
        arrays the caller owns; a DataError naming the sample if it cannot be read."""


@dataclass(frozen=True)
class _FolderSamples:
    """The png and npz formats: one or two files per sample, as the manifest lists them."""

    dest: Destination
    # [count, files per sample] paths relative to the root; row i is sample i. A numpy array,
    # not a list of Python strings: forked DataLoader workers would copy those page by page as
    # their reference counts change (pytorch/pytorch#13246).
    files: np.ndarray
    decode: Callable[[list[bytes]], tuple[np.ndarray, np.ndarray]]

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `index`, decoded from its files."""
        names = [str(name) for name in self.files[index]]
        try:
            return self.decode([self.dest.read(name) for name in names])
        except (OSError, ValueError, KeyError, SyntaxError, zipfile.BadZipFile) as e:
            files = ", ".join(names)
            message = f"cannot read sample {index} of {self.dest.url} ({files}): {reason(e)}"
            raise DataError(message) from e


def _manifest_files(dest: Destination, run: dict) -> np.ndarray:
    """The files of samples 0 .. count-1, from the manifest: a DataError unless every sample
    is listed, so that item i is sample i and len() is the run's count."""
    count = run.get("count")
    if type(count) is not int or count < 1:
        raise DataError(f"{dest.url}/{RUN_FILE}: count must be a positive integer, got {count!r}")
    try:
        entries = read_manifest(dest, count)
    except FileNotFoundError:
        raise DataError(f"{dest.url} has no {MANIFEST}: not a synthmed dataset") from None
    fields = SAMPLE_FILES[run["format"]]
    rows = {
        i: [str(e[f]) for f in fields] for i, e in entries.items() if all(f in e for f in fields)
    }
    if len(rows) < count:
        first = next(i for i in range(count) if i not in rows)
        command = run.get("command", "synthmed generate ...")
        raise DataError(
            f"{dest.url} is incomplete: {len(rows)} of {count} samples written (first missing: "
            f"{first}); finish it with: {command} --resume"
        )
    return np.array([rows[i] for i in range(count)], dtype=str)


def _open_folder(dest: Destination, run: dict) -> _FolderSamples:
    """png (images/ + masks/) or npz (samples/): the files the manifest lists."""
    fmt = run["format"]
    return _FolderSamples(dest, _manifest_files(dest, run), functools.partial(decode_sample, fmt))


# A run file's "format" -> its reader: (the dataset's root, its run file) -> its samples.
# A new format adds one entry here.
READERS: dict[str, Callable[[Destination, dict], Samples]] = {
    **dict.fromkeys(FORMATS, _open_folder),
    WEBDATASET: ShardSamples,
}


class WrittenDataset(Dataset):
    """A dataset `synthmed generate` wrote, as a map-style torch Dataset: item i is sample i,
    len() is the run's count. A local folder or a URL (whatever `--out` took); the format
    comes from the run file. An incomplete dataset (an interrupted run) is refused, naming
    the command that finishes it. `run` is the run file: seed, generator, format, count."""

    def __init__(self, location: str | Path) -> None:
        dest = Destination(location)
        run = read_run(dest)
        if run is None:
            raise DataError(f"{dest.url} is not a synthmed dataset (no {RUN_FILE})")
        fmt = run.get("format")
        if fmt not in READERS:
            raise DataError(
                f"{dest.url}: no reader for format {fmt!r} (readable: {', '.join(READERS)})"
            )
        self.location, self.run = dest.url, run
        self._samples = READERS[fmt](dest, run)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> Item:
        i = operator.index(index)  # ints, numpy and 0-d torch integers; no slices
        if not 0 <= i < len(self):
            raise SampleIndexError(
                f"sample index {i} is out of range: {self.location} holds samples "
                f"0..{len(self) - 1}"
            )
        return _item(i, *self._samples.load(i))
