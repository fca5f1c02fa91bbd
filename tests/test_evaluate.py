"""`synthmed evaluate` end to end on phantoms and the bundled demo models, its sanity checks
(real vs itself, noise vs the generator), the oracle arm, repeats, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from PIL import Image

from synthmed.evaluation import downstream
from synthmed.evaluation.downstream import ARMS, ORACLE_ARM
from synthmed.evaluation.evaluate import (
    DUAL,
    FOLDER,
    HELD_OUT,
    ORACLE,
    SINGLE,
    EvaluateOptions,
    run_evaluation,
)
from synthmed.evaluation.inputs import load_evaluation_data
from synthmed.latents import latents
from synthmed.training.data.dataset import load_paired_data
from synthmed.training.data.phantom import write_phantom_dataset
from synthmed.training.pixels import mask_to_input, tanh_to_uint8
from synthmed.training.sample import DEMO_STAGE1, DEMO_STAGE2, TwoStagePipeline
from synthmed.training.segmenter import SegmenterBudget
from tests.conftest import DEMO_SIZE, TINY_TRAIN, assert_one_line_error, run_cli
from tests.test_fid import _export, _tiny_net

FAST = ["--seg-steps", "30", "--seg-width", "8", "--quiet"]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Real training pairs and held-out real pairs (other seeds), the demo models' size."""
    root = tmp_path_factory.mktemp("eval-real")
    write_phantom_dataset("retina", root / "train", 24, DEMO_SIZE, 5)
    write_phantom_dataset("retina", root / "test", 12, DEMO_SIZE, 6)
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
    real: tuple[Path, Path], tmp_path: Path
) -> None:
    train, test = real
    single = tmp_path / "single"
    size = ["--size", str(DEMO_SIZE)]  # the baseline's images are judged beside the demo's
    run_cli("train", "single", "--data", train, "--out", single, "--steps", "2", *size, *TINY_TRAIN)
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
    # The oracle arm: stage II's images of the 24 real training masks, no real image.
    assert [r["arm"] for r in metrics["downstream"]] == [*ARMS, ORACLE_ARM]
    assert metrics["downstream"][-1]["real_images"] == 0
    assert metrics["downstream"][-1]["synthetic_images"] == 24
    assert metrics["inputs"]["oracle"] == {
        "label": ORACLE, "images": 24,
        "source": "the bundled demo stage II on the 24 real training masks",
    }  # fmt: skip
    assert [(r["arm"], r["real_images"]) for r in metrics["small_data"]] == [
        ("real", 5),
        ("real+synthetic", 5),
    ]
    for row in metrics["downstream"] + metrics["small_data"]:
        for key in ("f1_at_half", "f1_at_threshold", "auc_roc", "accuracy"):
            assert 0.0 <= row[key] <= 1.0, (key, row)
    assert metrics["inputs"]["validation"]["images"] + metrics["inputs"]["test"]["images"] == 12
    assert set(metrics["intensity_kl"]) == {HELD_OUT, DUAL, ORACLE, SINGLE}
    assert set(metrics["fid"]) == {HELD_OUT, DUAL, ORACLE, SINGLE}
    assert set(metrics["privacy"]) == {DUAL, ORACLE, SINGLE}
    assert metrics["mask_statistics"]["real (train)"]["masks"] == 24
    diversity = metrics["mask_diversity"]
    assert diversity["masks"] == {"synthetic": 24, "real_train": 24, "held_out": 12}
    assert diversity["pairwise_iou_ratio"] == pytest.approx(
        diversity["pairwise_iou"]["synthetic"] / diversity["pairwise_iou"]["real_train"]
    )
    for key in ("coverage", "precision", "nearest_reference"):
        assert 0.0 < diversity[key] <= 1.0, (key, diversity)
    assert metrics["command"].startswith("synthmed evaluate --real")
    assert (
        "--small-data 5 --inception" in metrics["command"] and "--quiet" not in metrics["command"]
    )

    markdown = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    for heading in ("Train on synthetic, test on real", "Small-data mode", "Privacy audit"):
        assert f"## {heading}" in markdown and f"<h2>{heading}</h2>" in html
    assert "FID" in markdown and "<table>" in html
    assert f"oracle set ({ORACLE})" in markdown and "mean pairwise IoU" in markdown
    assert "Each arm was trained once" in markdown
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
    assert evaluation.kl[FOLDER]["mean"] == 0.0
    assert DUAL not in evaluation.kl
    audit = evaluation.privacy[FOLDER]
    # Each sample is flagged as a copy of exactly itself, and of nothing else.
    assert audit.flagged.tolist() == list(range(24))
    assert audit.pixel.synthetic.index.tolist() == list(range(24))
    assert (audit.pixel.synthetic.second_distance > audit.pixel.threshold).all()
    # A folder has no stage II to apply to the real masks: no oracle set, arm or audit.
    assert evaluation.data.oracle is None
    assert [r.arm for r in evaluation.downstream.full] == list(ARMS)
    assert ORACLE not in evaluation.kl and ORACLE not in evaluation.privacy
    metrics = evaluation.metrics()
    assert "is a folder" in metrics["inputs"]["oracle"]["absent"]
    # One repeat: the mean is that repeat's value, the spread 0.
    for row in metrics["downstream"]:
        assert row["repeats"] == 1 and len(row["per_repeat"]) == 1
        assert row["f1_at_threshold"] == row["per_repeat"][0]["f1_at_threshold"]
        assert row["f1_at_threshold_std"] == row["auc_roc_std"] == 0.0
    # The same masks as the real training set: as diverse, and each one's nearest is itself.
    assert evaluation.diversity.pairwise_ratio == pytest.approx(1.0)
    assert evaluation.diversity.precision == pytest.approx(1.0)
    assert evaluation.diversity.coverage == pytest.approx(evaluation.diversity.nearest_reference)


