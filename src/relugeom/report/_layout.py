"""Panel grids without empty cells, and legends placed where they hide no data."""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure


def grid_shape(n: int, max_cols: int = 4) -> tuple[int, int]:
    """(rows, cols) for ``n`` panels: the fewest empty cells, then the widest grid, at most ``max_cols`` columns
    and never more rows than columns + 1 (so that 7 panels are 4 + 3, not one column of 7).

    >>> [grid_shape(n) for n in (1, 3, 4, 5, 6, 7, 9, 16)]
    [(1, 1), (1, 3), (1, 4), (2, 3), (2, 3), (2, 4), (3, 3), (4, 4)]
    """
    n = max(1, n)
    best = None
    for cols in range(min(max_cols, n), 0, -1):
        rows = math.ceil(n / cols)
        if rows > cols + 1 and cols < min(max_cols, n):
            continue
        key = (rows * cols - n, -cols)
        if best is None or key < best[0]:
            best = (key, (rows, cols))
    return best[1]


def panel_grid(n: int, panel: tuple[float, float], max_cols: int = 4, **subplots) -> tuple[Figure, list[Axes],
                                                                                            Axes | None]:  # fmt: skip
    """A constrained-layout figure with ``n`` panels of size ``panel`` (inches) on :func:`grid_shape`'s grid.

    Returns the figure, the ``n`` axes, and one spare cell (axis off) for a legend or a note, or None when the
    grid is full; any further empty cells are removed.
    """
    rows, cols = grid_shape(n, max_cols)
    fig = Figure(figsize=(panel[0] * cols, panel[1] * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False, **subplots).ravel())
    spare = axes[n] if len(axes) > n else None
    for ax in axes[n + 1 :]:
        fig.delaxes(ax)
    if spare is not None:
        spare.set_axis_off()
    return fig, axes[:n], spare


def legend(fig: Figure, handles: Sequence, labels: Sequence[str], spare: Axes | None = None, **kwargs) -> None:
    """The figure's one legend: in the spare grid cell when there is one, else right of the panels."""
    if not handles:
        return
    kwargs.setdefault("fontsize", 8)
    if spare is not None:
        spare.legend(handles, labels, loc="center", frameon=False, **kwargs)
    else:
        fig.legend(handles, labels, loc="outside right upper", frameon=False, **kwargs)


def unique_handles(axes: Sequence[Axes]) -> tuple[list, list[str]]:
    """Legend handles and labels of all ``axes``, each label once, in order of appearance."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, h)
    return list(seen.values()), list(seen)
