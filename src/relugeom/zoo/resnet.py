"""Residual networks (He et al. 2016) with torchvision's module and state-dict names (written here, no torchvision).

* ``resnet18/34`` (BasicBlock: two 3x3 convs) and ``resnet50/101/152`` (Bottleneck: 1x1, 3x3, 1x1, the
  stride on the 3x3 conv as in torchvision's "ResNet v1.5"): the 7x7 stride-2 stem, 3x3 stride-2 max-pool,
  four stages ``layer1..layer4`` (the first block of stages 2-4 strided, with a 1x1 conv + batch norm
  ``downsample`` shortcut), global average pool and ``fc``. Key names and shapes are torchvision's, so a
  torchvision ResNet checkpoint loads (11,689,512 parameters for resnet18 at 1000 classes).
* ``*_cifar``: the common CIFAR variant (He et al. 2016, sec. 4.2 uses it for its CIFAR-10 ResNets;
  the same stem is used for ResNet-18 on CIFAR throughout the literature): a 3x3 stride-1 stem conv and no
  max-pool (``maxpool`` is an ``nn.Identity``), so 32x32 inputs reach ``layer4`` at 4x4. Same key names;
  only ``conv1.weight`` differs in shape (3x3 instead of 7x7).

``width`` (64 by default) is the number of channels of the stem and of ``layer1``, doubled at each stage:
``width=16`` gives a small ResNet for quick experiments (the widths of Nakkiran et al. 2019's ResNet-18 family).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ArchitectureError, ShapeError


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm, plus the shortcut: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 (reduce), 3x3 (strided), 1x1 (expand by 4) convs with batch norm, plus the shortcut."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet(nn.Module):
    """A ResNet in torchvision's layout: ``conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc``.

    ``block`` is :class:`BasicBlock` or :class:`Bottleneck`, ``layers`` the number of blocks per stage,
    ``cifar`` chooses the 3x3 stride-1 stem without max-pool, ``width`` the channels of the first stage.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int], num_classes: int = 1000,
                 in_channels: int = 3, width: int = 64, cifar: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.inplanes = width
        if cifar:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = nn.Identity() if cifar else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * width * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int,
                    stride: int = 1) -> nn.Sequential:  # fmt: skip
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# depth -> (block, blocks per stage), torchvision's table (He et al. 2016, table 1)
DEPTHS: dict[int, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}
# total downsampling before the global pool: the ImageNet stem (stride-2 conv, stride-2 max-pool) and three
# strided stages (32x); the CIFAR stem keeps the resolution (8x)
DOWNSAMPLING = {False: 32, True: 8}


def resnet_name(depth: int, cifar: bool) -> str:
    """The zoo's name of a ResNet: ``resnet50``, ``resnet18_cifar``."""
    return f"resnet{depth}{'_cifar' if cifar else ''}"


def resnet(depth: int, *, cifar: bool = False, num_classes: int = 1000, in_channels: int = 3,
           image_size: int | None = None, width: int = 64) -> ResNet:  # fmt: skip
    """A ResNet of ``depth`` 18, 34, 50, 101 or 152 (``cifar``: 3x3 stem, no max-pool).

    ``image_size`` only checks that the inputs are large enough for every stage to see a real spatial
    map (at least 32 pixels a side for the ImageNet stem, 8 for the CIFAR one), with a clear error otherwise.

    Example
    -------
    >>> net = resnet(18, cifar=True, num_classes=10, image_size=32, width=8)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    if depth not in DEPTHS:
        raise ArchitectureError(f"no ResNet of depth {depth}; choose one of {', '.join(map(str, DEPTHS))}")
    name, need = resnet_name(depth, cifar), DOWNSAMPLING[cifar]
    if image_size is not None and image_size < need:
        hint = (f"use {resnet_name(depth, True)} (3x3 stem, no max-pool: {DOWNSAMPLING[True]}x) or upscale "
                f"with --image-size {need}") if not cifar else f"upscale with --image-size {need}"  # fmt: skip
        raise ShapeError(f"{name}: {image_size}x{image_size} images are too small: it downsamples {need}x, so "
                         f"its last stages would see maps below 1x1 (need at least {need} pixels a side); {hint}")
    if width < 1:
        raise ArchitectureError(f"{name}: width must be positive, got {width}")
    block, layers = DEPTHS[depth]
    return ResNet(block, layers, num_classes=num_classes, in_channels=in_channels, width=width, cifar=cifar)


def resnet_factory(depth: int, cifar: bool):  # noqa: ANN201
    """The zoo factory of one ResNet (keyword arguments ``num_classes``, ``in_channels``, ``image_size``,
    ``width``)."""

    def build(*, num_classes: int = 10, in_channels: int = 3, image_size: int | None = None,
              width: int = 64) -> ResNet:  # fmt: skip
        return resnet(depth, cifar=cifar, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                      width=width)  # fmt: skip

    build.__name__ = build.__qualname__ = resnet_name(depth, cifar)
    build.__doc__ = (f"ResNet-{depth} (He et al. 2016) in torchvision's layout"
                     f"{', CIFAR variant: 3x3 stem, no max-pool' if cifar else ''}.")  # fmt: skip
    return build


@dataclass(frozen=True)
class ResNetSpec:
    """What a ResNet state dict says about its network."""

    depth: int
    cifar: bool
    num_classes: int
    in_channels: int
    width: int

    @property
    def name(self) -> str:
        return resnet_name(self.depth, self.cifar)

    def kwargs(self) -> dict[str, Any]:
        """The factory's keyword arguments (``image_size``: the smallest that fits, 224 or 32 by convention)."""
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "width": self.width,
                "image_size": 32 if self.cifar else 224}  # fmt: skip


