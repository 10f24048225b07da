"""Hand-written residual networks for the tests (torchvision's ResNet layout and names, functional ops),
and the sequential rewrites of a residual block that the exact region counts are checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from _batchnorm import randomize


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: one inplace ReLU module called twice, ``out += identity``."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet with BasicBlocks; ``cifar=True``: 3x3 stem, no max-pool."""

    def __init__(self, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), in_channels=3, num_classes=10,
                 cifar=False) -> None:  # noqa: ANN001
        super().__init__()
        w0 = widths[0]
        if cifar:
            self.conv1 = nn.Conv2d(in_channels, w0, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, w0, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        cin = w0
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layer = [BasicBlock(cin, w, 1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            cin = w
        self.n_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every batch norm's running statistics and affine parameters away from the identity; eval mode."""
    torch.manual_seed(seed)
    for m in model.modules():
        if type(m).__name__.startswith("BatchNorm"):
            randomize(m)
    return model.eval()


class ResMLP(nn.Module):
    """``out(relu(b(relu(a(x))) + x))`` with functional ReLUs and ``+``."""

    def __init__(self, d: int = 2, m: int = 6, c: int = 2) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(d, m), nn.Linear(m, d), nn.Linear(d, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.a(x))
        return self.out(torch.relu(self.b(h) + x))


def sequential_resmlp(net: ResMLP, big: float) -> nn.Sequential:
    """The same function as ``net`` without a skip connection: the skip is carried through ``d`` extra units of
    the first layer, ``x + big`` (never switched off when every |x_i| < big), and taken back by ``- big``.
    Build it from a float64 ``net``: in float32, ``bias - big`` would round the function away from ``net``'s."""
    d, m = net.a.in_features, net.a.out_features
    dt = net.a.weight.dtype
    l1, l2 = nn.Linear(d, m + d, dtype=dt), nn.Linear(m + d, d, dtype=dt)
    with torch.no_grad():
        l1.weight.copy_(torch.cat([net.a.weight, torch.eye(d, dtype=dt)]))
        l1.bias.copy_(torch.cat([net.a.bias, torch.full((d,), big, dtype=dt)]))
        l2.weight.copy_(torch.cat([net.b.weight, torch.eye(d, dtype=dt)], 1))
        l2.bias.copy_(net.b.bias - big)
    return nn.Sequential(l1, nn.ReLU(), l2, nn.ReLU(), net.out)


class ResConv(nn.Module):
    """A conv residual block with a flatten and a linear head, written with functional ops:
    ``fc(relu(b(relu(a(x))) + x).view(B, -1))``."""

    def __init__(self, c: int = 1, m: int = 2, side: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, m, 3, padding=1), nn.Conv2d(m, c, 3, padding=1)
        self.fc = nn.Linear(c * side * side, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b(F.relu(self.a(x))) + x)
        return self.fc(y.view(y.size(0), -1))


def sequential_resconv(net: ResConv, big: float) -> nn.Sequential:
    """``net`` without a skip connection: the skip rides on ``c`` extra channels of the first conv (identity
    kernels, bias ``big``), taken back by the second conv (identity kernels, bias ``- big``)."""
    c, m = net.a.in_channels, net.a.out_channels
    dt = net.a.weight.dtype
    a2, b2 = nn.Conv2d(c, m + c, 3, padding=1, dtype=dt), nn.Conv2d(m + c, c, 3, padding=1, dtype=dt)
    with torch.no_grad():
        a2.weight.zero_()
        a2.weight[:m] = net.a.weight
        b2.weight.zero_()
        b2.weight[:, :m] = net.b.weight
        for i in range(c):
            a2.weight[m + i, i, 1, 1] = 1.0
            b2.weight[i, m + i, 1, 1] = 1.0
        a2.bias.copy_(torch.cat([net.a.bias, torch.full((c,), big, dtype=dt)]))
        b2.bias.copy_(net.b.bias - big)
    return nn.Sequential(a2, nn.ReLU(), b2, nn.ReLU(), nn.Flatten(), net.fc)


class DenseCat(nn.Module):
    """A concatenation block (DenseNet-like) with a global average and ``x.mean``: functional ops only."""

    def __init__(self, c: int = 2, g: int = 3, classes: int = 3) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, g, 3, padding=1)
        self.b = nn.Conv2d(c + g, g, 3, padding=1)
        self.fc = nn.Linear(c + 2 * g, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, F.relu(self.a(x))], 1)
        h = torch.cat([h, self.b(h).relu()], dim=1)
        h = F.max_pool2d(h, 2)
        return self.fc(h.mean((2, 3)))
