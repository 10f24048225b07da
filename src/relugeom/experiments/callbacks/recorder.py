"""Record any training loop as a relugeom run folder, with live n_l logging (Gamba et al. 2020, eqs. 1-2).

:class:`Recorder` is framework-free: call :meth:`~Recorder.start` before the first optimizer step (it
writes the initialization as epoch 0), :meth:`~Recorder.step` after each step (optional; it checkpoints
every ``every_n_steps``) and :meth:`~Recorder.end_epoch` after each epoch (checkpoint, metrics row,
n_l). The Lightning and Hugging Face callbacks of this package drive one. The folder has the layout
of ``relugeom train`` (``config.json``, ``metrics.csv``, ``checkpoints/epoch_NNNN.pt``), so that every
verb (``stats``, ``cones``, ``regions``, ``measures``, ``reinit``, ``report``) reads it.

Each checkpoint's metadata holds ``epoch`` (0 = initialization), ``global_step``, ``seed``, the data
name, ``input_shape`` and ``num_classes`` when known, the architecture (``arch``, a relugeom model)
or the model's class (``model_class``, ``module:QualName``) with ``model_factory``/``model_kwargs``
when given, and the row of metrics logged for that epoch. Recording every N steps instead of every
epoch, the series' ``epoch`` is the global step (``unit: step`` in ``config.json`` and the metadata).

Live logging: at every checkpoint the projection statistic of every filter and n_l of every layer are
computed from the live weights (float64, on the weights' device; milliseconds for a VGG) and, with
``tensorboard``, written as scalars ``relugeom/n_l/LAYER`` and histograms ``relugeom/cos/LAYER`` (the
per-layer cos distributions over epochs: Gamba et al. 2020, figs. 4-5, in TensorBoard's histogram
view). :meth:`~Recorder.end_epoch` returns the per-layer table, for any other logger.

Example
-------
>>> import tempfile, torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
>>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
>>> x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 2, (16,))
>>> with Recorder(tempfile.mkdtemp(), net, seed=0, data="noise", input_shape=(1, 8, 8)) as rec:
...     for epoch in range(2):
...         loss = nn.functional.cross_entropy(net(x), y)
...         opt.zero_grad(); loss.backward(); opt.step(); rec.step()
...         layers = rec.end_epoch(train_loss=loss.item())
>>> [e.epoch for e in rec.run.checkpoints()], list(layers["layer"]), "n_neg" in layers  # n_neg is n_l
([0, 1, 2], ['0'], True)
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ...checkpoints import Run
from ...errors import RelugeomError

UNITS = ("epoch", "step")


def factory_reference(obj: Any) -> str:
    """``module:QualName`` of a class or function, importable elsewhere; a clear error for lambdas
    and functions defined inside functions (they cannot be imported back)."""
    module, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if module == "__main__":  # a script run as `python script.py`: importable as `script` from its folder
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        module = Path(main_file).stem if main_file else module
    if not module or not qual or "<" in qual:
        raise RelugeomError(f"model_factory {obj!r} cannot be imported back (a lambda or a function defined "
                            "inside another one); give a module-level class or function")  # fmt: skip
    return f"{module}:{qual}"


def _jsonable(d: Mapping[str, Any] | None) -> dict[str, Any]:
    """``d`` as JSON, refusing what JSON cannot hold (the kwargs must rebuild the model later)."""
    if not d:
        return {}
    try:
        return json.loads(json.dumps(dict(d)))
    except (TypeError, ValueError) as e:
        raise RelugeomError(f"model_kwargs must be JSON (numbers, strings, lists, dicts): {e}") from None


def _scalar(v: Any) -> float | None:
    """A logged metric as a float (tensors of one element, numpy and Python numbers), else None."""
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().cpu()) if v.numel() == 1 else None
    if isinstance(v, bool):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def live_stats(model: nn.Module, *, linear: bool = False, pointwise: bool = False) -> pd.DataFrame:
    """Per-filter projection statistic of the live ``model`` (Gamba et al. 2020, eq. 1), computed on
    the weights' own device in float64 (``relugeom.projection_stats`` of the module)."""
    from ...stats.projection import projection_stats

    return projection_stats(model, linear=linear, pointwise=pointwise)


