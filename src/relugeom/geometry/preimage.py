"""Preimages of ReLU layer outputs, the dual basis, and nested cones (Carlsson 2019, secs. 2-5).

For ``y = relu(W x + b)`` and an input domain (the non-negative orthant by default, or all of R^d)::

    P(y) = {x : w_j.x + b_j = y_j (y_j > 0);  w_i.x + b_i <= 0 (y_i = 0);  x in domain}   (Carlsson 2019, eq. 9)

an H-polyhedron (:class:`~relugeom.geometry.polyhedron.Polyhedron`, float64). Emptiness,
dimension and sampling are linear programs solved by scipy's HiGHS. Through a stack of layers the
preimage is a union of polyhedra, one per feasible activation pattern of the earlier layers
(:func:`preimage_through`, enumerated depth-first with an LP relaxation that prunes infeasible partial
patterns, under a budget).

The dual basis (Carlsson 2019, sec. 3, eqs. 10-15) of d hyperplanes in general position in R^d: ``e_i`` spans
the line where all planes but i meet, oriented to the negative side of plane i; with W invertible,
``e_i = -W^{-1}[:, i] / ||W^{-1}[:, i]||``. Then ``P(y) = {x* + sum_{i: y_i = 0} a_i e_i : a_i >= 0} ∩ domain``
with ``x* = W^{-1}(y - b)`` (eqs. 14-15).

Nesting (Carlsson 2019, sec. 5): in the input space of layer b, whose data are the ReLU outputs of layer a
(the non-negative orthant, the cone of the coordinate planes ``x_i = 0``), plane i of b paired with coordinate i.

* :func:`complete_nesting` -- the paper's definition through the dual basis: for every set I of planes, every
  point z of the coordinate face ``O_I = {z >= 0, z_I = 0}`` lies in the positive span ``x + S+(e_i : i in I)``
  of the dual vectors of I from a point x of the intersection subset ``M_I`` (z's output then vanishes on I:
  contraction). In dual coordinates ``beta = E^{-1} (z - apex)`` this reads ``beta_I(z) >= 0`` on ``O_I``,
  checked by linear programs (HiGHS), one per plane (the condition for I follows from those for its members).
* :func:`face_nesting` (relugeom's own criterion, formerly ``nesting``): every face ``F_i = {x >= 0, x_i = 0}``
  lies on the negative side of plane i, in closed form, with the radius up to which it holds. For square layers
  the two agree (docs/cones.md proves it; tests check it).
* :func:`channel_nesting` -- consecutive conv layers with any channel counts (64 -> 128): the paper's single-channel
  setting applied to every (filter k, input channel c) pair, the channel's H x W circulant of ``w[k, c]`` with
  its share ``b_k / C_in`` of the bias, planes paired with the positions of channel c.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.optimize import linprog
from torch import nn

from .._repr import short_repr
from ..errors import DataError, LayerError, RelugeomWarning, ShapeError, UnsupportedLayerError, warn
from ..layers import AffineLayer, as_affine
from .polyhedron import _DENSE_LIMIT, Polyhedron, RelugeomLPError, _dense
from .unroll import circulant, output_shape, unroll

Layer = nn.Module | AffineLayer | tuple[np.ndarray, np.ndarray]
DOMAINS = ("orthant", "full")


def layer_matrix(layer: Layer, input_shape: Sequence[int] | None = None) -> tuple[sp.csr_array, np.ndarray]:
    """``(A, b)`` of a layer: a ``(W, b)`` pair, a Linear layer, or a conv layer on ``input_shape``."""
    if isinstance(layer, tuple):
        w, b = layer
        w = np.atleast_2d(np.asarray(w, dtype=np.float64))
        b = np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64).ravel()
        if b.shape != (w.shape[0],):
            raise ShapeError(f"bias of length {b.shape[0]} for a {w.shape[0]} x {w.shape[1]} matrix")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise LayerError("the layer's matrix or bias holds NaN/inf")
        return sp.csr_array(w), b
    aff = as_affine(layer)
    if aff.kind == "linear":
        return unroll(aff, input_shape or (aff.weight.shape[1],))
    if input_shape is None:
        raise ShapeError(f"layer {aff.name!r} is a convolution: give its input_shape (C, H, W)")
    a, b = unroll(aff, input_shape)
    if not (np.isfinite(a.data).all() and np.isfinite(b).all()):
        raise LayerError(f"layer {aff.name!r}: weight or bias holds NaN/inf")
    return a, b


def _check_y(y: np.ndarray, m: int, name: str = "y") -> np.ndarray:
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.shape[0] != m:
        raise ShapeError(f"{name} has {y.shape[0]} values but the layer has {m} outputs")
    if not np.isfinite(y).all():
        raise DataError(f"{name} holds NaN/inf")
    if (y < 0).any():
        raise DataError(f"{name} has {int((y < 0).sum())} negative value(s): it is not the output of a ReLU")
    return y


def _domain_rows(d: int, domain: str) -> list[tuple]:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    return [(-sp.identity(d, format="csr"), np.zeros(d))] if domain == "orthant" else []


def preimage(
    layer: Layer, y: np.ndarray, *, input_shape: Sequence[int] | None = None, domain: str = "orthant",
    tol: float = 1e-9,
) -> Polyhedron:
    """The preimage P(y) of ``y = relu(W x + b)`` (Carlsson 2019, eq. 9) as a :class:`Polyhedron` in float64.

    ``layer`` is a ``(W, b)`` pair, a Linear layer, or a conv layer (with ``input_shape``); ``y`` the layer's
    (flattened) output; ``domain`` "orthant" (x >= 0, the default, as in the paper) or "full" (all of R^d).

    Example
    -------
    >>> import numpy as np
    >>> P = preimage((np.eye(2), np.zeros(2)), np.array([1.0, 0.0]))
    >>> P.contains(np.array([1.0, 0.0])), P.dimension()
    (True, 0)
    """
    a, b = layer_matrix(layer, input_shape)
    y = _check_y(y, a.shape[0])
    pos = y > 0
    return Polyhedron.from_constraints(
        a.shape[1],
        ub=[(a[~pos], -b[~pos]), *_domain_rows(a.shape[1], domain)],
        eq=[(a[pos], y[pos] - b[pos])],
        tol=tol,
    )


@dataclass
class PiecewisePreimage:
    """The preimage through several layers: a union of polyhedra, one per feasible activation pattern of the
    layers before the last (pieces may share boundaries). ``complete`` is False when ``max_pieces`` cut the
    enumeration short; ``patterns[k]`` is the list of per-layer boolean activation patterns of piece k."""

    __repr__ = short_repr

    pieces: list[Polyhedron]
    patterns: list[list[np.ndarray]]
    complete: bool
    n_lps: int

    def __len__(self) -> int:
        return len(self.pieces)

    def __iter__(self):  # noqa: ANN204
        return iter(self.pieces)

    def contains(self, x: np.ndarray) -> bool | np.ndarray:
        """Whether x lies in any piece."""
        pts = np.atleast_2d(np.asarray(x, dtype=np.float64))
        hit = np.zeros(len(pts), dtype=bool)
        for p in self.pieces:
            hit |= p.contains(pts)
        return bool(hit[0]) if np.ndim(x) == 1 else hit


class _Budget:
    def __init__(self, max_pieces: int) -> None:
        self.max_pieces, self.n_pieces, self.n_lps, self.cut = max_pieces, 0, 0, False


def _pull_back(w: np.ndarray, b: np.ndarray, q: Polyhedron, domain: str, budget: _Budget
               ) -> list[tuple[Polyhedron, np.ndarray]]:  # fmt: skip
    """All pieces {x : relu(W x + b) in Q, x in domain}, one per feasible activation pattern (depth first).

    A partial pattern is pruned when the LP relaxation in (x, z) is infeasible: z in Q; z_j = w_j x + b_j >= 0
    for active units, z_j = 0 >= w_j x + b_j for inactive ones, z_j >= max(0, w_j x + b_j) for undecided ones.
    """
    m, n = w.shape
    qa, qb, qe, qf = _dense(q.A_ub), q.b_ub, _dense(q.A_eq), q.b_eq
    dom = -np.eye(n) if domain == "orthant" else np.zeros((0, n))
    out: list[tuple[Polyhedron, np.ndarray]] = []

    def feasible(pattern: list[bool]) -> bool:
        k = len(pattern)
        act = np.array(pattern + [False] * (m - k), dtype=bool)
        dec = np.arange(m) < k
        # variables (x, z)
        ub_rows, ub_b, eq_rows, eq_b = [], [], [], []
        ub_rows.append(np.hstack([np.zeros((len(qa), n)), qa]))
        ub_b.append(qb)
        eq_rows.append(np.hstack([np.zeros((len(qe), n)), qe]))
        eq_b.append(qf)
        ub_rows.append(np.hstack([dom, np.zeros((len(dom), m))]))
        ub_b.append(np.zeros(len(dom)))
        eye = np.eye(m)
        a_act, a_in, und = dec & act, dec & ~act, ~dec
        eq_rows.append(np.hstack([w[a_act], -eye[a_act]]))  # w x - z = -b
        eq_b.append(-b[a_act])
        ub_rows.append(np.hstack([-w[a_act], np.zeros((a_act.sum(), m))]))  # -(w x) <= b
        ub_b.append(b[a_act])
        eq_rows.append(np.hstack([np.zeros((a_in.sum(), n)), eye[a_in]]))  # z = 0
        eq_b.append(np.zeros(a_in.sum()))
        ub_rows.append(np.hstack([w[a_in], np.zeros((a_in.sum(), m))]))  # w x <= -b
        ub_b.append(-b[a_in])
        ub_rows.append(np.hstack([w[und], -eye[und]]))  # w x - z <= -b
        ub_b.append(-b[und])
        a_ub, a_eq = np.vstack(ub_rows), np.vstack(eq_rows)
        bounds = [(None, None)] * n + [(0, None)] * m
        budget.n_lps += 1
        res = linprog(np.zeros(n + m), A_ub=a_ub if len(a_ub) else None,
                      b_ub=np.concatenate(ub_b) if len(a_ub) else None, A_eq=a_eq if len(a_eq) else None,
                      b_eq=np.concatenate(eq_b) if len(a_eq) else None, bounds=bounds, method="highs")  # fmt: skip
        if res.status not in (0, 2):
            raise RelugeomLPError(f"HiGHS failed on a pattern LP: {res.message}")
        return res.status == 0

    def leaf(pattern: list[bool]) -> Polyhedron:
        act = np.array(pattern, dtype=bool)
        dmask = act.astype(float)
        wz, bz = w * dmask[:, None], b * dmask  # z = D (W x + b)
        return Polyhedron.from_constraints(
            n,
            ub=[(-w[act], b[act]), (w[~act], -b[~act]), (qa @ wz, qb - qa @ bz), *_domain_rows(n, domain)],
            eq=[(qe @ wz, qf - qe @ bz)],
            tol=q.tol,
        )

    def walk(pattern: list[bool]) -> None:
        if budget.n_pieces >= budget.max_pieces:
            budget.cut = True
            return
        if not feasible(pattern):
            return
        if len(pattern) == m:
            out.append((leaf(pattern), np.array(pattern, dtype=bool)))
            budget.n_pieces += 1
            return
        walk(pattern + [True])
        walk(pattern + [False])

    walk([])
    return out


def preimage_through(
    layers: Sequence[Layer], y: np.ndarray, *, input_shape: Sequence[int] | None = None, domain: str = "orthant",
    max_pieces: int = 1000, tol: float = 1e-9,
) -> PiecewisePreimage:
    """Preimage of ``y = relu(L_k(... relu(L_1(x))))`` as a union of polyhedra in the input space of L_1.

    The last layer gives P(y) (eq. 9); each earlier layer is pulled back piece by piece over its feasible
    activation patterns (Carlsson 2019, sec. 6: layer by layer, recursively). At most ``max_pieces`` pieces are
    produced in total; when the budget stops the enumeration, ``complete`` is False and a warning says so.
    Exact up to the LP tolerances (float64). Cost grows with the number of feasible patterns: meant for small
    networks (toy circulant nets, a few units).

    Example
    -------
    >>> import numpy as np
    >>> # x -> relu(x) -> relu(x1 + x2) on the orthant: y = 2 is the segment x1 + x2 = 2, x >= 0
    >>> P = preimage_through([(np.eye(2), np.zeros(2)), (np.array([[1.0, 1.0]]), np.zeros(1))], np.array([2.0]))
    >>> len(P), P.complete, P.contains(np.array([0.5, 1.5])), P.contains(np.array([1.0, 0.5]))
    (3, True, True, False)
    """
    mats = _matrices(layers, input_shape)
    budget = _Budget(max_pieces)
    last_domain = domain if len(mats) == 1 else "orthant"
    first = preimage(mats[-1], y, domain=last_domain, tol=tol)
    budget.n_lps += 1
    current = [] if first.is_empty() else [(first, [_check_y(y, mats[-1][0].shape[0]) > 0])]
    return _pull_back_all(mats[:-1], current, domain, budget)


def preimage_of_set(
    layers: Sequence[Layer], q: Polyhedron, *, input_shape: Sequence[int] | None = None, domain: str = "orthant",
    max_pieces: int = 1000,
) -> PiecewisePreimage:
    """Preimage of a whole polyhedron ``q`` of outputs (e.g. an affine manifold M ∩ orthant, Carlsson 2019, sec. 6)
    through ``relu(L_k(... relu(L_1(x))))``: a union of polyhedra, one per feasible activation pattern of all
    layers, under the same budget as :func:`preimage_through`."""
    mats = _matrices(layers, input_shape)
    if q.d != mats[-1][0].shape[0]:
        raise ShapeError(f"the output set lives in R^{q.d} but the last layer has {mats[-1][0].shape[0]} outputs")
    return _pull_back_all(mats, [(q, [])], domain, _Budget(max_pieces))


def _matrices(layers: Sequence[Layer], input_shape: Sequence[int] | None) -> list[tuple[np.ndarray, np.ndarray]]:
    if not layers:
        raise ValueError("at least one layer is needed")
    mats, shape = [], tuple(input_shape) if input_shape is not None else None
    for layer in layers:
        a, b = layer_matrix(layer, shape)
        if mats and a.shape[1] != mats[-1][0].shape[0]:
            raise ShapeError(f"layer {len(mats)} takes {a.shape[1]} inputs but the previous layer has "
                             f"{mats[-1][0].shape[0]} outputs")  # fmt: skip
        if a.shape[1] > _DENSE_LIMIT or a.shape[0] > _DENSE_LIMIT:
            raise ShapeError(f"layer {len(mats)} ({a.shape[0]} x {a.shape[1]}) is too large for pattern enumeration")
        mats.append((a.toarray(), b))
        if not isinstance(layer, tuple) and as_affine(layer).kind != "linear":
            shape = output_shape(layer, shape)
        else:
            shape = (a.shape[0],)
    return mats


def _pull_back_all(mats: list, current: list, domain: str, budget: _Budget) -> PiecewisePreimage:
    n_layers = len(mats) + (len(current[0][1]) if current else 0)
    for j in range(len(mats) - 1, -1, -1):
        dom = domain if j == 0 else "orthant"
        nxt: list[tuple[Polyhedron, list[np.ndarray]]] = []
        for piece, pats in current:
            for poly, pat in _pull_back(*mats[j], piece, dom, budget):
                nxt.append((poly, [pat, *pats]))
            if budget.cut:
                break
        current = nxt
        if budget.cut:
            break
    if budget.cut:
        warn(f"the preimage enumeration stopped at max_pieces={budget.max_pieces}: the union of pieces is "
             "incomplete", RelugeomWarning)  # fmt: skip
        current = [c for c in current if len(c[1]) == n_layers]
    return PiecewisePreimage([p for p, _ in current], [pats for _, pats in current], not budget.cut, budget.n_lps)


# ------------------------------------------------------------------------------------------ dual basis


@dataclass(frozen=True)
class DualBasis:
    """``apex``: the point where all d planes meet (eq. 11); ``E``: columns e_i of unit length (eq. 10),
    ``W e_i`` zero but for entry i, which is negative."""

    __repr__ = short_repr

    apex: np.ndarray
    E: np.ndarray


def dual_basis(w: np.ndarray, b: np.ndarray | None = None, *, rcond: float = 1e-12) -> DualBasis:
    """The dual basis of the planes ``w_i . x + b_i = 0`` (Carlsson 2019, sec. 3), float64.

    Raises :class:`LayerError` when W is not square or is singular (the planes are not in general position).

    Example
    -------
    >>> import numpy as np
    >>> basis = dual_basis(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([-1.0, -2.0]))  # planes x1 = 1, x2 = 1
    >>> basis.apex.tolist(), basis.E.tolist()  # they meet at (1, 1); e_i points to the negative side of plane i
    ([1.0, 1.0], [[-1.0, -0.0], [-0.0, -1.0]])
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise LayerError(f"the dual basis needs d planes in R^d (a square W), got W of shape {w.shape}")
    b = np.zeros(len(w)) if b is None else np.asarray(b, dtype=np.float64).ravel()
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise LayerError("W or b holds NaN/inf")
    sv = np.linalg.svd(w, compute_uv=False)
    if sv[-1] <= rcond * max(sv[0], 1e-300):
        rank = int((sv > rcond * max(sv[0], 1e-300)).sum())
        raise LayerError(f"W is singular (rank {rank} < {len(w)}): the planes are not in general position, "
                         "so they have no dual basis")  # fmt: skip
    inv = np.linalg.inv(w)
    e = -inv / np.linalg.norm(inv, axis=0, keepdims=True)
    return DualBasis(apex=-inv @ b, E=e)


