"""Published counts and bounds on the number of linear regions, as exact Python integers (Xiong et al. 2020).

* :func:`general_position_regions` -- Zaslavsky (1975): ``n`` affine hyperplanes in general position in
  R^d cut it into ``sum_{i=0}^{d} C(n, i)`` regions.
* :func:`fc_region_bounds` -- fully connected ReLU nets with widths ``n_0, ..., n_L``: Pascanu, Montufar and
  Bengio (2013, one layer, exact), Montufar et al. (2014, lower), Montufar (2017, upper), Serra,
  Tjandraatmadja and Ramalingam (2018, upper).
* :func:`cnn_max_regions` -- Xiong et al. 2020, Theorem 1 (i): the maximal number of regions of a one-layer ReLU CNN,

      R_N = sum_{t in K_N} prod_i C(d_1, t_i),
      K_N = {t in N^I : sum_{i in J} t_i <= #U_{i in J} S_i  for all J subset of I}.

  ``K_N`` is the set of demand vectors that can be served by a *matching*: by Hall's theorem (position i
  replicated t_i times) the coverage constraints hold for every J exactly when each position i can be given
  t_i distinct input neurons of its receptive field S_i. Membership is therefore a max-flow question, and for
  1D inputs, whose receptive fields are intervals with increasing ends, a greedy (leftmost free neuron first)
  decides it, so the sum becomes a dynamic programme over the greedy's pointer. The algorithms live in
  :mod:`relugeom.regions.theorem1`.
* :func:`cnn_region_bounds` -- Xiong et al. 2020, Theorem 2 (lower and upper bounds for deep CNNs) and the
  per-parameter comparisons of Theorem 3.

Shapes follow PyTorch: a 1D input is ``(C, L)`` and a 2D input ``(C, H, W)``; Xiong et al. 2020's
``n^(1) x n^(2) x d_0`` input is ``(d_0, n^(1), n^(2))``. Convolutions are unpadded ("valid"), as in the paper.
Everything here is exact integer arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import pandas as pd

from ..errors import BudgetExceeded, ShapeError, warn
from ._budget import Budget, as_budget
from .theorem1 import (
    _Conv,
    _conv,
    _covered,
    _delta_regions,
    _flow_literal,
    _interval_dp,
    _literal,
    _nonneg_int,
    _profile_dp,
    _search,
    _theorem1_bounds,
)

_HINT = "raise budget= (CLI: --budget)"

__all__ = [
    "ConvSpec",
    "cnn_max_regions",
    "cnn_region_bounds",
    "fc_region_bounds",
    "general_position_regions",
    "cnn_formula_caveat",
    "cnn_max_regions_bounds",
    "cnn_regions_asymptotics",
    "attained_regions",
    "hanin_rolnick_bound",
    "theorem3_rates",
    "Theorem1Bounds",
]


def general_position_regions(n: int, d: int, *, budget: int | Budget | None = None) -> int:
    """Regions of ``n`` affine hyperplanes in general position in R^d: ``sum_{i<=d} C(n, i)`` (Zaslavsky 1975).

    Each binomial follows from the previous one (``C(n, i) = C(n, i-1) (n-i+1) / i``, exact). ``budget``
    (steps, each ``OPS_PER_STEP`` words of big-integer arithmetic) stops a sum too large to finish.

    Example
    -------
    >>> general_position_regions(3, 2)  # three lines in general position cut the plane into 7 regions
    7
    """
    n, d = _nonneg_int(n, "n"), _nonneg_int(d, "d")
    bud = None if budget is None else as_budget(budget, _HINT)
    term = total = 1
    for i in range(1, min(n, d) + 1):
        term = term * (n - i + 1) // i
        total += term
        if bud is not None:
            bud.ops(2 * (term.bit_length() // 64 + 1), f"general_position_regions({n}, {d})")
    return total


# ----------------------------------------------------------------------------------------- fully connected
def _serra_upper(widths: Sequence[int], budget: Budget | None = None) -> int:
    """Serra et al. (2018), Theorem 1: sum over J of prod_l C(n_l, j_l), with
    J = {j : 0 <= j_l <= min(n_0, n_1 - j_1, ..., n_{l-1} - j_{l-1}, n_l)}. Computed by a dynamic programme
    over the running minimum m = min(n_0, n_1 - j_1, ..., n_{l-1} - j_{l-1})."""
    states = {widths[0]: 1}
    for n_l in widths[1:]:
        top = min(max(states), n_l)
        if budget is not None:
            budget.ops(len(states) * (top + 1), "serra2018_upper")
        binom = [1] * (top + 1)
        for j in range(1, top + 1):
            binom[j] = binom[j - 1] * (n_l - j + 1) // j
        nxt: dict[int, int] = {}
        for m, w in states.items():
            if budget is not None:
                budget.ops((min(m, n_l) + 1) * (w.bit_length() // 64 + binom[min(m, n_l)].bit_length() // 64 + 1),
                           "serra2018_upper")  # fmt: skip
            for j in range(min(m, n_l) + 1):
                key = min(m, n_l - j)
                nxt[key] = nxt.get(key, 0) + w * binom[j]
        states = nxt
    return sum(states.values())


def fc_region_bounds(widths: Sequence[int], *, budget: int | None = None) -> pd.DataFrame:
    """The published counts for a fully connected ReLU net with ``widths = [n_0, n_1, ..., n_L]``.

    One row per result: ``bound`` (name), ``kind`` (exact/lower/upper), ``value`` (Python int, or None where
    the result does not apply), ``holds`` (whether its conditions are met), ``condition`` and ``source``.

    * one_layer_exact: ``sum_{i<=n_0} C(n_1, i)`` when L = 1 (Pascanu, Montufar, Bengio 2013; Xiong et al. 2020).
    * montufar2014_lower: ``prod_{l=1}^{L-1} floor(n_l/n_0)^{n_0} * sum_{i<=n_0} C(n_L, i)`` when every
      ``n_l >= n_0`` (Xiong et al. 2020 prints the product from l = 0, whose factor is 1, and ``n_l`` for ``n_L`` in the
      binomial; the paper's statement is the one used here).
    * montufar2017_upper: ``prod_{l=1}^{L} sum_{i<=m_l} C(n_l, i)``, ``m_l = min(n_0, ..., n_{l-1})``.
    * serra2018_upper: see :func:`_serra_upper`; never larger than montufar2017_upper.

    ``budget`` (steps) bounds all the big-integer work (BudgetExceeded past it); None: unbounded.

    Example
    -------
    >>> df = fc_region_bounds([2, 3])  # 3 ReLUs on R^2: 1 + 3 + 3 regions, and every bound agrees
    >>> dict(zip(df.bound, df.value))
    {'one_layer_exact': 7, 'montufar2014_lower': 7, 'montufar2017_upper': 7, 'serra2018_upper': 7}
    """
    w = [_nonneg_int(x, "width") for x in widths]
    if len(w) < 2 or any(x == 0 for x in w):
        raise ShapeError(f"widths must be [n_0, n_1, ..., n_L] with L >= 1 and every width >= 1, got {list(widths)}")
    n0, L = w[0], len(w) - 1
    bud = None if budget is None else as_budget(budget, _HINT)
    rows = []
    one = general_position_regions(w[1], n0, budget=bud) if L == 1 else None
    rows.append(("one_layer_exact", "exact", one, L == 1, "L = 1 (one hidden layer)", "Pascanu, Montufar, Bengio 2013"))
    ok = all(x >= n0 for x in w[1:L])
    if bud is not None:
        bud.ops(sum(n0 * max(1, (x // n0).bit_length()) for x in w[1:L]) // 64, "montufar2014_lower")
    low = math.prod((x // n0) ** n0 for x in w[1:L]) * general_position_regions(w[L], n0, budget=bud)
    rows.append(("montufar2014_lower", "lower", low if ok else None, ok, "n_l >= n_0 for 1 <= l < L",
                 "Montufar, Pascanu, Cho, Bengio 2014"))  # fmt: skip
    up = 1
    for l in range(1, L + 1):
        up *= general_position_regions(w[l], min(w[:l]), budget=bud)
    rows.append(("montufar2017_upper", "upper", up, True, "always", "Montufar 2017"))
    serra = _serra_upper(w, bud)
    rows.append(("serra2018_upper", "upper", serra, True, "always", "Serra, Tjandraatmadja, Ramalingam 2018"))
    df = pd.DataFrame(rows, columns=["bound", "kind", "value", "holds", "condition", "source"])
    df["value"] = pd.Series([r[2] for r in rows], dtype=object)  # exact Python ints, None where not applicable
    return df


def cnn_max_regions(
    input_shape: Sequence[int],
    kernel: int | Sequence[int],
    stride: int,
    filters: int,
    *,
    method: str = "auto",
    budget: int | Budget = 10**7,
    warn_caveat: bool = True,
) -> int:
    """Xiong et al. 2020, Theorem 1 (i): the maximal number of linear regions of a one-layer ReLU CNN, exactly.

    ``input_shape`` is ``(d_0, n_0)`` or ``(d_0, n_0^(1), n_0^(2))``, ``kernel`` ``f`` or ``(f^(1), f^(2))``,
    ``stride`` ``s_1`` (the same in every direction), ``filters`` ``d_1``; no padding. Methods:

    * ``"auto"``: 1D inputs by the interval dynamic programme (O(positions * f*d_0 * d_1)); 2D inputs by a
      depth-first search with an incremental matching (membership in K_N is Hall's condition), and when that
      needs more than 20000 nodes by the profile programme.
    * ``"search"``: the depth-first search, for any shape.
    * ``"profile"``: a dynamic programme over positions whose state is the set of Hall signatures the
      processed positions leave on the pixels they share with the rest (:func:`_profile_dp`).
    * ``"flow"``: every candidate t checked with a max-flow (``scipy.sparse.csgraph.maximum_flow``).
    * ``"literal"``: every candidate t checked against every subset J, exactly as the theorem is printed
      (exponential; for cross-checks on tiny shapes).

    Raises :class:`BudgetExceeded` when the work exceeds ``budget`` steps (a search node, a programme state,
    or ``OPS_PER_STEP`` elementary operations of building receptive fields and matchings), before memory
    or time run out; every method is bounded, whatever the input size.
    For shapes where the published value is provably not attained by any weights (see
    :func:`cnn_formula_caveat`) a :class:`RelugeomWarning` says so (``warn_caveat=False`` silences it); the
    published value is still returned, as published.

    Example
    -------
    >>> cnn_max_regions((1, 5), 2, 1, 2)  # 1 channel of length 5, kernel 2, stride 1, 2 filters: 8 neurons on R^5
    200
    """
    c = _conv(input_shape, kernel, stride, filters)
    if c.filters == 0:
        return 1
    note = cnn_formula_caveat(input_shape, kernel, stride, filters)
    if note and warn_caveat:
        warn(note)
    if method in ("literal", "flow"):
        limit = budget.remaining if isinstance(budget, Budget) else budget
        return (_literal if method == "literal" else _flow_literal)(c, limit)
    bud = as_budget(budget, _HINT)
    if method == "search":
        return _search(c, bud)
    if method == "profile":
        return _profile_dp(c, bud)
    if method != "auto":
        raise ValueError(f"method must be 'auto', 'search', 'profile', 'flow' or 'literal', got {method!r}")
    if len(c.spatial) == 1:
        return _interval_dp(c, bud)
    if c.out_spatial[0] == 1 and c.kernel[0] == c.spatial[0]:  # one row of positions: intervals along W
        return _interval_dp(_Conv(c.channels * c.spatial[0], (c.spatial[1],), (c.kernel[1],), c.stride, c.filters),
                            bud)  # fmt: skip
    if c.out_spatial[1] == 1 and c.kernel[1] == c.spatial[1]:
        return _interval_dp(_Conv(c.channels * c.spatial[1], (c.spatial[0],), (c.kernel[0],), c.stride, c.filters),
                            bud)  # fmt: skip
    try:  # the search is fastest where the constraints have slack; the profile programme where they bind
        return _search(c, bud.sub(20000))
    except BudgetExceeded:
        if bud.remaining == 0:
            raise
        return _profile_dp(c, bud)


def cnn_formula_caveat(
    input_shape: Sequence[int], kernel: int | Sequence[int], stride: int, filters: int
) -> str | None:
    """Why no weights attain the Theorem 1 value for this shape, or None when no such reason is known.

    For a 2D input with one channel, stride 1, a kernel with both sizes >= 2, at least two filters and at
    least ``f1 x f2`` output positions, convolution commutes: ``w_k * w_l = w_l * w_k``. Read as a linear
    relation among the hyperplane normals of filter k at the ``f1 x f2`` shifts of ``w_l``'s support and of
    filter l at the shifts of ``w_k``'s, it makes those ``2 f1 f2`` normals dependent for *every* weight, while
    K_N counts them as independent (Hall's condition holds for them). The theorem's value is then strictly
    larger than the number of regions of any weights. Proof and counts in docs/regions.md.
    """
    c = _conv(input_shape, kernel, stride, filters)
    if len(c.spatial) != 2 or c.channels != 1 or c.stride != 1 or c.filters < 2:
        return None
    if min(c.kernel) < 2 or any(o < f for o, f in zip(c.out_spatial, c.kernel)):
        return None
    f1, f2 = c.kernel
    return (f"Xiong et al. 2020, Theorem 1 over-counts for input {tuple(input_shape)}, kernel {c.kernel}, stride 1, "
            f"{filters} filters: with one input channel the {2 * f1 * f2} normals of two filters at "
            f"{f1}x{f2} neighbouring positions are linearly dependent for every weight (w_k * w_l = w_l * w_k), "
            "so no weights reach the published value; relugeom.layer_regions on random weights gives the count "
            "of almost every weight (docs/regions.md)")


@dataclass(frozen=True)
class Theorem1Bounds:
    """Certified bounds ``lower <= R_N <= upper`` on Theorem 1's value (exact integers); ``exact`` when equal."""

    lower: int
    upper: int

    @property
    def exact(self) -> bool:
        return self.lower == self.upper

    @property
    def log10_lower(self) -> float:
        return math.log10(self.lower)

    @property
    def log10_upper(self) -> float:
        return math.log10(self.upper)


def cnn_max_regions_bounds(
    input_shape: Sequence[int], kernel: int | Sequence[int], stride: int, filters: int
) -> Theorem1Bounds:
    """Certified lower and upper bounds on Xiong et al. 2020, Theorem 1 (i), for shapes whose exact value is out
    of reach (e.g. a (3, 32, 32) input, kernel 3, 64 filters: ``10^4800 <= R_N <= 10^5250`` in about a second).

    Both come from relaxing Hall's condition (membership in K_N) along lines of output positions:

    * upper: keep only the constraints whose positions J lie in one row (or one column) of positions; each line is
      then an independent 1D instance of Theorem 1 with ``d_0 f`` channels, so ``R_N <= R_1D^{rows}``; and
      ``R_N <= sum_{j <= D} C(N, j)`` since every t in K_N has at most D = #U S units (J = I).
    * lower: give each row of positions private input rows (its first ``s`` rows, the last row all ``f`` of its
      own); matchings of the rows then form one matching of the layer, so ``R_N >= prod_rows R_1D(private)``.

    The 1D instances are exact (the interval programme). 1D inputs return the exact value twice.

    >>> b = cnn_max_regions_bounds((1, 3, 3), 2, 1, 2)
    >>> b.lower <= 256 <= b.upper
    True
    """
    c = _conv(input_shape, kernel, stride, filters)
    if c.filters == 0:
        return Theorem1Bounds(1, 1)
    lo, up = _theorem1_bounds(c)
    return Theorem1Bounds(lo, up)


def _theorem1_or_bound(input_shape, kernel, stride, filters, *, budget: int | Budget, side: str) -> tuple[int, bool]:  # noqa: ANN001
    """Theorem 1's exact value, or (past ``budget``) its certified ``side`` bound; and whether it is exact."""
    try:
        return cnn_max_regions(input_shape, kernel, stride, filters, budget=budget, warn_caveat=False), True
    except BudgetExceeded:
        b = cnn_max_regions_bounds(input_shape, kernel, stride, filters)
        return (b.lower if side == "lower" else b.upper), b.exact


def attained_regions(input_shape, kernel, stride, filters, *, budget: int = 10**6) -> tuple[int, str]:  # noqa: ANN001
    """A number of regions that weights of the one-layer CNN provably attain, and how it was obtained: the exact
    count of Gaussian weights where the input has at most 64 values and the count fits ``budget``, else the
    delta-filter count (a product of 1D arrangements, :func:`relugeom.regions.theorem1._delta_regions`)."""
    from .attained import gaussian_layer_count

    c = _conv(input_shape, kernel, stride, filters)
    if c.filters == 0:
        return 1, "no filters"
    delta = _delta_regions(c)
    if c.channels * math.prod(c.spatial) <= 64:
        try:
            n = gaussian_layer_count(input_shape, kernel, stride, filters, seed=0, budget=budget)
            if n >= delta:
                return n, "exact count of Gaussian weights"
        except BudgetExceeded:
            pass
    return delta, "regions of delta filters, a certified lower bound"


def cnn_regions_asymptotics(
    input_shape: Sequence[int], kernel: int | Sequence[int], stride: int, *, budget: int = 10**6
) -> tuple[int, Fraction | None]:
    """Xiong et al. 2020, the asymptotic analysis after Theorem 1: ``R_N = Theta(d_1^{#U S})`` as the number of
    filters d_1 grows, the other sizes fixed. Returns ``(exponent, leading_coefficient)``: the exponent ``#U S``
    (input neurons inside some receptive field) and the exact constant c with ``R_N ~ c d_1^{#U S}``.

    ``R_N(d_1) = sum_{t in K_N} prod_i C(d_1, t_i)`` is a polynomial in d_1 (K_N does not depend on d_1 once
    ``C(d_1, t) = 0`` for t > d_1 is read as the polynomial ``d_1 (d_1 - 1) ... / t!``) of degree D = #U S, with
    leading coefficient ``sum_{t in K_N, |t| = D} prod_i 1/t_i!``; it is computed as the D-th finite difference
    ``Delta^D R_N(0) / D!`` of the exact values at d_1 = 0..D, or None where one of them exceeds ``budget``.

    >>> cnn_regions_asymptotics((1, 3), 2, 1)  # fields {0,1}, {1,2}: t in {(1,2), (2,1)}: 1/2 + 1/2
    (3, Fraction(1, 1))
    """
    c = _conv(input_shape, kernel, stride, 1)
    D = c.channels * math.prod(_covered(n, f, c.stride) for n, f in zip(c.spatial, c.kernel))
    try:
        vals = [cnn_max_regions(input_shape, kernel, stride, d, budget=budget, warn_caveat=False) for d in range(D + 1)]
    except BudgetExceeded:
        return D, None
    diff = sum((-1) ** (D - k) * math.comb(D, k) * v for k, v in enumerate(vals))
    return D, Fraction(diff, math.factorial(D))


def hanin_rolnick_bound(n_neurons: int, n_in: int, T: float = 1.0) -> float:
    """Hanin and Rolnick (2019, "Deep ReLU networks have surprisingly few activation patterns", Theorem 1 as quoted
    by Daroczy 2020): the expected number of activation regions per unit volume of an ``n_in``-dimensional input
    is at most ``(T #neurons)^{n_in} / n_in!`` when ``#neurons >= n_in`` and ``2^{#neurons}`` otherwise.

    T > 0 depends on the constants C_grad (moments of the neurons' input gradients) and C_bias (density of the
    biases) of the weight distribution and is not given a numerical value in the statement; with T = 1 (the
    default) the value is the authors' reference curve, ``(#neurons)^{n_in} / n_in!``, the expected count of a
    depth-1 network, against which their figures compare measured counts.

    >>> hanin_rolnick_bound(100, 2)
    5000.0
    """
    n, d = _nonneg_int(n_neurons, "n_neurons"), _nonneg_int(n_in, "n_in")
    if not T > 0:
        raise ValueError(f"T must be positive, got {T}")
    if n < d:
        return float(2**n)
    try:
        return (T * n) ** d / math.factorial(d)
    except OverflowError:
        return math.inf


# ------------------------------------------------------------------------------------- CNN: Theorems 2 and 3
@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of Xiong et al. 2020's deep CNN: ``kernel`` (f or (f1, f2)), ``stride`` s_l, ``filters`` d_l."""

    kernel: int | tuple[int, ...]
    stride: int
    filters: int


def _specs(layers: Sequence[ConvSpec | tuple]) -> list[ConvSpec]:
    out = []
    for x in layers:
        if isinstance(x, ConvSpec):
            out.append(x)
        elif isinstance(x, dict):
            out.append(ConvSpec(**x))
        else:
            try:
                out.append(ConvSpec(*x))
            except TypeError:
                raise ShapeError(f"a layer must be (kernel, stride, filters), got {x!r}") from None
    if not out:
        raise ShapeError("layers is empty: give at least one (kernel, stride, filters)")
    return out


def cnn_region_bounds(
    layers: Sequence[ConvSpec | tuple], input_shape: Sequence[int], *, budget: int | Budget = 10**7
) -> pd.DataFrame:
    """Xiong et al. 2020 Theorem 2 bounds for a deep ReLU CNN and Theorem 3's per-parameter comparisons.

    ``layers`` = [(kernel, stride, filters), ...] (no padding), ``input_shape`` = (d_0, n_0[, n_0']).
    Rows (``quantity``, ``kind``, ``value`` exact int or None, ``parameters``, ``log10_value``,
    ``log10_per_parameter``, ``holds``, ``condition``):

    * theorem2_lower: ``R_N' * prod_{l=1}^{L-1} floor(d_l/d_0)^{n_l d_0}`` (n_l = number of positions of layer l),
      N' the one-layer CNN on a (d_0, n_{L-1}) input with d_L filters of size f_L x d_0 and stride s_L.
      Requires d_l >= d_0 for every l. Where Theorem 1 over-counts R_N' (:func:`cnn_formula_caveat`), R_N' is
      replaced by a number of regions that weights provably attain: the exact count of Gaussian weights
      (:func:`relugeom.regions.attained.attained_regions`), or where that is out of reach the delta-filter count;
      the ``condition`` column says which. The proof of Theorem 2 builds the deep net on weights of N' with
      R_N' regions; any weights of N' and their count serve as well. Where Theorem 1's exact value is out of
      reach, its certified lower bound (:func:`cnn_max_regions_bounds`) is used, and the condition says so.
    * theorem2_lower_as_published: the same product on Theorem 1's R_N'; ``holds`` is False where Theorem 1
      over-counts R_N' (the bound is then not established).
    * theorem2_upper: ``R_N'' * prod_{l=2}^{L} sum_{i=0}^{n_0 d_0} C(n_l d_l, i)``, N'' the first layer alone
      (Theorem 1's value, never below the count of any weights; its certified upper bound where out of reach).
      The seed's text extraction prints ``n_0 d_0`` as a factor in front of ``sum_{i=0}^{n_l d_l}``; that
      reading, ``R_N'' * prod_l n_0 d_0 2^{n_l d_l}``, is also given (theorem2_upper_as_printed); it is never
      smaller, so both are upper bounds.
    * one_layer_cnn: Theorem 3's N_2, one layer with the first kernel and stride and as many filters as give
      the same number of parameters, its exact R (Theorem 1).
    * fully_connected_upper: an L-layer fully connected net with the same input, depth and (about) the same
      number of parameters (equal widths), Serra et al. 2018 upper bound.

    ``budget`` (steps) bounds all of it together: the Theorem 1 counts, the binomial sums and the powers.

    Example
    -------
    >>> df = cnn_region_bounds([(2, 1, 2), (2, 1, 2)], (1, 6))
    >>> df.set_index("quantity").loc[["theorem2_lower", "theorem2_upper"], "value"].tolist()
    [6400, 179075]
    """
    bud = as_budget(budget, _HINT)
    specs = _specs(layers)
    c0 = _conv(input_shape, specs[0].kernel, specs[0].stride, specs[0].filters)
    d0 = c0.channels
    D0 = d0 * math.prod(c0.spatial)
    convs = [c0]
    for sp in specs[1:]:
        prev = convs[-1]
        convs.append(_conv((prev.filters, *prev.out_spatial), sp.kernel, sp.stride, sp.filters))
    L = len(convs)
    npos = [math.prod(c.out_spatial) for c in convs]
    params = sum(c.filters * c.channels * math.prod(c.kernel) + c.filters for c in convs)
    cond_ok = all(c.filters >= d0 for c in convs)
    last = convs[-1]
    prev_spatial = convs[-2].out_spatial if L > 1 else c0.spatial
    n_prime = ((d0, *prev_spatial), last.kernel, last.stride, last.filters)
    bud.ops(sum(npos[l] * d0 * max(1, (convs[l].filters // d0).bit_length()) for l in range(L - 1)) // 16,
            "theorem2_lower")  # fmt: skip
    factor = math.prod((convs[l].filters // d0) ** (npos[l] * d0) for l in range(L - 1))
    r_prime, prime_exact = _theorem1_or_bound(*n_prime, budget=bud.sub(bud.remaining // 3), side="lower")
    published = r_prime * factor
    over = cnn_formula_caveat(*n_prime)
    if over:  # Theorem 1 over-counts R_N': build the bound on a count that some weights attain
        real, how = attained_regions(*n_prime, budget=max(1, bud.remaining // 3))
        lower = real * factor
        lower_cond = (f"d_l >= d_0 for every layer; R_N' = {real} ({how}) instead of Theorem 1's {r_prime}, which no "
                      "weights attain for N' (docs/regions.md)")  # fmt: skip
    else:
        lower = published
        lower_cond = "d_l >= d_0 for every layer"
        if not prime_exact:
            lower_cond += "; R_N' replaced by a certified lower bound of Theorem 1's value"
    r2, _ = _theorem1_or_bound(input_shape, c0.kernel, c0.stride, c0.filters, budget=bud.sub(bud.remaining // 2),
                               side="upper")  # fmt: skip
    upper = r2 * math.prod(general_position_regions(npos[l] * convs[l].filters, D0, budget=bud) for l in range(1, L))
    bud.ops(sum(npos[l] * convs[l].filters for l in range(1, L)) // 16, "theorem2_upper_as_printed")
    printed = r2 * math.prod(D0 * 2 ** (npos[l] * convs[l].filters) for l in range(1, L))
    per_filter = d0 * math.prod(c0.kernel) + 1
    d_one = max(1, params // per_filter)
    try:
        r_one = cnn_max_regions(input_shape, c0.kernel, c0.stride, d_one, budget=bud.sub(bud.remaining // 2))
    except BudgetExceeded:
        r_one = None
    # fully connected: L hidden layers of equal width w with D0*w + (L-1)*w^2 + L*w ~ params
    w = 1
    while D0 * (w + 1) + (L - 1) * (w + 1) ** 2 + L * (w + 1) <= params:
        w += 1
    fc_params = D0 * w + (L - 1) * w * w + L * w
    fc = _serra_upper([D0] + [w] * L, bud)

    def row(q, kind, v, p, holds, cond):  # noqa: ANN001, ANN202
        lg = math.log10(v) if v else None
        return (q, kind, v, p, lg, (lg - math.log10(p)) if lg is not None else None, holds, cond)

    rows = [
        row("theorem2_lower", "lower", lower if cond_ok else None, params, cond_ok, lower_cond),
        row("theorem2_lower_as_published", "lower", published if cond_ok else None, params, cond_ok and not over,
            "not established: Theorem 1 over-counts R_N' for N'" if over else lower_cond),
        row("theorem2_upper", "upper", upper, params, True, "always"),
        row("theorem2_upper_as_printed", "upper", printed, params, True, "always (weaker)"),
        row("one_layer_cnn", "exact", r_one, d_one * per_filter, r_one is not None,
            f"one layer, {d_one} filters (Theorem 3's N_2)"),
        row("fully_connected_upper", "upper", fc, fc_params, True, f"{L} layers of width {w} (Serra et al. 2018)"),
    ]  # fmt: skip
    df = pd.DataFrame(rows, columns=["quantity", "kind", "value", "parameters", "log10_value",
                                     "log10_per_parameter", "holds", "condition"])  # fmt: skip
    df["value"] = pd.Series([r[2] for r in rows], dtype=object)
    return df


def theorem3_rates(
    input_shape: Sequence[int], kernel: int | Sequence[int], stride: int, depth: int, widths: Sequence[int],
    *, budget: int = 10**5,
) -> pd.DataFrame:
    """Xiong et al. 2020, Theorem 3: regions per parameter of a deep CNN N_1 (``depth`` = L layers of d filters,
    the same ``kernel`` and ``stride``) and of a one-layer CNN N_2 with L d^2 filters, for each d in ``widths``.

    The theorem's two rates, as exact log10 (the Theta/Omega/O hide constants, so compare growth, not values):

    * ``deep_rate``: ``(1/L) floor(d/d_0)^{d_0 sum_{l=1}^{L-1} n_l - 2}`` (n_l = positions of layer l), the Omega
      rate of ``R_{N_1} / #parameters``; next to it ``deep_lower_per_parameter``, the certified Theorem 2 lower
      bound of :func:`cnn_region_bounds` over N_1's parameter count.
    * ``shallow_rate``: ``(L d^2)^{d_0 n_0 - 1}``, the O rate of ``R_{N_2} / #parameters``; next to it
      ``shallow_per_parameter``, Theorem 1's value for N_2 (exact, or its certified upper bound past ``budget``)
      over N_2's parameter count.
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ShapeError(f"depth must be a positive integer, got {depth!r}")
    rows = []
    for d in widths:
        d = _nonneg_int(d, "width")
        if d == 0:
            raise ShapeError("widths must be positive")
        bounds = cnn_region_bounds([(kernel, stride, d)] * depth, input_shape, budget=budget).set_index("quantity")
        c0 = _conv(input_shape, kernel, stride, d)
        d0, n0 = c0.channels, math.prod(c0.spatial)
        convs = [c0]
        for _ in range(depth - 1):
            convs.append(_conv((d, *convs[-1].out_spatial), kernel, stride, d))
        exponent = d0 * sum(math.prod(c.out_spatial) for c in convs[:-1]) - 2
        deep_rate = exponent * math.log10(d // d0) - math.log10(depth) if d >= d0 else None
        lower = bounds.loc["theorem2_lower", "value"]
        p1 = int(bounds.loc["theorem2_lower", "parameters"])
        wide = depth * d * d
        r2, exact2 = _theorem1_or_bound(input_shape, kernel, stride, wide, budget=budget, side="upper")
        p2 = wide * (d0 * math.prod(c0.kernel) + 1)
        rows.append({
            "width": d, "depth": depth, "deep_parameters": p1,
            "deep_rate_log10": deep_rate,
            "deep_lower_per_parameter_log10": math.log10(lower) - math.log10(p1) if lower else None,
            "shallow_filters": wide, "shallow_parameters": p2,
            "shallow_rate_log10": (d0 * n0 - 1) * math.log10(wide),
            "shallow_per_parameter_log10": math.log10(r2) - math.log10(p2),
            "shallow_exact": exact2,
        })  # fmt: skip
    return pd.DataFrame(rows)
