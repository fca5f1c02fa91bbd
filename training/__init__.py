"""Training: paired datasets, the generator models, and the GAN training loops.

Importing this package is cheap; torch is only imported by the submodules that need it.
"""
