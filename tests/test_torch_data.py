"""torch datasets without a server: WrittenDataset over datasets `synthmed generate` really
wrote (in-process generator), TritonStream's checks and split, and a torch-free client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from synthmed.client.cli import BUNDLED_REPOSITORY
from synthmed.client.dataset import FORMATS
from synthmed.client.shards import SHARD_DIR, WEBDATASET
from synthmed.client.torch_data import READERS, SampleIndexError, TritonStream, WrittenDataset
from synthmed.errors import DataError, UserInputError
from tests.conftest import DEMO_SIZE, run_cli

COUNT, SEED = 6, 11
ALL_FORMATS = (*FORMATS, WEBDATASET)
SHARDS = ["--shard-size", "4"]  # two shards, the second one short


@pytest.fixture(scope="module")
def reference() -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Samples 0..COUNT-1 of SEED straight from the in-process generator."""
    from synthmed.serving.runtime import InProcessRuntime

    return list(InProcessRuntime(BUNDLED_REPOSITORY).generate(COUNT, seed=SEED))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same samples as `synthmed generate` writes them, in each folder format."""
    folders = {}
    for fmt in ALL_FORMATS:
        out = tmp_path_factory.mktemp(fmt) / "ds"
        extra = SHARDS if fmt == WEBDATASET else []
        result = run_cli(
            "generate", "--count", COUNT, "--seed", SEED, "--out", out, "--format", fmt, *extra
        )
        assert result.exit_code == 0, result.output
        folders[fmt] = out
    return folders


def copy_of(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_every_format_generate_writes_has_a_reader() -> None:
    assert set(ALL_FORMATS) <= set(READERS)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_item_i_is_sample_i(written: dict[str, Path], reference, fmt: str) -> None:
    dataset = WrittenDataset(written[fmt])
    assert len(dataset) == COUNT
    assert (dataset.run["seed"], dataset.run["format"]) == (SEED, fmt)
    items = list(dataset)  # the sequence protocol: ends at the first SampleIndexError
    assert [item["index"] for item in items] == list(range(COUNT))
    for item, (index, image, mask) in zip(items, reference, strict=True):
        assert item["image"].dtype == item["mask"].dtype == torch.uint8
        assert item["image"].shape == (DEMO_SIZE, DEMO_SIZE, 3)
        assert item["mask"].shape == (DEMO_SIZE, DEMO_SIZE)
        np.testing.assert_array_equal(item["image"].numpy(), image, err_msg=str(index))
        np.testing.assert_array_equal(item["mask"].numpy(), mask, err_msg=str(index))
    assert dataset[np.int64(3)]["index"] == dataset[torch.tensor(3)]["index"] == 3


@pytest.mark.parametrize("fmt", ["png", WEBDATASET])
def test_shuffled_by_dataloader_workers(written: dict[str, Path], reference, fmt: str) -> None:
    loader = DataLoader(
        WrittenDataset(written[fmt]),
        batch_size=4,
        shuffle=True,
        num_workers=2,
        generator=torch.Generator().manual_seed(0),
    )
    batches = list(loader)
    indices = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(indices) == list(range(COUNT)) and indices != sorted(indices)
    images = torch.cat([b["image"] for b in batches]).numpy()
    for index, image in zip(indices, images, strict=True):
        np.testing.assert_array_equal(image, reference[index][1])


def one_line(error: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_not_a_dataset(tmp_path: Path) -> None:
    for path in (tmp_path, tmp_path / "missing"):
        with pytest.raises(DataError) as e:
            WrittenDataset(path)
        one_line(e, f"{path} is not a synthmed dataset (no run.json)")


def test_index_out_of_range(written: dict[str, Path]) -> None:
    dataset = WrittenDataset(written["npz"])
    for index in (COUNT, -1):
        with pytest.raises(SampleIndexError) as e:
            dataset[index]
        assert isinstance(e.value, IndexError) and isinstance(e.value, UserInputError)
        one_line(e, f"sample index {index} is out of range", f"holds samples 0..{COUNT - 1}")


def test_an_incomplete_dataset_is_refused_naming_the_fix(written, tmp_path: Path) -> None:
    folder = copy_of(written["png"], tmp_path)
    lines = (folder / "manifest.jsonl").read_text().splitlines()
    # What a killed run leaves: some lines, the last one torn.
    (folder / "manifest.jsonl").write_text("\n".join([*lines[:4], lines[4][:20]]))
    with pytest.raises(DataError) as e:
        WrittenDataset(folder)
    one_line(e, "is incomplete: 4 of 6 samples written", "first missing: ", "--resume")


def test_an_unreadable_sample_names_its_files(written, tmp_path: Path) -> None:
    folder = copy_of(written["png"], tmp_path)
    (folder / "images" / "000002.png").write_bytes(b"not a png")
    dataset = WrittenDataset(folder)
    assert dataset[1]["index"] == 1
    with pytest.raises(DataError) as e:
        dataset[2]
    one_line(e, "cannot read sample 2", "images/000002.png")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "tiff"}, "no reader for format 'tiff' (readable: png, npz"),
        ({"count": "6"}, "run.json: count must be a positive integer, got '6'"),
    ],
)
def test_a_bad_run_file(written, tmp_path: Path, change: dict, message: str) -> None:
    folder = copy_of(written["npz"], tmp_path)
    run = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**run, **change}))
    with pytest.raises(DataError) as e:
        WrittenDataset(folder)
    one_line(e, message)


def test_a_run_file_without_its_manifest(written, tmp_path: Path) -> None:
    folder = copy_of(written["png"], tmp_path)
    (folder / "manifest.jsonl").unlink()
    with pytest.raises(DataError) as e:
        WrittenDataset(folder)
    one_line(e, f"{folder} has no manifest.jsonl: not a synthmed dataset")


# --- TritonStream, before any server is asked ----------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "count must be an integer >= 1, got 0"),
        ({"count": 4, "seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"count": 4, "rank": 2, "world_size": 2}, "rank must be < world_size, got rank 2 of 2"),
        ({"count": 4, "world_size": 0}, "world_size must be an integer >= 1, got 0"),
        ({"count": 4, "max_in_flight": 0}, "max_in_flight must be an integer >= 1, got 0"),
        ({"count": 4, "urls": "nohost"}, "malformed server URL 'nohost'"),
    ],
)
def test_stream_arguments_are_checked_at_construction(kwargs: dict, message: str) -> None:
    # Port 9 (discard) has no Triton: nothing is asked until iteration.
    kwargs = {"urls": "127.0.0.1:9", **kwargs}
    with pytest.raises(UserInputError) as e:
        TritonStream(kwargs.pop("urls"), **kwargs)
    one_line(e, message)


@pytest.mark.parametrize(("count", "world"), [(24, 2), (10, 3), (2, 4)])
def test_ranks_share_the_indices_disjointly(count: int, world: int) -> None:
    shares = [
        TritonStream("127.0.0.1:9", count=count, rank=r, world_size=world) for r in range(world)
    ]
    indices = [i for share in shares for i in share.indices()]
    assert sorted(indices) == list(range(count))
    assert sum(len(share) for share in shares) == count
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_the_client_imports_no_torch() -> None:
    code = (
        "import sys, synthmed.client, synthmed.client.cli, synthmed.client.dataset; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_an_incomplete_sharded_dataset_is_refused_naming_the_fix(written, tmp_path: Path) -> None:
    copy = copy_of(written[WEBDATASET], tmp_path)
    (copy / SHARD_DIR / "000001.json").unlink()  # as if the run died while publishing it
    with pytest.raises(DataError) as error:
        WrittenDataset(copy)
    one_line(error, "incomplete", "1 of 2 shards", "first missing sample: 4", "--resume")
