"""Plots of the complexity measures over training, beside the generalization gap (Daróczy 2020)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ._layout import panel_grid

LOSSES = ("train_loss", "test_loss", "train_error", "test_error", "generalization_gap", "error_gap", "fisher_rao_depth")
GAP_LABELS = {"generalization_gap": "generalization gap (test - train loss)",
              "error_gap": "error gap (test - train error)"}  # fmt: skip
GAP_SHORT = {"generalization_gap": "gen. gap", "error_gap": "error gap"}


def spans_decades(values: np.ndarray, decades: float = 2.0) -> bool:
    """Whether positive ``values`` span more than ``decades`` orders of magnitude (then a log axis reads best).

    >>> [spans_decades(np.array(v)) for v in ([1e-3, 1.0, 50.0], [1.0, 20.0], [-1.0, 1e4])]
    [True, False, False]
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v) and (v > 0).all() and np.log10(v.max() / v.min()) > decades)


def measures_over_epochs(df: pd.DataFrame, *, gap: str = "generalization_gap", max_cols: int = 4,
                         title: str | None = None) -> Figure:  # fmt: skip
    """One panel per measure: its value over epochs (with +-1 standard error bands), the gap on a twin axis.

    ``df`` is the long table of :func:`relugeom.measures.complexity_table` (columns ``epoch``,
    ``measure``, ``value``, ``std_error``, optionally ``run``). Measures that are NaN everywhere are
    left out and named in a note; a measure whose values span more than two decades gets a log axis.
    The figure has one legend (in a spare grid cell, else beside the panels).
    """
    if "epoch" not in df:
        df = df.assign(epoch=0)
    measured = [m for m in df["measure"].unique() if m not in LOSSES]
    names = [m for m in measured if df.loc[df["measure"] == m, "value"].notna().any()]
    nan_only = [m for m in measured if m not in names]
    runs = list(df["run"].unique()) if "run" in df else [None]
    several = len(runs) > 1
    has_gap = df.loc[df["measure"] == gap, "value"].notna().any()
    panels = ["losses", *names]
    fig, axes, spare = panel_grid(len(panels), (3.4, 2.5), max_cols=max_cols)
    gap_label = GAP_LABELS.get(gap, gap.replace("_", " "))
    epochs = df["epoch"].nunique()
    for ax, name in zip(axes, panels):
        twin = None
        values = df.loc[df["measure"] == (name if name != "losses" else "train_loss"), "value"].to_numpy(dtype=float)
        log = name != "losses" and spans_decades(values)
        power = 0 if log or not np.isfinite(values).any() else _power(np.nanmax(np.abs(values)))
        for k, run in enumerate(runs):
            sel = df if run is None else df[df["run"] == run]
            color = f"C{k % 10}" if several else "C0"
            if name == "losses":
                for m, ls in (("train_loss", "-"), ("test_loss", "--")):
                    s = sel[sel["measure"] == m].sort_values("epoch")
                    if len(s):
                        ax.plot(s["epoch"], s["value"], ls, marker=".", color=color)
                continue
            s = sel[sel["measure"] == name].sort_values("epoch")
            v, se = s["value"] / 10.0**power, s["std_error"].fillna(0) / 10.0**power
            ax.plot(s["epoch"], v, marker=".", color=color)
            if (se > 0).any():
                ax.fill_between(s["epoch"], v - se, v + se, color=color, alpha=0.25, linewidth=0)
            g = sel[sel["measure"] == gap].sort_values("epoch")
            if len(g) and g["value"].notna().any():
                twin = twin or ax.twinx()
                twin.plot(g["epoch"], g["value"], color="C3" if not several else color, ls=":", lw=1.2)
        if twin is not None:
            twin.tick_params(axis="y", colors="C3", labelsize=7)
            twin.set_ylabel(GAP_SHORT.get(gap, gap), color="C3", fontsize=7)
        label = name
        if log:
            ax.set_yscale("log")
            label += " (log scale)"
        elif power:
            label += f" (x 1e{power})"
        defined = df.loc[(df["measure"] == name) & df["value"].notna(), "epoch"].nunique()
        if name != "losses" and defined < epochs:
            label += f"\ndefined at {defined} of {epochs} epochs"
        ax.set_title("loss (train solid, test dashed)" if name == "losses" else label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if _lowest_in_column(ax, len(panels)):
            ax.set_xlabel("epoch", fontsize=8)
    handles: list = []
    if several:
        handles += [Line2D([], [], color=f"C{k % 10}", marker=".", label=str(r)) for k, r in enumerate(runs)]
    else:
        handles.append(Line2D([], [], color="C0", marker=".", label="measure"))
    if (df["std_error"].fillna(0) > 0).any():
        handles.append(Patch(color="C0" if not several else "0.6", alpha=0.25, label="+-1 standard error"))
    if has_gap:
        handles.append(Line2D([], [], color="C3", ls=":", lw=1.2,
                              label=gap_label + ", right axis"))  # fmt: skip
    labels = [h.get_label() for h in handles]
    if spare is not None:
        spare.legend(handles, labels, loc="upper center", frameon=False, fontsize=8)
    else:
        fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=8)
    if nan_only:
        note = "not computable here (NaN at every epoch): " + ", ".join(nan_only)
        if spare is not None:
            spare.text(0.5, 0.05, _wrap(note, 40), ha="center", va="bottom", fontsize=7, transform=spare.transAxes)
        else:
            fig.supxlabel(note, fontsize=7)
    fig.suptitle(title or "complexity measures over training (Daróczy 2020)", fontsize=10)
    return fig


def _lowest_in_column(ax, n: int) -> bool:  # noqa: ANN001
    """Whether no panel of a grid of ``n`` lies below ``ax``."""
    spec = ax.get_subplotspec()
    cols = spec.get_gridspec().ncols
    return spec.num1 + cols >= n


def _power(v: float) -> int:
    """The power of ten to divide values of magnitude ``v`` by, so that no offset text crowds the title."""
    k = int(np.floor(np.log10(v))) if v > 0 else 0
    return k if abs(k) >= 4 else 0


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
