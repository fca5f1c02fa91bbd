"""Client: the Triton client SDK for bulk synthesis, numpy and tritonclient only (issue 5).

Needs no torch. Not implemented yet.
"""
