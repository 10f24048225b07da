"""Exact region counts for given weights: a layer's hyperplane arrangement, a segment, a 2D slice.

Everything here is exact for the given float64 weights (no sampling), up to a relative tolerance ``tol``
that decides when a value is zero (a point lies on a hyperplane, two hyperplanes coincide or are parallel).

* :func:`arrangement_regions` -- the number of regions of an affine arrangement ``{x : a_i.x + b_i = 0}`` in
  R^d, by the incremental (deletion-restriction) recursion ``r(A) = 1 + sum_k r(A_{<k} restricted to H_k)``:
  adding hyperplane H_k adds as many regions as the earlier hyperplanes cut H_k into (Zaslavsky 1975).
* :func:`layer_regions` -- the arrangement of one conv or linear layer on a given input shape (its unrolled
  matrix, :func:`relugeom.geometry.unroll.unroll`), to compare with seed 003 Theorem 1.
* :func:`regions_on_segment` and :func:`partition_2d` -- the exact partition of a segment / a 2D slice of
  input space by a Sequential ReLU network (Linear, Conv, ReLU, MaxPool, AvgPool, Flatten, BatchNorm in eval
  mode, Dropout, Identity). An *activation region* is a set of inputs with one activation pattern (ReLU signs
  and max-pool arg-maxes); it is convex. A *linear region* of the segment/slice is a connected union of
  activation regions on which the network restricted to the segment/slice is one affine map (Hanin and
  Rolnick 2019, seed 004).

The propagation works in homogeneous coordinates: a point of the slice ``x = o + z_1 u + z_2 v`` is the ray
``(z_1, z_2, 1)``; a cell is the convex cone of its extreme rays and every pre-activation is a linear form
on it. A cell is cut by a neuron when the form takes both signs at its rays. With ``bounds=None`` the plane
is covered by the four quadrant cones, whose rays may lie at infinity (last coordinate 0), so the whole
plane is partitioned exactly; the box then returned contains every finite vertex of every cell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import BudgetExceeded, ShapeError, UnsupportedLayerError, warn

__all__ = [
    "Partition2D",
    "SegmentRegions",
    "arrangement_regions",
    "layer_regions",
    "partition_2d",
    "regions_on_segment",
]


# ----------------------------------------------------------------------------------------- arrangements
def _normalise(A: np.ndarray, b: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals, a canonical sign, no degenerate rows, no duplicates (within ``tol``)."""
    norms = np.linalg.norm(A, axis=1)
    keep = norms > tol
    A, b = A[keep] / norms[keep, None], b[keep] / norms[keep]
    if len(A) == 0:
        return A, b
    lead = np.argmax(np.abs(A) > tol, axis=1)
    sign = np.sign(A[np.arange(len(A)), lead])
    A, b = A * sign[:, None], b * sign
    n = len(A)
    dA = np.abs(A[:, None, :] - A[None, :, :]).max(axis=2)
    db = np.abs(b[:, None] - b[None, :]) / np.maximum(1.0, np.maximum(np.abs(b)[:, None], np.abs(b)[None, :]))
    same = (dA <= tol * 10) & (db <= tol * 10)
    keep = np.ones(n, dtype=bool)
    for i in range(1, n):
        if same[i, :i][keep[:i]].any():
            keep[i] = False
    return A[keep], b[keep]


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def tick(self, what: str) -> None:
        self.used += 1
        if self.used > self.limit:
            raise BudgetExceeded(f"{what}: more than {self.limit} steps; raise the budget (budget=, --budget), use a "
                                 "smaller input or model, or a smaller box (bounds=, --bounds)",
                                 partial=None)  # fmt: skip


def _count(A: np.ndarray, b: np.ndarray, tol: float, budget: _Budget) -> int:
    budget.tick("arrangement_regions")
    d = A.shape[1]
    if d == 0:
        return 1
    A, b = _normalise(A, b, tol)
    n = len(A)
    if n == 0:
        return 1
    if d == 1:
        return n + 1
    total = 1
    for k in range(n):
        a = A[k]
        # orthonormal basis of the hyperplane's direction space: the last d-1 right singular vectors
        N = np.linalg.svd(a[None, :])[2][1:].T
        x0 = -b[k] * a
        total += _count(A[:k] @ N, A[:k] @ x0 + b[:k], tol, budget)
    return total


