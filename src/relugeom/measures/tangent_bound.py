"""Daróczy 2020, Proposition 3.2: an upper bound on the tangent sensitivity of a bias-free ReLU network.

For a bias-free feed-forward ReLU network with k weight layers, ``w_max_i = max |w|`` over layer i's weights and
the number of active nodes ``T(x)`` following a normal distribution ``N(mu, sigma)`` over the data, the talk bounds
the (squared) Frobenius norm of the tangent sensitivity ``E_x S(x)`` (Definition 3.1) by

    N_theta d_in sigma^{2(k-1)} 2^{k-1} / k^{2k} * Gamma(k/2)^2 / pi * Psi^2 * (prod_i w_max_i)^2,
    Psi = M(-(k-1)/2, 1/2, -mu^2 / (2 sigma^2))                    (Kummer's confluent hypergeometric 1F1)

Reading: ``sigma^{k-1} 2^{(k-1)/2} Gamma(k/2) / sqrt(pi) * M(-(k-1)/2, 1/2, -mu^2/(2 sigma^2))`` is exactly the
absolute moment ``E|T|^{k-1}`` of ``T ~ N(mu, sigma^2)`` (tested by numerical integration), so the bound is
``N_theta d_in (E|T|^{k-1})^2 (prod_i w_max_i)^2 / k^{2k}``: every entry of S(x) is a sum over paths through
active nodes of products of k - 1 weights (times an input-independent factor), and the talk counts the paths by
``(T/k)^{k-1}``-like terms. The slide's text extraction prints "Krummer" and "Pi" (read as pi). relugeom computes
the bound as printed and the measured ``||E_x S(x)||_F^2`` next to it, and says whether the bound holds.

``T(x)`` is counted as the number of positive pre-activations of every affine layer but the last (in a bias-free
ReLU network each hidden affine output feeds a ReLU); ``mu`` and ``sigma`` are their mean and standard deviation
over the data (sigma = 0 uses ``E|T|^{k-1} = mu^{k-1}``). The layers and their order are read from the network's
graph (:mod:`relugeom.graph`), whose layer rules say what is a weight layer and what is homogeneous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import hyp1f1
from torch import nn

from .._repr import short_repr
from ..errors import ArchitectureError
from ..graph import Node
from ._common import Data, batches, forward, network_graph, prepare
from .fisher_rao import _degrees
from .tangent import tangent_sensitivity


def normal_abs_moment(p: float, mu: float, sigma: float) -> float:
    """``E|T|^p`` for ``T ~ N(mu, sigma^2)``: ``sigma^p 2^{p/2} Gamma((p+1)/2) / sqrt(pi) M(-p/2, 1/2, z)``,
    ``z = -mu^2 / (2 sigma^2)``, M Kummer's function."""
    if sigma == 0:
        return abs(mu) ** p
    kummer = hyp1f1(-p / 2, 0.5, -(mu**2) / (2 * sigma**2))
    return sigma**p * 2 ** (p / 2) * math.gamma((p + 1) / 2) / math.sqrt(math.pi) * kummer


def proposition_3_2(n_params: int, d_in: int, k: int, w_max: list[float], mu: float, sigma: float) -> float:
    """The bound of Proposition 3.2 as printed (see the module docstring).

    >>> round(proposition_3_2(10, 2, 2, [0.5, 2.0], 3.0, 0.0), 10)  # 10 * 2 * 3^2 * 1^2 / 2^4
    11.25
    """
    if k < 1 or len(w_max) != k:
        raise ValueError(f"need k >= 1 and one w_max per layer, got k={k}, {len(w_max)} values")
    if sigma == 0:
        moment_sq = abs(mu) ** (2 * (k - 1))
    else:
        psi = hyp1f1(-(k - 1) / 2, 0.5, -(mu**2) / (2 * sigma**2))
        moment_sq = sigma ** (2 * (k - 1)) * 2 ** (k - 1) * math.gamma(k / 2) ** 2 / math.pi * psi**2
    return n_params * d_in * moment_sq / k ** (2 * k) * math.prod(w_max) ** 2


@dataclass(frozen=True)
class TangentBound:
    """Proposition 3.2 for one network and data set: the bound, its ingredients and the measured value."""

    __repr__ = short_repr

    bound: float
    measured_frobenius_sq: float  # ||E_x S(x)||_F^2 (tangent_sensitivity, exact or estimated)
    holds: bool
    n_params: int
    d_in: int
    k: int
    w_max: tuple[float, ...]
    mu: float
    sigma: float
    active_counts: np.ndarray  # T(x) per sample


def tangent_sensitivity_bound(model: nn.Module, data: Data, *, method: str = "exact", n_probes: int = 16,
                              seed: int = 0, device: str | torch.device = "cpu") -> TangentBound:  # fmt: skip
    """Proposition 3.2 of Daróczy 2020 against the measured tangent sensitivity (see the module docstring).

    Raises :class:`ArchitectureError` when the network has a non-zero bias or a non-homogeneous activation.

    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    >>> b = tangent_sensitivity_bound(net, (torch.randn(64, 4), torch.zeros(64, dtype=torch.long)))
    >>> b.k, b.n_params, b.holds
    (2, 56, True)
    """
    m = prepare(model, device=device)
    for name, p in m.named_parameters():
        if name.endswith("bias") and bool((p != 0).any()):
            raise ArchitectureError(f"Proposition 3.2 is for bias-free networks; {name} is not zero")
    data_ = batches(data, device=device)
    forward(m, data_[0][0][:1])  # shape check
    graph = network_graph(m, data_[0][0])
    _, reasons = _degrees(graph)  # bias-free layers and homogeneous maps only, every path of the same depth
    norms = [n.label for n in graph.operations if n.rule is not None and n.rule.role == "norm"]
    if norms:
        reasons.append(f"a normalization layer (not a plain feed-forward ReLU network): {', '.join(norms[:3])}")
    if reasons:
        raise ArchitectureError(f"Proposition 3.2 is for bias-free feed-forward ReLU networks; {'; '.join(reasons)}")
    layers = [n for n in graph.operations if n.rule is not None and n.rule.role == "layer"]
    hidden = set(layers[:-1])
    counts = []
    for x, _ in data_:
        found: list[torch.Tensor] = []

        def count(node: Node, args: list, kwargs: dict, found: list = found) -> torch.Tensor | None:
            if node not in hidden:
                return None
            out = node.rule.forward(node, args, kwargs)  # type: ignore[union-attr]
            found.append((out.reshape(out.shape[0], -1) > 0).sum(1))
            return out

        with torch.no_grad():
            graph.run(x, hook=count)
        counts.append(sum(found).cpu().numpy() if found else np.zeros(x.shape[0]))
    T = np.concatenate(counts).astype(np.float64)
    mu, sigma = float(T.mean()), float(T.std(ddof=1)) if len(T) > 1 else 0.0
    w_max = [float(node.module.weight.detach().abs().max()) for node in layers]  # type: ignore[union-attr]
    k = len(layers)
    n_params = sum(p.numel() for p in m.parameters())
    d_in = data_[0][0][0].numel()
    bound = proposition_3_2(n_params, d_in, k, w_max, mu, sigma)
    ts = tangent_sensitivity(m, data_, method=method, n_probes=n_probes, seed=seed, spectral=False)
    return TangentBound(bound, ts.frobenius_sq, bool(ts.frobenius_sq <= bound), n_params, d_in, k, tuple(w_max),
                        mu, sigma, T)  # fmt: skip
