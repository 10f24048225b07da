"""``relugeom measures``: complexity measures of Daróczy 2020 over a run (every epoch) or one checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import DataError, RelugeomError
from ..experiments.data import DATASETS, NORMALIZATIONS, Batches, load_dataset, subset
from ..measures.table import DEFAULT_MEASURES, MEASURES, complexity_table, estimate_costs
from ._common import (
    arch_option,
    describe_sources,
    device_option,
    echo_table,
    figure_options,
    format_option,
    note,
    out_option,
    schedule_options,
    seed_option,
    writable_folder,
    write_tables,
)


def _run_data(sources: tuple[str, ...]):  # noqa: ANN202
    """The data set of the first run folder's config.json (same split and normalisation), or None."""
    from ..checkpoints import Run
    from ..experiments.train import prepare_data, read_run_config

    for s in sources:
        if Run(s).is_run():
            try:
                return prepare_data(read_run_config(s))
            except RelugeomError as e:
                raise DataError(f"cannot rebuild the run's data set ({e}); pass --data") from None
    return None


def _parse_measures(text: str) -> tuple[str, ...]:
    if text == "all":
        return MEASURES
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in MEASURES]
    if bad or not names:
        raise click.BadParameter(f"unknown measure(s) {', '.join(bad) or text!r}; choose from {', '.join(MEASURES)}"
                                 " or 'all'")  # fmt: skip
    return names


@click.command("measures")
@click.argument("sources", nargs=-1, required=True)
@click.option("--data", "dataset", type=click.Choice(DATASETS), default=None,
              help="Data set (default: the run folder's own, from its config.json).")  # fmt: skip
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Folder of the data set files.")
@click.option("--normalize", type=click.Choice(NORMALIZATIONS), default="standard", show_default=True)
@click.option("--measures", "measures", default=",".join(DEFAULT_MEASURES), show_default=True,
              help=f"Comma-separated list from {', '.join(MEASURES)}, or 'all'. The default set costs about 9 "
                   "forward+backward passes over the measured data per checkpoint; the others are opt-in (their "
                   "estimated cost is printed before starting).")  # fmt: skip
@click.option("--n-train", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Training samples the measures are computed on.")  # fmt: skip
@click.option("--n-test", type=click.IntRange(min=1), default=1000, show_default=True, help="Test samples for the gap.")
@click.option("--max-samples", type=click.IntRange(min=1), default=256, show_default=True,
              help="Samples for the costly measures (sharpness, Hessian trace, tangent).")  # fmt: skip
@click.option("--fisher", type=click.Choice(["empirical", "model"]), default="empirical", show_default=True)
@arch_option()
@seed_option("Seeds every stochastic estimator.")
@device_option
@out_option
@format_option
@figure_options
@schedule_options
def command(sources, dataset, data_dir, normalize, measures, n_train, n_test, max_samples, fisher, arch, seed,
            device, out, fmt, figures, schedule) -> None:  # noqa: ANN001
    """Complexity measures (Daróczy 2020) of every epoch of a run, or of checkpoints, beside the generalization gap.

    Writes measures.FMT (long form: run, seed, epoch, measure, value, std_error), measures_wide.FMT
    (one row per epoch) and measures.png (each measure over training, the gap on a twin axis) into
    --out (default ./relugeom-measures).
    """
    from ..report.measures import measures_over_epochs

    names = _parse_measures(measures)
    out = writable_folder(out or Path("relugeom-measures"))
    data = load_dataset(dataset, data_dir, normalize=normalize, augment=False) if dataset else _run_data(sources)
    if data is None:
        raise RelugeomError("no data: pass --data (and --data-dir), or point at a run folder with its config.json")
    if not dataset:
        note(f"data: {data.name} (the run's data set, from its config.json); --data chooses another")
    data = subset(data, n_train)
    test = data.test if data.test is not None and len(data.test) else data.val
    test_batches = Batches(type(test)(test.x[:n_test], test.y[:n_test]), 256)
    src = list(sources) if len(sources) > 1 else sources[0]
    costs = estimate_costs(names, n_train=len(data.train), n_test=len(test_batches.split), max_samples=max_samples,
                           input_numel=int(data.train.x[0].numel()))  # fmt: skip
    click.echo(f"estimated cost per checkpoint, in forward+backward passes over the {len(data.train)} measured "
               "samples:", err=True)  # fmt: skip
    for row in costs.itertuples():
        click.echo(f"  {row.measure:<20} {row.passes:6.1f}  {row.how}", err=True)
    click.echo(f"  {'total':<20} {costs['passes'].sum():6.1f}", err=True)
    with schedule.open(out, "measures") as sched:
        df = complexity_table(src, Batches(data.train, 256), test_batches, names, arch=arch, seed=seed,
                              max_samples=max_samples, fisher=fisher, device=device, **sched)  # fmt: skip
    keys = [c for c in ("run", "seed", "epoch") if c in df]
    if keys:
        wide = df.pivot_table(index=keys, columns="measure", values="value", sort=False, dropna=False).reset_index()
    else:
        wide = df.set_index("measure")[["value"]].T.reset_index(drop=True)
    paths = write_tables(out, {"measures": df, "measures_wide": wide}, fmt)
    title = f"{describe_sources(sources)}: complexity measures over training (Daróczy 2020)"
    paths.append(figures.save(measures_over_epochs(df, title=title), out, "measures"))
    echo_table(wide, "{:.4g}")
    click.echo("\nwrote " + ", ".join(str(p) for p in paths))
