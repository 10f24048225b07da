"""``relugeom reproduce``: one command per experiment of Gamba et al. 2020 (train every seed, then the figures)."""

from __future__ import annotations

from pathlib import Path

import click

from ..experiments.reproduce import EXPERIMENTS
from ._common import device_option, figure_options, schedule_options


@click.command("reproduce")
@click.argument("experiment", type=click.Choice(list(EXPERIMENTS)), required=False)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder with the data sets (CIFAR pickles, MNIST idx files, imagenet/train and imagenet/val).")
@click.option("--seeds", type=click.IntRange(min=1), default=None, help="Independent runs (default 3; tiny: 2).")
@click.option("--scale", type=click.Choice(["full", "tiny"]), default="full", show_default=True,
              help="full: the paper's recipe; tiny: the same pipeline on scikit-learn digits in about a minute.")
@device_option
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("relugeom-reproduce"),
              show_default=True, help="Folder for the runs and figures (reruns resume unfinished runs).")
@click.option("--list", "list_only", is_flag=True, help="List the experiments and their figures.")
@click.option("--dry-run", is_flag=True, help="Print the runs that would be trained, and stop.")
@figure_options
@schedule_options
def command(experiment, data_dir, seeds, scale, device, out, list_only, dry_run, figures, schedule) -> None:  # noqa: ANN001
    """Rerun an experiment of Gamba et al. 2020 ("Hyperplane arrangements of trained ConvNets are biased").

    Trains each variant for every seed into OUT/EXPERIMENT/VARIANT/seedS (a finished run is kept, an
    interrupted one resumed), then writes n_l per layer and epoch (mean and std over seeds),
    nl_epochs.png, histograms.png, and for the re-initialization experiments reinit.png and
    critical_vs_bias.png. See docs/experiments.md for the hyper-parameters.
    """
    from ..experiments.reproduce import experiment_plan, reproduce

    if list_only or experiment is None:
        for e in EXPERIMENTS.values():
            click.echo(f"{e.name:<18} figs. {e.figures:<10} {e.description}")
        if experiment is None and not list_only:
            raise click.UsageError("name an EXPERIMENT (see the list above)")
        return
    seeds = seeds or (2 if scale == "tiny" else 3)
    if dry_run:
        for variant, seed in experiment_plan(experiment, data_dir=None if data_dir is None else str(data_dir),
                                             seeds=seeds, scale=scale):  # fmt: skip
            c = variant.config
            click.echo(f"{variant.name} seed {seed}: {c.arch} on {c.dataset}, {c.epochs} epochs, batch {c.batch_size}, "
                       f"lr {c.lr}, schedule {c.schedule}, wd {c.weight_decay}, init {c.init}")
        return
    if schedule.shard is not None:
        raise click.UsageError("reproduce trains whole runs: use --jobs N or --executor, not --shard")
    with schedule.open(out / experiment, "reproduce") as sched:
        written = reproduce(experiment, out, data_dir=None if data_dir is None else str(data_dir), seeds=seeds,
                            scale=scale, device=device, log=click.echo, figures=figures,
                            executor=sched["executor"])  # fmt: skip
    click.echo(f"\nwrote {len(written)} files under {out / experiment}")
