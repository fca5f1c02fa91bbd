"""Serving: Triton model repository writer, local tritonserver, in-process runtime (issue 4).

Needs no torch. Nothing is served yet.
"""