def test_noise_scores_clearly_worse_than_the_generator(
    real: tuple[Path, Path], noise: Path
) -> None:
    generator = run_evaluation(_options(real), progress=False)
    noisy = run_evaluation(_options(real, synthetic=noise), progress=False)
    f1 = {
        name: next(r for r in ev.downstream.full if r.arm == arm).mean("f1_at_threshold")
        for name, ev, arm in (
            ("generator", generator, "synthetic"),
            ("noise", noisy, "synthetic"),
            ("oracle", generator, ORACLE_ARM),
        )
    }
    assert f1["noise"] < f1["generator"] - 0.1, f1
    assert f1["noise"] < f1["oracle"] - 0.1, f1
    # Noise is far from the real images; the demo generator and held-out real images are
    # both near them (on 24 samples either may come out closer).
    assert noisy.kl[FOLDER]["mean"] > 4 * generator.kl[DUAL]["mean"]
    assert noisy.kl[FOLDER]["mean"] > 4 * generator.kl[HELD_OUT]["mean"]
    # The demo generator copies no training patient of this (unseen) real set.
    assert len(generator.privacy[DUAL].flagged) == 0


def test_the_oracle_set_is_stage2_on_the_real_training_masks(real: tuple[Path, Path]) -> None:
    inputs = {
        "real": real[0], "real_test": real[1], "synthetic": None, "stage1": None,
        "stage2": None, "count": 4, "single": None, "size": None,
        "validation_fraction": 0.2, "seed": 0, "progress": False,
    }  # fmt: skip
    data = load_evaluation_data(**inputs)
    assert data.oracle is not None
    assert data.oracle.names == data.real_train.names
    assert torch.equal(data.oracle.masks, data.real_train.masks)
    # The images are stage II's for those masks, mask k with the latent of sample k of the
    # evaluation's seed (one batch of 24 here and there: exact).
    stage2 = TwoStagePipeline(DEMO_STAGE1, DEMO_STAGE2).stage2
    masks = data.real_train.masks.float()
    z = torch.from_numpy(latents(0, range(len(masks)), stage2.config.nz))
    with torch.no_grad():
        expected = tanh_to_uint8(stage2(mask_to_input(masks), z))
    assert torch.equal(data.oracle.images, expected.permute(0, 3, 1, 2))
    left_out = load_evaluation_data(**inputs, oracle=False)
    assert left_out.oracle is None and "--no-oracle" in left_out.oracle_note


