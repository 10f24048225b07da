"""A Lightning callback that records training as a relugeom run folder and logs n_l live.

Needs ``pip install 'relugeom[lightning]'``. Example::

    from relugeom.experiments.callbacks.lightning import RelugeomCallback
    trainer = lightning.Trainer(max_epochs=30, callbacks=[RelugeomCallback("runs/vgg", data="cifar10",
                                                                           input_shape=(3, 32, 32))])
    trainer.fit(module, train_loader, val_loader)
    # relugeom stats runs/vgg ; relugeom report runs/vgg

The initialization is recorded in ``on_train_start`` (before the first step) as epoch 0, then one
checkpoint per epoch after validation (``on_train_epoch_end``; or every ``every_n_steps`` optimizer
steps), with the metrics Lightning holds then (``trainer.callback_metrics``: whatever the module
logged with ``self.log``) and the learning rate. n_l of every layer goes through
``pl_module.log_dict`` to every configured logger (TensorBoard, CSV, W&B, ...) as ``relugeom/n_l/NN_layer``,
and the per-layer cos histograms to TensorBoard when a ``TensorBoardLogger`` is configured (Gamba et al.
2020, figs. 4-5). Only the global rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

try:
    from lightning.pytorch import Callback
except ImportError:  # the standalone package
    try:
        from pytorch_lightning import Callback
    except ImportError:
        raise ImportError("RelugeomCallback needs Lightning: pip install 'relugeom[lightning]'") from None

from .recorder import Recorder, _scalar, nl_scalars


def _tensorboard_writer(trainer: Any) -> Any:
    for logger in getattr(trainer, "loggers", []) or []:
        if type(logger).__name__ == "TensorBoardLogger":
            return logger.experiment
    return None


class RelugeomCallback(Callback):
    """Record a Lightning run as a relugeom run folder (see the module docstring).

    Parameters
    ----------
    out
        Run folder; default ``<trainer.log_dir or default_root_dir>/relugeom``.
    module
        Attribute of the LightningModule holding the network to record (e.g. ``"net"``); default the
        LightningModule itself. Recording the inner network keeps its own layer names and lets verbs
        that run the model call its forward.
    seed
        Default: the seed of ``lightning.seed_everything`` (``PL_GLOBAL_SEED``).
    model_factory, model_kwargs
        How to rebuild the network (see :class:`~relugeom.experiments.callbacks.recorder.Recorder`);
        recording the LightningModule itself, the default kwargs are its ``hparams``.
    log_nl
        Send n_l through ``pl_module.log_dict`` (to every configured logger).
    tensorboard
        ``"auto"``: histograms into the trainer's TensorBoardLogger when there is one; ``True``: a
        writer in ``out/tensorboard``; ``False``: none.

    Other keyword arguments (``data``, ``arch``, ``input_shape``, ``num_classes``, ``every_n_steps``,
    ``linear``, ``pointwise``, ``hparams``, ``resume``) are :class:`Recorder`'s.
    """

    def __init__(
        self,
        out: str | os.PathLike | None = None,
        *,
        module: str | None = None,
        seed: int | None = None,
        model_factory: Callable[..., nn.Module] | str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        log_nl: bool = True,
        tensorboard: bool | str = "auto",
        **recorder_kwargs: Any,
    ) -> None:
        super().__init__()
        self.out = out
        self.module = module
        self.seed = seed
        self.model_factory = model_factory
        self.model_kwargs = model_kwargs
        self.log_nl = log_nl
        self.tensorboard = tensorboard
        self.recorder_kwargs = recorder_kwargs
        self.recorder: Recorder | None = None
        self._writes = False

    def _net(self, pl_module: Any) -> nn.Module:
        if self.module is None:
            return pl_module
        net = getattr(pl_module, self.module, None)
        if not isinstance(net, nn.Module):
            raise AttributeError(f"RelugeomCallback(module={self.module!r}): the LightningModule has no such "
                                 "submodule")  # fmt: skip
        return net

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._writes = bool(trainer.is_global_zero)
        net = self._net(pl_module)
        out = self.out
        if out is None:
            out = Path(trainer.log_dir or trainer.default_root_dir) / "relugeom"
        seed = self.seed
        if seed is None and os.environ.get("PL_GLOBAL_SEED", "").lstrip("-").isdigit():
            seed = int(os.environ["PL_GLOBAL_SEED"])
        kwargs = self.model_kwargs
        if kwargs is None and self.module is None and getattr(pl_module, "hparams", None):
            kwargs = dict(pl_module.hparams)
        tb: Any = self.tensorboard
        shared = False
        if tb == "auto":
            tb = _tensorboard_writer(trainer) or False
            shared = tb is not False
        # into the trainer's own TensorBoard run: histograms on Lightning's step axis, n_l scalars via log_dict
        self.recorder = Recorder(out, net, seed=seed, model_factory=self.model_factory, model_kwargs=kwargs,
                                 tensorboard=tb if self._writes else False, framework="lightning",
                                 tensorboard_scalars=not (shared and self.log_nl),
                                 tensorboard_step="global_step" if shared else "epoch",
                                 **self.recorder_kwargs)  # fmt: skip
        if self._writes:
            summary = self.recorder.start(global_step=trainer.global_step)
            values = nl_scalars(summary) if self.log_nl else {}
            if values:  # no log_dict before the first step: straight to the loggers, at the current step
                for logger in trainer.loggers:
                    logger.log_metrics(values, step=trainer.global_step)

    def _log(self, pl_module: Any, summary: Any) -> None:
        if self.log_nl and summary is not None:
            values = nl_scalars(summary)
            if values:
                pl_module.log_dict(values, on_step=False, on_epoch=True, rank_zero_only=True)

    def _metrics(self, trainer: Any, pl_module: Any) -> dict[str, float]:
        out = {}
        for k, v in trainer.callback_metrics.items():
            f = _scalar(v)
            if f is not None and not k.startswith("relugeom/"):
                out[k] = f
        if trainer.optimizers:
            out["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        return out

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        rec = self.recorder
        if rec is None or not self._writes or rec.unit != "step":
            return
        if rec.every_n_steps and trainer.global_step % rec.every_n_steps == 0 and trainer.global_step > 0:
            rec.log(**self._metrics(trainer, pl_module))
            rec.epoch = trainer.current_epoch
            rec.step(trainer.global_step)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        rec = self.recorder
        if rec is None:
            return
        if not self._writes:
            return
        summary = rec.end_epoch(trainer.current_epoch + 1, global_step=trainer.global_step,
                                metrics=self._metrics(trainer, pl_module))  # fmt: skip
        self._log(pl_module, summary)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.teardown_recorder()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.teardown_recorder()

    def teardown_recorder(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
