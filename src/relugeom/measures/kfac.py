"""K-FAC: the Kronecker-factored approximate Fisher (Daróczy 2020; Martens and Grosse 2015, sec. 3;
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
- **Grouped convolutions** (depthwise included): the ``G`` groups of a convolution are independent layers side
  by side (group ``g``'s outputs read only group ``g``'s inputs), so each gets its own factors ``G_g (x) A_g``
  over its rows of ``[W | b]`` (contiguous in the row-major order above) and the layer's block is their block
  diagonal: like the blocks of two layers, the blocks of two groups are left out. For one input and one
  output position, ``G_g (x) A_g`` is exactly the Fisher block of group ``g``'s parameters.
- Layers are found on the network's graph (:mod:`relugeom.graph`; residual networks included) and read by
  their layer rules (:meth:`relugeom.modules.Rule.kfac_patches`): Linear, Conv1d/2d/3d with any stride,
  padding (mode included), dilation and groups.
- ``E`` is the **mean** over the samples (not the sum).
- ``fisher="empirical"``: ``y`` is the true label; ``fisher="model"`` (the true Fisher): the
  expectation over ``y ~ p(.|x)`` is exact, not a Monte-Carlo sample: ``sum_c p_c (p - e_c)(p - e_c)^T
  = diag(p) - p p^T`` has rank K-1, and its eigen-decomposition gives K-1 backward passes from the
  logits whose outer products sum to it exactly.

Computed in float64 by default. Other modules with a rule and parameters (batch norm, PReLU) get no block and
are named in a warning; a module holding parameters without a layer rule (a transposed convolution, attention),
or a layer called more than once (shared weights), is refused with its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .._repr import short_repr
from ..errors import BudgetExceeded, ShapeError, UnsupportedLayerError, warn
from ..graph import Node
from ..modules.registry import unsupported_error
from ..modules.rule import implements
from ._common import (
    Data,
    batches,
    check_loss,
    forward,
    n_samples,
    network_graph,
    parameter_holders,
    prepare,
    shape_checked,
    shared,
)

FISHERS = ("empirical", "model")


@dataclass(frozen=True)
class KFACBlock:
    """Kronecker factors of one layer: the block is ``kron(G, A)`` over row-major ``[W | b]``; for a convolution
    with ``groups > 1``, ``A`` and ``G`` hold one factor per group (first axis) and the block is the block diagonal
    of the groups' ``kron(G[g], A[g])``."""

    __repr__ = short_repr

    name: str
    A: torch.Tensor  # (in+1, in+1), or (in, in) without bias; (groups, in/groups [+1], ...) for groups > 1
    G: torch.Tensor  # (out, out); (groups, out/groups, out/groups) for groups > 1
    weight_shape: tuple[int, ...]
    bias: bool
    groups: int = 1

    @property
    def n_params(self) -> int:
        return self.groups * self.A.shape[-1] * self.G.shape[-1]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, G)`` with the group axis always first (length 1 for an ungrouped layer)."""
        if self.groups == 1:
            return self.A[None], self.G[None]
        return self.A, self.G

    def trace(self) -> torch.Tensor:
        """``sum_g tr(G_g) tr(A_g)``, the trace of the block."""
        A, G = self.factors()
        return (A.diagonal(dim1=1, dim2=2).sum(1) * G.diagonal(dim1=1, dim2=2).sum(1)).sum()


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
        return float(sum(b.trace() for b in self.blocks))

    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        v = torch.as_tensor(v, dtype=self.blocks[0].A.dtype)
        if v.dim() != 1 or v.numel() != self.n_params:
            raise ShapeError(f"K-FAC vectors have {self.n_params} entries (flat), got shape {tuple(v.shape)}")
        out, i = [], 0
        for b in self.blocks:  # a group's rows of [W | b] are contiguous: (groups, out/groups, in)
            out.append(v[i : i + b.n_params].reshape(b.groups, b.G.shape[-1], b.A.shape[-1]))
            i += b.n_params
        return out

    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """``F v`` blockwise: ``(G (x) A) vec(V) = vec(G V A)`` (row-major vec, A symmetric), group by group."""
        out = []
        for b, V in zip(self.blocks, self._split(v)):
            A, G = b.factors()
            out.append((G @ V @ A).reshape(-1))
        return torch.cat(out)

    def vTMv(self, v: torch.Tensor) -> float:  # noqa: N802
        """``v^T F v``; with ``v = theta`` (:meth:`vector`), a K-FAC estimate of the squared Fisher-Rao norm."""
        total = 0.0
        for b, V in zip(self.blocks, self._split(v)):
            A, G = b.factors()
            total += float((V * (G @ V @ A)).sum())
        return total

    def dense(self, max_params: int = 20_000) -> torch.Tensor:
        """The full block-diagonal matrix (small models only)."""
        if self.n_params > max_params:
            raise BudgetExceeded(f"K-FAC dense(): {self.n_params} parameters (limit {max_params}); use mv/vTMv")
        return torch.block_diag(*[torch.kron(G, A) for b in self.blocks for A, G in zip(*b.factors())])

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
        """One row per layer: parameters, traces of the factors (summed over the groups) and of the block."""
        rows = []
        for i, b in enumerate(self.blocks):
            A, G = b.factors()
            rows.append({"layer": b.name, "layer_index": i, "n_params": b.n_params, "groups": b.groups,
                         "trace_A": float(A.diagonal(dim1=1, dim2=2).sum()),
                         "trace_G": float(G.diagonal(dim1=1, dim2=2).sum()), "trace": float(b.trace())})  # fmt: skip
        return pd.DataFrame(rows)


def kfac(
    model: nn.Module, data: Data, fisher: str = "empirical", *,
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
) -> KFAC:  # fmt: skip
    """K-FAC factors of every Linear/Conv layer of ``model`` on ``data`` (see the module docstring).

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
    with shape_checked(m, data_[0][0]):
        return _kfac(m, data_, fisher)


