"""Tangent sensitivity (seed 004; Daróczy 2020, Definition 3.1 and Lemma 3.1).

The tangent sample sensitivity of a network ``f`` at input ``x`` is the ``N_theta x d_in`` matrix
``S(x) = d^2 f(x; theta) / (d theta d x)``. ``f`` is the sum of the logits (``output="sum"``, the
default) or each logit separately (``output="per_logit"``: the Frobenius norm then runs over the
``K x N_theta x d_in`` tensor, i.e. ``sum_k ||S_k(x)||_F^2``). Reported: ``||S(x)||_F^2`` and
``||S(x)||_F`` per sample, and their means over the data (the tangent sensitivity is
``E_x ||S(x)||_F^2`` in the seed's Lemma 3.1).

- ``method="exact"``: ``||S(x)||_F^2 = sum_j ||S(x) e_j||_2^2`` over the ``d_in`` input coordinates,
  each column one forward-over-reverse Jacobian-vector product (exact, float64; for small inputs).
- ``method="random"``: ``||S||_F^2 = E_z ||S z||^2`` for Rademacher ``z`` (``E z z^T = I``): an
  unbiased seeded estimate from ``n_probes`` probes per sample, with the standard error of the data
  mean. The per-sample norm (square root) of the estimate is biased low (Jensen) and only indicative.

Each ``S z`` is computed by one of two routes (``route=``): "generic", a forward-over-reverse JVP per
sample (torch.func, any architecture), or "piecewise_linear" for networks of Linear/Conv layers,
ReLU-like activations, pooling and eval-mode batch norms (output "sum"): one backward pass per batch and
one forward-mode pass per probe, with no per-sample gradients (:mod:`._tangent_pl`; 3-9x faster on
VGG9, ``benchmarks/bench_tangent.py``). "auto" takes the second when the model qualifies and, on the
first batch, agrees with the generic route on two samples (else it warns and uses the generic one: a
functional non-linearity the module check cannot see).

For a ReLU network, ``S(x)`` is constant on each activation region (Lemma 3.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from ..errors import BudgetExceeded, RelugeomWarning, UnsupportedLayerError, warn
from ..graph import Graph
from . import _tangent_pl
from ._common import Data, batches, forward, network_graph, prepare

OUTPUTS = ("sum", "per_logit")
METHODS = ("exact", "random")
ROUTES = ("auto", "generic", "piecewise_linear")


@dataclass(frozen=True)
class TangentSensitivity:
    mean_sq: float  # E_x ||S(x)||_F^2
    std_error: float  # of mean_sq (0 for the exact method)
    mean_norm: float  # E_x ||S(x)||_F (plug-in for the random method)
    per_sample_sq: np.ndarray  # ||S(x)||_F^2 per sample (estimates for the random method)
    method: str
    output: str
    n_probes: int
    seed: int | None
    route: str = "generic"  # how each S z was computed (see the module docstring)


def _sample_fn(m: nn.Module, output: str):  # noqa: ANN202
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = dict(m.named_buffers())

    def logits(p: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(m, (p, buffers), (x.unsqueeze(0),))[0]

    if output == "sum":
        def tangent(x: torch.Tensor) -> dict:
            return grad(lambda p: logits(p, x).sum())(params)
    else:
        def tangent(x: torch.Tensor) -> dict:
            return jacrev(lambda p: logits(p, x))(params)

    def sq_norm(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _, d = jvp(tangent, (x,), (z,))
        return sum((v**2).sum() for v in d.values())

    return sq_norm


def _choose_route(route: str, graph: Graph | UnsupportedLayerError | None, x: torch.Tensor, z: torch.Tensor,
                  output: str, generic) -> str:  # noqa: ANN001  # fmt: skip
    """The route to take (see the module docstring)."""
    if route == "generic":
        return route
    if output != "sum":
        why: UnsupportedLayerError | None = UnsupportedLayerError(f"{_tangent_pl.ROUTE}: output 'per_logit'")
    elif isinstance(graph, UnsupportedLayerError):  # the network's graph could not be read
        why = graph
    else:
        why = _tangent_pl.unsupported(graph)  # type: ignore[arg-type]
    if why is not None:
        if route == "piecewise_linear":
            raise why
        return "generic"
    if route == "auto":
        fast = _tangent_pl.sq_norms(graph, x[:2], z[:2], _tangent_pl.output_signals(graph, x[:2]))  # type: ignore[arg-type]
        slow = generic(x[:2], z[:2]).detach()
        if not torch.allclose(fast, slow, rtol=1e-7, atol=1e-12 * float(slow.abs().max())):
            warn("tangent sensitivity: the piecewise-linear route disagrees with the generic route on the first "
                 "samples (a functional non-linearity?); using the generic route", RelugeomWarning)  # fmt: skip
            return "generic"
    return "piecewise_linear"


def tangent_sensitivity(
    model: nn.Module, data: Data, *, method: str = "exact", output: str = "sum", n_probes: int = 16,
    seed: int = 0, chunk: int = 16, max_exact_dim: int = 4096, route: str = "auto",
    device: str | torch.device = "cpu",
) -> TangentSensitivity:  # fmt: skip
    """Tangent sensitivity of ``model`` over ``data`` (see the module docstring).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> ts = tangent_sensitivity(nn.Linear(3, 2), (X, y))
    >>> ts.mean_sq  # f = sum_k (W x + b)_k: d^2 f / dW_kj dx_j = 1 for each of the 2 x 3 weights
    6.0
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    m = prepare(model, device=device)
    data_ = batches(data, device=device)
    forward(m, data_[0][0][:1])  # shape check
    generic = vmap(_sample_fn(m, output), chunk_size=chunk)
    g = torch.Generator(device=data_[0][0].device).manual_seed(seed)
    x0 = data_[0][0]
    probe0 = torch.randint(0, 2, x0.shape, generator=torch.Generator(device=x0.device).manual_seed(seed + 1),
                           device=x0.device).to(x0.dtype) * 2 - 1  # fmt: skip
    graph: Graph | UnsupportedLayerError | None = None
    if route != "generic" and output == "sum":
        try:
            graph = network_graph(m, x0)
        except UnsupportedLayerError as e:
            graph = e
    chosen = _choose_route(route, graph, x0, probe0, output, generic)
    per_sample, per_var = [], []
    for x, _ in data_:
        if chosen == "piecewise_linear":
            signals = _tangent_pl.output_signals(graph, x)  # type: ignore[arg-type]

            def sq_norm(x_: torch.Tensor, z_: torch.Tensor, s: dict = signals) -> torch.Tensor:
                return _tangent_pl.sq_norms(graph, x_, z_, s)  # type: ignore[arg-type]
        else:
            sq_norm = generic
        d_in = x[0].numel()
        if method == "exact":
            if d_in > max_exact_dim:
                raise BudgetExceeded(f"exact tangent sensitivity needs {d_in} JVPs per sample (limit "
                                     f"{max_exact_dim}); use method='random'")  # fmt: skip
            total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            eye = torch.eye(d_in, dtype=x.dtype, device=x.device)
            for j in range(d_in):
                z = eye[j].reshape(x.shape[1:]).expand_as(x)
                total += sq_norm(x, z).detach()
            per_sample.append(total.cpu().numpy())
        else:
            est = []
            for _ in range(n_probes):
                z = (torch.randint(0, 2, x.shape, generator=g, device=x.device) * 2 - 1).to(x.dtype)
                est.append(sq_norm(x, z).detach().cpu().numpy())
            est = np.stack(est)  # (probes, B)
            per_sample.append(est.mean(0))
            per_var.append(est.var(0, ddof=1) / n_probes if n_probes > 1 else np.full(x.shape[0], np.nan))
    ps = np.concatenate(per_sample)
    n = len(ps)
    se = 0.0 if method == "exact" else float(math.sqrt(np.concatenate(per_var).sum()) / n)
    return TangentSensitivity(
        mean_sq=float(ps.mean()), std_error=se, mean_norm=float(np.sqrt(np.clip(ps, 0, None)).mean()),
        per_sample_sq=ps, method=method, output=output, n_probes=n_probes if method == "random" else 0,
        seed=seed if method == "random" else None, route=chosen,
    )  # fmt: skip
