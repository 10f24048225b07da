"""``relugeom cones``: cone parameters and nesting states of consecutive conv layers (Gamba et al. 2019;
Carlsson 2019)."""

from __future__ import annotations

from pathlib import Path

import click

from ..stats.cones import cone_tables, state_distribution
from ._common import (
    arch_option,
    describe_sources,
    device_option,
    echo_table,
    figure_options,
    find_run,
    format_option,
    note,
    out_option,
    parse_shape,
    schedule_options,
    writable_folder,
    write_tables,
)


def _check_shape(src, shape: tuple[int, ...], arch: str | None) -> None:  # noqa: ANN001
    """--input-shape against the first model, before any work: a shape that does not fit is a usage error."""
    from torch import nn

    from ..errors import ShapeError
    from ..sources import iter_sources
    from ..stats.cones import cone_layers

    item = next(iter_sources(src, arch=arch), None)
    obj = None if item is None else item.load()
    if isinstance(obj, nn.Module):
        try:
            cone_layers(obj, shape, f"{item.path}: " if item.path else "")
        except ShapeError as e:
            raise click.BadParameter(str(e), param_hint="--input-shape") from None


@click.command("cones")
@click.argument("sources", nargs=-1, required=True)
@click.option("--input-shape", "input_shape", default=None,
              help="Shape of one network input, e.g. 3,32,32. Default: the run's (its config.json).")  # fmt: skip
@arch_option("Architecture of bare state dicts (needed for their strides and pooling)")
@click.option("--pairs", is_flag=True, help="Also write pairs.FMT: one row per compared pair of cones, each with its "
              "own state, and pairs_net.FMT, their distribution (per-channel cones: at most 10^7 rows per layer "
              "pair).")
@click.option("--no-fold-bn", is_flag=True, help="Do not fold batch norms into the preceding convolutions.")
@click.option("--cones", "cones", type=click.Choice(["channel", "filter"]), default="channel", show_default=True,
              help="One cone per (filter, input channel) on the channel's H x W positions (Gamba et al. 2019: each "
                   "channel of each filter defines a cone), or one per whole filter.")
@click.option("--ties", type=click.Choice(["geometry", "authors"]), default="geometry", show_default=True,
              help="A tie (apexes equal, dist = 0): decided by the openings (geometry), or counted with dist > 0 "
                   "as in the authors' code.")
@device_option
@out_option
@format_option
@figure_options
@schedule_options
def command(sources, input_shape, arch, pairs, no_fold_bn, cones, ties, device, out, fmt,  # noqa: ANN001
            figures, schedule) -> None:  # noqa: ANN001
    """Each conv filter's channels as cones around the identity line, and how consecutive layers' cones nest.

    SOURCES are modules' checkpoints, run folders (every epoch) or several of those (e.g. one run per
    seed). Writes into --out (default ./relugeom-cones): params.FMT (apex, orientation, opening per
    cone), states.FMT (per cone of layer l+1: dist, open_diff, rotation, state; skipped pairs with
    their reason), states_net.FMT and states_stage.FMT (the distributions of the four states per
    epoch and run), and the figures states_net.png, states_stage.png and continuous.png.
    """
    from ..report.cones import blockwise_figure, continuous_figure, state_distribution_figure

    if input_shape is None:
        from ..checkpoints import Run

        run = find_run(sources)
        spec = Run(run).data if run is not None else {}
        if not spec.get("input_shape"):
            raise click.UsageError("give --input-shape (e.g. 3,32,32): the sources are not run folders of "
                                   "`relugeom train` that would record it")  # fmt: skip
        input_shape = ",".join(str(int(v)) for v in spec["input_shape"])
        note(f"input shape {input_shape} ({spec.get('name', 'the data set')}, from {run / 'config.json'})")
    shape = parse_shape(input_shape, "--input-shape")
    out = writable_folder(out or Path("relugeom-cones"))
    src = list(sources) if len(sources) > 1 else sources[0]
    _check_shape(src, shape, arch)
    fold = not no_fold_bn
    names = ("params", "states", "pairs") if pairs else ("params", "states")
    with schedule.open(out, "cones") as sched:
        found = cone_tables(src, shape, arch=arch, fold_bn=fold, tables=names, device=device, cones=cones, ties=ties,
                            **sched)  # fmt: skip
    states = found["states"]
    net = state_distribution(states, "net")
    by_stage = state_distribution(states, "stage")
    tables = {"params": found["params"], "states": states, "states_net": net, "states_stage": by_stage}
    if pairs:
        tables["pairs"] = found["pairs"]
        tables["pairs_net"] = state_distribution(found["pairs"], "net")
    paths = write_tables(out, tables, fmt)
    last = states
    if "run" in last:
        last = last[last["run"] == last["run"].iloc[0]]
    if "epoch" in last:
        last = last[last["epoch"] == last["epoch"].max()]
    name = describe_sources(sources)
    fig = state_distribution_figure(net, title=f"{name}: net-wise distribution of cone states")
    paths.append(figures.save(fig, out, "states_net"))
    fig = blockwise_figure(by_stage, title=f"{name}: block-wise distribution of cone states")
    paths.append(figures.save(fig, out, "states_stage"))
    at = ""
    if "run" in last and states["run"].nunique() > 1:
        at += f" {last['run'].iloc[0]},"
    if "epoch" in last:
        at += f" epoch {int(last['epoch'].iloc[0])}"
    fig = continuous_figure(last, title=f"{name}:{at} continuous cone statistics" if at else name)
    paths.append(figures.save(fig, out, "continuous"))
    keys = [c for c in ("run", "epoch") if c in net]
    if keys:
        echo_table(net.pivot_table(index=keys, columns="state", values="fraction", aggfunc="mean").reset_index())
    else:
        echo_table(net[["state", "count", "fraction"]])
    click.echo("\nwrote " + ", ".join(str(p) for p in paths))
