"""`synthmed train stylegan2 --init-from`: a run that starts from another run's weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from synthmed.training.checkpoint import load_generator
from synthmed.training.models import create_model
from synthmed.training.stylegan2_config import StyleGAN2TrainConfig
from synthmed.training.train_stylegan2 import StyleGAN2Trainer
from tests.conftest import TINY_STYLEGAN2, assert_one_line_error, run_cli

TINY_WIDTHS = {"z_dim": 16, "w_dim": 16, "mapping_layers": 1, "channel_base": 512}


@pytest.fixture(scope="module")
def retina_run(retina64: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-class run (retina), 3 steps, with a snapshot at step 2."""
    out = tmp_path_factory.mktemp("retina_alone") / "run"
    args = ["--data", retina64, "--class-name", "retina", *TINY_STYLEGAN2, "--steps", "3"]
    result = run_cli("train", "stylegan2", *args, "--snapshot-every", "2", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def _under(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _trainer(
    source: Path, data: tuple[Path, ...], names: tuple[str, ...], out: Path, **settings: Any
) -> StyleGAN2Trainer:
    cfg = StyleGAN2TrainConfig(
        data=tuple(map(str, data)),
        class_names=names,
        **TINY_WIDTHS,
        max_channels=32,
        batch_size=4,
        init_from=str(source),
        **settings,
    )
    return StyleGAN2Trainer(cfg, out, resume=False, progress=False)


def test_a_carried_class_draws_exactly_as_in_the_source(
    retina_run: Path, retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """The retina class, now second of two, samples the same images (truncated too: its
    average w came along), and the discriminator scores any image of it as before; the new
    class starts from the new run's initialisation, not from the retina rows; the path-length
    mean comes along with the generator."""
    trainer = _trainer(retina_run, (gray_cells64, retina64), ("cells", "retina"), tmp_path / "r")
    source, info = load_generator(retina_run, role="cstylegan2")
    state = load_file(retina_run / "training_state.safetensors")
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for psi in (1.0, 0.7):
            ours = trainer.ema.module.eval()(z, torch.ones(5, dtype=torch.long), psi)
            theirs = source(z, torch.zeros(5, dtype=torch.long), psi)
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        critic = create_model("cstylegan2_discriminator", info.model_config)
        critic.load_state_dict(_under(state, "discriminator."))
        x = torch.rand(5, 4, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
        scores = trainer.D.eval()(x, torch.ones(5, dtype=torch.long))
        torch.testing.assert_close(scores, critic.eval()(x, torch.zeros(5, dtype=torch.long)))
        assert not torch.equal(trainer.D.embed[0], state["discriminator.embed"][0])
        w_avg = trainer.ema.module.mapping.w_avg
        assert torch.equal(w_avg[1], state["ema.module.mapping.w_avg"][0])
        assert not torch.equal(w_avg[0], w_avg[1])
    assert trainer.ema.module.grayscale.tolist() == [1.0, 0.0]  # from this run's data
    with safe_open(retina_run / "training_state.safetensors", framework="pt") as f:
        pl_mean = json.loads(f.metadata()["extra"])["pl_mean"]
    assert pl_mean > 0 and float(trainer.pl_mean) == pytest.approx(pl_mean)


def test_from_a_snapshot_the_discriminator_starts_afresh(
    retina_run: Path, retina64: Path, tmp_path: Path
) -> None:
    snapshot = retina_run / "snapshots" / "step_000002"
    trainer = _trainer(snapshot, (retina64,), ("retina",), tmp_path / "run")
    assert trainer.initialised_from["networks"] == ["ema", "generator"]
    state = load_file(retina_run / "training_state.safetensors")
    assert not torch.equal(trainer.D.embed, state["discriminator.embed"])
    weights = load_file(snapshot / "model.safetensors")
    assert all(torch.equal(v, trainer.G.state_dict()[k]) for k, v in weights.items())


def test_cli_adopts_the_source_architecture_and_records_where_it_started(
    retina_run: Path, retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """No width typed: the source's are used. config.json names the source and its step and
    weights, and keeps naming them after a resume."""
    out = tmp_path / "run"
    args = ["--data", retina64, "--data", gray_cells64, "--class-name", "retina"]
    args += ["--class-name", "cells", "--steps", "2", "--batch-size", "4", "--quiet"]
    result = run_cli("train", "stylegan2", *args, "--init-from", retina_run, "--out", out)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    source = json.loads((retina_run / "config.json").read_text())
    for name in ("z_dim", "w_dim", "mapping_layers", "channel_base", "max_channels"):
        assert config["model_config"][name] == source["model_config"][name]
    record = config["initialised_from"]
    assert record["step"] == 3 and record["weights_sha256"] == source["weights_sha256"]
    assert record["networks"] == ["discriminator", "ema", "generator"]
    resumed = run_cli("train", "stylegan2", "--out", out, "--resume", "--steps", "3", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "config.json").read_text())["initialised_from"] == record


def _drift(
    trainer: StyleGAN2Trainer, source: torch.nn.Module, label: int, their_label: int
) -> float:
    """How far the trained generator's samples of class `label` (its own, not its slow
    EMA's) are from another generator's of `their_label`, for the same latents."""
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = trainer.G.eval()(z, torch.full((8,), label))
        return float((ours - source(z, torch.full((8,), their_label))).abs().mean())


def test_distill_holds_the_carried_class_while_the_new_one_trains(
    retina_run: Path, retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """With --distill the retina class (carried, now second) stays nearer the source's samples
    than without, over the same steps and draws. The run records its teacher, and a resume
    reads it again and holds the class to the same samples; a teacher changed in between is
    refused in one line."""
    teacher = shutil.copytree(retina_run, tmp_path / "source")
    source, _ = load_generator(teacher, role="cstylegan2")
    data, names = (gray_cells64, retina64), ("cells", "retina")
    drift = {}
    for weight in (0.0, 100.0):
        out = tmp_path / f"distill{weight:g}"
        trainer = _trainer(teacher, data, names, out, distill=weight, steps=8)
        trainer.run()
        drift[weight] = _drift(trainer, source, label=1, their_label=0)
    assert drift[100.0] < 0.5 * drift[0.0], drift
    rows = (out / "losses.csv").read_text().splitlines()
    assert "distill" in rows[0].split(",") and len(rows) > 1
    record = json.loads((out / "config.json").read_text())["distilled_from"]
    assert [r["classes"] for r in record] == [["retina"]] and record[0]["step"] == 3
    resumed = run_cli("train", "stylegan2", "--out", out, "--resume", "--steps", "9", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((out / "config.json").read_text())["distilled_from"] == record
    weights = teacher / "model.safetensors"
    save_file({k: v + 1 for k, v in load_file(weights).items()}, weights)
    again = run_cli("train", "stylegan2", "--out", out, "--resume", "--steps", "10")
    assert_one_line_error(again, "--distill teacher", "sha256 does not match")


def test_distill_from_merges_generators_trained_one_class_each(
    retina_run: Path, retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """Started from the retina run, the cells class is held to a cells-alone run's samples
    (--distill-from): over the same steps and draws it comes nearer them than it does from
    its data alone, and each class is recorded with the teacher that holds it."""
    cells = tmp_path / "cells"
    args = ["--data", gray_cells64, "--class-name", "cells", *TINY_STYLEGAN2, "--steps", "2"]
    assert run_cli("train", "stylegan2", *args, "--out", cells).exit_code == 0
    teacher, _ = load_generator(cells, role="cstylegan2")
    data, names = (retina64, gray_cells64), ("retina", "cells")
    drift = {}
    for weight in (0.0, 100.0):
        held = {"distill": weight, "distill_from": (str(cells),)} if weight else {}
        trainer = _trainer(retina_run, data, names, tmp_path / f"m{weight:g}", steps=8, **held)
        drift["start"] = _drift(trainer, teacher, label=1, their_label=0)
        trainer.run()
        drift[weight] = _drift(trainer, teacher, label=1, their_label=0)
    assert [r["classes"] for r in trainer.teachers.records] == [["retina"], ["cells"]]
    assert drift[100.0] < min(drift[0.0], drift["start"]), drift


def test_resume_refuses_a_teacher_replaced_by_another_run(
    retina_run: Path, retina64: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    """A teacher folder that now holds another valid generator (here the source's own earlier
    snapshot) is not the one the run was held to: a resume stops in one line."""
    teacher = shutil.copytree(retina_run, tmp_path / "source")
    args = ["--data", gray_cells64, "--data", retina64, "--class-name", "cells"]
    args += ["--class-name", "retina", "--steps", "2", "--batch-size", "4", "--quiet"]
    out = tmp_path / "run"
    started = run_cli(
        "train", "stylegan2", *args, "--init-from", teacher, "--distill", "10", "--out", out
    )
    assert started.exit_code == 0, started.output
    shutil.rmtree(teacher)
    shutil.copytree(retina_run / "snapshots" / "step_000002", teacher)
    again = run_cli("train", "stylegan2", "--out", out, "--resume", "--steps", "3", "--quiet")
    assert_one_line_error(again, "--resume", "not those this run started with")


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--z-dim", "32"], ("architecture differs", "z_dim 16 there, 32 here")),
        (["--seg-discriminator", "--seg-steps", "1"], ("discriminator tensor", "from_image")),
        (["--resume"], ("--init-from starts a run", "--resume")),
        (["--distill", "-1"], ("--distill must be >= 0", "got -1")),
    ],
)
def test_a_source_that_does_not_fit_is_one_line(
    extra: list[str], fragments: tuple[str, ...], retina_run: Path, retina64: Path, tmp_path: Path
) -> None:
    args = ["--data", retina64, "--init-from", retina_run, "--out", tmp_path / "run", *extra]
    assert_one_line_error(run_cli("train", "stylegan2", *args, "--quiet"), *fragments)


def test_distill_without_a_class_to_hold_is_one_line(
    retina_run: Path, gray_cells64: Path, tmp_path: Path
) -> None:
    args = ["--data", gray_cells64, "--distill", "10", "--out", tmp_path / "run", "--quiet"]
    assert_one_line_error(run_cli("train", "stylegan2", *args), "--distill", "--init-from")
    args += ["--class-name", "cells", "--distill-from", retina_run]
    assert_one_line_error(run_cli("train", "stylegan2", *args), "z_dim 16 there, 128 here")
    assert_one_line_error(
        run_cli("train", "stylegan2", *args, *TINY_STYLEGAN2),
        "--distill teacher",
        "none of this run's",
        "cells",
    )
    args = ["--data", gray_cells64, "--distill-from", retina_run, "--out", tmp_path / "r2"]
    assert_one_line_error(run_cli("train", "stylegan2", *args), "--distill-from", "--distill")


def test_a_dual_gan_run_or_a_missing_folder_is_not_a_source(tmp_path: Path, retina64: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "config.json").write_text(
        json.dumps(
            {"format": "synthmed-checkpoint/1", "role": "stage2", "model": "x", "model_config": {}}
        )
    )
    args = ["--data", retina64, "--init-from", tmp_path / "src", "--out", tmp_path / "run"]
    assert_one_line_error(
        run_cli("train", "stylegan2", *args), "--init-from", "expected cstylegan2"
    )
    args[3] = tmp_path / "nowhere"
    assert_one_line_error(run_cli("train", "stylegan2", *args), "--init-from", "does not exist")
