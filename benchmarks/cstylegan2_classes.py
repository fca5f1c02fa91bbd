"""Helpers for benchmarks/evaluate_cstylegan2.sh: a run's classes, and one table of per-class
`synthmed evaluate --cstylegan2` results.

    python benchmarks/cstylegan2_classes.py classes RUN
        one line per class, tab-separated: index, name, image size, grayscale (0/1), and the
        data folder the run was trained on for that class ("-" when config.json has none)

    python benchmarks/cstylegan2_classes.py combine --out RESULTS.json REPORT_DIR...
        reads REPORT_DIR/metrics.json of each class's evaluation, prints a markdown table
        (U-Net trained on real only vs real + synthetic vs synthetic only: F1 at the
        validation threshold and AUC on held-out real test images) and writes it as JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from _machine import header, machine

from synthmed.errors import SynthmedError
from synthmed.training.checkpoint import read_generator_info

ARMS = ("real", "real+synthetic", "synthetic")


def classes(run: Path) -> None:
    info = read_generator_info(run, "cstylegan2")
    config = info.model_config
    recorded = info.metadata.get("data", {}).get("classes", [])
    for k, name in enumerate(config.classes):
        data = recorded[k].get("data", "-") if k < len(recorded) else "-"
        gray = int(k in config.grayscale_classes)
        print(f"{k}\t{name}\t{config.size}\t{gray}\t{data}")


def _arms(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    keys = ("f1_at_threshold", "auc_roc", "f1_at_half", "threshold")
    return {r["arm"]: {k: r[k] for k in keys} for r in rows}


def class_row(report: Path) -> dict[str, Any]:
    metrics = json.loads((report / "metrics.json").read_text())
    inputs = metrics["inputs"]
    chosen = inputs["cstylegan2"]
    if chosen is None:
        raise SystemExit(f"{report}: not an evaluation of a conditional StyleGAN2 class")
    label = inputs["synthetic"]["label"]
    small: dict[int, dict[str, dict[str, float]]] = {}
    for row in metrics["small_data"]:
        small.setdefault(row["real_images"], {})[row["arm"]] = _arms([row])[row["arm"]]
    return {
        "class": chosen["class"],
        "class_index": chosen["class_index"],
        "truncation": chosen["truncation"],
        "real_train_images": inputs["real_train"]["images"],
        "test_images": inputs["test"]["images"],
        "synthetic_images": inputs["synthetic"]["images"],
        "arms": _arms(metrics["downstream"]),
        "small_data": {str(n): arms for n, arms in sorted(small.items())},
        "intensity_kl": metrics["intensity_kl"][label]["mean"],
        "intensity_kl_floor": metrics["intensity_kl"]["real (held-out)"]["mean"],
        "flagged": metrics["privacy"][label]["flagged"],
        "report": str(report),
        "command": metrics["command"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ["class", "real / test / synthetic"]
    head += [f"F1 {a}" for a in ARMS] + [f"AUC {a}" for a in ARMS]
    head += ["KL (floor)", "flagged"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["class"], f"{r['real_train_images']} / {r['test_images']} / "]
        cells[-1] += str(r["synthetic_images"])
        cells += [f"{r['arms'][a]['f1_at_threshold']:.4f}" for a in ARMS]
        cells += [f"{r['arms'][a]['auc_roc']:.4f}" for a in ARMS]
        cells += [f"{r['intensity_kl']:.4f} ({r['intensity_kl_floor']:.4f})", str(r["flagged"])]
        lines.append("| " + " | ".join(cells) + " |")
    small = [(r["class"], n, arms) for r in rows for n, arms in r["small_data"].items()]
    if small:
        lines += ["", "| class | real images | F1 real | F1 real+synthetic |", "|---|---|---|---|"]
        for name, n, arms in small:
            f1 = [f"{arms[a]['f1_at_threshold']:.4f}" for a in ("real", "real+synthetic")]
            lines.append(f"| {name} | {n} | {f1[0]} | {f1[1]} |")
    return "\n".join(lines)


def combine(out: Path, reports: list[Path]) -> None:
    rows = [class_row(r) for r in reports]
    table = markdown(rows)
    recorded = machine()
    print(f"{header(recorded)}\n\n{table}")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": recorded, "classes": rows, "markdown": table}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("classes").add_argument("run", type=Path)
    joined = sub.add_parser("combine")
    joined.add_argument("--out", type=Path, required=True)
    joined.add_argument("reports", type=Path, nargs="+")
    args = parser.parse_args()
    try:
        if args.command == "classes":
            classes(args.run)
        else:
            combine(args.out, args.reports)
    except (SynthmedError, OSError) as e:
        raise SystemExit(f"Error: {e}") from None


if __name__ == "__main__":
    main()
