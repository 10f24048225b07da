"""Figures of the re-initialization experiment (Gamba et al. 2020 figs. 2, 16, 18, 19, 23, 24) and its
comparison with n_l (fig. 2 next to fig. 7)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from ._layout import panel_grid

RANDOM_EPOCH = -1


def reinit_heatmap(drops: pd.DataFrame, *, title: str | None = None, max_cols: int = 3,
                   annotate: int = 400) -> Figure:  # fmt: skip
    """One heatmap per run: rows are the reference epochs (``random`` last, below a line), columns the conv
    layers (1-based), colour the relative accuracy drop (acc_trained - acc_reset) / acc_trained.

    The colour scale is diverging around 0 (white: no change; red: accuracy lost; blue: the reset model is
    better) and spans the epoch rows only, so that a large drop of the random reset does not wash them
    out; cells beyond it take the end colour (the colour bar's arrow) and every cell shows its value when
    the grid has at most ``annotate`` cells.
    """
    runs = list(drops["run"].unique()) if "run" in drops else [None]
    n_layers = drops["layer_index"].nunique()
    n_epochs = drops["epoch"].nunique()
    cell = (0.42, 0.3) if n_layers * n_epochs <= annotate else (0.28, 0.2)
    fig, axes, spare = panel_grid(len(runs), (max(3.6, cell[0] * n_layers + 1.6), max(2.6, cell[1] * n_epochs + 1.3)),
                                  max_cols=max_cols)  # fmt: skip
    if spare is not None:
        fig.delaxes(spare)
    values = drops["drop"].to_numpy(dtype=float)
    trained_rows = values[(drops["epoch"] != RANDOM_EPOCH).to_numpy()]
    scale = trained_rows if np.isfinite(trained_rows).any() else values
    vmax = max(float(np.nanmax(scale, initial=0.0)), 1e-9)
    vmin = min(float(np.nanmin(scale, initial=0.0)), 0.0)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (bool(np.nanmin(values, initial=0.0) < vmin), bool(np.nanmax(values, initial=0.0) > vmax))]  # fmt: skip
    cmap = matplotlib.colormaps["RdBu_r"]  # white = no change, red = accuracy lost, blue = accuracy gained
    norm = TwoSlopeNorm(vcenter=0.0, vmin=min(vmin, -1e-9 if vmax <= 0 else -1e-3 * vmax), vmax=vmax)
    image = None
    for ax, run in zip(axes, runs):
        d = drops if run is None else drops[drops["run"] == run]
        grid = d.pivot_table(index="epoch", columns="layer_index", values="drop", aggfunc="mean")
        order = [e for e in sorted(grid.index) if e != RANDOM_EPOCH] + ([RANDOM_EPOCH] if RANDOM_EPOCH in grid.index
                                                                         else [])  # fmt: skip
        grid = grid.loc[order]
        z = grid.to_numpy(dtype=float)
        image = ax.imshow(z, aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
        if z.size <= annotate:
            for (i, j), v in np.ndenumerate(z):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if abs(float(norm(v)) - 0.5) > 0.3 else "black")  # fmt: skip
        if RANDOM_EPOCH in grid.index and len(grid) > 1:
            ax.axhline(len(grid) - 1.5, color="black", lw=1.5)
        ax.set_xticks(range(grid.shape[1]), [str(int(c) + 1) for c in grid.columns], fontsize=7)
        ax.set_yticks(range(grid.shape[0]), ["random" if e == RANDOM_EPOCH else str(int(e)) for e in grid.index],
                      fontsize=7)  # fmt: skip
        ax.set_xlabel("conv layer reset", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("weights reset to epoch", fontsize=8)
        if run is not None:
            ax.set_title(str(run), fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="relative drop in accuracy\n(blue: the reset model is better)",
                     shrink=0.9, extend=extend)  # fmt: skip
    fig.suptitle((title + "\n" if title else "") + "re-initialization robustness (Gamba et al. 2020, sec. 3.3)",
                 fontsize=9)  # fmt: skip
    return fig


def critical_vs_bias_plot(table: pd.DataFrame, rho: float, rho_bias: float, *, title: str | None = None) -> Figure:
    """Per layer: the mean re-initialization drop (bars, left axis) next to n_l at the end of training (line,
    right axis), with the Spearman rank correlations in the title (Gamba et al. 2020, fig. 2 next to fig. 7)."""
    fig = Figure(figsize=(max(5.0, 0.45 * len(table) + 2.5), 3.6), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(table)) + 1
    ax.bar(x, table["drop"], color="tab:red", alpha=0.6, label="relative drop in accuracy (mean over reset epochs)")
    ax.axhline(0.0, color="0.3", lw=0.6)
    ax.set_ylabel("relative drop in accuracy", color="tab:red")
    ax.set_xlabel("conv layer")
    ax.set_xticks(x)
    ax2 = ax.twinx()
    ax2.plot(x, table["n_l"], "o-", color="tab:blue", label="n_l at the end of training (right axis)")
    ax2.axhline(0.5, color="grey", lw=0.6, ls="--", label="n_l = 0.5 (symmetric)")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("n_l", color="tab:blue")
    ax.set_title((title + "\n" if title else "") + f"Spearman rho(drop, n_l) = {rho:.2f}, "
                 f"rho(drop, |2 n_l - 1|) = {rho_bias:.2f}", fontsize=9)  # fmt: skip
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    return fig
