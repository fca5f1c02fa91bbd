"""Serving: the Triton model repository writer, `synthmed serve`, and the in-process runtime.

Needs no torch: `repository` (configs as protobufs), `python_backend/model.py` (onnxruntime
inside Triton's python backend), `server` (a real tritonserver process), `runtime` (the same
ONNX graphs with onnxruntime, no server), `cli`.
"""
