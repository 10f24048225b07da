"""``relugeom report``: a whole run (or several seeds) at a glance, as one offline HTML page or Markdown."""

from __future__ import annotations

import datetime
import os
import sys
from pathlib import Path

import click

from ..errors import RelugeomError


def _labels(runs: list[Path]) -> list[str]:
    """Short unique names: the folder names, or paths relative to the runs' common folder when names repeat."""
    names = [r.resolve().name for r in runs]
    if len(set(names)) == len(names):
        return names
    common = Path(os.path.commonpath([str(r.resolve()) for r in runs]))
    return [str(r.resolve().relative_to(common)) or r.name for r in runs]


def _collect(run: Path, label: str, extra: tuple[Path, ...]):  # noqa: ANN202

    from ..checkpoints import Run
    from ..report.page import RunTables, find_tables, read_table
    from ..stats.projection import layer_summary, projection_stats

    folder = Run(run)
    config = folder.read_config() if folder.is_run() else {}  # CheckpointError names a config.json it cannot read
    metrics = folder.metrics() if folder.metrics_path.is_file() else None  # up to the commit point
    sources = find_tables(run, extra)
    tables = {}
    for stem, p in sources.items():
        try:
            tables[stem] = read_table(p)
        except (OSError, ValueError, ImportError) as e:
            raise RelugeomError(f"{p}: cannot be read as a table ({str(e)[:120]})") from None
    filters = tables.pop("filters", None)
    layers = tables.pop("layers", None)
    if filters is None or layers is None:  # the n_l table is cheap: compute it from the checkpoints
        filters = projection_stats(str(run))
        layers = layer_summary(filters)
        sources.pop("filters", None)
        sources.pop("layers", None)
    first = last = filters
    if "epoch" in filters:
        first = filters[filters["epoch"] == filters["epoch"].min()]
        last = filters[filters["epoch"] == filters["epoch"].max()]
    return RunTables(label, run, config, metrics, layers, first if first is not last else None, last, tables,
                     {k: v for k, v in sources.items() if k in tables})  # fmt: skip


@click.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The page to write (default ./relugeom-report.html, or .md with --format md).")  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default="html", show_default=True,
              help="html: one self-contained page; md: Markdown with its figures and tables in NAME_files/.")
@click.option("--analysis", "extra", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Another folder of tables written by relugeom's verbs for these runs (repeatable).")
@click.option("--title", default=None, help="Title of the page (default: the run's name).")
def command(runs, out, fmt, extra, title) -> None:  # noqa: ANN001
    """One page for a whole run: configuration, training curves, n_l over epochs, cos histograms at
    initialization and at the end (Gamba et al. 2020, eqs. 1-2), and every analysis relugeom has
    written for the run, with provenance and each table downloadable.

    RUNS are run folders (from `relugeom train` or a recorder callback); several runs (seeds) are
    shown as mean and a one-standard-deviation band. Analyses are looked for in RUN, in RUN/relugeom-*
    folders (e.g. `relugeom reinit RUN --out RUN/relugeom-reinit`) and in each --analysis folder. The
    HTML page works offline: figures and tables are embedded, nothing is fetched.
    """
    from ..checkpoints import atomic_write, atomic_write_text
    from ..report.page import build_report, provenance_rows, to_html, to_markdown

    runs = list(dict.fromkeys(runs))
    labels = _labels(runs)
    collected = [_collect(r, lab, tuple(extra)) for r, lab in zip(runs, labels)]
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    prov = provenance_rows(collected, ["relugeom", *sys.argv[1:]], now)
    report = build_report(collected, title=title, provenance=prov)
    out = out or Path(f"relugeom-report.{fmt}")
    if fmt == "html":
        atomic_write_text(out, to_html(report))
        click.echo(f"wrote {out} (self-contained; open it in any browser, offline)")
    else:
        assets = f"{out.stem}_files"
        text, files = to_markdown(report, assets)
        for name, data in files.items():
            atomic_write(out.parent / name, lambda f, d=data: f.write(d))
        atomic_write_text(out, text)
        click.echo(f"wrote {out} and {len(files)} files in {out.parent / assets}")
