"""ConvTranspose as phase Convs + DepthToSpace: the same function, other kernels.

A stride-s ConvTranspose whose output is s times its input equals s*s ordinary Convs, one per
output phase (each reads its own taps of the kernel with its own padding), concatenated and
interleaved by DepthToSpace. The rewrite is exact in real arithmetic (sums run in another
order). Why: onnxruntime's CPU provider has int8 kernels for Conv but not for ConvTranspose,
so int8 stage II (`quantize`) needs it. In fp32 it does not pay on this CPU: the Convs got
about 15 % faster but the DepthToSpace copies cost more than that (benchmarks, docs).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _phases(kernel: int, stride: int, pad_begin: int) -> list[tuple[int, int, list[int]]] | None:
    """Per output phase along one axis: (pad_begin, pad_end, kernel taps) of a plain Conv.

    Output y = s*i + a of a ConvTranspose sums x[i + d - m] * w[r + s*m] for m < K/s, where
    d, r = divmod(a + pad_begin, s): a correlation with the taps reversed and its own pads.
    """
    m = kernel // stride
    plans = []
    for a in range(stride):
        d, r = divmod(a + pad_begin, stride)
        if d > m - 1:
            return None
        plans.append((m - 1 - d, d, [r + stride * (m - 1 - j) for j in range(m)]))
    return plans


def _plain(attrs: dict, w: np.ndarray) -> bool:
    """2-D, ungrouped, undilated, equal strides (DepthToSpace has one block size), and an
    output exactly `stride` times the input: what the phase rewrite covers."""
    strides, pads = attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])
    return (
        w.ndim == 4
        and len(set(strides)) == 1
        and attrs.get("group", 1) == 1
        and all(d == 1 for d in attrs.get("dilations", [1, 1]))
        and not any(attrs.get("output_padding", [0, 0]))
        and "output_shape" not in attrs
        and attrs.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET")
        and all(
            k % s == 0 and k - pads[i] - pads[i + 2] == s
            for i, (k, s) in enumerate(zip(w.shape[2:], strides, strict=True))
        )
    )


def _phase_nodes(
    node: onnx.NodeProto, weights: dict[str, np.ndarray]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """Convs (one per output phase), Concat and DepthToSpace computing a ConvTranspose `node`;
    None where the rewrite does not apply."""
    if node.op_type != "ConvTranspose" or node.input[1] not in weights:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    w = weights[node.input[1]]
    if not _plain(attrs, w):
        return None
    stride, pads = attrs.get("strides", [1, 1])[0], attrs.get("pads", [0, 0, 0, 0])
    rows, cols = _phases(w.shape[2], stride, pads[0]), _phases(w.shape[3], stride, pads[1])
    if rows is None or cols is None:
        return None
    nodes, tensors, phases = [], [], []
    for a, (top, bottom, taps_h) in enumerate(rows):
        for b, (left, right, taps_w) in enumerate(cols):
            name = f"{node.name}_phase{a}{b}"
            kernel = np.ascontiguousarray(w[:, :, taps_h][:, :, :, taps_w].transpose(1, 0, 2, 3))
            tensors.append(numpy_helper.from_array(kernel, f"{name}_weight"))
            inputs = [node.input[0], f"{name}_weight", *node.input[2:3]]
            shape, pads_ = list(kernel.shape[2:]), [top, left, bottom, right]
            nodes.append(
                helper.make_node("Conv", inputs, [name], name=name, kernel_shape=shape, pads=pads_)
            )
            phases.append(name)
    joined = f"{node.name}_phases"
    nodes.append(helper.make_node("Concat", phases, [joined], name=joined, axis=1))
    # DCR reads channel (row phase * s + column phase) * C + c: the order concatenated above.
    interleave = dict(name=f"{node.name}_interleave", blocksize=stride, mode="DCR")
    nodes.append(helper.make_node("DepthToSpace", [joined], list(node.output), **interleave))
    return nodes, tensors


def conv_transpose_to_conv(
    model: onnx.ModelProto, *, keep: Collection[str] = ()
) -> tuple[onnx.ModelProto, list[str]]:
    """Rewrite ConvTransposes as phase Convs + DepthToSpace so that they get int8 kernels.

    Returns the model (changed in place) and the names of the nodes rewritten. Nodes named in
    `keep`, and ConvTransposes of another shape, are left as they are: they stay fp32, where
    onnxruntime's ConvTranspose is faster than the phase Convs.
    """
    graph = model.graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes, added, rewritten = [], [], []
    for node in graph.node:
        replacement = None if node.name in keep else _phase_nodes(node, weights)
        if replacement is None:
            nodes.append(node)
            continue
        nodes += replacement[0]
        added += replacement[1]
        rewritten.append(node.name)
    used = {name for node in nodes for name in node.input}
    kept = [t for t in graph.initializer if t.name in used] + added
    del graph.node[:], graph.initializer[:]
    graph.node.extend(nodes)
    graph.initializer.extend(kept)
    return model, rewritten
