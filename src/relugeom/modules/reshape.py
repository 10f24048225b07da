"""Reshapes, linear maps that only rearrange entries: ``nn.Flatten``, ``nn.Unflatten``, ``torch.flatten``,
``torch.reshape``, ``x.view``, ``x.reshape``, ``x.flatten``, and slicing ``x[:, ...]`` that keeps the batch
dimension. A reshape that mixes the batch dimension (``torch.flatten(x)`` from dimension 0) is refused."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class ReshapeRule(Rule):
    family = "reshape"
    role = "linear"
    bias_free = True
    description = "rearranges entries (batch dimension kept)"

    def check(self, node: Node) -> str | None:
        if node.op == "module" and isinstance(node.module, nn.Flatten) and node.module.start_dim == 0:
            return "flattening from dimension 0 mixes samples"
        if node.op == "function" and node.target is torch.flatten and self.arg(node, 1, "start_dim", 0) == 0:
            return "flattening from dimension 0 mixes samples"
        if node.op == "method" and node.target == "flatten" and self.arg(node, 1, "start_dim", 0) == 0:
            return "flattening from dimension 0 mixes samples"
        return None

    def cone_role(self, node: Node) -> tuple[str, str]:
        if node.op == "module":
            return "break", f"reshape {node.module_name!r} between the pair"
        return "break", f"reshape {node.label} between the pair"

    def path_map(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any], p: int) -> Any:
        return self.forward(node, args, kwargs)  # every coefficient is 0 or 1


class SliceRule(ReshapeRule):
    description = "x[:, ...]: selects entries (batch dimension kept); other uses of [] on shapes"

    def check(self, node: Node) -> str | None:
        src = node.args[0] if node.args else None
        if getattr(src, "rule", None) is not None and src.rule.role == "shape":  # type: ignore[union-attr]
            return None
        index = node.args[1] if len(node.args) > 1 else None
        first = index[0] if isinstance(index, tuple) and index else index
        if first == slice(None) or first is Ellipsis and isinstance(index, tuple) and len(index) == 1:
            return None
        return "indexing that does not keep the whole batch dimension (x[:, ...]) mixes or drops samples"

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "break", f"indexing {node.label} between the pair"


RESHAPE = ReshapeRule()
for _key in (nn.Flatten, nn.Unflatten, torch.flatten, torch.reshape, "view", "reshape", "flatten"):
    register_rule(_key, RESHAPE)
register_rule(operator.getitem, SliceRule())
