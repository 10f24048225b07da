"""The training recipe of Gamba et al. 2020 (sec. 3.1, A.1), with a checkpoint per epoch.

SGD with momentum 0.9 and weight decay 5e-4 (``optimizer="adam"``: Adam with the same learning rate and
weight decay, the recipe of Greydanus and Kobak 2020 for MNIST-1D), base learning rate 0.01, and either the ``step``
schedule (x0.1 every 25 epochs) or the ``exp`` schedule (x10^(-1/25) per epoch); general forms
``step:EVERY:FACTOR`` and ``exp:FACTOR``. Cross-entropy loss. The seed controls the
initialisation, dropout and the order of the training samples (and their augmentation).

A run folder holds::

    config.json               the TrainConfig, the data set's shape and normalisation, versions
    metrics.csv               one row per epoch: lr, train/val/test loss and accuracy, seconds
    checkpoints/epoch_0000.pt one per epoch, epoch 0 being the initialisation; each carries its
                              metadata (epoch, seed, arch, dataset, losses and accuracies)
    resume.pt                 optimizer, scheduler and RNG states after the last finished epoch

Every file is written atomically and ``resume.pt`` is written last, as the commit point (see
:class:`~relugeom.checkpoints.Run`), so an interrupted run keeps every finished epoch and its metrics
row. One process writes a run at a time (a lock, ``--resume`` included). Epoch ``e``'s checkpoint
holds the weights after ``e`` epochs; the learning rate drops after the epochs that :func:`lr_drops`
lists (the red ticks of Gamba et al. 2020's figures).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._progress import progress
from .._version import __version__
from ..checkpoints import Run
from ..errors import ConfigError, DataError, RelugeomError, warn
from .data import Batches, DataSplits, FolderSplit, corrupt, load_dataset, subset
from .models import build_model, load_state_dict_into

RESUME_FILE = Run.RESUME_FILE
SEED_MAX = 2**63 - 1


@dataclass
class TrainConfig:
    """Everything that defines a training run (written to ``config.json``)."""

    arch: str = "vgg9"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 10
    seed: int = 0
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    optimizer: str = "sgd"
    init: str = "kaiming_all"
    augment: bool | None = None
    normalize: str = "standard"
    val_fraction: float = 0.1
    split_seed: int = 0
    n_train: int | None = None
    label_noise: float = 0.0
    label_noise_rule: str = "shift"
    pixel_shuffle: bool = False
    image_size: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_config(self)


def _bad(name: str, value: object, want: str) -> ConfigError:
    return ConfigError(f"{name} must be {want}, got {value!r}", name)


def check_config(config: TrainConfig) -> None:
    """Refuse values that cannot train (NaN or negative learning rate, a zero-step schedule, ...)."""

    def whole(name: str, lo: int, hi: int | None = None, *, none: bool = False) -> None:
        v = getattr(config, name)
        if none and v is None:
            return
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or (hi is not None and v > hi):
            raise _bad(name, v, f"a whole number from {lo}" + (f" to {hi}" if hi is not None else " up"))

    def real(name: str, lo: float, hi: float | None = None, *, open_lo: bool = False) -> None:
        v = getattr(config, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > lo if open_lo else v >= lo) and (hi is None or v <= hi)
        if not ok:
            bound = f"> {lo}" if open_lo else f">= {lo}"
            raise _bad(name, v, f"a finite number {bound}" + (f" and <= {hi}" if hi is not None else ""))

    whole("epochs", 0)
    whole("seed", 0, SEED_MAX)
    whole("split_seed", 0, SEED_MAX)
    whole("batch_size", 1)
    whole("n_train", 1, none=True)
    whole("image_size", 1, 4096, none=True)
    real("lr", 0.0)
    real("momentum", 0.0)
    real("weight_decay", 0.0)
    real("label_noise", 0.0, 1.0)
    real("val_fraction", 0.0, 1.0)
    if config.val_fraction >= 1:
        raise _bad("val_fraction", config.val_fraction, "below 1 (some samples must stay for training)")
    if not isinstance(config.model_kwargs, dict):
        raise _bad("model_kwargs", config.model_kwargs, "a dict")
    parse_schedule(config.schedule)
    if config.optimizer not in OPTIMIZERS:
        raise _bad("optimizer", config.optimizer, f"one of {', '.join(OPTIMIZERS)}")
    from .data.corruptions import LABEL_NOISE_RULES

    if config.label_noise_rule not in LABEL_NOISE_RULES:
        raise _bad("label_noise_rule", config.label_noise_rule, f"one of {', '.join(LABEL_NOISE_RULES)}")


def parse_schedule(spec: str) -> tuple[str, int, float]:
    """``step`` -> ("step", 25, 0.1); ``exp`` -> ("exp", 1, 10^(-1/25)); ``step:EVERY:FACTOR``,
    ``exp:FACTOR``; ``none`` -> a constant learning rate."""
    parts = str(spec).lower().split(":")
    usage = f"bad schedule {spec!r}: use step, exp, step:EVERY:FACTOR, exp:FACTOR or none"
    try:
        if parts[0] == "step" and len(parts) in (1, 3):
            out = ("step", 25, 0.1) if len(parts) == 1 else ("step", int(parts[1]), float(parts[2]))
        elif parts[0] == "exp" and len(parts) in (1, 2):
            out = ("exp", 1, 10 ** (-1 / 25)) if len(parts) == 1 else ("exp", 1, float(parts[1]))
        elif parts == ["none"]:
            return ("none", 1, 1.0)
        else:
            raise ConfigError(usage, "schedule")
    except ValueError:
        raise ConfigError(usage, "schedule") from None
    if out[1] < 1:
        raise ConfigError(f"bad schedule {spec!r}: EVERY must be a whole number of epochs >= 1", "schedule")
    if not (math.isfinite(out[2]) and out[2] > 0):
        raise ConfigError(f"bad schedule {spec!r}: FACTOR must be a finite number > 0", "schedule")
    return out


OPTIMIZERS = ("sgd", "adam")


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with the config's momentum, or Adam (PyTorch's betas); both with the config's lr and weight decay."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)  # fmt: skip
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    raise _bad("optimizer", config.optimizer, f"one of {', '.join(OPTIMIZERS)}")


def make_scheduler(optimizer: torch.optim.Optimizer, spec: str) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate scheduler of a schedule spec; ``step()`` it once after every epoch."""
    kind, every, factor = parse_schedule(spec)
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=factor)
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=factor)


