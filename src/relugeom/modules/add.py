"""Residual addition: ``a + b`` (``operator.add``, ``operator.iadd`` for ``a += b``), ``torch.add`` (with
``alpha``), ``a.add(b)``, ``a.add_(b)``: linear in its tensor inputs (affine when one side is a constant),
computed out of place so that no value another node still reads is overwritten."""

from __future__ import annotations

import operator
from collections.abc import Sequence
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


ADD = AddRule()
for _key in (operator.add, operator.iadd, torch.add, "add", "add_", "__add__", "__iadd__"):
    register_rule(_key, ADD)
