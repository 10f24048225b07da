"""The papers' networks and initialisations: :func:`build_model` builds a registered architecture
(:mod:`relugeom.architectures`; the networks themselves live in :mod:`relugeom.zoo`) and initialises it.

Initialisations (:func:`initialize`): ``kaiming`` (torchvision's: Kaiming normal, fan_out, for
convs; N(0, 0.01) for linear layers; zero biases), ``kaiming_all`` (Kaiming normal with fan_out
for every weight, zero biases: Gamba et al. 2020 sec. 3.1), ``normal001`` (every weight N(0, 0.01**2), i.e.
standard deviation 0.01, zero biases: the failing initialisation of Gamba et al. 2020 sec. 3.2 / fig. 15.
The VGG paper writes "10^-2 variance"; the seed's vanishing-gradient account matches a standard
deviation of 0.01, which is what this uses; pass ``std=`` to :func:`initialize` for another),
``torch`` (PyTorch's own default initialisation of every layer, ``reset_parameters()``: what models written
without an explicit init use, e.g. the MNIST-1D CNN of Greydanus and Kobak 2020).
Batch-norm layers get weight 1 and bias 0 (except under ``torch``, where they get PyTorch's defaults: the same).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..architectures import (  # noqa: F401  (re-exported: the registry's names, as before the split)
    ARCHITECTURES,
    get_architecture,
    infer_architecture,
    infer_kwargs,
    load_state_dict_into,
    model_from_state_dict,
)
from ..errors import ArchitectureError
from ..modules import rule_for_module
from ..zoo.mlp import MLP  # noqa: F401
from ..zoo.mnist1d import MNIST1DCNN  # noqa: F401
from ..zoo.vgg import VGG_CFGS, ConvNet  # noqa: F401

INITS = ("kaiming", "kaiming_all", "normal001", "torch")


def initialize(model: nn.Module, scheme: str = "kaiming", *, std: float = 0.01, seed: int | None = None) -> nn.Module:
    """Re-initialise every conv/linear/BN layer of ``model`` in place (see the module docstring)."""
    if scheme not in INITS:
        raise ArchitectureError(f"unknown initialisation {scheme!r}; choose one of {', '.join(INITS)}")
    if scheme == "torch":  # PyTorch's defaults, drawn from the global generator (seeded here when asked)
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            for m in model.modules():
                if hasattr(m, "reset_parameters") and m is not model:
                    m.reset_parameters()
        return model
    gen = None
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)

    def normal_(t: torch.Tensor, s: float) -> None:
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=gen, dtype=t.dtype) * s)

    def kaiming_(t: torch.Tensor) -> None:
        fan_out = t.shape[0] * (t[0][0].numel() if t.dim() > 2 else 1)
        normal_(t, math.sqrt(2.0 / fan_out))

    for m in model.modules():
        rule = rule_for_module(m)
        role = rule.role if rule is not None else None
        if role == "layer":
            is_conv = rule.family != "linear"  # type: ignore[union-attr]
            if scheme == "normal001":
                normal_(m.weight, std)
            elif scheme == "kaiming_all" or is_conv:
                kaiming_(m.weight)
            else:
                normal_(m.weight, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif role == "norm" and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def build_model(
    arch: str,
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    init: str = "kaiming",
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered architecture and initialise it (seeded when ``seed`` is given).

    Example
    -------
    >>> net = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, seed=0)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    model = get_architecture(arch)(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    return initialize(model, init, seed=seed)


def fresh_init(
    arch: str | None, source: Mapping[str, torch.Tensor] | nn.Module, *, init: str = "kaiming", seed: int | None = 0
) -> nn.Module:
    """A freshly initialised network of the architecture and sizes of ``source`` (a state dict or a module),
    a baseline to compare a trained network against (``relugeom stats --init random``).

    ``arch`` names the architecture (``None`` or ``"auto"``: inferred from the keys); a module given with
    ``arch=None`` is itself copied and re-initialised (a network that no registered architecture builds,
    such as one read from a MatConvNet file).

    Example
    -------
    >>> trained = build_model("vgg9", num_classes=7, in_channels=1, image_size=8, seed=1)
    >>> fresh = fresh_init("vgg9", trained.state_dict(), seed=0)
    >>> fresh.classifier[-1].out_features, torch.equal(fresh.features[0].weight, trained.features[0].weight)
    (7, False)
    """
    if isinstance(source, nn.Module):
        if arch is None:
            import copy

            return initialize(copy.deepcopy(source), init, seed=seed)
        source = source.state_dict()
    if arch is None or arch.lower() == "auto":
        arch = infer_architecture(source)
    return build_model(arch, **infer_kwargs(arch, source), init=init, seed=seed)


def import_factory(ref: str) -> Callable[..., nn.Module]:
    """The class or function named ``module:QualName`` (``mypkg.nets:SmallNet``), through the architecture registry
    (:func:`relugeom.architectures.get_architecture`).

    Importing runs the module's code, so relugeom calls this only for a name the user gave (``--arch
    module:QualName``, ``arch=``), never for one read from a file.
    """
    if not is_factory_reference(ref):
        raise ArchitectureError(f"{ref!r} is not a model factory reference like mypkg.models:Net")
    return get_architecture(ref).factory


def is_factory_reference(arch: str | None) -> bool:
    """Whether ``arch`` names a user's model factory (``module:QualName``) rather than a relugeom architecture."""
    return arch is not None and ":" in arch


def model_from_factory(
    ref: str, state_dict: Mapping[str, torch.Tensor], kwargs: Mapping[str, Any] | None = None, where: str = ""
) -> nn.Module:
    """Build the user's model ``ref`` (``module:QualName``) with ``kwargs`` and load ``state_dict``
    into it (strict, clear errors). For runs recorded from a user's training loop: their checkpoints
    carry ``model_kwargs``; the user names the factory (see :func:`import_factory`)."""
    factory = import_factory(ref)
    try:
        model = factory(**dict(kwargs or {}))
    except Exception as e:  # the user's constructor: any failure is reported, not a relugeom bug
        raise ArchitectureError(f"{where}{ref}(**{dict(kwargs or {})}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ArchitectureError(f"{where}{ref} returned a {type(model).__name__}, not an nn.Module")
    return load_state_dict_into(model, state_dict, where).eval()
