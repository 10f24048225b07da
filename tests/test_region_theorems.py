"""Xiong et al. 2020 beyond Theorem 1 (i), Hanin and Rolnick's bound, Dinh et al.'s alpha-scale: against exact counts
(LP enumeration of sign vectors, the arrangement recursion), brute-force enumeration of K_N and closed forms."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from relugeom.errors import LayerError, RelugeomError
from relugeom.geometry.unroll import unroll
from relugeom.regions.arrangement import arrangement_regions
from relugeom.regions.attained import gaussian_layer_count, theorem1_expectation
from relugeom.regions.formulas import (
    cnn_max_regions,
    cnn_max_regions_bounds,
    cnn_region_bounds,
    cnn_regions_asymptotics,
    hanin_rolnick_bound,
    theorem3_rates,
)
from relugeom.regions.theorem1 import _conv, _delta_regions

pytestmark = pytest.mark.filterwarnings("ignore::relugeom.errors.RelugeomWarning")


def _lp_regions(A, b):
    from test_region_exact import _lp_regions as lp

    return lp(A, b)


# ------------------------------------------------------------------------------------- certified bounds
shapes_2d = st.tuples(st.integers(1, 2), st.integers(2, 5), st.integers(2, 5), st.integers(1, 3), st.integers(1, 3),
                      st.integers(1, 2), st.integers(1, 3))  # fmt: skip


@given(shapes_2d)
@settings(max_examples=40, deadline=None)
def test_bounds_sandwich_the_exact_value(p):
    C, H, W, f1, f2, s, d = p
    f1, f2 = min(f1, H), min(f2, W)
    exact = cnn_max_regions((C, H, W), (f1, f2), s, d, budget=10**6)
    b = cnn_max_regions_bounds((C, H, W), (f1, f2), s, d)
    assert b.lower <= exact <= b.upper
    assert b.log10_lower == pytest.approx(math.log10(b.lower))


def test_bounds_exact_for_1d_and_one_position_and_disjoint_windows():
    b = cnn_max_regions_bounds((2, 7), 3, 1, 4)
    assert b.exact and b.lower == cnn_max_regions((2, 7), 3, 1, 4)
    # one position: every t with t <= C f1 f2 is in K_N -> Zaslavsky's sum (general-position bound is exact)
    b = cnn_max_regions_bounds((2, 3, 3), 3, 1, 7)
    assert b.upper == sum(math.comb(7, i) for i in range(19))
    # stride = kernel: independent windows; rows of positions are independent too, so lower = upper
    b = cnn_max_regions_bounds((1, 6, 6), 2, 2, 5)
    assert b.exact and b.lower == sum(math.comb(5, i) for i in range(5)) ** 9


@given(st.integers(1, 400), st.integers(0, 400))
@settings(max_examples=60, deadline=None)
def test_sum_of_binomials_bound_is_certified_and_tight(n, d):
    from relugeom.regions.theorem1 import _sum_binomials_upper

    exact = sum(math.comb(n, j) for j in range(min(n, d) + 1))
    assert _sum_binomials_upper(n, d) == exact  # exact below exact_max
    up = _sum_binomials_upper(n, d, exact_max=0)  # the closed forms
    assert exact <= up <= 2 * exact + 1 if 2 * d >= n else exact <= up <= exact * (n - d + 1) / (n - 2 * d + 1) + 1


def test_bounds_for_a_realistic_layer_are_fast_and_narrow_in_log():
    b = cnn_max_regions_bounds((3, 32, 32), 3, 1, 64)
    # Theta(d^{#U S}): 64^3072 / 3072! is ~ 10^{5548 - 9399}; both bounds of order 10^5000
    assert 5000 < b.log10_lower < b.log10_upper < 5300


def test_delta_filter_count_is_the_arrangement_count():
    # independent truth: the arrangement recursion on the unrolled delta-filter layer with distinct biases
    for shape, k, s, d in [((1, 3, 3), 2, 1, 2), ((2, 2, 3), (2, 2), 1, 3), ((1, 7), 3, 2, 4), ((1, 5, 5), 3, 2, 2)]:
        c = _conv(shape, k, s, d)
        conv = (nn.Conv1d if len(shape) == 2 else nn.Conv2d)(shape[0], d, k, stride=s).double()
        offsets = list(itertools.product(range(c.channels), *[range(f) for f in c.kernel]))
        with torch.no_grad():
            conv.weight.zero_()
            for j in range(d):
                conv.weight[(j, *offsets[j % len(offsets)])] = 1.0
            conv.bias.copy_(torch.arange(d, dtype=torch.float64) * 0.37 + 0.1)
        A, b = unroll(conv, shape)
        assert arrangement_regions(A.toarray(), b) == _delta_regions(c)


# ------------------------------------------------------------------------------------- Theorem 2 lower bound
def test_theorem2_lower_is_built_on_an_attained_count_where_theorem1_over_counts():
    # N' = (1, 3, 3), kernel 2, 2 filters: Theorem 1 says 256, no weights exceed 255 (docs/regions.md)
    df = cnn_region_bounds([(2, 1, 2), (2, 1, 2)], (1, 4, 4)).set_index("quantity")
    real = gaussian_layer_count((1, 3, 3), 2, 1, 2, seed=0)
    # independent truth for that count: LP enumeration of the sign vectors of the 8 hyperplanes
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(1, 2, 2).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen, dtype=torch.float64))
    A, b = unroll(conv, (1, 3, 3))
    assert real == _lp_regions(A.toarray(), b) == 255
    factor = (2 // 1) ** (9 * 1)  # floor(d_1 / d_0)^{n_1 d_0}, n_1 = 3 x 3 positions
    assert df.loc["theorem2_lower", "value"] == 255 * factor
    assert bool(df.loc["theorem2_lower", "holds"]) and "255" in df.loc["theorem2_lower", "condition"]
    assert df.loc["theorem2_lower_as_published", "value"] == 256 * factor
    assert not bool(df.loc["theorem2_lower_as_published", "holds"])
    # where Theorem 1 is right both rows agree
    df = cnn_region_bounds([(2, 1, 2), (2, 1, 2)], (1, 6)).set_index("quantity")
    assert df.loc["theorem2_lower", "value"] == df.loc["theorem2_lower_as_published", "value"]


def test_theorem2_bounds_for_realistic_layers_use_certified_bounds():
    df = cnn_region_bounds([(3, 1, 8), (3, 1, 8)], (3, 12, 12), budget=2000).set_index("quantity")
    lo, up = df.loc["theorem2_lower", "value"], df.loc["theorem2_upper", "value"]
    assert "certified" in df.loc["theorem2_lower", "condition"]
    assert 0 < lo < up


# ------------------------------------------------------------------------------------- Theorem 1 (ii)
def test_expectation_statement_on_1d_and_where_it_fails():
    chk = theorem1_expectation((2, 5), 2, 1, 3, n_samples=3, distribution="uniform")
    assert chk.formula == cnn_max_regions((2, 5), 2, 1, 3, method="literal")
    assert chk.agrees and chk.mean == chk.formula and chk.std_error == 0.0 and chk.n_samples == 3
    chk = theorem1_expectation((1, 3, 3), 2, 1, 2, n_samples=2)
    assert chk.formula == 256 and chk.mean == 255.0 and not chk.agrees and chk.caveat


# ------------------------------------------------------------------------------------- asymptotics
def _leading_brute(shape, k, s):
    """sum over t in K_N with |t| = #U S of prod 1/t_i!, K_N enumerated literally (every t, every J)."""
    c = _conv(shape, k, s, 1)
    fields = c.fields()
    m = len(fields)
    cap = [c.channels * len(f) for f in fields]
    union = {J: c.channels * len(set().union(*[fields[i] for i in J])) for r in range(m + 1)
             for J in itertools.combinations(range(m), r)}  # fmt: skip
    D = union[tuple(range(m))]
    total = Fraction(0)
    for t in itertools.product(*[range(x + 1) for x in cap]):
        if sum(t) == D and all(sum(t[i] for i in J) <= u for J, u in union.items()):
            total += Fraction(1, math.prod(math.factorial(x) for x in t))
    return D, total


