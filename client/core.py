"""What the synchronous and the asyncio client share: settings and their checks, the retry
policy, how a failure is classified, the contract check across servers, and request tensors.

The two clients differ only in how they wait (threads or an event loop); every decision is
made here, once, so they cannot drift apart: the same arguments are refused with the same
message, the same failures are retried the same number of times, and a request the server
refuses ends at once in `InferenceError` rather than after every retry.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from synthmed.client.contract import check_contract
from synthmed.client.errors import (
    ContractError,
    InferenceError,
    InvalidURLError,
    ModelNotFoundError,
    ServerUnavailableError,
)
from synthmed.contract import (
    ENSEMBLE,
    IMAGE,
    MASK,
    PARAM_PROVENANCE,
    STAGE2,
    Contract,
    Provenance,
    parse_provenance,
)
from synthmed.errors import UserInputError
from synthmed.sampling import check_number, translate_feeds

PROTOCOLS = ("grpc", "http")
OUTPUTS = (IMAGE.name, MASK.name)
_WIRE_TYPES = {"float32": "FP32", "uint8": "UINT8", "int64": "INT64"}
# gRPC status codes and HTTP statuses worth retrying: the server may come back, finish
# loading, or have room again. NOT_FOUND too: a model disappears while a server unloads it
# on the way down or reloads it, and the model was checked to exist before the first request.
_TRANSIENT_STATUS = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.RESOURCE_EXHAUSTED",
    "StatusCode.ABORTED",
    "StatusCode.NOT_FOUND",
    "404",
    "408",
    "429",
    "502",
    "503",
    "504",
}


def parse_url(url: str) -> str:
    """'host:port', 'grpc://host:port' or 'http://host:port' -> tritonclient's 'host:port'."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"tcp://{text}")
    if parts.scheme not in ("tcp", "grpc", "http", "https") or parts.path not in ("", "/"):
        raise InvalidURLError(f"malformed server URL {url!r} (expected host:port)")
    try:
        port = parts.port
    except ValueError as e:
        raise InvalidURLError(f"malformed server URL {url!r}: bad port") from e
    if not parts.hostname or port is None:
        raise InvalidURLError(f"malformed server URL {url!r} (expected host:port)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more tries after the first, waiting between them with capped, jittered
    exponential backoff: before retry k (0-based) a uniform wait in [d/2, d] with
    d = min(max_backoff_s, backoff_s * 2**k). The jitter keeps many clients that lost the
    same server from hammering it in lockstep; nothing waits after the last try."""

    retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    @property
    def tries(self) -> int:
        """Attempts in all."""
        return self.retries + 1

    def waits(self, rng: random.Random | None = None) -> Iterator[float]:
        """One value per try: 0 before the first, then the backoff before each retry."""
        rng = rng or random.Random()
        yield 0.0
        for k in range(self.retries):
            cap = min(self.max_backoff_s, self.backoff_s * 2**k)
            yield rng.uniform(cap / 2, cap)


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client is told at construction, checked once for both clients."""

    urls: tuple[str, ...]
    protocol: str
    model: str
    max_in_flight: int
    retry: RetryPolicy
    timeout_s: float

    @classmethod
    def create(
        cls,
        urls: str | Sequence[str],
        *,
        protocol: str,
        model: str,
        max_in_flight: int,
        retries: int,
        backoff_s: float,
        max_backoff_s: float,
        timeout_s: float,
    ) -> ClientSettings:
        """Validate the arguments (one-line errors naming the argument) and build settings."""
        if protocol not in PROTOCOLS:
            raise InvalidURLError(f"protocol must be grpc or http, got {protocol!r}")
        parsed = tuple(parse_url(u) for u in ([urls] if isinstance(urls, str) else urls))
        if not parsed:
            raise InvalidURLError("no server URL given")
        if not isinstance(model, str) or not model:
            raise UserInputError(f"model must be a model name, got {model!r}")
        check_number("max_in_flight", max_in_flight, 1, integer=True)
        check_number("retries", retries, 0, integer=True)
        check_number("backoff_s", backoff_s, 0)
        check_number("max_backoff_s", max_backoff_s, 0)
        check_number("timeout_s", timeout_s, 0, strict=True)
        retry = RetryPolicy(retries, float(backoff_s), float(max_backoff_s))
        return cls(parsed, protocol, model, max_in_flight, retry, float(timeout_s))

    def module(self, aio: bool) -> object:
        """tritonclient's module for the protocol (asyncio flavour with `aio`)."""
        if self.protocol == "grpc":
            if aio:
                import tritonclient.grpc.aio as module
            else:
                import tritonclient.grpc as module
        elif aio:
            import tritonclient.http.aio as module
        else:
            import tritonclient.http as module
        return module

    def connect(self, server: int, aio: bool) -> object:
        """A tritonclient client for server `server`. HTTP clients take the timeout here;
        gRPC takes it per call (`call_timeout`)."""
        module, url = self.module(aio), self.urls[server]
        if self.protocol == "grpc":
            return module.InferenceServerClient(url)
        if aio:
            return module.InferenceServerClient(url, conn_timeout=self.timeout_s)
        return module.InferenceServerClient(
            url, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
        )

    def call_timeout(self) -> dict:
        """Keyword arguments that bound one gRPC call by `timeout_s` (HTTP: set on the client)."""
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}


