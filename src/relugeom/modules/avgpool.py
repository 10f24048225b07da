"""Average pooling, a linear map without parameters: ``nn.AvgPool1d/2d/3d``, ``F.avg_pool1d/2d/3d`` (any
padding, ``count_include_pad``, ``ceil_mode``, ``divisor_override``), ``nn.AdaptiveAvgPool1d/2d/3d``,
``F.adaptive_avg_pool1d/2d/3d``, and the global average ``x.mean(dims)`` / ``torch.mean(x, dims)`` over
non-batch dimensions (a common ResNet head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ._pool import _axis, adaptive_windows, params, pool_name, windows
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

    def path_map(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any], p: int) -> Any:
        """Every output is ``c_o`` times the sum of its window's entries inside the input (``c_o`` = 1/divisor,
        whatever the padding, ``count_include_pad`` or ``divisor_override``): ``c_o^(p-1)`` times the output."""
        out = self.forward(node, args, kwargs)
        if p == 1:
            return out
        x = args[0]
        shape = tuple(int(s) for s in x.shape[1:])
        if self.adaptive:
            members = adaptive_windows(node, shape, self.nd)
        else:
            q = params(node, self.nd, "avg")
            members = windows([_axis(shape[1 + i], q["kernel_size"][i], q["stride"][i], q["padding"][i], 1,
                                     q["ceil_mode"]) for i in range(self.nd)], shape)  # fmt: skip
        if members.shape[0] != out[0].numel():
            return NotImplemented
        count = torch.as_tensor((members >= 0).sum(1), dtype=out.dtype, device=out.device).reshape(out.shape[1:])
        ones = self.forward(node, [torch.ones_like(x[:1]), *args[1:]], kwargs)[0]  # count_o / divisor_o
        return out * (ones / count) ** (p - 1)


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

    def path_map(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any], p: int) -> Any:
        out = self.forward(node, args, kwargs)
        n = args[0][0].numel() // max(out[0].numel(), 1)  # entries averaged by each output
        return out / n ** (p - 1)


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
