"""Fixtures for tests that start a real tritonserver: free ports, and the demo server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from synthmed.serving.server import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]


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