def lr_drops(spec: str, epochs: int) -> list[int]:
    """Epochs after which a step schedule lowers the learning rate (empty for smooth schedules)."""
    kind, every, _ = parse_schedule(spec)
    return list(range(every, epochs, every)) if kind == "step" else []


@torch.no_grad()
def evaluate(model: nn.Module, batches, device: str | torch.device = "cpu") -> tuple[float, float]:  # noqa: ANN001
    """Mean cross-entropy and top-1 accuracy of ``model`` (in eval mode) over ``batches``."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    n = 0
    for x, y in batches:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss_sum += nn.functional.cross_entropy(out, y, reduction="sum").double()
        correct += (out.argmax(1) == y).sum()
        n += int(y.shape[0])
    model.train(was_training)
    if n == 0:
        return math.nan, math.nan
    return float(loss_sum) / n, float(correct) / n


def _rng_state(gen: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "data": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, torch.Tensor], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["data"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


def prepare_data(config: TrainConfig) -> DataSplits:
    """The data set of a config (loaded, split, normalised, augmentation chosen)."""
    data = load_dataset(
        config.dataset, config.data_dir, val_fraction=config.val_fraction, split_seed=config.split_seed,
        normalize=config.normalize, augment=config.augment,
    )  # fmt: skip
    data = subset(data, config.n_train)
    data = corrupt(data, label_noise=config.label_noise, pixel_shuffle=config.pixel_shuffle, seed=config.split_seed,
                   label_noise_rule=config.label_noise_rule)  # fmt: skip
    if config.image_size is not None:
        if len(data.train.sample_shape) == 2:
            raise DataError(f"{config.dataset}: --image-size resizes images; {config.dataset} holds 1D signals")
        if isinstance(data.train, FolderSplit):  # crop to the size; evaluation resizes to size * 256/224
            size, ev = config.image_size, round(config.image_size * 8 / 7)
            data = replace(data, train=replace(data.train, size=size), val=replace(data.val, size=size, resize=ev),
                           test=None if data.test is None else replace(data.test, size=size, resize=ev))  # fmt: skip
        else:
            data = replace(data, resize=config.image_size)
    return data


def _write_config(run: Run, config: TrainConfig, data: DataSplits) -> None:
    doc = {
        "config": asdict(config),
        "data": {"name": data.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                 "n_train": len(data.train), "n_val": len(data.val),
                 "n_test": 0 if data.test is None else len(data.test), "mean": data.mean, "std": data.std,
                 "augment": None if data.augment is None else asdict(data.augment), **data.info},
        "lr_drops": lr_drops(config.schedule, config.epochs),
        "versions": {"relugeom": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }  # fmt: skip
    run.write_config(doc)


def _distributed(device: str | torch.device) -> tuple[int, int, str | torch.device]:
    """(rank, world size, device) under torchrun (WORLD_SIZE > 1), initialising the process group:
    gloo on CPU, nccl on GPU (each process on cuda:LOCAL_RANK). (0, 1, device) otherwise."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    cuda = str(device).startswith("cuda")
    if cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def read_run_config(run_dir: str | Path) -> TrainConfig:
    """The :class:`TrainConfig` stored in a run folder's ``config.json``."""
    run = Run(run_dir)
    doc = run.read_config()
    try:
        return TrainConfig(**doc["config"])
    except TypeError as e:
        raise RelugeomError(f"{run.config_path}: not a relugeom training config ({str(e)[:100]})") from None
    except RelugeomError as e:
        raise RelugeomError(f"{run.config_path}: {e}") from None


