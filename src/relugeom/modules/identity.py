"""Identities in eval mode: ``nn.Identity``, every dropout (``nn.Dropout``, ``nn.Dropout1d/2d/3d``,
``nn.AlphaDropout``, ``nn.FeatureAlphaDropout``, ``F.dropout``, ``F.dropout1d/2d/3d``, ``F.alpha_dropout``)
and ``x.contiguous()``. The analyses run networks in eval mode, where dropout passes its input through."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import nn

from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


class IdentityRule(Rule):
    family = "identity"
    role = "linear"
    cone = "pass"
    bias_free = True
    description = "the identity (dropout in eval mode)"

    def forward(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        return args[0]

    def unroll(self, node: Node, shape: Sequence[int]) -> Any:
        import math

        import numpy as np
        import scipy.sparse as sp

        n = math.prod(shape)
        return sp.eye_array(n, format="csr"), np.zeros(n)

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "pass", node.module_name or node.label

    def path_map(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any], p: int) -> Any:
        return self.forward(node, args, kwargs)  # every coefficient is 0 or 1


IDENTITY = IdentityRule()
for _key in (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
             F.feature_alpha_dropout, "contiguous"):  # fmt: skip
    register_rule(_key, IDENTITY)
