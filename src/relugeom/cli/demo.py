"""``relugeom demo``: the main job, end to end on the embedded digits data."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import RelugeomError
from ._common import echo_table, figure_options, seed_option, writable_folder

if TYPE_CHECKING:
    from ..report import FigureOutput


def _clear_old_demo(run, overwrite: bool) -> None:  # noqa: ANN001
    """Refuse a foreign OUT/run; remove a relugeom demo run only when asked to (--overwrite)."""
    from ..errors import CheckpointError

    if not os.path.lexists(run.path):
        return
    try:
        foreign = not run.path.is_dir() or run.path.is_symlink() or bool(run.foreign_files())
        foreign = foreign or not run.read_config()["config"].get("arch")
    except (CheckpointError, OSError):
        foreign = True
    if foreign:
        raise RelugeomError(f"{run.path}: exists and is not a relugeom run; nothing was touched; choose another --out")
    if not overwrite:
        raise RelugeomError(f"{run.path}: already holds a relugeom demo run; pass --overwrite to replace it, "
                            "or choose another --out")  # fmt: skip
    run.remove()


@click.command("demo")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("relugeom-demo"),
              show_default=True, help="Folder for the run, tables and plots.")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--arch", default="vgg9", show_default=True, help="A small VGG-style ConvNet by default.")
@seed_option()
@click.option("--overwrite", is_flag=True,
              help="Replace the relugeom demo already in OUT (a folder relugeom did not write is never touched).")
@figure_options
def command(out: Path, epochs: int, arch: str, seed: int, overwrite: bool, figures: FigureOutput) -> None:
    """Train a small VGG-style ConvNet on scikit-learn's digits with the paper's recipe, then
    compute the projection statistics of every epoch and draw the paper's plots.

    Writes OUT/run (the run folder), OUT/filters.csv, OUT/layers.csv, OUT/histograms.png and
    OUT/nl_epochs.png, and prints n_l per layer over training. An OUT that already holds a demo is
    refused unless --overwrite is given; a foreign OUT/run is never touched.
    """
    from ..checkpoints import Run
    from ..experiments.train import TrainConfig, train
    from ..report.projection import cos_histograms, nl_over_epochs
    from ..stats.projection import layer_summary, projection_stats
    from ._common import write_tables
    from .stats import summary_view

    t0 = time.perf_counter()
    run = out / "run"
    writable_folder(out)
    _clear_old_demo(Run(run), overwrite)
    config = TrainConfig(arch=arch, dataset="digits", epochs=epochs, seed=seed, batch_size=64)
    click.echo(f"training {arch} on digits for {epochs} epochs (SGD 0.01, momentum 0.9, wd 5e-4, step schedule)")
    metrics = train(config, run)
    df = projection_stats(run)
    summary = layer_summary(df)
    first, last = df[df.epoch == df.epoch.min()], df[df.epoch == df.epoch.max()]
    paths = write_tables(out, {"filters": df, "layers": summary}, "csv")
    paths.append(figures.save(cos_histograms(last, first, labels=(f"epoch {epochs}", "initialization"),
                                             title=f"{arch} on digits"), out, "histograms"))  # fmt: skip
    paths.append(figures.save(nl_over_epochs(summary, metrics, lr_drops=Run(run).lr_drops,
                                             title=f"{arch} on digits"), out, "nl_epochs"))  # fmt: skip
    end = metrics.iloc[-1]
    click.echo(f"\nfinal: train acc {end.train_acc:.3f}, val acc {end.val_acc:.3f}, test acc {end.test_acc:.3f}")
    click.echo("\nn_l (fraction of filters with cos <= 0) per conv layer over training:")
    echo_table(summary_view(summary))
    click.echo(f"\nrun folder: {run}")
    click.echo("tables and pictures: " + ", ".join(str(p) for p in paths))
    click.echo(f"done in {time.perf_counter() - t0:.0f} s")
