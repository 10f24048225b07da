"""K-FAC: the Kronecker-factored approximate Fisher (seed 004; Martens and Grosse 2015, sec. 3;
convolutions as in Grosse and Martens 2016, "KFC").

For each Linear/Conv layer with weight ``W`` (out x in; a conv's ``in = C/groups * prod(kernel)``)
and bias ``b``, the layer's parameters are ordered as the row-major flattening of ``[W | b]``
(out x (in+1)): the bias is folded in as a last input column fed by a constant 1. The layer's
block of the Fisher is approximated by ``G (x) A``:

- **Linear**: ``A = E[a a^T]`` with ``a = [input, 1]``, ``G = E[g g^T]`` with ``g = dl/ds`` the
  gradient of the per-sample loss ``l`` (cross-entropy) with respect to the layer's output ``s``;
  then ``grad_[W|b] l = g (x) a`` and, for one input, ``G (x) A`` is exactly the Fisher block.
- **Conv** (KFC, spatially uncorrelated derivatives): with ``a_t`` the (padded) input patch at output
  position ``t`` (plus the constant 1) and ``g_t`` the output gradient at ``t``, over ``T`` positions,
  ``A = E[(1/T) sum_t a_t a_t^T]`` and ``G = E[sum_t g_t g_t^T]``: the 1/T scaling sits on ``A``, so
  that ``G (x) A = T E_t[g g^T] (x) E_t[a a^T]``, KFC's approximation of ``E[(sum_t g_t (x) a_t)(...)^T]``.
- ``E`` is the **mean** over the samples (not the sum).
- ``fisher="empirical"``: ``y`` is the true label; ``fisher="model"`` (the true Fisher): the
  expectation over ``y ~ p(.|x)`` is exact, not a Monte-Carlo sample: ``sum_c p_c (p - e_c)(p - e_c)^T
  = diag(p) - p p^T`` has rank K-1, and its eigen-decomposition gives K-1 backward passes from the
  logits whose outer products sum to it exactly.

Computed in float64 by default. Other parameterised modules (batch norm) get no block and are
named in a warning; grouped convolutions and Conv3d are not supported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BudgetExceeded, ShapeError, UnsupportedLayerError, warn
from ..geometry.unroll import _pads
from ..layers import as_affine
from ._common import AFFINE, Data, batches, check_loss, forward, n_samples, prepare

FISHERS = ("empirical", "model")


@dataclass(frozen=True)
class KFACBlock:
    """Kronecker factors of one layer: the block is ``kron(G, A)`` over row-major ``[W | b]``."""

    name: str
    A: torch.Tensor  # (in+1, in+1), or (in, in) without bias
    G: torch.Tensor  # (out, out)
    weight_shape: tuple[int, ...]
    bias: bool

    @property
    def n_params(self) -> int:
        return self.A.shape[0] * self.G.shape[0]


class KFAC:
    """Block-diagonal K-FAC approximation of a model's Fisher (see the module docstring).

    Vectors are flat tensors ordered layer by layer (in module order), each layer's part the
    row-major flattening of ``[W.reshape(out, -1) | b]``; :meth:`vector` builds one from a model.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> K = kfac(net, (torch.randn(8, 3), torch.randint(0, 2, (8,))))
    >>> K.n_params, abs(K.trace() - sum(float(b.G.trace() * b.A.trace()) for b in K.blocks)) < 1e-9
    (26, True)
    """

    def __init__(self, blocks: list[KFACBlock], fisher: str, n_samples: int) -> None:
        self.blocks, self.fisher, self.n_samples = blocks, fisher, n_samples

    @property
    def n_params(self) -> int:
        return sum(b.n_params for b in self.blocks)

    def trace(self) -> float:
        """``sum_layers tr(G) tr(A)`` (the trace of a Kronecker product is the product of the traces)."""
        return float(sum(torch.trace(b.G) * torch.trace(b.A) for b in self.blocks))

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        v = torch.as_tensor(v, dtype=self.blocks[0].A.dtype)
        if v.dim() != 1 or v.numel() != self.n_params:
            raise ShapeError(f"K-FAC vectors have {self.n_params} entries (flat), got shape {tuple(v.shape)}")
        out, i = [], 0
        for b in self.blocks:
            out.append(v[i : i + b.n_params].reshape(b.G.shape[0], b.A.shape[0]))
            i += b.n_params
        return out

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """``F v`` blockwise: ``(G (x) A) vec(V) = vec(G V A)`` (row-major vec, A symmetric)."""
        return torch.cat([(b.G @ V @ b.A).reshape(-1) for b, V in zip(self.blocks, self._split(v))])

    def vTMv(self, v: torch.Tensor) -> float:  # noqa: N802
        """``v^T F v``; with ``v = theta`` (:meth:`vector`), a K-FAC estimate of the squared Fisher-Rao norm."""
        return float(sum((V * (b.G @ V @ b.A)).sum() for b, V in zip(self.blocks, self._split(v))))

    def dense(self, max_params: int = 20_000) -> torch.Tensor:
        """The full block-diagonal matrix (small models only)."""
        if self.n_params > max_params:
            raise BudgetExceeded(f"K-FAC dense(): {self.n_params} parameters (limit {max_params}); use mv/vTMv")
        return torch.block_diag(*[torch.kron(b.G, b.A) for b in self.blocks])

    def vector(self, model: nn.Module | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """A model's parameters as a flat vector in K-FAC order."""
        sd = model.state_dict() if isinstance(model, nn.Module) else model
        parts = []
        for b in self.blocks:
            W = sd[f"{b.name}.weight"].detach().to(b.A.dtype).cpu().reshape(b.weight_shape[0], -1)
            if b.bias:
                W = torch.cat([W, sd[f"{b.name}.bias"].detach().to(b.A.dtype).cpu()[:, None]], 1)
            parts.append(W.reshape(-1))
        return torch.cat(parts)

    def table(self) -> pd.DataFrame:
        """One row per layer: parameters, traces of the factors and of the block."""
        rows = [{"layer": b.name, "layer_index": i, "n_params": b.n_params, "trace_A": float(torch.trace(b.A)),
                 "trace_G": float(torch.trace(b.G)), "trace": float(torch.trace(b.A) * torch.trace(b.G))}
                for i, b in enumerate(self.blocks)]  # fmt: skip
        return pd.DataFrame(rows)


