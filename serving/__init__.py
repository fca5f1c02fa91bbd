"""Serving: the Triton model repository writer, a local tritonserver, the in-process runtime (issue 4).

Needs no torch. Nothing is served yet.
"""
