"""One exception family for everything relugeom refuses to do.

Every message names the file or layer concerned and, where there is one, what to do about it.
The CLI turns a :class:`RelugeomError` into one line on stderr and a non-zero exit; it never
shows a traceback for one.
"""

from __future__ import annotations


class RelugeomError(Exception):
    """Base class of every error relugeom raises on purpose.

    Example
    -------
    >>> from relugeom import load_checkpoint
    >>> try:
    ...     load_checkpoint("no-such-file.pt")
    ... except RelugeomError as e:  # CheckpointError, ArchitectureError, ... all derive from it
    ...     print(type(e).__name__, e)
    CheckpointError no-such-file.pt: no such file
    """


class CheckpointError(RelugeomError):
    """A checkpoint file is missing, unsafe, corrupt or not a checkpoint."""


class LayerError(RelugeomError):
    """A layer has weights or a shape that an analysis cannot treat (NaN, inf, wrong rank)."""


class ShapeError(RelugeomError):
    """An input shape does not fit a layer or a model."""


class ArchitectureError(RelugeomError):
    """A state dict does not fit the requested architecture, or an architecture is unknown."""


class ConfigError(RelugeomError):
    """A setting that cannot work (a NaN learning rate, a zero-epoch schedule step); ``name`` is the setting."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


class RunLockedError(RelugeomError):
    """Another process holds a run folder's lock (it is training or resuming that run)."""


class WriteError(RelugeomError):
    """An output file cannot be written: read-only or full disk, no permission, a folder in the way."""


class DataError(RelugeomError):
    """A data set is missing, incomplete or malformed."""


class UnsupportedLayerError(RelugeomError):
    """A module type that an analysis cannot treat exactly."""


class BudgetExceeded(RelugeomError):
    """A computation would exceed its budget; ``partial`` holds what was finished."""

    def __init__(self, message: str, partial: object = None) -> None:
        super().__init__(message)
        self.partial = partial


class ShardIncomplete(RelugeomError):
    """One shard's parts are written but other shards' are still missing, so no table was assembled. Not a
    failure: the CLI prints it and exits 0."""


class RelugeomWarning(UserWarning):
    """A problem that does not stop an analysis (a skipped checkpoint, zero filters).

    Example
    -------
    >>> import warnings
    >>> from torch import nn
    >>> from relugeom import projection_stats
    >>> conv = nn.Conv2d(1, 2, 3)
    >>> _ = conv.weight.data[0].zero_()
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     n_zero = projection_stats(conv).cos.isna().sum()
    >>> int(n_zero), [issubclass(w.category, RelugeomWarning) for w in caught]
    (1, [True])
    """


class SkippedWarning(RelugeomWarning):
    """An input (a checkpoint of a series, a layer) was left out; the rest was analysed."""


def warn(message: str, category: type[RelugeomWarning] = RelugeomWarning) -> None:
    """Emit a relugeom warning attributed to the caller of the analysis."""
    import warnings

    warnings.warn(message, category, stacklevel=3)
