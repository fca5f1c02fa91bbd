"""`synthmed dataset verify`: is a sharded dataset exactly what its run asked for?

Reads every shard back (from a folder or any fsspec URL) and checks the union that many
processes wrote: each shard's sha256 against its record, that it holds exactly its own
samples' keys with an image, a mask and a record each, that every PNG decodes to the right
shape, and that no index is missing or duplicated. Missing samples are reported as ranges
("samples 2000-2999 (shard 000002)"), which is what a user needs to rerun the right process.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from PIL import Image

from synthmed.client.shards import (
    IMAGE_MEMBER,
    MASK_MEMBER,
    MEMBERS,
    RECORD_MEMBER,
    SHARD_DIR,
    WEBDATASET,
    ShardLayout,
    read_run,
    temporary_of,
)
from synthmed.client.storage import Destination
from synthmed.errors import DataError, UserInputError


@dataclass
class Verdict:
    """What verification found: `problems` is empty for a complete, intact dataset."""

    url: str
    count: int
    shards: int
    samples_ok: int = 0
    problems: list[str] = field(default_factory=list)
    missing: list[tuple[int, int]] = field(default_factory=list)  # inclusive index ranges

    @property
    def ok(self) -> bool:
        """Complete and intact."""
        return not self.problems and not self.missing

    def summary(self) -> str:
        """One line: the verdict."""
        if self.ok:
            return f"{self.url}: {self.count} samples in {self.shards} shards, all intact"
        parts = []
        if self.missing:
            n = sum(b - a + 1 for a, b in self.missing)
            parts.append(f"{n} of {self.count} samples missing ({describe_ranges(self.missing)})")
        if self.problems:
            more = f" and {len(self.problems) - 1} more" if len(self.problems) > 1 else ""
            parts.append(f"{self.problems[0]}{more}")
        return f"{self.url}: " + "; ".join(parts)


def describe_ranges(ranges: list[tuple[int, int]], limit: int = 5) -> str:
    """'samples 0-999, 3000-3999' (at most `limit` ranges, then a count)."""
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges[:limit])
    more = f" and {len(ranges) - limit} more ranges" if len(ranges) > limit else ""
    return f"samples {text}{more}"


def to_ranges(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices -> inclusive (first, last) runs."""
    ranges: list[tuple[int, int]] = []
    for i in indices:
        if ranges and ranges[-1][1] == i - 1:
            ranges[-1] = (ranges[-1][0], i)
        else:
            ranges.append((i, i))
    return ranges


