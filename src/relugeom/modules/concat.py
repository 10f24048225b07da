"""Concatenation: ``torch.cat`` / ``torch.concat`` / ``torch.concatenate`` along a non-batch dimension, a
linear map of its inputs (DenseNet and Inception blocks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class CatRule(Rule):
    family = "concatenation"
    role = "linear"
    bias_free = True
    description = "stacks its inputs along a non-batch dimension"

    def check(self, node: Node) -> str | None:
        if self.arg(node, 1, "dim", 0) == 0:
            return "concatenating along the batch dimension mixes samples"
        return None

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "break", "a concatenation between the pair"

    def path_map(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any], p: int) -> Any:
        return self.forward(node, args, kwargs)  # every coefficient is 0 or 1


CAT = CatRule()
for _key in (torch.cat, torch.concat, torch.concatenate):
    register_rule(_key, CAT)
