"""Cone parameters and nesting states (seeds 000, 002) against dense circulants, brute-force shifts and
hand-built cones."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relugeom.errors import ArchitectureError, LayerError, ShapeError, SkippedWarning
from relugeom.geometry.unroll import circulant
from relugeom.stats.cones import (
    STATES,
    classify,
    cone_geometry,
    cone_params,
    cone_states,
    embed_filters,
    rotation_angles,
    state_distribution,
)


def _brute_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle by trying every spatial shift with np.roll on the mean-free vectors (dense truth)."""
    spatial = a.shape[2:]
    axes = tuple(range(1, 1 + len(spatial)))
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        x = x - x.mean()
        for p, y in enumerate(b):
            y = y - y.mean()
            best = -np.inf
            for s in np.ndindex(*spatial):
                best = max(best, float(np.sum(x * np.roll(y, s, axis=axes))))
            out[i, p] = math.acos(max(-1.0, min(1.0, best / (np.linalg.norm(x) * np.linalg.norm(y)))))
    return out


@settings(max_examples=15, deadline=None)
@given(
    c=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5), k=st.sampled_from([1, 3, 5]),
    dil=st.integers(1, 2), groups=st.sampled_from([1, 2]), seed=st.integers(0, 10_000),
)  # fmt: skip
def test_embedding_is_the_first_circulant_row(c, h, w, k, dil, groups, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c * groups, 2 * groups, k, dilation=dil, groups=groups).double()
    a, _ = circulant(conv, (c * groups, h, w))
    dense = a.toarray()
    normals = embed_filters(conv.weight, (h, w), (dil, dil), groups)
    for f in range(conv.out_channels):
        np.testing.assert_allclose(normals[f].ravel(), dense[f * h * w], atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(c=st.integers(1, 3), h=st.integers(2, 6), w=st.integers(2, 6), seed=st.integers(0, 10_000))
def test_apex_lies_on_every_hyperplane_and_opening_is_the_angle_to_the_identity_line(c, h, w, seed):
    torch.manual_seed(seed)
    conv = nn.Conv2d(c, 3, 3).double()
    a, b = circulant(conv, (c, h, w))
    dense = a.toarray()
    geo = cone_geometry(embed_filters(conv.weight, (h, w)), conv.bias.detach().numpy())
    d = c * h * w
    one = np.ones(d) / math.sqrt(d)
    for f in range(3):
        rows = dense[f * h * w : (f + 1) * h * w]
        # seed 002, eq. 16: every hyperplane of the filter passes through t * 1.
        np.testing.assert_allclose(rows @ (geo["apex"][f] * np.ones(d)) + b[f * h * w], 0, atol=1e-9)
        # the angle between a hyperplane and a line is arcsin(|n . u| / ||n||), the same for every row.
        angles = np.arcsin(np.abs(rows @ one) / np.linalg.norm(rows, axis=1))
        np.testing.assert_allclose(angles, geo["opening"][f], atol=1e-12)
        assert geo["orientation"][f] == np.sign(rows[0].sum())


@settings(max_examples=20, deadline=None)
@given(
    c=st.integers(1, 3), spatial=st.sampled_from([(5,), (3, 4), (4, 4), (2, 3)]), n_a=st.integers(1, 3),
    n_b=st.integers(1, 3), seed=st.integers(0, 10_000),
)  # fmt: skip
def test_rotation_matches_brute_force_over_all_shifts(c, spatial, n_a, n_b, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_a, c, *spatial))
    b = rng.normal(size=(n_b, c, *spatial))
    np.testing.assert_allclose(rotation_angles(a, b), _brute_rotation(a, b), atol=1e-9)
    # chunked evaluation gives the same angles
    np.testing.assert_allclose(rotation_angles(a, b, chunk=1), _brute_rotation(a, b), atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(shift=st.tuples(st.integers(-6, 6), st.integers(-6, 6)), seed=st.integers(0, 10_000))
def test_rotation_is_invariant_under_cyclic_shifts(shift, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, 2, 4, 6))
    b = rng.normal(size=(2, 2, 4, 6))
    base = rotation_angles(a, b)
    np.testing.assert_allclose(rotation_angles(np.roll(a, shift, axis=(2, 3)), b), base, atol=1e-10)
    np.testing.assert_allclose(rotation_angles(a, np.roll(b, shift, axis=(2, 3))), base, atol=1e-10)
    # a cone against a shifted copy of itself is not rotated at all; adding a multiple of 1 changes nothing
    np.testing.assert_allclose(np.diag(rotation_angles(a, np.roll(a, shift, axis=(2, 3)))), 0, atol=1e-6)
    np.testing.assert_allclose(rotation_angles(a + 3.0, b), base, atol=1e-10)


