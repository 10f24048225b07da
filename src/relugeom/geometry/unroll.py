"""The exact matrix of an affine layer on a given input shape (Gamba et al. 2020, sec. 2, fig. 3; Carlsson 2019,
sec. 4).

A convolution acting on an input of shape (C, *S) is the affine map ``x -> A x + b`` on the
flattened input (PyTorch's C order of (C, *S)); the output is the flattened (F, *O). :func:`unroll`
builds ``A`` exactly as a sparse float64 matrix for any stride, padding (ints, ``'same'``,
``'valid'``), dilation, groups and padding mode (``zeros``, ``circular``, ``reflect``,
``replicate``). :func:`circulant` builds the circulant embedding of Carlsson 2019 (eqs. 16-18): circular
padding, stride 1, the kernel centred, so that every row of a filter's block is a cyclic shift of
the previous one and all of the filter's hyperplanes meet the identity line at ``-b / sum(w)``.

Entries are the layer's weights converted to float64 (no arithmetic besides the sums that
reflect/replicate padding makes where two taps land on one input).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from torch import nn

from ..errors import ShapeError, UnsupportedLayerError
from ..layers import AffineLayer, as_affine


def _float64(t) -> np.ndarray:  # noqa: ANN001
    return t.detach().cpu().double().numpy()


def _check(layer: AffineLayer, input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    n = layer.weight.dim() - 2
    if layer.kind == "linear":
        if int(np.prod(shape)) != layer.weight.shape[1]:
            raise ShapeError(
                f"layer {layer.name!r}: input shape {shape} has {int(np.prod(shape))} values, "
                f"the linear layer takes {layer.weight.shape[1]}"
            )
        return shape
    if len(shape) != n + 1:
        raise ShapeError(f"layer {layer.name!r} ({layer.kind}) takes inputs of shape (C, {n} sizes), got {shape}")
    if shape[0] != layer.in_channels:
        raise ShapeError(f"layer {layer.name!r} takes {layer.in_channels} input channels, got shape {shape}")
    if layer.stride is None:
        raise ShapeError(
            f"layer {layer.name!r} came from a bare state dict, so its stride and padding are unknown; "
            "pass the nn.Module (or build the architecture) to unroll it"
        )
    return shape


def _pads(layer: AffineLayer, n: int) -> list[tuple[int, int]]:
    k, d = layer.kernel_size, layer.dilation
    assert d is not None
    if layer.padding == "valid":
        return [(0, 0)] * n
    if layer.padding == "same":
        return [(d[i] * (k[i] - 1) // 2, d[i] * (k[i] - 1) - d[i] * (k[i] - 1) // 2) for i in range(n)]
    assert isinstance(layer.padding, tuple)
    return [(p, p) for p in layer.padding]


def output_shape(layer: nn.Module | AffineLayer, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape (without batch) of the layer's output for an input of shape ``input_shape``."""
    layer = as_affine(layer)
    shape = _check(layer, input_shape)
    if layer.kind == "linear":
        return (layer.out_channels,)
    n = len(shape) - 1
    out = []
    for i, (lo, hi) in enumerate(_pads(layer, n)):
        size = (shape[1 + i] + lo + hi - layer.dilation[i] * (layer.kernel_size[i] - 1) - 1) // layer.stride[i] + 1
        if size < 1:
            raise ShapeError(f"layer {layer.name!r}: input shape {shape} is smaller than its (dilated) kernel")
        out.append(size)
    return (layer.out_channels, *out)


