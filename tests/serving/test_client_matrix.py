"""The synchronous and the asyncio client behave the same, on real servers: the same contract
check across servers, timeout, argument checks, refused requests and retry policy."""

from __future__ import annotations

import asyncio
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from synthmed.client import (
    AsyncSynthMedClient,
    ContractError,
    InferenceError,
    InvalidRequestError,
    InvalidURLError,
    RetryPolicy,
    ServerUnavailableError,
    SynthMedClient,
)
from synthmed.errors import UserInputError
from synthmed.serving.server import TritonServer
from tests.conftest import DEMO_SIZE
from tests.serving.conftest import REPO_ROOT, free_ports

pytestmark = pytest.mark.server


class Flavour:
    """One client, driven the same way whichever it is: `open` checks the servers (the sync
    constructor; the async connect), the other calls return what they return. Each asyncio
    call runs in its own event loop, connected and closed inside it, as a program would."""

    def __init__(self, name: str) -> None:
        self.name = name

    def open(self, urls: object, **options: object) -> object:
        if self.name == "sync":
            return SynthMedClient(urls, **options)
        client = AsyncSynthMedClient(urls, **options)
        self._run(client, lambda: asyncio.sleep(0))
        return client

    def _run(self, client: AsyncSynthMedClient, work: Callable) -> object:
        async def session() -> object:
            try:
                await client.connect()
                return await work()
            finally:
                await client.close()

        return asyncio.run(session())

    def generate(self, client: object, *args: object, **kwargs: object) -> list:
        return self.generate_indices(client, None, *args, **kwargs)

    def generate_indices(self, client: object, indices: list | None, *args, **kwargs) -> list:
        call = "generate" if indices is None else "generate_indices"
        args = args if indices is None else (indices, *args)
        if self.name == "sync":
            return list(getattr(client, call)(*args, **kwargs))

        async def collect() -> list:
            return [item async for item in getattr(client, call)(*args, **kwargs)]

        return self._run(client, collect)

    def translate(self, client: object, masks: np.ndarray) -> np.ndarray:
        if self.name == "sync":
            return client.translate(masks)
        return self._run(client, lambda: client.translate(masks))

    def generate_after_stop(self, server: TritonServer, count: int, **options: object) -> list:
        """Check the server, stop it, then ask for samples (one event loop for asyncio)."""
        if self.name == "sync":
            client = SynthMedClient(server.url("grpc"), **options)
            server.stop()
            return list(client.generate(count))

        async def session() -> list:
            async with AsyncSynthMedClient(server.url("grpc"), **options) as client:
                server.stop()
                return [item async for item in client.generate(count)]

        return asyncio.run(session())

    def sleep_recorder(self, waits: list[float]) -> Callable:
        """An injected clock: records each wait instead of sleeping."""
        if self.name == "sync":
            return waits.append

        async def sleep(seconds: float) -> None:
            waits.append(seconds)

        return sleep


