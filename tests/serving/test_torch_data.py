"""TritonStream against the real tritonserver: 2 gloo ranks x 2 DataLoader workers yield every
index once, with the pixels `synthmed generate` writes for the same seed."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.client.errors import ServerUnavailableError
from synthmed.client.torch_data import TritonStream, WrittenDataset
from synthmed.errors import InvalidRequestError
from tests.conftest import run_cli
from tests.serving.conftest import free_ports

pytestmark = pytest.mark.server

COUNT, SEED = 24, 7

# One rank: torch.distributed (gloo) tells the stream its rank; two DataLoader workers each
# open their own connection. It saves what its loader yielded.
RANK = """
import sys
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from synthmed.client.torch_data import TritonStream

torch.set_num_threads(1)
url, port, rank, count, seed, out = sys.argv[1:]
dist.init_process_group(
    "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=int(rank), world_size=2
)
stream = TritonStream(url, count=int(count), seed=int(seed), batch_size=3, max_in_flight=2)
batches = list(DataLoader(stream, batch_size=4, num_workers=2))
np.savez(
    out,
    length=len(stream),
    index=torch.cat([b["index"] for b in batches]).numpy(),
    image=torch.cat([b["image"] for b in batches]).numpy(),
    mask=torch.cat([b["mask"] for b in batches]).numpy(),
)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def generated(demo_server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`synthmed generate --seed SEED` through the server: the samples to compare with."""
    out = tmp_path_factory.mktemp("generated") / "png"
    url = demo_server.url("grpc")
    result = run_cli("generate", "--count", COUNT, "--seed", SEED, "--out", out, "--url", url)
    assert result.exit_code == 0, result.output
    return out


def written_pixels(folder: Path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Sample index -> (image, mask) decoded from the files the manifest lists."""
    entries = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    return {
        e["index"]: (
            np.asarray(Image.open(folder / e["image"])),
            np.asarray(Image.open(folder / e["mask"])),
        )
        for e in entries
    }


def test_two_gloo_ranks_with_two_workers_each_yield_every_index_once(
    demo_server, generated: Path, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RANK,
                demo_server.url("grpc"),
                str(port),
                str(rank),
                str(COUNT),
                str(SEED),
                str(tmp_path / f"rank{rank}.npz"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    for process in ranks:
        output, _ = process.communicate(timeout=180)
        assert process.returncode == 0, output
    got = [np.load(tmp_path / f"rank{rank}.npz") for rank in range(2)]
    assert [int(g["length"]) for g in got] == [COUNT // 2] * 2
    indices = np.concatenate([g["index"] for g in got])
    assert sorted(indices.tolist()) == list(range(COUNT))  # each index exactly once
    assert set(got[0]["index"].tolist()) == set(range(0, COUNT, 2))  # the rank came from gloo
    expected = written_pixels(generated)
    for g in got:
        for index, image, mask in zip(g["index"], g["image"], g["mask"], strict=True):
            np.testing.assert_array_equal(image, expected[index][0], err_msg=str(index))
            np.testing.assert_array_equal(mask, expected[index][1], err_msg=str(index))


def test_rank_arguments_override_and_the_stream_pickles(demo_server, generated: Path) -> None:
    stream = TritonStream(demo_server.url("grpc"), count=10, seed=SEED, rank=1, world_size=3)
    copy = pickle.loads(pickle.dumps(stream))  # what a spawned DataLoader worker receives
    items, copied = list(stream), list(copy)
    assert [item["index"] for item in items] == [1, 4, 7] == [item["index"] for item in copied]
    reader = WrittenDataset(generated)  # the written dataset, read back: the same samples
    for item, again in zip(items, copied, strict=True):
        assert item["image"].is_contiguous() and item["image"].numpy().flags.writeable
        for key in ("image", "mask"):
            np.testing.assert_array_equal(item[key].numpy(), again[key].numpy())
            np.testing.assert_array_equal(item[key].numpy(), reader[item["index"]][key].numpy())
    whole = TritonStream(demo_server.url("http"), protocol="http", count=3, seed=SEED)
    assert [item["index"] for item in whole] == [0, 1, 2]  # no torch.distributed: all of it


def test_a_stream_longer_than_a_chunk_is_seamless(
    demo_server, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import synthmed.client.torch_data as torch_data

    monkeypatch.setattr(torch_data, "STREAM_CHUNK", 4)
    items = list(TritonStream(demo_server.url("grpc"), count=10, seed=SEED, batch_size=3))
    assert [item["index"] for item in items] == list(range(10))
    reader = WrittenDataset(generated)
    for item in items:
        np.testing.assert_array_equal(item["image"].numpy(), reader[item["index"]]["image"].numpy())


def test_server_problems_surface_when_iteration_starts(demo_server) -> None:
    (port,) = free_ports(1)
    nobody = TritonStream(f"127.0.0.1:{port}", count=2, retries=0)  # no connection yet
    with pytest.raises(ServerUnavailableError) as e:
        next(iter(nobody))
    assert "\n" not in str(e.value) and f"127.0.0.1:{port}" in str(e.value)
    labelled = TritonStream(demo_server.url("grpc"), count=2, label=1)
    with pytest.raises(InvalidRequestError) as e:
        next(iter(labelled))
    assert "\n" not in str(e.value)
