"""`synthmed generate` end to end: through the real server, killed and resumed, server lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.serving.server import TritonServer
from tests.conftest import DEMO_SIZE, assert_one_line_error, run_cli
from tests.serving.conftest import REPO_ROOT, free_ports

pytestmark = pytest.mark.server


def _manifest(out: Path) -> list[dict]:
    lines = (
        (out / "manifest.jsonl").read_text().splitlines()
        if (out / "manifest.jsonl").exists()
        else []
    )
    return [json.loads(line) for line in lines if line.endswith("}")]


def _assert_complete(out: Path, count: int) -> None:
    entries = _manifest(out)
    assert sorted(e["index"] for e in entries) == list(range(count))  # no hole, no duplicate
    for e in entries:
        assert Image.open(out / e["image"]).convert("RGB").size == (DEMO_SIZE, DEMO_SIZE)
        assert Image.open(out / e["mask"]).size == (DEMO_SIZE, DEMO_SIZE)


def _generate(out: Path, url: str, count: int, *extra: str) -> subprocess.Popen:
    options = ["--count", str(count), "--out", str(out), "--url", url]
    command = [sys.executable, "-m", "synthmed", "generate", *options, "--batch-size", "2", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_entries(out: Path, n: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while len(_manifest(out)) < n:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_through_triton_equals_in_process(demo_server, tmp_path: Path) -> None:
    served, local = tmp_path / "served", tmp_path / "local"
    assert (
        run_cli(
            "generate",
            "--count",
            40,
            "--out",
            served,
            "--url",
            demo_server.url("grpc"),
            "--seed",
            5,
        ).exit_code
        == 0
    )
    assert run_cli("generate", "--count", 40, "--out", local, "--seed", 5).exit_code == 0
    for kind in ("images", "masks"):
        for name in sorted(os.listdir(served / kind)):
            a, b = Image.open(served / kind / name), Image.open(local / kind / name)
            assert np.array_equal(np.asarray(a), np.asarray(b)), name
    card = (served / "DATASET_CARD.md").read_text()
    assert "SYNTHETIC" in card and "synthmed data phantom" in card
    assert _manifest(served)[0]["weights_sha256"]["stage1"]


def test_webdataset_through_triton_equals_in_process(demo_server, tmp_path: Path) -> None:
    from synthmed.client.torch_data import WrittenDataset

    served, local = tmp_path / "served", tmp_path / "local"
    url = demo_server.url("grpc")
    result = run_cli(
        "generate", "--count", 40, "--out", served, "--url", url, "--seed", 5,
        "--format", "webdataset", "--shard-size", 16,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert run_cli("generate", "--count", 40, "--out", local, "--seed", 5).exit_code == 0
    assert run_cli("dataset", "verify", served, "--quiet").exit_code == 0
    shards, folder = WrittenDataset(served), WrittenDataset(local)
    assert len(shards) == len(folder) == 40
    for i in range(40):
        for field in ("image", "mask"):
            assert np.array_equal(shards[i][field].numpy(), folder[i][field].numpy()), (i, field)
    run = json.loads((served / "run.json").read_text())
    assert run["generator"]["servers"] == [url] and run["format"] == "webdataset"


def test_sigkill_then_resume_gives_exactly_n_entries(demo_server, tmp_path: Path) -> None:
    out, count = tmp_path / "ds", 300
    process = _generate(out, demo_server.url("grpc"), count)
    _wait_for_entries(out, 20, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(_manifest(out)) < count
    again = run_cli("generate", "--count", count, "--out", out, "--url", demo_server.url("grpc"))
    assert_one_line_error(again, "not empty", "--resume")
    resumed = run_cli(
        "generate", "--count", count, "--out", out, "--url", demo_server.url("grpc"), "--resume"
    )
    assert resumed.exit_code == 0, resumed.output
    _assert_complete(out, count)


def test_server_lost_mid_run_then_resume_after_it_is_back(tmp_path: Path) -> None:
    http, grpc, metrics = free_ports()
    repo = REPO_ROOT / "model_repository"
    server = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics)
    server.start()
    out, count = tmp_path / "ds", 400
    try:
        process = _generate(out, server.url("grpc"), count)
        _wait_for_entries(out, 20, process)
        server.stop()
        _, stderr = process.communicate(timeout=120)
    finally:
        server.stop()
    assert process.returncode != 0
    last = [line for line in stderr.splitlines() if line.strip()][-1].split("\r")[-1]
    assert last.startswith("Error: ") and "tries" in last, last
    with TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics) as back:
        resumed = run_cli(
            "generate", "--count", count, "--out", out, "--url", back.url("grpc"), "--resume"
        )
    assert resumed.exit_code == 0, resumed.output
    _assert_complete(out, count)


def test_bad_input(tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli("generate", "--count", 0, "--out", tmp_path / "a"), "--count must be >= 1, got 0"
    )
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    assert_one_line_error(run_cli("generate", "--count", 2, "--out", blocker / "out"), "file.txt")
    full = tmp_path / "full"
    full.mkdir()
    (full / "other.txt").write_text("x")
    assert_one_line_error(run_cli("generate", "--count", 2, "--out", full), "not empty")
    assert_one_line_error(
        run_cli("generate", "--count", 2, "--out", tmp_path / "b", "--url", "nohost"),
        "malformed server URL",
    )
