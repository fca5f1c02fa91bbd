"""Rebuild the bundled demo models from nothing: retina phantoms -> stage I -> stage II.

    synthmed train-demo --precision bf16 --out training/demo_models

The demo pair is small on purpose (128x128, narrow layers, about 14 MB of weights together) so
it ships inside the package, serves on a CPU and samples in seconds. It trains the 64x64 recipe
(DEMO_RUNS) with the changes measured at 128x128 (SIZE_RECIPES), and meets every quality target
there; in bf16 on 2 CPU cores with AVX-512 BF16 it took 58 minutes; in fp32 (the default on a
CPU, and the only choice without bf16 arithmetic) about two hours, estimated from step times
(docs/quality.md#128x128). `--size 64` trains the 64x64 recipe alone.
Only config.json, model.safetensors and the last sample grid of each run are kept; the resume
state is not.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from synthmed.atomic import write_text_atomic
from synthmed.training.config import TrainConfig

DEMO_DATA = {"kind": "retina", "count": 500, "size": 128, "seed": 2026}
DEMO_RUNS = {
    "stage1": {
        "steps": 4000,
        "batch_size": 16,
        "ngf": 32,
        "ndf": 32,
        "max_channels": 256,
        # DiffAugment + R1: real vessel widths; the mode-seeking term: masks as varied as the
        # real ones; binarised fakes: the discriminator judges the masks stage II is given.
        # Together the full pipeline's F1 0.928x real, against the plain DCGAN's 0.898x
        # (benchmarks/stage1_variants.py; docs/quality.md). The mask confidence is chosen
        # after training (training/mask_confidence.py): 0.99 for the bundled run, which takes
        # its masks from 8.3 to 2.8 pieces each (real: 2.7) at the same F1.
        "diff_augment": ("translate", "cutout"),
        "r1_gamma": 1.0,
        "mode_seeking": 1.0,
        "binary_fakes": True,
    },
    "stage2": {
        "steps": 5000,
        "batch_size": 16,
        "ngf": 32,
        "ndf": 32,
        "max_channels": 64,
        # Four noise maps spread from z, used because of the mode-seeking term: the oracle arm
        # 0.958x real F1, against the deterministic U-Net's 0.936x (docs/quality.md). The
        # PatchGAN that also sees a frozen segmenter's view of each image: 0.970x and 0.969x
        # over two training seeds, against 0.959x and 0.951x without it (rows 75-76).
        # 5,000 steps rather than 4,000: 0.976x over three seeds against 0.971x for the same
        # runs at 4,000 (rows 89-96); at 6,000 the gain is gone or the colours drift.
        "noise_channels": 4,
        "mode_seeking": 1.0,
        "seg_discriminator": True,
    },
}
# What changes with the size, measured at 128x128 (docs/quality.md#128x128): a heavier
# mode-seeking term, trained longer, keeps stage I's masks as varied as the real ones (pairwise
# IoU 1.10x real at weight 10 and 4,500 steps, 1.14x at 7,000, against 1.64x with the 64x64
# settings); stage II trains its last 1,500 steps with fixed batch-norm statistics: 500 such
# steps took the renders darker or brighter than every photograph from 5.6 % to 1.2 %, and
# 1,000 more raised the oracle arm from 0.967x to 0.977x (training seed 2028) and from 0.919x
# to 0.982x (seed 2029) and brought the colours back (intensity KL 0.174 to 0.030). The step
# counts and the frozen segmenter's width 8 (0.72x stage II's step) are what fits
# `train-demo` in the hour on 2 cores: 58 minutes in bf16, oracle 0.971x and full pipeline
# 0.958x, against 0.976x and 0.952x for 5,000 / 6,000 steps at width 16 in 83 minutes.
# Other sizes train the 64x64 recipe, unmeasured.
SIZE_RECIPES = {
    128: {
        "stage1": {"mode_seeking": 10.0, "steps": 4500},
        "stage2": {"steps": 5000, "fixed_bn_steps": 1500, "seg_width": 8},
    },
}
ROLES = tuple(DEMO_RUNS)


def demo_configs(
    data: Path,
    roles: tuple[str, ...],
    size: int,
    steps_scale: float,
    precision: str = TrainConfig.precision,
) -> dict[str, TrainConfig]:
    """Each role's training settings: the demo recipe, with SIZE_RECIPES' changes at `size`
    and every step count (the fixed batch-norm window's too) scaled by `steps_scale`, trained
    in `precision` (--precision bf16 on a CPU with bf16 arithmetic, for speed). Built
    before any phantom is drawn, so that a bad size is refused first."""
    configs = {}
    for role in roles:
        recipe = {**DEMO_RUNS[role], **SIZE_RECIPES.get(size, {}).get(role, {})}
        steps = max(1, round(recipe["steps"] * steps_scale))
        fixed_bn_steps = min(steps, round(recipe.get("fixed_bn_steps", 0) * steps_scale))
        configs[role] = TrainConfig(
            kind=role,
            data=str(data),
            size=size,
            seed=DEMO_DATA["seed"],
            precision=precision,
            sample_every=max(steps // 10, 1),
            checkpoint_every=steps,
            # stage II's frozen segmenter is trained too: its steps scale with the GAN's
            seg_steps=max(1, round(TrainConfig.seg_steps * steps_scale)),
            **{**recipe, "steps": steps, "fixed_bn_steps": fixed_bn_steps},
        )
    return configs


def _record_data_source(source: Path, target: Path, recipe: dict) -> None:
    """Copy config.json, naming the command that makes the training data (`recipe`: the
    phantom settings) instead of the temporary folder it lived in."""
    config = json.loads(source.read_text())
    command = "synthmed data phantom " + " ".join(f"--{k} {v}" for k, v in recipe.items())
    config["data"]["path"] = config["train"]["data"] = command
    write_text_atomic(target, json.dumps(config, indent=2, sort_keys=True) + "\n")


def train_demo(
    out: Path,
    *,
    roles: tuple[str, ...] = ROLES,
    size: int = DEMO_DATA["size"],
    steps_scale: float = 1.0,
    precision: str = TrainConfig.precision,
    progress: bool = True,
) -> dict[str, Path]:
    """Train the demo's `roles` (stage I and stage II are independent: each learns from the
    phantoms alone) into out/ROLE; returns their paths. `size` other than the bundled 128
    trains the recipe of demo_configs on phantoms of that size."""
    # Imported here so that the CLI can read ROLES without loading torch.
    from synthmed.training.checkpoint import CONFIG_FILE, WEIGHTS_FILE
    from synthmed.training.data.phantom import write_phantom_dataset
    from synthmed.training.train import train

    out = Path(out)
    written = {}
    recipe = {**DEMO_DATA, "size": size}
    with tempfile.TemporaryDirectory(prefix="synthmed-demo-") as work:
        data = Path(work) / "data"
        configs = demo_configs(data, roles, size, steps_scale, precision)
        write_phantom_dataset(
            recipe["kind"], data, recipe["count"], size, recipe["seed"], progress=progress
        )
        for role, cfg in configs.items():
            run = Path(work) / role
            train(cfg, run, progress=progress)
            target = out / role
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for name in (WEIGHTS_FILE, "eval.csv"):
                shutil.copy2(run / name, target / name)
            _record_data_source(run / CONFIG_FILE, target / CONFIG_FILE, recipe)
            shutil.copy2(sorted((run / "samples").iterdir())[-1], target / "samples.png")
            written[role] = target
    return written
