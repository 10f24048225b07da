"""Plots of the complexity measures over training, beside the generalization gap (Daróczy 2020)."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.figure import Figure

LOSSES = ("train_loss", "test_loss", "train_error", "test_error", "generalization_gap", "error_gap", "fisher_rao_depth")


def measures_over_epochs(df: pd.DataFrame, *, gap: str = "generalization_gap", max_cols: int = 4) -> Figure:
    """One panel per measure: its value over epochs (with +-1 standard error bands), the gap on a twin axis.

    ``df`` is the long table of :func:`relugeom.measures.complexity_table` (columns ``epoch``,
    ``measure``, ``value``, ``std_error``, optionally ``run``). Measures that are NaN everywhere
    are left out.
    """
    if "epoch" not in df:
        df = df.assign(epoch=0)
    names = [m for m in df["measure"].unique() if m not in LOSSES and df.loc[df["measure"] == m, "value"].notna().any()]
    panels = ["losses", *names]
    cols = min(max_cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4 * cols, 3 * rows))
    runs = df["run"].unique() if "run" in df else [None]
    for i, name in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for run in runs:
            sel = df if run is None else df[df["run"] == run]
            suffix = "" if run is None or len(runs) == 1 else f" ({run})"
            if name == "losses":
                for m in ("train_loss", "test_loss"):
                    s = sel[sel["measure"] == m].sort_values("epoch")
                    if len(s):
                        ax.plot(s["epoch"], s["value"], marker=".", label=m + suffix)
                ax.set_title("loss")
                continue
            s = sel[sel["measure"] == name].sort_values("epoch")
            ax.plot(s["epoch"], s["value"], marker=".", color="C0", label=name + suffix)
            se = s["std_error"].fillna(0)
            if (se > 0).any():
                ax.fill_between(s["epoch"], s["value"] - se, s["value"] + se, color="C0", alpha=0.25)
            g = sel[sel["measure"] == gap].sort_values("epoch")
            if len(g):
                twin = ax.twinx()
                twin.plot(g["epoch"], g["value"], color="C3", ls="--", lw=1, label=gap)
                twin.tick_params(axis="y", colors="C3", labelsize=7)
            ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.suptitle(f"complexity measures over training (dashed red: {gap})", fontsize=10)
    fig.tight_layout()
    return fig
