"""The exact region counters against closed forms, an LP enumeration of sign vectors, sampling, forward passes."""

import itertools
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from torch import nn

from relugeom.errors import BudgetExceeded, RelugeomWarning, ShapeError, UnsupportedLayerError
from relugeom.regions.arrangement import arrangement_regions, layer_regions
from relugeom.regions.cells import _forward_record, _prepare
from relugeom.regions.formulas import cnn_max_regions, general_position_regions
from relugeom.regions.segment import regions_on_segment
from relugeom.regions.slice import partition_2d


def _lp_regions(A, b):
    """Brute force: sign vectors s with {x : s_i (a_i x + b_i) > 0} non-empty (LP with a margin)."""
    n, d = A.shape
    count = 0
    for s in itertools.product((-1.0, 1.0), repeat=n):
        s = np.array(s)
        # maximise m s.t. s_i (a_i x + b_i) >= m, m <= 1
        c = np.zeros(d + 1)
        c[-1] = -1
        A_ub = np.column_stack([-(s[:, None] * A), np.ones(n)])
        res = linprog(c, A_ub=A_ub, b_ub=s * b, bounds=[(None, None)] * d + [(None, 1)], method="highs")
        if res.status == 0 and -res.fun > 1e-7:
            count += 1
    return count


@given(st.integers(1, 7), st.integers(1, 4), st.integers(0, 10**6))
@settings(max_examples=25, deadline=None)
def test_general_position_closed_form(n, d, seed):
    rng = np.random.default_rng(seed)
    assert arrangement_regions(rng.normal(size=(n, d)), rng.normal(size=n)) == general_position_regions(n, d)


@given(st.integers(2, 7), st.integers(1, 3), st.integers(0, 10**6))
@settings(max_examples=25, deadline=None)
def test_degenerate_arrangements_match_lp_enumeration(n, d, seed):
    # small integer coefficients: parallel, coincident and concurrent hyperplanes are frequent
    rng = np.random.default_rng(seed)
    A = rng.integers(-1, 2, size=(n, d)).astype(float)
    b = rng.integers(-1, 2, size=n).astype(float)
    A[np.all(A == 0, axis=1), 0] = 1.0
    # duplicates as sets: the LP counts sign vectors, which a repeated hyperplane does not change
    assert arrangement_regions(A, b) == _lp_regions(A, b)


def test_one_dimension_and_bad_input():
    assert arrangement_regions(np.array([[1.0], [2.0], [-1.0]]), [1.0, 2.0, 5.0]) == 3  # points -1, -1, 5
    assert arrangement_regions(np.zeros((2, 3)), [1.0, 0.0]) == 1
    with pytest.raises(ShapeError):
        arrangement_regions(np.ones((2, 2)), [1.0])
    with pytest.raises(ShapeError):
        arrangement_regions(np.array([[np.nan, 1.0]]), [0.0])
    rng = np.random.default_rng(0)
    with pytest.raises(BudgetExceeded):
        arrangement_regions(rng.normal(size=(12, 4)), rng.normal(size=12), budget=50)


def test_sampling_never_finds_more():
    rng = np.random.default_rng(3)
    A, b = rng.normal(size=(9, 2)), rng.normal(size=9)
    X = rng.uniform(-30, 30, size=(200000, 2))
    sampled = len({r.tobytes() for r in (X @ A.T + b > 0)})
    exact = arrangement_regions(A, b)
    assert sampled <= exact == 1 + 9 + 36


@pytest.mark.parametrize("shape,k,s,d", [((1, 5), 2, 1, 3), ((2, 4), 2, 1, 2), ((1, 6), 3, 2, 3), ((1, 4), 1, 1, 2),
                                         ((1, 2, 3), 2, 1, 3), ((2, 3, 3), 2, 1, 2), ((1, 4, 4), 3, 1, 2)])
def test_layer_regions_equals_theorem1_for_random_weights(shape, k, s, d):
    torch.manual_seed(0)
    conv = (nn.Conv1d if len(shape) == 2 else nn.Conv2d)(shape[0], d, k, stride=s)
    nn.init.normal_(conv.weight)
    nn.init.normal_(conv.bias)
    assert layer_regions(conv, shape) == cnn_max_regions(shape, k, s, d)


def test_theorem1_overcounts_single_channel_2d_and_library_says_so():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 2)
    nn.init.normal_(conv.weight)
    nn.init.normal_(conv.bias)
    with pytest.warns(RelugeomWarning, match="over-counts"):
        published = cnn_max_regions((1, 3, 3), 2, 1, 2)
    with pytest.warns(RelugeomWarning, match="over-counts"):
        real = layer_regions(conv, (1, 3, 3))
    assert published == 256 and real == 255
    # the 8 normals are dependent for every weight: rank 7 (w_k * w_l = w_l * w_k)
    from relugeom.geometry.unroll import unroll

    A, _ = unroll(conv, (1, 3, 3))
    assert np.linalg.matrix_rank(A.toarray()) == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnn_max_regions((2, 3, 3), 2, 1, 2)  # two channels: no caveat
        cnn_max_regions((1, 5), 2, 1, 2)


