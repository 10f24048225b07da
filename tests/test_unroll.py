"""unroll/circulant against PyTorch's own convolution (an independent implementation), in float64."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relugeom.errors import ShapeError, UnsupportedLayerError
from relugeom.geometry.unroll import circulant, output_shape, unroll

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


@st.composite
def conv_cases(draw):
    n = draw(st.sampled_from([1, 2, 2, 3]))
    groups = draw(st.sampled_from([1, 2]))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3)) for _ in range(n))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(n))
    mode = draw(st.sampled_from(["zeros", "zeros", "circular", "reflect", "replicate"]))
    same = draw(st.booleans()) and mode == "zeros"
    stride = (1,) * n if same else tuple(draw(st.integers(1, 3)) for _ in range(n))
    sizes = tuple(draw(st.integers(1, 6)) for _ in range(n))
    if same:
        padding = "same"
    else:
        # PyTorch wants reflect padding < size and circular padding <= size
        top = {"reflect": lambda s: min(2, s - 1), "circular": lambda s: min(2, s)}.get(mode, lambda s: 2)
        padding = tuple(draw(st.integers(0, top(s))) for s in sizes)
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return n, cin, cout, k, stride, padding, dil, groups, mode, sizes, bias, seed


@settings(max_examples=120, deadline=None)
@given(conv_cases())
def test_unroll_equals_conv(case):
    n, cin, cout, k, stride, padding, dil, groups, mode, sizes, bias, seed = case
    torch.manual_seed(seed)
    conv = CONV[n](cin, cout, k, stride=stride, padding=padding, dilation=dil, groups=groups,
                   bias=bias, padding_mode=mode).double()
    shape = (cin, *sizes)
    try:
        with torch.no_grad():
            x = torch.randn(3, *shape, dtype=torch.float64)
            y = conv(x)
    except RuntimeError:
        with pytest.raises(ShapeError):
            output_shape(conv, shape)
        return
    a, b = unroll(conv, shape)
    assert output_shape(conv, shape) == tuple(y.shape[1:])
    assert a.shape == (y[0].numel(), int(np.prod(shape)))
    got = (a @ x.reshape(3, -1).numpy().T).T + b
    np.testing.assert_allclose(got, y.reshape(3, -1).numpy(), rtol=0, atol=1e-12)


def test_unroll_linear():
    torch.manual_seed(0)
    lin = nn.Linear(7, 4).double()
    a, b = unroll(lin, (7,))
    x = torch.randn(7, dtype=torch.float64)
    np.testing.assert_allclose(a @ x.numpy() + b, lin(x).detach().numpy(), atol=1e-12)
    with pytest.raises(ShapeError, match="takes 7"):
        unroll(lin, (8,))


def test_bad_shapes_and_layers():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ShapeError, match="3 input channels"):
        unroll(conv, (2, 8, 8))
    with pytest.raises(ShapeError, match=r"\(C, 2 sizes\)"):
        unroll(conv, (3, 8))
    with pytest.raises(ShapeError, match="smaller than"):
        unroll(conv, (3, 2, 2))
    with pytest.raises(UnsupportedLayerError, match="MaxPool2d"):
        unroll(nn.MaxPool2d(2), (3, 4, 4))
    with pytest.raises(UnsupportedLayerError, match="linear"):
        circulant(nn.Linear(3, 3), (3,))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 3), st.sampled_from([(3, 3), (1, 3), (2, 2), (5, 5)]),
       st.integers(3, 6), st.integers(3, 6), st.integers(0, 2**16))
def test_circulant_rows_are_cyclic_shifts_and_meet_identity_line(cin, cout, k, h, w, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k).double()
    a, b = circulant(conv, (cin, h, w))
    dense = a.toarray()
    assert dense.shape == (cout * h * w, cin * h * w)
    for f in range(cout):
        block = dense[f * h * w:(f + 1) * h * w].reshape(h * w, cin, h, w)
        first = block[0]
        for r in range(h * w):
            i, j = divmod(r, w)
            np.testing.assert_array_equal(block[r], np.roll(first, (i, j), axis=(1, 2)))
        # every row sums the whole filter, so all hyperplanes meet the identity line at -b/sum(w) (seed 002, eq. 16)
        s = conv.weight[f].sum().item()
        t = -conv.bias[f].item() / s
        np.testing.assert_allclose(dense[f * h * w:(f + 1) * h * w] @ np.full(cin * h * w, t) + b[f * h * w],
                                   0.0, atol=1e-9 * max(1.0, abs(t)))


def test_circulant_equals_circular_conv_when_centred():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular").double()
    a, b = circulant(conv, (2, 5, 6))
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    np.testing.assert_allclose(a @ x.numpy().ravel() + b, conv(x[None]).detach().numpy().ravel(), atol=1e-12)
