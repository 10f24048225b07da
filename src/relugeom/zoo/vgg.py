"""Plain ConvNets in torchvision's VGG layout (written here, no torchvision), with its key names.

* ``vgg11/13/16/19`` and ``*_bn``: torchvision's ``features``/``avgpool``/``classifier`` layout and
  key names, so a torchvision checkpoint loads. At ``image_size >= 224`` the pooled map is 7x7 and
  the classifier is 25088-4096-4096-C exactly as torchvision; smaller images (CIFAR) pool to
  ``image_size // 32`` and use a 512-512-C classifier.
* ``alexnet``: torchvision's AlexNet (features.0/3/6/8/10, classifier.1/4/6).
* ``lenet``: the authors' 9-layer LeNet, 3x3 convs [6, 6, M, 16, 16, M, 64, 64, M], classifier
  120-84-C (Gamba et al. 2019; Gamba et al. 2020, sec. A.7).
* ``vgg9``: [64, 64, M, 128, 128, M, 256, 256, M], classifier 512-512-C (Gamba et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ArchitectureError, ShapeError

Cfg = Sequence[int | str]

VGG_CFGS: dict[str, list[int | str]] = {
    "vgg9": [64, 64, "M", 128, 128, "M", 256, 256, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
    "lenet": [6, 6, "M", 16, 16, "M", 64, 64, "M"],
}  # fmt: skip


class ConvNet(nn.Module):
    """A plain ConvNet in torchvision's VGG layout: ``features -> avgpool -> flatten -> classifier``."""

    def __init__(self, features: nn.Sequential, avgpool: nn.Module, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.avgpool = avgpool
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _features(cfg: Cfg, in_channels: int, batch_norm: bool) -> tuple[nn.Sequential, int, int]:
    layers: list[nn.Module] = []
    c, pools = in_channels, 0
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            pools += 1
            continue
        layers.append(nn.Conv2d(c, int(v), kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        c = int(v)
    return nn.Sequential(*layers), c, pools


def _check_size(arch: str, image_size: int, pools: int) -> int:
    side = image_size // 2**pools
    if side < 1:
        raise ShapeError(
            f"{arch}: {image_size}x{image_size} images are too small for {pools} 2x2 poolings "
            f"(need at least {2**pools} pixels a side); choose a smaller architecture such as vgg9 or lenet"
        )
    return side


def _vgg(
    arch: str, *, num_classes: int, in_channels: int, image_size: int, batch_norm: bool,
    hidden: int | None, dropout: float, pool: int | None,
) -> ConvNet:  # fmt: skip
    features, c, pools = _features(VGG_CFGS[arch], in_channels, batch_norm)
    side = _check_size(arch, image_size, pools)
    large = image_size >= 224 and arch not in ("vgg9", "lenet")
    if pool is None:
        pool = 7 if large else side
    if hidden is None:
        hidden = 4096 if large else (120 if arch == "lenet" else 512)
    second = 84 if arch == "lenet" and hidden == 120 else hidden
    if arch == "lenet":
        classifier = nn.Sequential(
            nn.Linear(c * pool * pool, hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, second), nn.ReLU(inplace=True),
            nn.Linear(second, num_classes),
        )  # fmt: skip
    else:
        classifier = nn.Sequential(
            nn.Linear(c * pool * pool, hidden), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(hidden, second), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(second, num_classes),
        )  # fmt: skip
    return ConvNet(features, nn.AdaptiveAvgPool2d((pool, pool)), classifier)


def alexnet(*, num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, hidden: int | None = None,
            dropout: float = 0.5, pool: int | None = None) -> ConvNet:  # fmt: skip
    """torchvision's AlexNet (Krizhevsky et al. 2012, one-GPU variant); images of at least 63 pixels a side."""
    if image_size < 63:
        raise ShapeError(f"alexnet: {image_size}x{image_size} images are too small (at least 63; upscale CIFAR)")
    features = nn.Sequential(
        nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )  # fmt: skip
    pool = 6 if pool is None else pool
    hidden = 4096 if hidden is None else hidden
    classifier = nn.Sequential(
        nn.Dropout(p=dropout), nn.Linear(256 * pool * pool, hidden), nn.ReLU(inplace=True),
        nn.Dropout(p=dropout), nn.Linear(hidden, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, num_classes),
    )  # fmt: skip
    return ConvNet(features, nn.AdaptiveAvgPool2d((pool, pool)), classifier)


def vgg_factory(arch: str, batch_norm: bool) -> Callable[..., ConvNet]:
    """The factory of one configuration of :data:`VGG_CFGS` (``lenet`` and ``vgg9`` included)."""

    def build(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32, hidden: int | None = None,
              dropout: float = 0.5, pool: int | None = None) -> ConvNet:  # fmt: skip
        return _vgg(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    batch_norm=batch_norm, hidden=hidden, dropout=dropout, pool=pool)  # fmt: skip

    build.__name__ = build.__qualname__ = f"{arch}_bn" if batch_norm else arch
    build.__doc__ = f"{arch}{' with batch norm' if batch_norm else ''} in torchvision's VGG layout."
    return build


def _linear_weights(sd: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in sd.items() if k.endswith("weight") and v.dim() == 2]


def convnet_kwargs(arch: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor arguments of a VGG/AlexNet/LeNet (classes, input channels, pooled size, hidden width)
    read off its state dict."""
    convs = [v for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 4]
    linears = _linear_weights(state_dict)
    if not linears:
        raise ArchitectureError(f"{arch}: the state dict has no linear layer, so it is not a {arch}")
    if not convs:
        raise ArchitectureError(f"{arch}: the state dict has no convolution, so it is not a {arch}")
    first = linears[0][1]
    c_last = int(convs[-1].shape[0])
    pool = math.isqrt(max(int(first.shape[1]) // max(c_last, 1), 1))
    pools = 3 if arch.startswith(("vgg9", "lenet")) else 5
    return {
        "num_classes": int(linears[-1][1].shape[0]), "in_channels": int(convs[0].shape[1]), "pool": pool,
        "hidden": int(first.shape[0]),
        "image_size": 224 if arch.startswith("alexnet") else max(pool, 1) * 2**pools,
    }  # fmt: skip
