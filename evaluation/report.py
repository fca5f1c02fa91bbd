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
from synthmed.evaluation.downstream import EXAMPLES, HEADLINE, ORACLE_ARM, ArmResult
from synthmed.evaluation.evaluate import HELD_OUT, ORACLE, REAL_TRAIN, Evaluation, compared_sets
from synthmed.evaluation.figures import (
    plot_intensity_histograms,
    plot_nearest_distances,
    plot_small_data,
    plot_width_histograms,
    save_grid,
    to_tiles,
)
from synthmed.evaluation.mask_diversity import MAX_MASKS
from synthmed.evaluation.report_document import Document

GRID = 8  # samples per row in the sample grids

_SCORE_HEADER = ["F1 @ 0.5", "threshold (val)", "F1 @ threshold", "AUC-ROC", "accuracy (FOV)"]
_SCORE_KEYS = ["f1_at_half", "threshold", "f1_at_threshold", "auc_roc", "accuracy"]


def _samples(doc: Document, ev: Evaluation, out: Path) -> None:
    data = ev.data
    rows = [to_tiles(data.real_train.images, GRID), to_tiles(data.real_train.masks, GRID)]
    caption = "rows: real images, their masks; "
    if data.oracle is not None:
        rows.append(to_tiles(data.oracle.images, GRID))
        caption += "stage II images from those real masks (the oracle); "
    rows += [to_tiles(data.synthetic.masks, GRID), to_tiles(data.synthetic.images, GRID)]
    if data.conditional is None:
        caption += "stage I masks, stage II images from those masks"
    else:
        caption += f"{data.synthetic_label} masks, its images"
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
        + (f" Oracle ({ORACLE}): {data.oracle_note}." if data.oracle is not None else "")
    )
    doc.figure("samples.png", caption)


def _score(mean: float, std: float, repeats: int) -> str | float:
    """A score as the table shows it: the mean, and ± the std when there are repeats."""
    return f"{mean:.4f} ± {std:.4f}" if repeats > 1 else mean


def _score_table(doc: Document, results: list[ArmResult]) -> None:
    rows = []
    for r in results:
        row = r.row()
        keys = [*_SCORE_KEYS, "f1_ratio_to_real"]
        scores = [_score(row[k], row[f"{k}_std"], len(r.runs)) for k in keys]
        rows.append([r.arm, r.real_images, r.synthetic_images, *scores])
    doc.table(["trained on", "real", "synthetic", *_SCORE_HEADER, "F1 / real F1"], rows)


def _repeats_text(repeats: int, seed: int) -> str:
    if repeats == 1:
        return (
            "Each arm was trained once, so no spread is measured: one training run moves F1 "
            "by a few hundredths from seed to seed (pass `--repeats K` to see by how much)."
        )
    return (
        f"Each arm was trained {repeats} times, with segmenter seeds {seed} to "
        f"{seed + repeats - 1}; every score is the mean ± the sample standard deviation over "
        "those repeats. F1 / real F1 divides each repeat's F1 by the real arm's F1 of the "
        "same repeat, then averages."
    )


def _oracle_text(ev: Evaluation) -> str:
    if ev.data.oracle is None:
        return f" No oracle arm: {ev.data.oracle_note}."
    return (
        f" The {ORACLE_ARM} arm is trained on the oracle set ({ORACLE}): stage II's image of "
        "each real training mask, paired with that mask. Its masks are real, so its gap to the "
        "real arm is stage II's share of the loss, and the synthetic arm's gap to it is stage "
        "I's."
    )


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
        + _oracle_text(ev)
    )
    doc.paragraph(_repeats_text(ev.options.repeats, ev.options.seed))
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
    repeats = ev.options.repeats
    references = {}  # arms without real images: flat lines in the figure
    for r in ev.downstream.full:
        if r.arm in ("synthetic", ORACLE_ARM):
            name = "synthetic only" if r.arm == "synthetic" else ORACLE_ARM
            references[name] = (r.mean(HEADLINE), r.std(HEADLINE))
    no_real = ", ".join(f"{k} F1 {_score(m, s, repeats)}" for k, (m, s) in references.items())
    doc.paragraph(
        "The same experiment with only the first n real training images (nested subsets of "
        "a seeded shuffle, reshuffled in each repeat), alone and together with all synthetic "
        f"images. Arms without real images do not depend on n: {no_real}."
    )
    _score_table(doc, ev.downstream.small_data)
    rows_data = [r.row() for r in ev.downstream.small_data]
    plot_small_data(out / "small_data.png", rows_data, references)
    caption = "test F1 against the number of real training images"
    if repeats > 1:
        caption += f"; bars and bands: ± one standard deviation over {repeats} repeats"
    doc.figure("small_data.png", caption)


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
    _diversity(doc, ev)