def resume(run_dir: str | Path, *, epochs: int | None = None, device: str | torch.device = "cpu",
           on_epoch: Callable[[dict[str, Any], nn.Module], None] | None = None) -> pd.DataFrame:  # fmt: skip
    """Continue the run in ``run_dir`` from its last complete epoch (``resume.pt``: model, optimizer,
    scheduler and RNG states), up to ``epochs`` (default: the configured number).

    A run that never finished an epoch (only ``config.json``, perhaps an unfinished epoch 0) starts
    again from its initialisation with its stored config. On CPU the result is bitwise equal to an
    uninterrupted run of the same seed.
    """
    config = read_run_config(run_dir)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    return train(config, run_dir, device=device, resume=True, on_epoch=on_epoch)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    device: str | torch.device = "cpu",
    data: DataSplits | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict[str, Any], nn.Module], None] | None = None,
) -> pd.DataFrame:
    """Train ``config.arch`` on ``config.dataset`` with the paper's recipe, writing the run folder.

    Returns the per-epoch metrics (the same table as ``metrics.csv``). ``data`` may be passed to
    reuse an already loaded data set (it must match the config). ``resume=True`` continues from the
    folder's ``resume.pt`` (see :func:`resume`); without it, a folder that holds any run file is
    refused. The run is locked for the whole call: a second writer of the same folder gets
    :class:`~relugeom.errors.RunLockedError` naming this process. A non-finite loss or weight stops
    training with an error naming the epoch; that epoch is not recorded.

    Under ``torchrun`` (``WORLD_SIZE > 1``) the model is wrapped in DistributedDataParallel: every
    process draws the same global batch and trains on its slice ``[rank::world]``, the loss is
    scaled so that the averaged gradient is the global batch's mean, and only rank 0 writes files
    (and holds the lock). ``on_epoch(row, model)`` is called on rank 0 after each epoch is
    recorded (epoch 0 included), with its metrics row: ``relugeom train`` prints a line from it.

    Example
    -------
    >>> import tempfile
    >>> cfg = TrainConfig(arch="lenet", dataset="digits", epochs=1, n_train=256)  # doctest: +SKIP
    >>> train(cfg, tempfile.mkdtemp())[["epoch", "train_loss"]].shape            # doctest: +SKIP
    (2, 2)
    """
    run = Run(out)
    check_config(config)
    rank, world, device = _distributed(device)
    if rank == 0 and not resume:
        _check_fresh(run)  # before the lock, so that a refused folder gains no lock file (checked again under it)
    with run.lock() if rank == 0 else nullcontext():
        return _train_locked(config, run, device=device, data=data, resume=resume, rank=rank, world=world,
                             on_epoch=on_epoch)


