"""The bundled demo repository on the real tritonserver: the ensemble, its errors, batching."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from synthmed.latents import latents
from synthmed.serving.runtime import InProcessRuntime
from tests.conftest import DEMO_SIZE, assert_one_line_error, run_cli
from tests.serving.conftest import REPO_ROOT, free_ports

pytestmark = pytest.mark.server


def _client(server) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(server.url("grpc"))


def _infer(client, z: np.ndarray, model: str = "synthmed", dtype: str = "FP32"):
    tensor = grpcclient.InferInput("z", list(z.shape), dtype)
    tensor.set_data_from_numpy(z)
    outputs = [grpcclient.InferRequestedOutput("image"), grpcclient.InferRequestedOutput("mask")]
    result = client.infer(model, [tensor], outputs=outputs)
    return result.as_numpy("image"), result.as_numpy("mask")


def test_ensemble_equals_the_in_process_runtime(demo_server) -> None:
    z = latents(11, range(6), 100)
    images, masks = _infer(_client(demo_server), z)
    assert images.dtype == np.uint8 and images.shape == (6, DEMO_SIZE, DEMO_SIZE, 3)
    assert masks.dtype == np.uint8 and masks.shape == (6, DEMO_SIZE, DEMO_SIZE)
    ref_images, ref_masks = InProcessRuntime(REPO_ROOT / "model_repository").run(z)
    assert np.array_equal(masks, ref_masks)
    assert np.array_equal(images, ref_images)  # same graphs, same onnxruntime: bit for bit


@pytest.mark.parametrize(
    ("z", "model", "dtype", "message"),
    [
        (np.zeros((2, 100), np.float64), "synthmed", "FP64", "data-type"),
        (np.zeros((2, 99), np.float32), "synthmed", "FP32", "shape"),
        (np.zeros((33, 100), np.float32), "synthmed", "FP32", "batch"),
        (np.zeros((2, 100), np.float32), "no_such_model", "FP32", "no_such_model"),
    ],
    ids=["dtype", "shape", "batch-over-max", "unknown-model"],
)
def test_bad_requests_get_tritons_error_and_the_server_keeps_serving(
    demo_server, z: np.ndarray, model: str, dtype: str, message: str
) -> None:
    client = _client(demo_server)
    with pytest.raises(InferenceServerException, match=message):
        _infer(client, z, model=model, dtype=dtype)
    images, _ = _infer(client, latents(0, range(1), 100))
    assert images.shape == (1, DEMO_SIZE, DEMO_SIZE, 3)


def _batched_executions(server) -> dict[int, int]:
    """Stage II's executions by batch size so far (warm-up included)."""
    stats = _client(server).get_inference_statistics("synthmed_stage2", as_json=True)
    batches = stats["model_stats"][0]["batch_stats"]
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in batches}


def test_concurrent_requests_are_batched(demo_server) -> None:
    before = _batched_executions(demo_server)  # warm-up has already run batches of 1 and max

    def worker(k: int) -> None:
        client = _client(demo_server)
        for i in range(6):
            _infer(client, latents(k, range(i, i + 1), 100))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = _batched_executions(demo_server)
    grew = {size for size, count in after.items() if count > before.get(size, 0)}
    assert max(grew) > 1, (before, after)


def test_serve_refuses_missing_repository_and_taken_port(tmp_path: Path) -> None:
    missing = run_cli("serve", "--model-repository", tmp_path / "nope")
    assert_one_line_error(missing, "nope")
    http, grpc, metrics = free_ports()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", http))
        taken.listen()
        result = run_cli(
            "serve", "--model-repository", REPO_ROOT / "model_repository",
            "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics,
        )  # fmt: skip
    assert_one_line_error(result, f"http port {http}", "already in use")


def test_serve_refuses_a_broken_model(tmp_path: Path) -> None:
    # No model.py: the python backend's stub never starts and Triton waits for it, so this
    # ends at --startup-timeout with the reason Triton logged.
    repo = tmp_path / "repo"
    (repo / "synthmed_stage1" / "1").mkdir(parents=True)
    (repo / "synthmed_stage1" / "config.pbtxt").write_text(
        'name: "synthmed_stage1"\nbackend: "python"\nmax_batch_size: 4\n'
    )
    http, grpc, metrics = free_ports()
    result = run_cli(
        "serve", "--model-repository", repo,
        "--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics,
        "--startup-timeout", "10",
    )  # fmt: skip
    assert result.exit_code != 0
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("Error: ") and "synthmed_stage1" in last, last
    assert "model file not found" in last, last
