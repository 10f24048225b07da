"""Preimages, dual basis and nesting (seed 002) against forward passes, brute force and closed forms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relugeom.errors import DataError, LayerError, RelugeomWarning, ShapeError, UnsupportedLayerError
from relugeom.geometry.preimage import (
    Polyhedron,
    dual_basis,
    nesting,
    preimage,
    preimage_cone,
    preimage_through,
)


def relu_layer(w, b, x):  # noqa: ANN001, ANN201
    return np.maximum(w @ x + b, 0.0)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 4), m=st.integers(1, 5), domain=st.sampled_from(["orthant", "full"]), seed=st.integers(0, 999))
def test_x_is_in_its_preimage_and_samples_map_to_y(n, m, domain, seed):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(m, n)), rng.normal(size=m)
    x = rng.uniform(0, 1, size=n) if domain == "orthant" else rng.normal(size=n)
    y = relu_layer(w, b, x)
    p = preimage((w, b), y, domain=domain)
    assert p.contains(x)
    assert not p.is_empty()
    pts = p.sample(20, seed=seed)
    assert p.contains(pts).all()
    np.testing.assert_allclose(np.array([relu_layer(w, b, q) for q in pts]), np.tile(y, (20, 1)), atol=1e-7)
    if domain == "orthant":
        assert (pts >= -1e-9).all()
    # dimension against a closed form: generic W, the active rows are independent equalities; the rest are
    # (generically) not implicit, so dim = n - #active when that is >= 0
    assert p.dimension() == n - min(n, int((y > 0).sum()))


def test_output_outside_the_image_has_an_empty_preimage():
    # y_1 = relu(-x_1 - x_2 - 1) is 0 on the orthant: a positive y_1 has no preimage there
    w, b = np.array([[-1.0, -1.0], [1.0, 0.0]]), np.array([-1.0, 0.0])
    p = preimage((w, b), np.array([2.0, 1.0]))
    assert p.is_empty() and p.dimension() == -1
    # but on all of R^2 it has one, and it is a point
    full = preimage((w, b), np.array([2.0, 1.0]), domain="full")
    assert not full.is_empty() and full.dimension() == 0
    np.testing.assert_allclose(full.sample(3, seed=0), [[1.0, -4.0]] * 3, atol=1e-8)
    # two parallel planes asking for two different values
    w2 = np.array([[1.0, 1.0], [2.0, 2.0]])
    assert preimage((w2, np.zeros(2)), np.array([1.0, 3.0])).is_empty()


def test_conv_preimage_contains_the_input():
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 2, stride=1).double()
    x = torch.rand(1, 3, 3, dtype=torch.float64)
    y = torch.relu(conv(x[None]))[0].detach().numpy()
    p = preimage(conv, y, input_shape=(1, 3, 3))
    assert p.contains(x.numpy().ravel())
    pts = p.sample(5, seed=1)
    outs = torch.relu(conv(torch.from_numpy(pts).reshape(5, 1, 3, 3))).detach().numpy().reshape(5, -1)
    np.testing.assert_allclose(outs, np.tile(y.ravel(), (5, 1)), atol=1e-7)


def test_dimension_sees_implicit_equalities():
    # x1 <= 0 and x1 >= 0 written as inequalities: a line in R^2
    p = Polyhedron.from_constraints(2, ub=[(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.zeros(2))])
    assert p.dimension() == 1
    pts = p.sample(10, seed=0)
    np.testing.assert_allclose(pts[:, 0], 0, atol=1e-9)
    assert np.ptp(pts[:, 1]) > 0


def test_bad_outputs_are_clear_errors():
    w, b = np.eye(2), np.zeros(2)
    with pytest.raises(DataError, match="negative"):
        preimage((w, b), np.array([-1.0, 0.0]))
    with pytest.raises(ShapeError):
        preimage((w, b), np.array([1.0, 0.0, 0.0]))
    with pytest.raises(DataError):
        preimage((w, b), np.array([np.nan, 0.0]))
    with pytest.raises(ShapeError, match="input_shape"):
        preimage(nn.Conv2d(1, 1, 2), np.zeros(4))


# ---------------------------------------------------------------------------------------------- dual basis


@settings(max_examples=20, deadline=None)
@given(d=st.integers(2, 5), seed=st.integers(0, 999))
def test_dual_basis_is_dual(d, seed):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(d, d)), rng.normal(size=d)
    basis = dual_basis(w, b)
    prod = w @ basis.E
    off = prod - np.diag(np.diag(prod))
    np.testing.assert_allclose(off, 0, atol=1e-9 * np.abs(prod).max())
    assert (np.diag(prod) < 0).all()
    np.testing.assert_allclose(np.linalg.norm(basis.E, axis=0), 1)
    np.testing.assert_allclose(w @ basis.apex + b, 0, atol=1e-9)  # eq. 11: all planes meet at the apex


@settings(max_examples=15, deadline=None)
@given(d=st.integers(2, 4), seed=st.integers(0, 999))
def test_eq15_cone_equals_the_h_polyhedron(d, seed):
    rng = np.random.default_rng(seed)
    w, b = rng.normal(size=(d, d)), rng.normal(size=d)
    x = rng.normal(size=d)
    y = relu_layer(w, b, x)
    p = preimage((w, b), y, domain="full")
    x_star, rays = preimage_cone(w, b, y)
    # V -> H: every x* + E a (a >= 0) is in the H-polyhedron
    alphas = rng.exponential(size=(50, rays.shape[1]))
    assert p.contains(x_star + alphas @ rays.T).all()
    # H -> V: every point of the H-polyhedron has non-negative coordinates a in the rays
    pts = p.sample(30, seed=seed)
    if rays.shape[1]:
        a, *_ = np.linalg.lstsq(rays, (pts - x_star).T, rcond=None)
        np.testing.assert_allclose(rays @ a, (pts - x_star).T, atol=1e-7)
        assert (a > -1e-7).all()
    else:
        np.testing.assert_allclose(pts, np.tile(x_star, (30, 1)), atol=1e-7)


def test_singular_w_has_no_dual_basis():
    with pytest.raises(LayerError, match="singular"):
        dual_basis(np.array([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(LayerError, match="square"):
        dual_basis(np.ones((2, 3)))


# --------------------------------------------------------------------------------------- through layers


def _net(ws, x):  # noqa: ANN001, ANN202
    for w, b in ws:
        x = np.maximum(x @ w.T + b, 0.0)
    return x


def test_preimage_through_two_layers_matches_brute_force():
    rng = np.random.default_rng(3)
    ws = [(rng.normal(size=(3, 2)), rng.normal(size=3)), (rng.normal(size=(2, 3)), rng.normal(size=2) - 1.0)]
    y = np.zeros(2)  # full-dimensional preimage: where both outputs are off
    pre = preimage_through(ws, y, domain="full")
    assert pre.complete and len(pre) >= 1
    pts = rng.uniform(-4, 4, size=(3000, 2))
    truth = np.all(_net(ws, pts) == 0.0, axis=1)
    got = pre.contains(pts)
    assert (got == truth).mean() > 0.995  # disagreements only on the measure-zero boundaries (float tolerance)
    assert truth.any() and (~truth).any()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 999))
def test_preimage_through_contains_x_and_samples_map_to_y(seed):
    rng = np.random.default_rng(seed)
    ws = [(rng.normal(size=(3, 3)), rng.normal(size=3)), (rng.normal(size=(3, 3)), rng.normal(size=3))]
    x = rng.uniform(0, 2, size=3)
    y = _net(ws, x[None])[0]
    pre = preimage_through(ws, y)
    assert pre.complete
    assert pre.contains(x)
    for piece in pre:
        pts = piece.sample(5, seed=seed)
        np.testing.assert_allclose(_net(ws, pts), np.tile(y, (5, 1)), atol=1e-6)


def test_preimage_through_budget_flags_a_cut():
    rng = np.random.default_rng(0)
    ws = [(rng.normal(size=(4, 2)), rng.normal(size=4)), (rng.normal(size=(1, 4)), np.array([-5.0]))]
    full = preimage_through(ws, np.zeros(1), domain="full")
    assert full.complete and len(full) > 2
    with pytest.warns(RelugeomWarning, match="max_pieces"):
        cut = preimage_through(ws, np.zeros(1), domain="full", max_pieces=2)
    assert not cut.complete and len(cut) <= 2


def test_preimage_through_modules_with_shapes():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 1, 2), nn.ReLU(), nn.Linear(3, 2)).double()
    x = torch.rand(1, 1, 4, dtype=torch.float64)
    y = torch.relu(net(x)).detach().numpy().ravel()
    pre = preimage_through([net[0], net[2]], y, input_shape=(1, 4))
    assert pre.contains(x.numpy().ravel())
    with pytest.raises(ShapeError):
        preimage_through([net[2], net[0]], y, input_shape=(1, 4))


# ------------------------------------------------------------------------------------------------ nesting


def _face_samples(rng, d, i, r, n=400):  # noqa: ANN001, ANN202
    x = rng.uniform(0, r, size=(n, d))
    x[:, i] = 0.0
    return x


@settings(max_examples=20, deadline=None)
@given(a=st.floats(0.2, 2), off=st.floats(-1, 1), c=st.floats(-2, 0.5), seed=st.integers(0, 99))
def test_nesting_radius_and_contraction_by_brute_force(a, off, c, seed):
    """Seed 002, eq. 19: x' = relu(a x1 + off x2 + c, off x1 + a x2 + c)."""
    rng = np.random.default_rng(seed)
    w, b = np.array([[a, off], [off, a]]), np.array([c, c])
    df = nesting(None, (w, b))
    assert df.nested.all() == (off <= 0 and c <= 0)
    r = df.attrs["radius"]
    if r > 0:
        box = min(r, 50.0)
        for i in range(2):
            y = np.maximum(w @ _face_samples(rng, 2, i, box).T + b[:, None], 0.0)
            assert (y[i] == 0).all()  # the face x_i = 0 stays in y_i = 0: contraction
    if np.isfinite(r) and r >= 0:
        # beyond the radius the face leaves the negative side somewhere
        x = np.zeros(2)
        x[1] = 1.01 * r + 1e-6
        assert w[0] @ x + b[0] > 0


