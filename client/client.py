"""SynthMedClient: reproducible labelled samples from one or more Triton servers.

It serves both model families: the dual-GAN ensemble `synthmed` (z -> image, mask) and a
class-conditional model such as `synthmed_cstylegan2` (z, class, truncation -> image, mask),
told apart by the served inputs. Sample `i` of seed `s` is generated from
`synthmed.latents.latent(s, i)` (with the same label and psi for every sample), so the result
is the same whatever the batch size, the concurrency, the number of servers or the resume point.
Batches are spread over the servers, at most `max_in_flight` at a time on each; a batch that
fails with a transient error is retried with exponential backoff, on another server if there is
one. Needs numpy and tritonclient only.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlsplit

import numpy as np

from synthmed.client.conditional import batch_inputs, request_settings, resolve_label
from synthmed.client.contract import (
    Contract,
    check_contract,
    is_conditional,
    model_config,
    model_metadata,
    parameter,
)
from synthmed.client.errors import (
    ContractError,
    InvalidURLError,
    ModelNotFoundError,
    ServerUnavailableError,
)

PROTOCOLS = ("grpc", "http")
_OUTPUTS = ("image", "mask")
_WIRE_TYPES = {"float32": "FP32", "uint8": "UINT8", "int64": "INT64"}
# gRPC status codes (and HTTP-client failures) worth retrying: the server may come back.
_TRANSIENT = (
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "no available versions",  # a server unloading its models on the way down, or reloading
    "Connection",
    "connect",
    "timed out",
    "Broken pipe",
    "reset",
)


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


def parse_urls(urls: str | Sequence[str], protocol: str) -> list[str]:
    """Validate a protocol and one or more server URLs; tritonclient's 'host:port' forms."""
    if protocol not in PROTOCOLS:
        raise InvalidURLError(f"protocol must be grpc or http, got {protocol!r}")
    parsed = [parse_url(u) for u in ([urls] if isinstance(urls, str) else urls)]
    if not parsed:
        raise InvalidURLError("no server URL given")
    return parsed


