"""Datasets: procedural phantoms, public retinal layouts, and the torch dataset used in training."""
