"""Figures of linear regions: a 2D slice coloured by region, a segment's pieces, counts over training."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def slice_figure(
    polygons: Sequence[np.ndarray],
    region: np.ndarray,
    boundary: Sequence[np.ndarray] = (),
    *,
    bounds: Sequence[float] | None = None,
    title: str = "",
    seed: int = 0,
) -> Figure:
    """The polygons of a 2D slice (``Partition2D.polygons``), each activation region one random colour,
    and the decision boundary segments (``Partition2D.decision_boundary()``) in black."""
    fig = Figure(figsize=(6, 6))
    ax = fig.subplots()
    rng = np.random.default_rng(seed)
    n = int(np.max(region)) + 1 if len(region) else 0
    colours = rng.uniform(0.25, 0.95, size=(max(n, 1), 3))
    ax.add_collection(PolyCollection(list(polygons), facecolors=colours[np.asarray(region, dtype=int)],
                                     edgecolors="white", linewidths=0.3))  # fmt: skip
    if len(boundary):
        ax.add_collection(LineCollection(list(boundary), colors="black", linewidths=1.5))
    if bounds is not None:
        ax.set_xlim(bounds[0], bounds[1])
        ax.set_ylim(bounds[2], bounds[3])
    else:
        ax.autoscale()
    ax.set_aspect("equal")
    ax.set_xlabel("z1 (direction u)")
    ax.set_ylabel("z2 (direction v)")
    ax.set_title(title or f"{n} activation regions")
    return fig


def segment_figure(pieces: pd.DataFrame, *, title: str = "") -> Figure:
    """A segment's activation regions as coloured bands over t, and the network's first output along it."""
    fig = Figure(figsize=(8, 3))
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    for _, r in pieces.iterrows():
        ax.axvspan(r.t_start, r.t_end, color=rng.uniform(0.3, 0.95, 3), lw=0)
        t = np.array([r.t_start, r.t_end])
        ax.plot(t, r.value_at_0[0] + r.slope[0] * t, color="black", lw=1)
    ax.set_xlim(float(pieces.t_start.min()), float(pieces.t_end.max()))
    ax.set_xlabel("t along the segment")
    ax.set_ylabel("output 0")
    ax.set_title(title or f"{len(pieces)} activation regions, {pieces.linear_region.max() + 1} linear regions")
    return fig


def training_figure(summary: pd.DataFrame) -> Figure:
    """Region density (mean +- standard error over lines / planes) per epoch, one panel per kind."""
    kinds = list(dict.fromkeys(summary["kind"]))
    fig = Figure(figsize=(5 * len(kinds), 3.5))
    axes = np.atleast_1d(fig.subplots(1, len(kinds)))
    for ax, kind in zip(axes, kinds):
        s = summary[summary["kind"] == kind].sort_values("epoch")
        for run, g in s.groupby("run") if "run" in s else [("", s)]:
            ax.errorbar(g["epoch"], g["density_mean"], yerr=g["se"].fillna(0), marker="o", capsize=3,
                        label=str(run) or None)  # fmt: skip
        if "hanin_rolnick_bound" in s and s["hanin_rolnick_bound"].notna().any():
            n_in = 1 if kind == "line" else 2
            ax.plot(s["epoch"], s["hanin_rolnick_bound"], ls="--", color="grey",
                    label=f"Hanin & Rolnick 2019: #neurons^{n_in}/{n_in}! (T = 1)")  # fmt: skip
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_xlabel("epoch")
        ax.set_ylabel("regions per unit " + ("length" if kind == "line" else "area"))
        ax.set_title(f"{kind}s through data points")
    return fig
