"""The measuring parts of evaluation, each checked against a case whose answer is known."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.evaluation.distribution import (
    brightness_outliers,
    common_fov,
    intensity_kl,
    kl_divergence,
)
from synthmed.evaluation.mask_statistics import mask_statistics
from synthmed.evaluation.privacy import (
    PrivacyAudit,
    audit_space,
    nearest_neighbours,
    pixel_vectors,
)
from synthmed.evaluation.segmentation_metrics import (
    auc_roc,
    best_threshold,
    f1_score,
    score_segmentation,
)
from synthmed.training.data.dataset import load_paired_data
from synthmed.training.data.phantom import write_phantom_dataset


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Forty 64x64 retina phantoms: two disjoint halves of the same distribution."""
    root = tmp_path_factory.mktemp("phantoms40")
    write_phantom_dataset("retina", root, 40, 64, 11)
    data = load_paired_data(root, 64)
    return {"all": data, "a": data.images[:20], "b": data.images[20:]}


# --- segmentation scores -------------------------------------------------------------------


def test_f1_is_dice() -> None:
    predicted = np.array([1, 1, 0, 0, 1], bool)
    labels = np.array([1, 0, 0, 1, 1], bool)
    assert f1_score(predicted, labels) == pytest.approx(2 * 2 / (3 + 3))
    assert f1_score(np.zeros(3, bool), np.zeros(3, bool)) == 1.0


def test_auc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = rng.random(60) < 0.4
    pairs = list(itertools.product(scores[labels], scores[~labels]))
    expected = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert auc_roc(scores, labels) == pytest.approx(expected)


def test_threshold_is_chosen_on_validation_and_scores_ignore_outside_fov() -> None:
    masks = np.zeros((2, 8, 8), np.uint8)
    masks[:, 2:4] = 1
    probs = np.where(masks == 1, 0.8, 0.7).astype(np.float32)  # separable only above 0.7
    fov = np.ones_like(masks)
    assert best_threshold(probs, masks, fov) == pytest.approx(0.7)
    # Wrong predictions outside the field of view do not count.
    probs[:, :, 7] = 1.0
    fov[:, :, 7] = 0
    scores = score_segmentation(probs, masks, fov, threshold=0.75)
    assert scores.f1_at_threshold == pytest.approx(1.0)
    assert scores.auc_roc == pytest.approx(1.0)
    assert scores.f1_at_half < 1.0  # at 0.5 every pixel is called vessel


# --- intensity KL --------------------------------------------------------------------------


def test_kl_of_a_set_with_itself_is_zero(phantoms: dict) -> None:
    region = common_fov(phantoms["all"].fov)
    assert intensity_kl(phantoms["a"], phantoms["a"], region)["mean"] == 0.0


def test_kl_real_vs_real_is_small_and_noise_is_far(phantoms: dict) -> None:
    region = common_fov(phantoms["all"].fov)
    real_vs_real = intensity_kl(phantoms["a"], phantoms["b"], region)["mean"]
    noise = torch.randint(0, 256, phantoms["b"].shape, generator=torch.Generator().manual_seed(0))
    real_vs_noise = intensity_kl(phantoms["a"], noise.to(torch.uint8), region)["mean"]
    assert real_vs_real < 0.05
    assert real_vs_noise > 20 * real_vs_real


def test_kl_divergence_is_asymmetric_and_nonnegative() -> None:
    p, q = np.array([90, 10, 0, 0]), np.array([25, 25, 25, 25])
    assert kl_divergence(p, q) > 0 and kl_divergence(q, p) > 0
    assert kl_divergence(p, q) != pytest.approx(kl_divergence(q, p))


def test_brightness_outliers_count_images_beyond_the_real_range() -> None:
    """Real images of brightness 50..149; of the other set, the nearly black and the
    washed-out ones count, a dark patch inside an image of ordinary mean does not."""
    real = torch.arange(50, 150, dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 4, 4)
    region = np.ones((4, 4), dtype=bool)
    other = real[40:50].clone()  # ten ordinary images
    other[0], other[1] = 49, 150
    other[2, :, :2] = 0  # half black, half 200: mean 100
    other[2, :, 2:] = 200
    assert brightness_outliers(real, other, region) == pytest.approx(0.2)
    assert brightness_outliers(real, real, region) == 0.0


