"""`synthmed dataset verify`: is a dataset exactly what its run asked for?

Reads everything back (from a folder or any fsspec URL). For shards it checks the union that
many processes wrote: each shard's sha256 against its record, that it holds exactly its own
samples' keys with an image, a mask and a record each, that every PNG decodes, and that no
index is missing. For the png and npz formats: every index in the manifest once, with files
that decode to an RGB image and a mask of its size. Missing samples are reported as ranges
("samples 2000-2999"), which is what a user needs to rerun the right process.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from synthmed.client.dataset import (
    FORMATS,
    MANIFEST,
    SAMPLE_FILES,
    decode_sample,
    read_manifest,
    read_run,
)
from synthmed.client.shards import (
    RECORD_MEMBER,
    SHARD_DIR,
    WEBDATASET,
    ShardLayout,
    decode_array,
    temporary_of,
)
from synthmed.client.storage import Destination
from synthmed.errors import DataError, UserInputError


@dataclass
class Verdict:
    """What verification found: `problems` is empty for a complete, intact dataset."""

    url: str
    count: int
    layout: str  # "in 10 shards", "as png files"
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
            return f"{self.url}: {self.count} samples {self.layout}, all intact"
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


def _check_array(
    layout: ShardLayout, members: dict[str, bytes], key: str, member: str, ndim: int, shard: str
) -> np.ndarray:
    """Decode one member fully: uint8 with `ndim` dimensions (RGB for an image), or DataError
    naming it."""
    where = f"{shard}:{key}.{member}"
    try:
        array = decode_array(layout.codec, members[f"{key}.{member}"])
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{where} does not decode ({e})") from None
    if array.dtype != np.uint8 or array.ndim != ndim or (ndim == 3 and array.shape[2] != 3):
        expected = "uint8 [H, W, 3]" if ndim == 3 else "uint8 [H, W]"
        raise DataError(f"{where} is {array.dtype} {list(array.shape)}, expected {expected}")
    return array


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
    expected = {f"{layout.key(i)}.{m}" for i in layout.samples(shard) for m in layout.members}
    if set(members) != expected:
        extra, lacking = sorted(set(members) - expected), sorted(expected - set(members))
        detail = f"unexpected {extra[:2]}" if extra else f"lacks {lacking[:2]}"
        raise DataError(f"{name} does not hold exactly samples {_span(layout, shard)}: {detail}")
    for i in layout.samples(shard):
        key = layout.key(i)
        image = _check_array(layout, members, key, layout.image_member, 3, name)
        mask = _check_array(layout, members, key, layout.mask_member, 2, name)
        if mask.shape != image.shape[:2]:
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
        raise UserInputError(f"{dest.url}: not a synthmed dataset (no run.json)")
    fmt = meta.get("format")
    if fmt not in (*FORMATS, WEBDATASET):
        raise UserInputError(f"{dest.url}/run.json: unknown format {fmt!r}")
    if fmt in FORMATS:
        return _verify_folder(dest, meta, workers, progress)
    try:
        layout = ShardLayout.of_run(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise UserInputError(f"{dest.url}/run.json: missing or bad field {e}") from None
    verdict = Verdict(dest.url, layout.count, f"in {layout.shards} shards")
    present = set(dest.list(SHARD_DIR))
    expected = {n for j in range(layout.shards) for n in _names(layout, j)}
    # A killed process's temporary files are not part of the dataset (its rerun removes them).
    strays = sorted(n for n in present - expected if not temporary_of(n))
    if strays:
        verdict.problems.append(f"unexpected files in {SHARD_DIR}/: {', '.join(strays[:3])}")
    have = [j for j in range(layout.shards) if _names(layout, j)[0] in present]
    records = dest.read_many(layout.record_name(j) for j in have)
    check = functools.partial(_check_one, dest, layout, records, meta["seed"])
    results = _map(check, have, workers, progress, "shard")
    _tally(verdict, range(layout.shards), results, layout.samples)
    return verdict


def _tally(
    verdict: Verdict,
    units: Iterable[int],
    results: Iterator[tuple[int, int | str]],
    samples_of: Callable[[int], Iterable[int]],
) -> None:
    """Fill `verdict` from the checked units (shards or samples): a unit that was not checked
    or has a problem counts its samples as missing."""
    intact = set()
    for unit, result in results:
        if isinstance(result, int):
            verdict.samples_ok += result
            intact.add(unit)
        else:
            verdict.problems.append(result)
    verdict.missing = to_ranges(sorted(i for u in units if u not in intact for i in samples_of(u)))


def _names(layout: ShardLayout, shard: int) -> tuple[str, str]:
    return tuple(n.rsplit("/", 1)[1] for n in (layout.tar_name(shard), layout.record_name(shard)))


def _check_one(
    dest: Destination, layout: ShardLayout, records: dict[str, bytes], seed: int, shard: int
) -> int | str:
    """One shard: its intact sample count, or the problem."""
    try:
        raw = records.get(layout.record_name(shard))
        record = json.loads(raw) if raw is not None else None
        return check_shard(layout, shard, dest.read(layout.tar_name(shard)), record, seed)
    except (DataError, ValueError) as e:
        return str(e)


def _map(
    check: Callable[[int], int | str], items: list[int], workers: int, progress: bool, unit: str
) -> Iterator[tuple[int, int | str]]:
    """(item, check(item)) for every item, read and decoded `workers` at a time, in order."""
    from tqdm import tqdm

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(check, items)
        bar = tqdm(total=len(items), desc="verify", unit=unit, disable=not progress)
        with bar:
            for item, result in zip(items, results, strict=True):
                bar.update(1)
                yield item, result


def _verify_folder(dest: Destination, meta: dict, workers: int, progress: bool) -> Verdict:
    """png / npz: every index listed once, its files there and decodable."""
    fmt, count = meta["format"], meta.get("count")
    if type(count) is not int or count < 1:
        raise UserInputError(f"{dest.url}/run.json: bad count {count!r}")
    verdict = Verdict(dest.url, count, f"as {fmt} files")
    try:
        entries = read_manifest(dest, count)
    except FileNotFoundError:
        verdict.problems.append(
            f"no {MANIFEST} (on object storage it is written when the run ends: rerun the "
            "command with --resume)"
        )
        entries = {}
    fields = SAMPLE_FILES[fmt]

    def check(index: int) -> int | str:
        entry = entries[index]
        try:
            names = [str(entry[f]) for f in fields]
            image, mask = decode_sample(fmt, [dest.read(n) for n in names])
        except (OSError, ValueError, KeyError, SyntaxError, zipfile.BadZipFile) as e:
            return f"sample {index} ({', '.join(str(entry.get(f)) for f in fields)}): {e}"
        if not (image.dtype == mask.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
                and mask.shape == image.shape[:2]):  # fmt: skip
            return f"sample {index}: image {image.shape} and mask {mask.shape} are not a pair"
        if entry.get("seed") != meta.get("seed"):
            return f"sample {index}: manifest seed {entry.get('seed')} is not the run's"
        return 1

    results = _map(check, sorted(entries), workers, progress, "sample")
    _tally(verdict, range(count), results, lambda index: (index,))
    return verdict
