"""Data sets of the papers, read from their standard on-disk formats (nothing is downloaded).

* ``digits``: scikit-learn's 8x8 digits (shipped inside scikit-learn; the embedded default). A
  fixed test split (every fifth sample, 360 images) is held out; the rest is the training set.
* ``cifar10`` / ``cifar100``: the python pickle batches (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``; ``cifar-100-python/train``, ``test``), the folder itself or its parent.
* ``mnist``: the idx files (``train-images-idx3-ubyte`` ... ``t10k-labels-idx1-ubyte``, optionally
  ``.gz``), in the folder, its ``MNIST/raw`` or ``raw`` subfolder.

Pixels are scaled to [0, 1] and then normalised per channel (``normalize="standard"``: mean and
standard deviation of the training split), or mapped to [-1, 1] (``"pm1"``, the paper's default
pixel representation, seed 001 sec. A.7) or kept in [0, 1] (``"unit"``, CIFAR10/+ of fig. 21).
A seeded 10% validation split is taken from the training set (seed 001 sec. 3.1); its seed is
separate from the training seed so that runs with different seeds share one validation set.

Augmentation (seed 001 sec. A.1): shifts of up to 4 pixels in each direction (zero fill) and random
horizontal flips, applied per batch on tensors. Defaults: both for CIFAR, shifts only for MNIST
(a flipped digit is another symbol), none for digits.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

DATASETS = ("digits", "cifar10", "cifar100", "mnist")
NORMALIZATIONS = ("standard", "pm1", "unit")


@dataclass(frozen=True)
class Augment:
    """Random shifts of up to ``shift`` pixels (zero fill) and horizontal flips with probability 1/2."""

    shift: int = 4
    flip: bool = True

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        if self.shift:
            s = self.shift
            padded = torch.nn.functional.pad(x, (s, s, s, s))
            oy = torch.randint(0, 2 * s + 1, (b,), generator=gen)
            ox = torch.randint(0, 2 * s + 1, (b,), generator=gen)
            rows = (oy[:, None] + torch.arange(h)[None, :]).to(x.device)
            cols = (ox[:, None] + torch.arange(w)[None, :]).to(x.device)
            bi = torch.arange(b, device=x.device)[:, None, None, None]
            ci = torch.arange(c, device=x.device)[None, :, None, None]
            x = padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]
        if self.flip:
            flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x


@dataclass
class Split:
    """Images ``x`` (N, C, H, W) float32 and labels ``y`` (N,) int64, in memory."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class DataSplits:
    """A data set ready for training: train/val/test splits, normalised, plus what models need."""

    name: str
    train: Split
    val: Split
    test: Split | None
    num_classes: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    augment: Augment | None = None
    info: dict = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[-1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.train.x.shape[1:])


class Batches:
    """Mini-batches of an in-memory split: seeded order, optional augmentation, a fixed length.

    Iterating twice gives two different orders (the generator moves on), as a DataLoader with
    ``shuffle=True`` would; the generator's state is what makes the order reproducible.
    """

    def __init__(
        self, split: Split, batch_size: int, *, shuffle: bool = False, augment: Augment | None = None,
        generator: torch.Generator | None = None, drop_last: bool = False,
    ) -> None:  # fmt: skip
        self.split, self.batch_size, self.shuffle = split, int(batch_size), shuffle
        self.augment, self.drop_last = augment, drop_last
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x, y = self.split.x[idx], self.split.y[idx]
            if self.augment is not None:
                x = self.augment(x, self.generator)
            yield x, y


# ---------------------------------------------------------------------------------------------
# readers


def _read_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    test = np.arange(len(y)) % 5 == 0
    return x[~test], y[~test], x[test], y[test]


