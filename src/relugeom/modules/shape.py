"""Shape queries, whose values are sizes rather than tensors: ``x.size()``, ``x.dim()``, ``x.shape`` (a
``getattr`` in the graph). They take part in no geometry; reshapes read them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class ShapeRule(Rule):
    family = "shape query"
    role = "shape"
    cone = "pass"
    description = "a size, not a tensor"

    def check(self, node: Node) -> str | None:
        if node.op == "function" and (len(node.args) < 2 or node.args[1] not in ("shape", "ndim")):
            return f"getattr(x, {node.args[1] if len(node.args) > 1 else '?'!r}) is not a shape query"
        return None

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "pass", node.label

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        return None  # a size carries no tangent


SHAPE = ShapeRule()
for _key in ("size", "dim", getattr):
    register_rule(_key, SHAPE)