def test_rotation_of_a_constant_normal_is_undefined():
    assert np.isnan(rotation_angles(np.ones((1, 1, 3, 3)), np.eye(3)[None, None])).all()


# --------------------------------------------------------------------------------- hand-built cones

H = W = 4
D = H * W


def _pair(first: str, t_first: float, second: str, t_second: float, between: nn.Module | None = None) -> nn.Module:
    """Two single-channel 3x3 convs: 'ones' (wide cone, opening arcsin(3/sqrt(D))) or 'delta' (narrow cone,
    opening arcsin(1/sqrt(D))), with biases putting their apexes at t_first, t_second."""

    def conv(kind: str, t: float) -> nn.Conv2d:
        m = nn.Conv2d(1, 1, 3, padding=1).double()
        with torch.no_grad():
            m.weight.zero_()
            if kind == "ones":
                m.weight.fill_(1.0)
            else:
                m.weight[0, 0, 1, 1] = 2.0
            m.bias.fill_(-t * float(m.weight.sum()))
        return m

    return nn.Sequential(conv(first, t_first), between or nn.ReLU(), conv(second, t_second))


OPEN = {"ones": math.asin(9 / (3 * math.sqrt(D))), "delta": math.asin(1 / math.sqrt(D))}


@pytest.mark.parametrize(
    "first, t1, second, t2, expected",
    [
        ("ones", 0.0, "delta", 1.0, "OUT_FULL_IN"),  # apex further out, narrower
        ("delta", 0.0, "ones", 1.0, "OUT_PARTIAL_IN"),  # apex further out, wider
        ("delta", 1.0, "ones", -0.5, "IN_FULL_OUT"),  # apex behind, wider
        ("ones", 1.0, "delta", 0.0, "IN_PARTIAL_OUT"),  # apex behind, narrower
        ("ones", 0.5, "ones", 0.5, "OUT_FULL_IN"),  # the same cone: d = 0 and o = 0
    ],
)
def test_hand_built_cones_land_in_each_state(first, t1, second, t2, expected):
    net = _pair(first, t1, second, t2)
    df = cone_states(net, (1, H, W))
    assert len(df) == 1
    row = df.iloc[0]
    assert row.state == expected
    assert row.dist == pytest.approx((t2 - t1) * math.sqrt(D), abs=1e-12)
    assert row.open_diff == pytest.approx(OPEN[second] - OPEN[first], abs=1e-12)
    params = cone_params(net, (1, H, W))
    np.testing.assert_allclose(params.apex, [t1, t2], atol=1e-12)
    np.testing.assert_allclose(params.opening, [OPEN[first], OPEN[second]], atol=1e-12)


def test_state_uses_max_dist_and_min_opening_over_the_previous_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1)).double()
    pairs = cone_states(net, (2, 5, 5), pairs=True, cones="filter")
    per_filter = cone_states(net, (2, 5, 5), cones="filter")
    params = cone_params(net, (2, 5, 5), cones="filter")
    prev, cur = params[params.layer_index == 0], params[params.layer_index == 1]
    for _, row in per_filter.iterrows():
        ci = cur.iloc[int(row["filter"])]
        dists = [(ci.apex - p.apex) * math.sqrt(3 * 25) for p in prev.itertuples()]
        opens = [ci.opening - p.opening for p in prev.itertuples()]
        assert row.dist == pytest.approx(max(dists), rel=1e-12, abs=1e-12)
        assert row.open_diff == pytest.approx(min(opens), rel=1e-12, abs=1e-12)
        d, o = max(dists), min(opens)
        truth = ("OUT_PARTIAL_IN" if o > 0 else "OUT_FULL_IN") if d >= 0 else ("IN_FULL_OUT" if o >= 0
                                                                               else "IN_PARTIAL_OUT")  # fmt: skip
        assert row.state == truth
        sub = pairs[pairs["filter"] == row["filter"]]
        assert row.rotation == pytest.approx(sub.rotation.min())
    for p in pairs.itertuples():  # each pair's own state: the same rule on that pair's distance and openings
        truth = ("OUT_PARTIAL_IN" if p.open_diff > 0 else "OUT_FULL_IN") if p.dist > 0 else \
            ("IN_FULL_OUT" if p.open_diff >= 0 else "IN_PARTIAL_OUT")  # fmt: skip
        assert p.state == truth and isinstance(p.state, str)
    # channels differ (2 vs 3): the rotation is between channel sums, checked by brute force
    w1 = embed_filters(net[0].weight, (5, 5)).sum(axis=1, keepdims=True)
    w2 = embed_filters(net[2].weight, (5, 5)).sum(axis=1, keepdims=True)
    brute = _brute_rotation(w2, w1)
    np.testing.assert_allclose(pairs.rotation.to_numpy().reshape(4, 3), brute, atol=1e-9)
    assert set(pairs.rotation_space) == {"channel_sum"}


