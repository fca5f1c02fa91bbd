"""`synthmed evaluate` end to end on phantoms and the bundled demo models, its sanity checks
(real vs itself, noise vs the generator) and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synthmed.evaluation.evaluate import DUAL, HELD_OUT, EvaluateOptions, run_evaluation
from synthmed.training.data.phantom import write_phantom_dataset
from synthmed.training.segmenter import SegmenterBudget
from tests.conftest import TINY_TRAIN, assert_one_line_error, run_cli
from tests.test_fid import _export, _tiny_net

FAST = ["--seg-steps", "30", "--seg-width", "8", "--quiet"]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Real training pairs and held-out real pairs (other seeds), 64x64 like the demo models."""
    root = tmp_path_factory.mktemp("eval-real")
    write_phantom_dataset("retina", root / "train", 24, 64, 5)
    write_phantom_dataset("retina", root / "test", 12, 64, 6)
    return root / "train", root / "test"


def _write_pairs(folder: Path, images: np.ndarray, masks: np.ndarray) -> Path:
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(image).save(folder / "images" / f"{i:06d}.png")
        Image.fromarray(mask).save(folder / "masks" / f"{i:06d}.png")
    return folder


@pytest.fixture(scope="module")
def noise(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 'synthetic' folder of pure noise: random pixels, random 10 % masks."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 64, 64, 3), dtype=np.uint8)
    masks = ((rng.random((24, 64, 64)) < 0.1) * 255).astype(np.uint8)
    return _write_pairs(tmp_path_factory.mktemp("noise"), images, masks)


def test_evaluate_end_to_end_with_baseline_fid_and_small_data(
    real: tuple[Path, Path], retina64: Path, tmp_path: Path
) -> None:
    train, test = real
    single = tmp_path / "single"
    run_cli("train", "single", "--data", retina64, "--out", single, "--steps", "2", *TINY_TRAIN)
    torch.manual_seed(0)
    example = torch.rand(4, 3, 64, 64)
    inception = _export(_tiny_net(flatten=True), example, False, tmp_path / "f.onnx")
    out = tmp_path / "report"
    result = run_cli(
        "evaluate", "--real", train, "--real-test", test, "--count", "24", "--single", single,
        "--small-data", "5", "--inception", inception, "--fid", "--out", out, *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "U-Net trained on synthetic" in result.output and "report.html" in result.output

    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["arm"] for r in metrics["downstream"]] == ["real", "synthetic", "real+synthetic"]
    assert [(r["arm"], r["real_images"]) for r in metrics["small_data"]] == [
        ("real", 5),
        ("real+synthetic", 5),
    ]
    for row in metrics["downstream"] + metrics["small_data"]:
        for key in ("f1_at_half", "f1_at_threshold", "auc_roc", "accuracy"):
            assert 0.0 <= row[key] <= 1.0, (key, row)
    assert metrics["inputs"]["validation"]["images"] + metrics["inputs"]["test"]["images"] == 12
    assert set(metrics["intensity_kl"]) == {HELD_OUT, DUAL, "single GAN"}
    assert set(metrics["fid"]) == {HELD_OUT, DUAL, "single GAN"}
    assert set(metrics["privacy"]) == {DUAL, "single GAN"}
    assert metrics["mask_statistics"]["real (train)"]["masks"] == 24
    assert metrics["command"].startswith("synthmed evaluate --real")
    assert (
        "--small-data 5 --inception" in metrics["command"] and "--quiet" not in metrics["command"]
    )

    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for heading in ("Train on synthetic, test on real", "Small-data mode", "Privacy audit"):
        assert f"## {heading}" in markdown and f"<h2>{heading}</h2>" in html
    assert "FID" in markdown and "<table>" in html
    for figure in ("samples.png", "predictions.png", "small_data.png", "privacy_distances.png"):
        assert f"]({figure})" in markdown and f'src="{figure}"' in html
        assert Image.open(out / figure).size[0] > 100


def _options(real: tuple[Path, Path], **kw: object) -> EvaluateOptions:
    budget = SegmenterBudget(steps=60, batch_size=8, base_channels=8)
    return EvaluateOptions(real=real[0], real_test=real[1], count=24, budget=budget, **kw)


def test_real_data_against_itself_is_at_distance_zero_and_flags_only_identity(
    real: tuple[Path, Path],
) -> None:
    evaluation = run_evaluation(_options(real, synthetic=real[0]), progress=False)
    assert evaluation.kl[DUAL]["mean"] == 0.0
    audit = evaluation.privacy[DUAL]
    # Each sample is flagged as a copy of exactly itself, and of nothing else.
    assert audit.flagged.tolist() == list(range(24))
    assert audit.pixel.synthetic.index.tolist() == list(range(24))
    assert (audit.pixel.synthetic.second_distance > audit.pixel.threshold).all()


def test_noise_scores_clearly_worse_than_the_generator(
    real: tuple[Path, Path], noise: Path
) -> None:
    generator = run_evaluation(_options(real), progress=False)
    noisy = run_evaluation(_options(real, synthetic=noise), progress=False)
    f1 = {
        name: next(r for r in ev.downstream.full if r.arm == "synthetic").scores["f1_at_threshold"]
        for name, ev in (("generator", generator), ("noise", noisy))
    }
    assert f1["noise"] < f1["generator"] - 0.1, f1
    assert noisy.kl[DUAL]["mean"] > 4 * generator.kl[DUAL]["mean"]
    assert generator.kl[HELD_OUT]["mean"] < generator.kl[DUAL]["mean"]
    # The demo generator copies no training patient of this (unseen) real set.
    assert len(generator.privacy[DUAL].flagged) == 0


@pytest.fixture(scope="module")
def mixed_sizes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1)
    folder = _write_pairs(
        tmp_path_factory.mktemp("mixed"),
        rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8),
        np.zeros((3, 64, 64), np.uint8),
    )
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "images" / "000002.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / "masks" / "000002.png")
    return folder


