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
import math
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError

DATASETS = ("digits", "cifar10", "cifar100", "mnist", "folder")
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

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    def take(self, n: int) -> Split:
        return Split(self.x[:n], self.y[:n])


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
    resize: int | None = None

    @property
    def in_channels(self) -> int:
        return int(self.train.sample_shape[0])

    @property
    def image_size(self) -> int:
        return int(self.resize or self.train.sample_shape[-1])

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = self.train.sample_shape
        return (shape[0], self.resize, self.resize) if self.resize else shape


class Batches:
    """Mini-batches of an in-memory split: seeded order, optional augmentation, a fixed length.

    Iterating twice gives two different orders (the generator moves on), as a DataLoader with
    ``shuffle=True`` would; the generator's state is what makes the order reproducible.
    ``resize`` upscales every batch (bilinear) to ``resize x resize`` after augmentation (AlexNet on
    CIFAR); a split read lazily from files (:class:`FolderSplit`) draws its own random crops.
    ``shard = (rank, world)`` keeps only this rank's part ``[rank::world]`` of every batch, after the
    whole batch was drawn and augmented, so that N processes see exactly the one process's batches.
    """

    def __init__(
        self, split: Split, batch_size: int, *, shuffle: bool = False, augment: Augment | None = None,
        generator: torch.Generator | None = None, drop_last: bool = False, resize: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> None:  # fmt: skip
        self.split, self.batch_size, self.shuffle = split, int(batch_size), shuffle
        self.augment, self.drop_last, self.resize, self.shard = augment, drop_last, resize, shard
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            sharded = False
            if hasattr(self.split, "load"):  # files: draw the whole batch's crops, decode only this rank's
                x, y = self.split.load(idx, self.generator, shard=self.shard), self.split.y[idx]
                sharded = self.shard is not None
            else:
                x, y = self.split.x[idx], self.split.y[idx]
            if self.augment is not None:
                x = self.augment(x, self.generator)
            if self.resize is not None and tuple(x.shape[-2:]) != (self.resize, self.resize):
                x = torch.nn.functional.interpolate(x, size=(self.resize, self.resize), mode="bilinear",
                                                    align_corners=False)  # fmt: skip
            if self.shard is not None:
                rank, world = self.shard
                x = x if sharded else x[rank::world]
                y = y[rank::world]
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
    if key == "folder":
        return load_image_folder(data_dir, val_fraction=val_fraction, split_seed=split_seed, normalize=normalize,
                                 augment=augment)  # fmt: skip
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
    return replace(splits, train=splits.train.take(n_train))


# ---------------------------------------------------------------------------------------------
# corruptions of the training split (seed 001 fig. 6 and fig. 20; Zhang et al. 2017)


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


# ---------------------------------------------------------------------------------------------
# ImageNet-style image folders, read lazily with Pillow

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff", ".JPEG")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class FolderSplit:
    """Image files read with Pillow when a batch is drawn.

    Training (``train=True``): a random resized crop (area 8%-100% of the image, aspect ratio
    3/4-4/3, torchvision's recipe) to ``size`` and a horizontal flip with probability 1/2, drawn
    from the batch generator. Evaluation: the shorter side resized to ``resize`` (256), then the
    centre ``size`` (224) crop. Then scaled to [0, 1] and normalised by ``mean``/``std``.
    ``pixel_seed`` shuffles the pixel positions of every image with its own fixed permutation.
    """

    paths: list[Path]
    y: torch.Tensor
    train: bool = False
    size: int = 224
    resize: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    pixel_seed: int | None = None
    index: np.ndarray | None = None  # position of each file in the original training list

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    def take(self, n: int) -> FolderSplit:
        idx = None if self.index is None else self.index[:n]
        return replace(self, paths=self.paths[:n], y=self.y[:n], index=idx)

    def _open(self, path: Path):  # noqa: ANN202
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                return im.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise _bad_image(path, e) from None

    def _crop_box(self, w: int, h: int, gen: torch.Generator) -> tuple[int, int, int, int]:
        area = w * h
        r = torch.rand(10, 4, generator=gen, dtype=torch.float64).numpy()
        for a, b, c, d in r:
            target = area * (0.08 + a * 0.92)
            log_ratio = math.log(3 / 4) + b * (math.log(4 / 3) - math.log(3 / 4))
            ratio = math.exp(log_ratio)
            cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                left, top = int(c * (w - cw + 1)), int(d * (h - ch + 1))
                return left, top, left + cw, top + ch
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        return left, top, left + side, top + side

    def _image(self, i: int, box_gen: tuple | None) -> np.ndarray:
        from PIL import Image

        im = self._open(self.paths[i])
        if box_gen is not None:
            box, flip = box_gen
            im = im.resize((self.size, self.size), Image.BILINEAR, box=box)
            if flip:
                im = im.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            w, h = im.size
            scale = self.resize / min(w, h)
            im = im.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - self.size) // 2, (h - self.size) // 2
            im = im.crop((left, top, left + self.size, top + self.size))
        return np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0

    def load(self, idx: torch.Tensor, gen: torch.Generator, shard: tuple[int, int] | None = None) -> torch.Tensor:
        """The images ``idx`` (only the slice ``[rank::world]`` when ``shard`` is given; the random
        crops of the whole batch are drawn all the same, so every rank's generator stays in step)."""
        from concurrent.futures import ThreadPoolExecutor

        ids = [int(i) for i in idx]
        plans: list[tuple | None] = []
        for i in ids:  # all randomness is drawn here, in order, so threads cannot reorder it
            if self.train:
                w, h = self._size(i)
                box = self._crop_box(w, h, gen)
                plans.append((box, bool(torch.rand(1, generator=gen).item() < 0.5)))
            else:
                plans.append(None)
        if shard is not None:
            ids, plans = ids[shard[0] :: shard[1]], plans[shard[0] :: shard[1]]
        if not ids:
            return torch.empty(0, 3, self.size, self.size)
        with ThreadPoolExecutor(max_workers=min(8, len(ids) or 1)) as pool:
            arrays = list(pool.map(self._image, ids, plans))
        x = torch.from_numpy(np.stack(arrays))
        mean = torch.tensor(self.mean, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[None, :, None, None]
        x = (x - mean) / std
        if self.pixel_seed is not None:
            where = np.asarray(ids) if self.index is None else self.index[ids]
            x = shuffle_pixels(x, where, self.pixel_seed)
        return x

    def _size(self, i: int) -> tuple[int, int]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self.paths[i]) as im:
                return im.size
        except (OSError, UnidentifiedImageError) as e:
            raise _bad_image(self.paths[i], e) from None


