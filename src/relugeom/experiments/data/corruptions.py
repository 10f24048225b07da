"""Corruptions of the training split (Gamba et al. 2020, figs. 6 and 20; Zhang et al. 2017): noisy labels and
per-image pixel shuffles, fixed per sample and seeded."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ...errors import DataError
from .images import FolderSplit
from .splits import DataSplits, Split


def noisy_labels(y: torch.Tensor, p: float, num_classes: int, seed: int = 0) -> torch.Tensor:
    """Each label replaced with probability ``p`` by a different class drawn uniformly (seeded).

    ``p = 1`` changes every label (seed 001 fig. 6: "all training labels replaced by noisy ones").
    """
    if not 0 <= p <= 1:
        raise DataError(f"label noise must be a probability in [0, 1], got {p}")
    if num_classes < 2 and p > 0:
        raise DataError("label noise needs at least two classes")
    rng = np.random.default_rng([seed, 0x1AB])
    y_np = y.numpy().copy()
    flip = rng.random(len(y_np)) < p
    # a uniform draw among the other num_classes - 1 classes: shift by 1..C-1 modulo C
    shift = rng.integers(1, max(num_classes, 2), len(y_np))
    y_np[flip] = (y_np[flip] + shift[flip]) % num_classes
    return torch.from_numpy(y_np)


def pixel_permutation(index: int, n_pixels: int, seed: int = 0) -> np.ndarray:
    """The fixed random permutation of ``n_pixels`` pixel positions of training image ``index``."""
    return np.random.default_rng([seed, 0x5EED, int(index)]).permutation(n_pixels)


def shuffle_pixels(x: torch.Tensor, indices: torch.Tensor | np.ndarray, seed: int = 0) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) with the pixel positions of image ``indices[n]`` permuted by its own
    fixed permutation, the same for every channel (seed 001 fig. 20)."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    perms = torch.from_numpy(np.stack([pixel_permutation(int(i), h * w, seed) for i in np.asarray(indices)]))
    out = torch.gather(flat, 2, perms[:, None, :].expand(n, c, h * w))
    return out.reshape(n, c, h, w)


def corrupt(data: DataSplits, *, label_noise: float = 0.0, pixel_shuffle: bool = False, seed: int = 0) -> DataSplits:
    """The training split with noisy labels and/or shuffled pixels; validation and test stay clean.

    Both corruptions are fixed per sample (the same noisy label and the same permutation in every
    epoch), seeded by ``seed`` (the run's ``split_seed``, so runs of different seeds share them).
    """
    if not label_noise and not pixel_shuffle:
        return data
    train = data.train
    if isinstance(train, FolderSplit):
        train = replace(train, y=noisy_labels(train.y, label_noise, data.num_classes, seed) if label_noise else train.y,
                        pixel_seed=seed if pixel_shuffle else None)  # fmt: skip
    else:
        y = noisy_labels(train.y, label_noise, data.num_classes, seed) if label_noise else train.y
        x = shuffle_pixels(train.x, np.arange(len(train)), seed) if pixel_shuffle else train.x
        train = Split(x, y)
    info = {**data.info, "label_noise": label_noise, "pixel_shuffle": pixel_shuffle, "corruption_seed": seed}
    return replace(data, train=train, info=info)
