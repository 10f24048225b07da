"""Corruptions of the training split (Gamba et al. 2020, figs. 6 and 20; Zhang et al. 2017): noisy labels and
per-image pixel shuffles, fixed per sample and seeded."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from ...errors import DataError
from .images import FolderSplit
from .splits import DataSplits, Split

LABEL_NOISE_RULES = ("shift", "uniform")


def noisy_labels(y: torch.Tensor, p: float, num_classes: int, seed: int = 0, rule: str = "shift") -> torch.Tensor:
    """Each label picked with probability ``p`` (seeded) and relabelled by ``rule``:

    * ``"shift"`` (relugeom's default, the rule of Gamba et al.'s code): ``y + k mod C`` with ``k`` uniform
      in 1..C-1, i.e. a *different* class drawn uniformly. Exactly the picked labels change, so ``p = 1``
      changes every label (Gamba et al. 2020, fig. 6: "all training labels replaced by noisy ones").
    * ``"uniform"`` (Zhang et al. 2017, "corrupted as a uniform random class"): a class drawn uniformly
      from all C, which is the old one with probability 1/C; a fraction p (C-1)/C of the labels changes
      and p/C are picked but unchanged.

    Both rules use the same picks for the same seed.
    """
    if rule not in LABEL_NOISE_RULES:
        raise DataError(f"unknown label-noise rule {rule!r}; choose one of {', '.join(LABEL_NOISE_RULES)}")
    if not 0 <= p <= 1:
        raise DataError(f"label noise must be a probability in [0, 1], got {p}")
    if num_classes < 2 and p > 0:
        raise DataError("label noise needs at least two classes")
    rng = np.random.default_rng([seed, 0x1AB])
    y_np = y.numpy().copy()
    flip = rng.random(len(y_np)) < p
    if rule == "shift":  # a uniform draw among the other num_classes - 1 classes: shift by 1..C-1 modulo C
        shift = rng.integers(1, max(num_classes, 2), len(y_np))
        y_np[flip] = (y_np[flip] + shift[flip]) % num_classes
    else:
        y_np[flip] = rng.integers(0, num_classes, len(y_np))[flip]
    return torch.from_numpy(y_np)


def pixel_permutation(index: int, n_pixels: int, seed: int = 0) -> np.ndarray:
    """The fixed random permutation of ``n_pixels`` pixel positions of training image ``index``."""
    return np.random.default_rng([seed, 0x5EED, int(index)]).permutation(n_pixels)


def shuffle_pixels(x: torch.Tensor, indices: torch.Tensor | np.ndarray, seed: int = 0) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) (or signals (N, C, L)) with the pixel positions of image ``indices[n]``
    permuted by its own fixed permutation, the same for every channel (Gamba et al. 2020, fig. 20)."""
    n, c = x.shape[:2]
    m = math.prod(x.shape[2:])
    flat = x.reshape(n, c, m)
    perms = torch.from_numpy(np.stack([pixel_permutation(int(i), m, seed) for i in np.asarray(indices)]))
    out = torch.gather(flat, 2, perms[:, None, :].expand(n, c, m))
    return out.reshape(x.shape)


def corrupt(data: DataSplits, *, label_noise: float = 0.0, pixel_shuffle: bool = False, seed: int = 0,
            label_noise_rule: str = "shift") -> DataSplits:  # fmt: skip
    """The training split with noisy labels (:func:`noisy_labels`, ``label_noise_rule``) and/or shuffled
    pixels; validation and test stay clean.

    Both corruptions are fixed per sample (the same noisy label and the same permutation in every
    epoch), seeded by ``seed`` (the run's ``split_seed``, so runs of different seeds share them).
    """
    if not label_noise and not pixel_shuffle:
        return data
    train = data.train
    y = noisy_labels(train.y, label_noise, data.num_classes, seed, label_noise_rule) if label_noise else train.y
    if isinstance(train, FolderSplit):
        train = replace(train, y=y, pixel_seed=seed if pixel_shuffle else None)
    else:
        x = shuffle_pixels(train.x, np.arange(len(train)), seed) if pixel_shuffle else train.x
        train = Split(x, y)
    info = {**data.info, "label_noise": label_noise, "pixel_shuffle": pixel_shuffle, "corruption_seed": seed}
    if label_noise:
        info["label_noise_rule"] = label_noise_rule
    return replace(data, train=train, info=info)
