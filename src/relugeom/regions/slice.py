"""The exact partition of a 2D slice of input space by a ReLU network (float64), over a box or the whole plane.

With ``bounds=None`` the plane is covered by the four quadrant cones, whose rays may lie at infinity, so the
whole plane is partitioned exactly; the box then returned contains every finite vertex of every cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._repr import short_repr
from ..errors import ShapeError, warn
from ..graph import Graph
from .cells import _as_input, _Cells, _forward_record, _key, _propagate, _split_cone


@dataclass
class Partition2D:
    """The exact partition of the slice ``x = origin + z_1 u + z_2 v``, ``z`` in ``bounds``.

    ``polygons[i]``: (m, 2) vertices in slice coordinates, counter-clockwise or clockwise; ``patterns[i]``: the
    activation pattern (list of arrays, one per ReLU / max-pool layer); ``maps[i]``: (n_out, 3) with the
    output ``= maps[i][:, :2] @ z + maps[i][:, 2]`` on the polygon. Several polygons may share a pattern
    (when ``bounds=None`` the plane is first split into quadrants); ``region[i]`` numbers the activation
    regions, ``linear_region[i]`` the linear regions of the slice.

    Example
    -------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())  # relu(x1), relu(x2): the two axes split the plane
    >>> _ = net[0].weight.data.copy_(torch.eye(2)), net[0].bias.data.zero_()
    >>> P = partition_2d(net, torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), bounds=None)
    >>> P.whole_plane, P.n_regions, len(P.to_frame())  # the whole plane: four quadrants
    (True, 4, 4)
    """

    __repr__ = short_repr
    _repr_properties = ("n_regions", "n_linear_regions")

    model: nn.Module
    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    bounds: tuple[float, float, float, float]
    polygons: list[np.ndarray]
    patterns: list[list[np.ndarray]]
    maps: list[np.ndarray]
    region: np.ndarray
    linear_region: np.ndarray
    whole_plane: bool
    graph: Graph | None = field(repr=False, default=None)

    @property
    def n_regions(self) -> int:
        """Number of activation regions (exact)."""
        return int(self.region.max() + 1) if len(self.region) else 0

    @property
    def n_linear_regions(self) -> int:
        """Number of linear regions of the slice (exact)."""
        return int(self.linear_region.max() + 1) if len(self.linear_region) else 0

    def to_frame(self) -> pd.DataFrame:
        """One row per polygon: region, linear_region, n_vertices, area, centroid."""
        area = [0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1)))
                for p in self.polygons]  # fmt: skip
        cen = np.array([p.mean(0) for p in self.polygons]) if self.polygons else np.zeros((0, 2))
        return pd.DataFrame({"polygon": range(len(self.polygons)), "region": self.region,
                             "linear_region": self.linear_region, "n_vertices": [len(p) for p in self.polygons],
                             "area": area, "z1": cen[:, 0], "z2": cen[:, 1]})  # fmt: skip

    def points(self, z: np.ndarray) -> torch.Tensor:
        """Input-space points of slice coordinates ``z`` (n, 2), float64."""
        z = torch.as_tensor(np.asarray(z, dtype=np.float64))
        o, u, v = (torch.from_numpy(a) for a in (self.origin, self.u, self.v))
        return o[None] + z[:, :1].reshape(-1, *[1] * (o.dim())) * u[None] + \
            z[:, 1:2].reshape(-1, *[1] * (o.dim())) * v[None]

    def locate(self, z: np.ndarray) -> np.ndarray:
        """Index of a polygon containing each point (-1 if none), by half-plane tests."""
        z = np.asarray(z, dtype=np.float64).reshape(-1, 2)
        out = np.full(len(z), -1)
        if not self.polygons:
            return out
        lo = np.array([P.min(0) for P in self.polygons])
        hi = np.array([P.max(0) for P in self.polygons])
        pad = 1e-9 * (1 + np.maximum(np.abs(lo), np.abs(hi)).max(1, keepdims=True))
        for j, q in enumerate(z):  # only polygons whose bounding box holds the point are tested
            for i in np.nonzero(((lo - pad) <= q).all(1) & (q <= (hi + pad)).all(1))[0]:
                P = self.polygons[i]
                e = np.roll(P, -1, axis=0) - P
                cross = e[:, 0] * (q[1] - P[:, 1]) - e[:, 1] * (q[0] - P[:, 0])
                tol = 1e-9 * (1 + np.abs(P).max()) * np.linalg.norm(e, axis=1).max()
                if (cross >= -tol).all() or (cross <= tol).all():
                    out[j] = i
                    break
        return out

    def verify(self, n_points: int = 500, seed: int = 0, rtol: float = 1e-6) -> pd.DataFrame:
        """Check the pieces against forward passes at ``n_points`` uniform random points of the box.

        Returns one row with: n_points, uncovered (points in no polygon), max_abs_error of the polygon's affine
        map against the network's output, pattern_mismatches (points whose forward-pass activation pattern
        differs from the polygon's, not counting points within ``rtol`` of a boundary), ok.
        """
        rng = np.random.default_rng(seed)
        x0, x1, y0, y1 = self.bounds
        z = np.column_stack([rng.uniform(x0, x1, n_points), rng.uniform(y0, y1, n_points)])
        idx = self.locate(z)
        out, pats, margin = _forward_record(self.graph, self.points(z))
        out = out.numpy()
        err, mism = 0.0, 0
        scale = max(1.0, float(np.abs(out).max()))
        for j in np.nonzero(idx >= 0)[0]:
            M = self.maps[idx[j]]
            err = max(err, float(np.abs(M[:, :2] @ z[j] + M[:, 2] - out[j]).max()))
            if margin[j] > rtol * scale and any(not np.array_equal(np.asarray(p).ravel(), q[j].ravel())
                                                for p, q in zip(self.patterns[idx[j]], pats)):  # fmt: skip
                mism += 1
        unc = int((idx < 0).sum())
        return pd.DataFrame([{"n_points": n_points, "uncovered": unc, "max_abs_error": err,
                              "pattern_mismatches": mism,
                              "ok": unc == 0 and mism == 0 and err <= rtol * scale}])  # fmt: skip

    def decision_boundary(self) -> list[np.ndarray]:
        """Segments (2, 2) of the decision boundary: output 0 for one output, else where the arg-max changes."""
        segs = []
        for P, M in zip(self.polygons, self.maps):
            n_out = M.shape[0]
            if n_out > 1:  # each class's arg-max set is convex: one arg-max at all vertices, no boundary inside
                am = (P @ M[:, :2].T + M[:, 2]).argmax(1)
                if (am == am[0]).all():
                    continue
            pairs = [(0, None)] if n_out == 1 else [(c, j) for c in range(n_out) for j in range(c + 1, n_out)]
            for c, j2 in pairs:
                g = M[0] if j2 is None else M[c] - M[j2]
                s = P @ g[:2] + g[2]
                if not ((s > 0).any() and (s < 0).any()):
                    continue
                pts = []
                for i in range(len(P)):
                    j = (i + 1) % len(P)
                    if (s[i] > 0) != (s[j] > 0):
                        pts.append(P[i] + (P[j] - P[i]) * s[i] / (s[i] - s[j]))
                if len(pts) != 2:
                    continue
                if j2 is not None:  # keep the part of the segment where c (= j2 there) beats every other class
                    a0, a1 = (M[:, :2] @ q + M[:, 2] for q in pts)
                    lo, hi = 0.0, 1.0
                    for k in range(n_out):
                        if k in (c, j2):
                            continue
                        d0, d1 = a0[c] - a0[k], a1[c] - a1[k]  # f_c - f_k along the segment: d0 + t (d1 - d0)
                        if d0 < 0 and d1 < 0:
                            lo, hi = 1.0, 0.0
                            break
                        if d0 < 0 <= d1:
                            lo = max(lo, d0 / (d0 - d1))
                        elif d1 < 0 <= d0:
                            hi = min(hi, d0 / (d0 - d1))
                    if hi - lo <= 1e-12:
                        continue
                    pts = [pts[0] + lo * (pts[1] - pts[0]), pts[0] + hi * (pts[1] - pts[0])]
                segs.append(np.array(pts))
        return segs


def _box_cone(bounds: Sequence[float]) -> np.ndarray:
    x0, x1, y0, y1 = bounds
    V = np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]])
    return V / np.linalg.norm(V, axis=1, keepdims=True)


def _clip_box(V: np.ndarray, bounds: Sequence[float], tol: float) -> np.ndarray | None:
    x0, x1, y0, y1 = bounds
    for g in ([1.0, 0, -x0], [-1.0, 0, x1], [0, 1.0, -y0], [0, -1.0, y1]):
        s = V @ np.array(g)
        t = tol * np.abs(V).max() * max(1.0, abs(g[2]))
        if (s >= -t).all():
            continue
        if (s <= t).all():
            return None
        V = _split_cone(V, s, t)[0]
    return V


def _linear_components(polys: list[np.ndarray], maps: list[np.ndarray], region: np.ndarray, tol: float) -> np.ndarray:
    """Union-find of adjacent polygons (sharing a boundary segment) with the same affine map."""
    n = len(polys)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):  # same activation region -> same map, connected (convex)
        j = int(np.nonzero(region == region[i])[0][0])
        parent[find(i)] = find(j)
    scale = max(1.0, max(float(np.abs(m).max()) for m in maps)) if maps else 1.0
    keys: dict[bytes, list[int]] = {}
    for i, m in enumerate(maps):
        keys.setdefault(np.round(m / (scale * 1e-7)).astype(np.int64).tobytes(), []).append(i)
    lo = np.array([P.min(0) for P in polys])
    hi = np.array([P.max(0) for P in polys])
    pad = tol * 1e3 * (1 + np.maximum(np.abs(lo), np.abs(hi)).max(1))
    for group in keys.values():
        if len(group) < 2:
            continue
        g = np.array(group)
        # only polygons whose bounding boxes touch can share an edge
        touch = ((lo[g][:, None] <= hi[g][None] + pad[g][None, :, None]) &
                 (lo[g][None] <= hi[g][:, None] + pad[g][:, None, None])).all(2)  # fmt: skip
        for i, j in zip(*np.nonzero(np.triu(touch, 1))):
            a, b = int(g[i]), int(g[j])
            if find(a) != find(b) and _share_edge(polys[a], polys[b], tol) and \
                    np.allclose(maps[a], maps[b], rtol=1e-7, atol=1e-7 * scale):
                parent[find(a)] = find(b)
    roots = [find(i) for i in range(n)]
    _, lab = np.unique(roots, return_inverse=True)
    return lab


def _share_edge(P: np.ndarray, Q: np.ndarray, tol: float) -> bool:
    sc = tol * 1e3 * (1 + max(np.abs(P).max(), np.abs(Q).max()))
    for i in range(len(P)):
        p1, p2 = P[i], P[(i + 1) % len(P)]
        d = p2 - p1
        L = np.linalg.norm(d)
        if L <= sc:
            continue
        nrm = np.array([-d[1], d[0]]) / L
        on = np.abs((Q - p1) @ nrm) <= sc
        if on.sum() < 2:
            continue
        t = (Q[on] - p1) @ d / L**2
        if min(1.0, t.max()) - max(0.0, t.min()) > sc / L:
            return True
    return False


def partition_2d(
    model: nn.Module,
    origin: object,
    u: object,
    v: object,
    bounds: Sequence[float] | None = (-1.0, 1.0, -1.0, 1.0),
    *,
    tol: float = 1e-9,
    budget: int = 200_000,
) -> Partition2D:
    """The exact partition of the 2D slice ``{origin + z_1 u + z_2 v}`` into activation regions (float64).

    ``bounds = (z1_min, z1_max, z2_min, z2_max)`` restricts it to a box; ``bounds=None`` partitions the whole
    plane (the four quadrant cones, with vertices at infinity) and returns the polygons clipped to a box that
    provably contains every finite vertex of the partition, enlarged by 10%, so that every region meets the
    box and the counts are those of the whole slice. ``budget`` bounds the number of cell cuts (each region
    costs at least one); beyond it :class:`BudgetExceeded` is raised with the cells so far as ``partial``.

    Example
    -------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())  # relu(x1), relu(x2): the two axes split the plane
    >>> _ = net[0].weight.data.copy_(torch.eye(2)), net[0].bias.data.zero_()
    >>> P = partition_2d(net, torch.zeros(2), torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    >>> P.n_regions, P.n_linear_regions, bool(P.verify(n_points=50).loc[0, "ok"])
    (4, 4, True)
    """
    o, uu, vv = (_as_input(a, n) for a, n in ((origin, "origin"), (u, "u"), (v, "v")))
    if not (o.shape == uu.shape == vv.shape):
        raise ShapeError(f"origin, u and v must have one shape, got {tuple(o.shape)}, {tuple(uu.shape)}, "
                         f"{tuple(vv.shape)}")  # fmt: skip
    if torch.linalg.matrix_rank(torch.stack([uu.ravel(), vv.ravel()])) < 2:
        raise ShapeError("u and v must be linearly independent directions")
    cols = torch.stack([uu, vv, o]).numpy()
    if bounds is None:
        e = np.eye(3)
        quads = [np.array([sx * e[0], sy * e[1], e[2]]) for sx in (1, -1) for sy in (1, -1)]
        cells, graph = _propagate(model, cols, quads, tol, budget)
        fin = np.concatenate([V[V[:, 2] > 1e-12 * np.abs(V).max(1)] for V in cells.verts])
        pts = fin[:, :2] / fin[:, 2:3]
        lo, hi = pts.min(0), pts.max(0)
        pad = np.maximum(0.1 * (hi - lo), 1.0)
        box = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
        verts, Hs, pats = [], [], []
        for V, H, p in zip(cells.verts, cells.H, cells.patterns):
            W = _clip_box(V, box, tol)
            if W is not None:
                verts.append(W)
                Hs.append(H)
                pats.append(p)
        n_before = len({_key(p) for p in cells.patterns})
        cells = _Cells(verts, Hs, pats)
        if len({_key(p) for p in pats}) != n_before:
            warn("partition_2d: clipping to the bounding box lost regions (numerical tolerance); "
                 f"the whole-plane count is {n_before}")
        whole = True
    else:
        box = tuple(float(x) for x in bounds)
        if len(box) != 4 or not (box[0] < box[1] and box[2] < box[3]) or not np.isfinite(box).all():
            raise ShapeError(f"bounds must be (z1_min, z1_max, z2_min, z2_max) with min < max, got {bounds!r}")
        cells, graph = _propagate(model, cols, [_box_cone(box)], tol, budget)
        whole = False
    polys = [V[:, :2] / V[:, 2:3] for V in cells.verts]
    keys = [_key(p) for p in cells.patterns]
    _, region = np.unique(keys, return_inverse=True) if keys else (None, np.zeros(0, dtype=int))
    maps = [np.ascontiguousarray(H) for H in cells.H]
    lin = _linear_components(polys, maps, np.asarray(region), tol) if polys else np.zeros(0, dtype=int)
    return Partition2D(model, o.numpy(), uu.numpy(), vv.numpy(), box, polys, cells.patterns, maps,
                       np.asarray(region), lin, whole, graph)  # fmt: skip