class Recorder:
    """Write a relugeom run folder from any training loop (see the module docstring).

    Parameters
    ----------
    out
        The run folder (created). A folder that already holds a run is refused unless ``resume=True``
        (training continued from a framework checkpoint: recorded epochs are kept, later ones added).
    model
        The module whose weights are recorded (the same object the loop trains).
    seed, data
        The run's seed and the data set's name (``digits``, ``cifar10``, ... name relugeom's own
        readers, so that ``measures`` and ``reinit`` can reload it; any other name is recorded as is).
    arch
        A relugeom architecture name when ``model`` is one (``build_model(arch, ...)``): then every verb
        rebuilds the model by itself.
    model_factory, model_kwargs
        For any other model: the class or function that builds it (or its ``module:QualName``) and its
        JSON keyword arguments. Verbs rebuild the model when given ``--arch module:QualName``
        (relugeom imports only code the user names). Default: the model's own class.
    input_shape, num_classes, data_dir, normalize
        The data's shape (C, H, W), classes, folder and normalisation, recorded for the verbs.
    every_n_steps
        Checkpoint every N optimizer steps (:meth:`step`) instead of every epoch.
    tensorboard
        ``True``: a SummaryWriter in ``out/tensorboard``; a path: one there; a ``SummaryWriter``:
        that one; ``False``: none.
    linear, pointwise
        Also log linear layers / 1x1 convolutions (as ``relugeom stats --linear/--pointwise``).
    hparams
        Anything else to keep in ``config.json`` (learning rate, batch size, ...).
    tensorboard_scalars, tensorboard_step
        Write the n_l scalars too (off when a framework logs them itself), and index TensorBoard by
        ``"epoch"`` (the series' key) or ``"global_step"`` (to share the axis with a framework's logs).
    """

    def __init__(
        self,
        out: str | os.PathLike,
        model: nn.Module,
        *,
        seed: int | None = None,
        data: str | None = None,
        arch: str | None = None,
        model_factory: Callable[..., nn.Module] | str | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        input_shape: tuple[int, ...] | list[int] | None = None,
        num_classes: int | None = None,
        data_dir: str | os.PathLike | None = None,
        normalize: str = "standard",
        every_n_steps: int | None = None,
        tensorboard: bool | str | os.PathLike | Any = False,
        linear: bool = False,
        pointwise: bool = False,
        histograms: bool = True,
        hparams: Mapping[str, Any] | None = None,
        tensorboard_scalars: bool = True,
        tensorboard_step: str = "epoch",
        framework: str = "plain",
        resume: bool = False,
    ) -> None:
        if every_n_steps is not None and every_n_steps < 1:
            raise RelugeomError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if arch is not None:
            from ..models import ARCHITECTURES

            if arch.lower() not in ARCHITECTURES:
                names = ", ".join(sorted(ARCHITECTURES))
                raise RelugeomError(f"arch={arch!r} is not a relugeom architecture ({names}); "
                                    "give model_factory= for your own model")  # fmt: skip
        self.run = Run(out)
        self.model = model
        self.seed = seed
        self.data = data
        self.arch = arch
        self.unit = "step" if every_n_steps else "epoch"
        self.every_n_steps = every_n_steps
        self.linear, self.pointwise, self.histograms = linear, pointwise, histograms
        self.framework = framework
        self.resume = resume
        if isinstance(model_factory, str):
            factory_ref = model_factory
        elif model_factory is not None:
            factory_ref = factory_reference(model_factory)
        else:
            factory_ref = None
        try:
            self.model_class = factory_reference(type(model))
        except RelugeomError:  # a class defined inside a function: recorded for information only
            self.model_class = f"{type(model).__module__}:{type(model).__qualname__}"
        self.model_factory = factory_ref
        self.model_kwargs = _jsonable(model_kwargs)
        self.input_shape = None if input_shape is None else [int(s) for s in input_shape]
        self.num_classes = None if num_classes is None else int(num_classes)
        self.data_dir = None if data_dir is None else str(data_dir)
        self.normalize = normalize
        self.hparams = _jsonable(hparams) if hparams else {}
        if tensorboard_step not in ("epoch", "global_step"):
            raise RelugeomError(f"tensorboard_step must be 'epoch' or 'global_step', got {tensorboard_step!r}")
        self._tb_arg = tensorboard
        self._tb_scalars = tensorboard_scalars
        self._tb_step = tensorboard_step
        self.writer: Any = None
        self._own_writer = False
        self.global_step = 0
        self.epoch = 0
        self._last_recorded: int | None = None
        self._pending: dict[str, float] = {}
        self.rows: list[dict[str, Any]] = []
        self._lock: Any = None
        self.last_stats: pd.DataFrame | None = None

    # -- the run folder -------------------------------------------------------------------------
    def _config_doc(self) -> dict[str, Any]:
        from ..._version import __version__

        # the TrainConfig fields that are known (so that verbs reading the config find the data and model)
        config = {"arch": self.arch, "dataset": self.data, "data_dir": self.data_dir, "seed": self.seed,
                  "normalize": self.normalize}  # fmt: skip
        config = {k: v for k, v in config.items() if v is not None}
        data = {"name": self.data, "input_shape": self.input_shape, "num_classes": self.num_classes}
        recorder = {"framework": self.framework, "unit": self.unit, "every_n_steps": self.every_n_steps,
                    "model_class": self.model_class, "model_factory": self.model_factory,
                    "model_kwargs": self.model_kwargs, "command": list(sys.argv)}  # fmt: skip
        return {"config": config, "data": data, "lr_drops": [], "hparams": self.hparams, "recorder": recorder,
                "versions": {"relugeom": __version__, "torch": torch.__version__,
                             "python": platform.python_version()}}  # fmt: skip

    def _meta(self, epoch: int, row: Mapping[str, Any]) -> dict[str, Any]:
        meta: dict[str, Any] = {"epoch": epoch, "global_step": self.global_step, "seed": self.seed,
                                "dataset": self.data, "unit": self.unit, "model_class": self.model_class}  # fmt: skip
        if self.arch:
            meta["arch"] = self.arch
        if self.model_factory:
            meta["model_factory"] = self.model_factory
        if self.model_kwargs:
            meta["model_kwargs"] = self.model_kwargs
        if self.input_shape is not None:
            meta["input_shape"] = self.input_shape
        if self.num_classes is not None:
            meta["num_classes"] = self.num_classes
        return {**meta, **{k: v for k, v in row.items() if k not in meta}}

    def _open_writer(self) -> None:
        tb = self._tb_arg
        if tb is False or tb is None:
            return
        if tb is True or isinstance(tb, (str, os.PathLike)):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RelugeomError("tensorboard logging needs the tensorboard package: "
                                    "pip install 'relugeom[tensorboard]'") from None  # fmt: skip
            self.writer = SummaryWriter(str(self.run.path / "tensorboard" if tb is True else tb))
            self._own_writer = True
        else:
            self.writer = tb

    def start(self, *, global_step: int = 0) -> pd.DataFrame | None:
        """Open the run (lock, ``config.json``) and record the initialization as epoch 0.

        Resuming a folder that already holds a run continues after its last recorded epoch.
        Returns the per-layer n_l table of the initialization (None when resuming past it).
        """
        self.global_step = int(global_step)
        existing = self.run.is_run() or self.run.checkpoint_dir.is_dir()
        if existing and not self.resume:
            raise RelugeomError(f"{self.run.path}: already holds a run; choose another folder, or pass "
                                "resume=True to continue it (recorded epochs are kept)")  # fmt: skip
        self._lock = self.run.lock()
        self._lock.__enter__()
        try:
            if existing:  # continue after the commit point; an unfinished checkpoint is rewritten
                self.run.remove_stale_temps()
                self._last_recorded = self.run.committed_epoch()
                self.rows = self.run.metrics().to_dict("records") if self._last_recorded is not None else []
                self.epoch = self._last_recorded or 0
                if self.unit == "step":
                    self.epoch = int(self.rows[-1].get("train_epoch", 0)) if self.rows else 0
            else:
                self.run.write_config(self._config_doc())
            self._open_writer()
            if self._last_recorded is None:
                return self._record(0, {})
            return None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close the TensorBoard writer (if this recorder opened it) and release the run."""
        if self.writer is not None:
            self.writer.flush()
            if self._own_writer:
                self.writer.close()
            self.writer = None
        if self._lock is not None:
            lock, self._lock = self._lock, None
            lock.__exit__(None, None, None)

    # -- recording ------------------------------------------------------------------------------
    def log(self, **metrics: Any) -> None:
        """Add metrics (numbers or one-element tensors) to the row of the next checkpoint."""
        for k, v in metrics.items():
            f = _scalar(v)
            if f is not None:
                self._pending[k] = f

    def step(self, global_step: int | None = None) -> pd.DataFrame | None:
        """Count one optimizer step (or set the step count); with ``every_n_steps``, checkpoint when due.
        Returns the per-layer table when it checkpointed."""
        self.global_step = self.global_step + 1 if global_step is None else int(global_step)
        if self.every_n_steps and self.global_step % self.every_n_steps == 0:
            return self._record(self.global_step, {})
        return None

    def end_epoch(self, epoch: int | None = None, *, global_step: int | None = None,
                  metrics: Mapping[str, Any] | None = None, **more: Any) -> pd.DataFrame | None:  # fmt: skip
        """Finish an epoch (default: the next one): with the default unit, write its checkpoint, the
        metrics row (``metrics`` and keyword metrics, plus everything :meth:`log` ged) and log n_l.
        Returns the per-layer n_l table (``relugeom.layer_summary`` of the live weights); in step mode
        the metrics go to the next step checkpoint and None is returned."""
        self.epoch = self.epoch + 1 if epoch is None else int(epoch)
        if global_step is not None:
            self.global_step = int(global_step)
        self.log(**dict(metrics or {}), **more)
        if self.unit == "step":
            return None
        return self._record(self.epoch, {})

    def _record(self, key: int, extra: Mapping[str, Any]) -> pd.DataFrame | None:
        if self._lock is None:
            raise RelugeomError(f"{self.run.path}: the recorder is not started; call start() (or use it as a "
                                "context manager) before training")  # fmt: skip
        if self._last_recorded is not None and key <= self._last_recorded:
            self._pending.clear()
            return None  # already recorded (a resumed run replaying a step)
        from ...stats.projection import layer_summary

        row: dict[str, Any] = {"epoch": key, "global_step": self.global_step}
        if self.unit == "step":
            row["train_epoch"] = self.epoch
        row.update(self._pending)
        row.update(extra)
        self._pending = {}
        state = {k: v.detach() for k, v in self.model.state_dict().items() if isinstance(v, torch.Tensor)}
        stats = live_stats(self.model, linear=self.linear, pointwise=self.pointwise)
        summary = layer_summary(stats) if len(stats) else None
        self.rows.append(row)
        self.run.commit_epoch(key, state, self._meta(key, row), self.rows, {"recorder": self.framework})
        self._last_recorded = key
        if self.writer is not None:
            self._write_tensorboard(key, stats, summary, row)
        self.last_stats = summary
        return summary

    def _write_tensorboard(self, key: int, stats: pd.DataFrame, summary: pd.DataFrame | None,
                           row: Mapping[str, Any]) -> None:  # fmt: skip
        w = self.writer
        key = self.global_step if self._tb_step == "global_step" else key
        if summary is not None and self._tb_scalars:
            for s in summary.itertuples():
                tag = f"{int(s.layer_index) + 1:02d}_{s.layer}"
                if not math.isnan(s.n_neg):
                    w.add_scalar(f"relugeom/n_l/{tag}", float(s.n_neg), key)
        if summary is not None and self.histograms:
            for (index, layer), cos in stats.groupby(["layer_index", "layer"], sort=True)["cos"]:
                values = cos.dropna().to_numpy()
                if len(values):
                    w.add_histogram(f"relugeom/cos/{int(index) + 1:02d}_{layer}", values, key)
        if self.framework == "plain":
            for k, v in row.items():
                if k not in ("epoch", "global_step") and isinstance(v, float) and math.isfinite(v):
                    w.add_scalar(f"metrics/{k}", v, key)
        w.flush()


def nl_scalars(summary: pd.DataFrame | None, prefix: str = "relugeom/n_l/") -> dict[str, float]:
    """``{prefix + "NN_layer": n_l}`` of a per-layer table, for a framework's ``log_dict``."""
    if summary is None:
        return {}
    return {f"{prefix}{int(s.layer_index) + 1:02d}_{s.layer}": float(s.n_neg) for s in summary.itertuples()
            if not math.isnan(s.n_neg)}  # fmt: skip
