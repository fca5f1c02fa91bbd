"""The one file hash: sha256, streamed, as recorded in checkpoints, export manifests and engines."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (plans and graphs run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
