"""DatasetWriter: files round-trip, resume after a crash or a real SIGKILL, one-line refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmed.client.dataset import DatasetWriter, RunInfo
from synthmed.errors import SynthmedError, UserInputError

GENERATOR = {
    "model": "retina-demo",
    "model_version": "1",
    "weights_sha256": {"mask": "a" * 64, "image": "b" * 64},
    "image_size": 16,
}


def run_info(count: int = 12, fmt: str = "png", seed: int = 1) -> RunInfo:
    return RunInfo(
        seed=seed,
        count=count,
        format=fmt,
        generator=GENERATOR,
        trained_on="DRIVE (40 fundus photographs)",
        command=f"synthmed generate OUT --count {count} --seed {seed} --format {fmt}",
    )


def sample(index: int, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = np.where(rng.random((size, size)) > 0.5, 255, 0).astype(np.uint8)
    return image, mask


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def write(out: Path, run: RunInfo, indices, **kwargs) -> DatasetWriter:
    with DatasetWriter(out, run, **kwargs) as writer:
        for i in indices:
            writer.submit(i, *sample(i))
    return writer


def assert_complete(out: Path, count: int, fmt: str = "png") -> None:
    """Exactly `count` unique manifest entries, every listed file decodes to its sample."""
    entries = manifest(out)
    assert sorted(e["index"] for e in entries) == list(range(count))
    for e in entries:
        image, mask = sample(e["index"])
        if fmt == "npz":
            with np.load(out / e["file"]) as z:
                got_image, got_mask = z["image"], z["mask"]
        else:
            got_image = np.asarray(Image.open(out / e["image"]))
            got_mask = np.asarray(Image.open(out / e["mask"]))
        np.testing.assert_array_equal(got_image, image)
        np.testing.assert_array_equal(got_mask, mask)


@pytest.mark.parametrize("fmt", ["png", "npz"])
def test_writes_every_sample_and_the_run_files(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / "out"
    write(out, run_info(12, fmt, seed=4242), range(12), workers=2)
    assert_complete(out, 12, fmt)
    entry = manifest(out)[0]
    assert entry["seed"] == 4242 and entry["model"] == "retina-demo"
    assert "label" not in entry  # only a class-conditional run has one
    assert entry["weights_sha256"] == GENERATOR["weights_sha256"]
    if fmt == "png":
        assert entry["image"] == f"images/{entry['index']:06d}.png"
        assert Image.open(out / entry["mask"]).mode == "L"
    else:
        assert entry["file"] == f"samples/{entry['index']:06d}.npz"
    run = json.loads((out / "run.json").read_text())
    assert (run["seed"], run["format"], run["count"]) == (4242, fmt, 12)
    assert run["generator"] == GENERATOR
    card = (out / "DATASET_CARD.md").read_text()
    assert "synthetic" in card.lower().split("\n\n")[1]  # the notice comes first
    assert "diagnosis" in card and "4242" in card and "a" * 64 in card
    assert "DRIVE" in card and "synthmed generate OUT" in card
    assert not [p for p in out.rglob(".*") if p.name.endswith(".tmp")]


def test_submit_validates_and_ignores_duplicates(tmp_path: Path) -> None:
    image, mask = sample(0)
    with DatasetWriter(tmp_path / "out", run_info(3), workers=1) as writer:
        with pytest.raises(ValueError, match="image must be"):
            writer.submit(0, image.astype(np.float32), mask)
        with pytest.raises(ValueError, match="mask must be"):
            writer.submit(0, image, mask[..., None])
        with pytest.raises(ValueError, match="does not match"):
            writer.submit(0, image, mask[:8])
        with pytest.raises(ValueError, match="outside"):
            writer.submit(3, image, mask)
        writer.submit(0, image, mask)
        writer.submit(0, image, mask)
    assert [e["index"] for e in manifest(tmp_path / "out")] == [0]
    assert writer.pending() == [1, 2]


def test_resume_after_simulated_crash(tmp_path: Path) -> None:
    out, run = tmp_path / "out", run_info(12)
    write(out, run, range(9), workers=2)
    with (out / "manifest.jsonl").open("a") as f:
        f.write('{"index": 11, "seed": 1, "ima')  # a torn last line
    (out / "images" / ".000007.png.xyz.tmp").write_bytes(b"\x89PNG half")
    (out / "images" / "000003.png").unlink()
    (out / "masks" / "000005.png").write_bytes(b"")  # left empty by a machine crash
    with DatasetWriter(out, run, resume=True, workers=2) as writer:
        assert writer.pending() == [3, 5, 9, 10, 11]
        assert writer.done == {0, 1, 2, 4, 6, 7, 8}
        assert not (out / "images" / ".000007.png.xyz.tmp").exists()
        # The manifest was rewritten with the valid entries only, before anything is appended.
        assert sorted(e["index"] for e in manifest(out)) == [0, 1, 2, 4, 6, 7, 8]
        for i in writer.pending():
            writer.submit(i, *sample(i))
    assert_complete(out, 12)
    assert "(complete)" in (out / "DATASET_CARD.md").read_text()


def test_resume_can_grow_the_count(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, run_info(4), range(4))
    writer = write(out, run_info(6), [4, 5], resume=True)
    assert writer.pending() == []
    assert_complete(out, 6)
    assert json.loads((out / "run.json").read_text())["count"] == 6


KILLED_WRITER = """
import sys, time
import numpy as np
from synthmed.client.dataset import DatasetWriter, RunInfo
sys.path.insert(0, {tests!r})
from test_dataset_writer import run_info, sample
with DatasetWriter({out!r}, run_info({count}), workers=2) as writer:
    for i in range({count}):
        writer.submit(i, *sample(i))
        time.sleep(0.02)
