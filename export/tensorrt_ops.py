"""What TensorRT's ONNX parser accepts, and what an ONNX graph asks of it.

Before spending a build (or a trip to the device) on a graph, synthmed checks it against TensorRT
10's ONNX operator table (`tensorrt_onnx_ops.txt`) and reads the inputs whose batch axis the
engine's optimization profile will span. The builder (`onnx2trt`), the manifest writer
(`engine_manifest`) and the trtexec script writer (`trtexec_script`) all use these facts.

Pure Python (onnx, never tensorrt): it works on machines where TensorRT cannot be installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthmed.errors import UserInputError

OPS_FILE = Path(__file__).with_name("tensorrt_onnx_ops.txt")
_ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OnnxInput:
    """A graph input: its name, numpy dtype and the static dimensions after the batch axis."""

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]


def _load_onnx(onnx_path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:  # protobuf's decode errors have no common public base class
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise UserInputError(f"cannot read ONNX model {onnx_path}: {reason}") from err


def onnx_inputs(onnx_path: Path) -> list[OnnxInput]:
    """The real inputs of an ONNX graph; the batch axis (dim 0) must be its only dynamic axis."""
    import onnx

    graph = _load_onnx(Path(onnx_path)).graph
    initializers = {tensor.name for tensor in graph.initializer}
    inputs = []
    for value in graph.input:
        if value.name in initializers:  # old exporters list weights as inputs too
            continue
        tensor = value.type.tensor_type
        dims = list(tensor.shape.dim)
        where = f"{Path(onnx_path).name} input {value.name!r}"
        if not dims:
            raise UserInputError(f"{where} has no shape; export it with a batch axis")
        if dims[0].WhichOneof("value") == "dim_value" and dims[0].dim_value > 0:
            raise UserInputError(f"{where} has a fixed batch size {dims[0].dim_value}")
        static = []
        for axis, dim in enumerate(dims[1:], start=1):
            if dim.WhichOneof("value") != "dim_value" or dim.dim_value < 1:
                raise UserInputError(f"{where} axis {axis} is dynamic; only the batch may be")
            static.append(dim.dim_value)
        try:
            dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except KeyError as err:
            raise UserInputError(f"{where} has no tensor element type") from err
        inputs.append(OnnxInput(value.name, dtype, tuple(static)))
    return inputs


def supported_operators() -> frozenset[str]:
    """The ONNX operators TensorRT 10's parser supports, from `tensorrt_onnx_ops.txt`."""
    lines = OPS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(s for s in (line.strip() for line in lines) if s and not s.startswith("#"))


def _graph_nodes(graph: Any) -> Iterator[Any]:
    """Every node of `graph` and of the subgraphs held in its nodes' attributes (If, Loop, Scan)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graph_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graph_nodes(subgraph)


def unsupported_operators(onnx_path: Path) -> list[str]:
    """Operators in the graph (subgraphs and local functions too) that TensorRT 10 cannot parse.

    Default-domain ops are named bare ("Unique"); others as "domain::op", since the parser has no
    importer for them unless a plugin is registered. A call to a model-local function is not an
    op itself: its body is checked instead (the parser expands local functions; onnx-tensorrt's
    operators.md suggests composing DynamicQuantizeLinear that way).
    """
    model = _load_onnx(Path(onnx_path))
    local = {(function.domain, function.name) for function in model.functions}
    bodies = [model.graph, *model.functions]
    found = set()
    for body in bodies:
        for node in _graph_nodes(body):
            if (node.domain, node.op_type) in local:
                continue
            found.add(
                node.op_type if node.domain in _ONNX_DOMAINS else f"{node.domain}::{node.op_type}"
            )
    return sorted(found - supported_operators())