@pytest.mark.parametrize("shape,k,s", [((1, 3), 2, 1), ((1, 5), 3, 1), ((2, 4), 2, 2), ((1, 3, 3), 2, 1),
                                       ((1, 2, 3), (2, 2), 1), ((1, 4), 2, 1)])
def test_asymptotic_exponent_and_constant_against_enumeration(shape, k, s):
    D, c = cnn_regions_asymptotics(shape, k, s)
    assert (D, c) == _leading_brute(shape, k, s)
    # and R_N / d^D approaches c
    r = cnn_max_regions(shape, k, s, 400) / Fraction(400) ** D
    assert abs(float(r) / float(c) - 1) < 0.2


def test_asymptotics_one_window_closed_form():
    # one position covering n inputs: R = sum_{t <= n} C(d, t) -> d^n / n!
    assert cnn_regions_asymptotics((1, 6), 6, 1) == (6, Fraction(1, 720))


# ------------------------------------------------------------------------------------- Theorem 3
def test_theorem3_rates_closed_form():
    df = theorem3_rates((1, 5), 2, 1, 2, [2, 4]).set_index("width")
    # N_1: layer 1 has 4 positions, d_0 = 1: deep rate = (1/2) * d^{4 - 2}
    assert df.loc[4, "deep_rate_log10"] == pytest.approx(math.log10(4**2 / 2))
    # N_2: 2 * d^2 filters on an input of 5 values: shallow rate (L d^2)^{5 - 1}
    assert df.loc[4, "shallow_rate_log10"] == pytest.approx(4 * math.log10(32))
    assert df.loc[4, "shallow_filters"] == 32 and df.loc[4, "shallow_parameters"] == 32 * 3
    r2 = cnn_max_regions((1, 5), 2, 1, 32)
    assert df.loc[4, "shallow_per_parameter_log10"] == pytest.approx(math.log10(r2 / 96))


