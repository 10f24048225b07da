"""ReLU and the other activations that are exactly piecewise linear with one breakpoint at 0: leaky ReLU (a
fixed negative slope) and PReLU (a learned one, per channel or shared). Each splits a piece of input space by the
sign of every input feature; the output is the input times 1 on the positive side and the negative slope on the
other.

Registered: ``nn.ReLU``, ``F.relu``, ``F.relu_``, ``torch.relu``, ``torch.relu_``, ``x.relu()``, ``x.relu_()``;
``nn.LeakyReLU``, ``F.leaky_relu``; ``nn.PReLU``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class ReLURule(Rule):
    family = "relu"
    role = "activation"
    cone = "relu"
    description = "splits a piece by the sign of each input; slope 1 and 0"

    def forward(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        return F.relu(args[0])  # out of place, whatever the model's inplace flag

    def negative_slope(self, node: Node, shape: Sequence[int]) -> float:
        return 0.0

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "relu", "ReLU" if node.module is None else f"ReLU {node.module_name!r}"

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        t = tangents.get(node.inputs[0])
        if t is None:
            return None
        slope = float(self.negative_slope(node, ()))
        inp = values[node.inputs[0]]
        return t * (inp > 0) if slope == 0.0 else torch.where(inp > 0, t, slope * t)


class LeakyReLURule(ReLURule):
    cone = "break"
    description = "splits a piece by the sign of each input; slope 1 and negative_slope"

    def forward(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        return F.leaky_relu(args[0], self._slope(node))

    def _slope(self, node: Node) -> float:
        return float(self.arg(node, 1, "negative_slope", 0.01))

    def negative_slope(self, node: Node, shape: Sequence[int]) -> float:
        return self._slope(node)

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "break", f"non-ReLU activation LeakyReLU {node.module_name or ''!r} between the pair"


class PReLURule(LeakyReLURule):
    description = "splits a piece by the sign of each input; slope 1 and the learned slope (per channel)"

    @property
    def parametrized(self) -> bool:
        return True

    def forward(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        return node.call(args, kwargs)

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        return NotImplemented  # the learned slope moves too: the measures take their generic route

    def param_degree(self, node: Node) -> int | str:
        return "a learned negative slope (not positively homogeneous in it)"

    def negative_slope(self, node: Node, shape: Sequence[int]) -> float | np.ndarray:
        a = node.module.weight.detach().cpu().double().numpy()  # type: ignore[union-attr]
        if a.size == 1:
            return float(a[0])
        channels = shape[0] if len(shape) > 0 else 1
        return np.repeat(a, math.prod(shape[1:])) if len(shape) > 1 else np.broadcast_to(a, (channels,)).copy()

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "break", f"non-ReLU activation PReLU {node.module_name!r} between the pair"


RELU = ReLURule()
register_rule(nn.ReLU, RELU)
for _fn in (F.relu, F.relu_, torch.relu, torch.relu_):
    register_rule(_fn, RELU)
for _method in ("relu", "relu_"):
    register_rule(_method, RELU)
LEAKY_RELU = LeakyReLURule()
register_rule(nn.LeakyReLU, LEAKY_RELU)
register_rule(F.leaky_relu, LEAKY_RELU)
register_rule(nn.PReLU, PReLURule())