def _map_index(idx: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Input index of each (output, tap) pair under the padding mode, and whether it exists."""
    if mode == "zeros":
        valid = (idx >= 0) & (idx < size)
        return np.clip(idx, 0, size - 1), valid
    if mode == "circular":
        return np.mod(idx, size), np.ones(idx.shape, dtype=bool)
    if mode == "replicate":
        return np.clip(idx, 0, size - 1), np.ones(idx.shape, dtype=bool)
    if mode == "reflect":
        if size == 1:
            return np.zeros_like(idx), np.ones(idx.shape, dtype=bool)
        period = 2 * (size - 1)
        r = np.mod(idx, period)
        return np.where(r < size, r, period - r), np.ones(idx.shape, dtype=bool)
    raise UnsupportedLayerError(f"padding mode {mode!r} is not supported")


def _assemble(
    layer: AffineLayer, shape: tuple[int, ...], out_sizes: Sequence[int], per_dim: list[tuple[np.ndarray, np.ndarray]]
) -> tuple[sp.csr_array, np.ndarray]:
    """Sparse matrix from per-dimension (input index [O, K], validity [O, K]) tables."""
    w = _float64(layer.weight)
    f_out, cg = w.shape[0], w.shape[1]
    groups = layer.groups or 1
    n = len(per_dim)
    spatial_in = shape[1:]
    n_in_sp = int(np.prod(spatial_in))
    n_out_sp = int(np.prod(out_sizes))
    # Broadcast over axes (F, Cg, O_1..O_n, K_1..K_n).
    ndim = 2 + 2 * n
    flat_in = np.zeros((1,) * ndim, dtype=np.int64)
    flat_out = np.zeros((1,) * ndim, dtype=np.int64)
    valid = np.ones((1,) * ndim, dtype=bool)
    for i, (idx, ok) in enumerate(per_dim):
        view = [1] * ndim
        view[2 + i], view[2 + n + i] = idx.shape
        stride_in = int(np.prod(spatial_in[i + 1 :]))
        stride_out = int(np.prod(out_sizes[i + 1 :]))
        flat_in = flat_in + idx.reshape(view) * stride_in
        valid = valid & ok.reshape(view)
        ov = [1] * ndim
        ov[2 + i] = idx.shape[0]
        flat_out = flat_out + np.arange(idx.shape[0]).reshape(ov) * stride_out
    f = np.arange(f_out).reshape((f_out, 1) + (1,) * (2 * n))
    c = np.arange(cg).reshape((1, cg) + (1,) * (2 * n))
    channel = (f // (f_out // groups)) * cg + c
    full = (f_out, cg, *out_sizes, *w.shape[2:])
    rows = np.broadcast_to(f * n_out_sp + flat_out, full)
    cols = np.broadcast_to(channel * n_in_sp + flat_in, full)
    vals = np.broadcast_to(w.reshape((f_out, cg) + (1,) * n + w.shape[2:]), full)
    mask = np.broadcast_to(valid, full)
    a = sp.coo_array(
        (vals[mask], (rows[mask], cols[mask])), shape=(f_out * n_out_sp, int(np.prod(shape)))
    ).tocsr()
    a.sum_duplicates()
    bias = np.zeros(f_out) if layer.bias is None else _float64(layer.bias)
    return a, np.repeat(bias, n_out_sp)


def unroll(layer: nn.Module | AffineLayer, input_shape: Sequence[int]) -> tuple[sp.csr_array, np.ndarray]:
    """The exact sparse matrix ``A`` and bias vector ``b`` of a Conv1d/2d/3d or Linear layer.

    ``A @ x.ravel() + b == layer(x).ravel()`` for an input ``x`` of shape ``input_shape`` (without
    batch), in float64. Row ``f * prod(O) + o`` is the hyperplane normal of filter ``f`` at output
    position ``o`` (Gamba et al. 2020, fig. 3).

    Example
    -------
    >>> import torch
    >>> conv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    >>> A, b = unroll(conv, (2, 5, 5))
    >>> x = torch.randn(2, 5, 5, dtype=torch.float64)
    >>> bool(np.allclose(A @ x.numpy().ravel() + b, conv(x[None]).detach().numpy().ravel()))
    True
    """
    layer = as_affine(layer)
    shape = _check(layer, input_shape)
    if layer.kind == "linear":
        b = np.zeros(layer.out_channels) if layer.bias is None else _float64(layer.bias)
        return sp.csr_array(_float64(layer.weight)), b
    out = output_shape(layer, shape)[1:]
    per_dim = []
    for i, (lo, _hi) in enumerate(_pads(layer, len(out))):
        o = np.arange(out[i])[:, None]
        t = np.arange(layer.kernel_size[i])[None, :]
        idx = o * layer.stride[i] - lo + t * layer.dilation[i]
        per_dim.append(_map_index(idx, shape[1 + i], layer.padding_mode or "zeros"))
    return _assemble(layer, shape, out, per_dim)


def circulant(layer: nn.Module | AffineLayer, input_shape: Sequence[int]) -> tuple[sp.csr_array, np.ndarray]:
    """The circulant embedding of a convolution (Carlsson 2019, eqs. 16-18), float64, sparse.

    Circular padding, stride 1 and the kernel centred (tap ``t`` reads offset
    ``t * dilation - dilation * (k - 1) // 2``), so the output keeps the input's spatial size and each
    filter's block of ``prod(S)`` rows consists of the cyclic shifts of its first row. The layer's own
    stride and padding are ignored: this is the operator the cone geometry is defined on.
    """
    layer = as_affine(layer)
    if layer.kind == "linear":
        raise UnsupportedLayerError(f"layer {layer.name!r} is linear: only convolutions have a circulant embedding")
    shape = _check(layer, input_shape)
    spatial = shape[1:]
    per_dim = []
    for i, size in enumerate(spatial):
        k, d = layer.kernel_size[i], layer.dilation[i]
        idx = np.arange(size)[:, None] + np.arange(k)[None, :] * d - d * (k - 1) // 2
        per_dim.append(_map_index(idx, size, "circular"))
    return _assemble(layer, shape, spatial, per_dim)