# ------------------------------------------------------------------------------------- Hanin and Rolnick
def test_hanin_rolnick_bound_closed_forms():
    assert hanin_rolnick_bound(30, 2) == 450.0
    assert hanin_rolnick_bound(30, 1, T=2.0) == 60.0
    assert hanin_rolnick_bound(3, 5) == 8.0  # #neurons < n_in: 2^#neurons
    # depth 1, n neurons in general position in R^1: n + 1 regions on the whole line, n per unit "volume" scale
    assert hanin_rolnick_bound(10**6, 3) == pytest.approx(1e18 / 6)
    with pytest.raises(ValueError):
        hanin_rolnick_bound(3, 1, T=0)


def test_region_counts_carry_the_bound_and_neuron_count():
    from relugeom.regions.training import region_counts, relu_neuron_count

    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3), nn.ReLU(),
                         nn.Linear(3, 2))  # fmt: skip
    assert relu_neuron_count(conv, torch.zeros(1, 5, 5)) == 2 * 4 * 4 + 3  # ReLU units only, not the pool
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    df = region_counts(net, torch.randn(10, 3), n_lines=2, n_planes=1, seed=0)
    n = 9
    assert (df.n_neurons == n).all()
    lines, planes = df[df.kind == "line"], df[df.kind == "plane"]
    assert (lines.hanin_rolnick_bound == n).all() and (planes.hanin_rolnick_bound == n * n / 2).all()
    # T_equivalent puts the bound exactly on the measured density
    assert np.allclose(lines.T_equivalent * n, lines.density)
    assert np.allclose((planes.T_equivalent * n) ** 2 / 2, planes.density)


# ------------------------------------------------------------------------------------- Dinh et al.
def test_alpha_scale_keeps_the_function_and_scales_the_layers():
    from relugeom.measures.rescale import alpha_scale

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3, 4), nn.ReLU(),
                        nn.Linear(4, 2)).double()  # fmt: skip
    x = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    s = alpha_scale(net, 7.0, first="4", check=x)
    assert torch.allclose(s(x), net(x), rtol=1e-12, atol=1e-12)
    assert torch.allclose(s[4].weight, 7 * net[4].weight) and torch.allclose(s[4].bias, 7 * net[4].bias)
    assert torch.allclose(s[6].weight, net[6].weight / 7) and torch.equal(s[6].bias, net[6].bias)
    assert torch.equal(s[0].weight, net[0].weight)  # the others untouched, the original untouched
    bn = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    bn[1].running_mean.fill_(0.5)
    with pytest.raises(RelugeomError, match="not\\s+positively homogeneous"):
        alpha_scale(bn, 3.0, check=torch.randn(5, 3))
    with pytest.raises(LayerError):
        alpha_scale(net, 2.0, first="6")
    with pytest.raises(ValueError):
        alpha_scale(net, -1.0)
