"""Norm-based capacity measures (Daróczy 2020; Neyshabur, Bhojanapalli, McAllester and Srebro 2017, sec. 2;
Jiang et al. 2020, "Fantastic generalization measures").

For a network with affine layers ``W_1 .. W_d`` (Linear and Conv; batch norm folded into the preceding
layer first, see :func:`fold_batchnorm`) and margin ``gamma``:

- ``frobenius_product = prod_i ||W_i||_F^2`` (the l2-norm capacity, biases excluded);
- ``spectral_product = prod_i ||A_i||_2^2`` where ``A_i`` is the layer's linear *operator* on its real
  input shape (for convolutions, not the reshaped kernel; :func:`~relugeom.measures.spectral.conv_spectral_norm`);
- ``l1_path = sum_paths prod_e |w_e|`` and ``l2_path = sum_paths prod_e w_e^2`` over all input-output
  paths of the unrolled network; a bias is the first edge of a path from a constant-1 unit. Computed by
  one forward pass of the all-ones input through the network with ``|w|`` (resp. ``w^2``) weights and
  ``|b|`` (resp. ``b^2``) biases, ReLUs being the identity on non-negative values. Average pooling is
  an edge of weight 1/window (squared for l2); max pooling takes the maximum over its window, i.e.
  the largest path sum over the pool's choices (as in Jiang et al.'s code);
- each of them over ``gamma^2``: ``frobenius_product / gamma^2``, ``spectral_product / gamma^2``,
  ``l1_path^2 / gamma^2``, ``l2_path / gamma^2``. The architecture-only constants of the bounds
  (``4^d``, ``2^d``, the widths ``h_i``) are left out, so that the values compare across checkpoints of
  one architecture.
- ``margin``: the ``margin_percentile``-th percentile over the data of ``f(x)[y] - max_{j != y} f(x)[j]``
  (Jiang et al. take the 10th percentile); a non-positive margin makes the ratios NaN, with a warning.
- ``distance_to_init``: ``||theta - theta_0||_2`` over all parameters (unfolded), when ``init`` is given.

Computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .._repr import short_repr
from ..errors import ArchitectureError, UnsupportedLayerError, warn
from ..graph import Graph, Node, walk
from ..layers import batchnorm_affine
from ..modules.registry import unsupported_error
from ..modules.rule import implements
from ._common import Data, batches, forward, n_samples, parameter_holders, prepare
from .spectral import conv_spectral_norm


@dataclass(frozen=True)
class NormMeasures:
    """The norm-based measures of one model on one data set (see the module docstring)."""

    __repr__ = short_repr

    margin: float
    frobenius_product: float
    spectral_product: float
    l1_path: float
    l2_path: float
    frobenius_over_margin2: float
    spectral_over_margin2: float
    l1_path_over_margin2: float
    l2_path_over_margin2: float
    distance_to_init: float | None
    depth: int
    bn_folded: tuple[str, ...]
    n_samples: int

    def as_dict(self) -> dict:
        d = asdict(self)
        d["bn_folded"] = ",".join(self.bn_folded)
        return d


def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None) -> tuple[nn.Module, list[str]]:
    """A copy of ``model`` (eval mode) with every BatchNorm folded into the Linear/Conv right before it.

    ``W' = W * g / sqrt(v + eps)`` per output channel and ``b' = (b - m) * g / sqrt(v + eps) + beta``
    (running mean ``m``, variance ``v``, affine ``g``, ``beta``); the BatchNorm becomes an Identity,
    so the folded model computes the same function in eval mode. Returns the copy and the names of
    the folded BatchNorms. "Right before" is read on the network's graph (:mod:`relugeom.graph`; ``example``,
    a batch, is needed only where ``torch.fx`` cannot trace the model): the batch norm's input is the output of
    one affine layer that nothing else reads, each called once. Otherwise :class:`UnsupportedLayerError` names
    the batch norm; one without running statistics raises :class:`ArchitectureError` (see
    :func:`relugeom.layers.batchnorm_affine`).

    Example
    -------
    >>> import torch
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 1)).eval()
    >>> _ = net[1].running_var.fill_(4.0), net[1].running_mean.fill_(1.0)
    >>> folded, names = fold_batchnorm(net)
    >>> x = torch.randn(5, 2)
    >>> names, type(folded[1]).__name__, torch.allclose(folded(x), net(x), atol=1e-6)
    (['1'], 'Identity', True)
    """
    import copy

    m = copy.deepcopy(model).eval()
    graph = walk(m, example)
    folded: list[str] = []
    for node in graph.operations:
        if node.rule is None or node.rule.role != "norm":
            continue
        full = str(node.module_name)
        prev = node.inputs[0] if node.inputs else None
        alone = prev is not None and prev.op == "module" and prev.rule is not None and prev.rule.role == "layer" \
            and prev.users == [node] and len(graph.calls(str(prev.target))) == 1 and len(graph.calls(full)) == 1
        if not alone:
            raise UnsupportedLayerError(
                f"batch norm {full!r} does not directly follow a Linear/Conv layer whose output nothing else reads; "
                "cannot fold it (the norm measures need BN folded)"
            )
        layer = prev.module  # type: ignore[union-attr]
        scale, shift = batchnorm_affine(node.module, f"batch norm {full!r}")  # type: ignore[arg-type]
        with torch.no_grad():
            scale, shift = scale.to(layer.weight), shift.to(layer.weight)
            b = layer.bias if layer.bias is not None else torch.zeros_like(scale)
            new_b = b * scale + shift
            layer.weight.mul_(scale.reshape(-1, *([1] * (layer.weight.dim() - 1))))
            if layer.bias is None:
                layer.bias = nn.Parameter(new_b.clone())
            else:
                layer.bias.copy_(new_b)
        parent, _, child = full.rpartition(".")
        setattr(m.get_submodule(parent), child, nn.Identity())
        folded.append(full)
    return m, folded


def _layers(graph: Graph, measure: str) -> list[Node]:
    """The affine layers of the graph (first call of each); a module holding parameters without a layer rule is
    refused with its name (its weights would be left out of the products)."""
    ruled, unruled = parameter_holders(graph)
    if unruled:
        raise unsupported_error(unruled[0], measure, "it holds parameters without a layer rule")
    seen: set[str] = set()
    out = []
    for node in ruled:
        if node.rule.role == "layer" and node.module_name not in seen:  # type: ignore[union-attr]
            seen.add(str(node.module_name))
            out.append(node)
    return out


def _not_path_normable(graph: Graph) -> list[str]:
    """The nodes the path norms cannot go through (no rule, or no rule for their coefficients), by name."""
    bad = []
    for node in graph.operations:
        rule = node.rule
        why = "no layer rule" if rule is None else rule.check(node)
        if why is None and rule.role not in ("layer", "shape"):  # type: ignore[union-attr]
            if rule.parametrized:  # type: ignore[union-attr]
                why = f"{rule.family} with parameters"  # type: ignore[union-attr]
            elif rule.role not in ("activation", "max") and not implements(rule, "path_map"):  # type: ignore[union-attr, arg-type]
                why = f"{rule.family}: no rule for its coefficients"  # type: ignore[union-attr]
        if why is not None:
            bad.append(f"{node.label} ({why})")
    return bad


def path_norm(model: nn.Module, input_shape: Sequence[int], p: int = 1, *, bias: bool = True) -> float:
    """``sum_paths prod_e |w_e|^p`` (p = 1 or 2) by one forward pass of ones (see the module docstring).

    Batch norms are folded first (:func:`fold_batchnorm`); float64. The forward pass runs over the network's
    graph, residual additions included (the paths of both branches add up), each parameter-free node mapping
    by its rule's coefficients raised to ``p`` (:meth:`relugeom.modules.Rule.path_map`). ``bias=False`` leaves
    the bias paths out.

    Example
    -------
    >>> import torch
    >>> net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False))
    >>> _ = net[0].weight.data.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
    >>> _ = net[2].weight.data.copy_(torch.tensor([[0.5, -1.0]]))
    >>> path_norm(net, (2,), p=1), path_norm(net, (2,), p=2)  # paths 1*0.5, 2*0.5, 3*1 (and 0*1)
    (4.5, 10.25)
    """
    if p not in (1, 2):
        raise ValueError("p must be 1 or 2")
    ones = torch.ones((1, *input_shape), dtype=torch.float64)
    m, _ = fold_batchnorm(prepare(model), ones)
    graph = walk(m, ones)
    bad = _not_path_normable(graph)
    if bad:
        raise UnsupportedLayerError("path norms are defined for ReLU networks; found " + ", ".join(bad))
    for node in _layers(graph, "path norms"):
        mod = node.module
        with torch.no_grad():
            mod.weight.copy_(mod.weight.abs() ** p)  # type: ignore[union-attr]
            if mod.bias is not None:  # type: ignore[union-attr]
                mod.bias.copy_(mod.bias.abs() ** p if bias else torch.zeros_like(mod.bias))  # type: ignore[union-attr]

    def coefficients(node: Node, args: list, kwargs: dict) -> torch.Tensor | None:
        if node.rule is None or node.rule.role in ("layer", "shape"):
            return None
        out = node.rule.path_map(node, args, kwargs, p)
        if out is NotImplemented:
            raise UnsupportedLayerError(f"path norms: {node.label} has no rule for its coefficients")
        return out

    with torch.no_grad():
        out = graph.run(ones, hook=coefficients)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        forward(m, ones)  # raises the shape error
    return float(out.sum())


def margins(model: nn.Module, data: Data, *, device: str | torch.device = "cpu") -> np.ndarray:
    """Per-sample margins ``f(x)[y] - max_{j != y} f(x)[j]`` (float64)."""
    m = prepare(model, device=device)
    vals = []
    with torch.no_grad():
        for x, y in batches(data, device=device):
            out = forward(m, x)
            true = out.gather(1, y[:, None])[:, 0]
            other = out.scatter(1, y[:, None], float("-inf")).max(1).values
            vals.append((true - other).cpu().numpy())
    return np.concatenate(vals)


def _distance(model: nn.Module, init: nn.Module | Mapping[str, torch.Tensor]) -> float:
    sd0 = init.state_dict() if isinstance(init, nn.Module) else init
    total = 0.0
    for name, p in model.named_parameters():
        if name not in sd0:
            raise ArchitectureError(f"the initialization has no parameter {name!r}; is it the same architecture?")
        q = sd0[name]
        if tuple(q.shape) != tuple(p.shape):
            raise ArchitectureError(f"parameter {name!r}: shape {tuple(p.shape)} vs {tuple(q.shape)} in the init")
        total += float(((p.detach().double().cpu() - q.detach().double().cpu()) ** 2).sum())
    return math.sqrt(total)


def norm_measures(
    model: nn.Module, data: Data, margin_percentile: float = 10, *,
    init: nn.Module | Mapping[str, torch.Tensor] | None = None, spectral_method: str = "lanczos",
    device: str | torch.device = "cpu",
) -> NormMeasures:  # fmt: skip
    """Norm and path-norm capacities of ``model`` with the margin on ``data`` (see the module docstring).

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> r = norm_measures(net, (torch.randn(20, 2), torch.randint(0, 2, (20,))))
    >>> r.depth, r.l2_path > 0
    (2, True)
    """
    m = prepare(model, device=device)
    data_ = batches(data, device=device)
    x0 = data_[0][0]
    forward(m, x0[:1])  # the shape check, before the graph is read
    folded_model, folded = fold_batchnorm(m, x0[:1])
    graph = walk(folded_model, x0[:1])
    layers = _layers(graph, "norm measures")
    if not layers:
        raise UnsupportedLayerError("the model has no Linear/Conv layer")
    shapes = graph.shapes(tuple(x0.shape[1:]))
    fro, spec = 1.0, 1.0
    for node in layers:
        mod = node.module
        fro *= float((mod.weight.detach() ** 2).sum())  # type: ignore[union-attr]
        if node.inputs and node.inputs[0] in shapes:
            sn = conv_spectral_norm(mod, shapes[node.inputs[0]], method=spectral_method)  # type: ignore[arg-type]
            spec *= sn.value**2
    input_shape = tuple(x0.shape[1:])
    bad = _not_path_normable(graph)
    if bad:
        warn("path norms are defined for ReLU networks; l1_path and l2_path are NaN because of " + ", ".join(bad))
        l1 = l2 = math.nan
    else:
        folded_model = folded_model.cpu()
        l1, l2 = path_norm(folded_model, input_shape, 1), path_norm(folded_model, input_shape, 2)
    marg = margins(m, data_, device=device)
    gamma = float(np.percentile(marg, margin_percentile))
    if gamma > 0:
        g2 = gamma**2
        ratios = (fro / g2, spec / g2, l1**2 / g2, l2 / g2)
    else:
        warn(f"the {margin_percentile}th-percentile margin is {gamma:.3g} <= 0 (too many misclassified samples); "
             "the measures over the margin are NaN")  # fmt: skip
        ratios = (math.nan,) * 4
    dist = _distance(model, init) if init is not None else None
    return NormMeasures(
        margin=gamma, frobenius_product=fro, spectral_product=spec, l1_path=l1, l2_path=l2,
        frobenius_over_margin2=ratios[0], spectral_over_margin2=ratios[1], l1_path_over_margin2=ratios[2],
        l2_path_over_margin2=ratios[3], distance_to_init=dist, depth=len(layers), bn_folded=tuple(folded),
        n_samples=n_samples(data_),
    )  # fmt: skip