@settings(max_examples=15, deadline=None)
@given(
    c0=st.integers(1, 3), c1=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5),
    k=st.sampled_from([1, 3, 5]), dil=st.integers(1, 2), seed=st.integers(0, 10_000),
)  # fmt: skip
def test_cone_params_and_rotations_match_the_dense_circulant_rows(c0, c1, h, w, k, dil, seed):
    # small inputs make taps wrap onto one position (kernel wider than the input): the summed case
    torch.manual_seed(seed)
    pad = dil * (k - 1) // 2
    net = nn.Sequential(nn.Conv2d(c0, c1, k, padding=pad, dilation=dil), nn.ReLU(),
                        nn.Conv2d(c1, 2, k, padding=pad, dilation=dil)).double()  # fmt: skip
    params = cone_params(net, (c0, h, w), cones="filter")
    rows_of = {}
    for idx, (conv, c) in enumerate(((net[0], c0), (net[2], c1))):
        a, b = circulant(conv, (c, h, w))
        dense, d = a.toarray(), c * h * w
        got = params[params.layer_index == idx]
        assert (got.D == d).all()
        for f in range(conv.out_channels):
            rows = dense[f * h * w : (f + 1) * h * w]
            rows_of[idx, f] = rows
            if abs(rows[0].sum()) > 1e-9:
                # every plane of the filter passes through apex * 1 (seed 002, eq. 16)
                np.testing.assert_allclose(rows @ np.full(d, got.apex.iloc[f]) + b[f * h * w], 0, atol=1e-8)
            angle = np.arcsin(np.abs(rows.sum(axis=1)) / (np.linalg.norm(rows, axis=1) * math.sqrt(d)))
            np.testing.assert_allclose(angle, got.opening.iloc[f], atol=1e-12)
    pairs = cone_states(net, (c0, h, w), pairs=True, cones="filter")
    # rotation truth: channel sums (when c0 != c1) of the dense rows, mean-free, best over all rows of filter p
    for row in pairs.itertuples():
        x = rows_of[1, row.filter][0]
        ys = rows_of[0, row.prev_filter]
        if c0 != c1:
            x, ys = x.reshape(c1, -1).sum(axis=0), ys.reshape(len(ys), c0, -1).sum(axis=1)
        x, ys = x - x.mean(), ys - ys.mean(axis=1, keepdims=True)
        denom = np.linalg.norm(x) * np.linalg.norm(ys[0])
        if denom < 1e-12:
            assert np.isnan(row.rotation)
            continue
        truth = math.acos(max(-1.0, min(1.0, float((ys @ x).max() / denom))))
        assert row.rotation == pytest.approx(truth, abs=1e-7)
    assert set(pairs.rotation_space) == {"full" if c0 == c1 else "channel_sum"}


def test_classify_boundaries():
    d, o = np.array([0.0, 0.0, -1.0, -1.0, np.nan, 1.0, 1.0]), np.array([1.0, 0.0, 0.0, -1.0, 0.0, 1.0, -0.0])
    authors = classify(d, o, ties="authors")
    assert authors.tolist() == ["OUT_PARTIAL_IN", "OUT_FULL_IN", "IN_FULL_OUT", "IN_PARTIAL_OUT", None,
                                "OUT_PARTIAL_IN", "OUT_FULL_IN"]  # fmt: skip
    # a tie (one apex): the wider cone holds the narrower one
    assert classify(d, o).tolist() == ["IN_FULL_OUT", "OUT_FULL_IN"] + authors.tolist()[2:]
    with pytest.raises(ValueError):
        classify(d, o, ties="other")


