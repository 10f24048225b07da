"""Residual addition: ``a + b`` (``operator.add``, ``operator.iadd`` for ``a += b``), ``torch.add`` (with
``alpha``), ``a.add(b)``, ``a.add_(b)``: linear in its tensor inputs (affine when one side is a constant),
computed out of place so that no value another node still reads is overwritten."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class AddRule(Rule):
    family = "residual addition"
    role = "linear"
    description = "sum of its inputs (affine with a constant term)"

    def forward(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        a, b = args[0], args[1] if len(args) > 1 else kwargs["other"]
        alpha = kwargs.get("alpha", 1)
        return a + (b if alpha == 1 else alpha * b)  # out of place, also for sizes

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "break", "an addition (residual connection) between the pair"

    @staticmethod
    def _operands(node: Node) -> tuple[Any, Any, Any]:
        other = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        return node.args[0], other, node.kwargs.get("alpha", 1)

    def _sums_nodes(self, node: Node) -> bool:
        from ..graph import Node as GraphNode

        a, b, _ = self._operands(node)
        return isinstance(a, GraphNode) and isinstance(b, GraphNode)

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        a, b, alpha = self._operands(node)
        ta, tb = tangents.get(a), tangents.get(b)  # a constant has no tangent
        if tb is not None and alpha != 1:
            tb = alpha * tb
        if ta is None or tb is None:
            return ta if tb is None else tb
        return ta + tb

    def param_degree(self, node: Node) -> int | str:
        if not self._sums_nodes(node):
            return "adds a constant"
        return 0  # the measure checks that both sides have one degree

    def path_map(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any], p: int) -> Any:
        if not self._sums_nodes(node):
            return NotImplemented  # a constant term: no path from the input
        alpha = abs(float(kwargs.get("alpha", 1))) ** p
        return args[0] + (args[1] if len(args) > 1 else kwargs["other"]) * alpha


ADD = AddRule()
for _key in (operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__"):
    register_rule(_key, ADD)
