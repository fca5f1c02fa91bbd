"""The EMA generator's batch-norm statistics are measured for its own weights."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from synthmed.training.batch_norm import (
    batch_norms,
    measured_generator,
    recalibrated,
    training_inputs,
)
from synthmed.training.checkpoint import STATE_FILE, load_generator, read_generator_info
from synthmed.training.config import AugmentConfig, TrainConfig
from synthmed.training.data.dataset import load_paired_data
from synthmed.training.loop import channels_last
from synthmed.training.tasks import make_task
from tests.conftest import TINY_TRAIN, assert_same_tensors, run_cli


def test_statistics_are_the_mean_of_the_batches_statistics() -> None:
    """Each batch counts the same, its variance unbiased (what training mode normalises by
    is the batch's own); the model given is left alone and the copy is ready to sample."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    model[1].running_mean.fill_(5.0)
    batches = [torch.randn(4, 1, 8, 8), 3 + 2 * torch.randn(2, 1, 8, 8)]
    measured = recalibrated(model, [(b,) for b in batches])
    with torch.no_grad():
        features = [model[0](b) for b in batches]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(0)
    var = torch.stack([f.transpose(0, 1).flatten(1).var(1) for f in features]).mean(0)
    torch.testing.assert_close(measured[1].running_mean, mean)
    torch.testing.assert_close(measured[1].running_var, var)
    assert not measured.training and measured[1].momentum == model[1].momentum
    assert torch.all(model[1].running_mean == 5.0)


def test_a_model_without_batch_norm_is_returned_as_it_is() -> None:
    model = nn.Conv2d(1, 1, 3)
    assert recalibrated(model, [(torch.zeros(1, 1, 4, 4),)]) is model


def test_a_large_training_set_is_measured_on_a_seeded_sample(retina64: Path) -> None:
    """Twelve images in batches of 4: all three batches, in order; capped at two batches,
    eight different training images, the same ones again for the same seed."""
    data = load_paired_data(retina64, 64, progress=False)
    plain = AugmentConfig(flips=False, colour_jitter=0.0)  # masks as stored
    cfg = TrainConfig(kind="stage2", data=str(retina64), batch_size=4, seed=3, augment=plain)
    task, cpu = make_task(cfg), torch.device("cpu")
    stored = data.masks.float() * 2 - 1

    def shown(max_batches: int) -> list[int]:
        """Which training images the batches hold, in order."""
        masks = torch.cat([m for m, _ in training_inputs(task, data, cpu, max_batches)])
        return [next(i for i, s in enumerate(stored) if torch.equal(s, m)) for m in masks]

    assert shown(64) == list(range(12))
    capped = shown(2)
    assert len(capped) == len(set(capped)) == 8
    assert shown(2) == capped


def test_saved_stage2_carries_statistics_of_its_own_weights(retina64: Path, tmp_path: Path) -> None:
    """The saved generator is the EMA's weights with statistics measured for them, not the
    EMA's average of the statistics along the way (which the resume state keeps)."""
    args = ["train", "stage2", "--data", retina64, "--out", tmp_path, *TINY_TRAIN, "--steps", "6"]
    assert run_cli(*args, "--size", "32").exit_code == 0
    saved = load_file(tmp_path / "model.safetensors")
    ema = {
        k.removeprefix("ema.module."): v
        for k, v in load_file(tmp_path / STATE_FILE).items()
        if k.startswith("ema.module.")
    }
    statistics = [k for k in saved if k.endswith(("running_mean", "running_var"))]
    assert statistics, "the stage II U-Net has batch norm"
    weights = [k for k in saved if k.endswith("weight")]
    assert all(torch.equal(saved[k], ema[k]) for k in weights)
    assert not any(torch.equal(saved[k], ema[k]) for k in statistics)

    generator, info = load_generator(tmp_path)
    assert info.metadata["batch_norm_statistics"] == "measured"
    cfg = TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())["train"])
    data = load_paired_data(retina64, cfg.size, progress=False)
    # measured again in the layout the trainer measures in, so that the sums run in its order
    channels_last(generator)
    again = measured_generator(generator, make_task(cfg), data, torch.device("cpu"))
    for ours, theirs in zip(batch_norms(again), batch_norms(generator), strict=True):
        assert torch.equal(ours.running_mean, theirs.running_mean)
        assert torch.equal(ours.running_var, theirs.running_var)


def test_fixed_statistics_resume_exactly_and_are_what_is_saved(
    retina64: Path, tmp_path: Path
) -> None:
    """--fixed-bn-steps: the window's statistics are measured once, at its first step, for the
    live generator; a run resumed before the window or inside it ends bit for bit where an
    uninterrupted one does (the option may be given on resume, to finish an older run with
    it); and the window changes the training. The saved generator is the EMA's weights with the
    statistics the generator trained with in the window."""
    base = ["train", "stage2", "--data", retina64, *TINY_TRAIN, "--size", "32", "--log-every", "1"]
    noise = ["--noise-channels", "2", "--mode-seeking", "1"]
    whole, before, inside = tmp_path / "whole", tmp_path / "before", tmp_path / "inside"
    assert (
        run_cli(*base, *noise, "--steps", "8", "--fixed-bn-steps", "3", "--out", whole).exit_code
        == 0
    )
    assert run_cli(*base, *noise, "--steps", "4", "--out", before).exit_code == 0
    assert (
        run_cli(*base, *noise, "--steps", "6", "--fixed-bn-steps", "1", "--out", inside).exit_code
        == 0
    )
    for run in (before, inside):
        resumed = run_cli(
            "train", "stage2", "--out", run, "--steps", "8", "--fixed-bn-steps", "3",
            "--resume", "--quiet",
        )  # fmt: skip
        assert resumed.exit_code == 0, resumed.output
        assert (run / "losses.csv").read_text() == (whole / "losses.csv").read_text()
        for name in ("model.safetensors", STATE_FILE):
            assert_same_tensors(run / name, whole / name)

    assert read_generator_info(whole).metadata["batch_norm_statistics"] == "fixed in training"
    saved, state = load_file(whole / "model.safetensors"), load_file(whole / STATE_FILE)
    for name, tensor in saved.items():  # the EMA's weights, the statistics it trained with
        source = "generator." if name.endswith(("running_mean", "running_var")) else "ema.module."
        assert torch.equal(tensor, state[source + name]), name

    plain = tmp_path / "plain"
    assert run_cli(*base, *noise, "--steps", "8", "--out", plain).exit_code == 0
    assert (plain / "losses.csv").read_text() != (whole / "losses.csv").read_text()
