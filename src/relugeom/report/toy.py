"""Pictures of the toy circulant networks (Carlsson 2019, figs. 2-4), drawn from :mod:`relugeom.geometry.toy` data."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..geometry.preimage import PiecewisePreimage

LAYER_COLORS = ("tab:red", "tab:blue")


def flows_figure(flow: dict, nesting: list[dict] | None = None, title: str = "") -> Figure:
    """Fig. 2: the zero lines of every layer's units remapped to the 2D input space (alternating red and blue
    per layer; dashed black where the layer's cone is not completely nested in its predecessor's orthant),
    and in grey the inputs mapped to output (0, 0)."""
    fig = Figure(figsize=(5.8, 6.2), layout="constrained")
    ax = fig.subplots()
    ax.contourf(flow["x"], flow["y"], flow["zero"].astype(float), levels=[0.5, 1.5], colors=["0.85"])
    nested = {d["layer"]: d["nested"] for d in (nesting or [])}
    for k, z in enumerate(flow["pre"]):
        ok = nested.get(k, True)
        color = LAYER_COLORS[k % 2] if ok else "black"
        for j in range(z.shape[2]):
            ax.contour(flow["x"], flow["y"], z[:, :, j], levels=[0.0], colors=[color],
                       linestyles="solid" if ok else "dashed", linewidths=1.0)  # fmt: skip
    ax.axhline(0, color="0.5", lw=0.5)
    ax.axvline(0, color="0.5", lw=0.5)
    ax.set_xlabel("x1 (input)")
    ax.set_ylabel("x2 (input)")
    ax.set_aspect("equal")
    handles = [Patch(color="0.85", label="inputs mapped to output (0, 0)")]
    for k in range(len(flow["pre"])):
        ok = nested.get(k, True)
        handles.append(Line2D([], [], color=LAYER_COLORS[k % 2] if ok else "black", ls="-" if ok else "--",
                              label=f"layer {k + 1}: zero lines of its units" + ("" if ok else
                                    " (cone not completely nested)")))  # fmt: skip
    fig.legend(handles=handles, fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    ax.set_title(title or "layer boundaries remapped to the input space (Carlsson 2019, fig. 2)", fontsize=9)
    return fig


def cells_figure(cells: dict) -> Figure:
    """Fig. 3: points of the 3D input box coloured by their cell's number of negative constraints (left) and
    their images (right): cells with k negatives land in (3 - k)-dimensional coordinate subspaces."""
    from matplotlib.colors import BoundaryNorm, ListedColormap

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    cmap = ListedColormap([matplotlib.colormaps["viridis"](v) for v in (0.0, 0.35, 0.7, 1.0)])
    norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5, 3.5], cmap.N)  # one colour per count 0..3
    for i, (key, title) in enumerate((("x", "input cells x"), ("y", "their images y = relu(Wx + b)"))):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        pts = cells[key]
        sc = ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=cells["negatives"], cmap=cmap, norm=norm, s=4)
        ax.set_box_aspect(None, zoom=0.85)  # room for the z label
        ax.set_title(title, fontsize=9)
        _label_3d(ax, key)
    fig.colorbar(sc, ax=fig.axes, label="negative constraints of the cell\n(= zeroed coordinates of the image)",
                 shrink=0.6, ticks=[0, 1, 2, 3])  # fmt: skip
    fig.suptitle("cells of one circulant layer and their images (Carlsson 2019, fig. 3)", fontsize=10)
    return fig


def _label_3d(ax, var: str = "x") -> None:  # noqa: ANN001
    """Axis labels ``x1, x2[, x3]`` (or y...) and at most four ticks per axis (3D ticks crowd quickly)."""
    from matplotlib.ticker import MaxNLocator

    axes = [ax.xaxis, ax.yaxis] + ([ax.zaxis] if hasattr(ax, "zaxis") else [])
    for k, axis in enumerate(axes):
        axis.set_major_locator(MaxNLocator(4))
        axis.set_label_text(f"{var}{k + 1}", fontsize=8 if len(axes) == 3 else 10)


def _piece_points(pre: PiecewisePreimage, n: int, seed: int, radius: float) -> list[tuple[np.ndarray, int]]:
    out = []
    for k, piece in enumerate(pre.pieces):
        out.append((piece.sample(n, seed=seed + k, radius=radius), piece.dimension()))
    return out


def preimages_figure(preimages: list[PiecewisePreimage], ys: np.ndarray, *, n: int = 300, seed: int = 0,
                     radius: float = 3.0) -> Figure:  # fmt: skip
    """Preimages of output points (samples of every piece, one colour per output point), in 2D or 3D."""
    d = preimages[0].pieces[0].d if preimages and preimages[0].pieces else len(np.atleast_2d(ys)[0])
    fig = Figure(figsize=(5.4, 5), layout="constrained")
    ax = fig.add_subplot(projection="3d" if d == 3 else None)
    for i, (pre, y) in enumerate(zip(preimages, np.atleast_2d(ys))):
        color = f"C{i % 10}"
        label = f"y = ({', '.join(f'{v:.2g}' for v in y)}), {len(pre)} piece(s)"
        for pts, _dim in _piece_points(pre, n, seed, radius):
            ax.scatter(*pts.T[:d], s=3, color=color, label=label)
            label = None
    _label_3d(ax, "x")
    ax.set_title("preimages P(y) of output points y in the input space (Carlsson 2019, eq. 9)", fontsize=9)
    ax.legend(fontsize=7, markerscale=3)
    return fig


def manifold_figure(manifold: PiecewisePreimage, *, n: int = 400, seed: int = 0, radius: float = 3.0) -> Figure:
    """Fig. 4: the piecewise-planar input manifold mapped to the affine output set (patches coloured by their
    activation pattern)."""
    d = manifold.pieces[0].d if manifold.pieces else 3
    fig = Figure(figsize=(5.6, 5), layout="constrained")
    ax = fig.add_subplot(projection="3d" if d == 3 else None)
    for k, (pts, _dim) in enumerate(_piece_points(manifold, n, seed, radius)):
        ax.scatter(*pts.T[:d], s=2, color=f"C{k % 10}")
    _label_3d(ax, "x")
    ax.set_title(f"the input manifold mapped to the output plane sum(y) = const (Carlsson 2019, fig. 4):\n"
                 f"{len(manifold)} planar patches, one colour per activation pattern"
                 + ("" if manifold.complete else " (budget reached)"), fontsize=9)  # fmt: skip
    return fig
