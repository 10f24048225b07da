"""The model zoo's registry: architecture names -> factories, and sizes read back off state dicts.

An architecture is named one of four ways (the same strings work for ``--arch`` on the command line):

* a registered name (``vgg9``, ``resnet18``, ``resnet18_cifar``, ... see :data:`ARCHITECTURES`);
* ``torchvision:NAME`` (``torchvision.models.get_model(NAME, weights=None)``) or ``timm:NAME``
  (``timm.create_model(NAME, pretrained=False)``), when those packages are installed and import;
* ``package.module:factory``: a callable of your own, imported by name (the working directory is on the
  import path). It gets the keyword arguments ``num_classes``, ``in_channels`` and ``image_size`` that its
  signature accepts, plus any others you pass;
* ``auto`` (:func:`model_from_state_dict` only): the zoo architecture that the state dict fits exactly
  (:func:`infer_architecture`).

Every factory takes keyword arguments only. A zoo factory also has an ``infer`` function reading its
keyword arguments off a state dict (:func:`infer_kwargs`), so that a bare state dict can be rebuilt into
its network (:func:`model_from_state_dict`). Add an architecture with :func:`register_architecture`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from .errors import ArchitectureError, RelugeomError, ShapeError
from .zoo.mlp import mlp, mlp_kwargs
from .zoo.mnist1d import mnist1d_cnn, mnist1d_kwargs
from .zoo.resnet import DEPTHS, resnet_factory, resnet_kwargs, resnet_name, resnet_spec
from .zoo.vgg import VGG_CFGS, alexnet, convnet_kwargs, vgg_factory

Infer = Callable[[str, Mapping[str, torch.Tensor]], dict[str, Any]]
STANDARD_KWARGS = ("num_classes", "in_channels", "image_size")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")  # DataParallel/DDP, torch.compile, Lightning


@dataclass(frozen=True)
class Architecture:
    """A named factory of networks.

    ``factory(**kwargs)`` builds the network; ``infer(name, state_dict)`` reads its keyword arguments off a
    state dict (``None``: only the classes and input channels are guessed, from the last linear and the first
    conv weight); ``meta_ok`` says that the network can be built on the meta device (no tensor created in its
    constructor outlives the state dict), so that loading a checkpoint skips the initialisation.
    """

    name: str
    factory: Callable[..., nn.Module]
    infer: Infer | None = None
    description: str = ""
    meta_ok: bool = False

    def __call__(self, **kwargs: Any) -> nn.Module:
        """Build the network: keyword arguments the factory does not take among ``num_classes``,
        ``in_channels`` and ``image_size`` are left out; others are errors naming the architecture."""
        try:
            params = inspect.signature(self.factory).parameters
        except (TypeError, ValueError):
            params = None
        if params is not None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            dropped = [k for k in STANDARD_KWARGS if k in kwargs and k not in params]
            kwargs = {k: v for k, v in kwargs.items() if k not in dropped}
        try:
            return self.factory(**kwargs)
        except RelugeomError:
            raise
        except TypeError as e:
            raise ArchitectureError(f"{self.name}: {e}") from None

    def kwargs_from(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """The factory's keyword arguments read off ``state_dict`` (see :func:`infer_kwargs`)."""
        if self.infer is not None:
            return self.infer(self.name, state_dict)
        kw: dict[str, Any] = {}
        weights = [v for k, v in state_dict.items() if k.endswith("weight") and torch.is_tensor(v)]
        linears = [w for w in weights if w.dim() == 2]
        if linears:
            kw["num_classes"] = int(linears[-1].shape[0])
        if weights and weights[0].dim() > 2:
            kw["in_channels"] = int(weights[0].shape[1])
        return kw


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(
    name: str, factory: Callable[..., nn.Module] | None = None, *, infer: Infer | None = None, description: str = "",
    meta_ok: bool = False, replace: bool = False,
) -> Any:  # fmt: skip
    """Register ``factory`` under ``name`` (lower case), for :func:`build_model`, :func:`model_from_state_dict`
    and ``--arch NAME``; usable as a decorator. ``infer(name, state_dict)`` returns the factory's keyword
    arguments for a state dict (see :class:`Architecture`). An existing name is an error unless ``replace``.

    Example
    -------
    >>> def tiny(*, num_classes=10, in_channels=3, image_size=32):
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
    >>> _ = register_architecture("tiny_example", tiny, replace=True)
    >>> get_architecture("tiny_example")(num_classes=4, in_channels=1, image_size=2)
    Sequential(
      (0): Flatten(start_dim=1, end_dim=-1)
      (1): Linear(in_features=4, out_features=4, bias=True)
    )
    >>> del ARCHITECTURES["tiny_example"]
    """
    if factory is None:
        return partial(register_architecture, name, infer=infer, description=description, meta_ok=meta_ok,
                       replace=replace)  # fmt: skip
    key = name.lower()
    if ":" in key or key == "auto":
        raise ArchitectureError(f"{name!r} cannot be an architecture name (':' and 'auto' are reserved)")
    if key in ARCHITECTURES and not replace:
        raise ArchitectureError(f"architecture {key!r} is already registered; pass replace=True to replace it")
    doc = description or (inspect.getdoc(factory) or "").split("\n", 1)[0]
    ARCHITECTURES[key] = Architecture(key, factory, infer, doc, meta_ok)
    return factory


