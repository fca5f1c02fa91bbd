"""Turn an Evaluation into report.md, report.html and the figures they show.

The report answers three questions in order, each with a table and a picture: does synthetic
data train a segmenter (and where does it help), how far is it from the real distribution,
and does any sample copy a training patient. Definitions are stated next to the numbers, so
the report can be read without this code.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from synthmed.atomic import write_text_atomic
from synthmed.evaluation.downstream import EXAMPLES, ArmResult
from synthmed.evaluation.evaluate import HELD_OUT, Evaluation, compared_sets
from synthmed.evaluation.figures import (
    plot_intensity_histograms,
    plot_nearest_distances,
    plot_small_data,
    plot_width_histograms,
    save_grid,
    to_tiles,
)
from synthmed.evaluation.report_document import Document

GRID = 8  # samples per row in the sample grids

_SCORE_HEADER = ["F1 @ 0.5", "threshold (val)", "F1 @ threshold", "AUC-ROC", "accuracy (FOV)"]
_SCORE_KEYS = ["f1_at_half", "threshold", "f1_at_threshold", "auc_roc", "accuracy"]


def _samples(doc: Document, ev: Evaluation, out: Path) -> None:
    data = ev.data
    rows = [to_tiles(data.real_train.images, GRID), to_tiles(data.real_train.masks, GRID)]
    rows += [to_tiles(data.synthetic.masks, GRID), to_tiles(data.synthetic.images, GRID)]
    if data.conditional is None:
        caption = "rows: real images, their masks; stage I masks, stage II images from those masks"
    else:
        caption = f"rows: real images, their masks; {data.synthetic_label} masks, its images"
    if data.single is not None:
        rows.append(to_tiles(data.single, GRID))
        caption += "; the single-GAN baseline"
    save_grid(out / "samples.png", rows)
    doc.heading("Samples")
    doc.paragraph(
        f"Evaluated at {data.size}x{data.size}. Real training images: {len(data.real_train)} "
        f"from `{ev.options.real}`; held-out real: {len(data.validation)} for validation, "
        f"{len(data.test)} for test. Synthetic: {data.synthetic_source}."
        + (f" Single-GAN baseline: {data.single_source}." if data.single_source else "")
    )
    doc.figure("samples.png", caption)


def _score_table(doc: Document, results: list[ArmResult]) -> None:
    rows = [
        [r.arm, r.real_images, r.synthetic_images] + [r.scores[k] for k in _SCORE_KEYS]
        for r in results
    ]
    doc.table(["trained on", "real", "synthetic", *_SCORE_HEADER], rows)


def _downstream(doc: Document, ev: Evaluation, out: Path) -> None:
    budget = ev.options.budget
    doc.heading("Train on synthetic, test on real")
    doc.paragraph(
        "A segmentation U-Net is trained on each data source with the same budget "
        f"({budget.steps} steps of {budget.batch_size} images, width {budget.base_channels}, "
        f"depth {budget.depth}, Adam {budget.lr}, BCE + Dice, random flips, same initial "
        "weights); the mixed arm draws half of each batch from each source. The threshold is "
        "chosen on the held-out real validation images, then every score is measured on the "
        "held-out real test images, pooled over pixels inside each image's field of view. "
        f"F1 equals Dice for binary masks. Synthetic data: {ev.data.synthetic_label}."
    )
    _score_table(doc, ev.downstream.full)
    test = ev.data.test
    grid = [to_tiles(test.images, EXAMPLES), to_tiles(test.masks, EXAMPLES)]
    grid += [list((np.clip(r.examples, 0, 1) * 255).astype(np.uint8)) for r in ev.downstream.full]
    save_grid(out / "predictions.png", grid)
    doc.figure(
        "predictions.png",
        "rows: test images, their true masks, then the vessel probabilities of the U-Nets "
        "trained on " + ", ".join(r.arm for r in ev.downstream.full),
    )
    if not ev.downstream.small_data:
        return
    doc.heading("Small-data mode")
    synthetic_row = next(r for r in ev.downstream.full if r.arm == "synthetic")
    doc.paragraph(
        "The same experiment with only the first n real training images (nested subsets of "
        "one seeded shuffle), alone and together with all synthetic images. The synthetic-only "
        f"arm does not depend on n: F1 {synthetic_row.scores['f1_at_threshold']:.4f}."
    )
    _score_table(doc, ev.downstream.small_data)
    rows_data = [r.row() for r in ev.downstream.small_data]
    plot_small_data(out / "small_data.png", rows_data, synthetic_row.scores["f1_at_threshold"])
    doc.figure("small_data.png", "test F1 against the number of real training images")


def _distribution(doc: Document, ev: Evaluation, out: Path) -> None:
    doc.heading("Distance to the real distribution")
    doc.paragraph(
        "Intensity KL divergence, KL(P_real || Q) in nats, averaged over R, G and B: P and Q "
        "are 256-bin histograms of every pixel inside the common field of view (where at "
        f"least half of the real training images have theirs; {int(ev.region.sum())} pixels), "
        "pooled over all images of a set, with one pseudo-count per bin. P is the real "
        "training set; the held-out real row is the floor a perfect generator would reach."
    )
    doc.table(
        ["compared with real training", "KL red", "KL green", "KL blue", "KL mean"],
        [[label, v["red"], v["green"], v["blue"], v["mean"]] for label, v in ev.kl.items()],
    )
    plot_intensity_histograms(out / "intensity_histograms.png", ev.histograms)
    doc.figure("intensity_histograms.png", "intensity histograms inside the field of view")
    if ev.fid is not None:
        doc.paragraph(
            f"FID and KID against the real training images, in the feature space of "
            f"`{ev.options.inception}` (KID: polynomial-kernel MMD, mean and std over subsets)."
        )
        doc.table(
            ["set", "FID", "KID", "KID std"],
            [[k, v["fid"], v["kid_mean"], v["kid_std"]] for k, v in ev.fid.items()],
        )
    else:
        doc.paragraph("FID/KID: not computed (pass `--inception FILE.onnx` to compute them).")
    doc.heading("Stage I geometry" if ev.data.conditional is None else "Mask geometry")
    doc.paragraph(
        "Per mask, inside the common field of view: vessel fraction; branch points (skeleton "
        "junctions); segments (8-connected vessel components: broken vessels raise it); "
        "width at each centreline pixel, 2d - 1 for distance d to the background."
        + (
            ""
            if ev.data.conditional is None
            else " These are designed for vessel trees; for blob-like masks (cells) read the "
            "fraction as foreground fraction and segments as the number of blobs."
        )
    )
    rows = []
    for label, stats in ev.masks.items():
        s = stats.summary()
        rows.append(
            [
                label,
                f"{s['vessel_fraction_mean']:.4f} ± {s['vessel_fraction_std']:.4f}",
                f"{s['branch_points_mean']:.1f} ± {s['branch_points_std']:.1f}",
                f"{s['segments_mean']:.1f} ± {s['segments_std']:.1f}",
                s["width_mean"],
            ]
        )
    doc.table(["masks", "vessel fraction", "branch points", "segments", "mean width (px)"], rows)
    plot_width_histograms(out / "vessel_widths.png", ev.masks)
    doc.figure("vessel_widths.png", "distribution of vessel widths along the centrelines")


def _privacy(doc: Document, ev: Evaluation, out: Path) -> None:
    doc.heading("Privacy audit")
    doc.paragraph(
        "For every generated image, the distance to its nearest real training image, in pixel "
        "space (RMS difference of 8-bit RGB values scaled to [0, 1]) and in feature space (the "
        "encoder of the U-Net trained on real data; unit-length features). The yardstick is "
        "the same distance from each held-out real image: a new patient. A sample is flagged "
        f"as a near-copy when, in either space, it is closer than {ev.options.copy_factor} x "
        "the closest held-out real image came."
    )
    rows = []
    for label, audit in ev.privacy.items():
        for space in ("pixel", "feature"):
            s = getattr(audit, space).summary()
            rows.append(
                [
                    f"{label}, {space}",
                    s["synthetic_median"],
                    s["synthetic_min"],
                    s["held_out_median"],
                    s["held_out_min"],
                    s["threshold"],
                    f"{s['closer_than_held_out_p05']:.1%}",
                    s["flagged"],
                ]
            )
    doc.table(
        [
            "set, space",
            "median NN",
            "min NN",
            f"{HELD_OUT} median",
            f"{HELD_OUT} min",
            "threshold",
            "closer than 95% of real",
            "flagged",
        ],
        rows,
    )
    plot_nearest_distances(out / "privacy_distances.png", ev.privacy)
    doc.figure("privacy_distances.png", "nearest-training-image distances")
    for label, audit in ev.privacy.items():
        flagged = audit.flagged
        doc.paragraph(f"{label}: {len(flagged)} of {len(audit.pixel.flagged)} samples flagged.")
        if len(flagged) == 0:
            continue
        generated = compared_sets(ev.data)[label]
        shown = flagged[:GRID]
        nearest = audit.pixel.synthetic.index[shown]
        name = f"flagged_{re.sub(r'[^A-Za-z0-9.-]+', '_', label).strip('_')}.png"
        save_grid(
            out / name,
            [to_tiles(generated[shown], GRID), to_tiles(ev.data.real_train.images[nearest], GRID)],
        )
        doc.figure(name, f"{label}: flagged samples (top) and their nearest training images")


def write_report(ev: Evaluation, out: Path, command: str = "") -> None:
    """Write the figures, report.md and report.html into `out`; `command` made them."""
    doc = Document("synthmed evaluation report")
    _samples(doc, ev, out)
    _downstream(doc, ev, out)
    _distribution(doc, ev, out)
    _privacy(doc, ev, out)
    doc.heading("Reproduce")
    if command:
        doc.paragraph(f"`{command}`")
    doc.paragraph("Every number above is in `metrics.json` beside this report.")
    write_text_atomic(out / "report.md", doc.to_markdown())
    write_text_atomic(out / "report.html", doc.to_html())
