"""Linear layers: ``nn.Linear`` (``y = x W^T + b``), the fully connected layers the papers analyse."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ._patches import grouped_sq_norm, grouped_sum, linear_patches
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

    def kfac_patches(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        return linear_patches(x)

    def kfac_grads(self, node: Node, g: torch.Tensor) -> torch.Tensor:
        return linear_patches(g)

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        t = tangents.get(node.inputs[0])
        return out if t is None else F.linear(t, node.module.weight) + out  # type: ignore[union-attr]

    def pl_sq_norm(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        b = tangent.shape[0]
        return grouped_sq_norm(signal.reshape(b, 1, -1, signal.shape[-1]).transpose(2, 3), linear_patches(tangent))

    def pl_batch_sum(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor,
                     blocks: int = 1) -> dict[str, torch.Tensor]:  # fmt: skip
        b = tangent.shape[0]
        s = grouped_sum(signal.reshape(b, 1, -1, signal.shape[-1]).transpose(2, 3), linear_patches(tangent), blocks)
        return {"weight": s.reshape(blocks, *node.module.weight.shape)}  # type: ignore[union-attr]

    def param_degree(self, node: Node) -> int | str:
        return layer_degree(node)


def layer_degree(node: Node) -> int | str:
    """An affine layer's degree in its own parameters: 1 when its bias is absent or zero, else why not."""
    bias = node.module.bias  # type: ignore[union-attr]
    if bias is not None and bool(bias.detach().abs().max() > 0):
        return "a non-zero bias"
    return 1


LINEAR = LinearRule()
register_rule(nn.Linear, LINEAR)
