"""The cell machinery behind the exact segment and slice partitions (float64, homogeneous coordinates).

The propagation works in homogeneous coordinates: a point of the slice ``x = o + z_1 u + z_2 v`` is the ray
``(z_1, z_2, 1)``; a cell is the convex cone of its extreme rays and every pre-activation is a linear form
on it. A cell is cut by a neuron when the form takes both signs at its rays. With ``bounds=None`` the plane
is covered by the four quadrant cones, whose rays may lie at infinity (last coordinate 0), so the whole
plane is partitioned exactly; the box then returned contains every finite vertex of every cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import BudgetExceeded, ShapeError, UnsupportedLayerError
from ._budget import Budget

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


def _relu_step_segment(cells: _Cells, tol: float, budget: Budget) -> _Cells:
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


def _relu_step(cells: _Cells, tol: float, k: int, budget: Budget) -> _Cells:
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


def _maxpool_step(cells: _Cells, members: np.ndarray, tol: float, k: int, budget: Budget) -> _Cells:
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
    bud = Budget(budget)
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


def _as_input(x: object, name: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)  # the cells are numpy: points on a GPU come over
    if not torch.isfinite(t).all():
        raise ShapeError(f"{name} contains NaN or inf")
    return t
