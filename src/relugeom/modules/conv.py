"""Convolutions: ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d``, with any stride, padding (ints, "same", "valid"),
dilation, groups (depthwise included) and padding mode (zeros, circular, reflect, replicate): all are affine
maps of the input, run as the model runs them. The measures' rules (K-FAC factors, tangents) treat the groups as
independent layers side by side and the padding as the linear map it is. Transposed convolutions are not
registered: they are not the maps the papers study, and the analyses say so rather than dropping them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._patches import conv_patches, grouped_sq_norm, grouped_sum
from .linear import layer_degree
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

    def kfac_patches(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        return conv_patches(node.module, x)  # type: ignore[arg-type]

    def kfac_grads(self, node: Node, g: torch.Tensor) -> torch.Tensor:
        groups = int(node.module.groups)  # type: ignore[union-attr]
        return g.reshape(g.shape[0], groups, g.shape[1] // groups, -1).permute(0, 3, 1, 2)

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        t = tangents.get(node.inputs[0])
        if t is None:
            return out
        mod = node.module
        return mod._conv_forward(t, mod.weight, None) + out  # type: ignore[union-attr, operator]

    def pl_sq_norm(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        patches = conv_patches(node.module, tangent)  # type: ignore[arg-type]
        b, groups = signal.shape[0], patches.shape[2]
        return grouped_sq_norm(signal.reshape(b, groups, signal.shape[1] // groups, -1), patches)

    def pl_batch_sum(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor,
                     blocks: int = 1) -> dict[str, torch.Tensor]:  # fmt: skip
        weight = node.module.weight  # type: ignore[union-attr]
        patches = conv_patches(node.module, tangent)  # type: ignore[arg-type]
        b, groups = signal.shape[0], patches.shape[2]
        s = grouped_sum(signal.reshape(b, groups, signal.shape[1] // groups, -1), patches, blocks)
        return {"weight": s.reshape(blocks, *weight.shape)}

    def param_degree(self, node: Node) -> int | str:
        return layer_degree(node)


CONV = ConvRule()
for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_rule(_cls, CONV)
