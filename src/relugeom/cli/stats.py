"""``relugeom stats``: projection statistics and n_l of models, checkpoints and runs (Gamba et al. 2020)."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd

from ..errors import RelugeomError
from ..sources import iter_sources
from ..stats.projection import layer_summary, projection_stats
from ._common import (
    arch_option,
    describe_sources,
    echo_table,
    figure_options,
    format_option,
    out_option,
    schedule_options,
    writable_folder,
    write_tables,
)


def _random_init(sources: tuple[str, ...], arch: str | None):  # noqa: ANN202
    """A random (torchvision-style Kaiming) init of the architecture of the first source: the source's own
    network re-initialised when it loads as one (a MatConvNet file), else ``arch`` built afresh."""
    from ..experiments.models import fresh_init

    item = next(iter_sources(list(sources), arch=arch))
    obj = item.load()
    if item.meta.get("source") == "matconvnet":
        return fresh_init(None, obj, init="kaiming", seed=0)
    arch = arch or item.meta.get("arch")
    if arch is None:
        raise RelugeomError("--init random needs --arch (the architecture to initialise; auto to infer it)")
    return fresh_init(arch, obj, init="kaiming", seed=0)


def _run_metrics(sources: tuple[str, ...]) -> tuple[pd.DataFrame | None, list[int]]:
    """The metrics of the run folders among ``sources`` (labelled as in the statistics) and the
    learning-rate drops of the first of them."""
    from ..checkpoints import Run
    from ..errors import CheckpointError
    from ..sources import dedupe_sources, run_labels

    unique = [Path(s) for s in dedupe_sources(sources, quiet=True)]
    labels = run_labels(unique)
    frames, drops = [], []
    for path, label in zip(unique, labels):
        run = Run(path)
        if not run.is_run():
            continue
        try:
            m = run.metrics()
            drops = drops or run.lr_drops
        except CheckpointError:
            continue
        if len(m):
            frames.append(m.assign(run=label)[["run", *m.columns]])
    return (pd.concat(frames, ignore_index=True) if frames else None), drops


def summary_view(summary: pd.DataFrame, max_epochs: int = 8) -> pd.DataFrame:
    """What to print: the per-layer table, or for a series n_l by layer at up to ``max_epochs`` epochs."""
    if "epoch" not in summary or summary["epoch"].nunique() <= 1:
        cols = [c for c in ("run", "epoch") if c in summary] + ["layer_index", "layer", "n_filters", "n_zero",
                                                               "n_neg", "mean_cos"]  # fmt: skip
        return summary[cols]
    epochs = sorted(summary["epoch"].dropna().unique())
    if len(epochs) > max_epochs:
        step = (len(epochs) - 1) / (max_epochs - 1)
        epochs = sorted({epochs[round(i * step)] for i in range(max_epochs)})
    sel = summary[summary["epoch"].isin(epochs)]
    index = (["run"] if "run" in sel and sel["run"].nunique() > 1 else []) + ["layer_index", "layer"]
    wide = sel.pivot_table(index=index, columns="epoch", values="n_neg", aggfunc="first")
    wide.columns = [f"n_l@{int(e)}" for e in wide.columns]
    return wide.reset_index()


@click.command("stats")
@click.argument("sources", nargs=-1, required=True)
@click.option("--init", "init", default=None,
              help="Initialisation to compare against: a checkpoint, or 'random' for a fresh Kaiming init "
                   "of --arch. A run folder's epoch 0 is used by default.")  # fmt: skip
@arch_option("Architecture of bare state dicts (gives stages and blocks)")
@click.option("--linear", is_flag=True, help="Also analyse the linear layers.")
@click.option("--pointwise", is_flag=True, help="Also analyse 1x1 convolutions.")
@out_option
@format_option
@figure_options
@schedule_options
def command(sources, init, arch, linear, pointwise, out, fmt, figures, schedule) -> None:  # noqa: ANN001
    """Projection statistic (cos) of every filter and n_l of every layer (Gamba et al. 2020, eqs. 1-2).

    SOURCES are checkpoint files, run folders (every epoch), MatConvNet .mat models (compared with one random
    initialization, as in Gamba et al. 2020, figs. 13-14) or several of those. Writes
    filters.FMT (one row per filter), layers.FMT (one row per layer and epoch), histograms.png
    (trained vs. initialization) and, for a series, nl_epochs.png (n_l over epochs, with the
    training curves when the run folder has metrics.csv) into --out (default ./relugeom-stats).
    """
    from ..report.projection import cos_histograms, nl_over_epochs

    out = writable_folder(out or Path("relugeom-stats"))
    src = list(sources) if len(sources) > 1 else sources[0]
    with schedule.open(out, "stats") as sched:
        df = projection_stats(src, linear=linear, pointwise=pointwise, arch=arch, **sched)
    if df.empty:
        what = "conv or linear layers" if linear else "conv layers with a kernel larger than 1"
        raise RelugeomError(f"{', '.join(sources)}: no {what} to analyse"
                            + ("" if linear else " (an MLP?); pass --linear to analyse its linear layers"
                               + ("" if pointwise else ", --pointwise for 1x1 convolutions")))  # fmt: skip
    summary = layer_summary(df)
    init_df = None
    if init is None and len(sources) == 1 and Path(sources[0]).suffix.lower() == ".mat":
        init = "random"  # a pretrained model without its initialization: one random init for reference (figs. 9-14)
    if init == "random":
        init_df = projection_stats(_random_init(sources, arch), linear=linear, pointwise=pointwise)
    elif init is not None:
        init_df = projection_stats(init, linear=linear, pointwise=pointwise, arch=arch)
    elif "epoch" in df and df["epoch"].nunique() > 1:
        first = df[df["run"] == df["run"].iloc[0]] if "run" in df else df
        init_df = first[first["epoch"] == first["epoch"].min()]
    trained = df
    if "run" in df:
        trained = trained[trained["run"] == trained["run"].iloc[0]]
    if "epoch" in trained:
        trained = trained[trained["epoch"] == trained["epoch"].max()]
    paths = write_tables(out, {"filters": df, "layers": summary}, fmt)
    hist_label = "trained" if "epoch" not in trained else f"epoch {int(trained['epoch'].iloc[0])}"
    name = describe_sources(sources)
    versus = "random initialization" if init == "random" else "initialization"
    fig = cos_histograms(trained, init_df, labels=(hist_label, versus), title=f"{name}: {hist_label}"
                         + (f" vs. {versus}" if init_df is not None else ""))  # fmt: skip
    paths.append(figures.save(fig, out, "histograms"))
    if "epoch" in summary and summary["epoch"].nunique() > 1:
        metrics, drops = _run_metrics(sources)
        fig = nl_over_epochs(summary, metrics, lr_drops=drops, title=f"{name}: n_l per layer over training")
        paths.append(figures.save(fig, out, "nl_epochs"))
    echo_table(summary_view(summary))
    click.echo("\nwrote " + ", ".join(str(p) for p in paths))
