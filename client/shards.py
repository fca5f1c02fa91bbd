"""Write a synthetic dataset as WebDataset tar shards, on a local disk or object storage.

    OUT/run.json                 the run's identity (generator, seed, count, shard size)
    OUT/shards/000000.tar        samples 0 .. S-1: KEY.image.png, KEY.mask.png, KEY.json each
    OUT/shards/000000.json       that shard's record: sample range, sha256, bytes
    OUT/index.json               every shard's record, refreshed when a process finishes
    OUT/DATASET_CARD.md

Shard j always holds samples [j*S, (j+1)*S) of the run, whichever process wrote it, and sample
i depends on (seed, i) alone: so `--shard K/N` processes (Kubernetes Indexed Job pods, say)
each write their own contiguous block of shards into one dataset, and the union is
byte-identical to a single process's. A shard is published whole (`Destination.publish`) and
its record after it, so a listed record means a complete shard; a killed or retried process
rerunning the same command keeps its finished shards and redoes the rest.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import tarfile
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from synthmed.client.dataset import (
    CARD,
    RUN_FILE,
    BackgroundWriter,
    RunInfo,
    check_arrays,
    check_same_generator,
    dataset_card,
    encode_png,
    new_run_file,
    now,
    read_run,
    sample_record,
)
from synthmed.client.storage import Destination
from synthmed.errors import DataError, SynthmedError, UserInputError

WEBDATASET = "webdataset"
SHARD_DIR = "shards"
INDEX = "index.json"
DEFAULT_SHARD_SIZE = 1000
# A sample's members in its shard: KEY.image.<codec>, KEY.mask.<codec> and KEY.json. WebDataset
# splits a name at its first dot, so the fields are "image.png" (or "image.npy"), ... and its
# `.decode()` decodes both codecs. PNG is compact; npy (raw arrays, about 2x the bytes at
# 64x64) costs a tenth of the CPU, which matters when the writer shares a small machine with
# the server: encoding two PNGs is about 0.4 ms of CPU per 64x64 sample, a whole npy sample
# 0.05 ms (benchmarks/write_throughput.py).
IMAGE, MASK, RECORD_MEMBER = "image", "mask", "json"
CODECS = ("png", "npy")
DEFAULT_CODEC = "png"
JOB_INDEX_ENV, JOB_COUNT_ENV = "JOB_COMPLETION_INDEX", "JOB_COMPLETIONS"
# Samples per encoding task: a thread-pool task per sample cost more CPU than encoding a 64x64
# sample as npy (benchmarks/write_throughput.py).
ENCODE_CHUNK = 32
Encoded = tuple[int, bytes]  # a sample's index and its members as they lie in its shard


@dataclass(frozen=True)
class Part:
    """Process `k` of `n` writing one dataset together (`--shard k/n`, 0-based)."""

    k: int
    n: int

    @classmethod
    def parse(cls, text: str, *, source: str = "--shard") -> Part:
        """'K/N' -> Part, with a one-line error naming `source` for anything else."""
        k_text, slash, n_text = text.strip().partition("/")
        try:
            k, n = int(k_text), int(n_text)
        except ValueError:
            k = n = -1
        if not slash or n < 1 or not 0 <= k < n:
            raise UserInputError(
                f"{source} {text}: expected K/N with 0 <= K < N (process K of N, 0-based)"
            )
        return cls(k, n)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Part | None:
        """Kubernetes Indexed Jobs set JOB_COMPLETION_INDEX in every pod; the Job sets
        JOB_COMPLETIONS (its `completions`) itself. None when neither is set."""
        index, count = environ.get(JOB_INDEX_ENV), environ.get(JOB_COUNT_ENV)
        if index is None and count is None:
            return None
        if index is None or count is None:
            have, lack = (JOB_INDEX_ENV, JOB_COUNT_ENV) if count is None else (
                JOB_COUNT_ENV, JOB_INDEX_ENV)  # fmt: skip
            raise UserInputError(
                f"{have} is set but {lack} is not: set both (the Job's completion index and "
                "its completions) or pass --shard K/N"
            )
        return cls.parse(f"{index}/{count}", source=f"{JOB_INDEX_ENV}/{JOB_COUNT_ENV}")

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"


@dataclass(frozen=True)
class ShardLayout:
    """Which samples each shard holds and what its files are called."""

    count: int
    shard_size: int
    index_digits: int
    codec: str = DEFAULT_CODEC

    @classmethod
    def of_run(cls, meta: dict) -> ShardLayout:
        """The layout a run file describes (runs from before codecs existed are PNG)."""
        return cls(
            int(meta["count"]),
            int(meta["shard_size"]),
            int(meta["index_digits"]),
            str(meta.get("codec", DEFAULT_CODEC)),
        )

    @property
    def image_member(self) -> str:
        """The image's field in a sample ("image.png")."""
        return f"{IMAGE}.{self.codec}"

    @property
    def mask_member(self) -> str:
        """The mask's field in a sample ("mask.png")."""
        return f"{MASK}.{self.codec}"

    @property
    def members(self) -> tuple[str, str, str]:
        """Every field of a sample."""
        return (self.image_member, self.mask_member, RECORD_MEMBER)

    @property
    def shards(self) -> int:
        """Number of shards of the whole run."""
        return math.ceil(self.count / self.shard_size)

    def samples(self, shard: int) -> range:
        """The sample indices of shard `shard`."""
        first = shard * self.shard_size
        return range(first, min(first + self.shard_size, self.count))

    def owned(self, part: Part | None) -> range:
        """The shards process `part` writes: a contiguous block, all of them without parts."""
        if part is None:
            return range(self.shards)
        return range(part.k * self.shards // part.n, (part.k + 1) * self.shards // part.n)

    def key(self, index: int) -> str:
        """A sample's key in its shard (its members are KEY.image.png, ...)."""
        return f"{index:0{self.index_digits}d}"

    @staticmethod
    def tar_name(shard: int) -> str:
        """The shard's archive, relative to the dataset root."""
        return f"{SHARD_DIR}/{shard:06d}.tar"

    @staticmethod
    def record_name(shard: int) -> str:
        """The shard's record (range, sha256), written after its archive."""
        return f"{SHARD_DIR}/{shard:06d}.json"

    def record_matches(self, shard: int, record: object) -> bool:
        """Whether a record describes shard `shard` of this layout (a resumed run that grew
        `count` must redo its last, short shard)."""
        samples = self.samples(shard)
        return (
            isinstance(record, dict)
            and record.get("first") == samples.start
            and record.get("count") == len(samples)
            and isinstance(record.get("sha256"), str)
        )


def encode_array(codec: str, array: np.ndarray) -> bytes:
    """One array as a shard member: PNG bytes identical to the png format's files, or the
    bytes `np.save` writes."""
    if codec == "png":
        return encode_png(array)
    array = np.ascontiguousarray(array)
    header = _NPY_HEADERS.get((array.shape, array.dtype.str))
    if header is None:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
        _NPY_HEADERS[array.shape, array.dtype.str] = data[: len(data) - array.nbytes]
        return data
    return header + array.tobytes()


# np.save's header for each (shape, dtype) seen: every sample of a run has the same two, and
# building the header is 4 of the 5 us that np.save takes for a 64x64 array.
_NPY_HEADERS: dict[tuple[tuple[int, ...], str], bytes] = {}


def decode_array(codec: str, data: bytes) -> np.ndarray:
    """A shard member's array (ValueError or OSError when it does not decode)."""
    if codec == "png":
        with Image.open(io.BytesIO(data)) as image:
            return np.array(image)
    return np.load(io.BytesIO(data), allow_pickle=False)


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    """A member's metadata: fixed (mtime 0, owner 0, mode 0644), so equal members give equal
    archives on any machine, at any time."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    return info


# tarfile's own ustar header for a member, to be patched with each member's name and size.
_HEADER = _tar_info("", 0).tobuf(tarfile.USTAR_FORMAT)
_NAME_END, _SIZE, _CHECKSUM = 100, slice(124, 136), slice(148, 156)


@functools.lru_cache(maxsize=256)
def _fields_after_name(size: int) -> tuple[bytes, bytes, int]:
    """The header's bytes between the name and the checksum, those after the checksum, and
    the checksum of the header without a name, for a member of `size` bytes."""
    header = bytearray(_HEADER)
    header[_SIZE] = b"%011o\0" % size
    header[_CHECKSUM] = b" " * 8  # the checksum counts its own field as spaces
    return bytes(header[_NAME_END : _CHECKSUM.start]), bytes(header[_CHECKSUM.stop :]), sum(header)


def _header(name: str, size: int) -> bytes:
    """tarfile's header for a member, byte for byte (tests compare the two), in a tenth of
    the time: tarfile builds each header field by field, about 20 us, which was half of what
    writing a 64x64 npy sample cost. Names too long for the name field go to tarfile."""
    encoded = name.encode("utf-8")
    if len(encoded) >= _NAME_END or size >= 8**11:
        return _tar_info(name, size).tobuf(tarfile.USTAR_FORMAT)
    middle, tail, checksum = _fields_after_name(size)
    checksum += sum(encoded)  # the name field's zero padding adds nothing
    return b"".join((encoded.ljust(_NAME_END, b"\0"), middle, b"%06o\0 " % checksum, tail))


def tar_members(members: list[tuple[str, bytes]]) -> bytes:
    """(name, bytes) members as they lie inside a POSIX ustar archive, in the order given:
    header, data padded to 512 bytes each. A shard is its samples' runs of members, then
    `tar_end`: each sample's run is built on its own, in the encoding threads."""
    parts = []
    for name, data in members:
        parts += [_header(name, len(data)), data, bytes(-len(data) % tarfile.BLOCKSIZE)]
    return b"".join(parts)


def tar_end(size: int) -> bytes:
    """What follows `size` bytes of members to end the archive as tarfile does: two zero
    blocks, then zeros up to a whole record."""
    end = 2 * tarfile.BLOCKSIZE
    return bytes(end + -(size + end) % tarfile.RECORDSIZE)


def tar_bytes(members: list[tuple[str, bytes]]) -> bytes:
    """A POSIX ustar archive of (name, bytes) in the order given, as tarfile writes it."""
    body = tar_members(members)
    return body + tar_end(len(body))


def read_records(dest: Destination, layout: ShardLayout, shards: range) -> dict[int, dict]:
    """Records of the shards in `shards` whose archive and record are both there and that
    match `layout`: the complete shards."""
    present = set(dest.list(SHARD_DIR))
    wanted = [
        j
        for j in shards
        if os.path.basename(layout.tar_name(j)) in present
        and os.path.basename(layout.record_name(j)) in present
    ]
    raw = dest.read_many(layout.record_name(j) for j in wanted)
    records = {}
    for j in wanted:
        try:
            record = json.loads(raw.get(layout.record_name(j), b"null"))
        except ValueError:
            continue  # a foreign or damaged record: the shard is redone
        if layout.record_matches(j, record):
            records[j] = record
    return records


@dataclass
class _OpenShard:
    """A shard still being given its samples: those seen, those waiting to be encoded, and the
    encoding tasks of the rest."""

    seen: set[int] = field(default_factory=set)
    chunk: list[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=list)
    encoded: list[Future] = field(default_factory=list)


class ShardWriter(BackgroundWriter):
    """Write this process's shards of one run into `out` (a path or fsspec URL); use as a
    context manager. The same interface as `DatasetWriter`: `pending()`, `submit()`, `close()`."""

    def __init__(
        self,
        out: str | Path,
        run: RunInfo,
        *,
        shard_size: int = DEFAULT_SHARD_SIZE,
        codec: str = DEFAULT_CODEC,
        part: Part | None = None,
        resume: bool = False,
        force: bool = False,
        workers: int = 0,
    ) -> None:
        super().__init__()
        if run.count <= 0:
            raise UserInputError(f"--count must be positive, got {run.count}")
        if shard_size < 1:
            raise UserInputError(f"--shard-size must be >= 1, got {shard_size}")
        if codec not in CODECS:
            raise UserInputError(f"--image-codec must be one of {', '.join(CODECS)}, got {codec}")
        if workers < 0:
            raise UserInputError(f"--workers must be >= 0, got {workers}")
        if resume and force:
            raise UserInputError("--resume and --force cannot be combined")
        if force and part is not None:
            raise UserInputError(
                f"--force with --shard {part} would delete other processes' shards; "
                "replace the dataset from one process without --shard"
            )
        self.run, self.part, self.dest = run, part, Destination(out)
        self._meta = self._open(shard_size, codec, resume, force)
        self.layout = ShardLayout.of_run(self._meta)
        self.shards = self.layout.owned(part)
        self._finished = set(read_records(self.dest, self.layout, self.shards))  # by _lock
        self._remove_leftovers()
        self.workers = workers or os.cpu_count() or 1
        self._encoders = ThreadPoolExecutor(self.workers, thread_name_prefix="synthmed-encode")
        self._publisher = ThreadPoolExecutor(1, thread_name_prefix="synthmed-publish")
        # Back-pressure: at most 2 * workers chunks encode at once, and at most two encoded
        # shards wait for their upload, so memory stays bounded whatever the store's speed.
        self._encode_slots = threading.BoundedSemaphore(2 * self.workers)
        self._publish_slots = threading.BoundedSemaphore(2)
        self._open_shards: dict[int, _OpenShard] = {}

    # --- the run file ------------------------------------------------------------------

    def _open(self, shard_size: int, codec: str, resume: bool, force: bool) -> dict:
        """Start, join or resume the run in OUT; returns its run file."""
        dest, run = self.dest, self.run
        if force:
            dest.check_replaceable()
        meta = read_run(dest)
        if meta is not None and force:
            self._remove_previous()
            meta = None
        if meta is None:
            if resume:
                raise UserInputError(f"nothing to resume in {dest.url} (no {RUN_FILE})")
            if self.part is None and dest.list():
                raise UserInputError(
                    f"{dest.url} is not empty; pass --resume to continue it or --force to "
                    "replace it"
                )
            return self._write_run(
                new_run_file(self.run, format=WEBDATASET, shard_size=shard_size, codec=codec)
            )
        if not resume and self.part is None:
            raise UserInputError(
                f"{dest.url} holds a dataset; pass --resume to continue it or --force to replace it"
            )
        self._check_same_run(meta, shard_size, codec)
        if run.count != meta["count"]:
            meta.update(count=run.count, resumed=[*meta.get("resumed", []), now()])
            self._write_run(meta)
        return meta

    def _write_run(self, meta: dict) -> dict:
        self.dest.publish(RUN_FILE, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
        return meta

    def _check_same_run(self, meta: dict, shard_size: int, codec: str) -> None:
        """Refuse to add samples that differ from the run's: same seed, format, shard size
        and generator; a count that only grows (and, for parts, does not change at all)."""
        wanted = {"seed": self.run.seed, "format": WEBDATASET, "shard_size": shard_size}
        wanted["codec"] = codec
        for name, new in wanted.items():
            was = meta.get(name, DEFAULT_CODEC) if name == "codec" else meta.get(name)
            if was != new:
                option = "--image-codec" if name == "codec" else "--" + name.replace("_", "-")
                raise UserInputError(
                    f"{option} {new} differs from the run in {self.dest.url} ({name} {was})"
                )
        check_same_generator(self.run, meta, f"in {self.dest.url}")
        old = meta.get("count")
        if self.run.count < old or (self.part is not None and self.run.count != old):
            raise UserInputError(
                f"--count {self.run.count} differs from the run in {self.dest.url} "
                f"(count {old})" + ("; a run can only grow with --resume" if self.part else "")
            )

    def _remove_previous(self) -> None:
        """--force: delete the previous run, refusing if OUT holds anything synthmed did not
        write (so a mistyped --out never wipes someone's bucket)."""
        top = self.dest.list()
        shards = self.dest.list(SHARD_DIR)
        ours = {RUN_FILE, INDEX, CARD, SHARD_DIR}
        foreign = [n for n in top if n not in ours]
        foreign += [
            f"{SHARD_DIR}/{n}" for n in shards if not (_is_shard_file(n) or temporary_of(n))
        ]
        if foreign:
            more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
            raise UserInputError(
                f"refusing to replace {self.dest.url}: it holds {', '.join(foreign[:3])}{more}, "
                "which is not part of a synthmed dataset; remove it yourself or choose another "
                "--out"
            )
        self.dest.remove([RUN_FILE, INDEX, CARD, *(f"{SHARD_DIR}/{n}" for n in shards)])

    def _remove_leftovers(self) -> None:
        """Delete the temporary files a killed run of this process left beside its shards
        (local disks only: an object store publishes nothing until an upload completes).
        Other processes' temporary files are theirs: they may be writing them right now."""
        if not self.dest.local:
            return
        layout = self.layout
        mine = {os.path.basename(layout.tar_name(j)) for j in self.shards}
        mine |= {os.path.basename(layout.record_name(j)) for j in self.shards}
        stale = [n for n in self.dest.list(SHARD_DIR) if temporary_of(n) in mine]
        self.dest.remove(f"{SHARD_DIR}/{n}" for n in stale)

    # --- writing -------------------------------------------------------------------------

    def pending(self) -> list[int]:
        """Sorted indices of this process's unfinished shards: what it must generate."""
        with self._lock:
            todo = [j for j in self.shards if j not in self._finished]
        return [i for j in todo for i in self.layout.samples(j)]

    def submit(self, index: int, image: np.ndarray, mask: np.ndarray) -> None:
        """Queue sample `index`; when its shard has all its samples, the shard is assembled and
        published in the background. Blocks for back-pressure; raises an earlier failure."""
        if self._closed:
            raise RuntimeError("ShardWriter is closed")
        self._raise_error()
        check_arrays(image, mask)
        index = int(index)
        if not 0 <= index < self.run.count:
            raise ValueError(f"index {index} is outside range(count={self.run.count})")
        shard = index // self.layout.shard_size
        if shard not in self.shards:
            raise ValueError(f"sample {index} belongs to shard {shard}, not to this process's")
        if shard in self._finished:
            return
        state = self._open_shards.setdefault(shard, _OpenShard())
        if index in state.seen:
            return
        state.seen.add(index)
        state.chunk.append((index, image.copy(), mask.copy()))
        complete = len(state.seen) == len(self.layout.samples(shard))
        if len(state.chunk) >= ENCODE_CHUNK or complete:
            self._encode_slots.acquire()
            future = self._encoders.submit(self._encode, state.chunk)
            future.add_done_callback(self._on_done(self._encode_slots))
            state.encoded.append(future)
            state.chunk = []
        if complete:
            del self._open_shards[shard]
            self._publish_slots.acquire()
            done = self._publisher.submit(self._publish, shard, state.encoded)
            done.add_done_callback(self._on_done(self._publish_slots))

    def _encode(self, chunk: list[tuple[int, np.ndarray, np.ndarray]]) -> list[Encoded]:
        """A chunk of samples -> (index, its members as they lie in the archive) each."""
        layout, encoded = self.layout, []
        for index, image, mask in chunk:
            key = layout.key(index)
            record = json.dumps(sample_record(self._meta, index)).encode("utf-8")
            encoded.append((index, tar_members([
                (f"{key}.{layout.image_member}", encode_array(layout.codec, image)),
                (f"{key}.{layout.mask_member}", encode_array(layout.codec, mask)),
                (f"{key}.{RECORD_MEMBER}", record),
            ])))  # fmt: skip
        return encoded

    def _publish(self, shard: int, chunks: list[Future]) -> None:
        """Write the shard from its samples' pieces, hashed as they go: joining a shard into
        one buffer first cost as much CPU as encoding its npy samples."""
        samples = sorted(sample for chunk in chunks for sample in chunk.result())
        pieces = [members for _, members in samples]
        size = sum(map(len, pieces))
        pieces.append(tar_end(size))
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        first = self.layout.samples(shard)
        record = {
            "shard": self.layout.tar_name(shard),
            "first": first.start,
            "count": len(first),
            "sha256": digest.hexdigest(),
            "bytes": size + len(pieces[-1]),
        }
        self.dest.publish(self.layout.tar_name(shard), pieces)
        self.dest.publish(self.layout.record_name(shard), json.dumps(record).encode("utf-8"))
        with self._lock:
            self._finished.add(shard)

    # --- closing -------------------------------------------------------------------------

    def _finish(self, *, abort: bool) -> None:
        """On abort queued shards are dropped and published ones kept; the index is left as
        it was (a rerun of the same command refreshes it)."""
        if self._closed:
            return
        self._closed = True
        self._encoders.shutdown(wait=True, cancel_futures=abort)
        self._publisher.shutdown(wait=True, cancel_futures=abort)
        if abort:
            return
        self._raise_error()
        if self._open_shards:  # a caller that stopped submitting halfway through a shard
            missing = sorted(self._open_shards)
            raise SynthmedError(f"shards {missing} of {self.dest.url} were not given every sample")
        self.write_index()

    def write_index(self) -> dict[int, dict]:
        """Rewrite index.json and the card from the shards every process has published."""
        records = read_records(self.dest, self.layout, range(self.layout.shards))
        index = {
            "format": WEBDATASET,
            "count": self.run.count,
            "shard_size": self.layout.shard_size,
            "shards": [records[j] for j in sorted(records)],
        }
        self.dest.publish(INDEX, (json.dumps(index, indent=1) + "\n").encode("utf-8"))
        written = sum(r["count"] for r in records.values())
        card = dataset_card(self._meta, self.run, written, self._layout_lines())
        self.dest.publish(CARD, card.encode("utf-8"))
        return records

    def _layout_lines(self) -> list[str]:
        return [
            f"- `{SHARD_DIR}/NNNNNN.tar`: WebDataset shards of {self.layout.shard_size} samples "
            f"in index order; sample KEY has `KEY.{self.layout.image_member}` (RGB, uint8 "
            f"[H, W, 3]), `KEY.{self.layout.mask_member}` (its label, uint8 [H, W], 0 "
            "background / 255 foreground) and `KEY.json` (index, seed, model, weights)",
            f"- `{SHARD_DIR}/NNNNNN.json`: the shard's sample range, sha256 and size",
            f"- `{INDEX}`: every shard's record; `synthmed dataset verify` checks the whole set",
        ]


def temporary_of(name: str) -> str | None:
    """The file a temporary name (`synthmed.atomic.atomic_path`'s .NAME.XXXX.tmp) stands
    for, None for any other name."""
    if not (name.startswith(".") and name.endswith(".tmp")):
        return None
    target, _, _ = name[1:].rpartition(".")[0].rpartition(".")
    return target or None


def _is_shard_file(name: str) -> bool:
    stem, dot, suffix = name.partition(".")
    return stem.isdigit() and dot == "." and suffix in ("tar", "json")


class ShardSamples:
    """Random access to a complete sharded dataset, for `synthmed.client.torch_data`'s reader:
    on first touch of a shard its tar headers are walked once (member offsets, kept), then each
    sample is two ranged reads, its image and its mask. Sequential readers that stream whole
    shards (the webdataset package) need none of this."""

    def __init__(self, dest: Destination, run: dict) -> None:
        try:
            self.layout = ShardLayout.of_run(run)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{dest.url}/{RUN_FILE}: no {e} field") from None
        records = read_records(dest, self.layout, range(self.layout.shards))
        lacking = [j for j in range(self.layout.shards) if j not in records]
        if lacking:
            first = self.layout.samples(lacking[0]).start
            raise DataError(
                f"{dest.url} is incomplete: {len(lacking)} of {self.layout.shards} shards "
                f"missing (first missing sample: {first}); finish it with: "
                f"{run.get('command', 'synthmed generate ...')} --resume"
            )
        self.dest = dest
        self._members: dict[int, dict[str, tuple[int, int]]] = {}

    def __len__(self) -> int:
        return self.layout.count

    def _offsets(self, shard: int) -> dict[str, tuple[int, int]]:
        if shard not in self._members:
            with self.dest.open(self.layout.tar_name(shard)) as f, tarfile.open(fileobj=f) as tar:
                self._members[shard] = {m.name: (m.offset_data, m.size) for m in tar}
        return self._members[shard]

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `index`: image uint8 [H, W, 3], mask uint8 [H, W]."""
        shard, key = index // self.layout.shard_size, self.layout.key(index)
        name = self.layout.tar_name(shard)
        try:
            members = self._offsets(shard)
            arrays = []
            for member in (self.layout.image_member, self.layout.mask_member):
                offset, size = members[f"{key}.{member}"]
                data = self.dest.read_range(name, offset, offset + size)
                arrays.append(decode_array(self.layout.codec, data))
        except (OSError, KeyError, ValueError, tarfile.TarError) as e:
            raise DataError(f"cannot read sample {index} from {self.dest.url}/{name}: {e}") from e
        return arrays[0], arrays[1]