def arrangement_regions(A: np.ndarray, b: np.ndarray | None = None, *, tol: float = 1e-9,
                        budget: int = 10**6) -> int:  # fmt: skip
    """Number of regions of the affine arrangement ``{x in R^d : A_i x + b_i = 0}`` (exact, float64).

    Rows are normalised to unit normals; a row with norm <= ``tol`` is no hyperplane and is ignored; rows that
    agree within ``tol`` are one hyperplane. The count is Zaslavsky's, computed by the incremental recursion
    (each new hyperplane adds the number of pieces the earlier ones cut it into). ``budget`` bounds the number
    of recursive steps; beyond it :class:`BudgetExceeded` is raised.
    """
    A = np.asarray(A.toarray() if hasattr(A, "toarray") else A, dtype=np.float64)
    if A.ndim != 2:
        raise ShapeError(f"A must be a matrix (hyperplanes x dimensions), got shape {A.shape}")
    b = np.zeros(A.shape[0]) if b is None else np.asarray(b, dtype=np.float64).ravel()
    if b.shape[0] != A.shape[0]:
        raise ShapeError(f"A has {A.shape[0]} rows but b has {b.shape[0]} entries")
    if not (np.isfinite(A).all() and np.isfinite(b).all()):
        raise ShapeError("A or b contains NaN or inf")
    return _count(A, b, tol, _Budget(budget))


def layer_regions(layer: nn.Module, input_shape: Sequence[int], *, tol: float = 1e-9, budget: int = 10**6) -> int:
    """Regions of the arrangement of one conv/linear layer's neurons on ``input_shape`` (exact, float64).

    This is the number of linear regions of ``x -> relu(layer(x))`` (seed 003's R_{N,theta} for a one-layer
    network). For unpadded convolutions, Theorem 1 (i) of seed 003 (:func:`cnn_max_regions`) is the maximum
    over weights; :func:`relugeom.regions.formulas.cnn_formula_caveat` says when it is not attained.
    """
    from ..geometry.unroll import unroll
    from ..layers import as_affine, check_finite

    aff = as_affine(layer)
    check_finite(aff, "")
    A, b = unroll(layer, input_shape)
    if A.shape[1] > 64:
        raise ShapeError(f"layer {aff.name or type(layer).__name__!r}: input of {A.shape[1]} values is too large "
                         "for an exact arrangement count (at most 64)")  # fmt: skip
    if aff.kind.startswith("conv") and aff.padding in (0, (0,), (0, 0), "valid") and aff.groups == 1:
        from .formulas import cnn_formula_caveat

        k = tuple(aff.weight.shape[2:])
        s = aff.stride[0] if isinstance(aff.stride, tuple) else aff.stride
        note = cnn_formula_caveat(tuple(input_shape), k, s, aff.out_channels)
        if note:
            warn(f"layer {aff.name!r}: {note}")
    return arrangement_regions(A.toarray(), b, tol=tol, budget=budget)


# --------------------------------------------------------------------------------- network propagation
_AFFINE: tuple[type, ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Unflatten,
    nn.Dropout, nn.Identity,
)  # fmt: skip
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d)


def _leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The leaf modules in registration order (nested containers flattened). Containers other than
    nn.Sequential are taken in registration order too; :func:`_prepare` checks the result against the
    model's own forward pass."""
    if isinstance(model, _AFFINE + _MAXPOOL + (nn.ReLU,)):
        return [(prefix, model)]
    children = list(model.named_children())
    if not children:
        raise UnsupportedLayerError(
            f"module {prefix or '(model)'!r} ({type(model).__name__}) is not supported by the exact region "
            "counters (supported: Linear, Conv, ReLU, MaxPool, AvgPool, Flatten, BatchNorm in eval mode, "
            "Dropout, Identity)"
        )
    out = []
    for name, m in children:
        out += _leaves(m, f"{prefix}.{name}" if prefix else name)
    return out


def _prepare(model: nn.Module) -> list[tuple[str, nn.Module]]:
    import copy

    if not isinstance(model, nn.Module):
        raise UnsupportedLayerError(f"expected an nn.Module, got {type(model).__name__}")
    m = copy.deepcopy(model).to(dtype=torch.float64, device="cpu").eval()
    leaves = _leaves(m)
    for name, mod in leaves:
        for pname, p in list(mod.named_parameters()) + list(mod.named_buffers()):
            if p.is_floating_point() and not torch.isfinite(p).all():
                raise UnsupportedLayerError(f"layer {name!r}: {pname} contains NaN or inf")
        if isinstance(mod, _MAXPOOL) and (mod.dilation not in (1, (1, 1)) or mod.ceil_mode):
            raise UnsupportedLayerError(f"layer {name!r}: MaxPool with dilation or ceil_mode is not supported")
    return leaves


