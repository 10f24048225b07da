"""The small circulant networks of Carlsson 2019 (sec. 5, eqs. 19-20) and the data behind its figures 2-4.

A layer of the d-node network is ``x' = relu(W x + c 1)`` with W circulant: row i is the first row cyclically
shifted i places to the right, so for d = 2, ``W = [[a, b], [b, a]]`` (eq. 19) and for d = 3,
``W = [[a, b, c], [c, a, b], [b, c, a]]`` with bias d (eq. 20). Everything here is float64 numpy; the
pictures are drawn by :mod:`relugeom.report.toy` from what these functions return.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ShapeError
from .preimage import (
    PiecewisePreimage,
    Polyhedron,
    complete_nesting,
    dual_basis,
    face_nesting,
    preimage_cone,
    preimage_of_set,
    preimage_through,
)

ToyNet = list[tuple[np.ndarray, np.ndarray]]


def circulant_layer(row: Sequence[float], bias: float) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of one circulant layer: W's rows are the right cyclic shifts of ``row``, b = bias * 1."""
    row = np.asarray(row, dtype=np.float64)
    if row.ndim != 1 or len(row) < 2:
        raise ShapeError(f"a circulant row needs at least 2 entries, got {row.shape}")
    return np.stack([np.roll(row, i) for i in range(len(row))]), np.full(len(row), float(bias))


def toy_network(
    nodes: int = 2, n_layers: int = 3, *, params: Sequence[Sequence[float]] | None = None, seed: int | None = None,
    spread: float = 0.25, bias: tuple[float, float] = (-0.6, -0.1),
) -> ToyNet:
    """A ``nodes``-node network of ``n_layers`` circulant layers (eqs. 19-20).

    ``params``: one ``(row..., bias)`` per layer, e.g. ``(a, b, c)`` for 2 nodes (eq. 19) or ``(a, b, c, d)`` for
    3 nodes (eq. 20). Without it, random layers near the identity: a = 1, the other row entries uniform in
    ``[-spread, spread]``, the bias uniform in ``bias`` (seeded).
    """
    if params is not None:
        layers = []
        for k, p in enumerate(params):
            if len(p) != nodes + 1:
                raise ShapeError(f"layer {k}: a {nodes}-node layer takes {nodes + 1} numbers (row and bias), got {p}")
            layers.append(circulant_layer(p[:-1], p[-1]))
        return layers
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_layers):
        row = np.concatenate([[1.0], rng.uniform(-spread, spread, size=nodes - 1)])
        out.append(circulant_layer(row, rng.uniform(*bias)))
    return out


def forward(net: ToyNet, x: np.ndarray) -> list[np.ndarray]:
    """Pre-activations of every layer for points ``x`` of shape (n, d): a list of (n, d) arrays."""
    pre, h = [], np.atleast_2d(np.asarray(x, dtype=np.float64))
    for w, b in net:
        z = h @ w.T + b
        pre.append(z)
        h = np.maximum(z, 0.0)
    return pre


def layer_nesting(net: ToyNet) -> list[dict]:
    """Per layer after the first: whether its cone is completely nested in the orthant of the previous layer's
    outputs by the paper's dual-basis definition (:func:`~relugeom.geometry.preimage.complete_nesting`), by
    relugeom's face criterion and up to which radius (:func:`~relugeom.geometry.preimage.face_nesting`)."""
    out = []
    for k, (w, b) in enumerate(net[1:], start=1):
        df = face_nesting(None, (w, b))
        out.append({"layer": k, "nested": complete_nesting(w, b).attrs["nested"], "face_nested": df.attrs["nested"],
                    "radius": df.attrs["radius"]})  # fmt: skip
    return out


def dual_basis_data(layer: tuple[np.ndarray, np.ndarray], y: np.ndarray) -> dict:
    """Data of Carlsson 2019, fig. 1: a layer's planes, their meeting point (apex), the dual basis e_i from the apex
    (eq. 10), and for the output ``y`` the point ``x* = W^{-1}(y - b)`` with the rays e_i of y's zero components
    that span its preimage (eqs. 14-15)."""
    w, b = layer
    basis = dual_basis(w, b)
    x_star, rays = preimage_cone(w, b, y)
    return {"w": w, "b": b, "apex": basis.apex, "E": basis.E, "y": np.asarray(y, dtype=np.float64),
            "x_star": x_star, "rays": rays, "zeros": np.flatnonzero(np.asarray(y) == 0)}  # fmt: skip


def flow_field(net: ToyNet, lim: float = 3.0, n: int = 201) -> dict:
    """Data of Carlsson 2019, fig. 2: on an n x n grid of the 2D input box [-lim, lim]^2, the pre-activations of every
    layer remapped to the input space (their zero lines are the bent hyperplanes), the final output and where
    it is 0."""
    if net[0][0].shape[1] != 2:
        raise ShapeError("flow_field draws 2-node networks")
    g = np.linspace(-lim, lim, n)
    xx, yy = np.meshgrid(g, g)
    pre = forward(net, np.stack([xx.ravel(), yy.ravel()], axis=1))
    out = np.maximum(pre[-1], 0.0)
    return {"x": xx, "y": yy, "pre": [z.reshape(n, n, -1) for z in pre], "out": out.reshape(n, n, -1),
            "zero": np.all(out == 0, axis=1).reshape(n, n)}  # fmt: skip


def cells(layer: tuple[np.ndarray, np.ndarray], n: int = 2000, lim: float = 2.0, seed: int | None = None) -> dict:
    """Data of Carlsson 2019, fig. 3: points of the input box [0, lim]^d, their cell (sign pattern of the layer's
    planes, as a count of negative constraints) and their images relu(W x + b)."""
    w, b = layer
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, lim, size=(n, w.shape[1]))
    z = x @ w.T + b
    return {"x": x, "y": np.maximum(z, 0.0), "negatives": (z <= 0).sum(axis=1), "pattern": z > 0}


def point_preimages(net: ToyNet, ys: np.ndarray, *, domain: str = "orthant", max_pieces: int = 200
                    ) -> list[PiecewisePreimage]:  # fmt: skip
    """The preimage (a union of polyhedra) of each output point in ``ys`` through the whole network."""
    return [preimage_through(net, y, domain=domain, max_pieces=max_pieces) for y in np.atleast_2d(ys)]


def affine_output_manifold(net: ToyNet, level: float = 1.0, max_pieces: int = 500) -> PiecewisePreimage:
    """Carlsson 2019, sec. 6 and fig. 4: the input manifold mapped to the affine output set
    ``M = {y >= 0 : sum(y) = level}`` (the triangle in 3D, a segment in 2D): a union of polyhedra (patches)."""
    d = net[-1][0].shape[0]
    m = Polyhedron.from_constraints(d, ub=[(-np.eye(d), np.zeros(d))], eq=[(np.ones((1, d)), np.array([level]))])
    return preimage_of_set(net, m, max_pieces=max_pieces)