def test_batch_norm_is_folded_into_the_cone():
    torch.manual_seed(1)
    conv = nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular").double()
    bn = nn.BatchNorm2d(2).double()
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.3, -0.2]))
        bn.running_var.copy_(torch.tensor([2.0, 0.5]))
        bn.weight.copy_(torch.tensor([1.5, -0.7]))
        bn.bias.copy_(torch.tensor([0.1, 0.4]))
    net = nn.Sequential(conv, bn, nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1).double()).eval()
    params = cone_params(net, (1, 4, 4), cones="filter")
    first = params[params.layer_index == 0]
    for f, t in enumerate(first.apex):
        # the folded cone's apex is where bn(conv(t * 1)) vanishes, per torch itself
        out = net[1](conv(torch.full((1, 1, 4, 4), float(t), dtype=torch.float64)))
        np.testing.assert_allclose(out[0, f].detach().numpy(), 0, atol=1e-9)
    unfolded = cone_params(net, (1, 4, 4), fold_bn=False, cones="filter")
    assert not np.allclose(unfolded.apex[:2], first.apex)
    net[1] = nn.BatchNorm2d(2, track_running_stats=False).double()
    with pytest.raises(ArchitectureError, match="batch norm after layer '0' keeps no running statistics"):
        cone_params(net, (1, 4, 4))


def test_pooling_residual_and_other_activations_are_named_and_skipped():
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3, padding=1))
    df = cone_states(pooled, (1, 4, 4))
    assert len(df) == 1 and df.state.isna().all() and "pooling" in df.reason.iloc[0]
    tanh = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.Conv2d(2, 2, 3, padding=1))
    with pytest.warns(SkippedWarning, match="Tanh"):
        df = cone_states(tanh, (1, 4, 4))
    assert "non-ReLU activation Tanh" in df.reason.iloc[0]

    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = (nn.Conv2d(2, 2, 3, padding=1) for _ in range(3))

        def forward(self, x):  # noqa: ANN001, ANN202
            h = torch.relu(self.a(x))
            return self.c(torch.relu(self.b(h)) + h)

    with pytest.warns(SkippedWarning):
        df = cone_states(Res(), (2, 4, 4))
    assert len(df) == 2 and df.state.isna().all()
    assert "branch or residual" in df.reason.iloc[0] and "residual" in df.reason.iloc[1]


def test_bad_input_is_a_clear_error():
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    with pytest.raises(ShapeError):
        cone_states(net, (1, 8, 8))
    with pytest.raises(ArchitectureError, match="arch"):
        cone_params(net.state_dict(), (3, 8, 8))
    with torch.no_grad():
        net[2].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(LayerError, match="'2'"):
        cone_params(net, (3, 8, 8))


def test_state_distribution_counts_every_filter():
    from relugeom.experiments.models import build_model

    torch.manual_seed(0)
    net = build_model("lenet", seed=3)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.normal_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        states = cone_states(net, (3, 32, 32))
    dist = state_distribution(states, "layer")
    assert set(dist.state) == set(STATES)
    for layer, g in dist.groupby("layer"):
        truth = states[states.layer == layer].state.value_counts()
        assert g.set_index("state")["count"].reindex(truth.index).tolist() == truth.tolist()
        assert g.fraction.sum() == pytest.approx(1.0)
    net_level = state_distribution(states, "net")
    assert net_level["count"].sum() == states.state.notna().sum()


# --------------------------------------------------------------------- cones per channel (the default)
def _cone_sampler(n: np.ndarray, b: float):  # noqa: ANN202
    """Membership in the polyhedral cone of a single-channel filter: every circulant row (every 2D cyclic shift
    of the embedded normal n, (H, W)) on the non-negative side."""
    rows = np.stack([np.roll(n, s, axis=(0, 1)).ravel() for s in np.ndindex(*n.shape)])
    return lambda x: (x @ rows.T + b >= -1e-12).all(axis=1)


