"""Timing: call a batch function from N threads for a while, and summarise rate and latency."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from synthmed.client import SynthMedClient


@dataclass
class Measurement:
    """One path at one batch size and concurrency."""

    models: str
    path: str
    batch: int
    concurrency: int
    seconds: float
    requests: int
    failures: int
    latencies_ms: list[float] = field(repr=False)
    errors: list[str] = field(default_factory=list, repr=False)

    @property
    def images_per_s(self) -> float:
        """Images completed per wall-clock second across all threads."""
        done = self.requests - self.failures
        return done * self.batch / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        """Latency percentile of one request (one call of `batch` images)."""
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def summary(self) -> dict:
        """JSON-ready figures (raw latencies left out)."""
        data = asdict(self)
        data.pop("latencies_ms")
        data["errors"] = self.errors[:5]
        return {
            **data,
            "images_per_s": self.images_per_s,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
        }


def measure(
    models: str,
    path: str,
    make_call: Callable[[], Callable[[int], object]],
    batch: int,
    *,
    concurrency: int = 1,
    seconds: float = 3.0,
    min_calls: int = 3,
) -> Measurement:
    """Run `call(i)` (i counts calls in a thread) from `concurrency` threads until `seconds`
    passed and each thread made `min_calls`; one untimed warm-up call per thread first.

    `make_call` runs once per thread, so each thread may own its client. A call that raises
    counts as a failed request (its message is kept) and the thread goes on.
    """
    calls = [make_call() for _ in range(concurrency)]
    for call in calls:
        call(0)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def worker(call: Callable[[int], object]) -> None:
        barrier.wait()
        i, deadline = 1, time.perf_counter() + seconds
        while i <= min_calls or time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                call(i)
                error = None
            except Exception as e:  # a failed request is a result here, not a crash
                error = f"{type(e).__name__}: {e}"
            elapsed = (time.perf_counter() - start) * 1e3
            with lock:
                if error is None:
                    latencies.append(elapsed)
                else:
                    errors.append(error)
            i += 1

    threads = [threading.Thread(target=worker, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return Measurement(
        models,
        path,
        batch,
        concurrency,
        wall,
        len(latencies) + len(errors),
        len(errors),
        latencies,
        errors,
    )


def report(m: Measurement) -> Measurement:
    """Print one measurement as a line, as soon as it is taken (the benchmark's progress)."""
    print(
        f"  {m.path:36s} batch {m.batch:3d} x{m.concurrency:<3d} {m.images_per_s:8.2f} img/s"
        f"  p50 {m.percentile_ms(50):8.1f} ms  p99 {m.percentile_ms(99):8.1f} ms"
        + (f"  {m.failures} failed" if m.failures else ""),
        flush=True,
    )
    return m


def triton_request(url: str, model: str, batch: int) -> Callable[[], Callable[[int], object]]:
    """For `measure`: a client per thread whose every call is one request of `batch` samples
    (fresh latents each time, drawn by the client as in `synthmed generate`)."""

    def make() -> Callable[[int], object]:
        client = SynthMedClient(url, model=model, max_in_flight=1)
        return lambda i: list(client.generate(batch, seed=i, batch_size=batch))

    return make
