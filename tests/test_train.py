"""The training loop: exact resume, Ctrl-C saves, divergence stops, bad options are refused."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synthmed.machine import cpu, has_bf16
from synthmed.training.batch_norm import batch_norms
from synthmed.training.checkpoint import STATE_FILE, load_generator
from synthmed.training.config import TrainConfig
from synthmed.training.data.dataset import load_paired_data
from synthmed.training.demo import ROLES, demo_configs
from synthmed.training.models import create_model
from synthmed.training.segmenter import SegmenterBudget, fold_batch_norms, frozen_segmenter
from synthmed.training.tasks import (
    CONSISTENCY_SEGMENTER,
    Batch,
    make_task,
    mode_seeking_ratio,
    straight_through_binary,
)
from tests.conftest import TINY_TRAIN, assert_one_line_error, assert_same_tensors, run_cli

TINY = [*TINY_TRAIN, "--log-every", "1"]


def _losses(run: Path) -> list[dict[str, str]]:
    with (run / "losses.csv").open() as f:
        return list(csv.DictReader(f))


# Stage II with the segmentation-consistency and segmenter-matching losses and the PatchGAN
# that sees the segmenter's view: their frozen segmenter is kept in the run.
SEG = [
    *("--seg-lambda", "2", "--seg-match-lambda", "5", "--seg-discriminator"),
    *("--seg-steps", "3", "--seg-width", "4"),
]
# pix2pixHD's recipe: two discriminator scales and feature matching.
HD = ["--d-scales", "2", "--fm-lambda", "10"]
# Stage II rendering from noise maps, made to use them by the mode-seeking term.
NOISE = ["--noise-channels", "2", "--mode-seeking", "1"]
# Stage I with DiffAugment and lazy R1, the mode-seeking term, binarised fakes and the resize
# generator; an R1 interval of 3 puts the split (step 4) between two penalties, so the resumed
# log must carry the last one over.
DIFFAUG_R1 = [
    *("--diff-augment", "translate", "--diff-augment", "cutout"),
    *("--r1-gamma", "1", "--r1-interval", "3", "--rotation-degrees", "0"),
    *("--mode-seeking", "1", "--binary-fakes", "--upsample", "resize"),
]


@pytest.mark.usefixtures("grid_sample_without_second_derivative")
def test_r1_runs_where_the_augmentation_has_no_second_derivative(
    retina64: Path, tmp_path: Path
) -> None:
    """R1 at the augmented reals: DiffAugment's translation resamples with grid_sample, whose
    CUDA kernel has no second derivative (the GPU run of the demo's stage I stopped at its
    first penalty)."""
    args = ["train", "stage1", "--data", retina64, *TINY, *DIFFAUG_R1[:4]]
    result = run_cli(
        *args, "--r1-gamma", "1", "--r1-interval", "1", "--steps", "2", "--out", tmp_path / "run"
    )
    assert result.exit_code == 0, result.output
    assert all(float(row["r1"]) > 0 for row in _losses(tmp_path / "run"))


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("stage1", []),
        ("stage2", []),
        ("single", []),
        ("stage2", SEG),
        ("stage2", HD),
        ("stage1", DIFFAUG_R1),
        ("stage2", NOISE),
    ],
    ids=[
        "stage1",
        "stage2",
        "single",
        "stage2-consistency",
        "stage2-pix2pixhd",
        "stage1-diffaug",
        "stage2-noise",
    ],
)
def test_resume_continues_with_the_losses_of_an_uninterrupted_run(
    kind: str, extra: list[str], retina64: Path, tmp_path: Path
) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    args = ["train", kind, "--data", retina64, *TINY, *extra]
    assert run_cli(*args, "--out", whole, "--steps", "8").exit_code == 0
    assert run_cli(*args, "--out", split, "--steps", "4").exit_code == 0
    resumed = run_cli("train", kind, "--out", split, "--steps", "8", "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert _losses(split) == _losses(whole)
    assert [row["step"] for row in _losses(split)] == [str(i) for i in range(8)]
    assert_same_tensors(split / "model.safetensors", whole / "model.safetensors")
    if extra == SEG:
        assert all(row["seg"] and float(row["seg_match"]) > 0 for row in _losses(split))
        segmenter_first_layer = load_file(split / CONSISTENCY_SEGMENTER)["encoders.0.0.weight"]
        assert segmenter_first_layer.shape[0] == 4  # --seg-width
        first_layer = load_file(split / STATE_FILE)["discriminator.net.0.weight"]
        assert first_layer.shape[1] == 5  # mask, RGB and the segmenter's view
    if extra == DIFFAUG_R1:
        assert all(float(row["r1"]) > 0 for row in _losses(split))
        assert all(float(row["mode_seeking_ratio"]) > 0 for row in _losses(split))
    if extra == HD:
        assert all(float(row["fm"]) > 0 for row in _losses(split))
    if extra == NOISE:
        assert all(float(row["mode_seeking_ratio"]) > 0 for row in _losses(split))


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("stage1", DIFFAUG_R1), ("stage2", [*SEG, *NOISE])],
    ids=["stage1-diffaug", "stage2-consistency-noise"],
)
def test_sampling_and_checkpoints_do_not_move_the_run(
    kind: str, extra: list[str], retina64: Path, tmp_path: Path
) -> None:
    """Evaluating and checkpointing read the run and never change it: a run that samples and
    saves every step ends bit for bit where one that does both only at its end does. (Stage
    I's checkpoint calibrates the mask confidence on the EMA generator, and evaluation puts
    the EMA in eval mode; neither may reach the next step.)"""
    args = ["train", kind, "--data", retina64, *TINY, *extra, "--steps", "6"]
    busy, quiet = tmp_path / "busy", tmp_path / "quiet"
    every_step = ["--sample-every", "1", "--checkpoint-every", "1"]
    assert run_cli(*args, *every_step, "--out", busy).exit_code == 0
    at_end = ["--sample-every", "100", "--checkpoint-every", "100"]
    assert run_cli(*args, *at_end, "--out", quiet).exit_code == 0
    assert _losses(busy) == _losses(quiet)
    for name in ("model.safetensors", STATE_FILE):
        assert_same_tensors(busy / name, quiet / name)


def test_consistency_loss_teaches_stage2_what_the_segmenter_finds(
    retina64: Path, tmp_path: Path
) -> None:
    """With L1 off, the frozen segmenter's loss on the generated images falls as stage II
    learns to draw vessels where the mask has them. The segmenter gets 120 steps: at 60 its
    loss fell only to 0.86x on one thread (0.73x on two), too weak a teacher to test with."""
    args = ["--size", "32", "--ngf", "16", "--ndf", "16", "--batch-size", "8", "--lr", "1e-3"]
    args += ["--l1-lambda", "0", "--seg-lambda", "10", "--seg-steps", "120", "--log-every", "1"]
    result = run_cli(
        "train", "stage2", "--data", retina64, "--out", tmp_path, "--steps", "40", *args, "--quiet"
    )
    assert result.exit_code == 0, result.output
    seg = [float(row["seg"]) for row in _losses(tmp_path)]
    assert sum(seg[-5:]) / 5 < 0.8 * seg[0], seg  # the untrained generator's loss


def test_segmenter_match_teaches_stage2_the_photographs_response(
    retina64: Path, tmp_path: Path
) -> None:
    """With L1 off, the gap between the frozen segmenter's response to the renders and to the
    paired photographs narrows as stage II learns (the same teacher as the consistency test)."""
    args = ["--size", "32", "--ngf", "16", "--ndf", "16", "--batch-size", "8", "--lr", "1e-3"]
    args += ["--l1-lambda", "0", "--seg-match-lambda", "50", "--seg-steps", "120"]
    result = run_cli(
        "train", "stage2", "--data", retina64, "--out", tmp_path, "--steps", "40", *args,
        "--log-every", "1", "--quiet",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _losses(tmp_path)
    match = [float(row["seg_match"]) for row in rows]
    assert sum(match[-5:]) / 5 < 0.8 * match[0], match  # the untrained generator's gap
    assert "seg" not in rows[0]  # the consistency term stays off


def test_seg_discriminator_judges_the_segmenters_view_and_learns_through_it() -> None:
    """With --seg-discriminator both pairs carry the frozen segmenter's vessel probabilities as
    a fifth channel, and the generator's adversarial gradient reaches the render through the
    segmenter: with the first layer blind to mask and RGB, that channel is the only path."""
    cfg = TrainConfig(
        kind="stage2", data="unused", size=32, ngf=8, ndf=8, max_channels=16,
        l1_lambda=0.0, seg_discriminator=True,
    )  # fmt: skip
    task = make_task(cfg)
    generator, discriminator = task.build()
    torch.manual_seed(0)
    segmenter = create_model("segmentation_unet", SegmenterBudget().model_config())
    task.segmenter = segmenter.eval().requires_grad_(False)
    masks = (torch.rand(4, 1, 32, 32) > 0.8).float() * 2 - 1
    batch = Batch(torch.rand(4, 3, 32, 32) * 2 - 1, masks)
    fake = task.generate(generator, batch)  # also the segmenter's pass over the renders
    fake.retain_grad()
    (real_in, is_real), (fake_in, _) = task.d_inputs(batch, fake.detach())
    assert is_real and real_in.shape[1] == fake_in.shape[1] == 5
    view = torch.sigmoid(task.segmenter(batch.images)) * 2 - 1
    assert torch.allclose(real_in[:, 4:], view)
    assert torch.equal(real_in[:, :4], torch.cat([batch.masks, batch.images], 1))
    with torch.no_grad():
        discriminator.net[0].weight[:, :4] = 0
    loss, _ = task.g_loss(discriminator, batch, fake)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_frozen_segmenter_is_folded_and_its_file_is_the_plain_unet(
    retina64: Path, tmp_path: Path
) -> None:
    """The frozen segmenter a GAN looks through has its batch norms folded into the
    convolutions: the same logits and the same gradient to the image as the U-Net it was
    trained as, whose weights are what the run keeps (so a resume reads a plain U-Net)."""
    data = load_paired_data(str(retina64), 32, progress=False)
    budget = SegmenterBudget(steps=5, base_channels=4, depth=2)
    path = tmp_path / CONSISTENCY_SEGMENTER
    folded = frozen_segmenter([data], budget, path, seed=0, save=True, progress=False)
    assert not batch_norms(folded)
    plain = create_model("segmentation_unet", budget.model_config())
    plain.load_state_dict(load_file(str(path)))
    plain.eval().requires_grad_(False)
    assert batch_norms(plain)
    image = torch.rand(3, 3, 32, 32) * 2 - 1
    outputs = []  # (logits, gradient to the image) of each
    for model in (plain, folded):
        x = image.clone().requires_grad_(True)
        logits = model(x)
        logits.square().sum().backward()
        outputs.append((logits.detach(), x.grad))
    (plain_logits, plain_grad), (folded_logits, folded_grad) = outputs
    torch.testing.assert_close(folded_logits, plain_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(folded_grad, plain_grad, rtol=1e-4, atol=1e-4)
    # read back from the run (a resume): folded the same way
    again = frozen_segmenter([data], budget, path, seed=1, save=False, progress=False)
    torch.testing.assert_close(again(image), folded(image))
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(plain.train())


def test_stage2_learns_the_mapping(retina64: Path, tmp_path: Path) -> None:
    args = [
        "--size",
        "32",
        "--steps",
        "50",
        "--ngf",
        "16",
        "--ndf",
        "16",
        "--batch-size",
        "8",
        "--lr",
        "1e-3",
    ]
    result = run_cli(
        "train",
        "stage2",
        "--data",
        retina64,
        "--out",
        tmp_path,
        *args,
        "--log-every",
        "1",
        "--quiet",
    )
    assert result.exit_code == 0, result.output
    l1 = [float(row["l1"]) for row in _losses(tmp_path)]
    assert sum(l1[-5:]) / 5 < 0.5 * sum(l1[:5]) / 5, l1
    generator, info = load_generator(tmp_path, role="stage2")
    assert info.step == 50 and info.image_size == 32 and not generator.training


def test_divergence_stops_with_a_clear_error(retina64: Path, tmp_path: Path) -> None:
    result = run_cli(
        "train",
        "stage1",
        "--data",
        retina64,
        "--out",
        tmp_path / "run",
        "--steps",
        "5",
        *TINY,
        "--lr",
        "1e30",
    )
    line = assert_one_line_error(result, "NaN or infinite", "--lr")
    assert result.exit_code == 3, line


def test_bf16_on_a_cpu_trains_where_the_hardware_has_it(
    retina64: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--precision bf16 on a CPU: autocast with fp32 weights and checkpoints where the CPU has
    bf16 arithmetic; refused in one line, before the run folder is made, where it has not."""
    args = ["train", "stage2", "--data", retina64, *TINY_TRAIN, "--size", "32", "--steps", "3"]
    args += ["--precision", "bf16", "--device", "cpu"]
    if has_bf16(cpu()):
        assert run_cli(*args, "--out", tmp_path / "bf16").exit_code == 0
        assert json.loads((tmp_path / "bf16" / "config.json").read_text())["precision"] == "bf16"
        saved = load_file(tmp_path / "bf16" / "model.safetensors").values()
        floats = [t for t in saved if t.is_floating_point()]
        assert floats and all(t.dtype == torch.float32 and t.isfinite().all() for t in floats)
    without = {**cpu(), "flags": dict.fromkeys(cpu()["flags"], False)}
    monkeypatch.setattr("synthmed.training.loop.cpu", lambda: without)
    result = run_cli(*args, "--out", tmp_path / "refused")
    assert_one_line_error(result, "--precision bf16 on a CPU needs AVX-512 BF16 or AMX")
    assert not (tmp_path / "refused").exists()


