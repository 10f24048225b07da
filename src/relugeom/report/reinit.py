"""Figures of the re-initialization experiment (Gamba et al. 2020 figs. 2, 16, 18, 19, 23, 24) and its
comparison with n_l (fig. 2 next to fig. 7)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

RANDOM_EPOCH = -1


def reinit_heatmap(drops: pd.DataFrame, *, title: str | None = None, max_cols: int = 3) -> Figure:
    """One heatmap per run: rows are the reference epochs (``random`` last), columns the conv layers
    (1-based), colour the relative accuracy drop (acc_trained - acc_reset) / acc_trained."""
    runs = list(drops["run"].unique()) if "run" in drops else [None]
    cols = min(max_cols, len(runs))
    rows = math.ceil(len(runs) / cols)
    n_layers = drops["layer_index"].nunique()
    n_epochs = drops["epoch"].nunique()
    fig = Figure(figsize=(max(3.0, 0.35 * n_layers + 1.5) * cols, max(2.2, 0.28 * n_epochs + 1.2) * rows),
                 layout="constrained")  # fmt: skip
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    vmax = max(float(np.nanmax(drops["drop"].to_numpy(dtype=float), initial=0.0)), 1e-9)
    image = None
    for ax, run in zip(axes, runs):
        d = drops if run is None else drops[drops["run"] == run]
        grid = d.pivot_table(index="epoch", columns="layer_index", values="drop", aggfunc="mean")
        order = [e for e in sorted(grid.index) if e != RANDOM_EPOCH] + ([RANDOM_EPOCH] if RANDOM_EPOCH in grid.index
                                                                         else [])  # fmt: skip
        grid = grid.loc[order]
        image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="magma_r", vmin=0.0, vmax=vmax,
                          interpolation="nearest")  # fmt: skip
        ax.set_xticks(range(grid.shape[1]), [str(int(c) + 1) for c in grid.columns], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), ["random" if e == RANDOM_EPOCH else str(int(e)) for e in grid.index],
                      fontsize=7)  # fmt: skip
        ax.set_xlabel("conv layer")
        ax.set_ylabel("weights reset to epoch")
        if run is not None:
            ax.set_title(str(run), fontsize=8)
    for ax in axes[len(runs) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[: len(runs)]), label="relative drop in accuracy", shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig


def critical_vs_bias_plot(table: pd.DataFrame, rho: float, rho_bias: float, *, title: str | None = None) -> Figure:
    """Per layer: the mean re-initialization drop (bars) next to n_l at the end of training (line)."""
    fig = Figure(figsize=(max(4.0, 0.4 * len(table) + 2), 3.0), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table)) + 1
    ax.bar(x, table["drop"], color="tab:red", alpha=0.6, label="relative drop (mean over epochs)")
    ax.set_ylabel("relative drop in accuracy")
    ax.set_xlabel("conv layer")
    ax.set_xticks(x)
    ax2 = ax.twinx()
    ax2.plot(x, table["n_l"], "o-", color="tab:blue", label="n_l (end of training)")
    ax2.axhline(0.5, color="grey", lw=0.6, ls="--")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("n_l")
    ax.set_title((title + "\n" if title else "") + f"Spearman rho(drop, n_l) = {rho:.2f}, "
                 f"rho(drop, |2 n_l - 1|) = {rho_bias:.2f}", fontsize=9)  # fmt: skip
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper right")
    return fig