def _check_order(model: nn.Module, leaves: list[tuple[str, nn.Module]], x: torch.Tensor) -> None:
    """The leaves applied in order must reproduce ``model(x)`` (else the model's forward is not sequential)."""
    import copy

    ref = copy.deepcopy(model).to(dtype=torch.float64, device="cpu").eval()
    with torch.no_grad():
        want = ref(x[None]).reshape(-1)
        y = x[None]
        for _, mod in leaves:
            if isinstance(mod, nn.Linear) and y.dim() > 2:
                y = y.reshape(1, -1)
            y = mod(y)
    if y.numel() != want.numel() or not torch.allclose(y.reshape(-1), want, rtol=1e-6, atol=1e-8):
        raise UnsupportedLayerError(
            f"{type(model).__name__}: applying its modules in registration order does not reproduce its forward "
            "pass (skip connections or functional ops?); the exact region counters need a sequential network"
        )


def _pool_members(mod: nn.Module, shape: tuple[int, ...]) -> np.ndarray:
    """For a max-pool on inputs of ``shape`` (C, *S): (n_out, window) flat input indices, -1 for padding."""
    idx = torch.arange(math.prod(shape), dtype=torch.float64).reshape(1, *shape) + 1.0
    nd = len(shape) - 1
    k = mod.kernel_size if isinstance(mod.kernel_size, tuple) else (mod.kernel_size,) * nd
    s = mod.stride if isinstance(mod.stride, tuple) else (mod.stride,) * nd
    p = mod.padding if isinstance(mod.padding, tuple) else (mod.padding,) * nd
    if nd == 1:
        x = torch.nn.functional.pad(idx, (p[0], p[0]))
        u = x.unfold(2, k[0], s[0])  # (1, C, Lo, k)
    else:
        x = torch.nn.functional.pad(idx, (p[1], p[1], p[0], p[0]))
        u = x.unfold(2, k[0], s[0]).unfold(3, k[1], s[1])  # (1, C, Ho, Wo, kh, kw)
    u = u.reshape(-1, math.prod(k))
    return (u.numpy().astype(np.int64) - 1)


@dataclass
class _Cells:
    """Cells of the current partition: vertices (homogeneous) and the affine form of the current features."""

    verts: list[np.ndarray]  # each (nv, k+1)
    H: list[np.ndarray]  # each (F, k+1): feature = H @ homogeneous point
    patterns: list[list[np.ndarray]]


def _apply_affine(mod: nn.Module, H: list[np.ndarray], shape: tuple[int, ...]) -> tuple[list[np.ndarray], tuple]:
    k1 = H[0].shape[1]
    if isinstance(mod, nn.Linear) and len(shape) > 1:  # an implicit flatten (torch.flatten in forward)
        shape = (math.prod(shape),)
    X = torch.from_numpy(np.stack([h.T for h in H]).reshape(len(H) * k1, *shape))
    with torch.no_grad():
        Y = mod(X)
        zero = mod(torch.zeros((1, *shape), dtype=torch.float64))
    new_shape = tuple(Y.shape[1:])
    Y = Y.reshape(len(H), k1, -1)
    Y[:, :-1, :] -= zero.reshape(1, 1, -1)  # linear columns carry no bias
    Yn = Y.numpy()
    return [np.ascontiguousarray(Yn[i].T) for i in range(len(H))], new_shape


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


def _relu_step_segment(cells: _Cells, tol: float, budget: _Budget) -> _Cells:
    """1D cells: all roots -alpha/beta of a piece's neurons inside it cut it at once."""
    out = _Cells([], [], [])
    for V, H, pat in zip(cells.verts, cells.H, cells.patterns):
        t0, t1 = sorted((float(V[0, 0]), float(V[1, 0])))
        beta, alpha = H[:, 0], H[:, 1]
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
            act = (alpha + beta * (0.5 * (a + b))) > 0
            out.verts.append(np.array([[a, 1.0], [b, 1.0]]))
            out.H.append(H * act[:, None])
            out.patterns.append(pat + [act])
    return out


