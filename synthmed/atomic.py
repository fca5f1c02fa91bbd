"""Write files so that a reader never sees a half-written one.

Every artifact (image, checkpoint, manifest) is written to a temporary name in the target's
own folder and renamed into place; a killed process leaves at most a stray temporary file,
never a truncated artifact under the real name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    # os.umask can only be read by setting it; do that once, before any writer threads exist.
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 (and some writers, safetensors among them, recreate the file
        # 0600): give it the permissions a plain open() would have.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


@contextlib.contextmanager
def staged_folder(target: Path | str, *, publish: bool = True) -> Iterator[Path]:
    """Yield an empty folder beside `target` (same filesystem, so renames are atomic).

    With `publish` (the default) the folder replaces `target` when the block succeeds
    (`replace_dir`); without, the caller moves what it wants out of it (the repository writer
    installs one model at a time). Whatever is left, and everything on failure, is removed:
    an export, a quantisation, a repository or a report is either whole or not there.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(0o777 & ~_UMASK)  # mkdtemp makes it private; these folders are for sharing
    try:
        yield staging
        if publish:
            replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(staged: Path, target: Path) -> None:
    """Move a fully written folder to `target`; an old `target` is removed only once the new
    one is in place, so readers see the old folder or the new one, never a mix or nothing."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staged.rename(target)
        shutil.rmtree(old)
    else:
        staged.rename(target)
