"""Write a synthetic labelled dataset: fast, reproducible and safe to interrupt.

Encoding runs on a small thread pool (zlib releases the GIL), so generation, not the writer,
sets the pace. Every sample file is renamed into place before its manifest line is appended,
so a SIGKILLed run never lists a truncated file; `resume` rebuilds the manifest from the
lines whose files are really there and carries on with no holes and no duplicates. Sample
`i` is a function of (seed, i) alone (see `synthmed.latents`), which is why a manifest
line's seed is the run seed.

Under an object-store URL (s3://...) the same formats are written one PUT per file: objects
appear whole but cannot be appended to, so there the samples done are those whose files are
listed, and the manifest is written once, when the run closes.
"""

from __future__ import annotations

import datetime
import fcntl
import io
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from synthmed import __version__
from synthmed.atomic import write_bytes_atomic, write_text_atomic
from synthmed.client.storage import Destination
from synthmed.errors import SynthmedError, UserInputError

FORMATS = ("png", "npz")
MANIFEST, RUN_FILE, CARD = "manifest.jsonl", "run.json", "DATASET_CARD.md"
# The png format's sample list in the Medical Segmentation Decathlon's layout, which MONAI's
# `load_decathlon_datalist` reads.
DATALIST = "dataset.json"
TOP_FILES = (MANIFEST, RUN_FILE, CARD, DATALIST)  # the files synthmed writes beside the folders
SAMPLE_DIRS = ("images", "masks", "samples")
# The manifest fields that name a sample's files, per format.
SAMPLE_FILES = {"png": ("image", "mask"), "npz": ("file",)}
# Generator fields a resumed run must share with the run it continues (all change the samples).
SAME_GENERATOR = ("model", "weights_sha256", "label", "truncation")
# Generator fields every manifest line repeats, when the run has them.
CONDITIONAL_FIELDS = ("label", "class_name", "truncation")
FSYNC_EVERY = 256  # manifest lines between fsyncs: at most this many samples to redo after a crash
# zlib level 1: measured 1.9x (64x64) to 3.9x (256x256) faster to encode than level 6 for
# 15-22 % larger files; encoding shares the cores with the server. Pillow writes no
# timestamps, so equal arrays still give equal bytes.
PNG_COMPRESS_LEVEL = 1
_TOP_TEMP = re.compile(rf"^\.({'|'.join(map(re.escape, TOP_FILES))})\..+\.tmp$")
_SAMPLE_NAME = re.compile(r"^\.?\d{6,}\.(png|npz)(\..+\.tmp)?$")


@dataclass(frozen=True)
class RunInfo:
    """What identifies a run: resuming with a different seed, format or generator is refused."""

    seed: int
    count: int
    format: str  # "png" | "npz"
    # {"model", "model_version", "weights_sha256", "image_size"}, and for a class-conditional
    # model {"label", "class_name", "truncation"}: what made every sample.
    generator: dict
    trained_on: str  # what the generator learnt from, for the dataset card
    command: str  # the command line that reproduces the dataset


def now() -> str:
    """UTC now, to the second, for run files and cards."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _looks_complete(path: Path) -> bool:
    """A cheap end-of-file check (PNG IEND chunk, zip end record): catches files that a crash
    of the machine (not just the process) left empty or short under their final name."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            if size < 22:
                return False
            f.seek(size - 22)
            tail = f.read()
    except OSError:
        return False
    return tail.endswith(b"IEND\xaeB`\x82") or tail.startswith(b"PK\x05\x06")


def check_arrays(image: Any, mask: Any) -> None:
    """A sample every format can write: uint8 RGB [H, W, 3] and a uint8 mask [H, W]."""
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3):
        raise ValueError(f"image must be a uint8 array [H, W, 3], got {_describe(image)}")
    if image.shape[2] != 3:
        raise ValueError(f"image must be a uint8 array [H, W, 3], got {_describe(image)}")
    if not (isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.ndim == 2):
        raise ValueError(f"mask must be a uint8 array [H, W], got {_describe(mask)}")
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {image.shape}")