def test_bad_input_is_one_line(real: tuple[Path, Path], mixed_sizes: Path, tmp_path: Path) -> None:
    train, test = real
    base = ["evaluate", "--real", train, "--real-test", test, "--out", tmp_path / "r", *FAST]
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    cases = [
        (["--synthetic", mixed_sizes], ["000002.png", "32x32", "64x64"]),
        (["--size", "128"], ["--size 128", "64x64"]),
        (["--synthetic", empty], [str(empty), "empty synthetic folder"]),
        (["--fid"], ["--fid needs --inception"]),
        (["--inception", tmp_path / "missing.onnx"], ["missing.onnx", "does not exist"]),
        (["--small-data", "24"], ["--small-data 24", "24 real training images"]),
        (["--small-data", "five"], ["--small-data", "five"]),
        (["--seg-depth", "7"], ["--seg-depth 7", "divisible"]),
        (["--single", train], [str(train), "config.json"]),
        (["--count", "0"], ["--count must be >= 1"]),
    ]
    for extra, fragments in cases:
        assert_one_line_error(run_cli(*base, *extra), *fragments)
    no_test = ["evaluate", "--real", train, "--out", tmp_path / "r", *FAST]
    assert_one_line_error(run_cli(*no_test), "--real-test is needed")


def test_an_existing_report_is_kept_unless_forced_and_survives_a_failed_run(
    real: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    out.mkdir()
    (out / "report.md").write_text("old report")
    args = ["evaluate", "--real", real[0], "--real-test", real[1], "--out", out, *FAST]
    assert_one_line_error(run_cli(*args), str(out), "--force")
    assert_one_line_error(run_cli(*args, "--force", "--size", "128"), "--size 128")
    assert (out / "report.md").read_text() == "old report"