def test_existing_run_needs_resume(retina64: Path, tmp_path: Path) -> None:
    assert (
        run_cli(
            "train", "stage1", "--data", retina64, "--out", tmp_path, "--steps", "2", *TINY
        ).exit_code
        == 0
    )
    again = run_cli("train", "stage1", "--data", retina64, "--out", tmp_path, "--steps", "2", *TINY)
    assert_one_line_error(again, "already holds a training run", "--resume")
    changed = run_cli(
        "train", "stage1", "--out", tmp_path, "--steps", "4", "--size", "128", "--resume"
    )
    assert_one_line_error(changed, "--size 128 differs from the run being resumed (64)")
    wrong_kind = run_cli("train", "stage2", "--out", tmp_path, "--resume")
    assert_one_line_error(wrong_kind, "is a stage1 checkpoint, expected stage2")


def test_resume_refuses_changed_data(retina64: Path, tmp_path: Path) -> None:
    data, run = tmp_path / "data", tmp_path / "run"
    shutil.copytree(retina64, data)
    args = ["train", "stage1", "--data", data, "--out", run, *TINY]
    assert run_cli(*args, "--steps", "2").exit_code == 0
    for folder in ("images", "masks", "fov"):  # one pair fewer: not the data the run started on
        sorted((data / folder).iterdir())[-1].unlink()
    result = run_cli(*args, "--steps", "4", "--resume")
    assert_one_line_error(result, "--data differs from the data the run in", str(run))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps must be >= 1"),
        (["--size", "48"], "--size must be a power of two"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a CUDA device"),
        (["--seg-lambda", "-1"], "--seg-lambda must be >= 0, got -1.0"),
        (["--seg-match-lambda", "-1"], "--seg-match-lambda must be >= 0, got -1.0"),
        (["--seg-match-lambda", "5"], "--seg-match-lambda for stage1: only stage II learns from"),
        (["--seg-discriminator"], "--seg-discriminator for stage1: only stage II learns from"),
        (["--dropout", "1"], "--dropout must be in [0, 1.0), got 1.0"),
        (["--seg-steps", "0"], "--seg-steps must be >= 1, got 0"),
        (["--seg-width", "0"], "--seg-width must be >= 1, got 0"),
        (["--d-scales", "3"], "--d-scales 3 at --size 64: the coarsest scale would be 16 px"),
        (["--r1-gamma", "-1"], "--r1-gamma must be >= 0, got -1.0"),
        (["--r1-interval", "0"], "--r1-interval must be >= 1, got 0"),
        (["--mode-seeking", "-1"], "--mode-seeking must be >= 0, got -1.0"),
        (["--snapshot-every", "-5"], "--snapshot-every must be >= 0, got -5"),
        (["--noise-channels", "2"], "--noise-channels for stage1: only stage II renders from"),
        (["--noise-rank", "65"], "--noise-rank must be in [1, --size 64], got 65"),
        (["--rotation-degrees", "200"], "--rotation-degrees must be in [0, 180], got 200.0"),
        (["--colour-jitter", "1.5"], "--colour-jitter must be in [0, 1), got 1.5"),
        (["--mask-confidence", "1"], "--mask-confidence must be in [0, 1), got 1.0"),
        (["--lr-decay-steps", "2001"], "--lr-decay-steps must be in [0, --steps 2000], got 2001"),
        (["--fixed-bn-steps", "-1"], "--fixed-bn-steps must be in [0, --steps 2000], got -1"),
        (["--d-layers", "2"], "--d-layers for stage1: only stage II's PatchGAN has it"),
        (
            ["--diff-augment", "colour"],
            "--diff-augment 'colour' for stage1: expected one of xflip, rotate90, translate",
        ),
    ],
)
def test_bad_options(args: list[str], message: str, retina64: Path, tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli("train", "stage1", "--data", retina64, "--out", tmp_path / "r", *args), message
    )


