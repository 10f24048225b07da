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


def dual_basis_figure(data: dict, *, extent: float = 1.5) -> Figure:
    """Fig. 1: the layer's planes (lines in 2D), the dual basis e_i drawn from the apex where all planes meet
    (eq. 10; e_i runs along the planes other than i, to the negative side of plane i), and the preimage of an
    output y (eqs. 14-15): the point x* (black) and the cone x* + S+(e_i : y_i = 0) (red)."""
    w, b, apex, E = data["w"], data["b"], data["apex"], data["E"]
    x_star, rays, zeros = data["x_star"], data["rays"], data["zeros"]
    d = len(apex)
    centre = (apex + x_star) / 2
    half = extent + np.abs(apex - x_star).max() / 2
    lo, hi = centre - half, centre + half
    fig = Figure(figsize=(5.6, 5.2), layout="constrained")
    ax = fig.add_subplot(projection="3d" if d == 3 else None)
    colors = ("tab:blue", "tab:orange", "tab:green")
    if d == 2:
        t = np.linspace(-3 * half, 3 * half, 2)
        for i in range(2):
            n = w[i] / np.linalg.norm(w[i])
            p0 = -b[i] * w[i] / (w[i] @ w[i])
            line = p0[None, :] + t[:, None] * np.array([-n[1], n[0]])[None, :]
            ax.plot(line[:, 0], line[:, 1], color=colors[i], lw=1.2,
                    label=f"plane {i + 1}: w{i + 1}·x + b{i + 1} = 0")  # fmt: skip
        for i in range(2):
            arrow = {"arrowstyle": "->", "color": colors[i], "lw": 2}
            ax.annotate("", xy=apex + E[:, i], xytext=apex, arrowprops=arrow)
            ax.text(*(apex + 1.08 * E[:, i]), f"e{i + 1}", color=colors[i], fontsize=10)
        for j in range(len(zeros)):
            end = x_star + 3 * half * rays[:, j]
            ax.plot([x_star[0], end[0]], [x_star[1], end[1]], color="tab:red", lw=3, alpha=0.7,
                    label="preimage x* + S+(e_i : y_i = 0)" if j == 0 else None)  # fmt: skip
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_aspect("equal")
        ax.axhline(0, color="0.6", lw=0.5)
        ax.axvline(0, color="0.6", lw=0.5)
    else:
        g = np.linspace(-half, half, 2)
        for i in range(3):
            n = w[i] / np.linalg.norm(w[i])
            u = np.linalg.svd(n[None, :])[2][1:]  # two directions inside the plane
            p0 = apex  # every plane passes through the apex
            s1, s2 = np.meshgrid(g, g)
            pts = p0[None, None, :] + s1[..., None] * u[0] + s2[..., None] * u[1]
            ax.plot_surface(pts[..., 0], pts[..., 1], pts[..., 2], color=colors[i], alpha=0.18, linewidth=0)
        for i in range(3):
            ax.quiver(*apex, *E[:, i], color=colors[i], lw=2, arrow_length_ratio=0.15)
            ax.text(*(apex + 1.12 * E[:, i]), f"e{i + 1}", color=colors[i], fontsize=10)
        if rays.shape[1]:
            L = 1.5 * half
            tips = [x_star + L * rays[:, j] for j in range(rays.shape[1])]
            for tip in tips:
                ax.plot(*np.stack([x_star, tip]).T, color="tab:red", lw=2.5)
            if len(tips) == 2:
                from mpl_toolkits.mplot3d.art3d import Poly3DCollection

                ax.add_collection3d(Poly3DCollection([np.stack([x_star, *tips])], color="tab:red", alpha=0.35))
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_zlabel("x3")
        ax.set_box_aspect(None, zoom=0.85)
    ax.scatter(*apex, color="0.3", s=25, zorder=5)
    ax.scatter(*x_star, color="black", s=30, zorder=6)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    y = ", ".join(f"{v:.2g}" for v in data["y"])
    ax.set_title(f"dual basis from the apex (grey); preimage of y = ({y}) from x* (black), red,\n"
                 "before the domain x >= 0; Carlsson 2019, fig. 1 and eqs. 10-15", fontsize=8)  # fmt: skip
    if d == 2:
        ax.legend(fontsize=7, loc="lower right")
    return fig
