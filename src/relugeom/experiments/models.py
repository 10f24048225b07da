"""The networks of the papers, written here (no torchvision), with torchvision's layer names.

* ``vgg11/13/16/19`` and ``*_bn``: torchvision's ``features``/``avgpool``/``classifier`` layout and
  key names, so a torchvision checkpoint loads. At ``image_size >= 224`` the pooled map is 7x7 and
  the classifier is 25088-4096-4096-C exactly as torchvision; smaller images (CIFAR) pool to
  ``image_size // 32`` and use a 512-512-C classifier.
* ``alexnet``: torchvision's AlexNet (features.0/3/6/8/10, classifier.1/4/6).
* ``lenet``: the authors' 9-layer LeNet, 3x3 convs [6, 6, M, 16, 16, M, 64, 64, M], classifier
  120-84-C (seed 000; seed 001 sec. A.7).
* ``vgg9``: [64, 64, M, 128, 128, M, 256, 256, M], classifier 512-512-C (seed 000).
* ``mlp``: a fully connected ReLU network ``in -> hidden... -> C``.
* ``mnist1d_cnn``: the CNN of Greydanus and Kobak (2020) for MNIST-1D (their ``ConvBase``): three
  Conv1d layers of 25 channels (kernels 5, 3, 3, stride 2, padding 1), each followed by a ReLU, then
  one linear layer on the flattened 25 x 5 features; their key names (``conv1..3``, ``linear``).

Initialisations (:func:`initialize`): ``kaiming`` (torchvision's: Kaiming normal, fan_out, for
convs; N(0, 0.01) for linear layers; zero biases), ``kaiming_all`` (Kaiming normal with fan_out
for every weight, zero biases: seed 001 sec. 3.1), ``normal001`` (every weight N(0, 0.01**2), i.e.
standard deviation 0.01, zero biases: the failing initialisation of seed 001 sec. 3.2 / fig. 15.
The VGG paper writes "10^-2 variance"; the seed's vanishing-gradient account matches a standard
deviation of 0.01, which is what this uses; pass ``std=`` to :func:`initialize` for another),
``torch`` (PyTorch's own default initialisation of every layer, ``reset_parameters()``: what models written
without an explicit init use, e.g. the MNIST-1D CNN of Greydanus and Kobak 2020).
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
INITS = ("kaiming", "kaiming_all", "normal001", "torch")


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


def _alexnet(*, num_classes: int, in_channels: int, image_size: int, hidden: int | None = None, dropout: float = 0.5,
             pool: int | None = None, **_: Any) -> ConvNet:  # fmt: skip
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


class MLP(nn.Module):
    """Fully connected ReLU network; ``layers`` is a Sequential of Linear/ReLU (a Flatten first)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            mods += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        mods.append(nn.Linear(prev, num_classes))
        self.layers = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _mlp(*, num_classes: int, in_channels: int, image_size: int, hidden: Sequence[int] | int | None = None,
         **_: Any) -> MLP:  # fmt: skip
    widths = (256, 256) if hidden is None else ((hidden,) if isinstance(hidden, int) else tuple(hidden))
    return MLP(in_channels * image_size * image_size, widths, num_classes)