def preimage_cone(w: np.ndarray, b: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Carlsson 2019, eqs. 14-15 for a square invertible W: ``x* = W^{-1}(y - b)`` and the rays ``e_i`` (columns)
    of the zero components of y, so that ``P(y) = {x* + E a : a >= 0} ∩ domain``.

    Example
    -------
    >>> import numpy as np
    >>> x_star, rays = preimage_cone(np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([-1.0, -2.0]), np.array([3.0, 0.0]))
    >>> x_star.tolist(), rays.ravel().tolist()  # x1 = 4 exactly; x2 free below the plane x2 = 1
    ([4.0, 1.0], [-0.0, -1.0])
    """
    basis = dual_basis(w, b)
    y = _check_y(y, len(basis.apex))
    x_star = np.linalg.solve(np.asarray(w, dtype=np.float64), y - np.asarray(b, dtype=np.float64))
    return x_star, basis.E[:, y == 0]


# ------------------------------------------------------------------------------------------ nesting


def face_nesting(layer_a: Layer | None, layer_b: Layer, input_shape: Sequence[int] | None = None) -> pd.DataFrame:
    """relugeom's face criterion for the nesting of layer b's cone in the orthant of layer a's outputs (Carlsson 2019,
    sec. 5); equivalent to the paper's dual-basis definition (:func:`complete_nesting`) for square layers.

    ``input_shape`` is layer a's input shape (conv layers); layer b is taken as its circulant embedding on
    layer a's output shape (a ``(W, b)`` pair is used as given; ``layer_a`` may then be None). Plane i of b is
    paired with coordinate i of its input (C_in = C_out needed). One row per plane: ``plane``, ``nested``
    (the whole face F_i = {x >= 0, x_i = 0} is on the negative side of plane i: all off-diagonal w_ij <= 0
    and b_i <= 0), ``radius`` (F_i ∩ [0, r]^d is on the negative side for every r <= radius:
    ``-b_i / sum_{j != i} max(w_ij, 0)``; inf when nested, < 0 when not even the apex corner x = 0 is).
    ``df.attrs``: ``nested`` (all planes) and ``radius`` (their minimum): inside [0, radius]^d every point
    with zeros at S maps to an output with zeros at S (contraction to equal or lower dimension).

    Example
    -------
    >>> import numpy as np
    >>> df = nesting(None, (np.array([[1.0, -0.5], [0.5, 1.0]]), np.array([-0.1, -0.2])))
    >>> df[["plane", "nested", "radius"]].values.tolist()  # plane 1: -b_1 / w_10 = 0.2 / 0.5
    [[0, True, inf], [1, False, 0.4]]
    """
    if isinstance(layer_b, tuple):
        a, b = layer_matrix(layer_b)
    else:
        shape = None if input_shape is None else tuple(input_shape)
        if layer_a is not None and shape is not None and not isinstance(layer_a, tuple):
            aff_a = as_affine(layer_a)
            shape = output_shape(aff_a, shape) if aff_a.kind != "linear" else (aff_a.out_channels,)
        aff_b = as_affine(layer_b)
        if aff_b.kind == "linear":
            a, b = layer_matrix(aff_b)
        else:
            if shape is None:
                raise ShapeError(f"layer {aff_b.name!r}: give input_shape to place its circulant cone")
            a, b = circulant(aff_b, shape)
    if a.shape[0] != a.shape[1]:
        raise UnsupportedLayerError(
            f"nesting pairs plane i with coordinate i, so layer b must map R^d to R^d; it maps "
            f"{a.shape[1]} values to {a.shape[0]}"
        )
    a = sp.csr_array(a)
    diag = a.diagonal()
    pos = sp.csr_array(a - sp.diags_array(diag))  # exact zeros on the diagonal
    pos.data = np.maximum(pos.data, 0)
    off = np.asarray(pos.sum(axis=1)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = np.where(off > 0, -b / off, np.where(b <= 0, np.inf, -np.inf))
    nested = (off <= 0) & (b <= 0)
    df = pd.DataFrame({"plane": np.arange(len(b)), "nested": nested, "radius": radius})
    df.attrs["nested"] = bool(nested.all())
    df.attrs["radius"] = float(radius.min()) if len(radius) else math.inf
    return df


nesting = face_nesting  # the name before the paper's definition was added


def complete_nesting(w: np.ndarray, b: np.ndarray | None = None, *, tol: float = 1e-9) -> pd.DataFrame:
    """Carlsson 2019, sec. 5: is the cone of the planes ``w_i . x + b_i = 0`` completely nested in the orthant cone of
    the coordinate planes ``x_i = 0`` (plane i paired with coordinate i)? The paper's definition, through the
    dual basis ``E`` (columns e_i) and its positive spans; float64, linear programs by HiGHS.

    For a set I of planes, ``M_I`` is their intersection and ``M_I + S+(e_I)`` the union of the positive spans
    ``x + sum_{i in I} a_i e_i`` (a >= 0) from its points; complete nesting asks that every point of the coordinate
    face ``O_I = {z >= 0 : z_I = 0}`` lie in it. With ``beta(z) = E^{-1} (z - apex)`` the dual coordinates of z,
    ``z`` lies in ``M_I + S+(e_I)`` iff ``beta_I(z) >= 0``; as ``O_I`` is inside ``O_i`` for each i in I, the
    sets I reduce to single planes. One LP per plane: ``min beta_i(z)`` over ``O_i`` (bounded by
    ``beta_i >= -1``, so an unbounded face shows as -1).

    One row per plane: ``plane``, ``nested`` (min >= -tol), ``min_dual_coordinate`` (the LP minimum; < 0 where a
    point of the face lies outside the positive span), ``witness`` (the minimizing z, a point of ``O_i`` whose
    output does not vanish at i; None when nested). ``df.attrs["nested"]``: all planes.

    >>> complete_nesting(np.eye(2), -np.ones(2)).attrs["nested"]   # identity, negative bias: nested
    True
    >>> complete_nesting(np.array([[1.0, 0.5], [0.5, 1.0]]), -np.ones(2)).attrs["nested"]  # wider cone
    False
    """
    w = np.asarray(w, dtype=np.float64)
    basis = dual_basis(w, b)
    d = len(w)
    inv = np.linalg.inv(basis.E)  # beta = inv @ (z - apex)
    rows, witnesses = [], []
    for i in range(d):
        c = inv[i]
        bounds = [(0, 0) if j == i else (0, None) for j in range(d)]
        # min c.z - c.apex  s.t.  c.z - c.apex >= -1  (bounded), z in O_i
        res = linprog(c, A_ub=-c[None, :], b_ub=np.array([1.0 - c @ basis.apex]), bounds=bounds, method="highs")
        if res.status != 0:
            raise RelugeomLPError(f"HiGHS failed on plane {i}: {res.message}")
        value = float(res.fun - c @ basis.apex)
        ok = value >= -tol
        rows.append((i, ok, value))
        witnesses.append(None if ok else res.x)
    df = pd.DataFrame(rows, columns=["plane", "nested", "min_dual_coordinate"])
    df["witness"] = witnesses
    df.attrs["nested"] = bool(df["nested"].all())
    return df


def _folded_kernels(layer: AffineLayer, spatial: tuple[int, ...]) -> np.ndarray:
    """The first row of every (filter, input channel) single-channel circulant, shape (K, C, *spatial): kernel tap
    t lands on offset ``t * dilation - dilation * (k - 1) // 2`` (centred, as :func:`~.unroll.circulant`), modulo
    the size (taps that wrap onto one offset add up)."""
    w = layer.weight.detach().cpu().to(dtype=torch.float64).numpy()
    K, C = w.shape[:2]
    out = np.zeros((K, C, *spatial))
    dil = layer.dilation or (1,) * len(spatial)
    grids = [((np.arange(k) * dl - dl * (k - 1) // 2) % n) for k, dl, n in zip(w.shape[2:], dil, spatial)]
    for taps in np.ndindex(*w.shape[2:]):
        target = tuple(int(g[t]) for g, t in zip(grids, taps))
        out[(slice(None), slice(None), *target)] += w[(slice(None), slice(None), *taps)]
    return out


def channel_nesting(layer_b: Layer, input_shape: Sequence[int]) -> pd.DataFrame:
    """Carlsson 2019's nesting for a conv layer with any numbers of input and output channels (e.g. 64 -> 128): one row
    per (filter k, input channel c), the cone of the single-channel circulant of ``w[k, c]`` on the channel's
    ``H x W`` positions with the bias share ``b_k / C_in`` (the filter's pre-activation is the sum over c of these
    channel maps), nested in the orthant of channel c's values (the ReLU outputs of the previous layer).

    By circulant symmetry every plane of a (k, c) cone has the same verdict, so one row holds it: ``nested`` (the
    paper's definition, equal to the face criterion, see :func:`complete_nesting`), ``diagonal`` (the centre tap),
    ``positive_off_diagonal`` (sum of the positive other taps), ``bias_share`` and ``radius`` (nested within
    ``[0, radius]^D``). ``input_shape`` is layer b's input ``(C, H, W)``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(2, 1, 3, padding=1)  # one filter on two channels: centre taps 1, bias -1 (share -1/2)
    >>> with torch.no_grad():
    ...     _ = conv.weight.zero_(), conv.bias.fill_(-1.0)
    ...     conv.weight[0, :, 1, 1] = 1.0
    ...     conv.weight[0, 1, 0, 0] = 0.25  # channel 1 also reads a neighbour: its cone leaves the orthant
    >>> channel_nesting(conv, (2, 4, 4))[["channel", "nested", "radius"]].values.tolist()
    [[0, True, inf], [1, False, 2.0]]
    """
    aff = as_affine(layer_b)
    if aff.kind == "linear":
        raise UnsupportedLayerError(f"layer {aff.name!r} is linear: channel cones need a convolution")
    shape = tuple(input_shape)
    if len(shape) != aff.weight.dim() - 1 or shape[0] != aff.in_channels:
        raise ShapeError(f"layer {aff.name!r} takes {aff.in_channels} channels of {aff.weight.dim() - 2} spatial "
                         f"dimensions; input_shape {shape} does not fit")  # fmt: skip
    if (aff.groups or 1) != 1:
        raise UnsupportedLayerError(f"layer {aff.name!r}: grouped convolutions are not supported")
    first = _folded_kernels(aff, shape[1:])
    K, C = first.shape[:2]
    flat = first.reshape(K, C, -1)
    diag = flat[:, :, 0]
    off = np.clip(flat[:, :, 1:], 0, None).sum(-1)
    bias = np.zeros(K) if aff.bias is None else aff.bias.detach().cpu().double().numpy()
    share = np.repeat((bias / C)[:, None], C, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = np.where(off > 0, -share / off, np.where(share <= 0, np.inf, -np.inf))
    kk, cc = np.meshgrid(np.arange(K), np.arange(C), indexing="ij")
    df = pd.DataFrame({"layer": aff.name, "filter": kk.ravel(), "channel": cc.ravel(),
                       "nested": ((off <= 0) & (share <= 0)).ravel(), "diagonal": diag.ravel(),
                       "positive_off_diagonal": off.ravel(), "bias_share": share.ravel(),
                       "radius": radius.ravel()})  # fmt: skip
    df.attrs["nested_fraction"] = float(df["nested"].mean()) if len(df) else math.nan
    return df