def short(value: Any) -> str:
    """Hashes cut to 12 characters, so a refusal stays one readable line."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={short(v)}" for k, v in sorted(value.items())) or "{}"
    return f"{value[:12]}..." if isinstance(value, str) and len(value) > 16 else str(value)


def _describe(a: Any) -> str:
    return f"{a.dtype} {list(a.shape)}" if isinstance(a, np.ndarray) else type(a).__name__


def sample_record(meta: dict, index: int) -> dict:
    """What every format records of sample `index` of the run `meta` (a run file): index,
    seed, the generator and its weights, and a conditional model's class and psi."""
    g = meta["generator"]
    return {
        "index": index,
        "seed": meta["seed"],
        "model": g.get("model"),
        "model_version": g.get("model_version"),
        "weights_sha256": g.get("weights_sha256"),
        **{k: g[k] for k in CONDITIONAL_FIELDS if k in g},
    }


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 array, as every format stores them (same encoder, same level)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_npz(image: np.ndarray, mask: np.ndarray) -> bytes:
    """The npz format's file: arrays `image` and `mask`, compressed."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, image=image, mask=mask)
    return buffer.getvalue()


def read_manifest(dest: Destination, count: int) -> dict[int, dict]:
    """The first well-formed manifest entry of each index in range(count) (FileNotFoundError
    when there is no manifest). A torn last line of a killed run is skipped, as --resume does."""
    entries: dict[int, dict] = {}
    for line in dest.read(MANIFEST).splitlines():
        try:
            entry = json.loads(line)
            index = entry["index"]
        except (ValueError, KeyError, TypeError):
            continue
        if type(index) is int and 0 <= index < count:
            entries.setdefault(index, entry)
    return entries


def decode_sample(fmt: str, files: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """A folder-format sample's (image, mask) from its files' bytes, in SAMPLE_FILES order."""
    if fmt == "npz":
        with np.load(io.BytesIO(files[0])) as arrays:  # allow_pickle stays False: data, not code
            return arrays["image"], arrays["mask"]
    image, mask = (Image.open(io.BytesIO(data)) for data in files)
    return np.array(image), np.array(mask)


def read_run(dest: Destination) -> dict | None:
    """The run file of a dataset at `dest`, None when there is none."""
    try:
        data = dest.read(RUN_FILE)
    except FileNotFoundError:
        return None
    try:
        meta = json.loads(data)
        if not isinstance(meta, dict) or not isinstance(meta.get("generator"), dict):
            raise ValueError("not a JSON object with a generator")
    except ValueError as e:
        raise UserInputError(f"{dest.url}/{RUN_FILE}: not a synthmed run file ({e})") from None
    return meta


def _lock_folder(out: Path) -> int:
    """Create OUT, prove it writable, and lock it so two runs never append to one manifest."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
        fd = os.open(out, os.O_RDONLY)
    except OSError as e:
        raise UserInputError(f"cannot write to {out}: {e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise UserInputError(f"{out} is in use by another synthmed run") from None
    return fd


def _remove_previous(out: Path, names: list[str]) -> None:
    """--force: delete a previous dataset, but only if OUT holds nothing synthmed did not write."""
    foreign = []
    for name in names:
        path = out / name
        if name in SAMPLE_DIRS and path.is_dir() and not path.is_symlink():
            foreign += [
                f"{name}/{c}" for c in sorted(os.listdir(path)) if not _SAMPLE_NAME.match(c)
            ]
        elif name not in TOP_FILES and not _TOP_TEMP.match(name):
            foreign.append(name)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise UserInputError(
            f"refusing to replace {out}: it holds {', '.join(foreign[:3])}{more}, which is not "
            "part of a synthmed dataset; remove it yourself or choose another folder"
        )
    for name in names:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def new_run_file(run: RunInfo, **layout: object) -> dict:
    """A fresh run file for `run`: what generated it, its seed and count, and the format's
    `layout` fields (format, shard size, ...), which a resumed run must match."""
    return {
        "generator": run.generator,
        "trained_on": run.trained_on,
        "seed": run.seed,
        **layout,
        "count": run.count,
        "index_digits": max(6, len(str(run.count - 1))),
        "command": run.command,
        "synthmed_version": __version__,
        "started": now(),
    }


def check_same_generator(run: RunInfo, meta: dict, where: str) -> None:
    """Refuse a run whose generator would make other samples than the one in `meta` (a run
    file); `where` ends the message ("being resumed", "in s3://...")."""
    for key in SAME_GENERATOR:
        new, was = run.generator.get(key), meta["generator"].get(key)
        if new != was:
            raise UserInputError(
                f"generator {key} {short(new)} differs from the run {where} ({key} {short(was)})"
            )


class BackgroundWriter:
    """What both dataset writers share: their work runs on thread pools, the first failure is
    kept and raised by the next call, and closing waits for the work (or, when the with-block
    failed, drops what is queued and keeps what is done). Subclasses implement `_finish`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _error and the subclass's progress
        self._error: BaseException | None = None
        self._closed = False

    def _on_done(self, slots: threading.BoundedSemaphore) -> Callable[[Future], None]:
        """A done-callback that frees a back-pressure slot and keeps the task's failure."""

        def done(future: Future) -> None:
            slots.release()
            error = None if future.cancelled() else future.exception()
            if error is not None:
                with self._lock:
                    self._error = self._error or error

        return done

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        """Wait for the queued work, raise the first failure, write the closing files."""
        self._finish(abort=False)

    def _finish(self, *, abort: bool) -> None:
        raise NotImplementedError

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish(abort=exc_type is not None)


class DatasetWriter(BackgroundWriter):
    """Write samples of one run into OUT; use as a context manager or call `close()`."""

    def __init__(
        self,
        out: str | Path,
        run: RunInfo,
        *,
        resume: bool = False,
        force: bool = False,
        workers: int = 0,
    ) -> None:
        super().__init__()
        self.run = run
        if run.count <= 0:
            raise UserInputError(f"--count must be positive, got {run.count}")
        if run.format not in FORMATS:
            raise UserInputError(f"--format {run.format}: expected one of {', '.join(FORMATS)}")
        if workers < 0:
            raise UserInputError(f"--workers must be >= 0, got {workers}")
        if resume and force:
            raise UserInputError("--resume and --force cannot be combined")
        self._done: set[int] = set()  # guarded by _lock, as the manifest is
        # A URL other than file:// is object storage (see `_open_object_store`); the rest is
        # a local folder with a lock and an append-only manifest.
        text = str(out)
        self.dest = Destination(text) if "://" in text and not text.startswith("file://") else None
        self.out = Path(text.removeprefix("file://"))
        if self.dest is not None:
            self._lock_fd = self._manifest_fd = None
            self._meta = self._open_object_store(resume, force)
        else:
            self._open_folder(resume, force)
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="synthmed-writer")
        # Back-pressure: at most 2 * workers samples (copies) wait or encode at any time.
        self._slots = threading.BoundedSemaphore(2 * self.workers)
        self._submitted: set[int] = set()
        self._unsynced = 0

    # --- preparing OUT -------------------------------------------------------------------

    def _open_folder(self, resume: bool, force: bool) -> None:
        """Lock a local OUT, start or resume the run, open the manifest for appending."""
        if self.out.exists() and not self.out.is_dir():
            raise UserInputError(f"{self.out} exists and is not a folder")
        if resume and not (self.out / RUN_FILE).is_file():
            raise UserInputError(f"nothing to resume in {self.out} (no {RUN_FILE})")
        self._lock_fd = _lock_folder(self.out)
        try:
            self._meta = self._prepare_resume() if resume else self._prepare_fresh(force)
            for name in ("samples",) if self.run.format == "npz" else ("images", "masks"):
                (self.out / name).mkdir(exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            self._manifest_fd = os.open(self.out / MANIFEST, flags, 0o666)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open_object_store(self, resume: bool, force: bool) -> dict:
        """Start or resume the run under a URL. Objects appear whole (one PUT each) but cannot
        be appended to, so the samples done are the ones whose every file is listed, and the
        manifest is written once, when the run closes."""
        dest, r = self.dest, self.run
        if force:
            dest.check_replaceable()
        meta = read_run(dest)
        if meta is None:
            if resume:
                raise UserInputError(f"nothing to resume in {dest.url} (no {RUN_FILE})")
            if dest.list():
                raise UserInputError(f"{dest.url} is not empty; choose another --out")
            meta = new_run_file(self.run, format=self.run.format)
        elif not resume:
            raise UserInputError(f"{dest.url} holds a dataset; pass --resume to continue it")
        else:
            self._check_resumable(meta, dest.url)
            self._meta = meta
            listed = {d: set(dest.list(d)) for d in SAMPLE_DIRS}
            for index in range(r.count):
                if all(rel.split("/")[1] in listed[rel.split("/")[0]]
                       for rel in self._paths(index).values()):  # fmt: skip
                    self._done.add(index)
            meta.update(count=r.count, resumed=[*meta.get("resumed", []), now()])
        dest.publish(RUN_FILE, (json.dumps(meta, indent=2) + "\n").encode("utf-8"))
        return meta

    def _prepare_fresh(self, force: bool) -> dict:
        names = sorted(os.listdir(self.out))
        if names and not force:
            raise UserInputError(
                f"{self.out} is not empty; pass --resume to continue it or --force to replace it"
            )
        _remove_previous(self.out, names)
        meta = new_run_file(self.run, format=self.run.format)
        write_text_atomic(self.out / RUN_FILE, json.dumps(meta, indent=2) + "\n")
        return meta

    def _prepare_resume(self) -> dict:
        path, r = self.out / RUN_FILE, self.run
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserInputError(f"{path}: not a synthmed run file ({e})") from None
        self._check_resumable(meta, path)
        self._meta = meta
        for folder in (self.out, *(self.out / d for d in SAMPLE_DIRS if (self.out / d).is_dir())):
            for name in os.listdir(folder):
                if name.startswith(".") and name.endswith(".tmp"):  # atomic_path's leftovers
                    (folder / name).unlink(missing_ok=True)
        self._compact_manifest()
        meta.update(count=r.count, resumed=[*meta.get("resumed", []), now()])
        write_text_atomic(path, json.dumps(meta, indent=2) + "\n")
        return meta

    def _check_resumable(self, meta: object, where: object) -> None:
        """The run in `meta` (a run file at `where`) makes the same samples as this one."""
        r = self.run
        try:
            old = {k: meta[k] for k in ("seed", "format", "count", "generator", "index_digits")}
            if not isinstance(old["generator"], dict) or "model" not in old["generator"]:
                raise KeyError("generator.model")
        except (KeyError, TypeError, AttributeError) as e:
            raise UserInputError(f"{where}: not a synthmed run file ({e})") from None
        for field, new in (("seed", r.seed), ("format", r.format)):
            if new != old[field]:
                raise UserInputError(
                    f"--{field} {new} differs from the run being resumed ({field} {old[field]})"
                )
        check_same_generator(r, meta, "being resumed")
        if r.count < old["count"]:
            raise UserInputError(
                f"--count {r.count} is smaller than the run being resumed (count {old['count']})"
            )

    def _compact_manifest(self) -> None:
        """Keep the first valid line per index whose files are complete; drop the rest
        (a torn last line, lines whose files vanished), so resuming never duplicates."""
        manifest, kept = self.out / MANIFEST, []
        if manifest.exists():
            with open(manifest, "rb") as f:
                for raw in f:
                    try:
                        entry = json.loads(raw)
                        index = entry["index"]
                    except (ValueError, KeyError, TypeError):
                        continue
                    if (
                        type(index) is int
                        and 0 <= index < self.run.count
                        and index not in self._done
                        and entry == self._entry(index)
                        and all(_looks_complete(self.out / p) for p in self._paths(index).values())
                    ):
                        self._done.add(index)
                        kept.append(json.dumps(entry) + "\n")
        write_text_atomic(manifest, "".join(kept))

    # --- writing -------------------------------------------------------------------------

    def _paths(self, index: int) -> dict[str, str]:
        name = f"{index:0{self._meta['index_digits']}d}"
        if self.run.format == "npz":
            return {"file": f"samples/{name}.npz"}
        return {"image": f"images/{name}.png", "mask": f"masks/{name}.png"}

    def _entry(self, index: int) -> dict:
        return {**sample_record(self._meta, index), **self._paths(index)}

    @property
    def done(self) -> set[int]:
        """Indices complete per the manifest (their files are in place), as a copy."""
        with self._lock:
            return set(self._done)

    def pending(self) -> list[int]:
        """Sorted indices in range(count) still to write: what a resumed run must generate."""
        done = self.done
        return [i for i in range(self.run.count) if i not in done]

    def submit(self, index: int, image: np.ndarray, mask: np.ndarray) -> None:
        """Queue sample `index` for encoding and writing; blocks while 2 * workers are queued.

        Call it from one thread (the generation loop). The arrays are copied, so the caller may
        reuse its buffers. An index already written or queued is ignored. A failed write from
        earlier is raised here, so generation stops early instead of running on for nothing.
        """
        if self._closed:
            raise RuntimeError("DatasetWriter is closed")
        self._raise_error()
        check_arrays(image, mask)
        index = int(index)
        if not 0 <= index < self.run.count:
            raise ValueError(f"index {index} is outside range(count={self.run.count})")
        if index in self._submitted or index in self._done:
            return
        self._submitted.add(index)
        image, mask = np.array(image, order="C"), np.array(mask, order="C")
        self._slots.acquire()
        future = self._pool.submit(self._write, index, image, mask)
        future.add_done_callback(self._on_done(self._slots))

    def _encode(self, index: int, image: np.ndarray, mask: np.ndarray) -> dict[str, bytes]:
        paths = self._paths(index)
        if self.run.format == "npz":
            return {paths["file"]: encode_npz(image, mask)}
        return {paths["image"]: encode_png(image), paths["mask"]: encode_png(mask)}

    def _write(self, index: int, image: np.ndarray, mask: np.ndarray) -> None:
        files = self._encode(index, image, mask)
        if self.dest is not None:  # object storage: a PUT per file, the manifest at the end
            for name, data in files.items():
                self.dest.publish(name, data)
            with self._lock:
                self._done.add(index)
            return
        try:
            for name, data in files.items():
                write_bytes_atomic(self.out / name, data)
        except OSError as e:
            raise SynthmedError(f"cannot write sample {index} in {self.out}: {e}") from e
        line = (json.dumps(self._entry(index)) + "\n").encode("utf-8")
        with self._lock:
            written = os.write(self._manifest_fd, line)  # one write of the whole line (O_APPEND)
            while written < len(line):  # only on a short write (disk full, signals)
                written += os.write(self._manifest_fd, line[written:])
            self._done.add(index)
            self._unsynced += 1
            if self._unsynced >= FSYNC_EVERY:
                os.fsync(self._manifest_fd)
                self._unsynced = 0

    # --- closing -------------------------------------------------------------------------

    def _finish(self, *, abort: bool) -> None:
        """On abort (an exception in the with-block) queued samples are dropped, finished ones
        kept, and no card is written: the dataset is not done, and resume picks it up."""
        if self._closed:
            return
        self._closed = True
        if self.dest is not None:
            self._pool.shutdown(wait=True, cancel_futures=abort)
            if not abort:
                self._raise_error()
                self._publish_listing(self.dest.publish)
            return
        try:
            self._pool.shutdown(wait=True, cancel_futures=abort)
            os.fsync(self._manifest_fd)
            if not abort:
                self._raise_error()
                self._publish_listing(lambda name, data: write_bytes_atomic(self.out / name, data))
        finally:
            os.close(self._manifest_fd)
            os.close(self._lock_fd)

    def _publish_listing(self, publish: Callable[[str, bytes], None]) -> None:
        """The files that describe the finished run; the card last, once the dataset is done.
        Object stores get the whole manifest here (a local one was appended line by line)."""
        if self.dest is not None:
            lines = "".join(json.dumps(self._entry(i)) + "\n" for i in sorted(self._done))
            publish(MANIFEST, lines.encode("utf-8"))
        if self.run.format == "png":
            publish(DATALIST, self._datalist().encode("utf-8"))
        publish(CARD, self._card().encode("utf-8"))

    def _card(self) -> str:
        if self.run.format == "npz":
            layout = [
                "- `samples/NNNNNN.npz`: arrays `image` (RGB, uint8 [H, W, 3]) and `mask`",
                "  (its label, uint8 [H, W], 0 background / 255 foreground)",
            ]
        else:
            layout = [
                "- `images/NNNNNN.png`: RGB image, uint8 [H, W, 3]",
                "- `masks/NNNNNN.png`: its label, greyscale uint8 [H, W], 0 background / 255 "
                "foreground",
                f"- `{DATALIST}`: the pairs as a Medical Segmentation Decathlon datalist "
                '(`"training"`: image and label paths), for MONAI\'s `load_decathlon_datalist`',
            ]
        layout.append(
            f"- `{MANIFEST}`: one JSON line per sample (index, seed, files, model, weights"
            + (", label, class name, truncation)" if "label" in self._meta["generator"] else ")")
        )
        return dataset_card(self._meta, self.run, len(self._done), layout)

    def _datalist(self) -> str:
        """The samples written, in index order, as a decathlon-style `dataset.json`: MONAI
        users load a folder with `load_decathlon_datalist` + `LoadImaged` and no glue code.
        Paths are relative to OUT, which is where MONAI resolves them."""
        g, written = self._meta["generator"], sorted(self._done)
        datalist = {
            "name": f"synthmed {g.get('model')} seed {self._meta['seed']}",
            "description": f"SYNTHETIC DATA - NOT PATIENT DATA; generated by a GAN, see {CARD}",
            "tensorImageSize": "2D",
            "modality": {"0": "RGB"},
            "labels": {"0": "background", "255": "foreground"},  # mask pixel values
            "numTraining": len(written),
            "training": [
                {"image": paths["image"], "label": paths["mask"]}
                for paths in map(self._paths, written)
            ],
        }
        return json.dumps(datalist, indent=2) + "\n"


def dataset_card(meta: dict, run: RunInfo, written: int, layout: list[str]) -> str:
    """The dataset card of every format: what generated the data, how much of it there is,
    its files (`layout`, one Markdown bullet per line) and the command that reproduces it."""
    m, g, n = meta, meta["generator"], written
    hashes = g.get("weights_sha256")
    hashes = hashes if isinstance(hashes, dict) else {"weights": hashes}
    status = "complete" if n == m["count"] else f"INCOMPLETE: {n} of {m['count']} written"
    return "\n".join(
        [
            "# Synthetic dataset",
            "",
            "> **SYNTHETIC DATA - NOT PATIENT DATA.** Every image in this dataset was",
            "> generated by a generative adversarial network (GAN). It contains no patient",
            "> data and shows no real person. It must not be used for diagnosis or any",
            "> clinical decision.",
            "",
            "## What generated it",
            "",
            f"- Model: `{g.get('model')}` version `{g.get('model_version')}`",
            *(
                [
                    f"- Class: `{g.get('class_name')}` (label {g['label']}); every sample "
                    f"and its mask are of this class",
                    f"- Truncation psi: {g.get('truncation')} (1.0: none)",
                ]
                if "label" in g
                else []
            ),
            *(f"- Weights sha256 ({k}): `{v}`" for k, v in sorted(hashes.items())),
            f"- Image size: {g.get('image_size')}",
            f"- Generator trained on: {run.trained_on}",
            f"- synthmed version: {__version__}",
            "",
            "## This dataset",
            "",
            f"- Samples: {m['count']} ({status})",
            f"- Seed: {m['seed']}",
            f"- Format: {m['format']}",
            f"- Started: {m['started']}; card written: {now()}",
            "",
            "## Files",
            "",
            *layout,
            f"- `{RUN_FILE}`: the run's identity (generator, seed, format, count)",
            "",
            "## How to reproduce",
            "",
            "```",
            run.command,
            "```",
            "",
            "Sample `i` depends only on the seed, `i` and the generator weights above, so the",
            "same command gives the same samples whatever the batching or interruptions.",
            "",
        ]
    )
