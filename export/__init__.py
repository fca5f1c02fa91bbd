"""Export: trained checkpoints to verified ONNX graphs and TensorRT engines.

One module per step, each checking what it wrote: `graphs` (what is exported), `torch2onnx`
(export + publish), `verify` (onnxruntime parity), `quantize` (opt-in int8 stage II for CPUs),
`conv_transpose` (ConvTranspose as phase Convs, so int8 gets its kernels), `tensorrt_ops` (what
TensorRT's ONNX parser accepts), `onnx2trt` (TensorRT engine builds), `engine_manifest` (a
plan's manifest; refusing plans built for another GPU or TensorRT), `trtexec_script`
(build_engines.sh for the device). The export manifest's name and every model's tensors are
synthmed's contract (`synthmed.contract`); file hashes are `synthmed.hashing`.
"""
