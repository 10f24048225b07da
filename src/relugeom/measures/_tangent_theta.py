"""Forward propagation of the tangent ``J_theta f . theta`` (the direction is theta itself) by module hooks.

For a module whose output is linear in its own parameters (Linear, Conv, affine BatchNorm: ``o(x, a p)
= a o(x, p)``), the tangent in the direction ``theta`` is ``J_x o . t_in + o``: one extra linear map
per layer instead of the two a generic Jacobian-vector product needs, so the whole tangent costs about
two forward passes. Parameter-free linear modules (pooling, flatten, dropout in eval mode) map the
tangent like their input; ReLU/leaky ReLU/max pooling use the primal's pattern.

Tangents are matched to tensors by storage pointer and size, so a functional operation between
modules (an addition, a non-ReLU activation) breaks the chain: :func:`theta_tangent` then returns
``None`` and the caller falls back to ``torch.func.jvp``. Callers also check the result against
``torch.func.jvp`` on a few samples.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import AFFINE, NORMS

_LINEAR_NOPARAM = (
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Identity,
)  # fmt: skip
_MAXPOOL = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}


class _Fallback(Exception):
    pass


def _supported(model: nn.Module) -> bool:
    for mod in model.modules():
        if len(list(mod.children())) > 0:
            if any(True for _ in mod.parameters(recurse=False)):
                return False
            continue
        ok = isinstance(mod, AFFINE + _LINEAR_NOPARAM + (nn.ReLU, nn.LeakyReLU) + tuple(_MAXPOOL))
        ok = ok or (isinstance(mod, NORMS) and mod.track_running_stats)
        if not ok:
            return False
    return True


def _tangent_of(mod: nn.Module, inp: torch.Tensor, out: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor | None:
    """Tangent of ``out`` given the tangent ``t`` of ``inp`` (None: zero, the model input)."""
    if isinstance(mod, nn.Linear):
        return out if t is None else F.linear(t, mod.weight) + out
    if isinstance(mod, AFFINE):  # convolutions
        return out if t is None else mod._conv_forward(t, mod.weight, None) + out
    if isinstance(mod, NORMS):
        scale = torch.rsqrt(mod.running_var + mod.eps)
        if mod.affine:
            scale = scale * mod.weight
        shape = (1, -1) + (1,) * (inp.dim() - 2)
        lin = None if t is None else t * scale.reshape(shape)
        if not mod.affine:
            return lin  # None: still zero
        return out if lin is None else lin + out
    if t is None:
        return None  # a zero tangent stays zero through parameter-free modules (no GEMM on zeros later)
    if isinstance(mod, nn.ReLU):
        return t * (inp > 0)
    if isinstance(mod, nn.LeakyReLU):
        return torch.where(inp > 0, t, mod.negative_slope * t)
    if type(mod) in _MAXPOOL:
        _, idx = _MAXPOOL[type(mod)](inp, mod.kernel_size, mod.stride, mod.padding, mod.dilation,
                                     ceil_mode=mod.ceil_mode, return_indices=True)  # fmt: skip
        flat = t.flatten(2)
        return flat.gather(2, idx.flatten(2)).reshape(out.shape)
    return mod.forward(t)  # parameter-free linear modules (forward() does not run the hooks again)


def theta_tangent(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(f(x), J_theta f(x) . theta)`` by hooks, or None when the model's structure is not supported."""
    if not _supported(model):
        return None
    tangents: dict[tuple[int, int], torch.Tensor | None] = {(x.data_ptr(), x.numel()): None}

    def hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        inp = args[0]
        key = (inp.data_ptr(), inp.numel())
        if key not in tangents:
            raise _Fallback
        t = tangents[key]
        t = None if t is None else t.reshape(inp.shape)
        tangents[(out.data_ptr(), out.numel())] = _tangent_of(mod, inp, out, t)

    leaves = [m for m in model.modules() if len(list(m.children())) == 0]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            out = model(x)
    except _Fallback:
        return None
    finally:
        for h in handles:
            h.remove()
    key = (out.data_ptr(), out.numel())
    if key not in tangents or tangents[key] is None:
        return None
    return out, tangents[key].reshape(out.shape)