for _name in ("vgg9", "vgg11", "vgg13", "vgg16", "vgg19", "lenet"):
    register_architecture(_name, vgg_factory(_name, False), infer=convnet_kwargs, meta_ok=True)
    if _name != "lenet":
        register_architecture(f"{_name}_bn", vgg_factory(_name, True), infer=convnet_kwargs, meta_ok=True)
register_architecture("alexnet", alexnet, infer=convnet_kwargs, meta_ok=True)
register_architecture("mlp", mlp, infer=mlp_kwargs, meta_ok=True)
register_architecture("mnist1d_cnn", mnist1d_cnn, infer=mnist1d_kwargs, meta_ok=True)
for _depth in DEPTHS:
    for _cifar in (False, True):
        register_architecture(resnet_name(_depth, _cifar), resnet_factory(_depth, _cifar), infer=resnet_kwargs,
                              meta_ok=True)  # fmt: skip
assert set(VGG_CFGS) <= set(ARCHITECTURES)


def _import_optional(package: str, spec: str) -> Any:
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.split(".")[0] != package:
            raise ArchitectureError(f"--arch {spec}: {package} is installed but does not import here "
                                    f"({type(e).__name__}: {e})") from None  # fmt: skip
        raise ArchitectureError(f"--arch {spec}: {package} is not installed; pip install {package} (a build "
                                f"matching torch {torch.__version__}), or choose a zoo architecture") from None
    except Exception as e:  # a broken install fails in many ways (a missing operator, a wrong binary)
        raise ArchitectureError(f"--arch {spec}: {package} is installed but does not import here "
                                f"({type(e).__name__}: {str(e)[:200]}); it must be built for torch "
                                f"{torch.__version__}") from None  # fmt: skip


def _closest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


def _torchvision(spec: str, name: str) -> Architecture:
    tv = _import_optional("torchvision", spec)
    models = tv.models
    names = sorted(models.list_models()) if hasattr(models, "list_models") else []
    if names and name not in names:
        raise ArchitectureError(f"--arch {spec}: torchvision has no model {name!r}{_closest(name, names)}")

    def build(*, num_classes: int = 1000, in_channels: int = 3, image_size: int | None = None, **kw: Any) -> nn.Module:
        del image_size  # torchvision's classifiers pool adaptively: any size their strides allow
        if in_channels != 3:
            raise ShapeError(f"{spec}: torchvision's models take 3 input channels, not {in_channels}; use a zoo "
                             "architecture (resnet18_cifar, vgg9, ...) or replicate the channel")  # fmt: skip
        if hasattr(models, "get_model"):
            return models.get_model(name, weights=None, num_classes=num_classes, **kw)
        return getattr(models, name)(num_classes=num_classes, **kw)

    return Architecture(spec, build, description=f"torchvision's {name}")


