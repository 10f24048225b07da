"""The cell machinery behind the exact segment and slice partitions (float64, homogeneous coordinates).

The propagation works in homogeneous coordinates: a point of the slice ``x = o + z_1 u + z_2 v`` is the ray
``(z_1, z_2, 1)``; a cell is the convex cone of its extreme rays. On a cell every node of the network's graph
(:mod:`relugeom.graph`) has a value that is an affine map of the cell's coordinates, kept as ``k + 1`` columns
(the slopes, then the offset). The graph is walked in order and each node's rule (:mod:`relugeom.modules`) says
how: affine nodes (layers, batch norms, poolings by averages, reshapes, residual additions, concatenations) map
the columns, the offset removed from the slope columns; activation nodes (ReLU, leaky ReLU, PReLU) cut a cell
where a feature changes sign and scale each feature by its slope on each part; max-pool nodes cut a cell where
the arg-max of a window changes and select the winner. Residual networks need nothing more: an addition sums
two affine maps of the same coordinates. A cell is cut by a neuron when the form takes both signs at its rays.
Cells are walked in batches of bounded memory (depth first), so wide networks fit.

With ``bounds=None`` the plane is covered by the four quadrant cones, whose rays may lie at infinity (last
coordinate 0), so the whole plane is partitioned exactly; the box then returned contains every finite vertex
of every cell.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._progress import progress_bar
from ..errors import BudgetExceeded, ShapeError, UnsupportedLayerError
from ..graph import Graph, Node, copied, walk
from ._budget import Budget

ANALYSIS = "the exact region counters"
_CHUNK = 1 << 23  # float64 entries of the live values of one batch of cells (64 MiB)


def _prepare(model: nn.Module, x: torch.Tensor | None = None) -> Graph:
    """The graph of a float64, CPU, eval-mode copy of ``model``, every operation checked against the registry.

    ``x`` (one input, without the batch axis) is needed only when the model cannot be traced with torch.fx.
    """
    if not isinstance(model, nn.Module):
        raise UnsupportedLayerError(f"expected an nn.Module, got {type(model).__name__}")
    m = copied(model, copy.deepcopy(model).to(dtype=torch.float64, device="cpu").eval().requires_grad_(False))
    for pname, p in list(m.named_parameters()) + list(m.named_buffers()):
        if p.is_floating_point() and p.numel() and not (torch.isfinite(p.sum()) or torch.isfinite(p).all()):
            layer, _, what = pname.rpartition(".")
            raise UnsupportedLayerError(f"layer {layer!r}: {what} contains NaN or inf")
    try:
        graph = walk(m, None if x is None else x[None])
    except RuntimeError as e:
        raise ShapeError(f"{type(model).__name__} does not take inputs of shape {tuple(x.shape)}: {e}") from None
    varying = graph.descendants([graph.input])
    graph.require(ANALYSIS, [n for n in graph.operations if n in varying])
    if graph.output.args and not isinstance(graph.output.args[0], Node):
        raise UnsupportedLayerError(f"{ANALYSIS}: {type(model).__name__} must return one tensor")
    return graph


@dataclass
class _Cells:
    """Cells of a partition: vertices (homogeneous) and the affine form of the network's output on each."""

    verts: list[np.ndarray]  # each (nv, k+1)
    H: list[np.ndarray]  # each (F, k+1): output = H @ homogeneous point
    patterns: list[list[np.ndarray]]


