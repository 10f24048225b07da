"""The exact partition of a segment of input space by a ReLU network into activation and linear regions (float64).

An *activation region* is a set of inputs with one activation pattern (ReLU signs and max-pool arg-maxes); a
*linear region* of the segment is a connected union of activation regions on which the network restricted to the
segment is one affine map (Hanin and Rolnick 2019).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._repr import short_repr
from ..errors import ShapeError
from .cells import _as_input, _key, _propagate


@dataclass
class SegmentRegions:
    """The exact partition of the segment ``x(t) = x0 + t (x1 - x0)``, t in [0, 1].

    ``breakpoints``: the t in (0, 1) where the activation pattern changes, increasing. ``pieces``: one row per
    activation region (t_start, t_end, linear_region id, the output's value and slope along the segment).

    Example
    -------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))  # f(x) = relu(x) - relu(x - 1)
    >>> _ = net[0].weight.data.fill_(1.0), net[0].bias.data.copy_(torch.tensor([0.0, -1.0]))
    >>> _ = net[2].weight.data.copy_(torch.tensor([[1.0, -1.0]])), net[2].bias.data.zero_()
    >>> seg = regions_on_segment(net, torch.tensor([-1.0]), torch.tensor([2.0]))  # x = -1 + 3 t
    >>> seg.pieces[["t_start", "t_end", "linear_region"]].round(3).values.tolist()
    [[0.0, 0.333, 0.0], [0.333, 0.667, 1.0], [0.667, 1.0, 2.0]]
    """

    __repr__ = short_repr

    breakpoints: np.ndarray
    n_activation_regions: int
    n_linear_regions: int
    pieces: pd.DataFrame
    exact: bool = True


def regions_on_segment(model: nn.Module, x0: object, x1: object, *, tol: float = 1e-9,
                       budget: int = 10**6) -> SegmentRegions:  # fmt: skip
    """Every breakpoint of a ReLU network along the segment from ``x0`` to ``x1`` (exact, float64).

    Any network whose graph the walker reads and whose operations have layer rules (:mod:`relugeom.modules`):
    chains, residual networks (additions), concatenations, functional ReLUs and reshapes; anything else is
    refused with :class:`~relugeom.errors.UnsupportedLayerError` naming the module. ``x0``/``x1`` have the
    network's input shape without the batch dimension. Adjacent pieces with the same
    activation pattern are one activation region; adjacent activation regions on which the network restricted
    to the segment is the same affine function of t (within ``tol``) are one linear region.

    Example
    -------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))  # f(x) = relu(x) - relu(x - 1)
    >>> _ = net[0].weight.data.fill_(1.0), net[0].bias.data.copy_(torch.tensor([0.0, -1.0]))
    >>> _ = net[2].weight.data.copy_(torch.tensor([[1.0, -1.0]])), net[2].bias.data.zero_()
    >>> seg = regions_on_segment(net, torch.tensor([-1.0]), torch.tensor([2.0]))  # x = -1 + 3 t
    >>> seg.breakpoints.round(6).tolist(), seg.n_activation_regions, seg.n_linear_regions  # kinks at x = 0 and 1
    ([0.333333, 0.666667], 3, 3)
    """
    a, b = _as_input(x0, "x0"), _as_input(x1, "x1")
    if a.shape != b.shape:
        raise ShapeError(f"x0 has shape {tuple(a.shape)} but x1 has shape {tuple(b.shape)}")
    cols = torch.stack([b - a, a]).numpy()
    cells, _ = _propagate(model, cols, [np.array([[0.0, 1.0], [1.0, 1.0]])], tol, budget)
    order = np.argsort([V[:, 0].min() for V in cells.verts])
    rows, keys = [], []
    for i in order:
        V, H = cells.verts[i], cells.H[i]
        t0, t1 = sorted(V[:, 0])
        key = _key(cells.patterns[i])
        if keys and keys[-1] == key:  # over-split (max-pool crossings that are not on the envelope)
            rows[-1][1] = t1
            continue
        keys.append(key)
        rows.append([t0, t1, H[:, 1].copy(), H[:, 0].copy()])
    lin = [0]
    for j in range(1, len(rows)):
        same = all(np.allclose(rows[j][c], rows[j - 1][c], rtol=1e-7, atol=tol * 10) for c in (2, 3))
        lin.append(lin[-1] + (0 if same else 1))
    df = pd.DataFrame({
        "t_start": [r[0] for r in rows], "t_end": [r[1] for r in rows], "linear_region": lin,
        "value_at_0": [r[2] for r in rows], "slope": [r[3] for r in rows],
    })  # fmt: skip
    return SegmentRegions(np.array([r[0] for r in rows[1:]]), len(rows), lin[-1] + 1, df)
