"""Figures of the cone statistics (Gamba et al. 2019, "Results"): net-wise and block-wise (per stage) distributions
of the four nesting states over epochs, averaged across runs/seeds with a +-1 std band, and the
distributions of the continuous statistics (dist, open_diff, rotation) per layer pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..stats.cones import STATES
from ._layout import legend, panel_grid, unique_handles

STATE_COLORS = dict(zip(STATES, ("tab:green", "tab:olive", "tab:blue", "tab:red")))
STATE_STYLES = dict(zip(STATES, (("o", "-"), ("s", "--"), ("^", "-."), ("v", ":"))))
STATES_NOTE = ("state of each cone of layer l+1 (a filter on one input channel, or a whole filter) against the cones "
               "of layer l it reads (Gamba et al. 2019),\nwith d = max dist and o = min open_diff over them: "
               "OUT_FULL_IN d > 0, o <= 0;  OUT_PARTIAL_IN d > 0, o > 0;\nIN_FULL_OUT d < 0, o >= 0;  "
               "IN_PARTIAL_OUT d < 0, o < 0;  d = 0 (one apex): OUT_FULL_IN if o <= 0, else IN_FULL_OUT")  # fmt: skip


def _state_label(state: str, values: np.ndarray) -> str:
    """The state's name and, where the line would hide under another, that it is 0 throughout."""
    return f"{state} (0 at every epoch)" if len(values) and np.nanmax(np.abs(values)) == 0 else state


def _fractions_panel(ax, dist: pd.DataFrame, title: str) -> None:  # noqa: ANN001
    """Fraction per state over epochs (mean over runs, +-std band), or bars for a single model.

    Every state stays visible: each has its own colour, marker and line style (lines at the same value
    stay distinguishable), and bars carry their value (a zero bar is still labelled)."""
    if "epoch" in dist and dist["epoch"].nunique() > 1:
        for k, state in enumerate(STATES):
            d = dist[dist.state == state]
            g = d.groupby("epoch")["fraction"]
            mean, std = g.mean(), g.std().fillna(0.0)
            marker, ls = STATE_STYLES[state]
            ax.plot(mean.index, mean.values, marker=marker, ms=4 + k, mfc="none", ls=ls, lw=1.4,
                    color=STATE_COLORS[state], label=_state_label(state, mean.to_numpy()), zorder=3 + k)  # fmt: skip
            ax.fill_between(mean.index, (mean - std).values, (mean + std).values, color=STATE_COLORS[state],
                            alpha=0.12, linewidth=0)  # fmt: skip
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        means = [dist.loc[dist.state == s, "fraction"].mean() for s in STATES]
        stds = [dist.loc[dist.state == s, "fraction"].std() for s in STATES]
        bars = ax.bar(range(4), means, yerr=[0 if np.isnan(s) else s for s in stds],
                      color=[STATE_COLORS[s] for s in STATES])  # fmt: skip
        ax.bar_label(bars, labels=[f"{m:.2f}" for m in means], fontsize=7, padding=2)
        ax.set_xticks(range(4), [s.replace("_", "\n") for s in STATES], fontsize=7)
    ax.set_ylim(-0.02, 1.08)
    if ax.get_subplotspec().is_first_col():
        ax.set_ylabel("fraction of cones")
    ax.set_title(title, fontsize=9)


def state_distribution_figure(net: pd.DataFrame, title: str = "net-wise distribution of cone states") -> Figure:
    """One panel: the net-wise distribution (``state_distribution(states, "net")``)."""
    fig = Figure(figsize=(7.5, 4.0), layout="constrained")
    ax = fig.subplots()
    _fractions_panel(ax, net, title)
    if "epoch" in net and net["epoch"].nunique() > 1:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.supxlabel(STATES_NOTE, fontsize=6.5)
    return fig


def blockwise_figure(by_stage: pd.DataFrame, title: str | None = None) -> Figure:
    """One panel per stage (``state_distribution(states, "stage")``): the block-wise distributions."""
    stages = sorted(by_stage["stage"].dropna().unique())
    fig, axes, spare = panel_grid(len(stages), (3.6, 2.8))
    for ax, stage in zip(axes, stages):
        _fractions_panel(ax, by_stage[by_stage.stage == stage], f"stage {int(stage)}")
    if stages and "epoch" in by_stage and by_stage["epoch"].nunique() > 1:
        legend(fig, *unique_handles(axes), spare)
    fig.suptitle(title or "block-wise distribution of cone states (pairs inside each stage)", fontsize=10)
    fig.supxlabel(STATES_NOTE, fontsize=6.5)
    return fig


def continuous_figure(states: pd.DataFrame, bins: int = 30, title: str | None = None) -> Figure:
    """Histograms of ``dist``, ``open_diff`` and ``rotation`` (rows) per layer pair (columns) of one model:
    one count per cone i of layer l+1 (a filter on one input channel, or a whole filter), against the cones p of
    layer l it reads."""
    ok = states[states["state"].notna()]
    layers = ok.drop_duplicates("layer_index").sort_values("layer_index")
    cols = max(1, len(layers))
    fig = Figure(figsize=(2.9 * cols + 0.4, 6.8), layout="constrained")
    axes = fig.subplots(3, cols, squeeze=False)
    rows = (("dist", "d = max_p (t_i - t_p) sqrt(D)"), ("open_diff", "o = min_p open_diff (rad)"),
            ("rotation", "rotation (rad)"))  # fmt: skip
    for j, (_, lay) in enumerate(layers.iterrows()):
        sub = ok[ok.layer_index == lay.layer_index]
        for i, (col, label) in enumerate(rows):
            v = sub[col].dropna().to_numpy(dtype=float)
            ax = axes[i, j]
            if len(v):
                lo, hi = np.percentile(v, [1, 99])
                heavy = hi > lo and v.max() - v.min() > 3 * (hi - lo)  # outliers would squeeze the rest
                outside = int(((v < lo) | (v > hi)).sum()) if heavy else 0
                ax.hist(np.clip(v, lo, hi) if outside else v, bins=bins, color="tab:gray")
                if outside:  # clipped to the edge bins
                    ax.text(0.98, 0.95, f"{outside} beyond the 1-99% range,\nin the edge bins", ha="right", va="top",
                            fontsize=6, transform=ax.transAxes, color="0.3")  # fmt: skip
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            if j == 0:
                ax.set_ylabel("cones i of layer l+1", fontsize=8)
            if i == 0:
                ax.set_title(f"{lay.prev_layer} -> {lay.layer}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
