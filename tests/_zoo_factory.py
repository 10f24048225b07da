"""A user's own model, named on the command line as ``--arch _zoo_factory:small_net`` (tests only)."""

from torch import nn


def small_net(*, num_classes: int, in_channels: int, image_size: int, hidden: int = 12) -> nn.Module:
    """A small ConvNet with a factory option (``hidden``) that a state dict does not tell."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(4 * (image_size // 2) ** 2, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )  # fmt: skip


NOT_CALLABLE = 3