def test_linear_layer_regions_general_position():
    torch.manual_seed(1)
    lin = nn.Linear(3, 6)
    assert layer_regions(lin, (3,)) == general_position_regions(6, 3)


@pytest.mark.parametrize("n", [1, 5, 12])
def test_one_hidden_layer_whole_plane(n):
    torch.manual_seed(n)
    net = nn.Sequential(nn.Linear(2, n), nn.ReLU(), nn.Linear(n, 1))
    P = partition_2d(net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], None)
    assert P.n_regions == 1 + n + math.comb(n, 2)
    # the chosen box contains every intersection of two first-layer lines
    W, b = net[0].weight.detach().double().numpy(), net[0].bias.detach().double().numpy()
    for i, j in itertools.combinations(range(n), 2):
        x = np.linalg.solve(W[[i, j]], -b[[i, j]])
        assert P.bounds[0] <= x[0] <= P.bounds[1] and P.bounds[2] <= x[1] <= P.bounds[3]
    # and the box count equals the whole-plane count
    assert partition_2d(net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], P.bounds).n_regions == P.n_regions
    assert P.verify(n_points=300).loc[0, "ok"]


def _train(net, X, y, steps=150):
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(X), y).backward()
        opt.step()
    return net


def test_partition_trained_mlp_against_sampling_and_forward():
    torch.manual_seed(0)
    X = torch.randn(256, 2)
    y = (X[:, 0] * X[:, 1] > 0).long()
    net = _train(nn.Sequential(nn.Linear(2, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 2)), X, y)
    P = partition_2d(net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], (-3, 3, -3, 3))
    v = P.verify(n_points=400, seed=1)
    assert v.loc[0, "ok"], v
    # dense grid: sampled patterns are a subset of the exact ones, never more
    g = np.linspace(-3, 3, 200)
    Z = np.array(np.meshgrid(g, g)).reshape(2, -1).T
    _, pats, _ = _forward_record(P.graph, P.points(Z))
    sampled = {b"|".join(np.asarray(p[i]).tobytes() for p in pats) for i in range(len(Z))}
    exact = {b"|".join(np.asarray(q).tobytes() for q in pat) for pat in P.patterns}
    assert sampled <= exact and len(sampled) <= P.n_regions
    assert P.n_linear_regions <= P.n_regions
    assert len(P.decision_boundary()) > 0


def test_partition_cnn_with_pooling_and_batchnorm():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(3, 2, 2), nn.ReLU(), nn.AvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    net[1].running_mean.normal_()
    net[1].running_var.uniform_(0.5, 2)
    x0 = torch.randn(1, 6, 6)
    P = partition_2d(net, x0, torch.randn(1, 6, 6), torch.randn(1, 6, 6), (-1, 1, -1, 1))
    v = P.verify(n_points=300)
    assert v.loc[0, "ok"], v


def test_segment_against_fine_sampling():
    torch.manual_seed(4)
    net = nn.Sequential(nn.Conv1d(1, 3, 3), nn.ReLU(), nn.MaxPool1d(2), nn.Flatten(), nn.Linear(27, 5), nn.ReLU(),
                        nn.Linear(5, 1))
    x0, x1 = torch.randn(1, 20) * 3, torch.randn(1, 20) * 3
    seg = regions_on_segment(net, x0, x1)
    t = np.linspace(0, 1, 20001)
    X = torch.from_numpy(x0.double().numpy()[None] + t[:, None, None] * (x1 - x0).double().numpy()[None])
    _, pats, _ = _forward_record(_prepare(net), X)
    keys = [b"|".join(np.asarray(p[i]).tobytes() for p in pats) for i in range(len(t))]
    changes = [i for i in range(1, len(t)) if keys[i] != keys[i - 1]]
    assert len(changes) + 1 <= seg.n_activation_regions
    for i in changes:  # every sampled change brackets an exact breakpoint
        assert np.any((seg.breakpoints >= t[i - 1] - 1e-12) & (seg.breakpoints <= t[i] + 1e-12))
    # the pieces' affine functions agree with the network
    out = net.double()(X).detach().numpy().ravel()
    for _, r in seg.pieces.iterrows():
        m = (t > r.t_start) & (t < r.t_end)
        assert np.allclose(r.value_at_0[0] + r.slope[0] * t[m], out[m], atol=1e-9)


