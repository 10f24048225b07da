"""Input patches of affine layers, shared by the measures' layer rules (K-FAC factors, piecewise-linear tangent
sensitivity): the rows ``a_t`` such that the layer's output at position ``t`` is ``W a_t + b`` within each group.

A convolution's patches are taken after the layer's own padding (zeros, circular, reflect or replicate; ints,
``"same"`` or ``"valid"``): every padding mode is a linear map of the input, so the patches of a tangent are the
tangent of the patches. Float arithmetic only moves entries (no sums), so patches are exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear_patches(x: torch.Tensor) -> torch.Tensor:
    """A Linear layer's input ``(B, ..., in)`` as ``(B, T, 1, in)``: one row per position of the leading dims."""
    return x.reshape(x.shape[0], -1, 1, x.shape[-1])


def conv_patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A convolution's input ``(B, C, *S)`` as ``(B, T, G, C/G * prod(kernel))``: one row per output position ``t``
    and group ``g``, in the order of ``weight[g-th block of out channels].reshape(out/G, -1)``.

    Example
    -------
    >>> conv = nn.Conv2d(4, 2, 3, padding=1, groups=2, bias=False)
    >>> x = torch.randn(3, 4, 5, 5)
    >>> a = conv_patches(conv, x)  # (B, T, G, K)
    >>> w = conv.weight.reshape(2, 1, -1)  # (G, out/G, K)
    >>> y = torch.einsum("btgk,gok->bgot", a, w).reshape(3, 2, 5, 5)
    >>> bool(torch.allclose(y, conv(x), atol=1e-5))
    True
    """
    from ..geometry.unroll import _pads
    from ..layers import as_affine

    L = as_affine(module)
    n = x.dim() - 2
    pads = [p for lohi in reversed(_pads(L, n)) for p in lohi]
    if any(pads):
        x = F.pad(x, pads, mode="constant" if L.padding_mode == "zeros" else L.padding_mode)
    groups = int(L.groups or 1)
    b = x.shape[0]
    if n <= 2:
        if n == 1:
            x = x.unsqueeze(2)
            k, s, d = (1, *L.kernel_size), (1, *L.stride), (1, *L.dilation)
        else:
            k, s, d = L.kernel_size, L.stride, L.dilation
        cols = F.unfold(x, k, dilation=d, stride=s)  # (B, C*k, T)
        return cols.transpose(1, 2).reshape(b, cols.shape[2], groups, -1)
    for i in range(n):  # any rank: strided windows of span d*(k-1)+1, every d-th entry kept
        span = L.dilation[i] * (L.kernel_size[i] - 1) + 1
        x = x.unfold(2 + i, span, L.stride[i])
        if L.dilation[i] > 1:
            x = x[..., :: L.dilation[i]]
    # (B, C, *O, *k) -> (B, *O, C, *k)
    x = x.permute(0, *range(2, 2 + n), 1, *range(2 + n, 2 + 2 * n))
    t = x.shape[1 : 1 + n].numel()
    return x.reshape(b, t, groups, -1)


def patch_sq_norm(delta: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Per sample ``||sum_p delta[:, p] patches[:, p]^T||_F^2`` for ``delta (B, O, P)``, ``patches (B, K, P)``.

    Through the ``P x P`` Gram matrices of the positions when they are few (``p^2 (o + k) < o k p``), else
    through the ``O x K`` products.
    """
    _, o, p = delta.shape
    k = patches.shape[1]
    if p * p * (o + k) < o * k * p:
        return (torch.einsum("bop,boq->bpq", delta, delta) * torch.einsum("bkp,bkq->bpq", patches, patches)).sum((1, 2))
    return torch.einsum("bop,bkp->bok", delta, patches).pow(2).sum((1, 2))


def grouped_sq_norm(delta: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """:func:`patch_sq_norm` summed over groups: ``delta (B, G, O/G, P)``, ``patches (B, P, G, K)`` (the layout of
    :func:`conv_patches`) -> ``(B,)``."""
    b, g = delta.shape[:2]
    if g == 1:
        return patch_sq_norm(delta[:, 0], patches[:, :, 0].transpose(1, 2))
    d = delta.reshape(b * g, *delta.shape[2:])
    a = patches.permute(0, 2, 3, 1).reshape(b * g, patches.shape[3], patches.shape[1])
    return patch_sq_norm(d, a).reshape(b, g).sum(1)


def grouped_sum(delta: torch.Tensor, patches: torch.Tensor, blocks: int = 1) -> torch.Tensor:
    """The batch sum ``sum_b sum_p delta[b, :, p] patches[b, p]^T`` per group, in the layout of the layer's
    ``weight.reshape(out, -1)``, over each of ``blocks`` equal consecutive parts of the batch: ``delta (B, G, O/G,
    P)``, ``patches (B, P, G, K)`` -> ``(blocks, O, K)``."""
    d = delta.reshape(blocks, -1, *delta.shape[1:])
    s = torch.einsum("jbgop,jbpgk->jgok", d, patches.reshape(blocks, -1, *patches.shape[1:]))
    return s.reshape(blocks, -1, s.shape[3])
