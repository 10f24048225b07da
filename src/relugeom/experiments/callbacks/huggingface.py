"""A Hugging Face ``TrainerCallback`` that records training as a relugeom run folder and logs n_l live.

Needs ``pip install 'relugeom[hf]'``. Example::

    from relugeom.experiments.callbacks.huggingface import RelugeomTrainerCallback
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      callbacks=[RelugeomTrainerCallback(data="cifar10", input_shape=(3, 32, 32))])
    trainer.train()   # writes <output_dir>/relugeom; then: relugeom stats <output_dir>/relugeom

The initialization is recorded in ``on_train_begin`` (before the first step) as epoch 0; each epoch's
checkpoint is written once the epoch's evaluation (if any) has run, with the last value of every
metric the Trainer logged during that epoch (``loss``, ``learning_rate``, ``eval_loss``, ...). With
``every_n_steps`` a checkpoint is written every N optimizer steps instead. With TensorBoard among
``report_to`` (or ``tensorboard=True``), n_l per layer and the per-layer cos histograms (Gamba et al.
2020, figs. 4-5) are written to ``<run>/tensorboard``, next to the Trainer's own event files under
``output_dir``. Only the main process writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

try:
    from transformers import TrainerCallback
except ImportError:
    raise ImportError("RelugeomTrainerCallback needs transformers: pip install 'relugeom[hf]'") from None

from .recorder import Recorder


def _wants_tensorboard(args: Any) -> bool:
    report_to = getattr(args, "report_to", None) or []
    if isinstance(report_to, str):
        report_to = [report_to]
    return "tensorboard" in report_to or "all" in report_to


class RelugeomTrainerCallback(TrainerCallback):
    """Record a Hugging Face Trainer run as a relugeom run folder (see the module docstring).

    Parameters
    ----------
    out
        Run folder; default ``<args.output_dir>/relugeom``.
    module
        Attribute of the model holding the network to record (e.g. ``"backbone"``); default the
        model itself (unwrapped). A network whose ``forward`` returns logits lets every verb run it.
    seed
        Default: ``args.seed``.
    tensorboard
        ``"auto"``: when ``report_to`` includes tensorboard; ``True``/``False``: always/never.

    Other keyword arguments (``data``, ``arch``, ``model_factory``, ``model_kwargs``, ``input_shape``,
    ``num_classes``, ``every_n_steps``, ``linear``, ``pointwise``, ``hparams``, ``resume``) are
    :class:`~relugeom.experiments.callbacks.recorder.Recorder`'s.
    """

    def __init__(
        self,
        out: str | os.PathLike | None = None,
        *,
        module: str | None = None,
        seed: int | None = None,
        model_factory: Callable[..., nn.Module] | str | None = None,
        tensorboard: bool | str = "auto",
        **recorder_kwargs: Any,
    ) -> None:
        self.out = out
        self.module = module
        self.seed = seed
        self.model_factory = model_factory
        self.tensorboard = tensorboard
        self.recorder_kwargs = recorder_kwargs
        self.recorder: Recorder | None = None
        self._pending_epoch: int | None = None

    def _net(self, model: nn.Module) -> nn.Module:
        while hasattr(model, "module") and isinstance(model.module, nn.Module) and self.module != "module":
            model = model.module  # DataParallel / DDP wrappers
        if self.module is None:
            return model
        net = getattr(model, self.module, None)
        if not isinstance(net, nn.Module):
            raise AttributeError(f"RelugeomTrainerCallback(module={self.module!r}): the model has no such submodule")
        return net

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None, **kw: Any) -> None:
        if not state.is_world_process_zero or model is None:
            return
        out = Path(self.out) if self.out is not None else Path(args.output_dir) / "relugeom"
        tb = _wants_tensorboard(args) if self.tensorboard == "auto" else bool(self.tensorboard)
        seed = self.seed if self.seed is not None else getattr(args, "seed", None)
        self.recorder = Recorder(out, self._net(model), seed=seed, model_factory=self.model_factory,
                                 tensorboard=tb, framework="huggingface", **self.recorder_kwargs)  # fmt: skip
        self.recorder.start(global_step=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kw: Any) -> None:
        if self.recorder is not None and logs:
            self.recorder.log(**{k: v for k, v in logs.items() if k != "epoch"})

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        rec = self.recorder
        if rec is not None and rec.unit == "step":
            rec.epoch = int(state.epoch or 0)
            rec.step(state.global_step)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # the epoch's evaluation and logging run after this hook: commit once they have
        if self.recorder is not None:
            self._pending_epoch = round(state.epoch or 0)

    def _flush(self, state: Any) -> None:
        rec = self.recorder
        if rec is not None and self._pending_epoch is not None:
            epoch, self._pending_epoch = self._pending_epoch, None
            rec.end_epoch(epoch, global_step=state.global_step)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Mapping[str, Any] | None = None,
                    **kw: Any) -> None:  # fmt: skip
        if self.recorder is not None and metrics:
            self.recorder.log(**{k: v for k, v in metrics.items() if k != "epoch"})
        self._flush(state)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._flush(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._flush(state)
        if self.recorder is not None:
            self.recorder.close()
