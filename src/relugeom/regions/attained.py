"""What weights attain: exact region counts of random one-layer CNNs, and Xiong et al. 2020, Theorem 1 (ii) checked.

Theorem 1 (ii) says that for weights and biases drawn from any distribution with a density, the *expected*
number of regions of a one-layer ReLU CNN equals the Theorem 1 (i) value. :func:`theorem1_expectation` draws
weights, counts the regions of each draw exactly (:func:`relugeom.regions.arrangement.arrangement_regions` on the
layer's unrolled matrix, float64) and compares the sample mean, with its standard error, to the formula.

The count is the same for almost every draw (the intersection poset of the arrangement is constant on a dense
open set of weights), so the standard error is usually 0 and the comparison exact; for the single-channel 2D
shapes where Theorem 1 over-counts (:func:`relugeom.regions.formulas.cnn_formula_caveat`, proof in
docs/regions.md) the mean is then strictly below the formula and the statement fails.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ShapeError
from .theorem1 import _conv

DISTRIBUTIONS = ("normal", "uniform")


def _random_layer(input_shape: Sequence[int], kernel, stride: int, filters: int, gen: torch.Generator,  # noqa: ANN001
                  distribution: str) -> nn.Module:  # fmt: skip
    c = _conv(input_shape, kernel, stride, filters)
    conv = (nn.Conv1d if len(c.spatial) == 1 else nn.Conv2d)(c.channels, c.filters, c.kernel, stride=c.stride)
    conv = conv.double()
    with torch.no_grad():
        for p in (conv.weight, conv.bias):
            if distribution == "normal":
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
            else:
                p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1)
    return conv


def gaussian_layer_count(input_shape: Sequence[int], kernel, stride: int, filters: int, *, seed: int = 0,  # noqa: ANN001
                         distribution: str = "normal", budget: int = 10**6) -> int:  # fmt: skip
    """The exact number of regions of one draw of the one-layer CNN (weights and biases i.i.d. standard normal,
    or uniform on [-1, 1]); inputs of at most 64 values (:func:`relugeom.regions.arrangement.layer_regions`)."""
    from .arrangement import layer_regions

    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    gen = torch.Generator().manual_seed(seed)
    conv = _random_layer(input_shape, kernel, stride, filters, gen, distribution)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the over-count note: the caller compares with the formula itself
        return layer_regions(conv, tuple(input_shape), budget=budget)


@dataclass(frozen=True)
class ExpectationCheck:
    """Theorem 1 (ii) for one shape: the formula, the exact counts of ``n_samples`` random draws, their mean and
    standard error, and whether the formula lies within ``3 * std_error`` of the mean (equality when the counts
    are all equal)."""

    formula: int
    counts: tuple[int, ...]
    mean: float
    std_error: float
    agrees: bool
    distribution: str
    seed: int
    caveat: str | None

    @property
    def n_samples(self) -> int:
        return len(self.counts)


def theorem1_expectation(
    input_shape: Sequence[int], kernel: int | Sequence[int], stride: int, filters: int, *, n_samples: int = 8,
    distribution: str = "normal", seed: int = 0, budget: int = 10**6,
) -> ExpectationCheck:  # fmt: skip
    """Check Xiong et al. 2020, Theorem 1 (ii): mean exact count of random weights against the formula.

    Draw ``n`` (``seed``, ``seed + 1``, ...) weights and biases from ``distribution``, count each draw's regions
    exactly, and compare the mean (standard error ``std / sqrt(n)``) with Theorem 1 (i).

    >>> chk = theorem1_expectation((1, 4), 2, 1, 2, n_samples=3)
    >>> chk.formula, chk.mean, chk.agrees
    (55, 55.0, True)
    >>> theorem1_expectation((1, 3, 3), 2, 1, 2, n_samples=2).mean  # Theorem 1 says 256 (docs/regions.md)
    255.0
    """
    from .formulas import cnn_formula_caveat, cnn_max_regions

    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ShapeError(f"n_samples must be a positive integer, got {n_samples!r}")
    formula = cnn_max_regions(input_shape, kernel, stride, filters, budget=budget, warn_caveat=False)
    counts = tuple(gaussian_layer_count(input_shape, kernel, stride, filters, seed=seed + i, distribution=distribution,
                                        budget=budget) for i in range(n_samples))  # fmt: skip
    arr = np.array(counts, dtype=np.float64)
    mean = float(arr.mean())
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else math.nan
    agrees = mean == formula if (len(set(counts)) == 1 or not se > 0) else abs(mean - formula) <= 3 * se
    return ExpectationCheck(formula, counts, mean, se, bool(agrees), distribution, seed,
                            cnn_formula_caveat(input_shape, kernel, stride, filters))  # fmt: skip
