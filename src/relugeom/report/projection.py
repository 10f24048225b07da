"""Figures of the projection statistic (Gamba et al. 2020): per-layer histograms of cos, trained vs. init
(figs. 1, 4, 9-14) and n_l per layer over epochs with the training curves beneath (figs. 5-8)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

INIT_COLOR, TRAINED_COLOR = "tab:blue", "tab:orange"


def _grid(n: int, max_cols: int = 4) -> tuple[int, int]:
    cols = min(max_cols, max(1, n))
    return math.ceil(n / cols), cols


def cos_histograms(
    trained: pd.DataFrame,
    init: pd.DataFrame | None = None,
    *,
    bins: int = 30,
    title: str | None = None,
    labels: tuple[str, str] = ("trained", "initialization"),
) -> Figure:
    """One panel per layer: histogram of the filters' cos, trained (orange) over init (blue).

    ``trained`` and ``init`` are per-filter tables of one model each (``projection_stats``); layers
    are matched by ``layer_index``. Each panel's title gives n_l of both.
    """
    layers = trained.drop_duplicates("layer_index").sort_values("layer_index")
    rows, cols = _grid(len(layers))
    fig = Figure(figsize=(3.2 * cols, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (_, lay) in zip(axes, layers.iterrows()):
        t = trained.loc[trained.layer_index == lay.layer_index, "cos"].dropna().to_numpy()
        i = None if init is None else init.loc[init.layer_index == lay.layer_index, "cos"].dropna().to_numpy()
        both = t if i is None or not len(i) else np.concatenate([t, i])
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (-1.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        edges = np.linspace(lo - pad, hi + pad, bins + 1)
        text = f"n_l={np.mean(t <= 0):.2f}" if len(t) else "no filters"
        if i is not None and len(i):
            ax.hist(i, bins=edges, color=INIT_COLOR, alpha=0.6, label=labels[1])
            text += f" (init {np.mean(i <= 0):.2f})"
        ax.hist(t, bins=edges, color=TRAINED_COLOR, alpha=0.6, label=labels[0])
        ax.axvline(0.0, color="k", lw=0.6)
        ax.set_title(f"{int(lay.layer_index) + 1}: {lay.layer}\n{text}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=5)
    for ax in axes[len(layers) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7)
    fig.supxlabel("cos (projection statistic, Gamba et al. 2020 eq. 1)", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def _mark_drops(ax, drops: Sequence[int]) -> None:  # noqa: ANN001
    for e in drops:
        ax.axvline(e, color="red", lw=0.6, alpha=0.3)
    if len(drops):
        ax.plot(list(drops), [0.0] * len(drops), "|", color="red", ms=10, mew=2, clip_on=False,
                transform=ax.get_xaxis_transform())  # fmt: skip


def nl_over_epochs(
    summary: pd.DataFrame,
    metrics: pd.DataFrame | None = None,
    *,
    lr_drops: Sequence[int] = (),
    layers_per_panel: int = 8,
    panels: Sequence[Sequence[int]] | None = None,
    title: str | None = None,
) -> Figure:
    """n_l of every layer over epochs (Gamba et al. 2020 fig. 5 top, fig. 7), training curves beneath.

    ``summary`` is ``layer_summary`` of a series; with several runs (a ``run`` column with more than
    one value) the line is the mean over runs and the band one standard deviation. Layers are split
    over panels of ``layers_per_panel``, or as ``panels`` says (lists of 0-based layer indices; Gamba
    et al. 2020 fig. 7 is ``[range(7), range(7, 16)]``). ``metrics`` (``metrics.csv`` of one or several runs) adds a
    bottom panel with train/val loss rescaled by their maxima and accuracies. Learning-rate drops
    are red ticks on the epoch axis.
    """
    keys = ["layer_index", "layer", "epoch"]
    agg = summary.groupby(keys, dropna=False)["n_neg"].agg(["mean", "std", "count"]).reset_index()
    agg["std"] = agg["std"].fillna(0.0)
    layer_ids = sorted(agg.layer_index.unique())
    if panels is not None:
        panels = [[li for li in p if li in set(layer_ids)] for p in panels]
    else:
        panels = [layer_ids[i : i + layers_per_panel] for i in range(0, len(layer_ids), layers_per_panel)] or [[]]
    n_rows = len(panels) + (metrics is not None)
    fig = Figure(figsize=(8, 2.6 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, 1, sharex=True, squeeze=False).ravel()
    cmap = __import__("matplotlib").colormaps["viridis"]
    n_runs = summary["run"].nunique() if "run" in summary else 1
    for ax, ids in zip(axes, panels):
        for k, li in enumerate(ids):
            d = agg[agg.layer_index == li].sort_values("epoch")
            color = cmap(k / max(1, len(ids) - 1))
            ax.plot(d.epoch, d["mean"], color=color, lw=1.4, label=f"{li + 1}: {d.layer.iloc[0]}")
            if n_runs > 1:
                ax.fill_between(d.epoch, d["mean"] - d["std"], d["mean"] + d["std"], color=color, alpha=0.2)
        ax.axhline(0.5, color="grey", lw=0.6, ls="--")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("n_l (fraction cos <= 0)")
        ax.legend(fontsize=7, ncol=2, loc="best")
        _mark_drops(ax, lr_drops)
    if metrics is not None:
        ax = axes[-1]
        m = metrics.groupby("epoch").mean(numeric_only=True).reset_index()
        for col, style in (("train_loss", "C0-"), ("val_loss", "C1-")):
            if col in m and m[col].notna().any():
                ax.plot(m.epoch, m[col] / m[col].max(), style, label=f"{col.replace('_', ' ')} / max")
        for col, style in (("train_acc", "C0--"), ("val_acc", "C1--")):
            if col in m and m[col].notna().any():
                ax.plot(m.epoch, m[col], style, label=col.replace("_", " "))
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, ncol=2)
        _mark_drops(ax, lr_drops)
    axes[-1].set_xlabel("epoch (0 = initialization)")
    if n_runs > 1:
        fig.suptitle((title + "\n" if title else "") + f"mean over {n_runs} runs, band = one standard deviation",
                     fontsize=9)  # fmt: skip
    elif title:
        fig.suptitle(title)
    return fig
