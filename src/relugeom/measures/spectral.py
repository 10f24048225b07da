"""Spectral norms of convolution operators (Daróczy 2020: the spectral-norm capacity of Neyshabur et al. 2017).

A convolution on an input of shape (C, *S) is a linear map (the bias left out); its spectral norm is
the largest singular value of that map, not of the reshaped kernel. Three methods:

- ``"fft"``: exact singular values of the *circular* convolution (the circulant embedding of
  :func:`relugeom.geometry.unroll.circulant`: circular padding, stride 1) through FFTs (Sedghi, Gupta
  and Long 2019, Theorem 6): the operator is block-diagonalised by the DFT, and at each frequency
  ``w`` the block is the F x C matrix ``P(w)[f, c] = sum_t K[f, c, t] exp(-2 pi i <w, t d> / S)``; the
  singular values of the operator are those of all the ``P(w)``. Groups give block-diagonal
  matrices (the union of the groups' values). Taps that wrap around a small input are summed.
- ``"dense"``: the dense SVD of the exact unrolled operator with the layer's real padding, stride
  and padding mode (:func:`~relugeom.geometry.unroll.unroll`), for small shapes.
- ``"power"``: power iteration on ``A^T A`` with the layer's real padding, using the convolution and
  its adjoint (autograd); converges from below; the iterations, convergence flag and the residual
  ``||A^T A v - s^2 v|| / s^2`` are reported. Slow when the top singular values are close, which is
  common for convolutions.
- ``"lanczos"``: the largest eigenvalue of the same ``A^T A`` operator by implicitly restarted Lanczos
  (scipy's ARPACK ``eigsh``), same real operator, same residual report; ``iterations`` counts the
  products with ``A^T A``. Far fewer products than power iteration when the spectrum is clustered.

All in float64. For a Linear layer every method returns the exact matrix 2-norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vjp

from .._repr import short_repr
from ..errors import BudgetExceeded, warn
from ..geometry.unroll import _check, _pads, output_shape, unroll
from ..layers import AffineLayer, as_affine

METHODS = ("fft", "dense", "power", "lanczos")
DENSE_LIMIT = 4_000_000  # entries of the dense matrix


@dataclass(frozen=True)
class SpectralNorm:
    """Largest singular value of a layer's linear map and how it was found."""

    __repr__ = short_repr

    value: float
    method: str
    iterations: int = 0
    converged: bool = True
    residual: float = 0.0


def conv_singular_values(layer: nn.Module | AffineLayer, input_shape: Sequence[int]) -> np.ndarray:
    """All singular values (descending, float64) of the circular convolution of ``layer`` on ``input_shape``.

    Exact (FFT, Sedghi et al. 2019); equal to those of the dense ``circulant(layer, input_shape)``.
    The layer's stride and padding are not used (a warning says so when stride > 1).

    Example
    -------
    >>> import torch
    >>> conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)
    >>> _ = conv.weight.data.copy_(torch.tensor([[[1.0, 2.0, 0.0]]]))
    >>> conv_singular_values(conv, (1, 4)).round(6).tolist()  # |1 + 2 exp(-2 pi i k / 4)|, k = 0..3
    [3.0, 2.236068, 2.236068, 1.0]
    """
    L = as_affine(layer)
    if L.kind == "linear":
        return np.linalg.svd(L.weight.detach().cpu().double().numpy(), compute_uv=False)
    shape = _check(L, input_shape)
    if L.stride is not None and any(s != 1 for s in L.stride):
        warn(f"layer {L.name!r}: stride {L.stride} ignored, the FFT method treats the stride-1 circular operator")
    w = L.weight.detach().cpu().double().numpy()
    f_out, cg = w.shape[:2]
    spatial = shape[1:]
    dil = L.dilation or (1,) * len(spatial)
    emb = np.zeros((f_out, cg, *spatial))
    for t in np.ndindex(*w.shape[2:]):
        pos = tuple((ti * di) % si for ti, di, si in zip(t, dil, spatial))
        emb[(slice(None), slice(None), *pos)] += w[(slice(None), slice(None), *t)]
    axes = tuple(range(2, 2 + len(spatial)))
    P = np.fft.fftn(emb, axes=axes)  # (F, Cg, *S)
    P = np.moveaxis(P.reshape(f_out, cg, -1), -1, 0)  # (prod S, F, Cg)
    groups = L.groups or 1
    fg = f_out // groups
    vals = [np.linalg.svd(P[:, g * fg:(g + 1) * fg, :], compute_uv=False).ravel() for g in range(groups)]
    return np.sort(np.concatenate(vals))[::-1]


def _operator(L: AffineLayer):  # noqa: ANN202
    w = L.weight.detach().cpu().double()
    if L.kind == "linear":
        return lambda v: v @ w.T
    n = w.dim() - 2
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    pads = [p for lohi in reversed(_pads(L, n)) for p in lohi]
    mode = L.padding_mode or "zeros"

    def A(v: torch.Tensor) -> torch.Tensor:
        if any(pads):
            v = F.pad(v, pads, mode="constant" if mode == "zeros" else mode)
        return conv(v, w, None, L.stride, 0, L.dilation, L.groups)

    return A


