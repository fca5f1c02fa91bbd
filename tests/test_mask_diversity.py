"""Stage I diversity, coverage and precision (evaluation/mask_diversity.py) on hand-drawn masks
whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from synthmed.evaluation import mask_diversity as diversity
from synthmed.evaluation.mask_diversity import (
    flatten_masks,
    iou_matrix,
    mask_diversity,
    mean_nearest_iou,
    mean_pairwise_iou,
)
from synthmed.evaluation.mask_statistics import mask_statistics

EVERYWHERE = np.ones((8, 8), bool)


def _bars(rows: list[int]) -> np.ndarray:
    """One 8x8 mask per entry: a horizontal bar, 1 px high, in that row."""
    masks = np.zeros((len(rows), 8, 8), bool)
    for i, row in enumerate(rows):
        masks[i, row] = True
    return masks


def test_iou_of_two_overlapping_masks() -> None:
    a = np.zeros((1, 8, 8), bool)
    b = np.zeros((1, 8, 8), bool)
    a[0, 0, :4] = True  # 4 pixels
    b[0, 0, 2:6] = True  # 4 pixels, 2 shared: IoU 2 / 6
    assert iou_matrix(flatten_masks(a, EVERYWHERE), flatten_masks(b, EVERYWHERE))[0, 0] == (
        pytest.approx(2 / 6)
    )


def test_identical_masks_are_iou_1_and_disjoint_ones_0() -> None:
    same = flatten_masks(_bars([3, 3, 3, 3]), EVERYWHERE)
    disjoint = flatten_masks(_bars([0, 2, 4, 6]), EVERYWHERE)
    assert mean_pairwise_iou(same) == 1.0
    assert mean_pairwise_iou(disjoint) == 0.0
    # Half the pairs identical (rows 1, 1 and 5, 5), the other four disjoint.
    assert mean_pairwise_iou(flatten_masks(_bars([1, 1, 5, 5]), EVERYWHERE)) == pytest.approx(2 / 6)
    assert np.isnan(mean_pairwise_iou(same[:1]))


def test_empty_masks_are_identical_to_each_other_only() -> None:
    empty = flatten_masks(np.zeros((2, 8, 8), bool), EVERYWHERE)
    bar = flatten_masks(_bars([2]), EVERYWHERE)
    assert iou_matrix(empty, empty).tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert iou_matrix(empty, bar).tolist() == [[0.0], [0.0]]


def test_coverage_of_a_set_against_itself_is_1_and_a_missing_mode_lowers_it() -> None:
    masks = flatten_masks(_bars([0, 2, 4, 6]), EVERYWHERE)
    assert mean_nearest_iou(masks, masks) == 1.0
    # A generator that only draws the first two: half the real masks find no overlap at all.
    assert mean_nearest_iou(masks, masks[:2]) == pytest.approx(0.5)
    # ...but every mask it draws is a real one: its precision is perfect.
    assert mean_nearest_iou(masks[:2], masks) == 1.0


def test_only_pixels_inside_the_region_count() -> None:
    masks = _bars([0, 0])
    masks[1, 7] = True  # differs from the first only in row 7
    region = EVERYWHERE.copy()
    region[7] = False
    assert mean_pairwise_iou(flatten_masks(masks, region)) == 1.0
    assert mean_pairwise_iou(flatten_masks(masks, EVERYWHERE)) == pytest.approx(0.5)


def test_chunked_products_give_the_same_ious(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 64)) < 0.3, rng.random((7, 64)) < 0.3
    whole = iou_matrix(a, b)
    monkeypatch.setattr(diversity, "_CHUNK", 10)
    assert np.array_equal(iou_matrix(a, b), whole)
    expected = [[(x & y).sum() / (x | y).sum() for y in b] for x in a]
    assert whole == pytest.approx(np.array(expected))


def test_a_collapsed_generator_against_real_masks() -> None:
    real = _bars([0, 1, 2, 3, 4, 5, 6, 7])
    held_out = _bars([1, 6])
    collapsed = _bars([2] * 8)  # one tree, drawn again and again
    stats = {
        name: mask_statistics(m, EVERYWHERE) for name, m in (("real", real), ("syn", collapsed))
    }
    result = mask_diversity(
        collapsed,
        real,
        held_out,
        EVERYWHERE,
        real_statistics=stats["real"],
        synthetic_statistics=stats["syn"],
    )
    assert result.pairwise_iou == {"synthetic": 1.0, "real_train": 0.0, "held_out": 0.0}
    assert np.isnan(result.pairwise_ratio)  # real masks share nothing: no ratio
    assert result.coverage == 0.0  # neither held-out bar is ever drawn
    assert result.precision == 1.0  # the one bar drawn is a real one
    assert result.nearest_reference == 1.0  # each held-out bar is in the training set
    # Same vessel fraction and width as the real bars; the summary checks the targets.
    assert result.geometry_difference_percent["vessel_fraction"] == pytest.approx(0.0)
    summary = result.summary()
    assert summary["geometry_within_target"]["vessel_fraction"] is True
    assert summary["pairwise_iou_ratio_within_target"] is False


def test_sets_are_cut_to_the_same_seeded_subsample() -> None:
    rng = np.random.default_rng(1)
    synthetic, real, held_out = (rng.random((n, 8, 8)) < 0.2 for n in (30, 12, 9))
    stats = mask_statistics(real, EVERYWHERE)
    kw = {"real_statistics": stats, "synthetic_statistics": stats, "max_masks": 10}
    first = mask_diversity(synthetic, real, held_out, EVERYWHERE, seed=3, **kw)
    assert first.masks == {"synthetic": 10, "real_train": 10, "held_out": 9}
    again = mask_diversity(synthetic, real, held_out, EVERYWHERE, seed=3, **kw)
    assert again.summary() == first.summary()
    # Everything the same, but the synthetic set is the real one: as diverse, and precise.
    same = mask_diversity(real, real, held_out, EVERYWHERE, seed=3, **kw | {"max_masks": 12})
    assert same.pairwise_ratio == pytest.approx(1.0) and same.precision == 1.0
