"""Error types that the CLI turns into a one-line message: exit code 2 for inputs, 1 for a diverged run.

Library code raises these for problems with *inputs* (a file, a row, a tensor shape the caller
handed in). Bugs stay ordinary exceptions so they keep their tracebacks.
"""

from __future__ import annotations


class InputError(ValueError):
    """A user-supplied input is missing, malformed or unusable. The message names the input."""


class VideoReadError(InputError):
    """A video file could not be opened or decoded (missing, zero bytes, corrupt, no video stream)."""


class CheckpointError(InputError):
    """A checkpoint does not fit the model: missing/unexpected keys or wrong shapes, listed by name."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the last good checkpoint."""