def _kfac(m: nn.Module, data_: list[tuple[torch.Tensor, torch.Tensor]], fisher: str) -> KFAC:
    graph = network_graph(m, data_[0][0])
    ruled, unruled = parameter_holders(graph)
    if unruled:
        raise unsupported_error(unruled[0], "K-FAC", "it holds parameters without a layer rule")
    layers = [n for n in ruled if implements(n.rule, "kfac_patches")]  # type: ignore[arg-type]
    for node in layers:
        why = node.rule.check(node)  # type: ignore[union-attr]
        if why is not None:
            raise unsupported_error(node, "K-FAC", why)
    why = shared(graph, layers)
    if why is not None:
        raise UnsupportedLayerError(f"K-FAC: {why}; one Kronecker block per layer needs one call per layer")
    if not layers:
        raise UnsupportedLayerError("K-FAC: the model has no Linear/Conv layer")
    skipped = [n.label for n in ruled if n not in layers]
    if skipped:
        warn("K-FAC covers Linear/Conv layers only; no block for " + ", ".join(skipped))
    wanted = set(layers)
    Aacc: dict[Node, torch.Tensor] = {}
    Gacc: dict[Node, torch.Tensor] = {}
    positions: dict[Node, int] = {}
    store: dict[Node, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(node: Node, args: list, kwargs: dict) -> torch.Tensor | None:
        if node not in wanted:
            return None
        out = node.rule.forward(node, args, kwargs)  # type: ignore[union-attr]
        if not out.requires_grad:  # a layer fed by the input: the autograd graph starts at its output
            out = out.detach().requires_grad_(True)
        store[node] = (args[0].detach(), out)
        return out

    def add(acc: dict[Node, torch.Tensor], node: Node, rows: torch.Tensor) -> None:
        """``rows`` (N, groups, k): add each group's ``rows^T rows``."""
        gram = rows[:, 0].T @ rows[:, 0] if rows.shape[1] == 1 else torch.einsum("ngi,ngj->gij", rows, rows)
        if node in acc:
            acc[node] += gram
        else:
            acc[node] = gram

    for x, y in data_:
        store.clear()
        # gradients are needed for the layer outputs only: the autograd graph starts at the first layers'
        # outputs and the parameters are not in it (no weight or input gradients are computed)
        out = graph.run(x, hook=hook)
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            forward(m, x)  # raises the shape error
        check_loss(F.cross_entropy(out, y))
        outs = [store[n][1] for n in layers]
        for n in layers:
            a = n.rule.kfac_patches(n, store[n][0])  # type: ignore[union-attr]  # (B, T, groups, k)
            positions[n] = a.shape[1]
            a = a.reshape(-1, *a.shape[2:])
            groups, k = a.shape[1], a.shape[2]
            bias = n.module.bias is not None  # type: ignore[union-attr]
            if n not in Aacc:
                Aacc[n] = a.new_zeros((groups, k + 1, k + 1) if bias else (groups, k, k))
            acc = Aacc[n]
            if groups == 1:
                acc[0, :k, :k].addmm_(a[:, 0].T, a[:, 0])
            else:
                acc[:, :k, :k].baddbmm_(a.permute(1, 2, 0), a.permute(1, 0, 2))
            if bias:  # [a, 1]^T [a, 1] without copying the patches
                s = a.sum(0)
                acc[:, :k, k] += s
                acc[:, k, :k] += s
                acc[:, k, k] += a.shape[0]
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
            grads = torch.autograd.grad(out, outs, grad_outputs=v[c], retain_graph=c < v.shape[0] - 1,
                                        allow_unused=True)  # fmt: skip
            for n, g in zip(layers, grads):
                if g is not None:
                    rows = n.rule.kfac_grads(n, g)  # type: ignore[union-attr]  # (B, T, groups, out/groups)
                    add(Gacc, n, rows.reshape(-1, *rows.shape[2:]))
    N = n_samples(data_)
    blocks = []
    for n in layers:
        mod = n.module
        groups = Aacc[n].shape[0]
        out_g = mod.weight.shape[0] // groups  # type: ignore[union-attr]
        G = Gacc.get(n)  # a single-class model, or a layer the output does not depend on: a zero Fisher
        G = Aacc[n].new_zeros((groups, out_g, out_g)) if G is None else G.reshape(groups, out_g, out_g)
        A = Aacc[n].div_(N * positions[n])
        G = G.div_(N)
        if groups == 1:
            A, G = A[0], G[0]
        blocks.append(KFACBlock(n.module_name or n.label, A.cpu(), G.cpu(), tuple(mod.weight.shape),  # type: ignore[union-attr]
                                mod.bias is not None, groups))  # type: ignore[union-attr]  # fmt: skip
    return KFAC(blocks, fisher, N)
