"""Batch norm in eval mode: ``nn.BatchNorm1d/2d/3d`` (and ``nn.SyncBatchNorm``) with running statistics are the
per-channel affine map ``y = scale * x + shift`` (:func:`batchnorm_affine`), foldable into the layer before it.
A batch norm without running statistics normalises every batch by its own, which no fixed affine map
reproduces: the analyses refuse it with the module's name."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ArchitectureError
from .registry import register_rule
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node


def batchnorm_affine(bn: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode batch norm as the per-channel affine map ``y = scale * x + shift`` (float64).

    ``scale = gamma / sqrt(running_var + eps)``, ``shift = beta - running_mean * scale``: folding it into
    the layer before it gives ``W' = W * scale``, ``b' = b * scale + shift``. A batch norm without running
    statistics normalises every batch by its own, which no fixed affine map reproduces:
    :class:`ArchitectureError` with ``name`` (e.g. "run/epoch_3.pt: batch norm 'features.1'").
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ArchitectureError(
            f"{name} keeps no running statistics (track_running_stats=False): it normalises "
            "each batch by its own statistics and cannot be folded into the layer before it"
        )
    var = bn.running_var.detach().cpu().double()
    scale = 1.0 / torch.sqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().cpu().double()
    shift = -bn.running_mean.detach().cpu().double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().cpu().double()
    return scale, shift


class BatchNormRule(Rule):
    family = "batch norm"
    role = "norm"
    cone = "fold-bn"
    description = "eval mode: per-channel affine map, folded into the layer before it"

    def check(self, node: Node) -> str | None:
        bn = node.module
        if bn is None or bn.running_mean is None or bn.running_var is None:
            return ("it keeps no running statistics (track_running_stats=False) and normalises each batch by its "
                    "own, which is no fixed affine map")  # fmt: skip
        return None

    def unroll(self, node: Node, shape: Sequence[int]) -> Any:
        import scipy.sparse as sp

        scale, shift = batchnorm_affine(node.module, f"batch norm {node.module_name!r}")  # type: ignore[arg-type]
        per = math.prod(shape[1:]) if len(shape) > 1 else 1
        return sp.diags_array(np.repeat(scale.numpy(), per)).tocsr(), np.repeat(shift.numpy(), per)

    def cone_role(self, node: Node) -> tuple[str, str]:
        return "fold-bn", f"batch norm {node.module_name!r}"


BATCHNORM = BatchNormRule()
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    register_rule(_cls, BATCHNORM)
