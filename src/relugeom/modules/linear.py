"""Linear layers: ``nn.Linear`` (``y = x W^T + b``), the fully connected layers the papers analyse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class LinearRule(Rule):
    family = "linear"
    role = "layer"
    description = "affine layer with weights; exact operator by geometry.unroll"

    def unroll(self, node: Node, shape: Sequence[int]) -> Any:
        from ..geometry.unroll import unroll

        return unroll(node.module, shape)

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "break", f"affine layer {node.label} between the pair"


LINEAR = LinearRule()
register_rule(nn.Linear, LINEAR)