def _diversity(doc: Document, ev: Evaluation) -> None:
    s = ev.diversity.summary()
    masks, pairwise, label = s["masks"], s["pairwise_iou"], ev.data.synthetic_label
    doc.paragraph(
        "Diversity, coverage and precision compare whole masks by their IoU inside the common "
        f"field of view, on at most {MAX_MASKS} masks per set (a seeded subsample; the synthetic "
        "and training sets are cut to the same number, since a nearest neighbour is closer in a "
        "larger set). Diversity: the mean IoU over all pairs of masks within a set; higher is "
        "more alike, and a generator that draws one tree again and again approaches 1."
    )
    ratio, target = s["pairwise_iou_ratio"], s["pairwise_iou_ratio_target"]
    verdict = "within" if s["pairwise_iou_ratio_within_target"] else "outside"
    held_out_ratio = ev.diversity.ratio_to_real("held_out")
    doc.table(
        ["masks", "count", "mean pairwise IoU", f"ratio to {REAL_TRAIN}"],
        [
            [REAL_TRAIN, masks["real_train"], pairwise["real_train"], "1.00x"],
            [HELD_OUT, masks["held_out"], pairwise["held_out"], f"{held_out_ratio:.2f}x"],
            [
                label,
                masks["synthetic"],
                pairwise["synthetic"],
                f"{ratio:.2f}x ({verdict} the target <= {target:g}x)",
            ],
        ],
    )
    doc.paragraph(
        "Coverage: for each held-out real mask, the IoU of the closest synthetic mask, "
        "averaged; low when the generator never draws some kinds of real trees. Precision: "
        "for each synthetic mask, the IoU of the closest real training mask, averaged; low "
        "when it draws trees unlike any patient's. The reference for both is the held-out "
        "real masks against the real training masks: how close a new patient comes."
    )
    reference = s["nearest_reference"]
    doc.table(
        ["nearest-mask IoU", label, f"reference ({HELD_OUT} vs {REAL_TRAIN})"],
        [["coverage", s["coverage"], reference], ["precision", s["precision"], reference]],
    )
    difference, ok = s["geometry_difference_percent"], s["geometry_within_target"]
    doc.paragraph(
        f"{label} masks relative to the real training masks (target: within "
        f"{s['geometry_target_percent']:g} %): "
        + "; ".join(
            f"{name.replace('_', ' ')} {difference[name]:+.1f} % "
            f"({'within' if ok[name] else 'outside'} the target)"
            for name in difference
        )
        + "."
    )


def _privacy(doc: Document, ev: Evaluation, out: Path) -> None:
    doc.heading("Privacy audit")
    doc.paragraph(
        "For every generated image, the distance to its nearest real training image, in pixel "
        "space (RMS difference of 8-bit RGB values scaled to [0, 1]) and in feature space (the "
        "encoder of the U-Net trained on real data; unit-length features). The yardstick is "
        "the same distance from each held-out real image: a new patient. A sample is flagged "
        f"as a near-copy when, in either space, it is closer than {ev.options.copy_factor} x "
        "the closest held-out real image came."
        + (
            f" The {ORACLE} set is drawn from the training masks themselves, so it is expected "
            "to sit nearer the training images than new patients do; what it shows is whether "
            "stage II also reproduces their appearance."
            if ev.data.oracle is not None
            else ""
        )
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
