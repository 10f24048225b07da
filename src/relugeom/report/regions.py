"""Figures of linear regions: a 2D slice coloured by region, a segment's pieces, counts over training."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.collections import LineCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def zoom_box(polygons: Sequence[np.ndarray], points: np.ndarray, *, keep: float = 0.8,
             pad: float = 0.15) -> tuple[float, float, float, float]:  # fmt: skip
    """A box around the data ``points`` and the central ``keep`` fraction of the polygons' centroids (where
    most regions are), padded by ``pad`` of its size: the zoom of a whole-plane slice.

    >>> zoom_box([np.array([[0, 0], [1, 0], [0, 1]])], np.array([[0, 0], [1, 0], [0, 1]]))
    (-0.15, 1.15, -0.15, 1.15)
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if len(polygons):
        centroids = np.array([np.asarray(P, dtype=float).mean(0) for P in polygons])
        q = (1 - keep) / 2
        lo, hi = np.quantile(centroids, q, axis=0), np.quantile(centroids, 1 - q, axis=0)
        pts = np.vstack([pts, lo, hi])
    lo, hi = pts.min(0), pts.max(0)
    size = np.maximum(hi - lo, 1e-9)
    lo, hi = lo - pad * size, hi + pad * size
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _draw_slice(ax, polygons, colours, region, boundary, points, point_labels) -> None:  # noqa: ANN001
    ax.add_collection(PolyCollection(list(polygons), facecolors=colours[np.asarray(region, dtype=int)],
                                     edgecolors="white", linewidths=0.2))  # fmt: skip
    if len(boundary):
        ax.add_collection(LineCollection(list(boundary), colors="black", linewidths=1.5, label="decision boundary"))
    if points is not None and len(points):
        ax.scatter(points[:, 0], points[:, 1], s=28, color="white", edgecolors="black", linewidths=1.2, zorder=4,
                   label="data points")  # fmt: skip
        for (x, y), text in zip(points, point_labels):
            ax.annotate(text, (x, y), xytext=(4, 4), textcoords="offset points", fontsize=8, zorder=5,
                        fontweight="bold")  # fmt: skip
    ax.set_aspect("equal")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(5))
        axis.get_major_formatter().set_powerlimits((-3, 4))
    ax.set_xlabel("z1 (along b - a)")
    ax.set_ylabel("z2 (along c - a)")


def slice_figure(
    polygons: Sequence[np.ndarray],
    region: np.ndarray,
    boundary: Sequence[np.ndarray] = (),
    *,
    bounds: Sequence[float] | None = None,
    title: str = "",
    seed: int = 0,
    points: np.ndarray | None = ((0.0, 0.0), (1.0, 0.0), (0.0, 1.0)),
    point_labels: Sequence[str] = ("a", "b", "c"),
    zoom: Sequence[float] | bool = False,
) -> Figure:
    """The polygons of a 2D slice (``Partition2D.polygons``), each activation region one random colour,
    the decision boundary (``Partition2D.decision_boundary()``) in black and the data ``points`` that span
    the slice (slice coordinates; a, b, c at (0, 0), (1, 0), (0, 1) for ``relugeom regions slice``).

    ``zoom=True`` (or a box ``(z1min, z1max, z2min, z2max)``) adds a second panel zoomed to the data points
    and most regions (:func:`zoom_box`), outlined on the first.
    """
    pts = None if points is None else np.asarray(points, dtype=float).reshape(-1, 2)
    box = zoom_box(polygons, pts if pts is not None else np.zeros((0, 2))) if zoom is True else zoom or None
    fig = Figure(figsize=(11.5, 5.6) if box else (6.2, 6), layout="constrained")
    axes = fig.subplots(1, 2 if box else 1, squeeze=False).ravel()
    rng = np.random.default_rng(seed)
    n = int(np.max(region)) + 1 if len(region) else 0
    colours = rng.uniform(0.3, 0.95, size=(max(n, 1), 3))
    for ax in axes:
        _draw_slice(ax, polygons, colours, region, boundary, pts, point_labels)
    if bounds is not None:
        axes[0].set_xlim(bounds[0], bounds[1])
        axes[0].set_ylim(bounds[2], bounds[3])
    else:
        axes[0].autoscale()
    if box:
        from matplotlib.patches import Rectangle

        axes[1].set_xlim(box[0], box[1])
        axes[1].set_ylim(box[2], box[3])
        x0, x1 = axes[0].get_xlim()
        small = (box[1] - box[0]) < 0.03 * (x1 - x0)
        axes[0].add_patch(Rectangle((box[0], box[2]), box[1] - box[0], box[3] - box[2], fill=False, lw=1.2,
                                    ls="--", edgecolor="tab:red", label=None if small else "zoomed area",
                                    zorder=6))  # fmt: skip
        if small:  # too small to see at this scale: ring it
            axes[0].plot([(box[0] + box[1]) / 2], [(box[2] + box[3]) / 2], "s", ms=14, mfc="none", mec="tab:red",
                         mew=1.5, zorder=6, label="zoomed area (right)")  # fmt: skip
        axes[0].set_title("the whole plane (every vertex inside)", fontsize=9)
        axes[1].set_title("zoom: the data points and most regions", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(handles), frameon=False, fontsize=8)
    fig.suptitle(title or f"{n} activation regions", fontsize=10)
    return fig