class SynthMedClient:
    """Synchronous client over one or more Triton servers serving the `synthmed` ensemble or a
    class-conditional model (`model="synthmed_cstylegan2"`)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        protocol: str = "grpc",
        model: str = "synthmed",
        max_in_flight: int = 2,
        retries: int = 4,
        backoff_s: float = 0.5,
        timeout_s: float = 120.0,
    ) -> None:
        self.urls = parse_urls(urls, protocol)
        self.protocol, self.model = protocol, model
        self.max_in_flight, self.retries, self.backoff_s, self.timeout_s = (
            max_in_flight,
            retries,
            backoff_s,
            timeout_s,
        )
        self._local = threading.local()
        self._slots = [threading.Semaphore(max_in_flight) for _ in self.urls]
        self._next = itertools.count()
        self.contract = self.check()

    # --- transport -----------------------------------------------------------------------
    def _module(self):
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        return module

    def _client(self, server: int):
        """One tritonclient object per thread and server (the HTTP client is not thread-safe)."""
        clients = self._local.__dict__.setdefault("clients", {})
        if server not in clients:
            clients[server] = self._module().InferenceServerClient(self.urls[server])
        return clients[server]

    def check(self) -> Contract:
        """Every server is live and serves `model` with synthmed's contract; returns it."""
        contract = None
        for server, url in enumerate(self.urls):
            client = self._client(server)
            try:
                live = client.is_server_live()
            except Exception as e:  # tritonclient raises several types for a dead server
                raise ServerUnavailableError(f"server {url} is not reachable ({_reason(e)})") from e
            if not live:
                raise ServerUnavailableError(f"server {url} is not live")
            try:
                ready = client.is_model_ready(self.model)
            except Exception as e:
                raise ServerUnavailableError(f"server {url}: {_reason(e)}") from e
            if not ready:
                raise ModelNotFoundError(
                    f"server {url} does not serve a ready model {self.model!r}"
                )
            metadata = model_metadata(client, self.model)
            config = model_config(client, self.model) if is_conditional(metadata) else {}
            found = check_contract(self.model, metadata, url, config)
            if contract is not None and found != contract:
                raise ContractError(
                    f"server {url} serves {found}, but {self.urls[0]} serves {contract}"
                )
            contract = found
        return contract

    def _infer(
        self, server: int, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> list[np.ndarray]:
        tensors, requested = _request(self._module(), inputs, outputs)
        client = self._client(server)
        if self.protocol == "grpc":
            result = client.infer(model, tensors, outputs=requested, client_timeout=self.timeout_s)
        else:
            result = client.infer(model, tensors, outputs=requested)
        return [result.as_numpy(o) for o in outputs]

    def _call(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> list[np.ndarray]:
        """One request, on the next server with a free slot; transient failures retried."""
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            server = next(self._next) % len(self.urls)
            with self._slots[server]:
                try:
                    return self._infer(server, model, inputs, outputs)
                except Exception as e:
                    _raise_unless_transient(e, self.urls[server], model)
                    last_error = e
                    self._local.__dict__.get("clients", {}).pop(server, None)  # reconnect next time
            time.sleep(self.backoff_s * 2**attempt)
        raise _exhausted(self.urls, self.retries, last_error) from last_error

    # --- public API --------------------------------------------------------------------
    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of a conditional model (label k is classes[k]); empty otherwise."""
        return self.contract.classes

    def resolve_label(self, label: int | str) -> int:
        """A class index or name -> the index, or a one-line error naming the valid classes."""
        return resolve_label(label, self.contract.classes, self.model)

    def generate(
        self,
        count: int,
        *,
        seed: int = 0,
        label: int | str | None = None,
        truncation: float | None = None,
        start: int = 0,
        batch_size: int = 16,
        indices: Sequence[int] | None = None,
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (index, image uint8 [H,W,3], mask uint8 [H,W]) for samples start..start+count
        (or the given `indices`), in index order.

        A conditional model needs `label` (index or class name) and takes `truncation` (psi,
        None: the model's default); the dual GAN takes neither. Arguments are checked here,
        before the first request, so a bad label fails at once rather than on first use.
        """
        if count < 1 and indices is None:
            raise ValueError(f"count must be >= 1, got {count}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        settings = request_settings(self.contract, label, truncation)
        order = list(indices) if indices is not None else list(range(start, start + count))
        return self._generate(order, seed, settings, batch_size)

    def _generate(
        self, order: list[int], seed: int, settings: tuple, batch_size: int
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        batches = iter([order[i : i + batch_size] for i in range(0, len(order), batch_size)])
        workers = len(self.urls) * self.max_in_flight
        nz = self.contract.nz
        with ThreadPoolExecutor(max_workers=workers) as pool:
            window: deque[tuple[list[int], Future]] = deque()

            def submit(batch: list[int]) -> None:
                inputs = batch_inputs(seed, batch, nz, *settings)
                window.append((batch, pool.submit(self._call, self.model, inputs, _OUTPUTS)))

            for batch in itertools.islice(batches, 2 * workers):
                submit(batch)
            while window:
                batch, future = window.popleft()
                images, masks = future.result()
                nxt = next(batches, None)
                if nxt is not None:
                    submit(nxt)
                yield from zip(batch, images, masks, strict=True)

    def provenance(self) -> list[dict]:
        """Source runs (role, weights hash, step, training data) of the served model, or of each
        step of an ensemble, from the `synthmed_provenance` parameter the repository writer
        puts in each config."""
        client = self._client(0)
        config = model_config(client, self.model)
        steps = [s["model_name"] for s in config.get("ensemble_scheduling", {}).get("step", [])]
        configs = {m: model_config(client, m) for m in steps} if steps else {self.model: config}
        runs = []
        for model, step_config in configs.items():
            value = parameter(step_config, "synthmed_provenance")
            runs += json.loads(value) if value else [{"model": model}]
        return runs

    def translate(self, masks: np.ndarray) -> np.ndarray:
        """Stage II alone: uint8 masks [B,H,W] (>= 128 is vessel) -> images [B,H,W,3]."""
        masks = np.ascontiguousarray(masks, dtype=np.uint8)
        (images,) = self._call("synthmed_stage2", {"mask": masks}, ("image",))
        return images

    def close(self) -> None:
        """Close this thread's connections."""
        for client in self._local.__dict__.pop("clients", {}).values():
            client.close()

    def __enter__(self) -> SynthMedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _reason(error: Exception | None) -> str:
    text = (
        str(error).strip().splitlines()[0]
        if error is not None and str(error).strip()
        else type(error).__name__
    )
    return text[:300]


def _request(module: object, inputs: dict[str, np.ndarray], outputs: Sequence[str]) -> tuple:
    """tritonclient's input and requested-output objects for one request."""
    tensors = []
    for name, array in inputs.items():
        tensor = module.InferInput(name, list(array.shape), _WIRE_TYPES[array.dtype.name])
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors, [module.InferRequestedOutput(o) for o in outputs]


def _raise_unless_transient(error: Exception, url: str, model: str) -> None:
    """A failure that retrying cannot cure ends the call at once."""
    if not _is_transient(error):
        raise ServerUnavailableError(f"{url}: {model}: {_reason(error)}") from error


def _exhausted(
    urls: Sequence[str], retries: int, error: Exception | None
) -> ServerUnavailableError:
    return ServerUnavailableError(
        f"no answer from {', '.join(urls)} after {retries + 1} tries ({_reason(error)})"
    )


def _is_transient(error: Exception) -> bool:
    text = f"{type(error).__name__} {error}"
    return any(marker in text for marker in _TRANSIENT) or isinstance(
        error, (ConnectionError, TimeoutError, OSError)
    )
