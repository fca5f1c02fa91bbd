"""AsyncSynthMedClient: the same reproducible generation, for asyncio programs.

Built on tritonclient's native asyncio clients (`tritonclient.grpc.aio`, `tritonclient.http.aio`)
rather than threads: one event loop keeps `max_in_flight` requests per server in flight, and
results still come back in index order, equal to the synchronous client's. Settings, argument
checks, the retry policy, error mapping and the contract check are the synchronous client's
(`synthmed.client.core`, `synthmed.sampling.plan`); only the waiting differs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Sequence

import numpy as np

from synthmed.client import core
from synthmed.client.contract import config_dict, is_conditional, to_dict
from synthmed.contract import Contract, Provenance
from synthmed.sampling import Plan, Request, Sample, Sampler


class AsyncSynthMedClient(core.ClientBase, Sampler):
    """Use as `async with AsyncSynthMedClient(urls) as client:`; `connect()` checks servers.
    Settings as for `SynthMedClient` (`core.ClientBase`); `sleep` is a coroutine function."""

    default_sleep = staticmethod(asyncio.sleep)

    def __init__(self, urls: str | Sequence[str], **settings: object) -> None:
        super().__init__(urls, **settings)
        self._clients: dict[int, object] = {}
        self._slots: list[asyncio.Semaphore] = []  # made by connect(), in the running loop
        self.contract: Contract | None = None

    # --- transport -----------------------------------------------------------------------
    def _client(self, server: int) -> object:
        if server not in self._clients:
            self._clients[server] = self.settings.connect(server, aio=True)
        return self._clients[server]

    async def _drop(self, server: int) -> None:
        """Forget the connection to `server`, so the next try reconnects."""
        client = self._clients.pop(server, None)
        if client is not None:
            await client.close()

    async def _ask(self, server: int, call: str, *args: object) -> object:
        return await getattr(self._client(server), call)(*args, **self.settings.call_timeout())

    async def connect(self) -> Contract:
        """Every server is live and serves the model with synthmed's contract, the same on
        every server; returns that contract."""
        self._slots = [asyncio.Semaphore(self.settings.max_in_flight) for _ in self.urls]
        contracts = []
        for server, url in enumerate(self.urls):
            try:
                live = await self._ask(server, "is_server_live")
                ready = live and await self._ask(server, "is_model_ready", self.model)
                metadata = None
                if ready:
                    metadata = to_dict(await self._ask(server, "get_model_metadata", self.model))
                config = None
                if metadata and is_conditional(metadata):
                    config = config_dict(await self._ask(server, "get_model_config", self.model))
            except Exception as e:  # tritonclient raises several types for a dead server
                if not core.is_transient(e):
                    raise core.refused(e, url, self.model) from e
                await self._drop(server)
                raise core.unreachable(url, e) from e
            contracts.append(
                core.server_contract(self.settings, server, live, ready, metadata, config)
            )
        self.contract = core.same_contract(self.settings, contracts)
        return self.contract

    async def _call(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> list[np.ndarray]:
        """One request on the next server with a free slot; transient failures retried."""
        error: BaseException | None = None
        module = self.settings.module(aio=True)
        for wait in self.settings.retry.waits(self._rng):
            if wait:
                await self._sleep(wait)
            server = self._next_server()
            async with self._slots[server]:
                tensors, requested = core.request_tensors(module, inputs, outputs)
                try:
                    result = await self._client(server).infer(
                        model, tensors, outputs=requested, **self.settings.call_timeout()
                    )
                    return [result.as_numpy(o) for o in outputs]
                except Exception as e:
                    if not core.is_transient(e):
                        raise core.refused(e, self.urls[server], model) from e
                    error = e
                    await self._drop(server)
        raise core.exhausted(self.urls, self.settings.retry.tries, error) from error

    # --- the generation interface (synthmed.sampling.Sampler's generate/generate_indices) ---
    def _start(self, request: Request) -> AsyncIterator[Sample]:
        """Check the request now if `connect()` ran, else right after it runs: either way
        before the first inference request."""
        checked = request.plan(self.contract) if self.contract is not None else None
        return self._generate(checked, request)

    async def _generate(self, checked: Plan | None, request: Request) -> AsyncIterator[Sample]:
        if checked is None:
            checked = request.plan(await self.connect())
        batches = checked.batches()
        window: deque[tuple[list[int], asyncio.Task]] = deque()

        def submit(batch: list[int]) -> None:
            inputs = checked.inputs(batch)
            task = asyncio.create_task(self._call(self.model, inputs, core.OUTPUTS))
            window.append((batch, task))

        for batch in itertools.islice(batches, 2 * len(self.urls) * self.settings.max_in_flight):
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

    async def provenance(self) -> list[Provenance]:
        """Source runs of the served model, or of each step of an ensemble."""
        config = config_dict(await self._ask(0, "get_model_config", self.model))
        steps = core.ensemble_steps(config)
        configs = [config_dict(await self._ask(0, "get_model_config", m)) for m in steps]
        return core.provenance_of(configs or [config])

    async def translate(self, masks: np.ndarray, *, seed: int = 0, start: int = 0) -> np.ndarray:
        """Stage II alone: uint8 masks [B,H,W] (>= 128 is vessel) -> images [B,H,W,3]. Mask k
        takes the texture noise of sample start + k of seed `seed`: the ensemble's own masks
        of those samples come back as its images."""
        model, inputs, outputs = core.translate_inputs(masks, self.contract.nz, seed, start)
        (images,) = await self._call(model, inputs, outputs)
        return images

    async def close(self) -> None:
        """Close every connection."""
        for server in list(self._clients):
            await self._drop(server)

    async def __aenter__(self) -> AsyncSynthMedClient:
        try:
            await self.connect()
        except BaseException:
            await self.close()  # no connection left open behind a failed check
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