def _find(data_dir: Path, names: list[str], what: str, how: str) -> Path:
    for name in names:
        for base in (data_dir, data_dir / "raw", data_dir / "MNIST" / "raw"):
            if (base / name).exists():
                return base / name
    raise DataError(f"{data_dir}: no {what} (looked for {', '.join(names)}). {how}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # CIFAR batches are plain dicts of bytes, lists and numpy arrays; the restricted
            # unpickler refuses anything that would import other code.
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a CIFAR python batch ({str(e)[:120]})") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


_CIFAR_HOW = "Download the 'python version' archive from the CIFAR page and pass the extracted folder as --data-dir."


def _read_cifar(data_dir: Path, classes: int) -> tuple[np.ndarray, ...]:
    folder = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
    base = data_dir / folder if (data_dir / folder).is_dir() else data_dir
    if classes == 10:
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, key = ["test_batch"], b"labels"
    else:
        train_files, test_files, key = ["train"], ["test"], b"fine_labels"
    missing = [f for f in train_files + test_files if not (base / f).exists()]
    if missing:
        raise DataError(f"{base}: CIFAR-{classes} files missing: {', '.join(missing)}. {_CIFAR_HOW}")

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            d = _unpickle(base / f)
            if b"data" not in d or key not in d:
                raise DataError(f"{base / f}: not a CIFAR-{classes} batch (no {key.decode()!r})")
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[key], dtype=np.int64))
        return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)

    return (*read(train_files), *read(test_files))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("bad magic number")
        dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(dims)
    except (OSError, ValueError, struct.error, EOFError) as e:
        raise DataError(f"{path}: not an idx file ({str(e)[:120]})") from None


def _read_mnist(data_dir: Path) -> tuple[np.ndarray, ...]:
    how = "Download the four MNIST idx files and pass their folder as --data-dir."
    out = []
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for stem in stems:
        path = _find(data_dir, [stem, f"{stem}.gz", stem.replace("-idx", ".idx")], f"MNIST file {stem}", how)
        out.append(_read_idx(path))
    xtr, ytr, xte, yte = out
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"{data_dir}: MNIST images and labels disagree in number")
    return (xtr[:, None].astype(np.float32) / 255.0, ytr.astype(np.int64),
            xte[:, None].astype(np.float32) / 255.0, yte.astype(np.int64))  # fmt: skip


# ---------------------------------------------------------------------------------------------


def validation_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of a seeded random split holding out ``round(fraction * n)`` samples."""
    if not 0 <= fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


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

    ``augment=None`` takes the data set's default (see the module docstring).

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
    if key == "digits":
        xtr, ytr, xte, yte = _read_digits()
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
    if normalize == "standard":
        mean = xtr[tr].mean(axis=(0, 2, 3))
        std = xtr[tr].std(axis=(0, 2, 3))
        std = np.where(std > 0, std, 1.0)
    elif normalize == "pm1":
        mean, std = np.full(xtr.shape[1], 0.5), np.full(xtr.shape[1], 0.5)
    else:
        mean, std = np.zeros(xtr.shape[1]), np.ones(xtr.shape[1])

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        xn = (x - mean[None, :, None, None]) / std[None, :, None, None]
        return Split(torch.from_numpy(np.ascontiguousarray(xn, dtype=np.float32)), torch.from_numpy(y))

    aug = default_aug if augment is None else (Augment(4, key.startswith("cifar")) if augment else None)
    return DataSplits(
        name=key, train=split(xtr[tr], ytr[tr]), val=split(xtr[va], ytr[va]), test=split(xte, yte),
        num_classes=num_classes, mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
        augment=aug, info={"normalize": normalize, "val_fraction": val_fraction, "split_seed": split_seed},
    )  # fmt: skip


def subset(splits: DataSplits, n_train: int | None = None) -> DataSplits:
    """The first ``n_train`` training samples (for quick runs); other splits unchanged."""
    if n_train is None or n_train >= len(splits.train):
        return splits
    return replace(splits, train=Split(splits.train.x[:n_train], splits.train.y[:n_train]))