def _relu_step(cells: _Cells, tol: float, k: int, budget: _Budget) -> _Cells:
    if k == 1:
        return _relu_step_segment(cells, tol, budget)
    out = _Cells([], [], [])
    for V, H, pat in zip(cells.verts, cells.H, cells.patterns):
        hn = np.linalg.norm(H, axis=1)
        # Cut by the first neuron that changes sign on the piece, then each half only by the neurons that
        # change sign on it (one mat-mul per piece): work ~ pieces x candidates, not pieces x neurons calls.
        parts = []
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
                parts.append(P)
                continue
            budget.tick("region partition")
            stack += [(r[0][0], cand[1:]), (r[1][0], cand[1:])]
        for P in parts:
            act = (H @ _interior(P)) > 0
            out.verts.append(P)
            out.H.append(H * act[:, None])
            out.patterns.append(pat + [act])
    return out


def _maxpool_step(cells: _Cells, members: np.ndarray, tol: float, k: int, budget: _Budget) -> _Cells:
    out = _Cells([], [], [])
    valid = members >= 0
    safe = np.where(valid, members, 0)
    todo = list(zip(cells.verts, cells.H, cells.patterns))
    while todo:
        V, H, pat = todo.pop()
        c = _interior(V)
        vals = np.where(valid, (H @ c)[safe], -np.inf)
        sel = np.argmax(vals, axis=1)
        chosen = safe[np.arange(len(safe)), sel]
        Hs = H[chosen]  # (n_out, k+1)
        cut_done = False
        # any window member that exceeds the chosen one at some vertex of the cell cuts the cell
        for w in range(members.shape[1]):
            D = H[safe[:, w]] - Hs
            S = D @ V.T
            sc = tol * (np.linalg.norm(H[safe[:, w]], axis=1) + np.linalg.norm(Hs, axis=1)) * np.abs(V).max()
            bad = np.nonzero(valid[:, w] & (S > sc[:, None]).any(1) & (S < -sc[:, None]).any(1))[0]
            if len(bad):
                r = _split(V, D[bad[0]], tol, k)
                if r is not None:
                    budget.tick("region partition")
                    todo += [(r[0][0], H, pat), (r[1][0], H, pat)]
                    cut_done = True
                    break
        if not cut_done:
            out.verts.append(V)
            out.H.append(Hs.copy())
            out.patterns.append(pat + [sel.astype(np.int64)])
    return out


def _propagate(model: nn.Module, columns: np.ndarray, cells_v: list[np.ndarray], tol: float,
               budget: int) -> tuple[_Cells, list[tuple[str, nn.Module]]]:  # fmt: skip
    """``columns``: (k+1, *input_shape), the slice's direction(s) then its origin."""
    leaves = _prepare(model)
    k = columns.shape[0] - 1
    shape = tuple(columns.shape[1:])
    try:
        _check_order(model, leaves, torch.from_numpy(columns[-1]))
    except RuntimeError as e:
        raise ShapeError(f"{type(model).__name__} does not take inputs of shape {shape}: {e}") from None
    H0 = np.ascontiguousarray(columns.reshape(k + 1, -1).T.astype(np.float64))
    cells = _Cells(list(cells_v), [H0] * len(cells_v), [[] for _ in cells_v])
    bud = _Budget(budget)
    for name, mod in leaves:
        try:
            if isinstance(mod, nn.ReLU):
                cells = _relu_step(cells, tol, k, bud)
            elif isinstance(mod, _MAXPOOL):
                members = _pool_members(mod, shape)
                cells = _maxpool_step(cells, members, tol, k, bud)
                with torch.no_grad():
                    shape = tuple(mod(torch.zeros((1, *shape), dtype=torch.float64)).shape[1:])
            else:
                cells.H, shape = _apply_affine(mod, cells.H, shape)
        except BudgetExceeded as e:
            raise BudgetExceeded(f"{e} (at layer {name!r}, {len(cells.verts)} pieces so far)",
                                 partial=cells) from None  # fmt: skip
        except RuntimeError as e:
            raise ShapeError(f"layer {name!r} ({type(mod).__name__}) does not fit its input of shape {shape}: {e}") \
                from None
    return cells, leaves


def _key(pattern: list[np.ndarray]) -> bytes:
    return b"|".join(np.asarray(p).tobytes() for p in pattern)