def segment_figure(pieces: pd.DataFrame, *, title: str = "", marks: dict[str, float] | None = None,
                   max_outputs: int = 10) -> Figure:  # fmt: skip
    """A segment's activation regions as coloured bands over t (one colour per region) and the network's
    outputs along it (up to ``max_outputs`` of them; exact, piecewise linear); ``marks`` labels points on the
    segment, e.g. ``{"a": 0.0, "b": 1.0}``."""
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    n_out = len(np.atleast_1d(pieces.value_at_0.iloc[0])) if len(pieces) else 0
    shown = min(n_out, max_outputs)
    for _, r in pieces.iterrows():
        ax.axvspan(r.t_start, r.t_end, color=rng.uniform(0.55, 0.97, 3), lw=0)
    t = np.column_stack([pieces.t_start, pieces.t_end])
    for k in range(shown):
        v0 = np.array([np.atleast_1d(v)[k] for v in pieces.value_at_0])
        sl = np.array([np.atleast_1d(v)[k] for v in pieces.slope])
        y = v0[:, None] + sl[:, None] * t
        ax.plot(t.ravel(), y.ravel(), color=f"C{k % 10}", lw=1.2, label=f"output {k}")
    for name, at in (marks or {}).items():
        ax.axvline(at, color="black", lw=0.8, ls="--")
        ax.annotate(name, (at, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points",
                    fontsize=9, fontweight="bold")  # fmt: skip
    ax.set_xlim(float(pieces.t_start.min()), float(pieces.t_end.max()))
    ax.set_xlabel("t along the segment")
    ax.set_ylabel("network output (logit)" if shown > 1 else "network output")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="background: one colour\nper activation region" if shown else None, title_fontsize=7)  # fmt: skip
    more = f" (first {shown} of {n_out} outputs)" if shown < n_out else ""
    ax.set_title(title or f"{len(pieces)} activation regions, {pieces.linear_region.max() + 1} linear regions{more}",
                 fontsize=9)  # fmt: skip
    return fig


def training_figure(summary: pd.DataFrame, title: str | None = None) -> Figure:
    """Region density (mean +- standard error over lines / planes) per epoch, one panel per kind."""
    kinds = list(dict.fromkeys(summary["kind"]))
    fig = Figure(figsize=(5 * len(kinds), 3.6), layout="constrained")
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
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("regions per unit " + ("length" if kind == "line" else "area"))
        n = int(s["n"].max()) if "n" in s and s["n"].notna().any() else None
        over = f" (mean +- s.e. over {n})" if n and n > 1 else f" (one {kind})" if n == 1 else ""
        ax.set_title(f"{kind}s through data points{over}", fontsize=9)
        if "run" in s and s["run"].nunique() > 1:
            ax.legend(fontsize=7, frameon=False)
    fig.suptitle((title + ": " if title else "") + "exact activation regions over training (Hanin and Rolnick 2019)",
                 fontsize=10)  # fmt: skip
    return fig
