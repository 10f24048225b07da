"""Conv spectral norms: FFT singular values vs the dense circulant operator; power iteration vs dense SVD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relugeom.errors import BudgetExceeded, RelugeomWarning, ShapeError
from relugeom.geometry.unroll import circulant, unroll
from relugeom.measures.spectral import conv_singular_values, conv_spectral_norm


@settings(max_examples=15, deadline=None)
@given(
    dims=st.sampled_from([1, 2]), groups=st.sampled_from([1, 2]), k=st.integers(1, 5), dil=st.integers(1, 2),
    size=st.integers(2, 6), seed=st.integers(0, 1000),
)  # fmt: skip
def test_fft_singular_values_equal_dense_circulant(dims, groups, k, dil, size, seed):
    torch.manual_seed(seed)
    conv_t = nn.Conv1d if dims == 1 else nn.Conv2d
    conv = conv_t(2 * groups, 3 * groups, k, dilation=dil, groups=groups)
    shape = (2 * groups, *([size] * dims))
    A, _ = circulant(conv, shape)
    dense = np.linalg.svd(A.toarray(), compute_uv=False)
    fft = conv_singular_values(conv, shape)
    assert len(fft) == len(dense) == 2 * groups * size**dims
    np.testing.assert_allclose(fft, dense, rtol=1e-9, atol=1e-12)
    assert conv_spectral_norm(conv, shape, "fft").value == pytest.approx(dense[0], rel=1e-10)


@pytest.mark.parametrize("kwargs, shape", [
    ({"padding": 1}, (3, 6, 5)),
    ({"padding": 2, "dilation": 2}, (3, 5, 5)),
    ({"stride": 2, "padding": 1, "padding_mode": "reflect"}, (3, 7, 7)),
    ({"padding": 0}, (3, 5, 4)),
])  # fmt: skip
def test_power_iteration_converges_to_dense_norm(kwargs, shape):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, **kwargs)
    A, _ = unroll(conv, shape)
    truth = np.linalg.svd(A.toarray(), compute_uv=False)[0]
    dense = conv_spectral_norm(conv, shape, "dense")
    power = conv_spectral_norm(conv, shape, "power", tol=1e-12, max_iter=20000)
    assert dense.value == pytest.approx(truth, rel=1e-12)
    assert power.converged and power.iterations > 1
    assert power.value == pytest.approx(truth, rel=1e-6)
    assert power.value <= truth * (1 + 1e-12)  # from below
    lanczos = conv_spectral_norm(conv, shape, "lanczos", tol=1e-12)
    assert lanczos.converged and lanczos.residual < 1e-6
    assert lanczos.value == pytest.approx(truth, rel=1e-9)
    assert lanczos.iterations < power.iterations


def test_lanczos_on_a_clustered_spectrum_where_power_iteration_stalls():
    # a 16-channel 3x3 conv on 12x12: the top singular values are close, power iteration needs many steps
    torch.manual_seed(1)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    shape = (16, 12, 12)
    truth = np.linalg.svd(unroll(conv, shape)[0].toarray(), compute_uv=False)[0]
    lanczos = conv_spectral_norm(conv, shape, "lanczos")
    assert lanczos.converged and lanczos.value == pytest.approx(truth, rel=1e-9)
    with pytest.warns(RelugeomWarning, match="did not converge"):
        power = conv_spectral_norm(conv, shape, "power", max_iter=lanczos.iterations)
    assert not power.converged and power.value <= truth * (1 + 1e-12)


def test_linear_layer_and_bad_input():
    torch.manual_seed(0)
    lin = nn.Linear(5, 4)
    truth = np.linalg.norm(lin.weight.detach().double().numpy(), 2)
    for m in ("fft", "dense", "power", "lanczos"):
        assert conv_spectral_norm(lin, (5,), m).value == pytest.approx(truth, rel=1e-12)
    with pytest.raises(ShapeError):
        conv_spectral_norm(nn.Conv2d(2, 3, 5), (2, 3, 3), "power")
    with pytest.raises(ShapeError):
        conv_spectral_norm(nn.Conv2d(2, 3, 3), (3, 6, 6), "fft")
    with pytest.raises(BudgetExceeded, match="power"):
        conv_spectral_norm(nn.Conv2d(64, 64, 3, padding=1), (64, 32, 32), "dense")