class MNIST1DCNN(nn.Module):
    """The MNIST-1D CNN (Greydanus and Kobak 2020, ``ConvBase``), with its parameter names, so that a state
    dict of the authors' model loads. Takes signals (N, C, L) or (N, L).

    Example
    -------
    >>> MNIST1DCNN()(torch.zeros(2, 1, 40)).shape
    torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, length: int = 40, channels: int = 25) -> None:
        super().__init__()
        out_len = _mnist1d_out_len(length)
        if out_len < 1:
            raise ShapeError(f"mnist1d_cnn: signals of length {length} are too short (at least 4 samples)")
        self.conv1 = nn.Conv1d(in_channels, channels, 5, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1)
        self.relu3 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(channels * out_len, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x[:, None]
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.linear(self.flatten(x))


def _mnist1d_out_len(length: int) -> int:
    for k in (5, 3, 3):
        length = (length + 2 - k) // 2 + 1
    return length


def _mnist1d_cnn(*, num_classes: int, in_channels: int, image_size: int, channels: int = 25, **_: Any) -> MNIST1DCNN:
    return MNIST1DCNN(num_classes=num_classes, in_channels=in_channels, length=image_size, channels=channels)


def _vgg_builder(arch: str, batch_norm: bool) -> Callable[..., nn.Module]:
    def build(*, num_classes: int, in_channels: int, image_size: int, hidden: int | None = None,
              dropout: float = 0.5, pool: int | None = None) -> ConvNet:  # fmt: skip
        return _vgg(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                    batch_norm=batch_norm, hidden=hidden, dropout=dropout, pool=pool)  # fmt: skip

    return build


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    **{name: _vgg_builder(name, False) for name in ("vgg9", "vgg11", "vgg13", "vgg16", "vgg19", "lenet")},
    **{f"{name}_bn": _vgg_builder(name, True) for name in ("vgg9", "vgg11", "vgg13", "vgg16", "vgg19")},
    "alexnet": _alexnet,
    "mlp": _mlp,
    "mnist1d_cnn": _mnist1d_cnn,
}


def _arch_key(arch: str) -> str:
    key = arch.lower()
    if key not in ARCHITECTURES:
        raise ArchitectureError(f"unknown architecture {arch!r}; choose one of {', '.join(sorted(ARCHITECTURES))}")
    return key


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
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            is_conv = not isinstance(m, nn.Linear)
            if scheme == "normal001":
                normal_(m.weight, std)
            elif scheme == "kaiming_all" or is_conv:
                kaiming_(m.weight)
            else:
                normal_(m.weight, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
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
    key = _arch_key(arch)
    model = ARCHITECTURES[key](num_classes=num_classes, in_channels=in_channels, image_size=image_size, **kwargs)
    return initialize(model, init, seed=seed)


def _linear_weights(sd: Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in sd.items() if k.endswith("weight") and v.dim() == 2]


def infer_kwargs(arch: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Constructor arguments (classes, input channels, pooled size, hidden width) read off a state dict."""
    convs = [v for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 4]
    linears = _linear_weights(state_dict)
    if not linears:
        raise ArchitectureError(f"{arch}: the state dict has no linear layer, so it is not a {arch}")
    kw: dict[str, Any] = {"num_classes": int(linears[-1][1].shape[0])}
    key = arch.lower()
    if key == "mlp":
        kw["hidden"] = [int(w.shape[0]) for _, w in linears[:-1]]
        in_features = int(linears[0][1].shape[1])
        kw.update(in_channels=in_features, image_size=1)
        return kw
    if key == "mnist1d_cnn":
        conv1, lin = state_dict.get("conv1.weight"), state_dict.get("linear.weight")
        if conv1 is None or lin is None or conv1.dim() != 3:
            raise ArchitectureError(f"{arch}: the state dict has no Conv1d conv1.weight / linear.weight")
        channels = int(conv1.shape[0])
        out_len = int(lin.shape[1]) // max(channels, 1)
        # the shortest signal length with that many features after the three strided convs (40 -> 5)
        length = 40 if _mnist1d_out_len(40) == out_len else next(
            (n for n in range(4, 8 * out_len + 8) if _mnist1d_out_len(n) == out_len), 40)
        return {**kw, "in_channels": int(conv1.shape[1]), "image_size": length, "channels": channels}
    if not convs:
        raise ArchitectureError(f"{arch}: the state dict has no convolution, so it is not a {arch}")
    kw["in_channels"] = int(convs[0].shape[1])
    first = linears[0][1]
    c_last = int(convs[-1].shape[0])
    pool = math.isqrt(max(int(first.shape[1]) // max(c_last, 1), 1))
    kw["pool"] = pool
    kw["hidden"] = int(first.shape[0])
    pools = 3 if key.startswith(("vgg9", "lenet")) else 5
    kw["image_size"] = 224 if key.startswith("alexnet") else max(pool, 1) * 2**pools
    return kw


def load_state_dict_into(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], where: str = "", *, assign: bool = False
) -> nn.Module:
    """``model.load_state_dict(strict=True)`` with a clear error naming missing, unexpected and
    mis-shaped keys; a common wrapper prefix (``model.``, Lightning's module attribute) is stripped."""
    own = model.state_dict()
    sd = dict(state_dict)
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


def model_from_state_dict(arch: str, state_dict: Mapping[str, torch.Tensor], where: str = "") -> nn.Module:
    """Build ``arch`` with the sizes read off ``state_dict`` and load it (strict, clear errors).

    The model is built on the meta device and takes the state dict's tensors as its parameters
    (``assign=True``): no initialisation, no copy.
    """
    key = _arch_key(arch)
    try:
        kwargs = infer_kwargs(key, state_dict)
        with torch.device("meta"):
            model = ARCHITECTURES[key](**kwargs)
    except ShapeError as e:
        raise ArchitectureError(f"{where}the state dict does not fit {arch}: {e}") from None
    return load_state_dict_into(model, state_dict, where, assign=True).eval()
