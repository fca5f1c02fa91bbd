"""Class-conditional requests: class labels, truncation, and each batch's input tensors.

Shared by SynthMedClient, AsyncSynthMedClient and the in-process path of `synthmed generate`,
so a label names the same class everywhere and sample `i` of seed `s` is always generated from
`latent(s, i)`, whatever the label: results stay independent of batching and servers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from synthmed.client.errors import InvalidRequestError
from synthmed.latents import latents

if TYPE_CHECKING:
    from synthmed.client.contract import Contract


def describe_classes(classes: Sequence[str]) -> str:
    """'0=retina, 1=cells': the labels a user may give, for error messages and help."""
    return ", ".join(f"{k}={name}" for k, name in enumerate(classes))


def resolve_label(label: int | str | None, classes: Sequence[str], model: str) -> int:
    """A class index or name (also a digit string, as from the CLI) -> the index it means."""
    if label is None:
        raise InvalidRequestError(
            f"model {model!r} is class-conditional: give a label, one of "
            f"{describe_classes(classes)}"
        )
    if isinstance(label, str) and label.strip() in classes:
        return list(classes).index(label.strip())
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label.strip())
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise InvalidRequestError(
            f"unknown class {label!r} for model {model!r}: expected a name or index, one of "
            f"{describe_classes(classes)}"
        )
    if not 0 <= int(label) < len(classes):
        raise InvalidRequestError(
            f"label {int(label)} is out of range for model {model!r}: expected 0.."
            f"{len(classes) - 1} ({describe_classes(classes)})"
        )
    return int(label)


def check_truncation(truncation: float | None) -> float | None:
    """None (the model's default) or a finite psi; 1.0 leaves the style vector as drawn."""
    if truncation is None:
        return None
    if isinstance(truncation, bool) or not isinstance(truncation, (int, float, np.floating)):
        raise InvalidRequestError(f"truncation must be a number (psi), got {truncation!r}")
    if not math.isfinite(truncation):
        raise InvalidRequestError(f"truncation must be a finite number (psi), got {truncation}")
    return float(truncation)


def request_settings(
    contract: Contract, label: int | str | None, truncation: float | None
) -> tuple[int | None, float | None]:
    """Validate (label, truncation) against the served model: required and resolved for a
    conditional model (psi defaulting to the model's), refused for one without classes."""
    if not contract.conditional:
        given = [
            name for name, v in (("label", label), ("truncation", truncation)) if v is not None
        ]
        if given:
            raise InvalidRequestError(
                f"model {contract.model!r} is not class-conditional and takes no "
                f"{' or '.join(given)}; use a conditional model such as synthmed_cstylegan2"
            )
        return None, None
    psi = check_truncation(truncation)
    return (
        resolve_label(label, contract.classes, contract.model),
        contract.default_truncation if psi is None else psi,
    )


def batch_inputs(
    seed: int, batch: Sequence[int], nz: int, label: int | None, psi: float | None
) -> dict[str, np.ndarray]:
    """The request tensors for sample indices `batch`: z from (seed, i), and for a conditional
    model the label and psi of every sample as [B, 1] (Triton's shape for per-sample scalars)."""
    z = latents(seed, batch, nz)
    if label is None:
        return {"z": z}
    n = len(batch)
    return {
        "z": z,
        "class": np.full((n, 1), label, np.int64),
        "truncation": np.full((n, 1), psi, np.float32),
    }