def _hand_built(c_first: float, t_first: float, c_second: float, t_second: float) -> nn.Module:
    """Two single-channel 3x3 convs on 3x3 inputs whose kernels are one zero-mean pattern v plus c * ones: the
    cones share their rotation, so apex (t) and opening (arctan(3c / ||v||)) alone decide inclusion."""
    v = np.array([[0.0, 1.0, 0.0], [-1.0, 0.5, 0.3], [0.2, -0.7, -0.3]])
    v -= v.mean()

    def conv(c: float, t: float) -> nn.Conv2d:
        m = nn.Conv2d(1, 1, 3, padding=1).double()
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(v + c)[None, None])
            m.bias.fill_(-t * 9 * c)
        return m

    return nn.Sequential(conv(c_first, t_first), nn.ReLU(), conv(c_second, t_second))


def _inclusion(net: nn.Module, rng: np.random.Generator) -> tuple[float, float]:
    """Brute force: the fraction of sampled points of the second cone (layer l+1) inside the first (layer l),
    and of the first inside the second (points drawn around the identity line, kept when inside)."""
    cones = []
    for conv in (net[0], net[2]):
        kernel = conv.weight.detach().numpy()[0, 0]
        n = np.zeros((3, 3))
        for (i, j), w in np.ndenumerate(kernel):
            n[(i - 1) % 3, (j - 1) % 3] += w  # centred and circular, as the circulant embedding
        cones.append(_cone_sampler(n, float(conv.bias.detach())))
    z = rng.uniform(-3, 40, size=200_000)
    x = z[:, None] / 3 + rng.normal(size=(len(z), 9)) * rng.uniform(0, 12, size=(len(z), 1))
    in_first, in_second = cones[0](x), cones[1](x)
    return in_first[in_second].mean(), in_second[in_first].mean()


@pytest.mark.parametrize(
    "c1, t1, c2, t2, expected",
    [
        (1.0, 0.0, 0.5, 1.0, "OUT_FULL_IN"),  # second: apex further out, narrower: inside the first
        (0.5, 0.0, 1.0, 1.0, "OUT_PARTIAL_IN"),  # apex inside the first, wider: pokes out far away
        (0.5, 1.0, 1.0, -0.5, "IN_FULL_OUT"),  # apex behind, wider: holds the first
        (1.0, 1.0, 0.5, 0.0, "IN_PARTIAL_OUT"),  # apex behind, narrower: the first pokes out of it
        (0.5, 0.0, 1.0, 0.0, "IN_FULL_OUT"),  # a tie (one apex), the second wider: it holds the first
        (1.0, 0.0, 0.5, 0.0, "OUT_FULL_IN"),  # a tie, the second narrower: inside the first
    ],
)
def test_states_of_hand_built_cones_against_brute_force_inclusion(c1, t1, c2, t2, expected):
    net = _hand_built(c1, t1, c2, t2)
    row = cone_states(net, (1, 3, 3)).iloc[0]
    assert row.state == expected
    second_in_first, first_in_second = _inclusion(net, np.random.default_rng(0))
    if expected == "OUT_FULL_IN":
        assert second_in_first == 1.0
    elif expected == "IN_FULL_OUT":
        assert first_in_second == 1.0
    elif expected == "OUT_PARTIAL_IN":
        assert 0 < second_in_first < 1 and first_in_second < 1
    else:
        assert 0 < first_in_second < 1 and second_in_first < 1
    if t1 == t2:  # the authors' code puts a tie with a wider second cone into OUT_PARTIAL_IN
        authors = cone_states(net, (1, 3, 3), ties="authors").iloc[0].state
        assert authors == ("OUT_PARTIAL_IN" if c2 > c1 else "OUT_FULL_IN")


