"""Triton python-backend model that runs an ONNX graph with onnxruntime.

Copied by the repository writer into every version folder of a `--backend python` repository,
next to `model.onnx`, so the same exported graph serves on any Triton build, CPU-only
included. Triton's dynamic batcher hands `execute` a list of requests: they are concatenated
into one batch for a single onnxruntime call and the result is split back, or batching would
buy nothing. Outputs are already UINT8 from the graph (clipped before the cast), since the
python backend does not check output dtypes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """One onnxruntime session per model instance."""

    def initialize(self, args: dict) -> None:
        """Open the session named by the config's `onnx_file` parameter."""
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Each model instance is its own stub process sharing the same cores: threads that
        # spin-wait after a call steal cycles from the stage running beside them.
        spinning = params.get("allow_spinning", "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(
            str(folder / params.get("onnx_file", "model.onnx")),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests: list) -> list:
        """Run every request of the batch in one session call."""
        arrays = {
            name: [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for r in requests]
            for name in self.input_names
        }
        sizes = [len(a) for a in arrays[self.input_names[0]]]
        feeds = {name: np.concatenate(parts) for name, parts in arrays.items()}
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as e:  # onnxruntime raises its own types; return it to every client
            error = pb_utils.TritonError(f"onnxruntime: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        bounds = np.cumsum(sizes)[:-1]
        split = [np.split(result, bounds) for result in results]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(parts[i]))
                    for name, parts in zip(self.output_names, split, strict=True)
                ]
            )
            for i in range(len(requests))
        ]

    def finalize(self) -> None:
        """Release the session."""
        self.session = None