def _forward_record(leaves: list[tuple[str, nn.Module]], X: torch.Tensor) -> tuple[torch.Tensor, list[np.ndarray],
                                                                                   np.ndarray]:  # fmt: skip
    """Forward pass recording, per point, the activation pattern and the smallest |pre-activation| margin."""
    pats: list[np.ndarray] = []
    margin = torch.full((X.shape[0],), float("inf"), dtype=torch.float64)
    with torch.no_grad():
        for _, mod in leaves:
            if isinstance(mod, nn.ReLU):
                pats.append((X > 0).reshape(X.shape[0], -1).numpy())
                margin = torch.minimum(margin, X.abs().reshape(X.shape[0], -1).min(1).values)
                X = mod(X)
            elif isinstance(mod, _MAXPOOL):
                shape = tuple(X.shape[1:])
                members = _pool_members(mod, shape)
                valid = torch.from_numpy(members >= 0)
                flat = X.reshape(X.shape[0], -1)
                vals = torch.where(valid, flat[:, torch.from_numpy(np.where(members >= 0, members, 0))],
                                   torch.tensor(-math.inf, dtype=torch.float64))  # fmt: skip
                top2 = vals.topk(2, dim=2).values if vals.shape[2] > 1 else None
                pats.append(vals.argmax(2).numpy())
                if top2 is not None:
                    margin = torch.minimum(margin, (top2[..., 0] - top2[..., 1]).reshape(X.shape[0], -1).min(1).values)
                X = mod(X)
            else:
                if isinstance(mod, nn.Linear) and X.dim() > 2:
                    X = X.reshape(X.shape[0], -1)
                X = mod(X)
    return X.reshape(X.shape[0], -1), pats, margin.numpy()


# ---------------------------------------------------------------------------------------------- segment
@dataclass
class SegmentRegions:
    """The exact partition of the segment ``x(t) = x0 + t (x1 - x0)``, t in [0, 1].

    ``breakpoints``: the t in (0, 1) where the activation pattern changes, increasing. ``pieces``: one row per
    activation region (t_start, t_end, linear_region id, the output's value and slope along the segment).
    """

    breakpoints: np.ndarray
    n_activation_regions: int
    n_linear_regions: int
    pieces: pd.DataFrame
    exact: bool = True


def _as_input(x: object, name: str) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise ShapeError(f"{name} contains NaN or inf")
    return t


def regions_on_segment(model: nn.Module, x0: object, x1: object, *, tol: float = 1e-9,
                       budget: int = 10**6) -> SegmentRegions:  # fmt: skip
    """Every breakpoint of a Sequential ReLU network along the segment from ``x0`` to ``x1`` (exact, float64).

    ``x0``/``x1`` have the network's input shape without the batch dimension. Adjacent pieces with the same
    activation pattern are one activation region; adjacent activation regions on which the network restricted
    to the segment is the same affine function of t (within ``tol``) are one linear region.
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


# ---------------------------------------------------------------------------------------------- 2D slice
@dataclass
class Partition2D:
    """The exact partition of the slice ``x = origin + z_1 u + z_2 v``, ``z`` in ``bounds``.

    ``polygons[i]``: (m, 2) vertices in slice coordinates, counter-clockwise or clockwise; ``patterns[i]``: the
    activation pattern (list of arrays, one per ReLU / max-pool layer); ``maps[i]``: (n_out, 3) with the
    output ``= maps[i][:, :2] @ z + maps[i][:, 2]`` on the polygon. Several polygons may share a pattern
    (when ``bounds=None`` the plane is first split into quadrants); ``region[i]`` numbers the activation
    regions, ``linear_region[i]`` the linear regions of the slice.
    """

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
    leaves: list = field(repr=False, default_factory=list)

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
        out, pats, margin = _forward_record(self.leaves, self.points(z))
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
    for group in keys.values():
        for a_i, a in enumerate(group):
            for b in group[a_i + 1:]:
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
        cells, leaves = _propagate(model, cols, quads, tol, budget)
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
        cells, leaves = _propagate(model, cols, [_box_cone(box)], tol, budget)
        whole = False
    polys = [V[:, :2] / V[:, 2:3] for V in cells.verts]
    keys = [_key(p) for p in cells.patterns]
    _, region = np.unique(keys, return_inverse=True) if keys else (None, np.zeros(0, dtype=int))
    maps = [np.ascontiguousarray(H) for H in cells.H]
    lin = _linear_components(polys, maps, np.asarray(region), tol) if polys else np.zeros(0, dtype=int)
    return Partition2D(model, o.numpy(), uu.numpy(), vv.numpy(), box, polys, cells.patterns, maps,
                       np.asarray(region), lin, whole, leaves)  # fmt: skip

