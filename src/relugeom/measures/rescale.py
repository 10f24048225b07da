"""Dinh et al.'s alpha-scale transform (Dinh, Pascanu, Bengio and Bengio 2017, Definition 5; Daróczy 2020).

For a rectifier network, ``T_alpha : (theta_1, theta_2) -> (alpha theta_1, alpha^{-1} theta_2)`` multiplies one
layer's weights (and bias) by ``alpha > 0`` and the next layer's weights by ``1 / alpha``. Because
``relu(alpha z) = alpha relu(z)``, the network computes the same function, so any measure of the *function*
(the Fisher-Rao norm, Liang et al. 2017, Corollary 3.1) is unchanged, while measures of the *parametrisation*
(sharpness, the Hessian trace, weight norms) change: Dinh et al.'s argument that flatness alone cannot explain
generalisation. ``examples/alpha_scale.py`` and docs/measures.md show both.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import LayerError, RelugeomError
from ..layers import find_layers


def alpha_scale(
    model: nn.Module, alpha: float, *, first: str | None = None, second: str | None = None,
    check: torch.Tensor | None = None,
) -> nn.Module:  # fmt: skip
    """A copy of ``model`` with Dinh et al.'s alpha-scale applied to two affine layers.

    ``first`` (weights and bias times ``alpha``) and ``second`` (weights times ``1/alpha``) are module names as in
    ``named_modules()``; by default the first two affine (Linear/Conv) layers. What lies between them must be
    positively homogeneous (ReLU, max/average pooling, reshapes) for the function to stay the same: a batch norm
    or a tanh in between breaks it. With ``check`` (a batch of inputs) the outputs of the copy and of ``model``
    are compared and a :class:`RelugeomError` names the layers when they differ.

    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> x = torch.randn(5, 3)
    >>> scaled = alpha_scale(net, 10.0, check=x)
    >>> ratio = scaled[0].weight.detach().norm() / net[0].weight.detach().norm()
    >>> bool(torch.allclose(scaled(x), net(x), atol=1e-5)), round(float(ratio), 6)
    (True, 10.0)
    """
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha must be a finite positive number, got {alpha!r}")
    names = [layer.name for layer in find_layers(model)]
    if first is None:
        if len(names) < 2:
            raise LayerError(f"{type(model).__name__}: the alpha-scale needs two affine layers, found {len(names)}")
        first = names[0]
    if first not in names:
        raise LayerError(f"layer {first!r} is not an affine (Linear/Conv) layer of the model; affine layers: {names}")
    if second is None:
        i = names.index(first)
        if i + 1 >= len(names):
            raise LayerError(f"layer {first!r} is the last affine layer; name the second layer (second=)")
        second = names[i + 1]
    if second not in names or second == first:
        raise LayerError(f"layer {second!r} is not another affine layer of the model; affine layers: {names}")
    out = copy.deepcopy(model)
    one, two = out.get_submodule(first), out.get_submodule(second)
    with torch.no_grad():
        one.weight.mul_(alpha)
        if one.bias is not None:
            one.bias.mul_(alpha)
        two.weight.div_(alpha)
    if check is not None:
        with torch.no_grad():
            a, b = model.eval()(check), out.eval()(check)
        scale = float(a.abs().max()) if a.numel() else 0.0
        if not torch.allclose(a, b, rtol=1e-5, atol=1e-6 * max(scale, 1.0)):
            raise RelugeomError(f"alpha-scale of layers {first!r} and {second!r} changes the network's output (max "
                                f"difference {float((a - b).abs().max()):.3g}): something between them is not "
                                "positively homogeneous (batch norm, tanh, a bias-dependent operation)")  # fmt: skip
    return out
