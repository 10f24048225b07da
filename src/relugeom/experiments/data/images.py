"""ImageNet-style image folders (``DIR/train/CLASS/*``, ``DIR/val/CLASS/*``), read lazily with Pillow."""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..._repr import short_repr
from ...errors import DataError
from .splits import DataSplits, validation_split

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

    __repr__ = short_repr

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
        from PIL import Image

        with _reading(path), Image.open(path) as im:
            return im.convert("RGB")

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
                w, h = self._size(i)  # reads the header: a decompression bomb is refused here
                box = self._crop_box(w, h, gen)
                plans.append((box, bool(torch.rand(1, generator=gen).item() < 0.5)))
            else:
                plans.append(None)
        if shard is not None:
            ids, plans = ids[shard[0] :: shard[1]], plans[shard[0] :: shard[1]]
        if not self.train:
            for i in ids:
                self._size(i)
        if not ids:
            return torch.empty(0, 3, self.size, self.size)
        with ThreadPoolExecutor(max_workers=min(8, len(ids) or 1)) as pool:
            arrays = list(pool.map(self._image, ids, plans))
        x = torch.from_numpy(np.stack(arrays))
        mean = torch.tensor(self.mean, dtype=torch.float32)[None, :, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[None, :, None, None]
        x = (x - mean) / std
        if self.pixel_seed is not None:
            from .corruptions import shuffle_pixels

            where = np.asarray(ids) if self.index is None else self.index[ids]
            x = shuffle_pixels(x, where, self.pixel_seed)
        return x

    def _size(self, i: int) -> tuple[int, int]:
        from PIL import Image

        with _reading(self.paths[i], main_thread=True), Image.open(self.paths[i]) as im:
            return im.size


@contextmanager
def _reading(path: Path, *, main_thread: bool = False) -> Iterator[None]:
    """Any failure to decode ``path`` as one DataError naming it. An image of more pixels than Pillow's
    ``MAX_IMAGE_PIXELS`` (a decompression bomb: a small file that expands to gigabytes) is refused; in the
    main thread (``main_thread=True``, where :meth:`FolderSplit.load` reads every header first) Pillow's
    warning for images between one and two times that size is turned into the refusal too."""
    from PIL import Image

    try:
        if main_thread:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                yield
        else:
            yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"{path}: refused as a decompression bomb ({str(e)[:120]}); remove or replace the file"
                        ) from None  # fmt: skip
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, MemoryError) as e:
        raise _bad_image(path, e) from None


def _bad_image(path: Path, e: BaseException) -> DataError:
    return DataError(f"{path}: not a readable image ({str(e)[:120] or type(e).__name__}); remove or replace the file")


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
    (Gamba et al. 2020 sec. 3.1) and ``val/`` plays the part of the test set. ``normalize="standard"`` uses
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
