"""synthmed: labelled synthetic medical images from two-stage GANs, served on NVIDIA Triton."""

from synthmed.errors import (
    CheckpointError,
    DataError,
    SynthmedError,
    TrainingDivergedError,
    UserInputError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "DataError",
    "SynthmedError",
    "TrainingDivergedError",
    "UserInputError",
    "__version__",
]
