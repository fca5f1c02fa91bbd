"""SynthMedClient: reproducible labelled samples from one or more Triton servers.

It serves both model families: the dual-GAN ensemble (z -> image, mask) and a
class-conditional model (z, class, truncation -> image, mask), told apart by the served
inputs. It is a `synthmed.sampling.Generator`, like the in-process runtimes: sample `i` of seed
`s` comes from `latent(s, i)`, so the result is the same whatever the batch size, the
concurrency, the number of servers or the resume point. Batches are spread over the servers,
at most `max_in_flight` at a time on each; a transient failure is retried with capped,
jittered backoff on the next server (see `synthmed.client.core`, shared with the asyncio
client). Needs numpy and tritonclient only.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from synthmed.client import core
from synthmed.client.contract import config_dict, is_conditional, to_dict
from synthmed.contract import Contract, Provenance
from synthmed.sampling import Generator, Plan, Sample


class SynthMedClient(core.ClientBase, Generator):
    """Synchronous client over one or more Triton servers serving the `synthmed` ensemble or a
    class-conditional model (`model="synthmed_cstylegan2"`); settings in `core.ClientBase`.
    The servers are checked on construction."""

    default_sleep = staticmethod(time.sleep)

    def __init__(self, urls: str | Sequence[str], **settings: object) -> None:
        super().__init__(urls, **settings)
        self._local = threading.local()
        self._slots = [threading.Semaphore(self.settings.max_in_flight) for _ in self.urls]
        self.contract = self.check()

    # --- transport -----------------------------------------------------------------------
    def _client(self, server: int) -> object:
        """One tritonclient object per thread and server (the HTTP client is not thread-safe)."""
        clients = self._local.__dict__.setdefault("clients", {})
        if server not in clients:
            clients[server] = self.settings.connect(server, aio=False)
        return clients[server]

    def _drop(self, server: int) -> None:
        """Forget this thread's connection to `server`, so the next try reconnects."""
        client = self._local.__dict__.get("clients", {}).pop(server, None)
        if client is not None:
            client.close()

    def _ask(self, server: int, call: str, *args: object) -> object:
        """One metadata call on one server, bounded by timeout_s."""
        return getattr(self._client(server), call)(*args, **self.settings.call_timeout())

    def check(self) -> Contract:
        """Every server is live and serves the model with synthmed's contract, the same on
        every server; returns that contract."""
        contracts = []
        for server, url in enumerate(self.urls):
            try:
                live = self._ask(server, "is_server_live")
                ready = live and self._ask(server, "is_model_ready", self.model)
                metadata = (
                    to_dict(self._ask(server, "get_model_metadata", self.model)) if ready else None
                )
                config = (
                    config_dict(self._ask(server, "get_model_config", self.model))
                    if metadata and is_conditional(metadata)
                    else None
                )
            except Exception as e:  # tritonclient raises several types for a dead server
                if not core.is_transient(e):
                    raise core.refused(e, url, self.model) from e
                self._drop(server)
                raise core.unreachable(url, e) from e
            contracts.append(
                core.server_contract(self.settings, server, live, ready, metadata, config)
            )
        return core.same_contract(self.settings, contracts)

    def _call(
        self, model: str, inputs: dict[str, np.ndarray], outputs: Sequence[str]
    ) -> list[np.ndarray]:
        """One request, on the next server with a free slot; transient failures retried."""
        error: BaseException | None = None
        for wait in self.settings.retry.waits(self._rng):
            if wait:
                self._sleep(wait)
            server = self._next_server()
            with self._slots[server]:
                tensors, requested = core.request_tensors(
                    self.settings.module(aio=False), inputs, outputs
                )
                try:
                    result = self._client(server).infer(
                        model, tensors, outputs=requested, **self.settings.call_timeout()
                    )
                    return [result.as_numpy(o) for o in outputs]
                except Exception as e:
                    if not core.is_transient(e):
                        raise core.refused(e, self.urls[server], model) from e
                    error = e
                    self._drop(server)
        raise core.exhausted(self.urls, self.settings.retry.tries, error) from error

    # --- the generation interface --------------------------------------------------------
    def run_batch(self, inputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One request of the served model: request tensors -> (images, masks)."""
        images, masks = self._call(self.model, inputs, core.OUTPUTS)
        return images, masks

    def _generate(self, plan: Plan) -> Iterator[Sample]:
        """Keep every server's slots busy while yielding results in index order."""
        batches = plan.batches()
        workers = len(self.urls) * self.settings.max_in_flight
        with ThreadPoolExecutor(max_workers=workers) as pool:
            window: deque[tuple[list[int], Future]] = deque()

            def submit(batch: list[int]) -> None:
                window.append((batch, pool.submit(self.run_batch, plan.inputs(batch))))

            for batch in itertools.islice(batches, 2 * workers):
                submit(batch)
            try:
                while window:
                    batch, future = window.popleft()
                    images, masks = future.result()
                    nxt = next(batches, None)
                    if nxt is not None:
                        submit(nxt)
                    yield from zip(batch, images, masks, strict=True)
            finally:
                for _, future in window:
                    future.cancel()

    def provenance(self) -> list[Provenance]:
        """Source runs (role, weights hash, step, training data) of the served model, or of each
        step of an ensemble, as the repository writer recorded them."""
        config = config_dict(self._ask(0, "get_model_config", self.model))
        steps = core.ensemble_steps(config)
        configs = [config_dict(self._ask(0, "get_model_config", m)) for m in steps] or [config]
        return core.provenance_of(configs)

    def location(self) -> dict:
        """The servers it asks."""
        return {"servers": list(self.urls)}

    def translate(self, masks: np.ndarray, *, seed: int = 0, start: int = 0) -> np.ndarray:
        """Stage II alone: uint8 masks [B,H,W] (>= 128 is vessel) -> images [B,H,W,3]. Mask k
        takes the texture noise of sample start + k of seed `seed`: the ensemble's own masks
        of those samples come back as its images."""
        model, inputs, outputs = core.translate_inputs(masks, self.contract.nz, seed, start)
        (images,) = self._call(model, inputs, outputs)
        return images

    def close(self) -> None:
        """Close this thread's connections."""
        for client in self._local.__dict__.pop("clients", {}).values():
            client.close()

    def __enter__(self) -> SynthMedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
