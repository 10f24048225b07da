"""``relugeom reinit``: critical layers by weight re-initialization (Gamba et al. 2020, sec. 3.3, figs. 2, 16,
18, 19)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import RelugeomError
from ._common import (
    SEED_MAX,
    device_option,
    echo_table,
    figure_options,
    format_option,
    out_option,
    schedule_options,
    writable_folder,
    write_tables,
)


def parse_epochs(text: str | None) -> list[int] | None:
    """``"0,1,5"`` or ``"0-10:2"`` (a range with a step) or ``all`` -> epochs (None = all)."""
    if text is None or text.strip().lower() == "all":
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                span, _, step = part.partition(":")
                a, b = (int(v) for v in span.split("-"))
                out += list(range(a, b + 1, int(step or 1)))
            elif part:
                out.append(int(part))
    except ValueError:
        raise click.BadParameter(f"{text!r}: use a list like 0,1,5 or a range like 0-30:5") from None
    return out


@click.command("reinit")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--epochs", "epochs", default=None, help="Reference epochs: 0,1,5 or 0-30:5 (default: all).")
@click.option("--random", "random_init", is_flag=True, help="Also reset to a fresh random initialisation.")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None,
              help="Seed of the fresh random init (default: run seed + 1000).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--naive", is_flag=True, help="Evaluate the whole network per reset (no reuse of activations).")
@click.option("--arch", default=None,
              help="The model: a relugeom architecture, or your own class or factory as module:Class (for a run "
                   "recorded from your training loop). Default: the run's.")  # fmt: skip
@device_option
@out_option
@format_option
@figure_options
@schedule_options
def command(runs, epochs, random_init, split, seed, batch_size, naive, arch, device, out, fmt, figures,  # noqa: ANN001
            schedule) -> None:  # fmt: skip
    """Reset each conv layer of the trained model to its weights at earlier epochs (heatmap of the
    relative accuracy drop; Zhang et al.) and compare with n_l at the end of training.

    RUNS are run folders written by `relugeom train` (one heatmap each). Writes reinit.FMT,
    reinit.png, critical_vs_bias.FMT and critical_vs_bias.png into --out (default ./relugeom-reinit).
    Only conv weights and biases are reset; batch-norm layers keep their trained values.
    """
    import pandas as pd

    from ..experiments.reinit import critical_vs_bias, reinit_run
    from ..report.reinit import critical_vs_bias_plot, reinit_heatmap
    from ..sources import dedupe_sources, run_labels
    from ..stats.projection import layer_summary, projection_stats

    out = writable_folder(out or Path("relugeom-reinit"))
    chosen = parse_epochs(epochs)
    runs = [Path(r) for r in dedupe_sources(runs)]
    labels = run_labels(runs)  # the labels projection_stats gives the same runs
    with schedule.open(out, "reinit") as sched:
        drops = pd.concat([reinit_run(r, epochs=chosen, random=random_init, split=split, seed=seed,
                                      batch_size=batch_size, reuse=not naive, device=device, arch=arch, label=label,
                                      **sched) for r, label in zip(runs, labels)], ignore_index=True)  # fmt: skip
    tables = {"reinit": drops}
    paths = [figures.save(reinit_heatmap(drops), out, "reinit")]
    summary = layer_summary(projection_stats([str(r) for r in runs] if len(runs) > 1 else str(runs[0])))
    try:
        cb = critical_vs_bias(drops, summary)
    except RelugeomError as e:  # too few layers for a rank correlation: still write the heatmap
        click.echo(f"no rank correlation: {e}", err=True)
        cb = None
    if cb is not None:
        tables["critical_vs_bias"] = cb.table
        paths.append(figures.save(critical_vs_bias_plot(cb.table, cb.rho, cb.rho_bias), out, "critical_vs_bias"))
    paths = write_tables(out, tables, fmt) + paths
    wide = drops.pivot_table(index="epoch", columns="layer_index", values="drop", aggfunc="mean")
    wide.columns = [f"L{int(c) + 1}" for c in wide.columns]
    echo_table(wide.reset_index(), "{:.2f}")
    if cb is not None:
        click.echo(f"\nSpearman rho(drop, n_l) = {cb.rho:.3f} (p = {cb.pvalue:.3g}); "
                   f"rho(drop, |2 n_l - 1|) = {cb.rho_bias:.3f} (p = {cb.pvalue_bias:.3g})")  # fmt: skip
    click.echo("\nwrote " + ", ".join(str(p) for p in paths))
