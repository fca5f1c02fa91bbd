"""What every export folder shares: the manifest's file name and the hash that names each file.

`synthmed export onnx` writes the manifest, `export int8` rewrites it, the repository writer
and `export tensorrt` read it; engine manifests record plan and ONNX hashes the same way.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "export_manifest.json"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (plans and graphs run to hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
