"""`synthmed train stylegan2` and `export onnx --cstylegan2`: real runs on phantoms, real files."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file

from synthmed.export.graphs import ConditionalGraph
from synthmed.latents import latents
from synthmed.machine import cpu, has_bf16
from synthmed.training.checkpoint import load_generator
from synthmed.training.tasks import CONSISTENCY_SEGMENTER
from tests.conftest import TINY_STYLEGAN2, assert_one_line_error, run_cli


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_run_records_classes_grayscale_and_finite_losses(cstylegan2_run: Path) -> None:
    config = json.loads((cstylegan2_run / "config.json").read_text())
    assert config["role"] == "cstylegan2" and config["model"] == "cstylegan2_generator"
    assert config["model_config"]["classes"] == ["retina", "cells"]
    assert config["model_config"]["grayscale_classes"] == [1]  # gray cells, colour retina
    classes = config["data"]["classes"]
    assert [c["grayscale"] for c in classes] == [False, True]
    assert [c["count"] for c in classes] == [12, 8]
    rows = _rows(cstylegan2_run / "losses.csv")
    assert rows and {"loss_g", "loss_d", "r1", "path_length", "ada_p"} <= set(rows[0])
    # The discriminator's lead per class, beside the overall d_real and d_fake.
    assert {"d_lead_retina", "d_lead_cells"} <= set(rows[0])
    assert any(row["d_lead_retina"] != "" for row in rows)
    for row in rows:
        assert all(math.isfinite(float(v)) for v in row.values() if v != "")
    assert rows[-1]["r1"] != "" and rows[-1]["path_length"] != ""  # step 0 ran both
    evaluation = _rows(cstylegan2_run / "eval.csv")[-1]
    assert 0 <= float(evaluation["class_accuracy"]) <= 1
    assert (cstylegan2_run / "samples" / "step_000004.png").is_file()


@pytest.mark.usefixtures("grid_sample_without_second_derivative")
def test_r1_runs_where_the_augmentation_has_no_second_derivative(
    retina64: Path, tmp_path: Path
) -> None:
    """R1 at the augmented reals, not through ADA's resampling (no second derivative on CUDA):
    every transform on, from the first step."""
    args = ["--data", retina64, *TINY_STYLEGAN2, "--log-every", "1", "--r1-interval", "1"]
    args += ["--no-ada", "--ada-p", "1", "--steps", "2", "--out", tmp_path / "run"]
    result = run_cli("train", "stylegan2", *args)
    assert result.exit_code == 0, result.output
    assert all(float(row["r1"]) > 0 for row in _rows(tmp_path / "run" / "losses.csv"))


def test_mode_seeking_pairs_classes_and_binary_fakes_reach_the_discriminator(
    retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """--mode-seeking compares two latents of the same class (the G step's two halves share
    labels and per-pixel noise, so only the latents tell them apart); --binary-fakes shows
    the discriminator only masks in {-1, 1}, generated or real, while the generator's own
    mask channel stays continuous."""
    from synthmed.training.stylegan2_config import StyleGAN2TrainConfig
    from synthmed.training.train_stylegan2 import StyleGAN2Trainer

    cfg = StyleGAN2TrainConfig(
        data=(str(retina64), str(gray_cells64)),
        **{"z_dim": 16, "w_dim": 16, "mapping_layers": 1, "channel_base": 512},
        **{"max_channels": 32, "batch_size": 8, "ada_target": None, "pl_weight": 0},
        mode_seeking=1.0,
        binary_fakes=True,
    )
    trainer = StyleGAN2Trainer(cfg, tmp_path / "run", resume=False, progress=False)
    judged, mapped, made = [], [], []
    trainer.D.register_forward_pre_hook(lambda m, args: judged.append(args[0].detach()))
    trainer.G.mapping.register_forward_pre_hook(lambda m, args: mapped.append(args[1].clone()))
    judge = trainer._judged
    trainer._judged = lambda fake: made.append(fake.detach()) or judge(fake)
    stats = trainer.train_step(1)  # odd step: no R1, so every D input is a fake or a real
    assert trainer.log_row(stats)["mode_seeking_ratio"] == stats["mode_seeking_ratio"]
    assert math.isfinite(stats["mode_seeking_ratio"]) and stats["mode_seeking_ratio"] > 0
    g_labels = mapped[0]
    assert torch.equal(g_labels[:4], g_labels[4:])
    assert len(judged) == 3  # the G step's fakes, the D step's fakes, the reals
    for x in judged:
        assert set(x[:, -1].unique().tolist()) <= {-1.0, 1.0}
    assert not set(made[0][:, -1].unique().tolist()) <= {-1.0, 1.0}
    # The straight-through gradient saturates as a tanh does: a raw mask value far from 0 is
    # not pushed further (on the unbounded raw channel, that drift diverged training).
    raw = torch.tensor([0.0, 6.0, -6.0]).view(1, 1, 1, 3).expand(1, 4, 1, 3).requires_grad_()
    trainer._judged = judge
    judge(raw)[:, -1].sum().backward()
    assert raw.grad[0, -1, 0, 0] == 1 and raw.grad[0, -1, 0, 1:].abs().max() < 1e-4


def test_seg_discriminator_judges_each_image_through_the_frozen_segmenter(
    retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """--seg-discriminator: one segmenter, trained on both classes' real pairs and kept in the
    run, adds its view of each image as a last discriminator channel; the reals' view is the
    segmenter's prediction, and the generator's view carries its gradient (so the generator
    learns to draw vessels a segmenter finds), while the D step's fakes do not."""
    from synthmed.training.segmenter import predict
    from synthmed.training.stylegan2_config import StyleGAN2TrainConfig
    from synthmed.training.train_stylegan2 import StyleGAN2Trainer

    cfg = StyleGAN2TrainConfig(
        data=(str(retina64), str(gray_cells64)),
        **{"z_dim": 16, "w_dim": 16, "mapping_layers": 1, "channel_base": 512},
        **{"max_channels": 32, "batch_size": 4, "ada_target": None, "pl_weight": 0},
        seg_discriminator=True,
        seg_steps=3,
        seg_width=4,
    )
    run = tmp_path / "run"
    trainer = StyleGAN2Trainer(cfg, run, resume=False, progress=False)
    assert (run / CONSISTENCY_SEGMENTER).is_file()
    assert trainer.D.from_image.weight.shape[1] == 5  # RGB, mask, the segmenter's view
    assert trainer.model_config.view_channels == 0  # what the generator is saved with
    judged = []
    trainer.D.register_forward_pre_hook(lambda m, args: judged.append(args[0]))
    reals, _ = trainer._reals(1)
    assert reals.shape[1] == 5
    uint8 = ((reals[:, :3] + 1) * 127.5).round().to(torch.uint8)
    expected = torch.from_numpy(predict(trainer.segmenter, uint8)) * 2 - 1
    torch.testing.assert_close(reals[:, 4], expected, atol=1e-5, rtol=0)
    trainer.train_step(1)  # odd step: no R1; judged: the G step's fakes, D's fakes, reals
    g_fakes, d_fakes, _ = judged
    assert g_fakes[:, 4].requires_grad and not d_fakes[:, 4].requires_grad
    fake, _, _ = trainer._fakes(torch.tensor([0, 1]))
    (view_grad,) = torch.autograd.grad(trainer._judged(fake)[:, 4].sum(), fake)
    assert view_grad[:, :3].abs().sum() > 0  # reaches the image through the segmenter