def test_common_fov_is_the_majority_of_fields_of_view() -> None:
    fov = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    fov[0, 0, :2], fov[1, 0, :3], fov[2, 0, :1] = 1, 1, 1
    assert common_fov(fov)[:, 0].tolist() == [True, True, False, False]


# --- mask statistics -----------------------------------------------------------------------


def test_mask_statistics_of_a_drawn_cross() -> None:
    mask = np.zeros((1, 32, 32), bool)
    mask[0, 15:18, 2:30] = True  # horizontal vessel, 3 px wide
    mask[0, 2:30, 24] = True  # vertical vessel, 1 px wide, crossing it
    stats = mask_statistics(mask, np.ones((32, 32), bool))
    assert stats.vessel_fraction[0] == pytest.approx(mask.sum() / 32**2)
    assert stats.segments[0] == 1
    assert stats.branch_points[0] >= 1
    widths = np.round(stats.widths)
    assert {1, 3} <= set(widths.tolist())
    two_vessels = mask.copy()
    two_vessels[0, :, 20] = False  # a gap: the horizontal vessel now has two pieces
    assert mask_statistics(two_vessels, np.ones((32, 32), bool)).segments[0] == 2


def test_mask_statistics_only_look_inside_the_region() -> None:
    mask = np.ones((1, 16, 16), bool)
    region = np.zeros((16, 16), bool)
    region[:, :8] = True
    assert mask_statistics(mask, region).vessel_fraction[0] == pytest.approx(1.0)


# --- privacy -------------------------------------------------------------------------------


def test_nearest_neighbours_leave_one_out() -> None:
    points = np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    found = nearest_neighbours(points, points)
    assert found.index.tolist() == [0, 1, 2] and found.distance.tolist() == [0, 0, 0]
    loo = nearest_neighbours(points, points, exclude_same_index=True)
    assert loo.index.tolist() == [1, 0, 1]
    assert loo.distance.tolist() == pytest.approx([1, 1, 4])
    assert loo.second_distance.tolist() == pytest.approx([5, 4, 5])


def test_real_data_against_itself_flags_only_identity(phantoms: dict) -> None:
    train, held_out = pixel_vectors(phantoms["a"]), pixel_vectors(phantoms["b"])
    audit = audit_space(train, held_out, train)
    # Every sample is its own training image, at distance 0: flagged, and matched to itself.
    assert audit.flagged.all()
    assert audit.synthetic.index.tolist() == list(range(len(train)))
    assert (audit.synthetic.distance < 1e-6).all()
    # Beyond identity nothing is flagged: each image's nearest *other* image is a stranger.
    assert (audit.synthetic.second_distance > audit.threshold).all()


def test_near_copies_are_flagged_and_fresh_images_are_not(phantoms: dict) -> None:
    train_images = phantoms["a"]
    noisy = train_images[:3].float() + torch.randn(3, *train_images.shape[1:]) * 4
    copies = noisy.clamp(0, 255).to(torch.uint8)
    fresh = phantoms["b"][:10]
    generated = torch.cat([copies, fresh])
    train, held_out = pixel_vectors(train_images), pixel_vectors(phantoms["b"][10:])
    pixel = audit_space(pixel_vectors(generated), held_out, train)
    audit = PrivacyAudit(pixel, pixel, copy_factor=0.5)
    assert audit.flagged.tolist() == [0, 1, 2]
    rows = audit.flagged_rows([f"train{i}" for i in range(len(train))])
    assert [r["nearest_pixel"] for r in rows] == ["train0", "train1", "train2"]
    assert audit.summary()["flagged"] == 3


def test_pixel_distance_is_rms_in_unit_range(tmp_path: Path) -> None:
    black = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    white = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    vectors = pixel_vectors(torch.cat([black, white, black]))
    distance = nearest_neighbours(vectors[:1], vectors[1:]).second_distance[0]
    assert distance == pytest.approx(1.0)
