"""Triton python-backend model that runs an ONNX graph with onnxruntime.

Copied by the repository writer into every version folder of a `--backend python` repository,
next to `model.onnx`, so the same exported graph serves on any Triton build, CPU-only
included. Triton's dynamic batcher hands `execute` a list of requests: they are concatenated
into one batch for a single onnxruntime call and the result is split back, or batching would
buy nothing. Outputs are already UINT8 from the graph (clipped before the cast), since the
python backend does not check output dtypes.

Two things left to the model, done here for any graph: an optional input a request leaves
out is filled from the config parameter `default_<name>` (one value per sample), and each
feed is reshaped to the rank the graph expects. Triton 2.51 applies the config's `reshape`
(a per-sample scalar sent as [B, 1] arrives as [B]), but older python backends did not
(server issue #5759), so [B, 1] and [B] are both accepted.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# Copies of synthmed.contract's config keys: this file runs inside Triton, where synthmed may not
# be installed (tests/serving/test_python_backend_contract.py holds them equal).
PARAM_ONNX_FILE = "onnx_file"
PARAM_INTRA_OP_THREADS = "intra_op_threads"
PARAM_ALLOW_SPINNING = "allow_spinning"
# An optional input `x` a request leaves out is filled from the parameter `default_x`.
DEFAULT_PREFIX = "default_"

# onnxruntime's type names -> numpy, for inputs filled from a default.
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
}


class TritonPythonModel:
    """One onnxruntime session per model instance."""

    def initialize(self, args: dict) -> None:
        """Open the session named by the config's `onnx_file` parameter."""
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get(PARAM_INTRA_OP_THREADS, "0"))
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Each model instance is its own stub process sharing the same cores: threads that
        # spin-wait after a call steal cycles from the stage running beside them.
        spinning = params.get(PARAM_ALLOW_SPINNING, "0")
        options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(
            str(folder / params.get(PARAM_ONNX_FILE, "model.onnx")),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.defaults = {
            i["name"]: params[DEFAULT_PREFIX + i["name"]]
            for i in config["input"]
            if i.get("optional") and DEFAULT_PREFIX + i["name"] in params
        }
        graph = {i.name: i for i in self.session.get_inputs()}
        # Per-sample shape each graph input wants (-1 where it is dynamic), and its dtype.
        self.sample_shapes = {
            name: tuple(d if isinstance(d, int) and d > 0 else -1 for d in graph[name].shape[1:])
            for name in self.input_names
        }
        self.dtypes = {name: _NUMPY_TYPES.get(graph[name].type) for name in self.input_names}

    def _request_feeds(self, request: object) -> dict[str, np.ndarray]:
        """One request's inputs at the graph's rank, an omitted optional one from its default."""
        arrays = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is not None:
                arrays[name] = tensor.as_numpy()
        size = len(next(iter(arrays.values())))
        feeds = {}
        for name in self.input_names:
            sample = self.sample_shapes[name]
            if name not in arrays:
                shape = (size, *(1 if d < 0 else d for d in sample))
                feeds[name] = np.full(shape, float(self.defaults[name]), self.dtypes[name])
            elif arrays[name].ndim != len(sample) + 1:
                feeds[name] = arrays[name].reshape(len(arrays[name]), *sample)
            else:
                feeds[name] = arrays[name]
        return feeds

    def _run(self, batch: list[dict[str, np.ndarray]]) -> list:
        """Outputs per request (or a TritonError): one session call for the whole batch, and
        request by request only if that fails, so one bad request fails no other client's."""
        feeds = {name: np.concatenate([f[name] for f in batch]) for name in self.input_names}
        try:
            results = self.session.run(self.output_names, feeds)
        except Exception as e:  # onnxruntime raises its own types
            if len(batch) > 1:
                return [out for single in batch for out in self._run([single])]
            return [pb_utils.TritonError(f"onnxruntime: {e}")]
        bounds = np.cumsum([len(f[self.input_names[0]]) for f in batch])[:-1]
        split = [np.split(result, bounds) for result in results]
        return [[parts[i] for parts in split] for i in range(len(batch))]

    def execute(self, requests: list) -> list:
        """Run every request of the batch in one session call."""
        outputs: list = [None] * len(requests)
        ready = []
        for i, request in enumerate(requests):
            try:
                ready.append((i, self._request_feeds(request)))
            except Exception as e:  # shapes the graph cannot take
                outputs[i] = pb_utils.TritonError(f"bad input: {e}")
        if ready:
            for (i, _), out in zip(ready, self._run([f for _, f in ready]), strict=True):
                outputs[i] = out
        return [
            pb_utils.InferenceResponse(output_tensors=[], error=out)
            if isinstance(out, pb_utils.TritonError)
            else pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(part))
                    for name, part in zip(self.output_names, out, strict=True)
                ]
            )
            for out in outputs
        ]

    def finalize(self) -> None:
        """Release the session."""
        self.session = None
