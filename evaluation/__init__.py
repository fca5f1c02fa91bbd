"""Evaluation: is the synthetic data useful downstream, close to the real data, and private?

Three verdicts, one report: a segmentation U-Net trained on synthetic pairs and tested on held-out
real ones, distances between the synthetic and real distributions, and an audit of how close each
synthetic sample comes to a training patient. Importing this package is cheap; torch is only
imported by the submodules that need it.
"""