def test_repeats_give_mean_and_std_of_reseeded_runs_on_reshuffled_subsets(
    real: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained = []  # (desc, seed, names of the first source) of every U-Net trained
    train_segmenter = downstream.train_segmenter

    def recording(sources: list, budget: SegmenterBudget, **kw: object) -> object:
        trained.append((kw["desc"], kw["seed"], sources[0].names))
        return train_segmenter(sources, budget, **kw)

    bars = []  # (x, y, yerr) of every error bar drawn
    errorbar = Axes.errorbar

    def recording_errorbar(self: Axes, x: object, y: object, **kw: object) -> object:
        bars.append((list(x), list(y), list(kw["yerr"])))
        return errorbar(self, x, y, **kw)

    monkeypatch.setattr(downstream, "train_segmenter", recording)
    monkeypatch.setattr(Axes, "errorbar", recording_errorbar)
    out = tmp_path / "report"
    result = run_cli(
        "evaluate", "--real", real[0], "--real-test", real[1], "--count", "8", "--seg-steps",
        "3", "--seg-width", "4", "--seg-batch-size", "4", "--repeats", "2", "--small-data", "5",
        "--no-oracle", "--quiet", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "± " in result.output and "mean ± std of 2 repeats" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["repeats"] == 2
    assert "--repeats 2" in metrics["command"] and "--no-oracle" in metrics["command"]
    assert [r["arm"] for r in metrics["downstream"]] == list(ARMS)
    assert metrics["inputs"]["oracle"]["absent"] == "left out (--no-oracle)"

    # Every score: the mean and sample std of the per-repeat values; F1 / real F1 per repeat.
    full = {r["arm"]: r for r in metrics["downstream"]}
    small = {r["arm"]: r for r in metrics["small_data"]}
    keys = ["f1_at_half", "threshold", "f1_at_threshold", "auc_roc", "accuracy"]
    for row in metrics["downstream"] + metrics["small_data"]:
        assert row["repeats"] == 2 and len(row["per_repeat"]) == 2
        for key in [*keys, "f1_ratio_to_real"]:
            values = [run[key] for run in row["per_repeat"]]
            assert row[key] == pytest.approx(np.mean(values)), key
            assert row[f"{key}_std"] == pytest.approx(np.std(values, ddof=1)), key
        reference = (full if row in metrics["downstream"] else small)["real"]
        for run, real_run in zip(row["per_repeat"], reference["per_repeat"], strict=True):
            expected = run["f1_at_threshold"] / real_run["f1_at_threshold"]
            assert run["f1_ratio_to_real"] == pytest.approx(expected)
    assert full["real"]["f1_ratio_to_real"] == 1.0 and full["real"]["f1_ratio_to_real_std"] == 0.0

    # Repeat r: segmenter seed r; small-data subsets from the shuffle seeded r, the first the
    # same as without repeats, each shared by the real and real+synthetic arms of its repeat.
    assert [seed for desc, seed, _ in trained if "(5 real" not in desc] == [0, 1] * 3
    names = load_paired_data(real[0], 64).names
    subsets = [(seed, first) for desc, seed, first in trained if "(5 real" in desc]
    expected = [[names[i] for i in np.random.default_rng(r).permutation(24)[:5]] for r in (0, 1)]
    assert subsets == [(0, expected[0]), (1, expected[1])] * 2
    assert expected[0] != expected[1]

    # The small-data figure has error bars of one std, one per arm with real images.
    assert bars == [
        ([5], [small[arm]["f1_at_threshold"]], [small[arm]["f1_at_threshold_std"]])
        for arm in ("real", "real+synthetic")
    ]
    markdown = (out / "report.md").read_text()
    assert "Each arm was trained 2 times" in markdown and " ± " in markdown
    assert "No oracle arm: left out (--no-oracle)" in markdown
    assert "bars and bands" in markdown


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
    too_deep = DEMO_SIZE.bit_length()  # 2**depth poolings do not divide the size
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    cases = [
        (["--synthetic", mixed_sizes], ["000002.png", "32x32", "64x64"]),
        (["--size", str(DEMO_SIZE // 2)], [f"--size {DEMO_SIZE // 2}", f"{DEMO_SIZE}x{DEMO_SIZE}"]),
        (["--synthetic", empty], [str(empty), "empty synthetic folder"]),
        (["--fid"], ["--fid needs --inception"]),
        (["--inception", tmp_path / "missing.onnx"], ["missing.onnx", "does not exist"]),
        (["--small-data", "24"], ["--small-data 24", "24 real training images"]),
        (["--small-data", "five"], ["--small-data", "five"]),
        (["--seg-depth", str(too_deep)], [f"--seg-depth {too_deep}", "divisible"]),
        (["--single", train], [str(train), "config.json"]),
        (["--count", "0"], ["--count must be >= 1"]),
        (["--repeats", "0"], ["--repeats must be >= 1, got 0"]),
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
    other = str(DEMO_SIZE // 2)  # not the demo models' size
    assert_one_line_error(run_cli(*args, "--force", "--size", other), f"--size {other}")
    assert (out / "report.md").read_text() == "old report"