def _split_segment(V: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    (t0, _), (t1, _) = V
    tc = t0 + (t1 - t0) * s[0] / (s[0] - s[1])
    a, b = np.array([[t0, 1.0], [tc, 1.0]]), np.array([[tc, 1.0], [t1, 1.0]])
    return (a, b) if s[0] > 0 else (b, a)


def _split_cone(V: np.ndarray, s: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = [], []
    m = len(V)
    for i in range(m):
        j = (i + 1) % m
        si, sj = s[i], s[j]
        if si >= -tol:
            pos.append(V[i])
        if si <= tol:
            neg.append(V[i])
        if (si > tol and sj < -tol) or (si < -tol and sj > tol):
            r = abs(si) * V[j] + abs(sj) * V[i]
            r = r / np.linalg.norm(r)
            pos.append(r)
            neg.append(r)
    return np.array(pos), np.array(neg)


def _split(V: np.ndarray, g: np.ndarray, tol: float, k: int) -> list[tuple[np.ndarray, int]] | None:
    """Cut cell ``V`` by the linear form ``g``; None if it does not change sign; else [(part, sign), ...]."""
    s = V @ g
    t = tol * np.linalg.norm(g) * np.abs(V).max()
    if not ((s > t).any() and (s < -t).any()):
        return None
    a, b = _split_segment(V, s) if k == 1 else _split_cone(V, s, t)
    return [(a, 1), (b, -1)]


def _interior(V: np.ndarray) -> np.ndarray:
    return V.mean(axis=0)


def _segment_cuts(verts: list[np.ndarray], Hs: np.ndarray, tol: float, budget: Budget
                  ) -> tuple[list[np.ndarray], list[int]]:  # fmt: skip
    """1D cells: all roots -alpha/beta of a piece's neurons inside it cut it at once. ``Hs``: (n, F, 2)."""
    new_verts, parents = [], []
    for i, V in enumerate(verts):
        t0, t1 = sorted((float(V[0, 0]), float(V[1, 0])))
        beta, alpha = Hs[i, :, 0], Hs[i, :, 1]
        eps = tol * max(1.0, abs(t0), abs(t1))
        with np.errstate(divide="ignore", invalid="ignore"):
            roots = -alpha / beta
        # a neuron cuts the piece when its values at the two ends have strictly opposite signs
        v0, v1 = alpha + beta * t0, alpha + beta * t1
        sc = tol * np.sqrt(alpha**2 + beta**2) * max(1.0, abs(t0), abs(t1))
        cutting = ((v0 > sc) & (v1 < -sc)) | ((v0 < -sc) & (v1 > sc))
        cuts = np.unique(roots[cutting])
        pts = [t0]
        for c in cuts:
            if c - pts[-1] > eps and t1 - c > eps:
                pts.append(float(c))
                budget.tick("region partition")
        pts.append(t1)
        for a, b in zip(pts[:-1], pts[1:]):
            new_verts.append(np.array([[a, 1.0], [b, 1.0]]))
            parents.append(i)
    return new_verts, parents


def _sign_cuts(verts: list[np.ndarray], Hs: np.ndarray, tol: float, k: int, budget: Budget
               ) -> tuple[list[np.ndarray], list[int]]:  # fmt: skip
    """Cut every cell by every feature that changes sign on it. ``Hs``: (n, F, k+1)."""
    if k == 1:
        return _segment_cuts(verts, Hs, tol, budget)
    new_verts, parents = [], []
    for i, V in enumerate(verts):
        H = Hs[i]
        hn = np.linalg.norm(H, axis=1)
        # Cut by the first neuron that changes sign on the piece, then each half only by the neurons that
        # change sign on it (one mat-mul per piece): work ~ pieces x candidates, not pieces x neurons calls.
        stack = [(V, np.arange(len(H)))]
        while stack:
            P, cand = stack.pop()
            S = H[cand] @ P.T
            scale = tol * hn[cand] * np.abs(P).max()
            cand = cand[(S > scale[:, None]).any(1) & (S < -scale[:, None]).any(1)]
            r = None
            while len(cand) and r is None:
                r = _split(P, H[cand[0]], tol, k)
                if r is None:  # within tolerance after all: drop the candidate
                    cand = cand[1:]
            if r is None:
                new_verts.append(P)
                parents.append(i)
                continue
            budget.tick("region partition")
            stack += [(r[0][0], cand[1:]), (r[1][0], cand[1:])]
    return new_verts, parents


def _segment_max_cuts(verts: list[np.ndarray], Hs: np.ndarray, members: np.ndarray, tol: float, budget: Budget
                      ) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:  # fmt: skip
    """1D cells: every window's upper envelope of lines ``a + b t`` over the piece, all windows at once.

    Moving right from the piece's start, the largest member of a window is overtaken first by the member with a
    larger slope whose line crosses it earliest; at most ``window`` such steps per window give every break."""
    new_verts, parents, sels = [], [], []
    valid = members >= 0
    safe = np.where(valid, members, 0)
    rows = np.arange(len(members))
    for i, V in enumerate(verts):
        t0, t1 = sorted((float(V[0, 0]), float(V[1, 0])))
        eps = tol * max(1.0, abs(t0), abs(t1))
        b, a = Hs[i, :, 0][safe], Hs[i, :, 1][safe]  # slopes and offsets, (n_out, window)
        scale = tol * (np.abs(a) + np.abs(b) * max(1.0, abs(t0), abs(t1))).max(initial=0.0)
        v0 = np.where(valid, a + b * t0, -np.inf)
        top = v0.max(1, keepdims=True)
        cur = np.argmax(np.where(v0 >= top - scale, b, -np.inf), axis=1)  # the winner just right of t0
        cur_t = np.full(len(members), t0)
        live = np.ones(len(members), dtype=bool)
        cuts = []
        for _ in range(members.shape[1]):
            bc, ac = b[rows, cur], a[rows, cur]
            db = b - bc[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                tc = np.where(valid & (db > 0), (ac[:, None] - a) / db, np.inf)
            tc = np.where(tc > cur_t[:, None] + eps, tc, np.inf)
            nxt = tc.min(1)
            live &= nxt < t1 - eps
            if not live.any():
                break
            cuts.append(nxt[live])
            tied = tc <= nxt[:, None] + eps
            cur = np.where(live, np.argmax(np.where(tied, b, -np.inf), axis=1), cur)
            cur_t = np.where(live, nxt, cur_t)
        pts = [t0]
        for c in np.unique(np.concatenate(cuts)) if cuts else []:
            if c - pts[-1] > eps and t1 - c > eps:
                pts.append(float(c))
                budget.tick("region partition")
        pts.append(t1)
        for lo, hi in zip(pts[:-1], pts[1:]):
            mid = 0.5 * (lo + hi)
            new_verts.append(np.array([[lo, 1.0], [hi, 1.0]]))
            parents.append(i)
            sels.append(np.argmax(np.where(valid, a + b * mid, -np.inf), axis=1).astype(np.int64))
    return new_verts, parents, sels


def _max_cuts(verts: list[np.ndarray], Hs: np.ndarray, members: np.ndarray, tol: float, k: int, budget: Budget
              ) -> tuple[list[np.ndarray], list[int], list[np.ndarray]]:  # fmt: skip
    """Cut every cell until one member of every window is the largest on it; returns the arg-max per window."""
    if k == 1:
        return _segment_max_cuts(verts, Hs, members, tol, budget)
    new_verts, parents, sels = [], [], []
    valid = members >= 0
    safe = np.where(valid, members, 0)
    todo = [(V, i) for i, V in enumerate(verts)]
    while todo:
        V, i = todo.pop()
        H = Hs[i]
        c = _interior(V)
        vals = np.where(valid, (H @ c)[safe], -np.inf)
        sel = np.argmax(vals, axis=1)
        Hs_ = H[safe[np.arange(len(safe)), sel]]  # (n_out, k+1)
        cut_done = False
        # any window member that exceeds the chosen one at some vertex of the cell cuts the cell
        for w in range(members.shape[1]):
            D = H[safe[:, w]] - Hs_
            S = D @ V.T
            sc = tol * (np.linalg.norm(H[safe[:, w]], axis=1) + np.linalg.norm(Hs_, axis=1)) * np.abs(V).max()
            bad = np.nonzero(valid[:, w] & (S > sc[:, None]).any(1) & (S < -sc[:, None]).any(1))[0]
            if len(bad):
                r = _split(V, D[bad[0]], tol, k)
                if r is not None:
                    budget.tick("region partition")
                    todo += [(r[0][0], i), (r[1][0], i)]
                    cut_done = True
                    break
        if not cut_done:
            new_verts.append(V)
            parents.append(i)
            sels.append(sel.astype(np.int64))
    return new_verts, parents, sels


@dataclass
class _Batch:
    """Cells walked together from node ``pos`` on: their vertices, patterns and the live nodes' values
    (tensors (n, k+1, *shape): the slope columns, then the offset; sizes for shape queries)."""

    pos: int
    verts: list[np.ndarray]
    patterns: list[list[np.ndarray]]
    values: dict[Node, Any] = field(default_factory=dict)


class _Propagation:
    """One walk of a graph's nodes over cells (see the module docstring)."""

    def __init__(self, graph: Graph, k: int, tol: float, budget: int) -> None:
        self.graph, self.k, self.tol, self.budget = graph, k, tol, Budget(budget)
        self.varying = graph.descendants([graph.input])
        self.last = graph.last_use
        self.consts: dict[Node, Any] = {}
        self.offsets: dict[Node, torch.Tensor] = {}
        self.windows: dict[Node, tuple[np.ndarray, tuple[int, ...]]] = {}
        self.done = _Cells([], [], [])

    def run(self, columns: np.ndarray, cells_v: list[np.ndarray]) -> _Cells:
        cols = torch.from_numpy(np.ascontiguousarray(columns, dtype=np.float64))
        first = _Batch(0, list(cells_v), [[] for _ in cells_v],
                       {self.graph.input: cols[None].expand(len(cells_v), *cols.shape)})  # fmt: skip
        stack = [first]
        self.bar = progress_bar(len(self.graph.nodes), desc="regions: layers", delay=1.0)
        try:
            while stack:
                b = stack.pop()
                self._walk_one(b, stack)
        finally:
            self.bar.close()
        return self.done

    def _walk_one(self, b: _Batch, stack: list[_Batch]) -> None:
        try:
            self._walk(b, stack)
        except BudgetExceeded as e:
            node = self.graph.nodes[min(b.pos, len(self.graph.nodes) - 1)]
            raise BudgetExceeded(f"{e} (at {node.label}, {len(self.done.verts)} pieces finished, "
                                 f"{len(b.verts) + sum(len(s.verts) for s in stack)} pending)",
                                 partial=self.done) from None  # fmt: skip

    def _arg(self, b: _Batch, a: Any) -> Any:
        """A node's value as an operation reads it: varying tensors flattened to (n (k+1), *shape)."""
        if a in self.consts:
            return self.consts[a]
        v = b.values[a]
        return v.reshape(-1, *v.shape[2:]) if isinstance(v, torch.Tensor) else v

    def _walk(self, b: _Batch, stack: list[_Batch]) -> None:
        nodes = self.graph.nodes
        while b.pos < len(nodes):
            node = nodes[b.pos]
            if node.op == "output":
                self._finish(b, node)
                return
            if node not in self.varying:
                if node not in self.consts:
                    self.consts[node] = self.graph.compute(node, self.consts)
                b.pos += 1
                continue
            if node.op != "input":
                rule = node.rule
                assert rule is not None  # _prepare required every varying operation to have a rule
                try:
                    if rule.role == "activation":
                        self._activation(b, node)
                    elif rule.role == "max":
                        self._max(b, node)
                    else:
                        self._affine(b, node)
                except RuntimeError as e:
                    shape = self._shape_of(b, node.inputs[0]) if node.inputs else None
                    raise ShapeError(f"{node.label} does not fit its input of shape {shape}: "
                                     f"{str(e).splitlines()[0]}") from None  # fmt: skip
            for i in (*node.inputs, node):
                if self.last[i] <= node.index:
                    b.values.pop(i, None)
            b.pos += 1
            if b.pos > self.bar.n:  # the deepest node any batch has reached
                self.bar.update(b.pos - self.bar.n)
            if node.rule is not None and node.rule.role in ("activation", "max"):
                self._chunk(b, stack)

    def _shape_of(self, b: _Batch, node: Node) -> tuple[int, ...] | None:
        v = b.values.get(node)
        return tuple(v.shape[2:]) if isinstance(v, torch.Tensor) else None

    def _chunk(self, b: _Batch, stack: list[_Batch]) -> None:
        per_cell = sum(v[0].numel() for v in b.values.values() if isinstance(v, torch.Tensor))
        size = max(1, _CHUNK // max(per_cell, 1))
        n = len(b.verts)
        if n <= size:
            return
        for start in range(size, n, size):
            sl = slice(start, start + size)
            stack.append(_Batch(b.pos, b.verts[sl], b.patterns[sl],
                                {k: (v[sl] if isinstance(v, torch.Tensor) else v) for k, v in b.values.items()}))
        b.verts, b.patterns = b.verts[:size], b.patterns[:size]
        b.values = {k: (v[:size] if isinstance(v, torch.Tensor) else v) for k, v in b.values.items()}

    def _affine(self, b: _Batch, node: Node) -> None:
        n, k1 = len(b.verts), self.k + 1
        args, kwargs = node.bind(_Reader(self, b))
        y = node.rule.forward(node, args, kwargs)  # type: ignore[union-attr]
        if not isinstance(y, torch.Tensor):  # a size
            b.values[node] = y
            return
        if y.dim() == 0 or y.shape[0] != n * k1:
            raise UnsupportedLayerError(f"{ANALYSIS}: {node.label} changes the batch dimension "
                                        f"({n * k1} in, {tuple(y.shape)} out)")  # fmt: skip
        if not node.rule.bias_free:  # type: ignore[union-attr]
            shared = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
            if y.untyped_storage().data_ptr() in shared:  # the operation returned (a view of) its input
                y = y.clone()
            y = y.reshape(n, k1, *y.shape[1:])
            y[:, : self.k] -= self._offset(b, node)
        else:
            y = y.reshape(n, k1, *y.shape[1:])
        b.values[node] = y

    def _offset(self, b: _Batch, node: Node) -> torch.Tensor:
        """The node's value on zero inputs (its affine offset), removed from the slope columns."""
        if node in self.offsets:
            return self.offsets[node]
        sized = any(not isinstance(b.values.get(i), torch.Tensor) for i in node.inputs if i in self.varying)
        zeros = {}
        for i in node.inputs:
            if i in self.varying:
                v = b.values[i]
                zeros[i] = torch.zeros((1, *v.shape[2:]), dtype=torch.float64) if isinstance(v, torch.Tensor) else v
            else:
                zeros[i] = self.consts[i]
        if sized:  # the operation reads sizes of the batch: evaluate it on a zero batch of the same size
            zeros = {i: (torch.zeros_like(self._arg(b, i)) if isinstance(self._arg(b, i), torch.Tensor) else
                         self._arg(b, i)) for i in node.inputs}  # fmt: skip
        args, kwargs = node.bind(zeros)
        out = node.rule.forward(node, args, kwargs)[:1]  # type: ignore[union-attr]
        if not sized:
            self.offsets[node] = out
        return out

    def _forms(self, b: _Batch, node: Node) -> tuple[np.ndarray, tuple[int, ...]]:
        src = node.inputs[0]
        v = b.values[src]
        if not isinstance(v, torch.Tensor):
            raise UnsupportedLayerError(f"{ANALYSIS}: {node.label} does not read a tensor")
        shape = tuple(v.shape[2:])
        n = v.shape[0]
        return v.reshape(n, self.k + 1, -1).transpose(1, 2).numpy(), shape  # (n, F, k+1), a view

    def _regather(self, b: _Batch, parents: list[int], verts: list[np.ndarray]) -> torch.Tensor:
        idx = torch.as_tensor(parents, dtype=torch.long)
        for key, v in list(b.values.items()):
            if isinstance(v, torch.Tensor):
                b.values[key] = v.index_select(0, idx)
        b.verts = verts
        b.patterns = [b.patterns[p] for p in parents]
        return idx

    def _activation(self, b: _Batch, node: Node) -> None:
        Hs, shape = self._forms(b, node)
        verts, parents = _sign_cuts(b.verts, Hs, self.tol, self.k, self.budget)
        acts = [(Hs[p] @ _interior(V)) > 0 for V, p in zip(verts, parents)]
        self._regather(b, parents, verts)
        x = b.values[node.inputs[0]]
        act = torch.from_numpy(np.stack(acts)) if acts else torch.zeros((0, math.prod(shape)), dtype=torch.bool)
        slope = node.rule.negative_slope(node, shape)  # type: ignore[union-attr]
        neg = torch.as_tensor(np.array(np.broadcast_to(slope, (math.prod(shape),)), dtype=np.float64))
        gain = torch.where(act, torch.ones((), dtype=torch.float64), neg)  # (n, F)
        b.values[node] = x * gain.reshape(len(verts), 1, *shape)
        b.patterns = [p + [a] for p, a in zip(b.patterns, acts)]

    def _max(self, b: _Batch, node: Node) -> None:
        Hs, shape = self._forms(b, node)
        if node not in self.windows:
            members = node.rule.windows(node, shape)  # type: ignore[union-attr]
            probe = torch.zeros((1, *shape), dtype=torch.float64)
            args, kwargs = node.bind({**{i: probe for i in node.inputs}})
            out_shape = tuple(node.rule.forward(node, args, kwargs).shape[1:])  # type: ignore[union-attr]
            if math.prod(out_shape) != len(members):
                raise UnsupportedLayerError(f"{ANALYSIS}: {node.label}: {len(members)} windows for an output of "
                                            f"shape {out_shape}")  # fmt: skip
            self.windows[node] = (members, out_shape)
        members, out_shape = self.windows[node]
        verts, parents, sels = _max_cuts(b.verts, Hs, members, self.tol, self.k, self.budget)
        safe = np.where(members >= 0, members, 0)
        self._regather(b, parents, verts)
        x = b.values[node.inputs[0]].reshape(len(verts), self.k + 1, -1)
        chosen = torch.from_numpy(np.stack([safe[np.arange(len(safe)), s] for s in sels])) if sels else \
            torch.zeros((0, len(members)), dtype=torch.long)  # fmt: skip
        y = torch.gather(x, 2, chosen[:, None, :].expand(-1, self.k + 1, -1))
        b.values[node] = y.reshape(len(verts), self.k + 1, *out_shape)
        b.patterns = [p + [s] for p, s in zip(b.patterns, sels)]

    def _finish(self, b: _Batch, node: Node) -> None:
        src = node.inputs[0] if node.inputs else None
        v = b.values.get(src) if src is not None else None
        if not isinstance(v, torch.Tensor):
            raise UnsupportedLayerError(f"{ANALYSIS}: the model's output does not depend on its input as one tensor")
        H = v.reshape(len(b.verts), self.k + 1, -1).transpose(1, 2).numpy()
        self.done.verts += b.verts
        self.done.H += [np.ascontiguousarray(h) for h in H]
        self.done.patterns += b.patterns


class _Reader(dict):
    """Node values as an operation of one batch reads them (see :meth:`_Propagation._arg`)."""

    def __init__(self, prop: _Propagation, b: _Batch) -> None:
        super().__init__()
        self.prop, self.b = prop, b

    def __getitem__(self, node: Node) -> Any:
        return self.prop._arg(self.b, node)


def _propagate(model: nn.Module, columns: np.ndarray, cells_v: list[np.ndarray], tol: float,
               budget: int) -> tuple[_Cells, Graph]:  # fmt: skip
    """``columns``: (k+1, *input_shape), the slice's direction(s) then its origin."""
    k = columns.shape[0] - 1
    graph = _prepare(model, torch.from_numpy(np.ascontiguousarray(columns[-1])))
    return _Propagation(graph, k, tol, budget).run(columns, cells_v), graph


def _key(pattern: list[np.ndarray]) -> bytes:
    return b"|".join(np.asarray(p).tobytes() for p in pattern)


def _forward_record(graph: Graph, X: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray], np.ndarray]:
    """Forward pass recording, per point, the activation pattern (the sign of every input of every activation
    node, the arg-max of every max-pool window) and the smallest margin (|pre-activation|, or the gap between
    the two largest entries of a window)."""
    pats: list[np.ndarray] = []
    margin = torch.full((X.shape[0],), float("inf"), dtype=torch.float64)
    windows: dict[Node, np.ndarray] = {}

    def hook(node: Node, args: list[Any], kwargs: dict[str, Any]) -> None:
        nonlocal margin
        role = node.rule.role if node.rule is not None else None
        if role == "activation":
            x = args[0]
            pats.append((x > 0).reshape(x.shape[0], -1).numpy())
            margin = torch.minimum(margin, x.abs().reshape(x.shape[0], -1).min(1).values)
        elif role == "max":
            x = args[0]
            shape = tuple(x.shape[1:])
            if node not in windows:
                windows[node] = node.rule.windows(node, shape)  # type: ignore[union-attr]
            members = windows[node]
            valid = torch.from_numpy(members >= 0)
            flat = x.reshape(x.shape[0], -1)
            vals = torch.where(valid, flat[:, torch.from_numpy(np.where(members >= 0, members, 0))],
                               torch.tensor(-math.inf, dtype=torch.float64))  # fmt: skip
            pats.append(vals.argmax(2).numpy())
            if vals.shape[2] > 1:
                top2 = vals.topk(2, dim=2).values
                gap = (top2[..., 0] - top2[..., 1]).reshape(x.shape[0], -1)
                margin = torch.minimum(margin, torch.nan_to_num(gap, posinf=math.inf).min(1).values)
        return None

    with torch.no_grad():
        out = graph.run(X.to(torch.float64), hook=hook)
    return out.reshape(X.shape[0], -1), pats, margin.numpy()


def _as_input(x: object, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)  # the cells are numpy: points on a GPU come over
    if not torch.isfinite(t).all():
        raise ShapeError(f"{name} contains NaN or inf")
    return t
