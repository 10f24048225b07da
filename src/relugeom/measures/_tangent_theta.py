"""Forward propagation of the tangent ``J_theta f . theta`` (the direction is theta itself) over the network graph.

For a layer whose output is linear in its own parameters (Linear, Conv, affine batch norm: ``o(x, a p) =
a o(x, p)``), the tangent in the direction ``theta`` is ``J_x o . t_in + o``: one extra linear map per layer
instead of the two a generic Jacobian-vector product needs, so the whole tangent costs about two forward passes.
Every node asks its layer rule (:meth:`relugeom.modules.Rule.theta_tangent`): parameter-free linear maps (pooling,
reshapes, residual additions, concatenations) carry the tangents like their inputs, ReLU/leaky ReLU/max-pooling
use the primal's pattern. Where a node has no rule, or its rule no tangent (a functional non-linearity, a learned
slope, a parameter read in ``forward``), :func:`theta_tangent` returns ``None`` and the caller falls back to
``torch.func.jvp``. Callers also check the result against ``torch.func.jvp`` on a few samples.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..graph import Graph, Node
from ._common import network_graph


def theta_tangent(model: nn.Module, x: torch.Tensor, graph: Graph | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor] | None:  # fmt: skip
    """``(f(x), J_theta f(x) . theta)`` node by node, or None when a node has no tangent rule."""
    graph = network_graph(model, x) if graph is None else graph
    params = {n for n, _ in model.named_parameters()}
    values: dict[Node, Any] = {}
    tangents: dict[Node, torch.Tensor | None] = {}
    last = graph.last_use
    with torch.no_grad():
        for node in graph.nodes:
            if node.op == "input":
                values[node] = x if node is graph.input else graph.compute(node, values)
                tangents[node] = None
                continue
            if node.op == "attribute":
                if str(node.target) in params:
                    return None  # a parameter read outside a layer rule
                values[node], tangents[node] = graph.compute(node, values), None
                continue
            out = graph.compute(node, values)
            if node.op == "output":
                t = tangents.get(node.inputs[0]) if node.inputs else None
                return (out, t.reshape(out.shape)) if isinstance(out, torch.Tensor) and t is not None else None
            if node.rule is None:
                return None
            t = node.rule.theta_tangent(node, values, tangents, out)
            if t is NotImplemented:
                return None
            values[node], tangents[node] = out, t
            for i in node.inputs:
                if last[i] <= node.index:
                    values.pop(i, None)
                    tangents.pop(i, None)
    return None