def test_stage2_refuses_stage1_options_and_resume_keeps_its_augmentation(
    retina64: Path, tmp_path: Path
) -> None:
    run = tmp_path / "r"
    args = ["train", "stage2", "--data", retina64, "--out", run, *TINY]
    assert_one_line_error(
        run_cli(*args, "--diff-augment", "translate"),
        "--diff-augment 'translate' for stage2: expected none (its discriminator judges",
    )
    assert_one_line_error(
        run_cli(*args, "--mode-seeking", "1"),
        "--mode-seeking for stage2 needs --noise-channels >= 1",
    )
    assert_one_line_error(
        run_cli(*args, "--noise-channels", "-1"), "--noise-channels must be >= 0, got -1"
    )
    assert_one_line_error(
        run_cli(*args, "--binary-fakes"), "--binary-fakes for stage2: only stage I draws masks"
    )
    assert_one_line_error(
        run_cli(*args, "--mask-confidence", "0.9"),
        "--mask-confidence for stage2: only stage I draws masks",
    )
    assert run_cli(*args, "--steps", "1", "--rotation-degrees", "0").exit_code == 0
    saved = json.loads((run / "config.json").read_text())["train"]["augment"]
    assert saved == {"flips": True, "rotation_degrees": 0.0, "colour_jitter": 0.1}
    resumed = ["train", "stage2", "--out", run, "--steps", "2", "--resume", "--quiet"]
    assert_one_line_error(
        run_cli(*resumed, "--rotation-degrees", "5"), "--rotation-degrees cannot change on --resume"
    )
    assert run_cli(*resumed).exit_code == 0