def _check_fresh(run: Run) -> None:
    present = run.run_files()
    if not present:
        return
    if [p.name for p in present] == [Run.CONFIG_FILE]:
        raise RelugeomError(f"{run.path}: holds the config.json of a run that never finished an epoch; continue it "
                            f"with `relugeom train --resume {run.path}`, or choose another --out")  # fmt: skip
    names = ", ".join(p.name + ("/" if p.is_dir() else "") for p in present)
    raise RelugeomError(f"{run.path}: already holds a run ({names}); choose another --out, or continue it with "
                        f"`relugeom train --resume {run.path}` (finished epochs are never overwritten)")  # fmt: skip


def _resume_state(run: Run, config: TrainConfig) -> Any:
    """resume.pt, checked against the run and the config; None when no epoch was ever finished."""
    if not run.resume_path.is_file():
        done = [e for e in run.checkpoint_epochs() if e > 0]
        if done:
            raise RelugeomError(f"{run.path}: has checkpoints up to epoch {max(done)} but no {Run.RESUME_FILE} "
                                "(written by a relugeom without resume, or not by relugeom), so it cannot be "
                                "resumed; start a new run in another folder")  # fmt: skip
        warn(f"{run.path}: no epoch was finished; starting the run again from its initialisation")
        return None
    ckpt = run.load_resume()
    if not {"optimizer", "scheduler", "rng"} <= set(ckpt.extra):
        raise RelugeomError(f"{run.resume_path}: not a relugeom resume file (no optimizer/RNG state)")
    if int(ckpt.extra["epoch"]) >= config.epochs:
        raise RelugeomError(f"{run.path}: the run already finished epoch {int(ckpt.extra['epoch'])} of "
                            f"{config.epochs}; pass a larger --epochs to train further")  # fmt: skip
    return ckpt


