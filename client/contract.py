"""The served model's contract, read from Triton's metadata and config and checked.

Both model families share z FP32 [-1, nz] -> image UINT8 [-1, H, W, 3] + mask UINT8
[-1, H, W]; a class-conditional model (one with a `class` input) adds class INT64 [-1, 1],
truncation FP32 [-1, 1] and its class names in the `synthmed_classes` config parameter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from synthmed.client.errors import ContractError


@dataclass(frozen=True)
class Contract:
    """What the served model takes and returns; `classes` (label k = classes[k]) and the
    default psi only for a class-conditional model."""

    model: str
    version: str
    nz: int
    height: int
    width: int
    conditional: bool = False
    classes: tuple[str, ...] = ()
    default_truncation: float | None = None


def to_dict(message: object) -> dict:
    """tritonclient's gRPC answers are protobufs, its HTTP answers dicts: always a dict."""
    if isinstance(message, dict):
        return message
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def model_metadata(client, model: str) -> dict:  # noqa: ANN001 (a tritonclient client)
    """The model's metadata (inputs, outputs, versions) as a dict."""
    return to_dict(client.get_model_metadata(model))


def model_config(client, model: str) -> dict:  # noqa: ANN001
    """The model's config as a dict (gRPC wraps it in a `config` field, HTTP does not)."""
    config = to_dict(client.get_model_config(model))
    return config.get("config", config)


def parameter(config: dict, key: str) -> str | None:
    """A string parameter of a model config, None when absent."""
    return config.get("parameters", {}).get(key, {}).get("string_value")


def is_conditional(metadata: dict) -> bool:
    """A model with a `class` input is class-conditional."""
    return any(t["name"] == "class" for t in metadata.get("inputs", []))


def _check_conditional(inputs: dict, config: dict) -> tuple[list[str], dict]:
    """Problems with the class/truncation inputs and the classes parameter; the contract's
    conditional fields when there are none."""
    problems = []
    for name, datatype in (("class", "INT64"), ("truncation", "FP32")):
        tensor = inputs.get(name)
        shape = [int(d) for d in tensor["shape"]] if tensor else None
        if tensor is None or tensor["datatype"] != datatype or shape != [-1, 1]:
            problems.append(f"input {name} {datatype} [-1, 1] (got {tensor})")
    try:
        classes = json.loads(parameter(config, "synthmed_classes") or "null")
        default = float(parameter(config, "default_truncation") or 1.0)
    except ValueError:
        classes, default = None, 1.0
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        problems.append("config parameter synthmed_classes: a JSON list of class names")
        classes = []
    return problems, {"conditional": True, "classes": tuple(classes), "default_truncation": default}


def check_contract(model: str, metadata: dict, url: str, config: dict | None = None) -> Contract:
    """Check z FP32 [-1, nz] -> image UINT8 [-1, H, W, 3] + mask UINT8 [-1, H, W], and for a
    conditional model class INT64 [-1, 1], truncation FP32 [-1, 1] and its class names."""
    inputs = {t["name"]: t for t in metadata.get("inputs", [])}
    outputs = {t["name"]: t for t in metadata.get("outputs", [])}
    problems, extra = [], {}
    z, image, mask = inputs.get("z"), outputs.get("image"), outputs.get("mask")
    if z is None or z["datatype"] != "FP32" or len(z["shape"]) != 2:
        problems.append(f"input z FP32 [-1, nz] (got {z})")
    if is_conditional(metadata):
        more, extra = _check_conditional(inputs, config or {})
        problems += more
    if (
        image is None
        or image["datatype"] != "UINT8"
        or len(image["shape"]) != 4
        or int(image["shape"][3]) != 3
    ):
        problems.append(f"output image UINT8 [-1, H, W, 3] (got {image})")
    if mask is None or mask["datatype"] != "UINT8" or len(mask["shape"]) != 3:
        problems.append(f"output mask UINT8 [-1, H, W] (got {mask})")
    if problems:
        raise ContractError(
            f"{url}: model {model!r} does not match synthmed's contract: "
            f"expected {'; '.join(problems)}"
        )
    versions = metadata.get("versions") or ["1"]
    height, width = int(mask["shape"][1]), int(mask["shape"][2])
    return Contract(model, str(versions[-1]), int(z["shape"][1]), height, width, **extra)
