"""Fixtures for tests that start a real tritonserver: free ports, and the demo server."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_ports(n: int = 3) -> list[int]:
    """Ports the kernel hands out as free, all distinct (held open together while chosen)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture(scope="module")
def demo_server() -> Iterator[object]:
    """The bundled demo repository on the real tritonserver, on free ports."""
    from synthmed.serving.server import TritonServer

    http, grpc, metrics = free_ports()
    server = TritonServer(
        REPO_ROOT / "model_repository", http_port=http, grpc_port=grpc, metrics_port=metrics
    )
    server.start(timeout_s=120)
    try:
        yield server
    finally:
        server.stop()