def _timm(spec: str, name: str) -> Architecture:
    timm = _import_optional("timm", spec)
    if hasattr(timm, "is_model") and not timm.is_model(name):
        raise ArchitectureError(f"--arch {spec}: timm has no model {name!r}{_closest(name, timm.list_models())}")

    def build(*, num_classes: int = 1000, in_channels: int = 3, image_size: int | None = None, **kw: Any) -> nn.Module:
        del image_size  # pass img_size=... with --model-arg for the timm models that fix it (ViTs)
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kw)

    return Architecture(spec, build, description=f"timm's {name}")


def _user_factory(spec: str, module_name: str, attr: str) -> Architecture:
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ArchitectureError(f"--arch {spec}: cannot import {module_name!r} ({e}); is it installed or in the "
                                "working directory?") from None  # fmt: skip
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            public = [n for n in dir(module) if not n.startswith("_")]
            raise ArchitectureError(f"--arch {spec}: {module_name} has no {attr!r}{_closest(part, public)}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ArchitectureError(f"--arch {spec}: {module_name}.{attr} is not callable")
    return Architecture(spec, factory, description=(inspect.getdoc(factory) or "").split("\n", 1)[0])


def get_architecture(spec: str) -> Architecture:
    """The :class:`Architecture` of a name, ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory``.

    Example
    -------
    >>> arch = get_architecture("resnet18_cifar")
    >>> arch(num_classes=10, in_channels=1, image_size=8, width=4)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    spec = str(spec).strip()
    key = spec.lower()
    if key in ARCHITECTURES:
        return ARCHITECTURES[key]
    if ":" in spec:
        where, _, name = spec.partition(":")
        if not where or not name:
            raise ArchitectureError(f"--arch {spec!r}: write torchvision:NAME, timm:NAME or package.module:factory")
        if where == "torchvision":
            return _torchvision(spec, name)
        if where == "timm":
            return _timm(spec, name)
        return _user_factory(spec, where, name)
    raise ArchitectureError(f"unknown architecture {spec!r}{_closest(key, sorted(ARCHITECTURES))}; choose one of "
                            f"{', '.join(sorted(ARCHITECTURES))}, or torchvision:NAME, timm:NAME, "
                            "package.module:factory")  # fmt: skip


def create_model(spec: str, *, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
                 **kwargs: Any) -> nn.Module:  # fmt: skip
    """Build an architecture with its factory's own initialisation (PyTorch's defaults for the zoo; for the
    papers' initialisations use :func:`relugeom.build_model`).

    Example
    -------
    >>> net = create_model("resnet50", num_classes=1000, image_size=224)
    >>> sum(p.numel() for p in net.parameters())  # torchvision's published count
    25557032
    """
    return get_architecture(spec)(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)


def unwrap_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict without the prefix that a wrapper put on every key (``module.`` of DataParallel and
    DistributedDataParallel, ``_orig_mod.`` of ``torch.compile``, ``model.`` of a Lightning module)."""
    sd = dict(state_dict)
    changed = True
    while changed and sd:
        changed = False
        for p in WRAPPER_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                changed = True
    return sd


def infer_kwargs(arch: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor arguments of ``arch`` (classes, input channels, widths, ...) read off a state dict.

    Example
    -------
    >>> from relugeom.zoo.resnet import resnet
    >>> infer_kwargs("resnet18_cifar", resnet(18, cifar=True, num_classes=100, width=16).state_dict())
    {'num_classes': 100, 'in_channels': 3, 'width': 16, 'image_size': 32}
    """
    entry = get_architecture(arch)
    return entry.kwargs_from(unwrap_state_dict(state_dict))


def _fits(model: nn.Module, sd: Mapping[str, torch.Tensor]) -> bool:
    own = model.state_dict()
    return set(own) == set(sd) and all(tuple(own[k].shape) == tuple(sd[k].shape) for k in own)


def infer_architecture(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The name of the zoo architecture whose keys and shapes ``state_dict`` has exactly.

    A torchvision-style ResNet is read directly (depth from the blocks per stage and the block type, the
    variant from the stem, classes from ``fc``), with an error naming the key that does not fit; other
    state dicts are tried against every zoo architecture (built on the meta device, so no memory is used).

    Example
    -------
    >>> from relugeom.zoo.resnet import resnet
    >>> infer_architecture(resnet(34, cifar=True, width=8).state_dict())
    'resnet34_cifar'
    """
    sd = unwrap_state_dict(state_dict)
    if "conv1.weight" in sd and any(k.startswith("layer1.") for k in sd):
        return resnet_spec(sd).name
    fits = []
    for name, entry in ARCHITECTURES.items():
        if entry.infer is None or not entry.meta_ok:
            continue
        try:
            with torch.device("meta"):
                model = entry(**entry.kwargs_from(sd))
        except (RelugeomError, RuntimeError, ValueError, KeyError, IndexError, TypeError):
            continue
        if _fits(model, sd):
            fits.append(name)
    if len(fits) == 1:
        return fits[0]
    if fits:
        raise ArchitectureError(f"the state dict fits several architectures ({', '.join(fits)}); pass one")
    first = ", ".join(list(sd)[:3]) + (", ..." if len(sd) > 3 else "")
    raise ArchitectureError(f"the state dict (keys {first}) fits no zoo architecture; pass the architecture "
                            "(a zoo name, torchvision:NAME, timm:NAME or package.module:factory)")  # fmt: skip


def load_state_dict_into(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str = "", *, assign: bool = False
) -> nn.Module:
    """``model.load_state_dict(strict=True)`` with a clear error naming missing, unexpected and
    mis-shaped keys; a common wrapper prefix (``module.``, ``model.``, Lightning's module attribute) is stripped.

    Example
    -------
    >>> net = create_model("mlp", in_channels=1, image_size=2, hidden=[3])
    >>> load_state_dict_into(net, {"module." + k: v for k, v in net.state_dict().items()}) is net
    True
    """
    own = model.state_dict()
    sd = dict(state_dict)
    if not set(own) & set(sd):
        sd = unwrap_state_dict(sd)
    if not set(own) & set(sd):
        heads = {k.split(".", 1)[0] for k in sd}
        if len(heads) == 1 and all("." in k for k in sd):
            head = heads.pop() + "."
            sd = {k[len(head) :]: v for k, v in sd.items()}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    badshape = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
                if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]  # fmt: skip
    if missing or unexpected or badshape:

        def show(keys: list[str]) -> str:
            return ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if badshape:
            parts.append(f"shape mismatches (file vs model): {show(badshape)}")
        raise ArchitectureError(f"{where}the state dict does not fit the architecture; " + "; ".join(parts))
    model.load_state_dict(sd, strict=True, assign=assign)
    return model


def model_from_state_dict(arch: str | None, state_dict: Mapping[str, torch.Tensor], where: str = "",
                          **kwargs: Any) -> nn.Module:  # fmt: skip
    """Build ``arch`` with the sizes read off ``state_dict`` and load it (strict, clear errors), in eval mode.

    ``kwargs`` are factory arguments that a state dict cannot tell (your own factory's options); they
    override the inferred ones.
    ``arch`` is any name :func:`get_architecture` takes, or ``"auto"``/``None`` for
    :func:`infer_architecture`. A zoo network is built on the meta device and takes the state dict's
    tensors as its parameters (``assign=True``): no initialisation, no copy.

    Example
    -------
    >>> from relugeom.zoo.resnet import resnet
    >>> sd = resnet(18, cifar=True, num_classes=10, width=4).state_dict()
    >>> model_from_state_dict("auto", sd).fc.out_features
    10
    """
    sd = unwrap_state_dict(state_dict)
    try:
        if arch is None or str(arch).lower() == "auto":
            arch = infer_architecture(sd)
        entry = get_architecture(arch)
        kwargs = {**entry.kwargs_from(sd), **kwargs}
        if entry.meta_ok:
            with torch.device("meta"):
                model = entry(**kwargs)
        else:
            model = entry(**kwargs)
    except ShapeError as e:
        raise ArchitectureError(f"{where}the state dict does not fit {arch}: {e}") from None
    except ArchitectureError as e:
        raise ArchitectureError(f"{where}{e}") from None
    return load_state_dict_into(model, sd, where, assign=entry.meta_ok).eval()