def _same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.parametrize(
    "extra", [[], ["--seg-discriminator", "--seg-steps", "2"], ["--lecam", "0.5"]]
)
def test_resume_continues_exactly_and_keeps_snapshots(
    extra: list[str], retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """Lazy R1 and path length both fall after the interruption, and ADA's p moves; with
    --seg-discriminator the resumed run reads the segmenter it trained instead of training
    another; with --lecam the moving averages LeCam anchors to carry over."""
    args = ["--data", retina64, "--data", gray_cells64, *TINY_STYLEGAN2, "--log-every", "1"]
    args += extra
    args += ["--r1-interval", "3", "--pl-interval", "2", "--ada-kimg", "0.01"]
    args += ["--snapshot-every", "2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert run_cli("train", "stylegan2", *args, "--out", whole, "--steps", "5").exit_code == 0
    assert run_cli("train", "stylegan2", *args, "--out", split, "--steps", "2").exit_code == 0
    segmenter = split / CONSISTENCY_SEGMENTER
    written = segmenter.stat() if "--seg-discriminator" in extra else None
    resumed = run_cli("train", "stylegan2", "--out", split, "--steps", "5", "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    if "--seg-discriminator" in extra:  # read back, not trained and written again
        now = segmenter.stat()
        assert (now.st_ino, now.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert _rows(split / "losses.csv") == _rows(whole / "losses.csv")
    assert len({row["ada_p"] for row in _rows(whole / "losses.csv")}) > 1
    if "--lecam" in extra:  # logged, and moved by anchors that changed with each step
        assert len({float(row["lecam"]) for row in _rows(whole / "losses.csv")}) > 2
    assert _same_weights(split, whole)

    # Snapshots at steps 2 and 4 (not at the last step, which the run folder holds), each a
    # run folder that loads, the same whether or not the run was interrupted between them.
    for run in (whole, split):
        kept = sorted(p.name for p in (run / "snapshots").iterdir())
        assert kept == ["step_000002", "step_000004"]
    for name, step in (("step_000002", 2), ("step_000004", 4)):
        _, info = load_generator(whole / "snapshots" / name, role="cstylegan2")
        assert info.step == step
        assert _same_weights(whole / "snapshots" / name, split / "snapshots" / name)
    assert not _same_weights(whole / "snapshots" / "step_000002", whole)


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        ([], ("--data is required",)),
        (["--data", "{retina}", "--data", "{retina}"], ("both named", "--class-name")),
        (["--data", "{retina}", "--class-name", "a", "--class-name", "b"], ("2 --class-name",)),
        (["--data", "{retina}", "--class-name", "bad/name"], ("'bad/name'",)),
        (["--data", "{retina}", "--size", "32"], ("--size", "64 to 1024", "32")),
        (["--data", "{retina}", "--ada-target", "1.5"], ("--ada-target", "1.5")),
        (["--data", "{retina}", "--mode-seeking", "-1"], ("--mode-seeking", ">= 0", "-1")),
        (["--data", "{retina}", "--snapshot-every", "-5"], ("--snapshot-every", ">= 0", "-5")),
        (["--data", "{retina}", "--seg-width", "0"], ("--seg-width", ">= 1", "0")),
        (["--data", "{retina}", "--lecam", "-0.1"], ("--lecam", ">= 0", "-0.1")),
        (["--data", "{missing}"], ("does not exist",)),
    ],
)
def test_bad_input_is_one_line(
    extra: list[str], fragments: tuple[str, ...], retina64: Path, tmp_path: Path
) -> None:
    args = [a.format(retina=retina64, missing=tmp_path / "nowhere") for a in extra]
    result = run_cli("train", "stylegan2", *args, "--out", tmp_path / "run", *TINY_STYLEGAN2)
    assert_one_line_error(result, *fragments)


def test_bf16_trains_every_phase_where_the_cpu_has_it(
    retina64: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--precision bf16: every phase (generator with mode seeking, path length, discriminator,
    R1) under autocast, losses finite and not the fp32 run's, weights saved fp32; refused in
    one line, before the run folder is made, on a CPU without bf16 arithmetic."""
    args = ["--data", retina64, *TINY_STYLEGAN2, "--log-every", "1", "--steps", "2"]
    args += ["--r1-interval", "1", "--pl-interval", "1", "--mode-seeking", "1", "--binary-fakes"]
    args += ["--device", "cpu"]
    if has_bf16(cpu()):
        runs = {p: tmp_path / p for p in ("fp32", "bf16")}
        for precision, run in runs.items():
            result = run_cli("train", "stylegan2", *args, "--precision", precision, "--out", run)
            assert result.exit_code == 0, result.output
        assert json.loads((runs["bf16"] / "config.json").read_text())["precision"] == "bf16"
        rows = {p: _rows(run / "losses.csv") for p, run in runs.items()}
        for row in rows["bf16"]:
            assert all(math.isfinite(float(v)) for v in row.values() if v != "")
        assert rows["bf16"][0]["loss_g"] != rows["fp32"][0]["loss_g"]  # autocast did run
        saved = load_file(runs["bf16"] / "model.safetensors").values()
        assert all(t.dtype == torch.float32 for t in saved if t.is_floating_point())
    without = {**cpu(), "flags": dict.fromkeys(cpu()["flags"], False)}
    monkeypatch.setattr("synthmed.training.loop.cpu", lambda: without)
    refused = run_cli("train", "stylegan2", *args, "--precision", "bf16", "--out", tmp_path / "no")
    assert_one_line_error(refused, "--precision bf16 on a CPU needs AVX-512 BF16 or AMX")
    assert not (tmp_path / "no").exists()


def test_resume_refuses_to_change_the_architecture(cstylegan2_run: Path) -> None:
    result = run_cli("train", "stylegan2", "--out", cstylegan2_run, "--resume", "--z-dim", "32")
    assert_one_line_error(result, "--z-dim 32 differs", "16")


def test_export_contract_parity_and_conditioning(
    cstylegan2_run: Path, cstylegan2_onnx: Path
) -> None:
    manifest = json.loads((cstylegan2_onnx / "export_manifest.json").read_text())
    entry = manifest["models"]["synthmed_cstylegan2"]
    assert entry["inputs"] == {
        "z": {"dtype": "float32", "shape": [-1, 16]},
        "class": {"dtype": "int64", "shape": [-1]},
        "truncation": {"dtype": "float32", "shape": [-1]},
    }
    assert entry["outputs"]["image"] == {"dtype": "uint8", "shape": [-1, 64, 64, 3]}
    assert entry["classes"] == ["retina", "cells"] and entry["grayscale_classes"] == [1]
    # Export's fp32 tolerance (0 here; a mask pixel at the threshold may flip on another CPU).
    assert all(c["mismatch_fraction"] <= 1e-3 for c in entry["verification"])

    session = ort.InferenceSession(str(cstylegan2_onnx / entry["file"]))
    z = latents(3, range(5), 16)
    labels = np.array([0, 1, 0, 1, 1])
    psi = np.array([1.0, 1.0, 0.5, 0.5, 0.0], np.float32)
    image, mask = session.run(["image", "mask"], {"z": z, "class": labels, "truncation": psi})
    generator, _ = load_generator(cstylegan2_run, role="cstylegan2")
    with torch.no_grad():
        ref = ConditionalGraph(generator)(
            torch.from_numpy(z), torch.from_numpy(labels), torch.from_numpy(psi)
        )
    assert np.abs(image.astype(int) - ref[0].numpy()).max() <= 1
    assert set(np.unique(mask)) <= {0, 255}
    gray = image[labels == 1]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    (other,) = session.run(["image"], {"z": z, "class": 1 - labels, "truncation": psi})
    assert not np.array_equal(other[0], image[0])  # the class changes the sample


def test_export_refuses_a_dual_gan_run_as_cstylegan2(tmp_path: Path) -> None:
    from synthmed.training.sample import DEMO_STAGE1

    result = run_cli("export", "onnx", "--cstylegan2", DEMO_STAGE1, "--out", tmp_path / "o")
    assert_one_line_error(result, "is a stage1 checkpoint, expected cstylegan2")


def test_resume_as_a_dual_gan_kind_is_refused(cstylegan2_run: Path) -> None:
    result = run_cli("train", "stage1", "--out", cstylegan2_run, "--resume")
    assert_one_line_error(result, "is a cstylegan2 checkpoint, expected stage1")


def test_torchrun_two_processes_average_gradients(
    retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """Gradients averaged by hand over gloo (R1 and path length need a double backward,
    which DistributedDataParallel cannot wrap): the multi-GPU path, with two CPU workers."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "synthmed", "train", "stylegan2"]
    command += ["--data", str(retina64), "--data", str(gray_cells64), "--out", str(tmp_path)]
    command += ["--steps", "3", "--pl-interval", "2", "--log-every", "1", *TINY_STYLEGAN2]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["step"] for row in _rows(tmp_path / "losses.csv")] == ["0", "1", "2"]
    assert load_generator(tmp_path, role="cstylegan2")[1].step == 3