def _weight(sd: Mapping[str, torch.Tensor], key: str, rank: int, what: str) -> torch.Tensor:
    w = sd.get(key)
    if w is None:
        raise ArchitectureError(f"{key}: missing, so the state dict is not {what}")
    if w.dim() != rank:
        raise ArchitectureError(f"{key}: shape {tuple(w.shape)}, expected a rank-{rank} weight for {what}")
    return w


def resnet_spec(state_dict: Mapping[str, torch.Tensor]) -> ResNetSpec:
    """Depth, variant (ImageNet or CIFAR stem), classes, input channels and width of a ResNet state dict
    with torchvision's key names; an :class:`~relugeom.errors.ArchitectureError` names the key that does not fit.

    Example
    -------
    >>> resnet_spec(resnet(50, num_classes=7, width=8).state_dict())
    ResNetSpec(depth=50, cifar=False, num_classes=7, in_channels=3, width=8)
    """
    what = "a torchvision-style ResNet"
    stem = _weight(state_dict, "conv1.weight", 4, what)
    k = tuple(int(s) for s in stem.shape[2:])
    if k not in ((7, 7), (3, 3)):
        raise ArchitectureError(f"conv1.weight: a {k[0]}x{k[1]} stem; a ResNet has 7x7 (ImageNet) or 3x3 (CIFAR)")
    bottleneck = "layer1.0.conv3.weight" in state_dict
    _weight(state_dict, "layer1.0.conv1.weight", 4, what)
    counts = []
    for s in range(1, 5):
        n = 0
        while f"layer{s}.{n}.conv1.weight" in state_dict:
            n += 1
        if n == 0:
            raise ArchitectureError(f"layer{s}.0.conv1.weight: missing, so the state dict is not {what}")
        counts.append(n)
    counts_t = tuple(counts)
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    fits = [d for d, (b, c) in DEPTHS.items() if c == counts_t and (b is Bottleneck) == bottleneck]
    if not fits:
        known = "; ".join(f"{d}: {b.__name__} {c}" for d, (b, c) in DEPTHS.items())
        raise ArchitectureError(f"layer1..layer4: {kind}s {counts_t} per stage match no ResNet depth ({known})")
    fc = _weight(state_dict, "fc.weight", 2, what)
    return ResNetSpec(depth=fits[0], cifar=k == (3, 3), num_classes=int(fc.shape[0]), in_channels=int(stem.shape[1]),
                      width=int(stem.shape[0]))  # fmt: skip


def resnet_kwargs(arch: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The factory arguments of ``arch`` (e.g. ``resnet18_cifar``) read off a state dict; an
    :class:`~relugeom.errors.ArchitectureError` naming the key and the architecture it does fit otherwise."""
    spec = resnet_spec(state_dict)
    if spec.name != arch:
        want_depth = int(arch.removeprefix("resnet").removesuffix("_cifar"))
        want_cifar = arch.endswith("_cifar")
        if want_cifar != spec.cifar:
            k = tuple(state_dict["conv1.weight"].shape[2:])
            key = f"conv1.weight: a {k[0]}x{k[1]} stem ({'CIFAR' if spec.cifar else 'ImageNet'} variant)"
        else:
            want = DEPTHS[want_depth][1]
            got = DEPTHS[spec.depth][1]
            s = next((i for i in range(4) if want[i] != got[i]), None)
            if s is None:  # same counts, other block
                key = "layer1.0.conv3.weight: " + ("present (Bottleneck blocks)" if spec.depth >= 50 else
                                                   "missing (BasicBlocks)")  # fmt: skip
            else:
                key = f"layer{s + 1}: {got[s]} blocks, {arch} has {want[s]}"
        raise ArchitectureError(f"{key}: the state dict is a {spec.name}, not a {arch}; use --arch {spec.name}")
    return spec.kwargs()