def test_bad_models():
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        regions_on_segment(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ShapeError):
        regions_on_segment(nn.Sequential(nn.Linear(3, 2)), [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ShapeError):
        partition_2d(nn.Sequential(nn.Linear(2, 2)), [0.0, 0.0], [1.0, 0.0], [2.0, 0.0])
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Linear(30, 1))
    with pytest.raises(BudgetExceeded) as e:
        partition_2d(net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], None, budget=100)
    assert e.value.partial is not None


def test_regions_over_training_series():
    from relugeom.regions.training import regions_over_training, training_summary

    torch.manual_seed(0)
    X = torch.randn(64, 2)
    y = (X[:, 0] > 0).long()
    nets = [nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2))]
    import copy

    nets.append(_train(copy.deepcopy(nets[0]), X, y, steps=30))
    df = regions_over_training(nets, (X, y), n_lines=3, n_planes=1, seed=1)
    assert len(df) == 2 * 4 and set(df.kind) == {"line", "plane"}
    # the same lines for both models, and the counts are those of regions_on_segment / partition_2d
    for (_, r0), (_, r1) in zip(df[df.index < 4].iterrows(), df[df.index >= 4].iterrows()):
        assert r0.points == r1.points and r0.measure == r1.measure
    a, b = (int(i) for i in df.iloc[0].points.split(","))
    d = X[b].double() - X[a].double()
    seg = regions_on_segment(nets[0], X[a].double() - 0.5 * d, X[b].double() + 0.5 * d)
    assert df.iloc[0].n_regions == seg.n_activation_regions
    # one hidden layer of 6 on a plane in R^2: at most 1 + 6 + 15 regions
    assert (df[df.kind == "plane"].n_regions <= 22).all()
    s = training_summary(df)
    assert set(s.columns) >= {"kind", "density_mean", "se", "n"}


def test_a_plane_past_the_budget_is_left_out_and_the_lines_are_still_counted():
    from relugeom.errors import SkippedWarning
    from relugeom.regions.training import region_counts

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    X = torch.randn(32, 2)
    def steps(count):  # the smallest power-of-two budget a count fits in
        budget = 1
        while True:
            try:
                return count(budget), budget
            except BudgetExceeded:
                budget *= 2

    ends, budget = [], 1
    rng = np.random.default_rng(3)  # the lines region_counts(seed=3) draws
    for _ in range(2):
        a, b = rng.choice(len(X), size=2, replace=False)
        d = X[b].double() - X[a].double()
        x0, x1 = X[a].double() - 0.5 * d, X[b].double() + 0.5 * d
        n, need = steps(lambda B, x0=x0, x1=x1: regions_on_segment(net, x0, x1, budget=B).n_activation_regions)
        ends.append(n)
        budget = max(budget, need)
    a, b, c = rng.choice(len(X), size=3, replace=False)
    with pytest.raises(BudgetExceeded):  # the plane needs more steps than the lines
        partition_2d(net, X[a], X[b] - X[a], X[c] - X[a], (-0.5, 1.5, -0.5, 1.5), budget=budget)
    with pytest.warns(SkippedWarning, match=r"plane 0 \(points \d+,\d+,\d+\) left out"):
        df = region_counts(net, X, n_lines=2, n_planes=1, seed=3, budget=budget)
    assert df.kind.tolist() == ["line", "line"] and df.n_regions.tolist() == ends


def test_decision_boundary_against_forward_passes():
    # three classes: along every segment the network's two largest logits tie, and a dense grid's arg-max
    # changes only next to a segment (within one grid step)
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 10), nn.ReLU(), nn.Linear(10, 3)).double()
    P = partition_2d(net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], (-2, 2, -2, 2))
    segs = P.decision_boundary()
    assert segs
    for s in segs:
        for t in (0.25, 0.5, 0.75):
            z = (1 - t) * s[0] + t * s[1]
            top = torch.sort(net(torch.tensor(z)[None]).detach()[0]).values[-2:]
            assert float(top[1] - top[0]) <= 1e-8 * (1 + float(top.abs().max()))
    g = np.linspace(-2, 2, 161)
    Z = np.array(np.meshgrid(g, g)).reshape(2, -1).T
    am = net(torch.from_numpy(Z)).argmax(1).numpy().reshape(161, 161)
    change = np.argwhere(am[:, 1:] != am[:, :-1])  # (row i = z2, col j = z1) horizontal neighbours
    pts = np.array([[g[j] + (g[1] - g[0]) / 2, g[i]] for i, j in change])

    def dist(p, a, b):
        t = np.clip(np.dot(p - a, b - a) / max(np.dot(b - a, b - a), 1e-300), 0, 1)
        return np.linalg.norm(p - (a + t * (b - a)))

    assert len(pts) > 0
    assert all(min(dist(p, s[0], s[1]) for s in segs) <= (g[1] - g[0]) for p in pts)
