"""Record your own training loop as a relugeom run folder.

* :class:`Recorder` (``relugeom.experiments.callbacks.recorder``): any PyTorch loop, no framework.
* ``RelugeomCallback`` (``.lightning``): a Lightning ``Callback``; needs ``pip install 'relugeom[lightning]'``.
* ``RelugeomTrainerCallback`` (``.huggingface``): a Hugging Face ``TrainerCallback``; ``relugeom[hf]``.

The framework classes are imported on first use, so that ``import relugeom`` needs neither framework.
"""

from __future__ import annotations

from typing import Any

from .recorder import Recorder, live_stats, nl_scalars

__all__ = ["Recorder", "RelugeomCallback", "RelugeomTrainerCallback", "live_stats", "nl_scalars"]


def __getattr__(name: str) -> Any:
    if name == "RelugeomCallback":
        from .lightning import RelugeomCallback

        return RelugeomCallback
    if name == "RelugeomTrainerCallback":
        from .huggingface import RelugeomTrainerCallback

        return RelugeomTrainerCallback
    raise AttributeError(name)
