"""Projection statistic and n_l (seed 001, eqs. 1-2) against independent computations."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relugeom import find_layers, layer_summary, projection_stats
from relugeom.errors import LayerError, RelugeomWarning, SkippedWarning
from relugeom.experiments.models import build_model
from relugeom.geometry.unroll import unroll

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


@st.composite
def conv_layers(draw):
    n = draw(st.sampled_from([1, 2, 3]))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 3)) for _ in range(n))
    k = tuple(max(2, x) if i == 0 else x for i, x in enumerate(k))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(n))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(n))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(n))
    return n, CONV[n](cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups).double()


@settings(max_examples=60, deadline=None)
@given(conv_layers())
def test_cos_equals_operator_row_and_all_ones_conv(case):
    """cos from the layer's unrolled operator row at an interior position, whose sum is also
    conv(all-ones) there (seed 001 eq. 1 with ||1|| over the receptive field)."""
    n, conv = case
    size = 12
    shape = (conv.in_channels, *([size] * n))
    a, _ = unroll(conv, shape)
    out_sizes = [(size + 2 * p - d * (k - 1) - 1) // s + 1
                 for k, s, p, d in zip(conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
    # interior output position: its receptive field lies inside the unpadded input
    centre = [(p + s - 1) // s for p, s in zip(conv.padding, conv.stride)]
    assert all(c < o for c, o in zip(centre, out_sizes))
    flat = int(np.ravel_multi_index(centre, out_sizes))
    ones = conv.weight.new_ones((1, *shape))
    with torch.no_grad():
        plain = conv.__class__(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                               padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=False).double()
        plain.weight.copy_(conv.weight)
        sums = plain(ones)[0].reshape(conv.out_channels, -1)[:, flat].numpy()
        plain.weight.fill_(1.0)
        field = plain(ones)[0].reshape(conv.out_channels, -1)[:, flat].numpy()  # receptive-field size
    rows = a.toarray()[np.arange(conv.out_channels) * int(np.prod(out_sizes)) + flat]
    np.testing.assert_allclose(rows.sum(1), sums, atol=1e-12)
    expected = sums / (np.linalg.norm(rows, axis=1) * np.sqrt(field))
    got = projection_stats(conv)["cos"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)


def test_closed_forms():
    conv = nn.Conv2d(1, 3, 2, bias=False)
    with torch.no_grad():
        conv.weight[0].fill_(0.7)                                   # cos = 1
        conv.weight[1].copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))  # cos = 0
        conv.weight[2].copy_(torch.tensor([[-1.0, 0.0], [0.0, 0.0]]))   # cos = -1/sqrt(4)
    df = projection_stats(nn.Sequential(conv, nn.ReLU(), nn.Conv2d(3, 1, 3)))
    np.testing.assert_allclose(df["cos"].to_numpy()[:3], [1.0, 0.0, -0.5], atol=1e-15)


def test_random_init_nl_near_half_binomial_bound():
    """At a symmetric random init every filter is negative with probability 1/2, independently:
    the count over VGG16's 4224 conv filters is Binomial(4224, 1/2); 5 sigma bound."""
    df = projection_stats(build_model("vgg16", image_size=32, seed=123))
    n = len(df)
    assert n == 2 * 64 + 2 * 128 + 3 * 256 + 6 * 512
    neg = int((df["cos"] <= 0).sum())
    assert abs(neg - n / 2) <= 5 * math.sqrt(n) / 2
    for _, row in layer_summary(df).iterrows():  # per layer too (F >= 64), 5 sigma
        assert abs(row.n_neg - 0.5) <= 5 * 0.5 / math.sqrt(row.n_filters)


def test_negated_filters_flip():
    model = build_model("vgg9", image_size=32, seed=1)
    before = projection_stats(model)
    with torch.no_grad():
        for layer in find_layers(model, linear=False):
            layer.module.weight.neg_()
    after = projection_stats(model)
    np.testing.assert_array_equal(after["cos"].to_numpy(), -before["cos"].to_numpy())
    s0, s1 = layer_summary(before), layer_summary(after)
    assert not (before["cos"] == 0).any()
    np.testing.assert_allclose(s1["n_neg"], 1 - s0["n_neg"])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.one_of(st.floats(-1, 1), st.just(float("nan")))),
                min_size=1, max_size=40))