def test_nesting_of_conv_layers_and_bad_shapes():
    conv_a = nn.Conv2d(1, 1, 3, padding=1)
    conv_b = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv_b.weight.fill_(-0.1)
        conv_b.weight[0, 0, 1, 1] = 1.0
        conv_b.bias.fill_(-0.5)
    df = nesting(conv_a, conv_b, (1, 4, 4))
    assert len(df) == 16 and df.attrs["nested"]
    with torch.no_grad():
        conv_b.weight[0, 0, 0, 0] = 0.25
    df = nesting(conv_a, conv_b, (1, 4, 4))
    assert not df.attrs["nested"] and df.attrs["radius"] == pytest.approx(0.5 / 0.25)
    with pytest.raises(UnsupportedLayerError):
        nesting(conv_a, nn.Conv2d(1, 2, 3, padding=1), (1, 4, 4))


def test_warnings_module_is_quiet_for_complete_enumeration():
    rng = np.random.default_rng(1)
    ws = [(rng.normal(size=(2, 2)), rng.normal(size=2)), (rng.normal(size=(2, 2)), rng.normal(size=2))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RelugeomWarning)
        preimage_through(ws, np.zeros(2), domain="full")


# ------------------------------------------------------------- the paper's complete nesting (dual basis, LPs)
def _in_positive_span(w, b, E, I, z):  # noqa: ANN001, ANN202
    """Independent truth by LP feasibility: is there x on every plane of I and a >= 0 with z = x + E_I a?"""
    from scipy.optimize import linprog

    d, p = len(z), len(I)
    # variables (x, a): x + E_I a = z ; W_I x = -b_I ; a >= 0
    A_eq = np.vstack([np.hstack([np.eye(d), E[:, I]]), np.hstack([w[I], np.zeros((p, p))])])
    b_eq = np.concatenate([z, -b[I]])
    res = linprog(np.zeros(d + p), A_eq=A_eq, b_eq=b_eq, bounds=[(None, None)] * d + [(0, None)] * p,
                  method="highs")  # fmt: skip
    assert res.status in (0, 2)
    return res.status == 0


