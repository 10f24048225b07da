"""The region counters' data points: distinct rows of the data (k = 2, 3), Gaussian points with the moments of
N(0, I) and independent of the global random state."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from relugeom.errors import DataError
from relugeom.regions.points import gaussian_points, pick_points


@settings(max_examples=50, deadline=None)
@given(n=st.integers(3, 40), k=st.integers(2, 3), seed=st.integers(0, 2**31))
def test_picked_points_are_distinct_rows_of_the_data(n, k, seed):
    X = torch.arange(n, dtype=torch.float64)[:, None] * torch.ones(1, 5)  # row i is (i, ..., i): its own index
    picked = pick_points(X, k, seed)
    rows = [int(p[0]) for p in picked]
    assert len(set(rows)) == k and all(0 <= r < n for r in rows)
    assert all(bool((p == X[r]).all()) for p, r in zip(picked, rows))


def test_too_few_points_is_a_data_error():
    with pytest.raises(DataError, match="at least 3 points, got 2"):
        pick_points(torch.zeros(2, 4), 3)


def test_gaussian_points_have_standard_normal_moments_and_ignore_the_global_seed():
    torch.manual_seed(123)
    X = gaussian_points((2, 3), 20000, seed=7)
    torch.manual_seed(456)
    assert torch.equal(X, gaussian_points((2, 3), 20000, seed=7))
    flat = X.reshape(len(X), -1)
    assert X.dtype == torch.float64 and X.shape == (20000, 2, 3)
    # mean 0 and covariance I within 5 standard errors (se of a mean 1/sqrt(n), of a covariance entry ~ sqrt(2/n))
    assert flat.mean(0).abs().max() < 5 / 20000**0.5
    cov = torch.cov(flat.T)
    assert (cov - torch.eye(6, dtype=torch.float64)).abs().max() < 5 * (2 / 20000) ** 0.5
    assert not torch.equal(X, gaussian_points((2, 3), 20000, seed=8))
