"""``relugeom train``: the paper's training recipe with a checkpoint per epoch (Gamba et al. 2020, sec. 3.1, A.1)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import ConfigError, RelugeomError
from ..experiments.data import DATASETS, NORMALIZATIONS
from ..experiments.models import INITS
from ._common import ArchParam, arch_help, device_option, echo_table, seed_option


def _model_args(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    """``--model-arg KEY=VALUE`` -> {KEY: VALUE}, VALUE read as a Python literal (a number, list, ...) or a string."""
    import ast

    out = {}
    for text in values:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip().isidentifier():
            raise click.BadParameter(f"{text!r} is not KEY=VALUE (e.g. width=16)")
        try:
            out[key.strip()] = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = raw.strip()
    return out


def epoch_line(row: dict, summary, epochs: int | None) -> str:  # noqa: ANN001
    """One line per epoch for a log file: loss, accuracy, n_l over the layers (min/mean/max), time."""
    def f(key: str, fmt: str = "{:.4f}") -> str:
        v = row.get(key)
        return "-" if v is None or v != v else fmt.format(v)

    total = f"/{epochs}" if epochs else ""
    text = (f"epoch {int(row['epoch'])}{total}  train loss {f('train_loss')} acc {f('train_acc')}  "
            f"val loss {f('val_loss')} acc {f('val_acc')}")  # fmt: skip
    if summary is not None and len(summary) and summary["n_neg"].notna().any():
        nl = summary["n_neg"].dropna()
        text += f"  n_l min/mean/max {nl.min():.2f}/{nl.mean():.2f}/{nl.max():.2f} ({len(nl)} layers)"
    if row.get("seconds"):
        text += f"  {row['seconds']:.1f}s"
    return text


def print_epoch(epochs: int | None):  # noqa: ANN201
    """The ``on_epoch`` hook of ``train()``: print :func:`epoch_line` to stdout and flush it, so that a run
    under nohup or a batch scheduler shows its progress in the log as it goes."""
    from ..experiments.callbacks.recorder import live_stats
    from ..stats.projection import layer_summary

    def hook(row: dict, model) -> None:  # noqa: ANN001
        try:
            stats = live_stats(model)
            summary = layer_summary(stats) if len(stats) else None
        except RelugeomError:  # a NaN layer: the line still reports the losses
            summary = None
        click.echo(epoch_line(row, summary, epochs))
        sys.stdout.flush()

    return hook


@click.command("train")
@click.option("--arch", type=ArchParam(), default=None,
              help=arch_help("Architecture (resnet*_cifar: 3x3 stem, no max-pool, for small images)"))  # fmt: skip
@click.option("--model-arg", "model_args", multiple=True, callback=_model_args, metavar="KEY=VALUE",
              help="A keyword argument of the architecture's factory, e.g. width=16 (ResNets), hidden=[64,64] (mlp); "
                   "repeatable.")  # fmt: skip
@click.option("--dataset", type=click.Choice(DATASETS), default=None,
              help="Data set (folder: an ImageNet-style DIR/train/CLASS, DIR/val/CLASS tree).")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with the data set's files (not needed for digits).")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Epochs to train (with --resume: the new total).")  # fmt: skip
@seed_option("Seeds the initialisation and data order.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Global batch size (split over the processes under torchrun).")  # fmt: skip
@click.option("--lr", type=float, default=0.01, show_default=True, help="Base learning rate (finite, >= 0).")
@click.option("--schedule", default="step", show_default=True,
              help="step (x0.1 every 25 epochs), exp (x10^(-1/25) per epoch), step:EVERY:FACTOR, exp:FACTOR, none.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True,
              help="sgd: momentum 0.9 (Gamba et al. 2020); adam: Greydanus and Kobak's MNIST-1D recipe.")
@click.option("--init", "init", type=click.Choice(INITS), default="kaiming_all", show_default=True,
              help="Initialisation (kaiming_all is the paper's sec. 3.1; normal001 the failing one of fig. 15).")
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="standard", show_default=True,
              help="Pixels: per-channel standardisation, [-1, 1] (pm1) or [0, 1] (unit).")  # fmt: skip
@click.option("--label-noise", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Replace each training label with probability P by another class (fig. 6: 1.0).")  # fmt: skip
@click.option("--label-noise-rule", type=click.Choice(["shift", "uniform"]), default="shift", show_default=True,
              help="shift: a different class, y + k mod C (the authors' code); uniform: a class drawn uniformly from "
                   "all C, which may be the old one (Zhang et al. 2017).")
@click.option("--pixel-shuffle", is_flag=True, help="Shuffle each training image's pixels, fixed per image (fig. 20).")
@click.option("--no-augment", is_flag=True, help="No data augmentation (shifts, flips, random crops).")
@click.option("--no-weight-decay", is_flag=True, help="Weight decay 0 instead of 5e-4.")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Upscale images to this size (AlexNet on CIFAR: 224), or the crop size of a folder data set.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True,
              help="Share of the training set held out for validation (0: train on all of it).")
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Use only the first N training samples.")
@device_option
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.")
@click.option("--resume", "resume_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Continue the run in this folder from its last complete epoch (its config is reused).")
def command(arch, model_args, dataset, data_dir, epochs, seed, batch_size, lr, schedule, optimizer, init, normalize,
            label_noise, label_noise_rule, pixel_shuffle, no_augment, no_weight_decay, image_size, val_fraction,
            n_train, device, out, resume_dir) -> None:  # noqa: ANN001  # fmt: skip
    """Train a network with the paper's recipe, keeping a checkpoint per epoch (epoch 0 = init).

    SGD, momentum 0.9, weight decay 5e-4, cross-entropy (or --optimizer adam); writes OUT/config.json,
    OUT/metrics.csv and OUT/checkpoints/epoch_NNNN.pt. Analyse the run with `relugeom stats OUT`. Under
    `torchrun --nproc_per_node=N -m relugeom train ...` it trains with DistributedDataParallel.
    """
    from ..experiments.train import TrainConfig, resume, train

    if resume_dir is not None:
        given = [name for name, v in (("--arch", arch), ("--dataset", dataset), ("--data-dir", data_dir),
                                       ("--out", out), ("--model-arg", model_args or None))
                 if v is not None]  # fmt: skip
        if given:
            raise click.UsageError(f"--resume reuses the run's config.json; drop {', '.join(given)} "
                                   "(only --epochs and --device apply)")  # fmt: skip
        metrics = resume(resume_dir, epochs=epochs, device=device, on_epoch=print_epoch(epochs))
        out = resume_dir
    else:
        missing = [name for name, v in (("--arch", arch), ("--dataset", dataset), ("--epochs", epochs),
                                         ("--out", out)) if v is None]  # fmt: skip
        if missing:
            raise click.UsageError(f"missing {', '.join(missing)} (or pass --resume RUN_DIR)")
        try:
            config = TrainConfig(arch=arch, dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
                                 epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, schedule=schedule,
                                 optimizer=optimizer, init=init, normalize=normalize, n_train=n_train,
                                 val_fraction=val_fraction, label_noise=label_noise,
                                 label_noise_rule=label_noise_rule,
                                 pixel_shuffle=pixel_shuffle, augment=False if no_augment else None,
                                 weight_decay=0.0 if no_weight_decay else 5e-4, image_size=image_size,
                                 model_kwargs=model_args)  # fmt: skip
        except ConfigError as e:  # a value given on the command line: a usage error
            raise click.BadParameter(str(e), param_hint=f"--{(e.name or '').replace('_', '-')}") from None
        metrics = train(config, out, device=device, on_epoch=print_epoch(epochs))
    import os

    if os.environ.get("RANK", "0") == "0":
        cols = ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"]
        cols += [c for c in ("test_loss", "test_acc") if c in metrics and metrics[c].notna().any()]
        echo_table(metrics[cols].tail(5))
        click.echo(f"\nrun written to {out} ({len(metrics)} checkpoints)")