def test_stage2_learning_rate_decays_linearly_and_the_patchgan_depth_is_set(
    retina64: Path, tmp_path: Path
) -> None:
    """pix2pix's schedule: constant, then falling linearly over the last --lr-decay-steps
    (never reaching 0 within the run); --d-layers sets how many strided layers each PatchGAN
    has (1 + layers + 1 convolutions)."""
    args = ["train", "stage2", "--data", retina64, *TINY, "--steps", "6", "--out", tmp_path]
    assert run_cli(*args, "--lr", "1e-3", "--lr-decay-steps", "4", "--d-layers", "1").exit_code == 0
    assert [float(row["lr"]) for row in _losses(tmp_path)] == [1e-3] * 3 + [7.5e-4, 5e-4, 2.5e-4]
    state = load_file(tmp_path / STATE_FILE)
    convs = {k for k in state if k.startswith("discriminator.") and k.endswith("weight")}
    assert len([k for k in convs if state[k].dim() == 4]) == 3


def test_stage1_options_change_what_they_should(retina64: Path, tmp_path: Path) -> None:
    """Same seed, same data: DiffAugment, R1 and binarised fakes each change the
    discriminator's losses; the mode-seeking term changes the generator's (the step's
    discriminator loss comes first, so only later steps differ there); the resize generator
    is another network."""
    base = ["train", "stage1", "--data", retina64, *TINY, "--steps", "4"]
    runs = {
        "plain": [],
        "diffaug": ["--diff-augment", "translate"],
        "r1": ["--r1-gamma", "10", "--r1-interval", "1"],
        "mode_seeking": ["--mode-seeking", "5"],
        "binary_fakes": ["--binary-fakes"],
        "resize": ["--upsample", "resize"],
    }
    losses = {}
    for name, extra in runs.items():
        assert run_cli(*base, "--out", tmp_path / name, *extra).exit_code == 0
        losses[name] = _losses(tmp_path / name)
    plain = losses.pop("plain")
    for name in ("diffaug", "r1", "binary_fakes"):
        assert [row["loss_d"] for row in losses[name][1:]] != [r["loss_d"] for r in plain[1:]]
    seeking, resize = losses["mode_seeking"], losses["resize"]
    assert seeking[0]["loss_d"] == plain[0]["loss_d"]
    assert float(seeking[0]["loss_g"]) > float(plain[0]["loss_g"])  # + 5 / ratio
    assert all(float(row["mode_seeking_ratio"]) > 0 for row in seeking)
    assert "mode_seeking_ratio" not in plain[0] or not plain[0]["mode_seeking_ratio"]
    assert [row["loss_g"] for row in resize] != [row["loss_g"] for row in plain]
    weights = load_file(tmp_path / "resize" / "model.safetensors")
    assert weights["net.4.weight"].shape[2:] == (3, 3)  # the first doubling: a 3x3 conv


