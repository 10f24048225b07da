"""The MNIST-1D CNN of Greydanus and Kobak (2020), their ``ConvBase``, with their parameter names.

Three Conv1d layers of 25 channels (kernels 5, 3, 3, stride 2, padding 1), each followed by a ReLU, then one
linear layer on the flattened 25 x 5 features (``conv1..3``, ``linear``), so that a state dict of the
authors' model loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ArchitectureError, ShapeError


def mnist1d_out_len(length: int) -> int:
    """Length of the signal after the three strided convs (40 -> 5)."""
    for k in (5, 3, 3):
        length = (length + 2 - k) // 2 + 1
    return length


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
        out_len = mnist1d_out_len(length)
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
        x = x.view(x.shape[0], -1, x.shape[-1])  # (B, L) -> (B, 1, L); no branch, so torch.fx can trace it
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.linear(self.flatten(x))


def mnist1d_cnn(*, num_classes: int = 10, in_channels: int = 1, image_size: int = 40, channels: int = 25) -> MNIST1DCNN:
    """The MNIST-1D CNN on signals of length ``image_size`` (the signal length plays the image size's part)."""
    return MNIST1DCNN(num_classes=num_classes, in_channels=in_channels, length=image_size, channels=channels)


def mnist1d_kwargs(arch: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Classes, input channels, width and signal length of an MNIST-1D CNN read off its state dict."""
    conv1, lin = state_dict.get("conv1.weight"), state_dict.get("linear.weight")
    if conv1 is None or lin is None or conv1.dim() != 3:
        raise ArchitectureError(f"{arch}: the state dict has no Conv1d conv1.weight / linear.weight")
    channels = int(conv1.shape[0])
    out_len = int(lin.shape[1]) // max(channels, 1)
    # the shortest signal length with that many features after the three strided convs (40 -> 5)
    length = 40 if mnist1d_out_len(40) == out_len else next(
        (n for n in range(4, 8 * out_len + 8) if mnist1d_out_len(n) == out_len), 40)
    return {"num_classes": int(lin.shape[0]), "in_channels": int(conv1.shape[1]), "image_size": length,
            "channels": channels}  # fmt: skip
