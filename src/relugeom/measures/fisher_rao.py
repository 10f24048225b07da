"""The Fisher-Rao norm (Daróczy 2020; Liang, Poggio, Rakhlin and Stokes 2017, Definition 2 and Theorem 3.1).

``||theta||_fr^2 = <theta, I(theta) theta> = E <theta, grad_theta l(f_theta(X), Y)>^2`` with ``l`` the
cross-entropy. Two Fishers:

- ``fisher="empirical"``: Y is the true label of X;
- ``fisher="model"``: Y ~ p_theta(.|X), the expectation over Y taken exactly (a sum over the classes
  weighted by the softmax), not sampled.

Two routes, both exact (float64 by default):

- **JVP** (any architecture; biases, batch norm in eval mode, any activation): ``<theta, grad_theta l>
  = <dl/df, J_theta f . theta>`` and ``J_theta f . theta`` is one forward-mode Jacobian-vector product
  in the direction ``theta`` itself (every parameter of the model, biases and BN affine included).
  Where every node of the network's graph has a tangent rule (Linear/Conv/BatchNorm/ReLU/pooling,
  reshapes, residual additions, concatenations: :meth:`relugeom.modules.Rule.theta_tangent`) the tangent is
  carried node by node at about two forward passes' cost (``J_x o . t + o`` per layer, since each layer is
  linear in its own parameters; checked against ``torch.func.jvp`` on the first sample); other models use
  ``torch.func.jvp``.
- **Identity** (Theorem 3.1, eq. 3.1): when ``f`` is positively homogeneous of degree ``L+1`` in ``theta``,
  Euler's theorem gives ``J_theta f . theta = (L+1) f`` and ``||theta||_fr^2 = (L+1)^2 E <dl/df, f>^2``.
  ``L+1`` is read from the graph: every node adds its rule's degree (:meth:`relugeom.modules.Rule.param_degree`:
  1 for a bias-free Linear/Conv, 1 for a batch norm with zero running mean and shift, 0 for ReLU, leaky ReLU,
  pooling and reshapes), and the inputs of an addition or concatenation must carry the same degree. So ``L+1``
  is the number of weight layers on *every* input-output path, the same for all of them. A residual network
  whose shortcut skips weight layers has paths of unequal depth (a ResNet's identity shortcut skips two convs,
  its projection shortcut has one conv where the branch has two): ``f`` is then not homogeneous in ``theta``
  at all (scaling ``theta`` changes its activation pattern), no single ``L`` satisfies the identity, and the
  identity route is refused with the addition named in a warning. Biases, batch norm with a mean or shift,
  non-homogeneous activations and modules without a rule are refused the same way. The degree is checked
  numerically, ``f(2 theta) = 2^(L+1) f(theta)`` on the first batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from .._repr import short_repr
from ..errors import warn
from ..graph import Graph, Node
from ..modules.registry import HOW_TO
from ._common import Data, all_finite, batches, check_loss, forward, network_graph, prepare, shape_checked
from ._tangent_theta import theta_tangent

FISHERS = ("empirical", "model")


@dataclass(frozen=True)
class FisherRaoNorm:
    """Squared Fisher-Rao norm by the JVP route and (when it applies) by the (L+1)^2 identity."""

    __repr__ = short_repr

    norm2: float  # JVP route, E <theta, grad l>^2
    norm2_identity: float | None  # (L+1)^2 E <dl/df, f>^2, None when the identity does not apply
    depth: int | None  # L+1: weight layers on the path
    fisher: str
    n_samples: int
    identity_note: str = ""  # why the identity was not applied

    @property
    def norm(self) -> float:
        return self.norm2**0.5


def _quadratic(out: torch.Tensor, u: torch.Tensor, y: torch.Tensor, fisher: str) -> torch.Tensor:
    """Per-sample E_Y <dl/df, u>^2 for the cross-entropy (dl/df = softmax(f) - e_Y)."""
    p = F.softmax(out, dim=1)
    pu = (p * u).sum(1)
    if fisher == "empirical":
        return (pu - u.gather(1, y[:, None])[:, 0]) ** 2
    return (p * (pu[:, None] - u) ** 2).sum(1)


def _degrees(graph: Graph) -> tuple[int | None, list[str]]:
    """The degree of positive homogeneity of the output in the parameters, from the graph (see the module
    docstring), and why it has none: one line per reason, naming the nodes."""
    found: dict[str, list[str]] = {}
    degree: dict[Node, int | None] = {}  # None: no tensor value (sizes)
    params = {n for n, _ in graph.model.named_parameters()}
    for node in graph.nodes:
        if node.op == "input":
            degree[node] = 0 if node is graph.input else None
            continue
        if node.op == "attribute":
            if str(node.target) in params:
                found.setdefault("a parameter read outside a layer", []).append(repr(node.target))
            degree[node] = None
            continue
        ins = sorted({degree[i] for i in node.inputs if degree.get(i) is not None})  # type: ignore[type-var]
        if node.op == "output" or (node.rule is not None and node.rule.role == "shape"):
            degree[node] = ins[0] if ins and node.op == "output" else None
            continue
        if node.rule is None:
            found.setdefault(f"no layer rule ({HOW_TO})", []).append(node.label)
            own: int | str = 1 if node.op == "module" and any(True for _ in node.module.parameters()) else 0
        else:
            why = node.rule.check(node)
            own = node.rule.param_degree(node) if why is None else why
            if isinstance(own, str):
                found.setdefault(own, []).append(node.label)
                own = int(node.rule.parametrized)  # its nominal degree, to go on looking for unequal depths
        if len(ins) > 1:
            found.setdefault("paths of unequal depth meet (f is not positively homogeneous in theta: no single L "
                             "fits)", []).append(f"{node.label} ({' and '.join(map(str, ins))} weight layers)")
        degree[node] = (ins[-1] if ins else 0) + own
    reasons = []
    for why, labels in found.items():
        more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
        reasons.append(f"{why}: {', '.join(labels[:3])}{more}")
    depth = degree[graph.output]
    if depth is None and not reasons:
        reasons.append("the output does not depend on the input through the graph")
    return (None if reasons else depth), reasons


def _identity_check(model: nn.Module, graph: Graph, x: torch.Tensor) -> tuple[int | None, str]:
    """(L+1, "") when f is positively homogeneous of degree L+1 in theta, else (None, why)."""
    depth, reasons = _degrees(graph)
    if depth is not None:
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        with torch.no_grad():
            f1 = functional_call(model, (params, buffers), (x[:8],))
            f2 = functional_call(model, ({k: 2 * v for k, v in params.items()}, buffers), (x[:8],))
        tol = 1e-9 if f1.dtype == torch.float64 else 1e-4
        err = float((f2 - 2.0**depth * f1).abs().max() / (2.0**depth * f1.abs().max()).clamp_min(1e-300))
        if err > tol:
            reasons.append(f"f(2 theta) != 2^{depth} f(theta) (relative error {err:.1e}): paths of unequal depth?")
    if reasons:
        return None, "; ".join(reasons)
    return depth, ""


def fisher_rao_norm(
    model: nn.Module, data: Data, fisher: str = "empirical", *, identity: bool = True,
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64,
) -> FisherRaoNorm:  # fmt: skip
    """Squared Fisher-Rao norm ``E <theta, grad_theta l>^2`` of ``model`` on ``data`` (Daróczy 2020; Liang et al. 2017).

    ``data`` is ``(X, y)`` or an iterable of ``(x, y)`` batches; the expectation is the mean over all
    samples. ``theta`` is every parameter of the model. The model is copied to ``dtype`` (float64:
    exact up to rounding) in eval mode. With ``identity=True`` the (L+1)^2 identity of Theorem 3.1 is
    also computed when it applies (see the module docstring); otherwise a warning names why not.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    >>> X, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    >>> r = fisher_rao_norm(net, (X, y))
    >>> r.depth, abs(r.norm2 - r.norm2_identity) < 1e-10 * r.norm2
    (2, True)
    """
    if fisher not in FISHERS:
        raise ValueError(f"fisher must be one of {FISHERS}, got {fisher!r}")
    m = prepare(model, device=device, dtype=dtype)
    data_ = batches(data, device=device, dtype=dtype)
    with shape_checked(m, data_[0][0]):
        return _fisher_rao(m, data_, fisher, identity)


def _fisher_rao(m: nn.Module, data_: list[tuple[torch.Tensor, torch.Tensor]], fisher: str, identity: bool
                ) -> FisherRaoNorm:  # fmt: skip
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = dict(m.named_buffers())
    graph = network_graph(m, data_[0][0])
    depth, note = (None, "not requested")
    if identity:
        depth, note = _identity_check(m, graph, data_[0][0])
    s_jvp, s_id, n = 0.0, 0.0, 0
    fast = True
    for i, (x, y) in enumerate(data_):

        def f(p: dict[str, torch.Tensor], x: torch.Tensor = x) -> torch.Tensor:
            return functional_call(m, (p, buffers), (x,))

        res = theta_tangent(m, x, graph) if fast else None
        if res is not None and i == 0:  # check the hook route against torch.func.jvp on one sample
            with torch.no_grad():
                _, u_ref = jvp(lambda p, x=x: functional_call(m, (p, buffers), (x[:1],)), (params,), (params,))
            tol = 1e-8 if x.dtype == torch.float64 else 1e-3
            if not torch.allclose(res[1][:1], u_ref, rtol=tol, atol=tol * float(u_ref.abs().max())):
                res = None
        if res is None:
            fast = False
            with torch.no_grad():
                out, u = jvp(f, (params,), (params,))
        else:
            out, u = res
        if out.dim() != 2:
            forward(m, x)  # raises the shape error
        if not all_finite(out):  # the cross-entropy of finite logits is finite
            check_loss(F.cross_entropy(out, y))
        s_jvp += float(_quadratic(out, u, y, fisher).sum())
        if depth is not None:
            s_id += float(_quadratic(out, depth * out, y, fisher).sum())
        n += int(y.shape[0])
    if identity and depth is None:  # (after the passes: a wrong input shape gives its error alone)
        warn(f"Fisher-Rao identity (L+1)^2 E<dl/df, f>^2 not applicable ({note}); reporting the JVP route only")
    return FisherRaoNorm(
        norm2=s_jvp / n, norm2_identity=(s_id / n) if depth is not None else None, depth=depth,
        fisher=fisher, n_samples=n, identity_note=note,
    )  # fmt: skip
