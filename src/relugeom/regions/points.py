"""Data points for the exact region counters (segments between two points, 2D slices through three): Gaussian
inputs of a given shape, or ``k`` distinct points drawn from a data set. Both are seeded, float64."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import DataError


def gaussian_points(shape: Sequence[int], n: int, seed: int = 0) -> torch.Tensor:
    """``n`` points drawn from N(0, I) in float64, shape ``(n, *shape)``; the same ``seed`` gives the same points
    whatever the global random state (a private generator).

    Example
    -------
    >>> X = gaussian_points((1, 4, 4), 3, seed=0)
    >>> tuple(X.shape), X.dtype, bool((X == gaussian_points((1, 4, 4), 3, seed=0)).all())
    ((3, 1, 4, 4), torch.float64, True)
    """
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((int(n), *(int(s) for s in shape)), generator=g, dtype=torch.float64)


def pick_points(X: torch.Tensor, k: int, seed: int = 0) -> list[torch.Tensor]:
    """``k`` distinct rows of ``X`` (drawn without replacement, seeded): the end points of a segment (k = 2) or
    the three points spanning a 2D slice (k = 3). Raises :class:`~relugeom.errors.DataError` when ``X`` has
    fewer than ``k`` rows.

    Example
    -------
    >>> X = torch.arange(10.0).reshape(5, 2)
    >>> a, b = pick_points(X, 2, seed=0)
    >>> bool((a != b).any()) and all(any(bool((p == row).all()) for row in X) for p in (a, b))
    True
    """
    if X.shape[0] < k:
        raise DataError(f"need at least {k} points, got {X.shape[0]}")
    idx = np.random.default_rng(seed).choice(X.shape[0], size=k, replace=False)
    return [X[int(i)] for i in idx]
