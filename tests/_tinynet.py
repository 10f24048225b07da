"""A tiny ConvNet for the training-loop tests (importable as ``_tinynet:TinyNet``, a user's own model)."""

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv(1->c) - ReLU - conv(c->c) - ReLU - pool - linear; 1x8x8 inputs (relugeom's digits)."""

    def __init__(self, width: int = 6, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Linear(width * 16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def digits(n: int = 256):
    """(X, y) of relugeom's digits training split (1x8x8, 10 classes), the first n samples."""
    from relugeom.experiments.data import load_dataset

    d = load_dataset("digits")
    return d.train.x[:n].float(), d.train.y[:n].long()


def n_l_brute(weight: torch.Tensor) -> float:
    """n_l by its sign identity: cos <= 0 exactly when sum(w) <= 0 (Gamba et al. 2020, eqs. 1-2)."""
    s = weight.detach().double().reshape(weight.shape[0], -1).sum(1)
    return float((s <= 0).double().mean())