def _dense_single_channel(w: np.ndarray, bias: float, spatial: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    one = nn.Conv2d(1, 1, w.shape[-1], padding=w.shape[-1] // 2).double()
    with torch.no_grad():
        one.weight.copy_(torch.from_numpy(w)[None, None])
        one.bias.fill_(bias)
    a, b = circulant(one, (1, *spatial))
    return a.toarray(), b


@settings(max_examples=12, deadline=None)
@given(c0=st.integers(1, 3), c1=st.integers(1, 3), c2=st.integers(1, 3), h=st.integers(2, 5), w=st.integers(2, 5),
       seed=st.integers(0, 10_000))  # fmt: skip
def test_channel_cones_against_the_dense_single_channel_circulants(c0, c1, c2, h, w, seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(c0, c1, 3, padding=1), nn.ReLU(), nn.Conv2d(c1, c2, 3, padding=1)).double()
    with torch.no_grad():
        for m in (net[0], net[2]):
            m.bias.normal_()
    params = cone_params(net, (c0, h, w)).set_index(["layer_index", "filter", "channel"])
    assert len(params) == c1 * c0 + c2 * c1 and (params.D == h * w).all()
    rows = {}
    for idx, conv in enumerate((net[0], net[2])):
        W, B = conv.weight.detach().numpy(), conv.bias.detach().numpy()
        for k in range(W.shape[0]):
            for c in range(W.shape[1]):
                A, b = _dense_single_channel(W[k, c], B[k] / W.shape[1], (h, w))  # bias share b_k / C_in
                rows[idx, k, c] = A
                got = params.loc[(idx, k, c)]
                if abs(A[0].sum()) > 1e-9:  # every plane of the channel's circulant passes through apex * 1
                    np.testing.assert_allclose(A @ np.full(h * w, got.apex) + b, 0, atol=1e-8)
                angle = np.arcsin(np.abs(A.sum(1)) / (np.linalg.norm(A, axis=1) * math.sqrt(h * w)))
                np.testing.assert_allclose(angle, got.opening, atol=1e-12)
    pairs = cone_states(net, (c0, h, w), pairs=True)
    assert len(pairs) == c2 * c1 * c0  # (filter i, its channel c) against (filter c, each of its channels j)
    for r in pairs.itertuples():
        assert r.prev_filter == r.channel
        pi, pp = params.loc[(1, r.filter, r.channel)], params.loc[(0, r.prev_filter, r.prev_channel)]
        assert r.dist == pytest.approx((pi.apex - pp.apex) * math.sqrt(h * w), rel=1e-9, abs=1e-9)
        assert r.open_diff == pytest.approx(pi.opening - pp.opening, abs=1e-12)
        x, ys = rows[1, r.filter, r.channel][0], rows[0, r.prev_filter, r.prev_channel]
        xm, ysm = x - x.mean(), ys - ys.mean(axis=1, keepdims=True)
        denom = np.linalg.norm(xm) * np.linalg.norm(ysm[0])
        if denom < 1e-12:
            assert np.isnan(r.rotation)
            continue
        assert r.rotation == pytest.approx(math.acos(min(1.0, float((ysm @ xm).max() / denom))), abs=1e-7)
        # the poster's rotation, densely: shear the wider normal along 1 to the narrower's opening, best shift
        u = np.ones(h * w) / math.sqrt(h * w)
        wide, narrow = (x, ys) if pi.opening >= pp.opening else (ys[0], np.stack([np.roll(
            x.reshape(h, w), s, axis=(0, 1)).ravel() for s in np.ndindex(h, w)]))  # fmt: skip
        theta = min(pi.opening, pp.opening)
        perp = wide - (wide @ u) * u
        sheared = perp + np.sign(wide @ u) * math.tan(theta) * np.linalg.norm(perp) * u
        cosines = narrow @ sheared / (np.linalg.norm(narrow, axis=1) * np.linalg.norm(sheared))
        assert r.rotation_shear == pytest.approx(math.acos(min(1.0, float(cosines.max()))), abs=1e-7)
    states = cone_states(net, (c0, h, w))
    assert len(states) == c2 * c1 and set(states.rotation_space) == {"channel"}
    # each pair classified on its own; a cone's state is the one of (max dist, min open_diff) over its pairs, and
    # where layer l reads one channel (the authors' setting) a cone has one pair and the two states agree
    for (k, c), g in pairs.groupby(["filter", "channel"]):
        assert list(g.state) == [classify(np.array([d]), np.array([o]))[0] for d, o in zip(g.dist, g.open_diff)]
        one = states[(states["filter"] == k) & (states["channel"] == c)].iloc[0]
        assert one.state == classify(np.array([g.dist.max()]), np.array([g.open_diff.min()]))[0]
        if c0 == 1:
            assert g.state.iloc[0] == one.state
    dist = state_distribution(pairs)
    assert int(dist["count"].sum()) == len(pairs)


def test_whole_filter_cones_stay_an_option_and_bad_options_are_refused():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1)).double()
    assert len(cone_states(net, (2, 5, 5), cones="filter")) == 4
    assert len(cone_states(net, (2, 5, 5))) == 4 * 3
    with pytest.raises(ValueError):
        cone_states(net, (2, 5, 5), cones="kernel")
