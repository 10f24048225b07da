"""The training recipe of seed 001 (sec. 3.1, A.1), with a checkpoint per epoch.

SGD with momentum 0.9 and weight decay 5e-4, base learning rate 0.01, and either the ``step``
schedule (x0.1 every 25 epochs) or the ``exp`` schedule (x10^(-1/25) per epoch); general forms
``step:EVERY:FACTOR`` and ``exp:FACTOR``. Cross-entropy loss. The seed controls the
initialisation, dropout and the order of the training samples (and their augmentation).

A run folder holds::

    config.json               the TrainConfig, the data set's shape and normalisation, versions
    metrics.csv               one row per epoch: lr, train/val/test loss and accuracy, seconds
    checkpoints/epoch_0000.pt one per epoch, epoch 0 being the initialisation; each carries its
                              metadata (epoch, seed, arch, dataset, losses and accuracies)
    resume.pt                 optimizer, scheduler and RNG states after the last finished epoch

Every file is written atomically, so an interrupted run keeps every finished epoch. Epoch ``e``'s
checkpoint holds the weights after ``e`` epochs; the learning rate drops after the epochs that
:func:`lr_drops` lists (the red ticks of seed 001's figures).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._progress import progress
from .._version import __version__
from ..checkpoints import atomic_write_text, load_checkpoint, save_checkpoint
from ..errors import DataError, RelugeomError
from .data import Batches, DataSplits, FolderSplit, corrupt, load_dataset, subset
from .models import build_model, load_state_dict_into

RESUME_FILE = "resume.pt"


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
    init: str = "kaiming_all"
    augment: bool | None = None
    normalize: str = "standard"
    val_fraction: float = 0.1
    split_seed: int = 0
    n_train: int | None = None
    label_noise: float = 0.0
    pixel_shuffle: bool = False
    image_size: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def parse_schedule(spec: str) -> tuple[str, int, float]:
    """``step`` -> ("step", 25, 0.1); ``exp`` -> ("exp", 1, 10^(-1/25)); ``step:EVERY:FACTOR``,
    ``exp:FACTOR``; ``none`` -> a constant learning rate."""
    parts = spec.lower().split(":")
    try:
        if parts[0] == "step" and len(parts) in (1, 3):
            return ("step", 25, 0.1) if len(parts) == 1 else ("step", int(parts[1]), float(parts[2]))
        if parts[0] == "exp" and len(parts) in (1, 2):
            return ("exp", 1, 10 ** (-1 / 25)) if len(parts) == 1 else ("exp", 1, float(parts[1]))
        if parts == ["none"]:
            return ("none", 1, 1.0)
    except ValueError:
        pass
    raise RelugeomError(f"bad schedule {spec!r}: use step, exp, step:EVERY:FACTOR, exp:FACTOR or none")


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
    data = corrupt(data, label_noise=config.label_noise, pixel_shuffle=config.pixel_shuffle, seed=config.split_seed)
    if config.image_size is not None:
        if isinstance(data.train, FolderSplit):  # crop to the size; evaluation resizes to size * 256/224
            size, ev = config.image_size, round(config.image_size * 8 / 7)
            data = replace(data, train=replace(data.train, size=size), val=replace(data.val, size=size, resize=ev),
                           test=None if data.test is None else replace(data.test, size=size, resize=ev))  # fmt: skip
        else:
            data = replace(data, resize=config.image_size)
    return data


def _write_config(out: Path, config: TrainConfig, data: DataSplits) -> None:
    doc = {
        "config": asdict(config),
        "data": {"name": data.name, "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                 "n_train": len(data.train), "n_val": len(data.val),
                 "n_test": 0 if data.test is None else len(data.test), "mean": data.mean, "std": data.std,
                 "augment": None if data.augment is None else asdict(data.augment), **data.info},
        "lr_drops": lr_drops(config.schedule, config.epochs),
        "versions": {"relugeom": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }  # fmt: skip
    atomic_write_text(out / "config.json", json.dumps(doc, indent=2))


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
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RelugeomError(f"{run_dir}: no config.json, so not a run folder written by `relugeom train`")
    try:
        doc = json.loads(path.read_text())
        return TrainConfig(**doc["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise RelugeomError(f"{path}: not a relugeom training config ({str(e)[:100]})") from None


def resume(run_dir: str | Path, *, epochs: int | None = None, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Continue the run in ``run_dir`` from its last complete epoch (``resume.pt``: model, optimizer,
    scheduler and RNG states), up to ``epochs`` (default: the configured number).

    On CPU the result is bitwise equal to an uninterrupted run of the same seed.
    """
    out = Path(run_dir)
    config = read_run_config(out)
    if not (out / RESUME_FILE).is_file():
        raise RelugeomError(f"{out}: no {RESUME_FILE} (the run never finished an epoch, or predates resume); "
                            "start it again with `relugeom train`")  # fmt: skip
    if epochs is not None:
        config = replace(config, epochs=epochs)
    return train(config, out, device=device, resume=True)