"""


def test_resume_after_sigkill(tmp_path: Path) -> None:
    out, count = tmp_path / "out", 200
    script = KILLED_WRITER.format(tests=str(Path(__file__).parent), out=str(out), count=count)
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            path = out / "manifest.jsonl"
            if path.exists() and path.read_bytes().count(b"\n") >= 10:
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the writer ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not (out / "DATASET_CARD.md").exists()
    with DatasetWriter(out, run_info(count), resume=True, workers=2) as writer:
        pending = writer.pending()
        assert 0 < len(pending) < count - 9
        for i in pending:
            writer.submit(i, *sample(i))
    assert_complete(out, count)


def test_force_replaces_a_previous_dataset(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, run_info(4, "png"), range(4))
    (out / ".dataset.json.x1y2.tmp").write_text("{")  # left by a crash while closing
    write(out, run_info(2, "npz"), range(2), force=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "DATASET_CARD.md",
        "manifest.jsonl",
        "run.json",
        "samples",
    ]
    assert_complete(out, 2, "npz")


def rectangle(index: int) -> tuple[np.ndarray, np.ndarray]:
    """A 12 x 20 sample: not square, so a reader that swaps height and width shows it."""
    image, mask = sample(index, 20)
    return image[:12], mask[:12]


def test_png_datalist_is_read_by_monai(tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist
    from monai.transforms import LoadImaged

    out, run = tmp_path / "out", run_info(5)
    with DatasetWriter(out, run, workers=2) as writer:
        for i in (4, 0, 3, 1):  # out of order, and sample 2 not yet
            writer.submit(i, *rectangle(i))
    datalist = json.loads((out / "dataset.json").read_text())
    assert datalist["numTraining"] == 4 and "NOT PATIENT DATA" in datalist["description"]
    assert datalist["training"][2] == {"image": "images/000003.png", "label": "masks/000003.png"}
    with DatasetWriter(out, run, resume=True) as writer:
        writer.submit(2, *rectangle(2))
    pairs = load_decathlon_datalist(str(out / "dataset.json"), data_list_key="training")
    assert [(Path(p["image"]), Path(p["label"])) for p in pairs] == [
        (out / f"images/{i:06d}.png", out / f"masks/{i:06d}.png") for i in range(5)
    ]
    loaded = LoadImaged(keys=["image", "label"])(pairs[3])
    image, mask = rectangle(3)
    # MONAI's PIL reader puts width first: [W, H, 3] and [W, H], as float32.
    assert tuple(loaded["image"].shape) == (20, 12, 3) and tuple(loaded["label"].shape) == (20, 12)
    np.testing.assert_array_equal(np.asarray(loaded["image"]), image.transpose(1, 0, 2))
    np.testing.assert_array_equal(np.asarray(loaded["label"]), mask.T)
    assert "`dataset.json`" in (out / "DATASET_CARD.md").read_text()


def test_force_refuses_to_delete_other_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write(out, run_info(2), range(2))
    (out / "images" / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match=r"refusing to replace .*out.*images/notes\.txt"):
        DatasetWriter(out, run_info(2), force=True)
    assert (out / "images" / "000000.png").exists()


def refusal(tmp_path: Path, case: str) -> tuple[Path, dict]:
    """Set up one error case; return OUT and the writer's keyword arguments."""
    out = tmp_path / "out"
    if case == "file":
        out.write_text("x")
    elif case == "under-a-file":
        (tmp_path / "file.txt").write_text("x")
        out = tmp_path / "file.txt" / "out"
    elif case == "not-empty":
        out.mkdir()
        (out / "data.csv").write_text("x")
    elif case == "nothing-to-resume":
        out.mkdir()
        (out / "manifest.jsonl").write_text("")
    return out, {"resume": case == "nothing-to-resume"}


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("file", "{out} exists and is not a folder"),
        ("under-a-file", "cannot write to {out}: Not a directory"),
        ("not-empty", "{out} is not empty; pass --resume to continue it or --force to replace it"),
        ("nothing-to-resume", "nothing to resume in {out}"),
    ],
)
def test_refusals_name_the_path(tmp_path: Path, case: str, message: str) -> None:
    out, kwargs = refusal(tmp_path, case)
    with pytest.raises(UserInputError) as e:
        DatasetWriter(out, run_info(), **kwargs)
    assert message.format(out=out) in str(e.value)
    assert "\n" not in str(e.value)


