"""Shared test helper: give a batch norm non-trivial running statistics and affine parameters."""

import torch
from torch import nn


def randomize(bn: nn.Module, var: tuple[float, float] = (0.5, 2.0)) -> nn.Module:
    """Draw running mean in U(-1, 1), running variance in U(*var), scale in U(0.5, 2), shift in U(-1, 1)."""
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(*var)
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
    return bn
