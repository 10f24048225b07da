"""Max-pooling: ``nn.MaxPool1d/2d/3d`` and ``F.max_pool1d/2d/3d`` (any kernel, stride, padding, dilation,
ceil_mode), ``nn.AdaptiveMaxPool1d/2d/3d`` and ``F.adaptive_max_pool1d/2d/3d``. Each output is the largest
entry of its window, so a piece of input space is split by the arg-max of every window (Serra et al. 2018):
on each part the output is the chosen entry, an affine map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._pool import adaptive_windows, params, pool_name, pool_windows
from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class MaxPoolRule(Rule):
    family = "max-pool"
    role = "max"
    cone = "pool"
    description = "splits a piece by the arg-max of each window"

    def __init__(self, nd: int, adaptive: bool = False) -> None:
        self.nd, self.adaptive = nd, adaptive
        self.shrinks_when = "output smaller than input" if adaptive else "stride > 1"  # type: ignore[misc]

    def check(self, node: Node) -> str | None:
        if bool(self.arg(node, 6 if not self.adaptive else 2, "return_indices", False)):
            return "return_indices=True (the indices are not a function of a piece's coordinates)"
        return None

    def windows(self, node: Node, shape: Sequence[int]) -> np.ndarray:
        shape = tuple(int(s) for s in shape)
        if self.adaptive:
            return adaptive_windows(node, shape, self.nd)
        return pool_windows(node, shape, self.nd)

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "pool", f"{pool_name(node)} between the pair"

    def shrinks(self, node: Node) -> bool | None:
        if self.adaptive:
            return None  # the sizes decide (without them it counts as shrinking, the usual case)
        return any(s > 1 for s in params(node, self.nd, "max")["stride"])

    def indices(self, node: Node, x: torch.Tensor) -> torch.Tensor:
        """The arg-max of every window of a batch ``x``, as flat indices into each channel's map (torch's
        ``return_indices``)."""
        if self.adaptive:
            fn = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[self.nd - 1]
            return fn(x, self.arg(node, 1, "output_size"), return_indices=True)[1]
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[self.nd - 1]
        p = params(node, self.nd, "max")
        return fn(x, p["kernel_size"], p["stride"], p["padding"], p["dilation"], ceil_mode=p["ceil_mode"],
                  return_indices=True)[1]  # fmt: skip

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        t = tangents.get(node.inputs[0])
        if t is None:
            return None
        idx = self.indices(node, values[node.inputs[0]])
        return t.flatten(2).gather(2, idx.flatten(2)).reshape(out.shape)


for _nd, _cls, _fn, _acls, _afn in ((1, nn.MaxPool1d, F.max_pool1d, nn.AdaptiveMaxPool1d, F.adaptive_max_pool1d),
                                    (2, nn.MaxPool2d, F.max_pool2d, nn.AdaptiveMaxPool2d, F.adaptive_max_pool2d),
                                    (3, nn.MaxPool3d, F.max_pool3d, nn.AdaptiveMaxPool3d, F.adaptive_max_pool3d)):
    _rule = MaxPoolRule(_nd)
    register_rule(_cls, _rule)
    register_rule(_fn, _rule)
    _arule = MaxPoolRule(_nd, adaptive=True)
    register_rule(_acls, _arule)
    register_rule(_afn, _arule)
