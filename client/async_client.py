"""AsyncSynthMedClient: the same reproducible generation, for asyncio programs.

Built on tritonclient's native asyncio clients (`tritonclient.grpc.aio`, `tritonclient.http.aio`)
rather than threads: one event loop keeps `max_in_flight` requests per server in flight, and
results still come back in index order, equal to the synchronous client's.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Sequence

import numpy as np

from synthmed.client.client import (
    _OUTPUTS,
    _exhausted,
    _raise_unless_transient,
    _reason,
    _request,
    parse_urls,
)
from synthmed.client.conditional import batch_inputs, request_settings
from synthmed.client.contract import Contract, check_contract, is_conditional, to_dict
from synthmed.client.errors import ModelNotFoundError, ServerUnavailableError


class AsyncSynthMedClient:
    """Use as `async with AsyncSynthMedClient(urls) as client:`; `connect()` checks servers."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        protocol: str = "grpc",
        model: str = "synthmed",
        max_in_flight: int = 2,
        retries: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        self.urls = parse_urls(urls, protocol)
        self.protocol, self.model = protocol, model
        self.max_in_flight, self.retries, self.backoff_s = max_in_flight, retries, backoff_s
        if protocol == "grpc":
            import tritonclient.grpc.aio as module
        else:
            import tritonclient.http.aio as module
        self._module = module
        self._clients = [module.InferenceServerClient(url) for url in self.urls]
        self._slots = [asyncio.Semaphore(max_in_flight) for _ in self.urls]
        self._next = itertools.count()
        self.contract: Contract | None = None

    async def connect(self) -> Contract:
        """Every server is live and serves `model` with synthmed's contract; returns it."""
        for url, client in zip(self.urls, self._clients, strict=True):
            try:
                live = await client.is_server_live()
                ready = live and await client.is_model_ready(self.model)
            except Exception as e:  # tritonclient raises several types for a dead server
                raise ServerUnavailableError(f"server {url} is not reachable ({_reason(e)})") from e
            if not live:
                raise ServerUnavailableError(f"server {url} is not live")
            if not ready:
                raise ModelNotFoundError(
                    f"server {url} does not serve a ready model {self.model!r}"
                )
            metadata = to_dict(await client.get_model_metadata(self.model))
            config = {}
            if is_conditional(metadata):
                config = to_dict(await client.get_model_config(self.model))
                config = config.get("config", config)
            self.contract = check_contract(self.model, metadata, url, config)
        return self.contract

    async def _call(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> list[np.ndarray]:
        """One request on the next server with a free slot; transient failures retried."""
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            server = next(self._next) % len(self.urls)
            async with self._slots[server]:
                tensors, requested = _request(self._module, inputs, outputs)
                try:
                    result = await self._clients[server].infer(model, tensors, outputs=requested)
                    return [result.as_numpy(o) for o in outputs]
                except Exception as e:
                    _raise_unless_transient(e, self.urls[server], model)
                    last_error = e
            await asyncio.sleep(self.backoff_s * 2**attempt)
        raise _exhausted(self.urls, self.retries, last_error) from last_error

    async def generate(
        self,
        count: int,
        *,
        seed: int = 0,
        label: int | str | None = None,
        truncation: float | None = None,
        start: int = 0,
        batch_size: int = 16,
        indices: Sequence[int] | None = None,
    ) -> AsyncIterator[tuple[int, np.ndarray, np.ndarray]]:
        """Yield (index, image, mask) in index order, as the synchronous client does (`label`
        and `truncation` as there: for a class-conditional model only)."""
        contract = self.contract or await self.connect()
        settings = request_settings(contract, label, truncation)
        order = list(indices) if indices is not None else list(range(start, start + count))
        batches = iter([order[i : i + batch_size] for i in range(0, len(order), batch_size)])
        window: deque[tuple[list[int], asyncio.Task]] = deque()

        def submit(batch: list[int]) -> None:
            inputs = batch_inputs(seed, batch, contract.nz, *settings)
            window.append((batch, asyncio.create_task(self._call(self.model, inputs, _OUTPUTS))))

        for batch in itertools.islice(batches, 2 * len(self.urls) * self.max_in_flight):
            submit(batch)
        try:
            while window:
                batch, task = window.popleft()
                images, masks = await task
                nxt = next(batches, None)
                if nxt is not None:
                    submit(nxt)
                for item in zip(batch, images, masks, strict=True):
                    yield item
        finally:
            for _, task in window:
                task.cancel()

    async def translate(self, masks: np.ndarray) -> np.ndarray:
        """Stage II alone: uint8 masks [B,H,W] (>= 128 is vessel) -> images [B,H,W,3]."""
        masks = np.ascontiguousarray(masks, dtype=np.uint8)
        (images,) = await self._call("synthmed_stage2", {"mask": masks}, ("image",))
        return images

    async def close(self) -> None:
        """Close every connection."""
        for client in self._clients:
            await client.close()

    async def __aenter__(self) -> AsyncSynthMedClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
