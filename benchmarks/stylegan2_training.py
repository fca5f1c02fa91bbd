"""How a conditional StyleGAN2 run trained: losses per window of steps, and whether its classes
differ. Prints two tables and writes JSON.

    .venv/bin/python benchmarks/stylegan2_training.py RUN [--samples 256] [--window 100]

Losses: the mean of each `losses.csv` column over windows of steps (R1 and path length hold
their last value between lazy steps, so their window mean is a running level). Classes: the
EMA generator draws `--samples` samples per class (seed 0, psi 1, fixed noise, as exported);
a nearest-centroid classifier fitted on the run's *real* training data (luma and mask
statistics, no colour: training/class_statistics.py) assigns each to a class. Accuracy far
above chance (1 / classes) says the classes differ measurably; the confusion matrix says how.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch
from _machine import header, machine

from synthmed.latents import latents
from synthmed.training.checkpoint import load_generator
from synthmed.training.class_statistics import FRACTION, sample_features
from synthmed.training.data.classes import load_class_data

COLUMNS = ("loss_g", "loss_d", "d_real", "d_fake", "r1", "path_length", "ada_p")


def loss_windows(run: Path, window: int) -> list[dict[str, float]]:
    """Mean of every loss column per window of `window` steps."""
    with (run / "losses.csv").open() as f:
        rows = list(csv.DictReader(f))
    out = []
    for start in range(0, int(rows[-1]["step"]) + 1, window):
        chosen = [r for r in rows if start <= int(r["step"]) < start + window]
        entry: dict[str, float] = {"steps": f"{start}-{start + window - 1}"}
        for name in COLUMNS:
            values = [float(r[name]) for r in chosen if r.get(name, "") != ""]
            entry[name] = float(np.mean(values)) if values else float("nan")
        out.append(entry)
    return out


@torch.no_grad()
def class_check(run: Path, samples: int) -> dict:
    """Nearest-centroid accuracy and confusion of generated samples, per class."""
    generator, info = load_generator(run, role="cstylegan2")
    classes = info.metadata["data"]["classes"]
    data = load_class_data(
        [c["data"] for c in classes], info.image_size, names=[c["name"] for c in classes]
    )
    real = sample_features(data.images.float() / 255, data.masks)
    mean, std = real.mean(dim=0), real.std(dim=0).clamp(min=1e-6)
    k = len(classes)
    centroids = torch.stack([((real[data.labels == c] - mean) / std).mean(0) for c in range(k)])
    confusion = np.zeros((k, k), dtype=int)
    fractions = {}
    for label in range(k):
        z = torch.from_numpy(latents(0, range(samples), info.model_config.z_dim))
        labels = torch.full((samples,), label, dtype=torch.int64)
        out = torch.cat(
            [generator(z[i : i + 64], labels[i : i + 64]) for i in range(0, samples, 64)]
        )
        fake = sample_features((out[:, :3].clamp(-1, 1) + 1) / 2, (out[:, 3:] > 0).float())
        predicted = torch.cdist((fake - mean) / std, centroids).argmin(dim=1)
        confusion[label] = np.bincount(predicted.numpy(), minlength=k)
        fractions[classes[label]["name"]] = {
            "generated": float(fake[:, FRACTION].mean()),
            "real": float(real[data.labels == label, FRACTION].mean()),
        }
    # The same classifier on the real data itself: how separable the classes are to begin with.
    real_predicted = torch.cdist((real - mean) / std, centroids).argmin(dim=1)
    return {
        "classes": [c["name"] for c in classes],
        "samples_per_class": samples,
        "accuracy": float(np.trace(confusion) / confusion.sum()),
        "chance": 1 / k,
        "real_accuracy": float((real_predicted == data.labels).float().mean()),
        "confusion": confusion.tolist(),
        "mask_fraction": fractions,
        "step": info.step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument(
        "--json", type=Path, default=Path("benchmarks/results/stylegan2_training.json")
    )
    args = parser.parse_args()
    windows = loss_windows(args.run, args.window)
    recorded = machine()
    print(f"{header(recorded)}\n")
    print("| steps | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for w in windows:
        print(f"| {w['steps']} | " + " | ".join(f"{w[c]:.3f}" for c in COLUMNS) + " |")
    check = class_check(args.run, args.samples)
    print(f"\nclass check at step {check['step']}, {args.samples} samples per class:")
    print(
        f"accuracy {check['accuracy']:.3f} (chance {check['chance']:.3f}; the same classifier "
        f"on the real data: {check['real_accuracy']:.3f})"
    )
    print(
        "| drawn as \\ classified as | "
        + " | ".join(check["classes"])
        + " | mask fraction (real) |"
    )
    print("|---|" + "---:|" * (len(check["classes"]) + 1))
    for name, row in zip(check["classes"], check["confusion"], strict=True):
        fraction = check["mask_fraction"][name]
        print(
            f"| {name} | "
            + " | ".join(str(v) for v in row)
            + f" | {fraction['generated']:.3f} ({fraction['real']:.3f}) |"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {"run": str(args.run), "machine": recorded, "losses": windows, "classes": check},
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
