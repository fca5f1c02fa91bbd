"""Atomic writes: all or nothing under the real name, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from synthmed.atomic import atomic_path, write_text_atomic


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "manifest.jsonl"
    write_text_atomic(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.jsonl"]


def test_written_file_gets_umask_permissions(tmp_path: Path) -> None:
    write_text_atomic(tmp_path / "a.txt", "x")
    # A writer that recreates its file privately (as safetensors does) is corrected too.
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    # The module read the umask at import; under the usual 022 that is 0644, not 0600.
    for name in ("a.txt", "b.bin"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode & 0o044, (name, oct(mode))
