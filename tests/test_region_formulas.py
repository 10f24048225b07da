"""regions.formulas against closed forms, brute-force enumeration of K_N and of Serra's index set."""

import itertools
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from relugeom.errors import BudgetExceeded, ShapeError
from relugeom.regions.formulas import cnn_max_regions, cnn_region_bounds, fc_region_bounds, general_position_regions

# the over-count warning of single-channel 2D shapes is tested in test_region_exact.py
pytestmark = pytest.mark.filterwarnings("ignore::relugeom.errors.RelugeomWarning")


@given(st.integers(0, 30), st.integers(0, 8))
@settings(max_examples=60, deadline=None)
def test_general_position_recursion_and_special_cases(n, d):
    r = general_position_regions(n, d)
    if d == 0:
        assert r == 1
    if n <= d:
        assert r == 2**n
    if d == 1:
        assert r == n + 1
    if n >= 1 and d >= 1:  # deletion-restriction: r(n, d) = r(n-1, d) + r(n-1, d-1)
        assert r == general_position_regions(n - 1, d) + general_position_regions(n - 1, d - 1)


def _serra_brute(w):
    L = len(w) - 1
    total = 0
    for j in itertools.product(*[range(n + 1) for n in w[1:]]):
        ok = all(j[l] <= min([w[0]] + [w[k + 1] - j[k] for k in range(l)] + [w[l + 1]]) for l in range(L))
        if ok:
            total += math.prod(math.comb(w[l + 1], j[l]) for l in range(L))
    return total


@given(st.lists(st.integers(1, 5), min_size=2, max_size=4))
@settings(max_examples=40, deadline=None)
def test_fc_bounds_brute_force_and_order(w):
    df = fc_region_bounds(w).set_index("bound")
    serra = df.loc["serra2018_upper", "value"]
    assert serra == _serra_brute(w)
    assert serra <= df.loc["montufar2017_upper", "value"]
    if len(w) == 2:
        assert df.loc["one_layer_exact", "value"] == general_position_regions(w[1], w[0]) == serra
    if df.loc["montufar2014_lower", "holds"]:
        assert df.loc["montufar2014_lower", "value"] <= serra


def test_fc_published_example():
    # Montufar 2014 lower bound for n_0 = 2, widths 4, 4: floor(4/2)^2 * (1 + 4 + 6) = 44
    df = fc_region_bounds([2, 4, 4]).set_index("bound")
    assert df.loc["montufar2014_lower", "value"] == 44
    assert df.loc["montufar2017_upper", "value"] == 11 * 11
    with pytest.raises(ShapeError):
        fc_region_bounds([3])


shapes_1d = st.tuples(st.integers(1, 2), st.integers(1, 6), st.integers(1, 3), st.integers(1, 3), st.integers(1, 4))


@given(shapes_1d)
@settings(max_examples=40, deadline=None)
def test_cnn_1d_all_methods_agree_with_literal(p):
    c, n, f, s, d = p
    f = min(f, n)
    lit = cnn_max_regions((c, n), f, s, d, method="literal")
    assert cnn_max_regions((c, n), f, s, d) == lit
    assert cnn_max_regions((c, n), f, s, d, method="search") == lit


@pytest.mark.parametrize("shape,k,s,d", [((1, 3, 3), 2, 1, 2), ((1, 3, 4), 2, 1, 2), ((2, 3, 3), 2, 1, 3),
                                         ((1, 4, 4), 3, 1, 4), ((1, 4, 4), 2, 2, 3), ((1, 3, 3), (1, 2), 1, 3),
                                         ((1, 4, 3), (3, 2), 1, 3), ((1, 3, 3), 1, 1, 2)])
def test_cnn_2d_matches_literal_and_flow(shape, k, s, d):
    lit = cnn_max_regions(shape, k, s, d, method="literal")
    assert cnn_max_regions(shape, k, s, d) == lit
    assert cnn_max_regions(shape, k, s, d, method="flow") == lit
    assert cnn_max_regions(shape, k, s, d, method="profile") == lit
    assert cnn_max_regions(shape, k, s, d, method="search") == lit


shapes_2d = st.tuples(st.integers(1, 2), st.integers(2, 4), st.integers(2, 5), st.integers(1, 3), st.integers(1, 3),
                      st.integers(1, 2), st.integers(1, 4))


@given(shapes_2d)
@settings(max_examples=30, deadline=None)
def test_cnn_2d_profile_programme_equals_matching_search(p):
    # two independent algorithms for Theorem 1: DFS with augmenting paths vs the Hall-signature programme
    c, h, w, f1, f2, s, d = p
    f1, f2 = min(f1, h), min(f2, w)
    shape = (c, h, w)
    try:
        searched = cnn_max_regions(shape, (f1, f2), s, d, method="search", budget=20000)
    except BudgetExceeded:
        assume(False)  # the plain search is exponential on tight shapes; compare where it finishes
    assert cnn_max_regions(shape, (f1, f2), s, d, method="profile") == searched


def test_cnn_closed_forms():
    # one output position: the layer is fully connected on its field -> Zaslavsky
    assert cnn_max_regions((2, 3, 3), 3, 1, 7) == general_position_regions(7, 18)
    assert cnn_max_regions((1, 5), 5, 1, 9) == general_position_regions(9, 5)
    # non-overlapping strides that tile the input: independent positions
    per = general_position_regions(5, 2 * 2)
    assert cnn_max_regions((1, 6, 6), 2, 2, 5) == per**9
    assert cnn_max_regions((1, 6, 6), 2, 2, 5, method="profile") == per**9
    assert cnn_max_regions((3, 12), 4, 4, 20) == general_position_regions(20, 12) ** 3
    # a single filter: 2^positions
    assert cnn_max_regions((1, 50), 3, 1, 1) == 2**48
    assert cnn_max_regions((1, 7, 7), 2, 1, 1, method="profile") == 2**36
    assert cnn_max_regions((1, 6, 5), 2, 1, 1) == 2**20
    # d = 1 input neurons per position (kernel 1): (d1 + 1)^n
    assert cnn_max_regions((1, 7), 1, 1, 4) == 5**7


def test_cnn_bad_input_and_budget():
    with pytest.raises(ShapeError):
        cnn_max_regions((1, 3), 4, 1, 2)
    with pytest.raises(ShapeError):
        cnn_max_regions((1, 3, 3, 3), 2, 1, 2)
    with pytest.raises(ShapeError):
        cnn_max_regions((1, 5), 2, 0, 2)
    with pytest.raises(BudgetExceeded):
        cnn_max_regions((1, 12), 3, 1, 3, method="literal", budget=1000)


def test_cnn_region_bounds_sandwich_and_one_layer():
    # one layer: Theorem 2 lower = upper = Theorem 1
    df = cnn_region_bounds([(2, 1, 3)], (1, 5)).set_index("quantity")
    exact = cnn_max_regions((1, 5), 2, 1, 3)
    assert df.loc["theorem2_lower", "value"] == df.loc["theorem2_upper", "value"] == exact
    df = cnn_region_bounds([(2, 1, 2), (2, 1, 2)], (1, 6)).set_index("quantity")
    lo, up = df.loc["theorem2_lower", "value"], df.loc["theorem2_upper", "value"]
    assert lo <= up <= df.loc["theorem2_upper_as_printed", "value"]
    # lower bound by hand: N' on (1, 5), kernel 2, 2 filters; times floor(2/1)^(5 * 1)
    assert lo == cnn_max_regions((1, 5), 2, 1, 2) * 2**5
