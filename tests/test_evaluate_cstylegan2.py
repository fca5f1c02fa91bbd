"""`synthmed evaluate --cstylegan2 RUN --label K`: one class of a conditional StyleGAN2 judged
against that class's real data, its in-process sampling, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthmed.errors import UserInputError
from synthmed.evaluation.downstream import ARMS
from synthmed.evaluation.evaluate import HELD_OUT, EvaluateOptions, run_evaluation
from synthmed.export.graphs import ConditionalGraph
from synthmed.latents import latents
from synthmed.training.data.phantom import write_phantom_dataset
from synthmed.training.sample import DEMO_STAGE1, ConditionalSampler, sample_class
from synthmed.training.segmenter import SegmenterBudget
from tests.conftest import assert_one_line_error, run_cli
from tests.tolerance import assert_same_samples

FAST = ["--count", "8", "--seg-steps", "4", "--seg-width", "8", "--quiet"]
CELLS = "cStyleGAN2 (cells)"


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Held-out real pairs per class: phantoms of other seeds than the training fixtures."""
    root = tmp_path_factory.mktemp("held-out")
    write_phantom_dataset("cells", root / "cells", 6, 64, 11, grayscale=True)
    write_phantom_dataset("retina", root / "retina", 6, 64, 12)
    return {"cells": root / "cells", "retina": root / "retina"}


def test_evaluate_one_class_end_to_end(
    cstylegan2_run: Path, gray_cells64: Path, held_out: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = run_cli(
        "evaluate", "--cstylegan2", cstylegan2_run, "--label", "cells", "--real", gray_cells64,
        "--real-test", held_out["cells"], "--out", out, *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"real vs {CELLS}" in result.output

    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["arm"] for r in metrics["downstream"]] == list(ARMS)
    assert [r["synthetic_images"] for r in metrics["downstream"]] == [0, 8, 8]
    assert metrics["inputs"]["synthetic"]["label"] == CELLS
    assert metrics["inputs"]["cstylegan2"] == {
        "run": str(cstylegan2_run), "class": "cells", "class_index": 1, "truncation": 1.0,
    }  # fmt: skip
    assert set(metrics["intensity_kl"]) == {HELD_OUT, CELLS}
    assert set(metrics["mask_statistics"]) == {"real (train)", CELLS}
    assert set(metrics["privacy"]) == {CELLS}
    assert "--cstylegan2" in metrics["command"] and "--label cells" in metrics["command"]
    markdown = (out / "report.md").read_text()
    assert CELLS in markdown and "## Mask geometry" in markdown
    assert (out / "report.html").is_file() and (out / "samples.png").is_file()


def test_an_rgb_class_by_index_with_truncation(
    cstylegan2_run: Path, retina64: Path, held_out: dict[str, Path]
) -> None:
    options = EvaluateOptions(
        real=retina64,
        real_test=held_out["retina"],
        cstylegan2=cstylegan2_run,
        label="0",
        truncation=0.5,
        count=6,
        budget=SegmenterBudget(steps=2, batch_size=4, base_channels=4),
    )
    evaluation = run_evaluation(options, progress=False)
    assert evaluation.data.synthetic_label == "cStyleGAN2 (retina)"
    assert evaluation.metrics()["inputs"]["cstylegan2"]["truncation"] == 0.5
    assert evaluation.data.synthetic.images.shape == (6, 3, 64, 64)


def test_class_samples_are_reproducible_and_batch_independent(cstylegan2_run: Path) -> None:
    images, masks = sample_class(cstylegan2_run, "retina", 3, range(6))
    # The same latents in another batch: PyTorch's CPU kernels may round differently there
    # (they do on AVX2-only CPUs), so the promise is the same samples within `tolerance`.
    assert_same_samples(sample_class(cstylegan2_run, 0, 3, [4, 1]), (images[[4, 1]], masks[[4, 1]]))
    # ...and tight enough to tell another index, class or even truncation 0.99 apart.
    for wrong in ({"indices": [1, 4]}, {"label": 1}, {"truncation": 0.99}):
        drawn = {"run": cstylegan2_run, "label": 0, "seed": 3, "indices": [4, 1]} | wrong
        with pytest.raises(AssertionError):
            assert_same_samples(sample_class(**drawn), (images[[4, 1]], masks[[4, 1]]))
    assert not np.array_equal(images, sample_class(cstylegan2_run, 0, 4, range(6))[0])
    assert images.dtype == masks.dtype == np.uint8 and images.shape == (6, 64, 64, 3)
    assert set(np.unique(masks)) <= {0, 255}
    # The same pixels as the exported graph's module computes from the same latents: the same
    # arithmetic on the same batch shape in one process, so exact.
    sampler = ConditionalSampler(cstylegan2_run)
    z = torch.from_numpy(latents(3, range(6), sampler.z_dim))
    with torch.no_grad():
        graph = ConditionalGraph(sampler.generator)(
            z, torch.zeros(6, dtype=torch.int64), torch.ones(6)
        )
    assert np.array_equal(graph[0].numpy(), images) and np.array_equal(graph[1].numpy(), masks)
    # Truncation 0 puts every sample at its class's average w: one image (up to the rounding
    # of its position in the batch).
    truncated = sampler.sample(3, range(3), "retina", truncation=0.0)
    assert_same_samples(truncated, tuple(np.repeat(t[:1], 3, axis=0) for t in truncated))


def test_grayscale_class_samples_are_gray(cstylegan2_run: Path) -> None:
    gray = sample_class(cstylegan2_run, "cells", 0, range(4))[0]
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    colour = sample_class(cstylegan2_run, "retina", 0, range(4))[0]
    assert not (colour[..., 0] == colour[..., 1]).all()


def test_bad_input_is_one_line(
    cstylegan2_run: Path, gray_cells64: Path, held_out: dict[str, Path], tmp_path: Path
) -> None:
    base = ["evaluate", "--real", gray_cells64, "--real-test", held_out["cells"]]
    base += ["--out", tmp_path / "r", *FAST]
    run = ["--cstylegan2", cstylegan2_run]
    cases = [
        ([*run, "--label", "1", "--stage1", DEMO_STAGE1], ["--cstylegan2 and --stage1"]),
        ([*run, "--label", "1", "--synthetic", gray_cells64], ["--cstylegan2 and --synthetic"]),
        (["--label", "1"], ["--label needs --cstylegan2"]),
        (["--truncation", "0.5"], ["--truncation needs --cstylegan2"]),
        (run, ["--cstylegan2 needs --label", "0 = retina, 1 = cells"]),
        ([*run, "--label", "nerve"], ["'nerve' is not a class", "0 = retina, 1 = cells"]),
        ([*run, "--label", "2"], ["'2' is not a class"]),
        ([*run, "--label", "1", "--size", "128"], ["--size 128", "64x64"]),
        (["--cstylegan2", DEMO_STAGE1, "--label", "0"], ["stage1 checkpoint", "cstylegan2"]),
    ]
    for extra, fragments in cases:
        assert_one_line_error(run_cli(*base, *extra), *fragments)
    with pytest.raises(UserInputError, match="'x' is not a class") as error:
        sample_class(cstylegan2_run, "x", 0, range(1))
    assert "\n" not in str(error.value)