def test_count_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="--count must be positive, got 0"):
        DatasetWriter(tmp_path / "out", run_info(0))
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(UserInputError, match=r"cannot write to .*ro/out: Permission denied"):
        DatasetWriter(tmp_path / "ro" / "out", run_info())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 3}, "--seed 3 differs from the run being resumed (seed 1)"),
        ({"format": "npz"}, "--format npz differs from the run being resumed (format png)"),
        ({"generator": {**GENERATOR, "model": "cells"}}, "generator model cells differs"),
        (
            {"generator": {**GENERATOR, "weights_sha256": {"mask": "c" * 64}}},
            "generator weights_sha256",
        ),
        ({"count": 2}, "--count 2 is smaller than the run being resumed (count 4)"),
        ({"generator": {**GENERATOR, "label": 1}}, "generator label 1 differs"),
        ({"generator": {**GENERATOR, "truncation": 0.7}}, "generator truncation 0.7 differs"),
    ],
)
def test_resume_refuses_a_different_run(tmp_path: Path, change: dict, message: str) -> None:
    out = tmp_path / "out"
    write(out, run_info(4), range(2))
    with pytest.raises(UserInputError) as e:
        DatasetWriter(out, replace(run_info(4), **change), resume=True)
    assert message in str(e.value)
    assert len(manifest(out)) == 2  # nothing was touched


def test_two_writers_cannot_share_a_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with DatasetWriter(out, run_info(2)):
        with pytest.raises(UserInputError, match="in use by another synthmed run"):
            DatasetWriter(out, run_info(2), resume=True)


def test_a_failed_write_is_raised_and_no_card_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = DatasetWriter(out, run_info(4), workers=1)
    (out / "masks").rmdir()
    (out / "masks").write_text("not a folder any more")
    writer.submit(0, *sample(0))
    with pytest.raises(SynthmedError, match=r"cannot write sample 0 in .*out"):
        writer.close()
    assert manifest(out) == []
    assert not (out / "DATASET_CARD.md").exists()


def test_an_exception_in_the_block_keeps_finished_samples_and_writes_no_card(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), DatasetWriter(out, run_info(6), workers=1) as writer:
        for i in range(3):
            writer.submit(i, *sample(i))
        raise KeyboardInterrupt
    assert not (out / "DATASET_CARD.md").exists()
    with DatasetWriter(out, run_info(6), resume=True) as writer:
        # Finished samples are kept; queued ones may have been dropped (redone now).
        assert writer.pending()[-3:] == [3, 4, 5] and len(writer.done) >= 1
        for i in writer.pending():
            writer.submit(i, *sample(i))
    assert_complete(out, 6)


def test_a_conditional_run_records_its_class_and_truncation(tmp_path: Path) -> None:
    out = tmp_path / "out"
    generator = {**GENERATOR, "label": 1, "class_name": "cells", "truncation": 0.7}
    run = replace(run_info(4), generator=generator)
    write(out, run, range(2))
    entry = manifest(out)[0]
    assert (entry["label"], entry["class_name"], entry["truncation"]) == (1, "cells", 0.7)
    card = (out / "DATASET_CARD.md").read_text()
    assert "Class: `cells` (label 1)" in card and "Truncation psi: 0.7" in card
    other = replace(run, generator={**generator, "label": 0, "class_name": "retina"})
    with pytest.raises(UserInputError, match=r"generator label 0 differs .* \(label 1\)"):
        DatasetWriter(out, other, resume=True)
    write(out, run, range(4), resume=True)
    assert_complete(out, 4)
