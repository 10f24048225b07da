"""Tangent sensitivity of a piecewise-linear network without per-sample nested autograd (internal).

In a network whose graph holds only piecewise-linear nodes (Linear/Conv layers, ReLU-like activations, pooling,
eval-mode batch norms, reshapes, residual additions, concatenations), the back-propagated signal
``delta = d f / d o`` at every layer output is constant on each activation region, so differentiating the
parameter gradient along an input direction ``z`` only moves the layer inputs (Daróczy 2020, Lemma 3.1 and its
proof):

    S(x) z  restricted to W_l  =  sum_p delta_l[p] (J a_{l-1} z)[p]^T       (bias: 0)
    S(x) z  restricted to gamma_c of a batch norm  =  sum_p delta[c, p] (J x z)[c, p] / sqrt(var_c + eps)

``delta`` comes from one backward pass of the batch (shared by every probe), the input tangents ``J a z`` from
one forward-mode pass per probe, and each layer's per-sample squared norm from its layer rule
(:meth:`relugeom.modules.Rule.pl_sq_norm`: patches, or their Gram matrices when a layer has few positions), never
a per-sample gradient of every sample. Exact almost everywhere (off region boundaries), float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD

from ..errors import UnsupportedLayerError
from ..graph import Graph, Node
from ..modules.registry import unsupported_error
from ..modules.rule import implements
from ._common import parameter_holders, shared

ROUTE = "the piecewise-linear tangent route"


def unsupported(graph: Graph) -> UnsupportedLayerError | None:
    """Why the piecewise-linear route cannot take the network of ``graph`` (None when it can)."""
    for node in graph.operations:
        if node.rule is None:
            return unsupported_error(node, ROUTE)
        why = node.rule.check(node)
        if why is not None:
            return unsupported_error(node, ROUTE, why)
        if not node.rule.piecewise_linear and node.rule.role != "shape":
            return unsupported_error(node, ROUTE, "not piecewise linear")
    ruled, unruled = parameter_holders(graph)
    if unruled:
        return unsupported_error(unruled[0], ROUTE, "it holds parameters without a layer rule")
    for node in ruled:
        if not (implements(node.rule, "pl_sq_norm") and implements(node.rule, "pl_batch_sum")):
            return unsupported_error(node, ROUTE, f"no rule for the tangent of its parameters ({node.rule.family})")
    why = shared(graph, ruled)
    return None if why is None else UnsupportedLayerError(f"{ROUTE}: {why}")


def _layers(graph: Graph) -> list[Node]:
    return parameter_holders(graph)[0]


def output_signals(graph: Graph, x: torch.Tensor) -> dict[Node, torch.Tensor]:
    """``d sum(f) / d o`` at the output of every parametrized node, for the whole batch."""
    layers = set(_layers(graph))
    outs: dict[Node, torch.Tensor] = {}

    def keep(node: Node, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if node in layers:
            outs[node] = node.rule.forward(node, args, kwargs)  # type: ignore[union-attr]
            return outs[node]
        return None

    with torch.enable_grad():
        total = graph.run(x.detach().requires_grad_(True), hook=keep).sum()
        nodes = list(outs)
        grads = torch.autograd.grad(total, [outs[n] for n in nodes], allow_unused=True)
    return {n: (torch.zeros_like(outs[n]) if g is None else g) for n, g in zip(nodes, grads)}


def _input_tangents(graph: Graph, x: torch.Tensor, z: torch.Tensor) -> dict[Node, torch.Tensor]:
    layers = set(_layers(graph))
    tangents: dict[Node, torch.Tensor] = {}

    def keep(node: Node, args: list[Any], kwargs: dict[str, Any]) -> None:
        if node in layers:
            primal, t = fwAD.unpack_dual(args[0])
            tangents[node] = torch.zeros_like(primal) if t is None else t

    with torch.no_grad(), fwAD.dual_level():
        graph.run(fwAD.make_dual(x, z), hook=keep)
    return tangents


def sq_norms(graph: Graph, x: torch.Tensor, z: torch.Tensor, signals: dict[Node, torch.Tensor]) -> torch.Tensor:
    """``||S(x) z||^2`` per sample (output "sum"), with ``signals`` from :func:`output_signals`."""
    return terms(graph, x, z, signals)[0]


def terms(graph: Graph, x: torch.Tensor, z: torch.Tensor, signals: dict[Node, torch.Tensor], *, sums: bool = False,
          squares: bool = True) -> tuple[torch.Tensor | None, dict[str, torch.Tensor] | None]:  # fmt: skip
    """``||S(x) z||^2`` per sample (output "sum"; None without ``squares``) and, with ``sums``, the batch sum
    ``sum_x S(x) z`` by the model's parameter names (each layer rule's :meth:`~relugeom.modules.Rule.pl_batch_sum`;
    parameters left out, such as biases, are zero)."""
    total, acc = _terms(graph, x, z, signals, 1 if sums else 0, squares=squares)
    return total, None if acc is None else {k: v[0] for k, v in acc.items()}


def column_terms(graph: Graph, x: torch.Tensor, dirs: torch.Tensor, signals: dict[Node, torch.Tensor]
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:  # fmt: skip
    """:func:`terms` for ``J`` directions ``dirs (J, *x.shape[1:])``, each shared by every sample, in one
    forward-mode pass over the ``J x B`` pairs: ``||S(x) z_j||^2`` as ``(J, B)`` and, per direction, the batch sum
    ``sum_x S(x) z_j`` by parameter name, ``(J, *parameter shape)`` (the exact method's columns ``z_j = e_j``)."""
    J, B = dirs.shape[0], x.shape[0]

    def tile(t: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (J * B, ...), direction-major
        return t.repeat(J, *[1] * (t.dim() - 1))

    total, acc = _terms(graph, tile(x), dirs.repeat_interleave(B, 0), signals, J, tile)
    return total.reshape(J, B), acc  # type: ignore[union-attr, return-value]


def _terms(graph: Graph, x: torch.Tensor, z: torch.Tensor, signals: dict[Node, torch.Tensor], blocks: int,
           tile: Callable[[torch.Tensor], torch.Tensor] = lambda t: t, *, squares: bool = True,
           ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor] | None]:  # fmt: skip
    """Per-sample ``||S(x) z||^2`` (None without ``squares``) and, unless ``blocks`` is 0, the batch sums over
    each of ``blocks`` equal consecutive parts of the batch, ``(blocks, *parameter shape)``; ``tile`` maps each
    signal to the batch."""
    tangents = _input_tangents(graph, x, z)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device) if squares else None
    acc: dict[str, torch.Tensor] | None = {} if blocks else None
    for node, t in tangents.items():
        rule, signal = node.rule, tile(signals[node])
        if total is not None:
            total += rule.pl_sq_norm(node, t, signal)  # type: ignore[union-attr]
        if acc is not None:
            prefix = f"{node.module_name}." if node.module_name else ""
            for name, v in rule.pl_batch_sum(node, t, signal, blocks).items():  # type: ignore[union-attr]
                acc[prefix + name] = v
    return total, acc
