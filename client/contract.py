"""A served model's contract, read from Triton's metadata and config and checked against
synthmed's (`synthmed.contract`): the client refuses a model it would misread."""

from __future__ import annotations

import json

from synthmed.client.errors import ContractError
from synthmed.contract import (
    CLASS,
    DEFAULT_TRUNCATION,
    IMAGE,
    MASK,
    PARAM_CLASSES,
    PARAM_DEFAULT_TRUNCATION,
    TRUNCATION,
    Contract,
    TensorSpec,
    Z,
)


def to_dict(message: object) -> dict:
    """tritonclient's gRPC answers are protobufs, its HTTP answers dicts: always a dict."""
    if isinstance(message, dict):
        return message
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def config_dict(message: object) -> dict:
    """A model config as a dict (gRPC wraps it in a `config` field, HTTP does not)."""
    config = to_dict(message)
    return config.get("config", config)


def parameter(config: dict, key: str) -> str | None:
    """A string parameter of a model config, None when absent."""
    return config.get("parameters", {}).get(key, {}).get("string_value")


def is_conditional(metadata: dict) -> bool:
    """A model with a `class` input is class-conditional."""
    return any(t["name"] == CLASS.name for t in metadata.get("inputs", []))


def _problem(spec: TensorSpec, kind: str, tensors: dict) -> str | None:
    """What is wrong with one tensor of the metadata, None if it matches the spec. Symbolic
    dims (nz, H, W) take any size; a per-sample scalar travels as [-1, 1]."""
    found = tensors.get(spec.name)
    wanted = list(spec.dims) or [1]
    if found is not None and found["datatype"] == spec.datatype:
        shape = [int(d) for d in found["shape"]]
        if len(shape) == 1 + len(wanted) and all(
            isinstance(w, str) or s == w for s, w in zip(shape[1:], wanted, strict=True)
        ):
            return None
    dims = ", ".join(str(d) for d in wanted)
    return f"{kind} {spec.name} {spec.datatype} [-1, {dims}] (got {found})"


def check_contract(model: str, metadata: dict, url: str, config: dict | None = None) -> Contract:
    """Check z -> image + mask, and for a conditional model class, truncation and its class
    names; the Contract it serves, or ContractError listing every mismatch."""
    inputs = {t["name"]: t for t in metadata.get("inputs", [])}
    outputs = {t["name"]: t for t in metadata.get("outputs", [])}
    conditional = is_conditional(metadata)
    specs = [("input", Z), ("output", IMAGE), ("output", MASK)]
    specs += [("input", CLASS), ("input", TRUNCATION)] if conditional else []
    problems = [
        p
        for kind, spec in specs
        if (p := _problem(spec, kind, inputs if kind == "input" else outputs))
    ]
    classes, default = _classes(config or {}) if conditional else ([], None)
    if classes is None:
        problems.append(f"config parameter {PARAM_CLASSES}: a JSON list of class names")
    if problems:
        raise ContractError(
            f"{url}: model {model!r} does not match synthmed's contract: "
            f"expected {'; '.join(problems)}"
        )
    versions = metadata.get("versions") or ["1"]
    mask = outputs[MASK.name]
    height, width = int(mask["shape"][1]), int(mask["shape"][2])
    nz = int(inputs[Z.name]["shape"][1])
    return Contract(
        model, str(versions[-1]), nz, height, width, conditional, tuple(classes or ()), default
    )


def _classes(config: dict) -> tuple[list[str] | None, float]:
    """The class names and default psi a conditional model's config declares."""
    try:
        classes = json.loads(parameter(config, PARAM_CLASSES) or "null")
        default = float(parameter(config, PARAM_DEFAULT_TRUNCATION) or DEFAULT_TRUNCATION)
    except ValueError:
        return None, DEFAULT_TRUNCATION
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        return classes, default
    return None, default