def _non_finite(net: nn.Module) -> list[str]:
    return [name for name, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _train_locked(config: TrainConfig, run: Run, *, device: str | torch.device, data: DataSplits | None,
                  resume: bool, rank: int, world: int,
                  on_epoch: Callable[[dict[str, Any], nn.Module], None] | None = None) -> pd.DataFrame:  # fmt: skip
    out = run.path
    writer = rank == 0
    ckpt = None
    if resume:
        ckpt = _resume_state(run, config)
        if writer:
            run.remove_stale_temps()
    elif writer:
        _check_fresh(run)
    data = data if data is not None else prepare_data(config)
    if len(data.train) == 0:
        raise DataError(f"{config.dataset}: the training split is empty")
    torch.manual_seed(config.seed)
    build_kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size,
                    **config.model_kwargs}  # fmt: skip
    net = build_model(config.arch, init=config.init, seed=config.seed, **build_kwargs)
    if ckpt is not None:
        load_state_dict_into(net, ckpt.state_dict, f"{run.resume_path}: ")
    net = net.to(device)
    model: nn.Module = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device] if str(device).startswith("cuda") else None)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config.schedule)
    gen = torch.Generator().manual_seed(config.seed)
    if ckpt is not None:
        optimizer.load_state_dict(ckpt.extra["optimizer"])
        scheduler.load_state_dict(ckpt.extra["scheduler"])
        _set_rng_state(ckpt.extra["rng"], gen)
    eval_size = max(config.batch_size, 256)
    train_batches = Batches(data.train, config.batch_size, shuffle=True, augment=data.augment, generator=gen,
                            resize=data.resize, shard=(rank, world) if world > 1 else None)  # fmt: skip
    eval_train = Batches(data.train, eval_size, resize=data.resize)
    eval_val = Batches(data.val, eval_size, resize=data.resize)
    eval_test = None if data.test is None else Batches(data.test, eval_size, resize=data.resize)

    if writer:
        _write_config(run, config, data)
    meta_base = {"seed": config.seed, "arch": config.arch, "dataset": data.name,
                 "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                 "model_kwargs": build_kwargs}  # fmt: skip
    rows: list[dict[str, Any]] = []
    start = 0
    if ckpt is not None:
        start = int(ckpt.extra["epoch"])
        rows = run.metrics(upto=start).to_dict("records")

    def finish_epoch(epoch: int, lr: float, train_loss: float, train_acc: float, seconds: float) -> None:
        bad = _non_finite(net)
        if bad or not math.isfinite(train_loss):
            what = f"non-finite weights in {', '.join(bad[:3])}" if bad else f"loss {train_loss}"
            kept = {0: "nothing was recorded", 1: "the run keeps epoch 0"}.get(epoch, f"it keeps epochs 0-{epoch - 1}")
            raise RelugeomError(f"{out}: training diverged at epoch {epoch} ({what}); epoch {epoch} was not "
                                f"recorded and {kept}; lower --lr or check the initialisation")  # fmt: skip
        val_loss, val_acc = evaluate(net, eval_val, device)
        test_loss, test_acc = (math.nan, math.nan) if eval_test is None else evaluate(net, eval_test, device)
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss,
               "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
               "test_loss": test_loss, "test_acc": test_acc, "seconds": seconds}  # fmt: skip
        rows.append(row)
        if not writer:
            return
        resume_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "rng": _rng_state(gen)}  # fmt: skip
        run.commit_epoch(epoch, net.state_dict(), {**meta_base, **row}, rows, resume_state)
        if on_epoch is not None:
            on_epoch(dict(row), net)

    if ckpt is None:
        loss0, acc0 = evaluate(net, eval_train, device)
        finish_epoch(0, math.nan, loss0, acc0, 0.0)
    n_total = len(data.train)
    for epoch in progress(range(start + 1, config.epochs + 1), desc="epochs", total=config.epochs - start, leave=True):
        t0 = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        for i, (x, y) in enumerate(progress(train_batches, desc=f"epoch {epoch}", total=len(train_batches))):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            outputs = model(x)
            if world > 1:  # DDP averages gradients over ranks: scale so the result is the global mean
                global_n = min(config.batch_size, n_total - i * config.batch_size)
                loss_items = nn.functional.cross_entropy(outputs, y, reduction="sum")
                loss = loss_items * (world / global_n)
            else:
                loss = nn.functional.cross_entropy(outputs, y)
                loss_items = loss.detach() * y.shape[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                loss_sum += loss_items.detach().double()
                correct += (outputs.argmax(1) == y).sum()
            seen += int(y.shape[0])
        if world > 1:
            import torch.distributed as dist

            totals = torch.stack([loss_sum, correct.double(), torch.tensor(float(seen), dtype=torch.float64,
                                                                           device=device)])  # fmt: skip
            dist.all_reduce(totals)
            loss_sum, correct, seen = totals[0], totals[1], int(totals[2])
        train_loss = float(loss_sum) / seen
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        finish_epoch(epoch, lr, train_loss, float(correct) / seen, time.perf_counter() - t0)
    return pd.DataFrame(rows)