@settings(max_examples=25, deadline=None)
@given(d=st.integers(2, 4), seed=st.integers(0, 10**6), scale=st.floats(0.05, 0.6), shift=st.floats(-0.5, 0.3))
def test_complete_nesting_against_lp_feasibility_of_positive_spans(d, seed, scale, shift):
    import itertools

    from relugeom.geometry.preimage import complete_nesting, face_nesting

    rng = np.random.default_rng(seed)
    row = np.concatenate([[1.0], rng.uniform(-scale, scale * 0.5, d - 1)])
    w = np.stack([np.roll(row, i) for i in range(d)])  # circulant near the identity (seed 002, eq. 20)
    b = np.full(d, -0.5 + shift)
    df = complete_nesting(w, b)
    E = dual_basis(w, b).E
    for r in range(1, d + 1):
        for I in itertools.combinations(range(d), r):
            I = list(I)
            for _ in range(6):  # points of the coordinate face O_I
                z = rng.exponential(2.0, size=d)
                z[I] = 0.0
                if df.attrs["nested"]:
                    assert _in_positive_span(w, b, E, I, z)
    for _, row_ in df[~df.nested].iterrows():  # a witness of O_i outside every positive span from M_i
        z = row_.witness
        assert z[row_.plane] == pytest.approx(0) and (z >= -1e-12).all()
        assert not _in_positive_span(w, b, E, [row_.plane], np.clip(z, 0, None))
    # for square layers the paper's definition and relugeom's face criterion agree (docs/cones.md)
    face = face_nesting(None, (w, b))
    assert list(df.nested) == list(face.nested)


