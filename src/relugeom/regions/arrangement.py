"""Exact region counts of hyperplane arrangements, and of one conv or linear layer's arrangement (float64).

Exact for the given float64 weights (no sampling), up to a relative tolerance ``tol`` that decides when a
value is zero (two hyperplanes coincide or are parallel). :func:`arrangement_regions` counts the regions of
``{x : a_i.x + b_i = 0}`` in R^d by the incremental (deletion-restriction) recursion
``r(A) = 1 + sum_k r(A_{<k} restricted to H_k)`` (Zaslavsky 1975); :func:`layer_regions` applies it to one
layer's unrolled matrix, to compare with Xiong et al. 2020, Theorem 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from ..errors import ShapeError, warn
from ._budget import Budget


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


def _count(A: np.ndarray, b: np.ndarray, tol: float, budget: Budget) -> int:
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

    Example
    -------
    >>> import numpy as np
    >>> A = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> arrangement_regions(A), arrangement_regions(A, [0.0, 0.0, -1.0])  # concurrent lines: 6; general position: 7
    (6, 7)
    """
    A = np.asarray(A.toarray() if hasattr(A, "toarray") else A, dtype=np.float64)
    if A.ndim != 2:
        raise ShapeError(f"A must be a matrix (hyperplanes x dimensions), got shape {A.shape}")
    b = np.zeros(A.shape[0]) if b is None else np.asarray(b, dtype=np.float64).ravel()
    if b.shape[0] != A.shape[0]:
        raise ShapeError(f"A has {A.shape[0]} rows but b has {b.shape[0]} entries")
    if not (np.isfinite(A).all() and np.isfinite(b).all()):
        raise ShapeError("A or b contains NaN or inf")
    return _count(A, b, tol, Budget(budget))


def layer_regions(layer: nn.Module, input_shape: Sequence[int], *, tol: float = 1e-9, budget: int = 10**6) -> int:
    """Regions of the arrangement of one conv/linear layer's neurons on ``input_shape`` (exact, float64).

    This is the number of linear regions of ``x -> relu(layer(x))`` (Xiong et al. 2020's R_{N,theta} for a one-layer
    network). For unpadded convolutions, Theorem 1 (i) of Xiong et al. 2020 (:func:`cnn_max_regions`) is the maximum
    over weights; :func:`relugeom.regions.formulas.cnn_formula_caveat` says when it is not attained.

    Example
    -------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> layer_regions(nn.Linear(2, 3), (2,))  # three random lines in the plane
    7
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


def random_layer_regions(input_shape: Sequence[int], kernel: int | Sequence[int], stride: int, filters: int, *,
                         seed: int = 0, tol: float = 1e-9, budget: int = 10**6) -> int:  # fmt: skip
    """Regions of one unpadded conv layer with Gaussian weights and biases (exact count, float64).

    Almost every weight gives this count (the arrangement's combinatorics are the same off a null set), so it
    is what a trained layer of that shape has in general: where Theorem 1 of Xiong et al. 2020 is not attained
    (:func:`relugeom.regions.formulas.cnn_formula_caveat`), this is the count to compare with. ``input_shape``
    is (C, L) or (C, H, W); the draw uses its own generator seeded with ``seed`` (the global RNG is untouched).

    Example
    -------
    >>> random_layer_regions((1, 3, 3), 2, 1, 2)  # Theorem 1 publishes 256 for this shape
    255
    """
    import warnings

    import torch

    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (2, 3):
        raise ShapeError(f"input shape {shape}: give (C, L) or (C, H, W)")
    conv = nn.utils.skip_init(nn.Conv1d if len(shape) == 2 else nn.Conv2d, shape[0], filters, kernel, stride=stride)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=g))
    with warnings.catch_warnings():  # the caveat warning is what this count answers
        warnings.simplefilter("ignore")
        return layer_regions(conv, shape, tol=tol, budget=budget)
