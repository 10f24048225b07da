"""Sharpness measures (Daróczy 2020): epsilon-sharpness (Keskar et al. 2017), expected sharpness
(Neyshabur et al. 2017) and the Hessian trace (Hutchinson's estimator).

``L`` is the mean cross-entropy over ``data`` and ``theta`` every parameter of the model (float64).

- **epsilon-sharpness** (Keskar et al., "On large-batch training...", Metric 2.1, full space):
  ``(max_{z in C_eps} L(theta + z) - L(theta)) / (1 + L(theta))`` over the box
  ``C_eps = {z : |z_i| <= eps (|theta_i| + 1)}``; the maximum is searched by L-BFGS-B (scipy) from
  ``restarts`` seeded uniform starts in the box, so the value is a lower bound of the true maximum.
  Keskar et al. print it times 100; relugeom does not.
- **expected sharpness** (Neyshabur et al. 2017, sec. 3): ``E_nu[L(theta + nu)] - L(theta)`` with
  ``nu_i ~ N(0, sigma^2)`` (or ``N(0, (sigma |theta_i|)^2)`` with ``relative=True``), estimated by
  ``n_samples`` seeded draws with the standard error of the mean. Draws come in antithetic pairs
  ``(nu, -nu)`` (``antithetic=True``, the default): the first-order term cancels within a pair, which
  removes most of the variance; the standard error is then over the pair means.
- **Hessian trace**: ``tr(H) = E_v[v^T H v]`` with Rademacher ``v`` (Hutchinson), Hessian-vector
  products by double back-propagation, with the standard error over the probes.

The Hessian trace is *not* invariant under Dinh et al.'s rescalings, while the Fisher-Rao norm is
(tests/test_fisher_rao.py checks both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize
from torch import nn
from torch.func import functional_call

from .._progress import progress
from .._repr import short_repr
from ._common import Data, batches, check_loss, prepare


@dataclass(frozen=True)
class EpsilonSharpness:
    __repr__ = short_repr

    value: float  # (max L - L) / (1 + L), best over the restarts
    loss: float
    max_loss: float
    epsilon: float
    values: tuple[float, ...]  # one per restart
    std_error: float  # of the mean over restarts (NaN for one restart): the spread of the local maxima
    iterations: int
    seed: int


@dataclass(frozen=True)
class Estimate:
    """A seeded Monte-Carlo estimate and its standard error."""

    __repr__ = short_repr

    value: float
    std_error: float
    n_samples: int
    seed: int
    loss: float | None = None


def _flat(m: nn.Module) -> tuple[list[str], list[torch.Size], torch.Tensor]:
    names, shapes, parts = [], [], []
    for n, p in m.named_parameters():
        names.append(n)
        shapes.append(p.shape)
        parts.append(p.detach().reshape(-1))
    return names, shapes, torch.cat(parts)


def _loss_at(m: nn.Module, names, shapes, data, theta: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    params, i = {}, 0
    for n, s in zip(names, shapes):
        k = math.prod(s)
        params[n] = theta[i : i + k].reshape(s)
        i += k
    buffers = dict(m.named_buffers())
    total, count = 0.0, 0
    for x, y in data:
        out = functional_call(m, (params, buffers), (x,))
        total = total + torch.nn.functional.cross_entropy(out, y, reduction="sum")
        count += int(y.shape[0])
    return total / count


def epsilon_sharpness(
    model: nn.Module, data: Data, epsilon: float = 1e-3, *, restarts: int = 1, max_iter: int = 50, seed: int = 0,
    device: str | torch.device = "cpu",
) -> EpsilonSharpness:  # fmt: skip
    """Keskar et al.'s epsilon-sharpness of ``model`` on ``data`` (see the module docstring).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> s = epsilon_sharpness(net, (X, y), epsilon=1e-3, max_iter=10)
    >>> s.max_loss >= s.loss, s.value == (s.max_loss - s.loss) / (1 + s.loss)  # the box's worst loss, relative
    (True, True)
    """
    if epsilon <= 0:
        raise ValueError("epsilon must be positive")
    m = prepare(model, device=device)
    data_ = batches(data, device=device)
    names, shapes, theta = _flat(m)
    with torch.no_grad():
        base = float(_loss_at(m, names, shapes, data_, theta))
    check_loss(torch.tensor(base))
    radius = (epsilon * (theta.abs() + 1)).cpu().numpy()
    rng = np.random.default_rng(seed)

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        zt = torch.from_numpy(z).to(theta).requires_grad_(True)
        loss = _loss_at(m, names, shapes, data_, theta + zt)
        (g,) = torch.autograd.grad(loss, zt)
        return -float(loss.detach()), -g.detach().cpu().numpy()

    values, best, iters = [], base, 0
    for _ in range(restarts):
        z0 = rng.uniform(-radius, radius)
        res = minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=list(zip(-radius, radius)),
                       options={"maxiter": max_iter})  # fmt: skip
        top = max(-float(res.fun), base)
        values.append((top - base) / (1 + base))
        best = max(best, top)
        iters += int(res.nit)
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return EpsilonSharpness((best - base) / (1 + base), base, best, epsilon, tuple(values), se, iters, seed)


def expected_sharpness(
    model: nn.Module, data: Data, sigma: float = 1e-2, *, n_samples: int = 20, relative: bool = False, seed: int = 0,
    antithetic: bool = True, device: str | torch.device = "cpu",
) -> Estimate:  # fmt: skip
    """Neyshabur et al.'s expected sharpness ``E[L(theta + nu)] - L(theta)`` with its standard error.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> s = expected_sharpness(nn.Linear(3, 2), (X, y), sigma=0.01, n_samples=8)
    >>> s.n_samples, s.std_error > 0  # value: the mean rise of the loss under N(0, sigma^2) weight noise
    (8, True)
    """
    if n_samples < 2:
        raise ValueError("n_samples must be at least 2 (for the standard error)")
    m = prepare(model, device=device)
    data_ = batches(data, device=device)
    names, shapes, theta = _flat(m)
    g = torch.Generator(device=theta.device).manual_seed(seed)
    scale = sigma * theta.abs() if relative else torch.full_like(theta, sigma)
    with torch.no_grad():
        base = float(_loss_at(m, names, shapes, data_, theta))
        check_loss(torch.tensor(base))
        vals = []
        for _ in progress(range(n_samples), desc="expected sharpness", total=n_samples):
            nu = torch.randn(theta.shape, generator=g, dtype=theta.dtype, device=theta.device) * scale
            up = float(_loss_at(m, names, shapes, data_, theta + nu)) - base
            if antithetic:
                up = 0.5 * (up + float(_loss_at(m, names, shapes, data_, theta - nu)) - base)
            vals.append(up)
    v = np.asarray(vals)
    return Estimate(float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))), n_samples, seed, base)


def hessian_trace(
    model: nn.Module, data: Data, *, n_samples: int = 50, seed: int = 0, device: str | torch.device = "cpu",
) -> Estimate:  # fmt: skip
    """Hutchinson estimate of the trace of the Hessian of the mean loss, with its standard error.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> net = nn.Linear(3, 2, bias=False)
    >>> est = hessian_trace(net, (X, y), n_samples=30)
    >>> p = torch.softmax(net(X).detach().double(), 1)  # linear softmax: tr H = mean ||x||^2 sum_k p_k (1 - p_k)
    >>> exact = float(((X.double() ** 2).sum(1) * (p * (1 - p)).sum(1)).mean())
    >>> abs(est.value - exact) < 4 * est.std_error
    True
    """
    if n_samples < 2:
        raise ValueError("n_samples must be at least 2 (for the standard error)")
    m = prepare(model, device=device)
    data_ = batches(data, device=device)
    params = [p for p in m.parameters()]
    N = sum(int(y.shape[0]) for _, y in data_)
    quad = np.zeros(n_samples)
    for x, y in data_:
        loss = torch.nn.functional.cross_entropy(m(x), y, reduction="sum") / N
        check_loss(loss)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        for k in range(n_samples):
            g = torch.Generator(device=x.device).manual_seed(seed * 1_000_003 + k)
            vs = [torch.randint(0, 2, p.shape, generator=g, device=p.device).to(p.dtype) * 2 - 1 for p in params]
            hv = torch.autograd.grad(grads, params, grad_outputs=vs, retain_graph=True)
            quad[k] += float(sum((h * v).sum() for h, v in zip(hv, vs)))
    return Estimate(float(quad.mean()), float(quad.std(ddof=1) / math.sqrt(n_samples)), n_samples, seed)
