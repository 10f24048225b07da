"""Counting regions over training: lines through data points and planes through three data points.

Hanin and Rolnick (2019; cited by Daróczy 2020, "Complexity of linear regions") count the activation regions that a
ReLU network cuts a 1D line or a 2D plane through data points into, at every checkpoint of a training run,
and find that the count per unit length / area stays of the order of (#neurons)^dim at initialisation and
grows only slightly during training. :func:`regions_over_training` repeats that experiment exactly (no
sampling) with :func:`~relugeom.regions.segment.regions_on_segment` and
:func:`~relugeom.regions.slice.partition_2d`, on the same lines and planes for every checkpoint.

The random choice of data points is the only randomness (``seed``); the counts themselves are exact.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ArchitectureError, BudgetExceeded, DataError, SkippedWarning, warn
from ..sources import Source, SourceItem, map_sources
from .cells import _forward_record, _prepare
from .formulas import hanin_rolnick_bound
from .segment import regions_on_segment
from .slice import partition_2d

COLUMNS = ["kind", "index", "points", "n_regions", "n_linear_regions", "measure", "density", "n_neurons",
           "hanin_rolnick_bound", "T_equivalent"]


def _data_points(data: object) -> torch.Tensor:
    if isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[0]):
        data = data[0]
    if not torch.is_tensor(data):
        try:
            data = torch.cat([torch.as_tensor(b[0] if isinstance(b, (tuple, list)) else b) for b in data])
        except TypeError:
            raise DataError("data must be a tensor X, a pair (X, y) or an iterable of (x, y) batches") from None
    X = data.detach().to(torch.float64)
    if X.shape[0] < 3:
        raise DataError(f"need at least 3 data points for lines and planes, got {X.shape[0]}")
    return X


def relu_neuron_count(model: nn.Module, x: torch.Tensor) -> int:
    """Number of ReLU neurons (inputs of activation nodes, read from the network's graph) on inputs shaped like ``x``
    (one sample)."""
    _, patterns, _ = _forward_record(_prepare(model), torch.as_tensor(x, dtype=torch.float64)[None])
    return int(sum(p.shape[1] for p in patterns if p.dtype == np.bool_))  # ReLU signs; max-pool arg-maxes are ints


def region_counts(
    model: nn.Module,
    data: object,
    *,
    n_lines: int = 4,
    n_planes: int = 1,
    extend: float = 0.5,
    seed: int = 0,
    budget: int = 10**6,
) -> pd.DataFrame:
    """Exact region counts of one model along ``n_lines`` lines and on ``n_planes`` planes through data points.

    Line i passes through data points a, b: the segment ``a + t (b - a)``, ``t in [-extend, 1 + extend]``;
    ``measure`` is its input-space length. Plane j passes through a, b, c: ``a + z1 (b - a) + z2 (c - a)``,
    ``z in [-extend, 1 + extend]^2``; ``measure`` is its input-space area. ``density = n_regions / measure``.
    A line or plane whose count needs more than ``budget`` steps is left out with a
    :class:`~relugeom.errors.SkippedWarning` naming it; the other lines and planes are still counted.

    Next to it, Hanin and Rolnick's (2019) bound on the expected number of activation regions per unit volume,
    ``(T #neurons)^{n_in} / n_in!`` with n_in = 1 on a line and 2 on a plane (the network restricted to the line or
    plane), at T = 1 (:func:`~relugeom.regions.formulas.hanin_rolnick_bound`); ``T_equivalent`` is the T at which
    the bound equals the measured density, ``(n_in! density)^{1/n_in} / #neurons``. The theorem is about random
    weights and its T depends on their gradient and bias constants, so the comparison is indicative.

    Example
    -------
    >>> from torch import nn
    >>> def relu_net(k):  # relu of the first k coordinates of R^2
    ...     net = nn.Sequential(nn.Linear(2, k), nn.ReLU())
    ...     _ = net[0].weight.data.copy_(torch.eye(2)[:k]), net[0].bias.data.zero_()
    ...     return net
    >>> X = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])  # the plane through them crosses both axes
    >>> region_counts(relu_net(2), X, n_lines=0, n_planes=1)[["kind", "n_regions"]].values.tolist()
    [['plane', 4]]
    """
    X = _data_points(data)
    n_neurons = relu_neuron_count(model, X[0])

    def bound(n_in: int, density: float) -> tuple[float, float]:
        T_eq = (math.factorial(n_in) * density) ** (1 / n_in) / n_neurons if n_neurons else math.nan
        return hanin_rolnick_bound(n_neurons, n_in), T_eq

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_lines):
        a, b = rng.choice(len(X), size=2, replace=False)
        xa, xb = X[a], X[b]
        d = xb - xa
        try:
            seg = regions_on_segment(model, xa - extend * d, xb + extend * d, budget=budget)
        except BudgetExceeded as e:
            warn(f"line {i} (points {a},{b}) left out: {e}", SkippedWarning)
            continue
        length = float(torch.linalg.vector_norm(d)) * (1 + 2 * extend)
        dens = seg.n_activation_regions / length if length else math.nan
        rows.append(("line", i, f"{a},{b}", seg.n_activation_regions, seg.n_linear_regions, length, dens,
                     n_neurons, *bound(1, dens)))  # fmt: skip
    for j in range(n_planes):
        a, b, c = rng.choice(len(X), size=3, replace=False)
        u, v = X[b] - X[a], X[c] - X[a]
        try:
            P = partition_2d(model, X[a], u, v, (-extend, 1 + extend, -extend, 1 + extend), budget=budget)
        except BudgetExceeded as e:
            warn(f"plane {j} (points {a},{b},{c}) left out: {e}", SkippedWarning)
            continue
        G = torch.stack([u.ravel(), v.ravel()])
        area = float(torch.sqrt(torch.clamp(torch.linalg.det(G @ G.T), min=0))) * (1 + 2 * extend) ** 2
        dens = P.n_regions / area if area else math.nan
        rows.append(("plane", j, f"{a},{b},{c}", P.n_regions, P.n_linear_regions, area, dens, n_neurons,
                     *bound(2, dens)))  # fmt: skip
    return pd.DataFrame(rows, columns=COLUMNS)


def regions_over_training(
    source: Source,
    data: object,
    *,
    n_lines: int = 4,
    n_planes: int = 1,
    extend: float = 0.5,
    seed: int = 0,
    arch: str | None = None,
    budget: int = 10**6,
    **schedule: Any,
) -> pd.DataFrame:
    """:func:`region_counts` for every model of ``source`` (a run folder gives every epoch), on the same lines
    and planes (the same ``seed``); columns ``run, seed, epoch`` first (Hanin and Rolnick 2019).
    ``schedule``: ``executor``, ``parts``, ``shard`` (see :func:`~relugeom.sources.map_sources`).

    Example
    -------
    >>> from torch import nn
    >>> def relu_net(k):  # relu of the first k coordinates of R^2
    ...     net = nn.Sequential(nn.Linear(2, k), nn.ReLU())
    ...     _ = net[0].weight.data.copy_(torch.eye(2)[:k]), net[0].bias.data.zero_()
    ...     return net
    >>> X = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])  # the plane through them crosses both axes
    >>> df = regions_over_training([relu_net(1), relu_net(2)], X, n_lines=0)  # or a run folder: every epoch
    >>> df.n_regions.tolist()
    [2, 4]
    """
    analyse = functools.partial(_regions_item, data=_data_points(data), n_lines=n_lines, n_planes=n_planes,
                                extend=extend, seed=seed, budget=budget)  # fmt: skip
    return map_sources(source, analyse, arch=arch, desc="regions: checkpoints", **schedule)


def _regions_item(obj: nn.Module | Mapping[str, torch.Tensor], item: SourceItem, **options: Any) -> pd.DataFrame:
    if not isinstance(obj, nn.Module):
        raise ArchitectureError(f"{item.label}: a bare state dict; pass arch= (the architecture) so that the "
                                "network can be evaluated")  # fmt: skip
    return region_counts(obj, **options)


def training_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error of the region density over lines/planes, per epoch and kind."""
    keys = [c for c in ("run", "epoch") if c in df] + ["kind"]
    g = df.groupby(keys, dropna=False)["density"]
    out = g.agg(["mean", "std", "count"]).reset_index()
    out["se"] = out["std"] / np.sqrt(out["count"])
    out = out.rename(columns={"mean": "density_mean", "count": "n"}).drop(columns="std")
    if "hanin_rolnick_bound" in df:  # one value per network and kind
        hr = df.groupby(keys, dropna=False)[["n_neurons", "hanin_rolnick_bound"]].first().reset_index()
        out = out.merge(hr, on=keys, how="left")
    return out