class ClientBase:
    """Construction and the read-only views both clients share. `retries` more tries follow a
    transient failure (server down, restarting, busy, timed out after `timeout_s`); `sleep`
    is how the client waits between them (the subclass's clock unless one is injected)."""

    default_sleep: Callable = staticmethod(lambda seconds: None)
    contract: Contract | None

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        protocol: str = "grpc",
        model: str = ENSEMBLE,
        max_in_flight: int = 2,
        retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        timeout_s: float = 120.0,
        sleep: Callable | None = None,
    ) -> None:
        self.settings = ClientSettings.create(
            urls,
            protocol=protocol,
            model=model,
            max_in_flight=max_in_flight,
            retries=retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            timeout_s=timeout_s,
        )
        self._sleep = sleep or self.default_sleep
        self._rng = random.Random()  # backoff jitter only; samples never depend on it
        self._next = itertools.count()  # round robin over the servers

    @property
    def urls(self) -> tuple[str, ...]:
        """The servers, as tritonclient's host:port."""
        return self.settings.urls

    @property
    def model(self) -> str:
        """The served model this client generates with."""
        return self.settings.model

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of a conditional model (label k is classes[k]); empty otherwise."""
        return self.contract.classes if self.contract else ()

    def _next_server(self) -> int:
        return next(self._next) % len(self.urls)


# --- failures ------------------------------------------------------------------------------
def reason(error: BaseException | None) -> str:
    """The first line of an error, for a one-line message."""
    text = str(error).strip() if error is not None else ""
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean the connection failed or timed out, not that the server
    answered: sockets (refused, reset, timed out) and aiohttp's connection errors."""
    types: list[type[BaseException]] = [OSError, asyncio.TimeoutError]
    try:
        import aiohttp

        types.append(aiohttp.ClientConnectionError)
    except ImportError:  # only the asyncio HTTP client needs aiohttp
        pass
    return tuple(types)


def is_transient(error: BaseException) -> bool:
    """Retry a failure only when retrying can cure it: the server did not answer (connection,
    timeout) or said it is unavailable or busy (by status code, never by message wording)."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, InferenceServerException):
        return str(error.status()) in _TRANSIENT_STATUS
    return isinstance(error, _transport_errors())


def refused(error: BaseException, url: str, model: str) -> BaseException:
    """The error to raise for a failure that is not transient: InferenceError for an answer
    from the server (it refused or failed the request), the error itself otherwise (a bug)."""
    from tritonclient.utils import InferenceServerException

    if isinstance(error, InferenceServerException):
        return InferenceError(f"{url}: {model} refused the request: {reason(error)}")
    return error


def exhausted(urls: Sequence[str], tries: int, error: BaseException | None) -> Exception:
    """The error after the last try of a transient failure."""
    return ServerUnavailableError(
        f"no answer from {', '.join(urls)} after {tries} tries ({reason(error)})"
    )


def unreachable(url: str, error: BaseException) -> Exception:
    """The error for a server that cannot be asked whether it is live."""
    return ServerUnavailableError(f"server {url} is not reachable ({reason(error)})")


# --- contract and provenance -----------------------------------------------------------------
def server_contract(
    settings: ClientSettings,
    server: int,
    live: bool,
    ready: bool,
    metadata: dict | None,
    config: dict | None,
) -> Contract:
    """One server's answers (liveness, readiness, metadata, config) -> its contract."""
    url = settings.urls[server]
    if not live:
        raise ServerUnavailableError(f"server {url} is not live")
    if not ready:
        raise ModelNotFoundError(f"server {url} does not serve a ready model {settings.model!r}")
    return check_contract(settings.model, metadata or {}, url, config or {})


def same_contract(settings: ClientSettings, contracts: Sequence[Contract]) -> Contract:
    """Every server must serve the same contract, or samples would depend on the server."""
    first = contracts[0]
    for url, found in zip(settings.urls[1:], contracts[1:], strict=True):
        if found != first:
            raise ContractError(
                f"server {url} serves {found}, but {settings.urls[0]} serves {first}"
            )
    return first


def ensemble_steps(config: dict) -> list[str]:
    """The composing models of an ensemble config (none for a plain model)."""
    return [s["model_name"] for s in config.get("ensemble_scheduling", {}).get("step", [])]


def provenance_of(configs: Sequence[dict]) -> list[Provenance]:
    """Source runs recorded by the repository writer in each config's parameter."""
    records = []
    for config in configs:
        value = config.get("parameters", {}).get(PARAM_PROVENANCE, {}).get("string_value")
        records += parse_provenance(value)
    return records


# --- requests --------------------------------------------------------------------------------
def request_tensors(
    module: object, inputs: dict[str, np.ndarray], outputs: Sequence[str]
) -> tuple[list, list]:
    """tritonclient's input and requested-output objects for one request."""
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), _WIRE_TYPES[array.dtype.name])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors, [module.InferRequestedOutput(o) for o in outputs]


def translate_inputs(
    masks: np.ndarray, nz: int, seed: int, start: int
) -> tuple[str, dict[str, np.ndarray], tuple[str, ...]]:
    """Stage II alone: the model, inputs and outputs of a request for uint8 masks [B, H, W],
    rendered with the latents of samples start.. of seed `seed` (`translate_feeds`)."""
    return STAGE2, translate_feeds(masks, nz, seed, start), (IMAGE.name,)
