"""Rebuild the bundled demo models from nothing: retina phantoms -> stage I -> stage II.

    synthmed train-demo --out training/demo_models

The demo pair is small on purpose (64x64, narrow layers, about 8 MB of weights together) so it
ships inside the package, serves on a CPU and samples in seconds. (At 128x128 the same DCGAN
collapsed to a single vessel tree within 1,500 steps on this CPU budget; see the README.)
Only config.json, model.safetensors and the last sample grid of each run are kept; the resume
state is not.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from synthmed.atomic import write_text_atomic
from synthmed.training.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from synthmed.training.config import TrainConfig
from synthmed.training.data.phantom import write_phantom_dataset
from synthmed.training.train import train

DEMO_DATA = {"kind": "retina", "count": 500, "size": 64, "seed": 2026}
DEMO_RUNS = {
    "stage1": {"steps": 4000, "batch_size": 16, "ngf": 32, "ndf": 32, "max_channels": 256},
    "stage2": {"steps": 2000, "batch_size": 16, "ngf": 32, "ndf": 32, "max_channels": 64},
}


def _record_data_source(source: Path, target: Path) -> None:
    """Copy config.json, naming the command that makes the training data instead of the
    temporary folder it lived in."""
    config = json.loads(source.read_text())
    command = "synthmed data phantom " + " ".join(f"--{k} {v}" for k, v in DEMO_DATA.items())
    config["data"]["path"] = config["train"]["data"] = command
    write_text_atomic(target, json.dumps(config, indent=2, sort_keys=True) + "\n")


def train_demo(out: Path, *, steps_scale: float = 1.0, progress: bool = True) -> dict[str, Path]:
    """Train the demo stage I and stage II into out/stage1 and out/stage2; returns their paths."""
    out = Path(out)
    written = {}
    with tempfile.TemporaryDirectory(prefix="synthmed-demo-") as work:
        data = Path(work) / "data"
        write_phantom_dataset(
            DEMO_DATA["kind"],
            data,
            DEMO_DATA["count"],
            DEMO_DATA["size"],
            DEMO_DATA["seed"],
            progress=progress,
        )
        for role, settings in DEMO_RUNS.items():
            steps = max(1, round(settings["steps"] * steps_scale))
            cfg = TrainConfig(
                kind=role,
                data=str(data),
                size=DEMO_DATA["size"],
                seed=DEMO_DATA["seed"],
                sample_every=max(steps // 10, 1),
                checkpoint_every=steps,
                **{**settings, "steps": steps},
            )
            run = Path(work) / role
            train(cfg, run, progress=progress)
            target = out / role
            if target.exists():
                shutil.rmtree(target)
            target.mkdir(parents=True)
            for name in (WEIGHTS_FILE, "eval.csv"):
                shutil.copy2(run / name, target / name)
            _record_data_source(run / CONFIG_FILE, target / CONFIG_FILE)
            shutil.copy2(sorted((run / "samples").iterdir())[-1], target / "samples.png")
            written[role] = target
    return written
