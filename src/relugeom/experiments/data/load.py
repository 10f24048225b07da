"""``load_dataset``: a named data set read from disk (or embedded), split, normalised, with its augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...errors import DataError
from .images import load_image_folder
from .readers import _read_cifar, _read_digits, _read_mnist, _read_mnist1d
from .splits import Augment, DataSplits, Split, validation_split

DATASETS = ("digits", "mnist1d", "cifar10", "cifar100", "mnist", "folder")
NORMALIZATIONS = ("standard", "pm1", "unit")


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    normalize: str = "standard",
    augment: bool | None = None,
) -> DataSplits:
    """Load a data set into memory, split off validation, normalise, and set its augmentation.

    ``augment=None`` takes the data set's default (see the module docstring). ``mnist1d`` is generated
    offline by the ``mnist1d`` package (default arguments and seed, as in Greydanus and Kobak 2020):
    signals of shape (1, 40), 4000 training (of which ``val_fraction`` is validation) and 1000 test.

    Example
    -------
    >>> d = load_dataset("digits")
    >>> len(d.train), len(d.val), len(d.test), d.input_shape, d.num_classes
    (1293, 144, 360, (1, 8, 8), 10)
    """
    key = name.lower().replace("-", "")
    if key not in DATASETS:
        raise DataError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if normalize not in NORMALIZATIONS:
        raise DataError(f"unknown normalisation {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if key == "folder":
        return load_image_folder(data_dir, val_fraction=val_fraction, split_seed=split_seed, normalize=normalize,
                                 augment=augment)  # fmt: skip
    if key == "digits":
        xtr, ytr, xte, yte = _read_digits()
        default_aug = None
    elif key == "mnist1d":
        if normalize == "pm1":
            raise DataError("mnist1d holds standardised signals, not pixels: use --normalize standard or unit "
                            "(unit keeps the package's values)")  # fmt: skip
        xtr, ytr, xte, yte = _read_mnist1d()
        default_aug = None
    else:
        if data_dir is None:
            raise DataError(f"{name} needs --data-dir (relugeom downloads nothing)")
        d = Path(data_dir)
        if not d.is_dir():
            raise DataError(f"{d}: no such folder")
        if key.startswith("cifar"):
            xtr, ytr, xte, yte = _read_cifar(d, 10 if key == "cifar10" else 100)
            default_aug = Augment(4, True)
        else:
            xtr, ytr, xte, yte = _read_mnist(d)
            default_aug = Augment(4, False)
    num_classes = {"cifar10": 10, "cifar100": 100}.get(key, int(max(ytr.max(), yte.max())) + 1)
    tr, va = validation_split(len(ytr), val_fraction, split_seed)
    axes = (0, *range(2, xtr.ndim))  # every axis but the channel's: (N, C, H, W) images, (N, C, L) signals
    if normalize == "standard":
        mean = xtr[tr].mean(axis=axes)
        std = xtr[tr].std(axis=axes)
        std = np.where(std > 0, std, 1.0)
    elif normalize == "pm1":
        mean, std = np.full(xtr.shape[1], 0.5), np.full(xtr.shape[1], 0.5)
    else:
        mean, std = np.zeros(xtr.shape[1]), np.ones(xtr.shape[1])

    per_channel = (1, -1) + (1,) * (xtr.ndim - 2)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        xn = (x - mean.reshape(per_channel)) / std.reshape(per_channel)
        return Split(torch.from_numpy(np.ascontiguousarray(xn, dtype=np.float32)), torch.from_numpy(y))

    aug = default_aug if augment is None else (Augment(4, key.startswith("cifar")) if augment else None)
    return DataSplits(
        name=key, train=split(xtr[tr], ytr[tr]), val=split(xtr[va], ytr[va]), test=split(xte, yte),
        num_classes=num_classes, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
        augment=aug, info={"normalize": normalize, "val_fraction": val_fraction, "split_seed": split_seed},
    )  # fmt: skip