def train(
    config: TrainConfig,
    out: str | Path,
    *,
    device: str | torch.device = "cpu",
    data: DataSplits | None = None,
    resume: bool = False,
) -> pd.DataFrame:
    """Train ``config.arch`` on ``config.dataset`` with the paper's recipe, writing the run folder.

    Returns the per-epoch metrics (the same table as ``metrics.csv``). ``data`` may be passed to
    reuse an already loaded data set (it must match the config). ``resume=True`` continues from the
    folder's ``resume.pt`` (see :func:`resume`). Under ``torchrun`` (``WORLD_SIZE > 1``) the model is
    wrapped in DistributedDataParallel: every process draws the same global batch and trains on its
    slice ``[rank::world]``, the loss is scaled so that the averaged gradient is the global batch's
    mean, and only rank 0 writes files.

    Example
    -------
    >>> import tempfile
    >>> cfg = TrainConfig(arch="lenet", dataset="digits", epochs=1, n_train=256)  # doctest: +SKIP
    >>> train(cfg, tempfile.mkdtemp())[["epoch", "train_loss"]].shape            # doctest: +SKIP
    (2, 2)
    """
    out = Path(out)
    if config.epochs < 0:
        raise RelugeomError(f"epochs must be >= 0, got {config.epochs}")
    parse_schedule(config.schedule)
    state: dict[str, Any] | None = None
    if resume:
        ckpt = load_checkpoint(out / RESUME_FILE, mmap=False)
        state = ckpt.extra
        if not {"epoch", "optimizer", "scheduler", "rng"} <= set(state):
            raise RelugeomError(f"{out / RESUME_FILE}: not a relugeom resume file (no optimizer/RNG state)")
        if int(state["epoch"]) >= config.epochs:
            raise RelugeomError(f"{out}: the run already finished epoch {state['epoch']} of {config.epochs}; "
                                "pass a larger --epochs to train further")  # fmt: skip
    data = data if data is not None else prepare_data(config)
    if len(data.train) == 0:
        raise DataError(f"{config.dataset}: the training split is empty")
    rank, world, device = _distributed(device)
    torch.manual_seed(config.seed)
    build_kwargs = {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size,
                    **config.model_kwargs}  # fmt: skip
    net = build_model(config.arch, init=config.init, seed=config.seed, **build_kwargs)
    if state is not None:
        load_state_dict_into(net, ckpt.state_dict, f"{out / RESUME_FILE}: ")
    net = net.to(device)
    model: nn.Module = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device] if str(device).startswith("cuda") else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)  # fmt: skip
    scheduler = make_scheduler(optimizer, config.schedule)
    gen = torch.Generator().manual_seed(config.seed)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"], gen)
    eval_size = max(config.batch_size, 256)
    train_batches = Batches(data.train, config.batch_size, shuffle=True, augment=data.augment, generator=gen,
                            resize=data.resize, shard=(rank, world) if world > 1 else None)  # fmt: skip
    eval_train = Batches(data.train, eval_size, resize=data.resize)
    eval_val = Batches(data.val, eval_size, resize=data.resize)
    eval_test = None if data.test is None else Batches(data.test, eval_size, resize=data.resize)

    writer = rank == 0
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        _write_config(out, config, data)
    meta_base = {"seed": config.seed, "arch": config.arch, "dataset": data.name,
                 "input_shape": list(data.input_shape), "num_classes": data.num_classes,
                 "model_kwargs": build_kwargs}  # fmt: skip
    rows: list[dict[str, Any]] = []
    start = 0
    if state is not None:
        start = int(state["epoch"])
        if (out / "metrics.csv").is_file():
            old = pd.read_csv(out / "metrics.csv")
            rows = old[old.epoch <= start].to_dict("records")

    def finish_epoch(epoch: int, lr: float, train_loss: float, train_acc: float, seconds: float) -> None:
        val_loss, val_acc = evaluate(net, eval_val, device)
        test_loss, test_acc = (math.nan, math.nan) if eval_test is None else evaluate(net, eval_test, device)
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss,
               "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc,
               "test_loss": test_loss, "test_acc": test_acc, "seconds": seconds}  # fmt: skip
        rows.append(row)
        if not writer:
            return
        save_checkpoint(out / "checkpoints" / f"epoch_{epoch:04d}.pt", net.state_dict(), {**meta_base, **row})
        extra = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "rng": _rng_state(gen)}  # fmt: skip
        save_checkpoint(out / RESUME_FILE, net.state_dict(), {**meta_base, **row}, extra=extra)
        atomic_write_text(out / "metrics.csv", pd.DataFrame(rows).to_csv(index=False))

    if state is None:
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
        if not math.isfinite(train_loss):
            raise RelugeomError(
                f"{out}: training diverged at epoch {epoch} (loss {train_loss}); lower --lr or check the init"
            )
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        finish_epoch(epoch, lr, train_loss, float(correct) / seen, time.perf_counter() - t0)
    return pd.DataFrame(rows)