def test_complete_nesting_closed_forms_and_errors():
    from relugeom.geometry.preimage import complete_nesting

    assert complete_nesting(np.eye(3), -0.5 * np.ones(3)).attrs["nested"]  # identity, bias only (fig. 3 left)
    # 2 nodes (eq. 19): a narrower cone (b < 0) is nested, a wider one (b > 0) meets the axes: not nested
    assert complete_nesting(np.array([[1.0, -0.3], [-0.3, 1.0]]), -np.ones(2)).attrs["nested"]
    df = complete_nesting(np.array([[1.0, 0.3], [0.3, 1.0]]), -np.ones(2))
    assert not df.nested.any() and (df.min_dual_coordinate < 0).all()
    assert not complete_nesting(np.eye(2), np.array([0.2, -1.0])).attrs["nested"]  # positive bias: the corner
    with pytest.raises(LayerError):
        complete_nesting(np.ones((2, 3)), np.zeros(2))


def test_channel_nesting_of_a_non_square_pair_against_the_dense_single_channel_circulant():
    from relugeom.geometry.preimage import channel_nesting, complete_nesting
    from relugeom.geometry.unroll import circulant

    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()  # 2 -> 3 channels: not square
    with torch.no_grad():
        conv.weight.mul_(0.3)
        conv.weight[:, :, 1, 1] = 1.0
        conv.weight[0, 0] = -conv.weight[0, 0].abs()  # (filter 0, channel 0): every off-centre tap <= 0
        conv.weight[0, 0, 1, 1] = 1.0
        conv.bias.copy_(torch.tensor([-0.4, -0.2, 0.3], dtype=torch.float64))
    df = channel_nesting(conv, (2, 4, 5)).set_index(["filter", "channel"])
    assert len(df) == 6 and df.loc[(0, 0), "nested"] and not df.loc[(2, 0), "nested"]  # positive bias share
    for k in range(3):
        for c in range(2):
            one = nn.Conv2d(1, 1, 3, padding=1).double()
            with torch.no_grad():
                one.weight.copy_(conv.weight[k:k + 1, c:c + 1])
                one.bias.fill_(float(conv.bias[k]) / 2)  # the bias share b_k / C_in
            A, b = circulant(one, (1, 4, 5))
            A = A.toarray()
            assert df.loc[(k, c), "diagonal"] == pytest.approx(A[0, 0])
            assert df.loc[(k, c), "positive_off_diagonal"] == pytest.approx(np.clip(A[0, 1:], 0, None).sum())
            assert df.loc[(k, c), "bias_share"] == pytest.approx(b[0])
            assert bool(df.loc[(k, c), "nested"]) == complete_nesting(A, b).attrs["nested"]
    with pytest.raises(ShapeError):
        channel_nesting(conv, (3, 4, 5))