def _bad_image(path: Path, e: Exception) -> DataError:
    return DataError(f"{path}: not a readable image ({str(e)[:120]}); remove or replace the file")


_FOLDER_HOW = ("Lay the images out as DIR/train/CLASS/*.jpg and DIR/val/CLASS/*.jpg (ImageNet: the train archive "
               "as is, the validation images moved into one folder per class).")  # fmt: skip


def _scan(folder: Path, classes: list[str] | None) -> tuple[list[Path], list[int], list[str]]:
    if not folder.is_dir():
        raise DataError(f"{folder}: missing. {_FOLDER_HOW}")
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    classes = found if classes is None else classes
    if not classes:
        raise DataError(f"{folder}: no class folders. {_FOLDER_HOW}")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{folder}: class folders not in train/: {', '.join(unknown[:5])}. {_FOLDER_HOW}")
    paths, labels = [], []
    for k, name in enumerate(classes):
        d = folder / name
        if not d.is_dir():
            continue
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in {s.lower() for s in IMAGE_SUFFIXES})
        paths += files
        labels += [k] * len(files)
    if not paths:
        raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES[:4])}...). {_FOLDER_HOW}")
    return paths, labels, classes


def load_image_folder(
    data_dir: str | Path | None,
    *,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    normalize: str = "standard",
    augment: bool | None = None,
    size: int = 224,
    resize: int = 256,
) -> DataSplits:
    """An ImageNet-style folder ``DIR/train/CLASS/*`` and ``DIR/val/CLASS/*``, read lazily.

    As for the other data sets, a seeded ``val_fraction`` of ``train/`` is the validation split
    (seed 001 sec. 3.1) and ``val/`` plays the part of the test set. ``normalize="standard"`` uses
    the usual ImageNet channel means and deviations (no pass over the data); ``augment=False``
    evaluates training images with the centre crop too.
    """
    if data_dir is None:
        raise DataError("the folder data set needs --data-dir (a folder with train/ and val/)")
    base = Path(data_dir)
    if not base.is_dir():
        raise DataError(f"{base}: no such folder")
    paths, labels, classes = _scan(base / "train", None)
    val_paths, val_labels, _ = _scan(base / "val", classes)
    mean, std = {"standard": (IMAGENET_MEAN, IMAGENET_STD), "pm1": ((0.5,) * 3, (0.5,) * 3),
                 "unit": ((0.0,) * 3, (1.0,) * 3)}[normalize]  # fmt: skip
    tr, va = validation_split(len(paths), val_fraction, split_seed)
    y = torch.tensor(labels, dtype=torch.int64)

    def split(idx: np.ndarray | None, ps: list[Path], ys: torch.Tensor, train: bool) -> FolderSplit:
        if idx is not None:
            ps, ys = [ps[i] for i in idx], ys[torch.from_numpy(idx)]
        return FolderSplit(ps, ys, train=train, size=size, resize=resize, mean=mean, std=std, index=idx)

    return DataSplits(
        name="folder", train=split(tr, paths, y, augment is not False), val=split(va, paths, y, False),
        test=split(None, val_paths, torch.tensor(val_labels, dtype=torch.int64), False),
        num_classes=len(classes), mean=mean, std=std, augment=None,
        info={"normalize": normalize, "val_fraction": val_fraction, "split_seed": split_seed, "root": str(base),
              "classes": classes if len(classes) <= 20 else len(classes), "crop": size, "eval_resize": resize},
    )  # fmt: skip