def _patches(mod: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Inputs as (B, T, in) rows: the input itself for Linear, the padded patches for Conv1d/2d."""
    if isinstance(mod, nn.Linear):
        return x.reshape(x.shape[0], 1, -1) if x.dim() == 2 else x.reshape(x.shape[0], -1, x.shape[-1])
    L = as_affine(mod)
    n = x.dim() - 2
    pads = [p for lohi in reversed(_pads(L, n)) for p in lohi]
    if any(pads):
        x = F.pad(x, pads, mode="constant" if L.padding_mode == "zeros" else L.padding_mode)
    if n == 1:
        x = x.unsqueeze(2)
        k, s, d = (1, *L.kernel_size), (1, *L.stride), (1, *L.dilation)
    else:
        k, s, d = L.kernel_size, L.stride, L.dilation
    cols = F.unfold(x, k, dilation=d, stride=s)  # (B, C*k*k, T)
    return cols.transpose(1, 2)


def kfac(
    model: nn.Module, data: Data, fisher: str = "empirical", *,
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
) -> KFAC:  # fmt: skip
    """K-FAC factors of every Linear/Conv1d/Conv2d layer of ``model`` on ``data`` (see the module docstring).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> K = kfac(net, (torch.randn(8, 3), torch.randint(0, 2, (8,))))
    >>> [tuple(b.A.shape) + tuple(b.G.shape) for b in K.blocks]
    [(4, 4, 4, 4), (5, 5, 2, 2)]
    """
    if fisher not in FISHERS:
        raise ValueError(f"fisher must be one of {FISHERS}, got {fisher!r}")
    m = prepare(model, device=device, dtype=dtype).requires_grad_(False)
    data_ = batches(data, device=device, dtype=dtype)
    mods: list[tuple[str, nn.Module]] = []
    skipped = []
    for name, mod in m.named_modules():
        if isinstance(mod, AFFINE):
            if isinstance(mod, nn.Conv3d) or getattr(mod, "groups", 1) != 1:
                raise UnsupportedLayerError(
                    f"K-FAC: layer {name!r} ({type(mod).__name__}, groups={getattr(mod, 'groups', 1)}) is not "
                    "supported (Linear, Conv1d/2d with groups=1)"
                )
            mods.append((name, mod))
        elif any(True for _ in mod.parameters(recurse=False)):
            skipped.append(f"{name} ({type(mod).__name__})")
    if not mods:
        raise UnsupportedLayerError("K-FAC: the model has no Linear/Conv layer")
    if skipped:
        warn("K-FAC covers Linear/Conv layers only; no block for " + ", ".join(skipped))
    Aacc: dict[str, torch.Tensor] = {}
    Gacc: dict[str, torch.Tensor] = {}
    positions: dict[str, int] = {}
    store: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):  # noqa: ANN202
        def fn(mod: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
            if not out.requires_grad:  # the first layer: the graph starts at its output
                out = out.detach().requires_grad_(True)
                store[name] = (args[0].detach(), out)
                return out
            store[name] = (args[0].detach(), out)
            return None

        return fn

    def add(acc: dict[str, torch.Tensor], name: str, rows: torch.Tensor) -> None:
        gram = rows.T @ rows
        if name in acc:
            acc[name] += gram
        else:
            acc[name] = gram

    handles = [mod.register_forward_hook(hook(n)) for n, mod in mods]
    try:
        for x, y in data_:
            store.clear()
            # gradients are needed for the layer outputs only: the graph starts at the first layer's
            # output and the parameters are not in it (no weight or input gradients are computed)
            out = forward(m, x)
            check_loss(F.cross_entropy(out, y))
            outs = [store[n][1] for n, _ in mods]
            for n, mod in mods:
                a = _patches(mod, store[n][0])  # (B, T, in)
                positions[n] = a.shape[1]
                a = a.reshape(-1, a.shape[-1])
                k = a.shape[1]
                if n not in Aacc:
                    Aacc[n] = a.new_zeros((k + 1, k + 1) if mod.bias is not None else (k, k))
                acc = Aacc[n]
                acc[:k, :k].addmm_(a.T, a)
                if mod.bias is not None:  # [a, 1]^T [a, 1] without copying the patches
                    s = a.sum(0)
                    acc[:k, k] += s
                    acc[k, :k] += s
                    acc[k, k] += a.shape[0]
            # dl/df of the cross-entropy is softmax(f) - e_y; the model Fisher needs E_{y~p}[g_y g_y^T]:
            # one backward pass per column of a square root of that expectation.
            p = F.softmax(out, 1).detach()
            if fisher == "empirical":
                v = (p - F.one_hot(y, out.shape[1]).to(p.dtype))[None]
            else:
                # sum_c p_c (p - e_c)(p - e_c)^T = diag(p) - p p^T =: M has rank K-1 (M 1 = 0): its
                # eigen-decomposition gives K-1 output gradients u_j with sum_j u_j u_j^T = M.
                M = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
                lam, U = torch.linalg.eigh(M)  # ascending; lam[:, 0] = 0 up to rounding
                v = (U * lam.clamp_min(0).sqrt()[:, None, :])[:, :, 1:].permute(2, 0, 1)  # (K-1, B, K)
            for c in range(v.shape[0]):
                grads = torch.autograd.grad(out, outs, grad_outputs=v[c], retain_graph=c < v.shape[0] - 1)
                for (n, _mod), g in zip(mods, grads):
                    g = g.reshape(g.shape[0], g.shape[1], -1)  # (B, out, T)
                    add(Gacc, n, g.transpose(1, 2).reshape(-1, g.shape[1]))
    finally:
        for h in handles:
            h.remove()
    N = n_samples(data_)
    for n, mod in mods:  # a single-class model has a zero Fisher
        Gacc.setdefault(n, Aacc[n].new_zeros((mod.weight.shape[0],) * 2))
    blocks = [KFACBlock(n, Aacc[n].div_(N * positions[n]).cpu(), Gacc[n].div_(N).cpu(), tuple(mod.weight.shape),
                        mod.bias is not None) for n, mod in mods]  # fmt: skip
    return KFAC(blocks, fisher, N)