@pytest.fixture(params=["sync", "asyncio"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return Flavour(request.param)


def _server(repo: Path) -> TritonServer:
    http, grpc, metrics = free_ports()
    return TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)


@pytest.fixture(scope="module")
def other_contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The demo models declared 32x32: a server whose `synthmed` has another contract. Its
    configs drop their warm-up, which would feed the demo models 32x32 masks and (rightly)
    fail the load: this server only has to declare the other contract."""
    repo = tmp_path_factory.mktemp("other") / "repo"
    shutil.copytree(REPO_ROOT / "model_repository", repo)
    for path in repo.glob("*/config.pbtxt"):
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        del config.model_warmup[:]
        path.write_text(
            text_format.MessageToString(config).replace(f"dims: {DEMO_SIZE}", "dims: 32")
        )
    with _server(repo) as server:
        yield server


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_contract_must_match_across_servers(
    flavour: Flavour, demo_server, other_contract_server, protocol: str
) -> None:
    urls = [demo_server.url(protocol), other_contract_server.url(protocol)]
    with pytest.raises(ContractError, match=r"serves Contract\(.*height=32.*but .* serves"):
        flavour.open(urls, protocol=protocol)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_server_that_never_answers_times_out(
    flavour: Flavour, black_hole: str, protocol: str
) -> None:
    with pytest.raises(ServerUnavailableError, match=f"server {black_hole} is not reachable"):
        flavour.open(black_hole, protocol=protocol, timeout_s=0.5)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"protocol": "ftp"}, InvalidURLError, "protocol must be grpc or http, got 'ftp'"),
        ({"max_in_flight": 0}, UserInputError, "max_in_flight must be an integer >= 1, got 0"),
        ({"retries": -1}, UserInputError, "retries must be an integer >= 0, got -1"),
        ({"timeout_s": 0}, UserInputError, "timeout_s must be a number > 0, got 0"),
        ({"backoff_s": float("nan")}, UserInputError, "backoff_s must be a number >= 0"),
        ({"model": ""}, UserInputError, "model must be a model name"),
    ],
)
def test_bad_settings_are_refused_before_any_connection(
    flavour: Flavour, options: dict, error: type, message: str
) -> None:
    closed = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens: a connection would fail
    with pytest.raises(error, match=message):
        flavour.open(closed, **options)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((0,), {}, UserInputError, "count must be an integer >= 1, got 0"),
        ((2,), {"batch_size": 0}, UserInputError, "batch_size must be an integer >= 1, got 0"),
        ((2,), {"seed": -1}, UserInputError, "seed must be an integer >= 0, got -1"),
        ((2,), {"start": -3}, UserInputError, "start must be an integer >= 0, got -3"),
        ((2,), {"label": 0}, InvalidRequestError, "not class-conditional and takes no label"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(
    flavour: Flavour, demo_server, args: tuple, kwargs: dict, error: type, message: str
) -> None:
    client = flavour.open(demo_server.url("grpc"))
    with pytest.raises(error, match=message):
        client.generate(*args, **kwargs)  # raises on the call, before iteration


def test_explicit_indices_are_a_separate_call(flavour: Flavour, demo_server) -> None:
    client = flavour.open(demo_server.url("grpc"))
    picked = flavour.generate_indices(client, [5, 2], seed=3)
    run = {i: image for i, image, _ in flavour.generate(client, 6, seed=3)}
    assert [i for i, _, _ in picked] == [5, 2]
    assert all(np.array_equal(image, run[i]) for i, image, _ in picked)


def test_a_refused_request_fails_at_once(flavour: Flavour, demo_server) -> None:
    waits: list[float] = []
    client = flavour.open(demo_server.url("grpc"), sleep=flavour.sleep_recorder(waits))
    wrong_size = np.zeros((2, 32, 32), np.uint8)  # stage II takes DEMO_SIZE-square masks
    with pytest.raises(InferenceError, match="synthmed_stage2 refused the request"):
        flavour.translate(client, wrong_size)
    assert waits == []  # not retried: the server would refuse it again


@pytest.mark.parametrize("tries", [1, 3])
def test_n_tries_against_a_stopped_server_wait_n_minus_1_times(
    flavour: Flavour, tries: int
) -> None:
    waits: list[float] = []
    policy = RetryPolicy(retries=tries - 1, backoff_s=0.25, max_backoff_s=0.4)
    options = {"retries": policy.retries, "backoff_s": policy.backoff_s}
    options.update(max_backoff_s=policy.max_backoff_s, sleep=flavour.sleep_recorder(waits))
    with _server(REPO_ROOT / "model_repository") as server:
        with pytest.raises(ServerUnavailableError, match=f"after {tries} tries"):
            flavour.generate_after_stop(server, 4, **options)
    assert len(waits) == tries - 1
    caps = [min(policy.max_backoff_s, policy.backoff_s * 2**k) for k in range(tries - 1)]
    assert all(cap / 2 <= wait <= cap for wait, cap in zip(waits, caps, strict=True))
