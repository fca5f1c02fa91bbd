"""Where a dataset goes: a local folder or any fsspec URL (s3://, gs://, file://, ...).

One small surface over fsspec for what the dataset writers, `synthmed dataset verify` and the
readers need: read, list and publish whole objects. "Publish" means a reader sees the whole
object or nothing: on a local disk the bytes go to a temporary name, are fsynced and renamed
into place; on an object store one PUT (or a completed multipart upload, for big files) is
atomic by the store's own contract. Credentials and endpoints come from the protocol driver's
usual sources (for S3: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL /
AWS_PROFILE ...); synthmed never reads, prints or records them.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from synthmed.atomic import atomic_path
from synthmed.errors import SynthmedError, UserInputError


class StorageError(SynthmedError):
    """The destination could not be read or written (unreachable endpoint, no bucket, denied)."""


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What fsspec drivers raise for a failed call: OSError (fsspec's own convention) and
    botocore's errors, which s3fs lets through for an endpoint that does not answer."""
    types: list[type[BaseException]] = [OSError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        types += [BotoCoreError, ClientError]
    except ImportError:  # no S3 driver installed: nothing of botocore's can be raised
        pass
    return tuple(types)


def redact(text: str) -> str:
    """`text` with any URL's password replaced (scheme://user:secret@host -> user:***@host):
    what synthmed prints or records of a location a user gave it."""
    return _USERINFO.sub(r"\1\2:***@", text)


_USERINFO = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^/@:\s]*):[^/@\s]*@")


def _reason(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]


class Destination:
    """A dataset root: a local path or an fsspec URL. Relative names use '/' on every store."""

    def __init__(self, url: str | Path) -> None:
        import fsspec

        self.url = redact(str(url))  # for messages: never a password
        try:
            # A fresh driver per destination: fsspec's instance cache would keep a driver made
            # under another environment (endpoint, credentials) for the rest of the process.
            self.fs, root = fsspec.core.url_to_fs(str(url), skip_instance_cache=True)
        except (ImportError, ValueError) as e:
            scheme = self.url.split("://", 1)[0]
            hint = " (pip install 'synthmed[s3]')" if scheme in ("s3", "s3a") else ""
            raise UserInputError(f"{self.url}: {redact(_reason(e))}{hint}") from None
        except _storage_errors() as e:  # drivers that connect on construction (ftp, sftp)
            raise StorageError(f"cannot reach {self.url}: {redact(_reason(e))}") from None
        self.root = root.rstrip("/")
        self.local = "file" in _protocols(self.fs)
        self._errors = _storage_errors()

    def __repr__(self) -> str:
        return f"Destination({self.url!r})"

    def path(self, name: str) -> str:
        """The driver's path of relative `name`."""
        return posixpath.join(self.root, name) if name else self.root

    def _fail(self, action: str, name: str, error: BaseException) -> StorageError:
        where = posixpath.join(self.url.rstrip("/"), name) if name else self.url
        return StorageError(f"cannot {action} {where}: {redact(_reason(error))}")

    def read(self, name: str) -> bytes:
        """The bytes of `name` (FileNotFoundError when it is missing)."""
        try:
            return self.fs.cat_file(self.path(name))
        except FileNotFoundError:
            raise
        except self._errors as e:
            raise self._fail("read", name, e) from e

    def read_range(self, name: str, start: int, stop: int) -> bytes:
        """Bytes [start, stop) of `name`: one ranged GET on an object store."""
        try:
            return self.fs.cat_file(self.path(name), start=start, end=stop)
        except FileNotFoundError:
            raise
        except self._errors as e:
            raise self._fail("read", name, e) from e

    def open(self, name: str) -> IO[bytes]:
        """`name` as a seekable binary file (read-ahead buffered on object stores)."""
        try:
            return self.fs.open(self.path(name), "rb")
        except FileNotFoundError:
            raise
        except self._errors as e:
            raise self._fail("read", name, e) from e

    def read_many(self, names: Iterable[str]) -> dict[str, bytes]:
        """Several small objects at once (object stores fetch them concurrently)."""
        paths = {self.path(n): n for n in names}
        if not paths:
            return {}
        try:
            found = self.fs.cat(list(paths), on_error="omit")
        except self._errors as e:
            raise self._fail("read", "", e) from e
        return {paths[p]: data for p, data in found.items() if p in paths}

    def list(self, folder: str = "") -> list[str]:
        """Names (not paths) directly inside `folder`; empty when it does not exist."""
        try:
            entries = self.fs.ls(self.path(folder), detail=False, refresh=True)
        except FileNotFoundError:
            return []
        except self._errors as e:
            raise self._fail("list", folder, e) from e
        return sorted(posixpath.basename(e.rstrip("/")) for e in entries)

    def publish(self, name: str, data: bytes | list[bytes]) -> None:
        """Write `name` whole or not at all: `data`, or the concatenation of its pieces (a
        local file is written piece by piece, without a copy of the whole in memory)."""
        pieces = [data] if isinstance(data, bytes) else data
        try:
            if self.local:
                with atomic_path(self.path(name)) as tmp, open(tmp, "wb") as f:
                    f.writelines(pieces)
                    f.flush()
                    os.fsync(f.fileno())  # a machine crash must not leave a short file renamed
            else:
                self.fs.pipe_file(self.path(name), b"".join(pieces))
        except self._errors as e:
            raise self._fail("write", name, e) from e

    def check_replaceable(self) -> None:
        """--force replaces a dataset on a local disk only: synthmed never deletes from object
        storage (a mistyped prefix could hold anyone's data, and no trash can brings it back)."""
        if not self.local:
            raise UserInputError(
                f"--force: delete {self.url} yourself (synthmed never deletes from object "
                "storage), or choose another --out"
            )

    def remove(self, names: Iterable[str]) -> None:
        """Delete objects (missing ones are fine)."""
        for name in names:
            try:
                self.fs.rm_file(self.path(name))
            except FileNotFoundError:
                pass
            except self._errors as e:
                raise self._fail("delete", name, e) from e


def _protocols(fs: object) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
