"""SynthMedClient against the real server: same pixels however the work is split."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from synthmed.client import (
    ContractError,
    InvalidURLError,
    ModelNotFoundError,
    ServerUnavailableError,
    SynthMedClient,
)
from synthmed.latents import latents
from synthmed.serving.runtime import InProcessRuntime
from synthmed.serving.server import TritonServer
from tests.serving.conftest import REPO_ROOT, free_ports

pytestmark = pytest.mark.server
COUNT = 1000


@pytest.fixture(scope="module")
def second_server() -> Iterator[TritonServer]:
    http, grpc, metrics = free_ports()
    server = TritonServer(
        REPO_ROOT / "model_repository", http_port=http, grpc_port=grpc, metrics_port=metrics
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    runtime = InProcessRuntime(REPO_ROOT / "model_repository")
    return runtime.run(latents(21, range(COUNT), runtime.nz))


@pytest.mark.parametrize(
    ("batch_size", "max_in_flight", "servers", "protocol"),
    [(32, 1, 1, "grpc"), (7, 8, 1, "grpc"), (1, 8, 2, "grpc"), (32, 8, 2, "http")],
    ids=["b32-c1", "b7-c8", "b1-c8-two-servers", "b32-http-two-servers"],
)
def test_1000_samples_equal_in_process_whatever_the_split(
    demo_server,
    second_server,
    reference,
    batch_size: int,
    max_in_flight: int,
    servers: int,
    protocol: str,
) -> None:
    url = "http" if protocol == "http" else "grpc"
    urls = [demo_server.url(url), second_server.url(url)][:servers]
    with SynthMedClient(urls, protocol=protocol, max_in_flight=max_in_flight) as client:
        results = list(client.generate(COUNT, seed=21, batch_size=batch_size))
    assert [i for i, _, _ in results] == list(range(COUNT))
    images = np.stack([image for _, image, _ in results])
    masks = np.stack([mask for _, _, mask in results])
    assert np.array_equal(masks, reference[1])
    assert np.array_equal(images, reference[0])  # bit for bit: same ONNX graphs, same runtime


def test_resume_point_does_not_change_samples(demo_server, reference) -> None:
    with SynthMedClient(demo_server.url("grpc")) as client:
        tail = list(client.generate(10, seed=21, start=990, batch_size=3))
    assert [i for i, _, _ in tail] == list(range(990, 1000))
    assert np.array_equal(np.stack([img for _, img, _ in tail]), reference[0][990:])


def test_translate_runs_stage2_on_user_masks(demo_server, reference) -> None:
    with SynthMedClient(demo_server.url("grpc")) as client:
        assert np.array_equal(client.translate(reference[1][:4], seed=21), reference[0][:4])
        tail = client.translate(reference[1][990:], seed=21, start=990)
        assert np.array_equal(tail, reference[0][990:])


def test_clear_errors(demo_server) -> None:
    with pytest.raises(InvalidURLError, match="malformed server URL"):
        SynthMedClient("localhost")
    with pytest.raises(ServerUnavailableError, match="not reachable"):
        SynthMedClient(f"127.0.0.1:{free_ports(1)[0]}")
    with pytest.raises(ModelNotFoundError, match="no_such_model"):
        SynthMedClient(demo_server.url("grpc"), model="no_such_model")
    with pytest.raises(ContractError, match="does not match synthmed's contract"):
        SynthMedClient(demo_server.url("grpc"), model="synthmed_stage2")


def test_asyncio_client_gives_the_same_samples(demo_server, second_server, reference) -> None:
    import asyncio

    from synthmed.client import AsyncSynthMedClient

    async def collect() -> list[tuple[int, np.ndarray, np.ndarray]]:
        urls = [demo_server.url("grpc"), second_server.url("grpc")]
        async with AsyncSynthMedClient(urls, max_in_flight=4) as client:
            samples = [item async for item in client.generate(200, seed=21, batch_size=9)]
            rendered = await client.translate(reference[1][:3], seed=21)
            assert np.array_equal(rendered, reference[0][:3])
            return samples

    samples = asyncio.run(collect())
    assert [i for i, _, _ in samples] == list(range(200))
    assert np.array_equal(np.stack([image for _, image, _ in samples]), reference[0][:200])
    assert np.array_equal(np.stack([mask for _, _, mask in samples]), reference[1][:200])
