"""LeCam's anchors: what is penalised, in which direction, and that the state round-trips."""

from __future__ import annotations

import pytest
import torch

from synthmed.training.lecam import LeCamAnchors


def test_each_side_is_held_within_the_other_sides_average() -> None:
    anchors = LeCamAnchors(decay=0.9)
    fakes = torch.tensor([-2.0, -4.0])
    # Nothing to anchor the fakes to before any real has been seen.
    assert anchors.term(fakes, real=False).item() == 0.0
    # Debiased: after one batch the fakes' anchor is that batch's mean, not 0.1 of it.
    assert anchors.anchor(False) == pytest.approx(-3.0)
    reals = torch.tensor([-5.0, -1.0, 2.0], requires_grad=True)
    term = anchors.term(reals, real=True)
    # Only the reals above the fakes' anchor (-3) count: (-1 + 3)^2 and (2 + 3)^2.
    assert term.item() == pytest.approx((4 + 25) / 3)
    (grad,) = torch.autograd.grad(term, reals)
    assert grad[0] == 0 and (grad[1:] > 0).all()  # descent lowers the reals that lead
    assert anchors.anchor(True) == pytest.approx(-4 / 3)
    fakes = torch.tensor([-3.0, 0.0], requires_grad=True)
    term = anchors.term(fakes, real=False)
    (grad,) = torch.autograd.grad(term, fakes)
    assert term.item() == pytest.approx((-4 / 3 + 3) ** 2 / 2)
    assert grad[0] < 0 and grad[1] == 0  # descent raises the fake that lags


def test_state_round_trips_and_continues_identically() -> None:
    first = LeCamAnchors()
    for step in range(5):
        first.term(torch.full((4,), float(step)), real=True)
        first.term(torch.full((4,), -float(step)), real=False)
    second = LeCamAnchors()
    second.load(first.state())
    batch = torch.tensor([3.0, -7.0, 0.5])
    assert second.term(batch, real=True).item() == first.term(batch, real=True).item()
    assert second.state() == first.state()
