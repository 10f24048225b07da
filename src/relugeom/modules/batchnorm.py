"""Batch norm in eval mode: ``nn.BatchNorm1d/2d/3d`` (and ``nn.SyncBatchNorm``) with running statistics are the
per-channel affine map ``y = scale * x + shift`` (:func:`batchnorm_affine`), foldable into the layer before it.
A batch norm without running statistics normalises every batch by its own, which no fixed affine map
reproduces: the analyses refuse it with the module's name."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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

    @staticmethod
    def _inv_std(bn: nn.Module, dim: int) -> torch.Tensor:
        """``1 / sqrt(running_var + eps)`` shaped to broadcast over a batch of rank ``dim``."""
        return torch.rsqrt(bn.running_var + bn.eps).reshape(1, -1, *([1] * (dim - 2)))

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        # out = gamma (x - mean) / std + beta is linear in (gamma, beta): its tangent along theta is out itself
        bn = node.module
        t = tangents.get(node.inputs[0])
        lin = None
        if t is not None:
            scale = self._inv_std(bn, t.dim())
            lin = t * (scale * bn.weight.reshape(scale.shape) if bn.affine else scale)  # type: ignore[union-attr]
        if not bn.affine:  # type: ignore[union-attr]
            return lin
        return out if lin is None else lin + out

    def pl_sq_norm(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        # d f / d gamma_c = sum_p delta[c, p] (x - mean_c)[p] / std_c; along z: the tangent of x in place of x;
        # d f / d beta_c = sum_p delta[c, p] does not move inside a region
        bn = node.module
        b = tangent.shape[0]
        if bn.weight is None:  # type: ignore[union-attr]
            return tangent.new_zeros(b)
        return (self._per_channel(bn, tangent, signal) ** 2).sum(1)

    def pl_batch_sum(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor,
                     blocks: int = 1) -> dict[str, torch.Tensor]:  # fmt: skip
        bn = node.module
        if bn.weight is None:  # type: ignore[union-attr]
            return {}
        per = self._per_channel(bn, tangent, signal)
        return {"weight": per.reshape(blocks, -1, per.shape[1]).sum(1)}

    def _per_channel(self, bn: nn.Module, tangent: torch.Tensor, signal: torch.Tensor) -> torch.Tensor:
        """The gamma block of ``S(x) z`` per sample, ``(B, C)``."""
        b = tangent.shape[0]
        return (signal * tangent * self._inv_std(bn, tangent.dim())).reshape(b, tangent.shape[1], -1).sum(2)

    def param_degree(self, node: Node) -> int | str:
        bn = node.module
        shift = bn.running_mean.detach().abs().max() > 0  # type: ignore[union-attr]
        if bn.affine:  # type: ignore[union-attr]
            shift = shift or bn.bias.detach().abs().max() > 0  # type: ignore[union-attr]
        if bool(shift):
            return "a batch norm with a running mean or a shift (an affine map)"
        return 1 if bn.affine else 0  # type: ignore[union-attr]


BATCHNORM = BatchNormRule()
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
    register_rule(_cls, BATCHNORM)
