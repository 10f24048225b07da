"""Convolutions: ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d``, with any stride, padding (ints, "same", "valid"),
dilation, groups (depthwise included) and padding mode (zeros, circular, reflect, replicate): all are affine
maps of the input, run as the model runs them. Transposed convolutions are not registered: they are not the
maps the papers study, and the analyses say so rather than dropping them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import nn

from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class ConvRule(Rule):
    family = "convolution"
    role = "layer"
    shrinks_when = "stride > 1"
    description = "affine layer with weights (any stride, padding mode, dilation, groups); exact operator by " \
        "geometry.unroll"

    def unroll(self, node: Node, shape: Sequence[int]) -> Any:
        from ..geometry.unroll import unroll

        return unroll(node.module, shape)

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "break", f"affine layer {node.label} between the pair"

    def shrinks(self, node: Node) -> bool:
        stride = node.module.stride  # type: ignore[union-attr]
        return any(int(s) > 1 for s in (stride if isinstance(stride, tuple) else (stride,)))


CONV = ConvRule()
for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_rule(_cls, CONV)
