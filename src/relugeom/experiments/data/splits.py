"""In-memory splits, the data set container, seeded mini-batches and augmentation (Gamba et al. 2020, sec. A.1),
the seeded validation split and training subsets."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..._repr import short_repr
from ...errors import DataError


@dataclass(frozen=True)
class Augment:
    """Random shifts of up to ``shift`` pixels (zero fill) and horizontal flips with probability 1/2; for
    signals (N, C, L) the shift and the flip act along L."""

    shift: int = 4
    flip: bool = True

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        if x.dim() == 3:  # signals (N, C, L): the same shift along L, zero fill; a flip reverses L
            return self._shift1d(x, gen)
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

    def _shift1d(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, n = x.shape
        s = self.shift
        padded = torch.nn.functional.pad(x, (s, s))
        ox = torch.randint(0, 2 * s + 1, (b,), generator=gen)
        cols = (ox[:, None] + torch.arange(n)[None, :]).to(x.device)
        x = torch.gather(padded, 2, cols[:, None, :].expand(b, c, n))
        if self.flip:
            flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None], x.flip(-1), x)
        return x


@dataclass
class Split:
    """Images ``x`` (N, C, H, W) or signals (N, C, L), float32, and labels ``y`` (N,) int64, in memory."""

    __repr__ = short_repr

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

    __repr__ = short_repr

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


def validation_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of a seeded random split holding out ``round(fraction * n)`` samples."""
    if not 0 <= fraction < 1:
        raise DataError(f"validation fraction must be in [0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def subset(splits: DataSplits, n_train: int | None = None) -> DataSplits:
    """The first ``n_train`` training samples (for quick runs); other splits unchanged."""
    if n_train is None or n_train >= len(splits.train):
        return splits
    return replace(splits, train=splits.train.take(n_train))
