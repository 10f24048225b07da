"""A fully connected ReLU network ``in -> hidden... -> C`` (Gamba et al. 2020, sec. A.7; Daróczy 2020)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ArchitectureError


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


def mlp(*, num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
        hidden: Sequence[int] | int | None = None) -> MLP:  # fmt: skip
    """An MLP on flattened ``in_channels x image_size x image_size`` inputs; ``hidden`` widths (256, 256)."""
    widths = (256, 256) if hidden is None else ((hidden,) if isinstance(hidden, int) else tuple(hidden))
    return MLP(in_channels * image_size * image_size, widths, num_classes)


def mlp_kwargs(arch: str, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Widths of an MLP read off its state dict (its inputs counted as ``in_channels``, ``image_size=1``)."""
    linears = [v for k, v in state_dict.items() if k.endswith("weight") and v.dim() == 2]
    if not linears:
        raise ArchitectureError(f"{arch}: the state dict has no linear layer, so it is not a {arch}")
    return {"num_classes": int(linears[-1].shape[0]), "hidden": [int(w.shape[0]) for w in linears[:-1]],
            "in_channels": int(linears[0].shape[1]), "image_size": 1}  # fmt: skip