def test_layer_summary_against_brute_force(rows):
    df = pd.DataFrame({"layer": [f"l{r[0]}" for r in rows], "layer_index": [r[0] for r in rows],
                       "stage": 0, "block": [r[0] for r in rows], "filter": range(len(rows)),
                       "cos": [r[1] for r in rows]})
    s = layer_summary(df)
    for _, row in s.iterrows():
        c = [r[1] for r in rows if r[0] == row.layer_index]
        nz = [x for x in c if not math.isnan(x)]
        assert row.n_filters == len(c) and row.n_zero == len(c) - len(nz)
        if nz:
            assert row.n_neg == pytest.approx(sum(x <= 0 for x in nz) / len(nz))
            assert row.mean_cos == pytest.approx(sum(nz) / len(nz))
        else:
            assert math.isnan(row.n_neg)


def test_zero_filters_are_nan_counted_and_named():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    with torch.no_grad():
        model[2].weight[1].zero_()
        model[2].weight[0].fill_(-1.0)
    with pytest.warns(RelugeomWarning, match=r"layer '2': 1 of 4 filters are all zero"):
        df = projection_stats(model)
    s = layer_summary(df).set_index("layer")
    assert s.loc["2", "n_zero"] == 1 and s.loc["2", "n_filters"] == 4
    cos = df[df.layer == "2"]["cos"].to_numpy()
    assert math.isnan(cos[1])
    assert s.loc["2", "n_neg"] == pytest.approx(np.mean(cos[[0, 2, 3]] <= 0))


def test_nan_weights_name_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3))
    with torch.no_grad():
        model[2].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(LayerError, match=r"layer '2': weight has 1 NaN/inf"):
        projection_stats(model)


def test_series_with_a_nan_checkpoint_analyses_the_rest(tmp_path):
    from relugeom import save_checkpoint

    model = build_model("lenet", in_channels=1, image_size=8, seed=0)
    for e in range(3):
        sd = {k: v.clone() for k, v in model.state_dict().items()}
        if e == 1:
            sd["features.2.weight"][0] = float("nan")
        save_checkpoint(tmp_path / f"epoch_{e}.pt", sd, {"epoch": e, "arch": "lenet"})
    with pytest.warns(SkippedWarning, match=r"epoch_1\.pt.*features\.2"):
        df = projection_stats(tmp_path)
    assert sorted(df["epoch"].unique()) == [0, 2]


def test_selection_and_sources_agree():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 4))
    assert list(projection_stats(model).layer.unique()) == ["0"]
    assert list(projection_stats(model, pointwise=True).layer.unique()) == ["0", "2"]
    df = projection_stats(model, pointwise=True, linear=True)
    assert list(df.layer.unique()) == ["0", "2", "6"]
    assert df.drop_duplicates("layer")[["stage", "block"]].values.tolist() == [[0, 0], [0, 1], [1, 0]]
    from_sd = projection_stats(model.state_dict(), pointwise=True, linear=True)
    np.testing.assert_array_equal(from_sd["cos"].to_numpy(), df["cos"].to_numpy())
    assert from_sd["stage"].isna().all()  # a bare state dict has no pooling information


def test_series_columns(tmp_path):
    from relugeom import save_checkpoint

    for seed in (0, 1):
        model = build_model("vgg9", in_channels=1, image_size=8, seed=seed)
        for e in (0, 1):
            save_checkpoint(tmp_path / f"r{seed}" / "checkpoints" / f"epoch_{e:04d}.pt", model.state_dict(),
                            {"epoch": e, "seed": seed, "arch": "vgg9"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = projection_stats([tmp_path / "r0", tmp_path / "r1"])
    assert list(df.columns[:3]) == ["run", "seed", "epoch"]
    assert set(map(tuple, df[["run", "seed", "epoch"]].drop_duplicates().values.tolist())) == {
        ("r0", 0, 0), ("r0", 0, 1), ("r1", 1, 0), ("r1", 1, 1)}
    s = layer_summary(df)
    assert len(s) == 2 * 2 * 6 and s["stage"].notna().all()
