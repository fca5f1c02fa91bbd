"""Export: trained checkpoints to verified ONNX graphs and TensorRT engines.

One module per step, each checking what it wrote: `graphs` (what is exported), `torch2onnx`
(export + publish), `verify` (onnxruntime parity), `onnx2trt` (TensorRT engines).
"""