def _check_png(data: bytes, mode: str, name: str) -> tuple[int, int]:
    """Decode fully; the (height, width) of an image of `mode`, or DataError naming it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            found, size = image.mode, image.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{name} does not decode ({e})") from None
    if found != mode:
        raise DataError(f"{name} is {found}, expected {mode}")
    return size[1], size[0]


def check_shard(
    layout: ShardLayout, shard: int, data: bytes, record: dict | None, seed: int
) -> int:
    """Check one shard's bytes; the number of intact samples, or DataError with the first
    problem."""
    name = layout.tar_name(shard)
    if record is None:
        raise DataError(f"{name} has no record ({layout.record_name(shard)})")
    if hashlib.sha256(data).hexdigest() != record.get("sha256"):
        raise DataError(f"{name}: sha256 does not match its record")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
            names = [m.name for m in tar.getmembers()]
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{name} is not a readable tar ({e})") from None
    if len(names) != len(set(names)):
        raise DataError(f"{name} holds a member twice")
    expected = {f"{layout.key(i)}.{m}" for i in layout.samples(shard) for m in MEMBERS}
    if set(members) != expected:
        extra, lacking = sorted(set(members) - expected), sorted(expected - set(members))
        detail = f"unexpected {extra[:2]}" if extra else f"lacks {lacking[:2]}"
        raise DataError(f"{name} does not hold exactly samples {_span(layout, shard)}: {detail}")
    for i in layout.samples(shard):
        key = layout.key(i)
        shape = _check_png(members[f"{key}.{IMAGE_MEMBER}"], "RGB", f"{name}:{key}.{IMAGE_MEMBER}")
        if _check_png(members[f"{key}.{MASK_MEMBER}"], "L", f"{name}:{key}.{MASK_MEMBER}") != shape:
            raise DataError(f"{name}:{key}: mask and image differ in size")
        try:
            entry = json.loads(members[f"{key}.{RECORD_MEMBER}"])
        except ValueError:
            entry = None
        if not isinstance(entry, dict) or entry.get("index") != i or entry.get("seed") != seed:
            raise DataError(f"{name}:{key}.{RECORD_MEMBER} does not record index {i}, seed {seed}")
    return len(layout.samples(shard))


def _span(layout: ShardLayout, shard: int) -> str:
    samples = layout.samples(shard)
    return f"{samples.start}-{samples.stop - 1}"


def verify(url: str, *, workers: int = 8, progress: bool = True) -> Verdict:
    """Check the dataset at `url` (a folder or fsspec URL) against its run file."""
    dest = Destination(url)
    meta = read_run(dest)
    if meta is None:
        raise UserInputError(f"{url}: not a synthmed dataset (no run.json)")
    if meta.get("format") != WEBDATASET:
        raise UserInputError(
            f"{url}: a {meta.get('format')} dataset; verify checks {WEBDATASET} datasets"
        )
    try:
        layout = ShardLayout(int(meta["count"]), int(meta["shard_size"]), int(meta["index_digits"]))
    except (KeyError, TypeError, ValueError) as e:
        raise UserInputError(f"{url}/run.json: missing or bad field {e}") from None
    verdict = Verdict(dest.url, layout.count, layout.shards)
    present = set(dest.list(SHARD_DIR))
    expected = {n for j in range(layout.shards) for n in _names(layout, j)}
    # A killed process's temporary files are not part of the dataset (its rerun removes them).
    strays = sorted(n for n in present - expected if not temporary_of(n))
    if strays:
        verdict.problems.append(f"unexpected files in {SHARD_DIR}/: {', '.join(strays[:3])}")
    have = [j for j in range(layout.shards) if _names(layout, j)[0] in present]
    missing = [i for j in range(layout.shards) if j not in have for i in layout.samples(j)]
    records = dest.read_many(layout.record_name(j) for j in have)
    for j, problem_or_count in _check_all(dest, layout, have, records, meta, workers, progress):
        if isinstance(problem_or_count, int):
            verdict.samples_ok += problem_or_count
        else:
            verdict.problems.append(problem_or_count)
            missing += list(layout.samples(j))
    verdict.missing = to_ranges(sorted(missing))
    return verdict


def _names(layout: ShardLayout, shard: int) -> tuple[str, str]:
    return tuple(n.rsplit("/", 1)[1] for n in (layout.tar_name(shard), layout.record_name(shard)))


def _check_all(
    dest: Destination,
    layout: ShardLayout,
    shards: list[int],
    records: dict[str, bytes],
    meta: dict,
    workers: int,
    progress: bool,
) -> Iterator[tuple[int, int | str]]:
    """(shard, intact sample count) or (shard, problem) for every shard, read concurrently."""
    from tqdm import tqdm

    def one(shard: int) -> int | str:
        try:
            raw = records.get(layout.record_name(shard))
            record = json.loads(raw) if raw is not None else None
            data = dest.read(layout.tar_name(shard))
            return check_shard(layout, shard, data, record, meta["seed"])
        except (DataError, ValueError) as e:
            return str(e)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(one, shards)
        bar = tqdm(total=len(shards), desc="verify", unit="shard", disable=not progress)
        with bar:
            for shard, result in zip(shards, results, strict=True):
                bar.update(1)
                yield shard, result
