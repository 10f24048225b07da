"""``relugeom train``: the paper's training recipe with a checkpoint per epoch (seed 001, sec. 3.1, A.1)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import RelugeomError
from ..experiments.data import DATASETS, NORMALIZATIONS
from ..experiments.models import ARCHITECTURES, INITS
from ._common import echo_table


def check_fresh(out: Path) -> None:
    """Refuse to write a run into a folder that already holds one."""
    if (out / "config.json").exists() or (out / "checkpoints").exists():
        raise RelugeomError(f"{out}: already holds a run; choose another --out (finished epochs are never overwritten)")


@click.command("train")
@click.option("--arch", required=True, type=click.Choice(sorted(ARCHITECTURES)), help="Architecture.")
@click.option("--dataset", required=True, type=click.Choice(DATASETS), help="Data set.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with the data set's files (not needed for digits).")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=0), required=True, help="Epochs to train.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the initialisation and data order.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=float, default=0.01, show_default=True, help="Base learning rate.")
@click.option("--schedule", default="step", show_default=True,
              help="step (x0.1 every 25 epochs), exp (x10^(-1/25) per epoch), step:EVERY:FACTOR, exp:FACTOR, none.")
@click.option("--init", "init", type=click.Choice(INITS), default="kaiming_all", show_default=True,
              help="Initialisation (kaiming_all is the paper's sec. 3.1).")  # fmt: skip
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="standard", show_default=True,
              help="Pixels: per-channel standardisation, [-1, 1] (pm1) or [0, 1] (unit).")  # fmt: skip
@click.option("--n-train", type=click.IntRange(min=1), default=None, help="Use only the first N training samples.")
@click.option("--device", default="cpu", show_default=True, help="Torch device (cpu, cuda, cuda:1, ...).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
def command(arch, dataset, data_dir, epochs, seed, batch_size, lr, schedule, init, normalize, n_train, device,
            out) -> None:  # noqa: ANN001  # fmt: skip
    """Train a network with the paper's recipe, keeping a checkpoint per epoch (epoch 0 = init).

    SGD, momentum 0.9, weight decay 5e-4, cross-entropy; writes OUT/config.json, OUT/metrics.csv and
    OUT/checkpoints/epoch_NNNN.pt. Analyse the run with `relugeom stats OUT`.
    """
    from ..experiments.train import TrainConfig, train

    check_fresh(out)
    config = TrainConfig(arch=arch, dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
                         epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, schedule=schedule, init=init,
                         normalize=normalize, n_train=n_train)  # fmt: skip
    metrics = train(config, out, device=device)
    echo_table(metrics[["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc"]].tail(5))
    click.echo(f"\nrun written to {out} ({len(metrics)} checkpoints)")
