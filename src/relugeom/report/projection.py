"""Figures of the projection statistic (Gamba et al. 2020): per-layer histograms of cos, trained vs. init
(figs. 1, 4, 9-14) and n_l per layer over epochs with the training curves beneath (figs. 5-8)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._layout import legend, panel_grid, unique_handles

INIT_COLOR, TRAINED_COLOR = "tab:blue", "tab:orange"
DROP_COLOR = "tab:red"


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
    are matched by ``layer_index``. Each panel's title gives n_l of both; the y axis counts filters.
    """
    layers = trained.drop_duplicates("layer_index").sort_values("layer_index")
    fig, axes, spare = panel_grid(len(layers), (3.0, 2.3))
    for ax, (_, lay) in zip(axes, layers.iterrows()):
        t = trained.loc[trained.layer_index == lay.layer_index, "cos"].dropna().to_numpy()
        i = None if init is None else init.loc[init.layer_index == lay.layer_index, "cos"].dropna().to_numpy()
        both = t if i is None or not len(i) else np.concatenate([t, i])
        lo, hi = (float(both.min()), float(both.max())) if len(both) else (-1.0, 1.0)
        pad = 0.05 * (hi - lo or 1.0)
        edges = np.linspace(lo - pad, hi + pad, bins + 1)
        text = f"n_l={np.mean(t <= 0):.2f}" if len(t) else "no filters"
        if i is not None and len(i):
            ax.hist(i, bins=edges, color=INIT_COLOR, alpha=0.55, label=labels[1])
            text += f" (init {np.mean(i <= 0):.2f})"
        ax.hist(t, bins=edges, color=TRAINED_COLOR, alpha=0.55, label=labels[0])
        ax.axvline(0.0, color="k", lw=0.6, label="cos = 0")
        ax.set_title(f"{int(lay.layer_index) + 1}: {lay.layer}\n{text}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.locator_params(axis="x", nbins=5)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=4))
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("filters", fontsize=8)
    legend(fig, *unique_handles(axes), spare)
    fig.supxlabel("cos(w, 1) of each filter w: the projection statistic (Gamba et al. 2020, eq. 1)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _mark_drops(ax, drops: Sequence[int], label: bool) -> None:  # noqa: ANN001
    """Learning-rate drops: a thin red line across the panel and a tick on the epoch axis."""
    for k, e in enumerate(drops):
        ax.axvline(e, color=DROP_COLOR, lw=0.8, alpha=0.5, ls=":", label="learning-rate drop" if label and k == 0
                   else None)  # fmt: skip
    if len(drops):
        ax.plot(list(drops), [0.0] * len(drops), "|", color=DROP_COLOR, ms=10, mew=2, clip_on=False,
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
    one value) the line is the mean over runs and the band one standard deviation (light, under the
    lines). Layers are split over panels of ``layers_per_panel``, or as ``panels`` says (lists of
    0-based layer indices; Gamba et al. 2020 fig. 7 is ``[range(7), range(7, 16)]``). ``metrics``
    (``metrics.csv`` of one or several runs) adds a bottom panel with train/val loss rescaled by their
    maxima and accuracies. Learning-rate drops are dotted red lines with a tick on the epoch axis, in
    the legend as "learning-rate drop". Epoch ticks are integers; each panel's legend is outside it.
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
    fig = Figure(figsize=(8.5, 2.6 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, 1, sharex=True, squeeze=False).ravel()
    cmap = matplotlib.colormaps["viridis"]
    n_runs = summary["run"].nunique() if "run" in summary else 1
    last = agg.epoch.max() if len(agg) else 0
    lr_drops = [e for e in lr_drops if e <= last]  # a run stopped early has not reached the later drops
    for ax, ids in zip(axes, panels):
        for k, li in enumerate(ids):
            d = agg[agg.layer_index == li].sort_values("epoch")
            color = cmap(0.9 * k / max(1, len(ids) - 1))
            ax.plot(d.epoch, d["mean"], color=color, lw=1.5, label=f"{li + 1}: {d.layer.iloc[0]}", zorder=3)
            if n_runs > 1:
                ax.fill_between(d.epoch, d["mean"] - d["std"], d["mean"] + d["std"], color=color, alpha=0.12,
                                linewidth=0, zorder=1)  # fmt: skip
        ax.axhline(0.5, color="grey", lw=0.6, ls="--", label="n_l = 0.5 (symmetric)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("n_l (fraction cos <= 0)", fontsize=9)
        _mark_drops(ax, lr_drops, label=True)
        ax.legend(fontsize=7, ncol=1 if len(ids) <= 9 else 2, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False)  # fmt: skip
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
        ax.set_ylabel("loss / max, accuracy", fontsize=9)
        _mark_drops(ax, lr_drops, label=False)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes[-1].set_xlabel("epoch (0 = initialization)")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if n_runs > 1:
        fig.suptitle((title + "\n" if title else "") + f"mean over {n_runs} runs, band = one standard deviation",
                     fontsize=10)  # fmt: skip
    elif title:
        fig.suptitle(title, fontsize=10)
    return fig