def test_mode_seeking_ratio_is_zero_only_for_a_collapsed_batch() -> None:
    latents = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    assert mode_seeking_ratio(torch.ones(8, 1, 4, 4), latents) == 0
    fakes = torch.cat([torch.ones(4, 1, 4, 4), -torch.ones(4, 1, 4, 4)])
    spread = (latents[:4] - latents[4:]).abs().mean()
    assert mode_seeking_ratio(fakes, latents) == pytest.approx(2 / spread)


def test_straight_through_binary_is_binary_forward_and_identity_backward() -> None:
    mask = torch.tensor([-0.9, -0.1, 0.2, 0.7], requires_grad=True)
    binary = straight_through_binary(mask)
    assert binary.tolist() == [-1.0, -1.0, 1.0, 1.0]
    (binary * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert mask.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_missing_data_and_missing_resume(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("train", "stage1", "--out", tmp_path / "r"), "--data is required")
    assert_one_line_error(
        run_cli("train", "stage1", "--out", tmp_path / "r", "--resume"),
        "checkpoint folder does not exist",
    )


def test_sigint_saves_a_checkpoint_that_resumes(retina64: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "synthmed",
        "train",
        "stage1",
        "--data",
        str(retina64),
        "--out",
        str(run),
        "--steps",
        "100000",
        "--checkpoint-every",
        "100000",
        *TINY,
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (run / "losses.csv").exists() or len(_losses(run)) < 3:
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted: checkpoint saved" in stderr
    assert (run / STATE_FILE).exists()
    _, info = load_generator(run)
    assert info.step >= 3

    resumed = run_cli(
        "train", "stage1", "--out", run, "--steps", str(info.step + 2), "--resume", "--quiet"
    )
    assert resumed.exit_code == 0, resumed.output
    assert load_generator(run)[1].step == info.step + 2


@pytest.mark.skipif(os.cpu_count() is None, reason="needs a CPU count")
def test_torchrun_two_processes_share_one_run(retina64: Path, tmp_path: Path) -> None:
    """DistributedDataParallel on CPU (gloo): the multi-GPU path, exercised with two workers."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "synthmed",
        "train",
        "stage2",
        "--data",
        str(retina64),
        "--out",
        str(tmp_path),
        "--size",
        "32",
        "--steps",
        "3",
        *TINY,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["step"] for row in _losses(tmp_path)] == ["0", "1", "2"]
    assert load_generator(tmp_path, role="stage2")[1].step == 3


def test_train_demo_rebuilds_one_stage_with_the_recorded_recipe(tmp_path: Path) -> None:
    result = run_cli("train-demo", "--out", tmp_path, "--role", "stage2", "--steps-scale", "0.001")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage2"]
    config = json.loads((tmp_path / "stage2" / "config.json").read_text())
    assert config["train"]["data"].startswith("synthmed data phantom --kind retina")
    assert config["train"]["augment"]["rotation_degrees"] == 0.0
    assert config["train"]["dropout"] == 0.0
    assert config["train"]["seg_discriminator"] and config["train"]["seg_steps"] == 1  # scaled
    assert (tmp_path / "stage2" / "model.safetensors").is_file()


def test_train_demo_passes_its_precision_to_every_run(tmp_path: Path) -> None:
    """`train-demo --precision bf16` trains the recipe in bf16 where the CPU has it (and is
    refused in one line, writing nothing, where it has not)."""
    args = ["train-demo", "--out", tmp_path / "demo", "--role", "stage1", "--steps-scale"]
    result = run_cli(*args, "0.001", "--precision", "bf16")
    if not has_bf16(cpu()):
        assert_one_line_error(result, "--precision bf16 on a CPU needs AVX-512 BF16 or AMX")
        assert not (tmp_path / "demo").exists()
        return
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "demo" / "stage1" / "config.json").read_text())
    assert config["precision"] == config["train"]["precision"] == "bf16"


def test_train_demo_at_128_trains_stage1_with_the_recipe_measured_there(tmp_path: Path) -> None:
    """At 128x128 (the bundled size) the 64x64 settings give masks 1.64x as alike as real
    ones; the demo trains stage I with the heavier mode-seeking term, longer, and stage II's
    last 1,500 steps with fixed batch-norm statistics (fewer failed renders, truer colours)
    behind a narrower frozen segmenter (the hour's budget); every window scales with the
    steps."""
    at_64 = demo_configs(tmp_path, ROLES, 64, 1.0)
    at_128 = demo_configs(tmp_path, ROLES, 128, 0.5)
    assert (at_64["stage1"].mode_seeking, at_64["stage1"].steps) == (1.0, 4000)
    assert at_64["stage2"].steps == 5000
    assert (at_128["stage1"].mode_seeking, at_128["stage1"].steps) == (10.0, 2250)
    assert at_128["stage1"].size == at_128["stage2"].size == 128
    assert at_64["stage2"].fixed_bn_steps == 0
    assert at_128["stage2"].seg_discriminator and at_128["stage2"].seg_width == 8
    assert at_64["stage2"].seg_width == 16
    assert (at_128["stage2"].steps, at_128["stage2"].fixed_bn_steps) == (2500, 750)
    assert demo_configs(tmp_path, ROLES, 128, 1e-4)["stage2"].fixed_bn_steps == 0


def test_train_demo_refuses_a_bad_size_before_drawing_phantoms(tmp_path: Path) -> None:
    result = run_cli("train-demo", "--out", tmp_path / "demo", "--size", "48")
    assert_one_line_error(result, "--size must be a power of two from 32 to 1024, got 48")
    assert not (tmp_path / "demo").exists()