def _power(L: AffineLayer, shape: tuple[int, ...], *, max_iter: int, tol: float, seed: int) -> SpectralNorm:
    A = _operator(L)
    g = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *shape), generator=g, dtype=torch.float64)
    v = v / v.norm()
    sigma, prev, it, converged = 0.0, -1.0, 0, False
    residual = float("nan")
    for it in range(1, max_iter + 1):  # noqa: B007
        out, back = vjp(A, v)
        (ata,) = back(out)
        sigma = float(out.norm())
        nrm = ata.norm()
        if sigma == 0.0 or nrm == 0:
            return SpectralNorm(0.0, "power", it, True, 0.0)
        residual = float((ata - sigma**2 * v).norm() / sigma**2)
        v = ata / nrm
        if abs(sigma - prev) <= tol * sigma and residual <= max(tol**0.5, 1e-12):
            converged = True
            break
        prev = sigma
    if not converged:
        warn(f"layer {L.name!r}: power iteration did not converge in {max_iter} iterations "
             f"(residual {residual:.1e}); the value {sigma:.6g} is a lower bound")  # fmt: skip
    return SpectralNorm(sigma, "power", it, converged, residual)


def _lanczos(L: AffineLayer, shape: tuple[int, ...], *, max_iter: int, tol: float, seed: int) -> SpectralNorm:
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    A = _operator(L)
    n = int(np.prod(shape))
    count = 0

    def ata(x: np.ndarray) -> np.ndarray:
        nonlocal count
        count += 1
        v = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64).reshape(1, *shape))
        out, back = vjp(A, v)
        return back(out)[0].reshape(-1).numpy()

    v0 = np.random.default_rng(seed).standard_normal(n)
    if n <= 2:  # ARPACK needs k < n
        M = np.stack([ata(e) for e in np.eye(n)], axis=1)
        return SpectralNorm(float(np.sqrt(max(np.linalg.eigvalsh(M)[-1], 0.0))), "lanczos", count, True, 0.0)
    op = LinearOperator((n, n), matvec=ata, dtype=np.float64)
    converged = True
    try:
        vals, vecs = eigsh(op, k=1, which="LA", v0=v0, tol=tol, maxiter=max_iter, ncv=min(n - 1, 20))
    except ArpackNoConvergence as e:
        converged = False
        if len(e.eigenvalues) == 0:
            warn(f"layer {L.name!r}: Lanczos did not converge in {max_iter} restarts; falling back to power iteration")
            return _power(L, shape, max_iter=max_iter, tol=tol, seed=seed)
        vals, vecs = e.eigenvalues, e.eigenvectors
    lam = max(float(vals[0]), 0.0)
    if lam == 0.0:
        return SpectralNorm(0.0, "lanczos", count, True, 0.0)
    x = vecs[:, 0] / np.linalg.norm(vecs[:, 0])
    residual = float(np.linalg.norm(ata(x) - lam * x) / lam)
    if not converged:
        warn(f"layer {L.name!r}: Lanczos did not converge in {max_iter} restarts (residual {residual:.1e}); "
             f"the value {lam**0.5:.6g} is a lower bound")  # fmt: skip
    return SpectralNorm(lam**0.5, "lanczos", count, converged, residual)


def conv_spectral_norm(
    layer: nn.Module | AffineLayer, input_shape: Sequence[int], method: str = "power", *,
    max_iter: int = 2000, tol: float = 1e-10, seed: int = 0,
) -> SpectralNorm:  # fmt: skip
    """Spectral norm of the linear map of ``layer`` (bias left out) on inputs of shape ``input_shape``.

    ``method``: ``"fft"`` (exact, circular operator), ``"dense"`` (exact, real operator, small
    shapes), ``"power"`` or ``"lanczos"`` (real operator, iterative, float64; ``seed`` fixes the start
    vector; for Lanczos ``max_iter`` bounds ARPACK's restarts). See the module docstring.

    Example
    -------
    >>> import torch
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular")
    >>> a = conv_spectral_norm(conv, (2, 6, 6), "fft").value
    >>> b = conv_spectral_norm(conv, (2, 6, 6), "dense").value
    >>> abs(a - b) < 1e-10 * b
    True
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    L = as_affine(layer)
    shape = _check(L, input_shape)
    if L.kind == "linear":
        s = np.linalg.svd(L.weight.detach().cpu().double().numpy(), compute_uv=False)
        return SpectralNorm(float(s[0]), method)
    if method == "fft":
        return SpectralNorm(float(conv_singular_values(L, shape)[0]), "fft")
    if method == "dense":
        A, _ = unroll(L, shape)
        if A.shape[0] * A.shape[1] > DENSE_LIMIT:
            raise BudgetExceeded(
                f"layer {L.name!r}: the dense operator on {shape} has {A.shape[0]} x {A.shape[1]} entries "
                f"(limit {DENSE_LIMIT}); use method='power' (or 'fft' for the circular operator)"
            )
        return SpectralNorm(float(np.linalg.svd(A.toarray(), compute_uv=False)[0]), "dense")
    output_shape(L, shape)  # raises a ShapeError when the input is too small for the kernel
    if method == "lanczos":
        return _lanczos(L, shape, max_iter=max_iter, tol=tol, seed=seed)
    return _power(L, shape, max_iter=max_iter, tol=tol, seed=seed)
