"""Export: trained checkpoints to verified ONNX graphs and TensorRT engines (issue 3).

Nothing is exported yet; this package is where `synthmed export onnx|tensorrt` will live.
"""
