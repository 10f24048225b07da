"""Average pooling, a linear map without parameters: ``nn.AvgPool1d/2d/3d``, ``F.avg_pool1d/2d/3d`` (any
padding, ``count_include_pad``, ``ceil_mode``, ``divisor_override``), ``nn.AdaptiveAvgPool1d/2d/3d``,
``F.adaptive_avg_pool1d/2d/3d``, and the global average ``x.mean(dims)`` / ``torch.mean(x, dims)`` over
non-batch dimensions (a common ResNet head)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ._pool import params, pool_name
from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class AvgPoolRule(Rule):
    family = "average pool"
    role = "linear"
    cone = "pool"
    bias_free = True
    description = "linear map without parameters"

    def __init__(self, nd: int, adaptive: bool = False) -> None:
        self.nd, self.adaptive = nd, adaptive
        self.shrinks_when = "output smaller than input" if adaptive else "stride > 1"  # type: ignore[misc]

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "pool", f"{pool_name(node)} between the pair"

    def shrinks(self, node: Node) -> bool | None:
        if self.adaptive:
            return None  # the sizes decide (without them it counts as shrinking, the usual case)
        return any(s > 1 for s in params(node, self.nd, "avg")["stride"])


class MeanRule(Rule):
    family = "average pool"
    role = "linear"
    cone = "pool"
    bias_free = True
    description = "mean over non-batch dimensions (global average pooling)"
    shrinks_when = "always"

    def check(self, node: Node) -> str | None:
        dim = self.arg(node, 1, "dim")
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        if dim is None or any(d == 0 for d in dims):
            return "a mean over the batch dimension mixes samples"
        return None

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "pool", f"pooling {node.label} between the pair"

    def shrinks(self, node: Node) -> bool:
        return True


for _nd, _cls, _fn, _acls, _afn in ((1, nn.AvgPool1d, F.avg_pool1d, nn.AdaptiveAvgPool1d, F.adaptive_avg_pool1d),
                                    (2, nn.AvgPool2d, F.avg_pool2d, nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d),
                                    (3, nn.AvgPool3d, F.avg_pool3d, nn.AdaptiveAvgPool3d, F.adaptive_avg_pool3d)):
    _rule = AvgPoolRule(_nd)
    register_rule(_cls, _rule)
    register_rule(_fn, _rule)
    _arule = AvgPoolRule(_nd, adaptive=True)
    register_rule(_acls, _arule)
    register_rule(_afn, _arule)
MEAN = MeanRule()
register_rule(torch.mean, MEAN)
register_rule("mean", MEAN)
