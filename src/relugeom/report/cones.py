"""Figures of the cone statistics (seed 000, "Results"): net-wise and block-wise (per stage) distributions
of the four nesting states over epochs, averaged across runs/seeds with a +-1 std band, and the
distributions of the continuous statistics (dist, open_diff, rotation) per layer pair."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..stats.cones import STATES

STATE_COLORS = dict(zip(STATES, ("tab:green", "tab:olive", "tab:blue", "tab:red")))


def _fractions_panel(ax, dist: pd.DataFrame, title: str) -> None:  # noqa: ANN001
    """Fraction per state over epochs (mean over runs, +-std band), or bars for a single model."""
    if "epoch" in dist and dist["epoch"].nunique() > 1:
        for state in STATES:
            d = dist[dist.state == state]
            g = d.groupby("epoch")["fraction"]
            mean, std = g.mean(), g.std().fillna(0.0)
            ax.plot(mean.index, mean.values, marker=".", color=STATE_COLORS[state], label=state)
            ax.fill_between(mean.index, (mean - std).values, (mean + std).values, color=STATE_COLORS[state],
                            alpha=0.2, linewidth=0)  # fmt: skip
        ax.set_xlabel("epoch")
    else:
        means = [dist.loc[dist.state == s, "fraction"].mean() for s in STATES]
        stds = [dist.loc[dist.state == s, "fraction"].std() for s in STATES]
        ax.bar(range(4), means, yerr=[0 if np.isnan(s) else s for s in stds],
               color=[STATE_COLORS[s] for s in STATES])  # fmt: skip
        ax.set_xticks(range(4), [s.replace("_", "\n") for s in STATES], fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("fraction of cones")
    ax.set_title(title, fontsize=9)


def state_distribution_figure(net: pd.DataFrame, title: str = "net-wise distribution of cone states") -> Figure:
    """One panel: the net-wise distribution (``state_distribution(states, "net")``)."""
    fig = Figure(figsize=(5.5, 3.4), layout="constrained")
    ax = fig.subplots()
    _fractions_panel(ax, net, title)
    if "epoch" in net and net["epoch"].nunique() > 1:
        ax.legend(fontsize=7)
    return fig


def blockwise_figure(by_stage: pd.DataFrame) -> Figure:
    """One panel per stage (``state_distribution(states, "stage")``): the block-wise distributions."""
    stages = sorted(by_stage["stage"].dropna().unique())
    cols = min(4, max(1, len(stages)))
    rows = math.ceil(len(stages) / cols) if stages else 1
    fig = Figure(figsize=(3.6 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, stage in zip(axes, stages):
        _fractions_panel(ax, by_stage[by_stage.stage == stage], f"stage {int(stage)}")
    for ax in axes[len(stages):]:
        ax.set_visible(False)
    if stages and "epoch" in by_stage and by_stage["epoch"].nunique() > 1:
        axes[0].legend(fontsize=6)
    return fig


def continuous_figure(states: pd.DataFrame, bins: int = 30) -> Figure:
    """Histograms of ``dist``, ``open_diff`` and ``rotation`` (rows) per layer pair (columns) of one model."""
    ok = states[states["state"].notna()]
    layers = ok.drop_duplicates("layer_index").sort_values("layer_index")
    cols = max(1, len(layers))
    fig = Figure(figsize=(2.8 * cols, 6.6), layout="constrained")
    axes = fig.subplots(3, cols, squeeze=False)
    for j, (_, lay) in enumerate(layers.iterrows()):
        sub = ok[ok.layer_index == lay.layer_index]
        for i, (col, label) in enumerate((("dist", "dist"), ("open_diff", "open_diff (rad)"),
                                          ("rotation", "rotation (rad)"))):  # fmt: skip
            v = sub[col].dropna().to_numpy(dtype=float)
            ax = axes[i, j]
            if len(v):
                ax.hist(v, bins=bins, color="tab:gray")
            ax.set_xlabel(label, fontsize=8)
            if i == 0:
                ax.set_title(f"{lay.prev_layer} -> {lay.layer}", fontsize=8)
    return fig
