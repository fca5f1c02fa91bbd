"""What TensorRT's ONNX parser accepts: graph inputs and the operator check.

Also the home of the toy contract graphs (stage 1: z -> uint8 mask, stage 2: uint8 mask -> uint8
image) that the other TensorRT tests build engines, scripts and manifests from. Pure Python: no
TensorRT needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from synthmed.errors import UserInputError
from synthmed.export.tensorrt_ops import onnx_inputs, supported_operators, unsupported_operators

NZ, H, W = 8, 4, 4
RNG = np.random.default_rng(0)
WEIGHTS = RNG.standard_normal((NZ, H * W)).astype(np.float32)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9  # what TensorRT 10's parser reads; onnx's newest default may be newer
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def stage1_model(path: Path) -> Path:
    """z float [batch, 8] -> mask uint8 [batch, 4, 4] in {0, 255}, like the real stage 1."""
    nodes = [
        helper.make_node("MatMul", ["z", "w"], ["logits"]),
        helper.make_node("Reshape", ["logits", "shape"], ["grid"]),
        helper.make_node("Greater", ["grid", "zero"], ["on"]),
        helper.make_node("Cast", ["on"], ["on_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["on_f", "full"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["mask"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes,
        "stage1",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", NZ])],
        [helper.make_tensor_value_info("mask", TensorProto.UINT8, ["batch", H, W])],
        initializer=[
            _const("w", WEIGHTS),
            _const("shape", np.array([-1, H, W], np.int64)),
            _const("zero", np.array(0.0, np.float32)),
            _const("full", np.array(255.0, np.float32)),
        ],
    )
    return _save(graph, path)


def stage2_model(path: Path) -> Path:
    """mask uint8 [batch, 4, 4] -> image uint8 [batch, 4, 4, 3] (255 - mask in every channel)."""
    nodes = [
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "last"], ["m1"]),
        helper.make_node("Concat", ["m1", "m1", "m1"], ["rgb"], axis=3),
        helper.make_node("Sub", ["full", "rgb"], ["inverted"]),
        helper.make_node("Cast", ["inverted"], ["image"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes,
        "stage2",
        [helper.make_tensor_value_info("mask", TensorProto.UINT8, ["batch", H, W])],
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", H, W, 3])],
        initializer=[
            _const("last", np.array([3], np.int64)),
            _const("full", np.array(255.0, np.float32)),
        ],
    )
    return _save(graph, path)


def contract_models(folder: Path) -> Path:
    """`folder` (created) holding the toy synthmed_stage1.onnx and synthmed_stage2.onnx."""
    folder.mkdir()
    stage1_model(folder / "synthmed_stage1.onnx")
    stage2_model(folder / "synthmed_stage2.onnx")
    return folder


@pytest.fixture()
def onnx_dir(tmp_path: Path) -> Path:
    return contract_models(tmp_path / "onnx")


# --- ONNX inputs and operators ---------------------------------------------------------------


def test_onnx_inputs_read_names_dtypes_and_static_dims(onnx_dir: Path) -> None:
    (z,) = onnx_inputs(onnx_dir / "synthmed_stage1.onnx")
    assert (z.name, z.dtype, z.dims) == ("z", np.dtype(np.float32), (NZ,))
    (mask,) = onnx_inputs(onnx_dir / "synthmed_stage2.onnx")
    assert (mask.name, mask.dtype, mask.dims) == ("mask", np.dtype(np.uint8), (H, W))


@pytest.mark.parametrize(
    ("shape", "fragment"),
    [([1, NZ], "fixed batch size 1"), (["batch", "n"], "axis 1 is dynamic")],
)
def test_onnx_inputs_refuse_other_dynamic_axes(tmp_path: Path, shape: list, fragment: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["z"], ["y"])],
        "g",
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    path = _save(graph, tmp_path / "m.onnx")
    with pytest.raises(UserInputError, match=fragment):
        onnx_inputs(path)


def test_supported_operator_list_is_the_trt10_table() -> None:
    ops = supported_operators()
    assert {"Cast", "Conv", "ConvTranspose", "Resize", "MatMul", "Greater", "Mul"} <= ops
    assert not {"Unique", "NonExistent", "BitShift", "MatMulInteger"} & ops
    assert not any(op.startswith("#") for op in ops)


def test_contract_graphs_have_no_unsupported_operators(onnx_dir: Path) -> None:
    assert unsupported_operators(onnx_dir / "synthmed_stage1.onnx") == []
    assert unsupported_operators(onnx_dir / "synthmed_stage2.onnx") == []


def test_unsupported_operators_found_in_graph_subgraph_and_functions(tmp_path: Path) -> None:
    branch = helper.make_graph(
        [helper.make_node("Unique", ["x"], ["u"])],
        "then",
        [],
        [helper.make_tensor_value_info("u", TensorProto.FLOAT, None)],
    )
    other = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["v"])],
        "else",
        [],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MadeUpOp", ["r"], ["s"]),
        helper.make_node("Foo", ["s"], ["t"], domain="com.example"),
        helper.make_node("Scaled", ["t"], ["f"], domain="local"),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other),
    ]
    function = helper.make_function(
        "local",
        "Scaled",
        ["a"],
        ["b"],
        [helper.make_node("Abs", ["a"], ["b"]), helper.make_node("BitShift", ["a", "a"], ["q"])],
        [helper.make_opsetid("", 18)],
    )
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(
        graph,
        functions=[function],
        opset_imports=[
            helper.make_opsetid("", 18),
            helper.make_opsetid("local", 1),
            helper.make_opsetid("com.example", 1),
        ],
    )
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    # The local function call "Scaled" is expanded, not reported; its BitShift is.
    assert unsupported_operators(path) == ["BitShift", "MadeUpOp", "Unique", "com.example::Foo"]


def test_unreadable_onnx_is_a_one_line_user_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x00not a protobuf at all\xff" * 3)
    with pytest.raises(UserInputError) as info:
        unsupported_operators(path)
    assert "bad.onnx" in str(info.value) and "\n" not in str(info.value)
