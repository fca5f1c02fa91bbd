"""The one exception family that synthmed raises on purpose.

Users see these as a one-line message and a non-zero exit from the CLI; anything else
escaping is a bug in synthmed and keeps its traceback.
"""

from __future__ import annotations


class SynthmedError(Exception):
    """Root of every error synthmed raises deliberately."""

    exit_code = 1


class UserInputError(SynthmedError):
    """Bad input from the user: a path, an option, a config value."""

    exit_code = 2


class InvalidRequestError(UserInputError):
    """A generation request the model cannot take: a missing, unknown or out-of-range class
    label, a label for a model without classes, a truncation that is not a finite number."""


class DataError(UserInputError):
    """A dataset file or folder that cannot be used (names the file)."""


class CheckpointError(UserInputError):
    """A checkpoint directory that is missing, incomplete or incompatible."""


class TrainingDivergedError(SynthmedError):
    """A loss became NaN or infinite; training stopped without overwriting good checkpoints."""

    exit_code = 3
