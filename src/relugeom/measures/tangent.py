"""Tangent sensitivity (Daróczy 2020, Definition 3.1 and Lemma 3.1).

The *tangent sample sensitivity* of a network ``f`` at input ``x`` is the ``N_theta x d_in`` matrix
``S(x) = d^2 f(x; theta) / (d theta d x)``, and the network's *tangent sensitivity* is its expectation over the
data, the ``N_theta x d_in`` matrix ``E_x S(x)`` (Definition 3.1). Reported:

* the defined quantity: ``frobenius = ||E_x S(x)||_F`` (with ``frobenius_sq`` and, for the random method, its
  standard error ``frobenius_sq_se``) and ``spectral = ||E_x S(x)||_2``;
* the *mean squared sample sensitivity* ``mean_sq = E_x ||S(x)||_F^2`` (the quantity of Lemma 3.1's identity),
  with ``per_sample_sq = ||S(x)||_F^2`` and ``mean_norm = E_x ||S(x)||_F``. By Jensen,
  ``||E_x S(x)||_F^2 <= E_x ||S(x)||_F^2``; the two differ as much as the samples' S(x) point different ways.

``f`` is the sum of the logits (``output="sum"``, the default) or each logit separately (``output="per_logit"``:
norms then run over the ``K x N_theta x d_in`` tensor; its spectral norm is that of the ``(K N_theta) x d_in``
matricization).

- ``method="exact"``: every column ``S(x) e_j`` by one forward-over-reverse product per input coordinate (float64;
  for small inputs): ``||S(x)||_F^2 = sum_j ||S(x) e_j||^2``, ``E_x S(x) e_j`` summed over the data, so both
  Frobenius norms are exact; the spectral norm is exact too (SVD of the dense ``E_x S(x)`` when it has at most
  ``dense_limit`` entries, else Lanczos bidiagonalisation to machine precision, ``scipy.sparse.linalg.svds``).
- ``method="random"`` (image-sized inputs): ``||A||_F^2 = E_z ||A z||^2`` for Rademacher ``z`` (``E z z^T = I``).
  For ``mean_sq`` every sample gets its own ``n_probes`` probes (standard error of the data mean); for
  ``frobenius_sq`` each probe is shared by all samples, ``v = mean_x S(x) z`` is one pass over the data, and the
  estimate is the mean of ``||v||^2`` over ``n_probes`` probes, with the standard error over the probes. Both are
  unbiased; their square roots (``frobenius``, ``mean_norm``) are biased low (Jensen) and indicative. The spectral
  norm is computed by ``svds`` with products ``E_x S(x) v`` and ``E_x S(x)^T u`` (one pass over the data each),
  to ``spectral_tol`` relative accuracy. That takes tens of such passes, several times the rest, so by default
  (``spectral=None``) the spectral norm is given only where it needs no further pass (the exact method with the
  dense matrix kept, or ``d_in = 1``); ``spectral=True`` asks for it always, ``spectral=False`` never.

Each ``S z`` is computed by one of two routes (``route=``): "generic", a forward-over-reverse JVP per
sample (torch.func, any architecture), or "piecewise_linear" for networks of Linear/Conv layers,
ReLU-like activations, pooling and eval-mode batch norms (output "sum"): one backward pass per batch and
one forward-mode pass per probe, with no per-sample gradients (:mod:`._tangent_pl`; 3-9x faster on
VGG9, ``benchmarks/bench_tangent.py``). "auto" takes the second when the model qualifies and, on the
first batch, agrees with the generic route on two samples (else it warns and uses the generic one: a
functional non-linearity the module check cannot see). The products with ``E_x S(x)^T`` of the iterative
spectral norm always take the generic route.

For a ReLU network, ``S(x)`` is constant on each activation region (Lemma 3.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from .._progress import progress_bar
from .._repr import short_repr
from ..errors import BudgetExceeded, RelugeomWarning, UnsupportedLayerError, warn
from ..graph import Graph
from . import _tangent_pl
from ._common import Data, batches, forward, network_graph, prepare

OUTPUTS = ("sum", "per_logit")
METHODS = ("exact", "random")
ROUTES = ("auto", "generic", "piecewise_linear")


@dataclass(frozen=True)
class TangentSensitivity:
    """Daróczy 2020, Definition 3.1: the tangent sensitivity ``E_x S(x)`` (its norms) and the mean squared sample
    sensitivity ``E_x ||S(x)||_F^2`` (see the module docstring)."""

    __repr__ = short_repr

    mean_sq: float  # mean squared sample sensitivity E_x ||S(x)||_F^2 (Lemma 3.1)
    std_error: float  # of mean_sq (0 for the exact method)
    mean_norm: float  # E_x ||S(x)||_F (plug-in for the random method)
    per_sample_sq: np.ndarray  # ||S(x)||_F^2 per sample (estimates for the random method)
    method: str
    output: str
    n_probes: int
    seed: int | None
    route: str = "generic"  # how each S z was computed (see the module docstring)
    frobenius_sq: float = math.nan  # ||E_x S(x)||_F^2, the tangent sensitivity's squared Frobenius norm
    frobenius_sq_se: float = math.nan  # its standard error (0 for the exact method)
    spectral: float | None = None  # ||E_x S(x)||_2 (None when not computed)
    spectral_method: str = ""  # "svd" (dense, exact), "svds" (Lanczos), "frobenius" (d_in = 1) or why it is missing

    @property
    def frobenius(self) -> float:
        """``||E_x S(x)||_F`` (the square root of ``frobenius_sq``; biased low for the random method)."""
        return math.sqrt(max(self.frobenius_sq, 0.0))

    @property
    def mean_sq_sample_sensitivity(self) -> float:
        """The mean squared sample sensitivity ``E_x ||S(x)||_F^2`` (an alias of ``mean_sq``)."""
        return self.mean_sq


def _sample_fn(m: nn.Module, output: str):  # noqa: ANN202
    """Per-sample ``S(x) z`` as one flat vector (parameters in ``named_parameters`` order), and its square norm."""
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

    def vec(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _, d = jvp(tangent, (x,), (z,))
        if output == "sum":
            return torch.cat([d[k].reshape(-1) for k in params])
        return torch.cat([d[k].reshape(d[k].shape[0], -1) for k in params], 1).reshape(-1)  # logit-major

    def sq_norm(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (vec(x, z) ** 2).sum()

    return vec, sq_norm


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


class _Columns:
    """``S(x) z`` over a batch: per-sample squared norms and the batch sum (a flat parameter-space vector)."""

    def __init__(self, m: nn.Module, graph: Graph | None, output: str, route: str, chunk: int) -> None:
        self.m, self.graph, self.route, self.chunk = m, graph, route, chunk
        self.names = [k for k, _ in m.named_parameters()]
        self.shapes = [p.shape for _, p in m.named_parameters()]
        self.offsets = np.cumsum([0] + [s.numel() for s in self.shapes]).tolist()
        self.vec = vmap(_sample_fn(m, output)[0])

    def _flat(self, acc: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Parameter blocks by name as one flat vector; a parameter left out is zero."""
        out = x.new_zeros(1, self.offsets[-1])
        self._add(acc, out)
        return out[0]

    def _add(self, acc: dict[str, torch.Tensor], out: torch.Tensor) -> None:
        """Add parameter blocks by name, each ``(rows, *shape)``, to the flat ``out (rows, N_theta)``."""
        for i, n in enumerate(self.names):
            if n in acc:
                out[:, self.offsets[i]:self.offsets[i + 1]] += acc[n].detach().reshape(out.shape[0], -1)

    def columns(self, x: torch.Tensor, dirs: torch.Tensor, signals: dict | None, out: torch.Tensor,
                max_pairs: int = 256) -> torch.Tensor:  # fmt: skip
        """For directions ``dirs (J, ...)`` shared by every sample: ``||S(x) z_j||^2`` as ``(J, B)``, and the batch
        sums ``sum_x S(x) z_j`` added to ``out (J, N_theta)``; the piecewise-linear route takes up to
        ``max_pairs`` (direction, sample) pairs per forward-mode pass."""
        if self.route != "piecewise_linear":
            sqs = []
            for j, z in enumerate(dirs):
                sq, total = self(x, z.expand_as(x), signals)
                sqs.append(sq)
                out[j] += total  # type: ignore[operator]
            return torch.stack(sqs)  # type: ignore[arg-type]
        step = max(1, max_pairs // x.shape[0])
        sqs = []
        for i in range(0, dirs.shape[0], step):
            sq, acc = _tangent_pl.column_terms(self.graph, x, dirs[i:i + step], signals)  # type: ignore[arg-type]
            sqs.append(sq.detach())
            self._add(acc, out[i:i + step])
        return torch.cat(sqs)

    def signals(self, x: torch.Tensor) -> dict | None:
        return _tangent_pl.output_signals(self.graph, x) if self.route == "piecewise_linear" else None  # type: ignore[arg-type]

    def __call__(self, x: torch.Tensor, z: torch.Tensor, signals: dict | None, *, sums: bool = True,
                 squares: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
        """Per-sample ``||S(x) z||^2`` (the piecewise-linear route skips them without ``squares``: None) and, with
        ``sums``, the batch sum ``sum_x S(x) z`` (else None)."""
        if self.route == "piecewise_linear":
            sq, acc = _tangent_pl.terms(self.graph, x, z, signals, sums=sums, squares=squares)  # type: ignore[arg-type]
            sq = None if sq is None else sq.detach()
            return sq, (None if acc is None else self._flat(acc, x))
        sqs, total = [], None
        for i in range(0, x.shape[0], self.chunk):
            V = self.vec(x[i:i + self.chunk], z[i:i + self.chunk]).detach()
            sqs.append((V**2).sum(1))
            if sums:
                total = V.sum(0) if total is None else total + V.sum(0)
        return torch.cat(sqs), total


def _rmatvec(m: nn.Module, data_: list, u: torch.Tensor, n: int) -> torch.Tensor:
    """``E_x S(x)^T u`` (output "sum"): the input gradient of ``<u, grad_theta f(x)>``, a directional derivative of
    ``f`` along ``u`` in parameter space, averaged over the data."""
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = dict(m.named_buffers())
    parts, i = {}, 0
    for k, v in params.items():
        parts[k] = u[i:i + v.numel()].reshape(v.shape)
        i += v.numel()

    def directional(xb: torch.Tensor) -> torch.Tensor:
        _, d = jvp(lambda p: functional_call(m, (p, buffers), (xb,)).sum(), (params,), (parts,))
        return d

    total = None
    for x, _ in data_:
        g = grad(directional)(x).sum(0)
        total = g if total is None else total + g
    return (total / n).reshape(-1)


def _spectral_svds(cols: _Columns, m: nn.Module, data_: list, n: int, d_in: int, n_theta: int, *, seed: int,
                   tol: float, maxiter: int) -> tuple[float | None, str]:  # fmt: skip
    """``||E_x S(x)||_2`` by ``scipy.sparse.linalg.svds`` on the operator ``v -> E_x S(x) v``."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, svds

    x0 = data_[0][0]

    def matvec(v: np.ndarray) -> np.ndarray:
        vt = torch.as_tensor(np.asarray(v).reshape(-1), dtype=x0.dtype, device=x0.device)
        total = torch.zeros(n_theta, dtype=x0.dtype, device=x0.device)
        for x, _ in data_:
            total += cols(x, vt.reshape(x.shape[1:]).expand_as(x), cols.signals(x), squares=False)[1]  # type: ignore[operator]
        return (total / n).cpu().numpy()

    def rmatvec(u: np.ndarray) -> np.ndarray:
        ut = torch.as_tensor(np.asarray(u).reshape(-1), dtype=x0.dtype, device=x0.device)
        return _rmatvec(m, data_, ut, n).cpu().numpy()

    op = LinearOperator((n_theta, d_in), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(min(n_theta, d_in))
    try:
        s = svds(op, k=1, tol=tol, maxiter=maxiter, v0=v0, return_singular_vectors=False, solver="arpack")
    except ArpackNoConvergence:
        warn(f"tangent sensitivity: the spectral norm did not converge in {maxiter} iterations", RelugeomWarning)
        return None, f"svds did not converge in {maxiter} iterations"
    return float(np.max(s)), "svds"


def tangent_sensitivity(
    model: nn.Module, data: Data, *, method: str = "exact", output: str = "sum", n_probes: int = 16,
    seed: int = 0, chunk: int = 16, max_exact_dim: int = 4096, route: str = "auto", spectral: bool | None = None,
    spectral_tol: float = 1e-6, spectral_maxiter: int = 200, dense_limit: int = 2 * 10**7,
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
    >>> abs(ts.frobenius_sq - 6.0) < 1e-9  # S(x) is the same for every x: ||E_x S(x)||^2 = E_x ||S(x)||^2
    True
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
    _, sq_fn = _sample_fn(m, output)
    generic = vmap(sq_fn, chunk_size=chunk)
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
    cols = _Columns(m, graph if chosen == "piecewise_linear" else None, output, chosen, chunk)  # type: ignore[arg-type]
    n = sum(int(x.shape[0]) for x, _ in data_)
    d_in = x0[0].numel()
    n_theta = sum(p.numel() for p in m.parameters()) * (1 if output == "sum" else int(forward(m, x0[:1]).shape[1]))
    spec, spec_how = None, "not requested"
    if method == "exact":
        if d_in > max_exact_dim:
            raise BudgetExceeded(f"exact tangent sensitivity needs {d_in} JVPs per sample (limit "
                                 f"{max_exact_dim}); use method='random'")  # fmt: skip
        ps, fro_sq, dense = _exact(cols, data_, d_in, n_theta, n, dense_limit)
        fro_se, var = 0.0, None
        if spectral is not False:
            if d_in == 1:
                spec, spec_how = math.sqrt(fro_sq), "frobenius"
            elif dense is not None:
                gram = dense @ dense.T  # (d_in, d_in)
                spec, spec_how = math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0)), "svd"
    else:
        ps, var, fro_sq, fro_se = _random(cols, data_, n, n_theta, n_probes, seed)
        dense = None
    if spectral is None and spec is None:  # the default: only where it comes without further passes
        spec_how = "not by default (spectral=True: svds, tens of passes over the data)"
    elif spectral and spec is None and spec_how == "not requested":
        if d_in == 1:
            spec, spec_how = (math.sqrt(fro_sq) if method == "exact" else None), "frobenius"
        elif output != "sum":
            spec_how = "per_logit: only from the dense matrix (exact method, small models)"
        else:
            spec, spec_how = _spectral_svds(cols, m, data_, n, d_in, n_theta, seed=seed, tol=spectral_tol,
                                            maxiter=spectral_maxiter)  # fmt: skip
    se = 0.0 if method == "exact" else float(math.sqrt(var.sum()) / n)
    return TangentSensitivity(
        mean_sq=float(ps.mean()), std_error=se, mean_norm=float(np.sqrt(np.clip(ps, 0, None)).mean()),
        per_sample_sq=ps, method=method, output=output, n_probes=n_probes if method == "random" else 0,
        seed=seed if method == "random" else None, route=chosen, frobenius_sq=fro_sq, frobenius_sq_se=fro_se,
        spectral=spec, spectral_method=spec_how if spectral is not False else "not requested",
    )  # fmt: skip


def _exact(cols: _Columns, data_: list, d_in: int, n_theta: int, n: int,
           dense_limit: int) -> tuple[np.ndarray, float, torch.Tensor | None]:  # fmt: skip
    """Every column ``S(x) e_j``: per-sample ``||S(x)||_F^2``, ``||E_x S(x)||_F^2`` and, when it has at most
    ``dense_limit`` entries, the dense ``(E_x S(x))^T`` (d_in x N_theta). Columns are taken in blocks that fit
    ``dense_limit``; each block sees every batch once (the piecewise-linear signals are recomputed per block)."""
    x0 = data_[0][0]
    block = max(1, min(d_in, dense_limit // max(n_theta, 1)))
    per_sample = [torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) for x, _ in data_]
    eye = torch.eye(d_in, dtype=x0.dtype, device=x0.device)
    fro_sq, keep = 0.0, block >= d_in
    dense = None
    for start in range(0, d_in, block):
        js = range(start, min(d_in, start + block))
        acc = torch.zeros(len(js), n_theta, dtype=x0.dtype, device=x0.device)
        for b, (x, _) in enumerate(data_):
            dirs = eye[start:start + len(js)].reshape(len(js), *x.shape[1:])
            per_sample[b] += cols.columns(x, dirs, cols.signals(x), acc).sum(0)
        acc /= n
        fro_sq += float(torch.linalg.vector_norm(acc)) ** 2
        if keep:
            dense = acc
    return torch.cat(per_sample).cpu().numpy(), fro_sq, dense


def _random(cols: _Columns, data_: list, n: int, n_theta: int, n_probes: int, seed: int,
            memory: int = 2**28) -> tuple[np.ndarray, np.ndarray, float, float]:  # fmt: skip
    """The random method in one sweep of the data: per-sample ``||S(x)||_F^2`` from ``n_probes`` probes of each
    sample's own (mean and variance over the probes), and the unbiased ``||E_x S(x)||_F^2 = E_z ||E_x S(x) z||^2``
    from ``n_probes`` probes shared by every sample, with its standard error over the probes. Both use each
    batch's back-propagated signals, computed once per batch; the shared probes' running sums (``n_probes x
    N_theta`` floats) are kept ``memory`` bytes at a time (a further sweep, signals recomputed, per group)."""
    x0 = data_[0][0]
    g = torch.Generator(device=x0.device).manual_seed(seed)
    gs = torch.Generator(device=x0.device).manual_seed(seed + 7919)
    shared = [(torch.randint(0, 2, x0.shape[1:], generator=gs, device=x0.device) * 2 - 1).to(x0.dtype)
              for _ in range(n_probes)]  # fmt: skip
    size = max(1, memory // (8 * max(n_theta, 1)))
    groups = [range(i, min(n_probes, i + size)) for i in range(0, n_probes, size)]
    per_sample, per_var, vals = [], [], []
    bar = progress_bar(len(groups) * len(data_), desc="tangent sensitivity batches", delay=2.0)
    for gi, group in enumerate(groups):
        totals = torch.zeros(len(group), n_theta, dtype=x0.dtype, device=x0.device)
        for x, _ in data_:
            signals = cols.signals(x)
            if gi == 0:
                est = []
                for _ in range(n_probes):
                    z = (torch.randint(0, 2, x.shape, generator=g, device=x.device) * 2 - 1).to(x.dtype)
                    est.append(cols(x, z, signals, sums=False)[0].cpu().numpy())
                est = np.stack(est)  # (probes, B)
                per_sample.append(est.mean(0))
                per_var.append(est.var(0, ddof=1) / n_probes if n_probes > 1 else np.full(x.shape[0], np.nan))
            for r, k in enumerate(group):  # one pass each (batched like the exact method's columns, they were slower)
                totals[r] += cols(x, shared[k].expand_as(x), signals, squares=False)[1]  # type: ignore[operator]
            bar.update(1)
        vals += ((totals / n) ** 2).sum(1).cpu().tolist()
    bar.close()
    v = np.asarray(vals)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else math.nan
    return np.concatenate(per_sample), np.concatenate(per_var), float(v.mean()), se
