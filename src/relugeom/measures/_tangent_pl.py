"""Tangent sensitivity of a piecewise-linear network without per-sample nested autograd (internal).

In a network built from Linear/Conv layers, ReLU-like activations, pooling and eval-mode batch norms,
the back-propagated signal ``delta_l = d f / d o_l`` at every layer output is constant on each
activation region, so differentiating the parameter gradient along an input direction ``z`` only
moves the layer inputs (Daróczy 2020, Lemma 3.1 and its proof):

    S(x) z  restricted to W_l  =  sum_p delta_l[p] (J a_{l-1} z)[p]^T       (bias: 0)
    S(x) z  restricted to gamma_c of a batch norm  =  sum_p delta[c, p] (J x z)[c, p] / sqrt(var_c + eps)

``delta`` comes from one backward pass of the batch (shared by every probe), the input tangents
``J a z`` from one forward-mode pass per probe, and the per-sample squared norms from the patches
(or their Gram matrices when a layer has few positions), never a per-sample gradient of every sample.
Exact almost everywhere (off region boundaries), float64.
"""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from ._common import AFFINE, NORMS, affine_call_order, non_homogeneous_activations

_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d)


def unsupported(model: nn.Module, x: torch.Tensor) -> str | None:
    """Why the piecewise-linear route cannot take ``model`` (None when it can)."""
    bad = non_homogeneous_activations(model)
    if bad:
        return f"not piecewise linear: {', '.join(bad[:3])}"
    for name, mod in model.named_modules():
        if isinstance(mod, nn.PReLU):
            return f"{name} (PReLU) has a learned slope"
        if isinstance(mod, NORMS) and (mod.running_mean is None or mod.running_var is None):
            return f"{name} normalises with batch statistics"
        if isinstance(mod, AFFINE) and not isinstance(mod, _SUPPORTED):
            return f"{name} ({type(mod).__name__})"
        if isinstance(mod, nn.Conv1d | nn.Conv2d) and (mod.groups != 1 or mod.padding_mode != "zeros"
                                                       or mod.padding == "same"):  # fmt: skip
            return f"{name}: groups {mod.groups}, padding {mod.padding!r} ({mod.padding_mode})"
    order = affine_call_order(model, x)
    if len(order) != len(set(order)):
        return "a layer is called more than once (shared weights)"
    return None


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, AFFINE + NORMS)]


def output_signals(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``d sum(f) / d o`` at the output of every Linear/Conv/batch-norm module, for the whole batch."""
    outs: dict[str, torch.Tensor] = {}
    layers = _layers(model)
    hooks = [m.register_forward_hook(lambda _m, _a, o, n=n: outs.__setitem__(n, o)) for n, m in layers]
    try:
        with torch.enable_grad():
            total = model(x.detach().requires_grad_(True)).sum()
            names = [n for n, _ in layers if n in outs]
            grads = torch.autograd.grad(total, [outs[n] for n in names], allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
    return {n: (torch.zeros_like(outs[n]) if g is None else g) for n, g in zip(names, grads)}


def _input_tangents(model: nn.Module, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
    tangents: dict[str, torch.Tensor] = {}

    def keep(name: str):  # noqa: ANN202
        def fn(_m, args, _o) -> None:
            t = fwAD.unpack_dual(args[0]).tangent
            tangents[name] = torch.zeros_like(fwAD.unpack_dual(args[0]).primal) if t is None else t

        return fn

    hooks = [m.register_forward_hook(keep(n)) for n, m in _layers(model)]
    try:
        with torch.no_grad(), fwAD.dual_level():
            model(fwAD.make_dual(x, z))
    finally:
        for h in hooks:
            h.remove()
    return tangents


def _patch_sq_norm(delta: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """Per sample ``||sum_p delta[:, p] patches[:, p]^T||_F^2`` for delta (B, O, P), patches (B, K, P)."""
    _, o, p = delta.shape
    k = patches.shape[1]
    if p * p * (o + k) < o * k * p:  # few positions: through the Gram matrices of the positions
        return (torch.einsum("bop,boq->bpq", delta, delta) * torch.einsum("bkp,bkq->bpq", patches, patches)).sum((1, 2))
    return torch.einsum("bop,bkp->bok", delta, patches).pow(2).sum((1, 2))


def terms(
    model: nn.Module, x: torch.Tensor, z: torch.Tensor, signals: dict[str, torch.Tensor], *, sums: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """``||S(x) z||^2`` per sample (output "sum"), with ``signals`` from :func:`output_signals`; with ``sums``
    also ``sum_x S(x) z`` over the batch, per parameter name (weights and batch-norm scales; biases are 0)."""
    tangents = _input_tangents(model, x, z)
    total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    acc: dict[str, torch.Tensor] | None = {} if sums else None
    for name, mod in _layers(model):
        if name not in tangents:
            continue
        t, delta = tangents[name], signals[name]
        b = t.shape[0]
        key = f"{name}.weight" if name else "weight"
        if isinstance(mod, NORMS):
            if mod.weight is None:
                continue
            scale = torch.rsqrt(mod.running_var + mod.eps).reshape(1, -1, *([1] * (t.dim() - 2)))
            per = (delta * t * scale).reshape(b, t.shape[1], -1).sum(2)  # (B, C)
            total += (per**2).sum(1)
            if acc is not None:
                acc[key] = per.sum(0)
            continue
        if isinstance(mod, nn.Linear):
            d_ = delta.reshape(b, -1, mod.out_features).transpose(1, 2)
            patches = t.reshape(b, -1, mod.in_features).transpose(1, 2)
        else:
            one_d = isinstance(mod, nn.Conv1d)
            t4 = t.unsqueeze(2) if one_d else t
            pad = (0,) * len(mod.kernel_size) if mod.padding == "valid" else tuple(mod.padding)
            kernel, dil, stride = ((1, *v) if one_d else v for v in (mod.kernel_size, mod.dilation, mod.stride))
            pad = (0, *pad) if one_d else pad
            patches = F.unfold(t4, kernel, dilation=dil, padding=pad, stride=stride)
            d_ = delta.reshape(b, mod.out_channels, -1)
        total += _patch_sq_norm(d_, patches)
        if acc is not None:
            acc[key] = torch.einsum("bop,bkp->ok", d_, patches)  # the weight's layout (out, in * kernel)
    return total, acc


def sq_norms(model: nn.Module, x: torch.Tensor, z: torch.Tensor, signals: dict[str, torch.Tensor]) -> torch.Tensor:
    """``||S(x) z||^2`` per sample (output "sum"), with ``signals`` from :func:`output_signals`."""
    return terms(model, x, z, signals)[0]
