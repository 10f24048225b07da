"""Published counts and bounds on the number of linear regions, as exact Python integers (seed 003).

* :func:`general_position_regions` -- Zaslavsky (1975): ``n`` affine hyperplanes in general position in
  R^d cut it into ``sum_{i=0}^{d} C(n, i)`` regions.
* :func:`fc_region_bounds` -- fully connected ReLU nets with widths ``n_0, ..., n_L``: Pascanu, Montufar and
  Bengio (2013, one layer, exact), Montufar et al. (2014, lower), Montufar (2017, upper), Serra,
  Tjandraatmadja and Ramalingam (2018, upper).
* :func:`cnn_max_regions` -- seed 003, Theorem 1 (i): the maximal number of regions of a one-layer ReLU CNN,

      R_N = sum_{t in K_N} prod_i C(d_1, t_i),
      K_N = {t in N^I : sum_{i in J} t_i <= #U_{i in J} S_i  for all J subset of I}.

  ``K_N`` is the set of demand vectors that can be served by a *matching*: by Hall's theorem (position i
  replicated t_i times) the coverage constraints hold for every J exactly when each position i can be given
  t_i distinct input neurons of its receptive field S_i. Membership is therefore a max-flow question, and for
  1D inputs, whose receptive fields are intervals with increasing ends, a greedy (leftmost free neuron first)
  decides it, so the sum becomes a dynamic programme over the greedy's pointer.
* :func:`cnn_region_bounds` -- seed 003, Theorem 2 (lower and upper bounds for deep CNNs) and the
  per-parameter comparisons of Theorem 3.

Shapes follow PyTorch: a 1D input is ``(C, L)`` and a 2D input ``(C, H, W)``; seed 003's
``n^(1) x n^(2) x d_0`` input is ``(d_0, n^(1), n^(2))``. Convolutions are unpadded ("valid"), as in the paper.
Everything here is exact integer arithmetic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import BudgetExceeded, ShapeError, warn

__all__ = [
    "ConvSpec",
    "cnn_max_regions",
    "cnn_region_bounds",
    "fc_region_bounds",
    "general_position_regions",
    "cnn_formula_caveat",
]


def _nonneg_int(x: object, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0:
        raise ShapeError(f"{name} must be a non-negative integer, got {x!r}")
    return int(x)


def general_position_regions(n: int, d: int) -> int:
    """Regions of ``n`` affine hyperplanes in general position in R^d: ``sum_{i<=d} C(n, i)`` (Zaslavsky 1975)."""
    n, d = _nonneg_int(n, "n"), _nonneg_int(d, "d")
    return sum(math.comb(n, i) for i in range(min(n, d) + 1))


# ----------------------------------------------------------------------------------------- fully connected
def _serra_upper(widths: Sequence[int]) -> int:
    """Serra et al. (2018), Theorem 1: sum over J of prod_l C(n_l, j_l), with
    J = {j : 0 <= j_l <= min(n_0, n_1 - j_1, ..., n_{l-1} - j_{l-1}, n_l)}. Computed by a dynamic programme
    over the running minimum m = min(n_0, n_1 - j_1, ..., n_{l-1} - j_{l-1})."""
    states = {widths[0]: 1}
    for n_l in widths[1:]:
        nxt: dict[int, int] = {}
        for m, w in states.items():
            for j in range(min(m, n_l) + 1):
                key = min(m, n_l - j)
                nxt[key] = nxt.get(key, 0) + w * math.comb(n_l, j)
        states = nxt
    return sum(states.values())


def fc_region_bounds(widths: Sequence[int]) -> pd.DataFrame:
    """The published counts for a fully connected ReLU net with ``widths = [n_0, n_1, ..., n_L]``.

    One row per result: ``bound`` (name), ``kind`` (exact/lower/upper), ``value`` (Python int, or None where
    the result does not apply), ``holds`` (whether its conditions are met), ``condition`` and ``source``.

    * one_layer_exact: ``sum_{i<=n_0} C(n_1, i)`` when L = 1 (Pascanu, Montufar, Bengio 2013; seed 003).
    * montufar2014_lower: ``prod_{l=1}^{L-1} floor(n_l/n_0)^{n_0} * sum_{i<=n_0} C(n_L, i)`` when every
      ``n_l >= n_0`` (seed 003 prints the product from l = 0, whose factor is 1, and ``n_l`` for ``n_L`` in the
      binomial; the paper's statement is the one used here).
    * montufar2017_upper: ``prod_{l=1}^{L} sum_{i<=m_l} C(n_l, i)``, ``m_l = min(n_0, ..., n_{l-1})``.
    * serra2018_upper: see :func:`_serra_upper`; never larger than montufar2017_upper.
    """
    w = [_nonneg_int(x, "width") for x in widths]
    if len(w) < 2 or any(x == 0 for x in w):
        raise ShapeError(f"widths must be [n_0, n_1, ..., n_L] with L >= 1 and every width >= 1, got {list(widths)}")
    n0, L = w[0], len(w) - 1
    rows = []
    one = general_position_regions(w[1], n0) if L == 1 else None
    rows.append(("one_layer_exact", "exact", one, L == 1, "L = 1 (one hidden layer)", "Pascanu, Montufar, Bengio 2013"))
    ok = all(x >= n0 for x in w[1:L])
    low = math.prod((x // n0) ** n0 for x in w[1:L]) * general_position_regions(w[L], n0)
    rows.append(("montufar2014_lower", "lower", low if ok else None, ok, "n_l >= n_0 for 1 <= l < L",
                 "Montufar, Pascanu, Cho, Bengio 2014"))  # fmt: skip
    up = 1
    for l in range(1, L + 1):
        up *= general_position_regions(w[l], min(w[:l]))
    rows.append(("montufar2017_upper", "upper", up, True, "always", "Montufar 2017"))
    rows.append(("serra2018_upper", "upper", _serra_upper(w), True, "always", "Serra, Tjandraatmadja, Ramalingam 2018"))
    df = pd.DataFrame(rows, columns=["bound", "kind", "value", "holds", "condition", "source"])
    df["value"] = pd.Series([r[2] for r in rows], dtype=object)  # exact Python ints, None where not applicable
    return df


# ----------------------------------------------------------------------------------------------- CNN: shapes
def _as_tuple(x: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    t = (x,) * n if isinstance(x, (int, np.integer)) and not isinstance(x, bool) else tuple(x)  # type: ignore[arg-type]
    if len(t) != n or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in t):
        raise ShapeError(f"{name} must be a positive integer or {n} positive integers, got {x!r}")
    return tuple(int(v) for v in t)


@dataclass(frozen=True)
class _Conv:
    channels: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int
    filters: int

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return tuple((n - f) // self.stride + 1 for n, f in zip(self.spatial, self.kernel))

    def fields(self) -> list[list[int]]:
        """S_i as lists of flat spatial indices (each spatial index stands for ``channels`` input neurons)."""
        out = self.out_spatial
        grids = [range(o) for o in out]
        res = []
        for pos in itertools.product(*grids):
            ranges = [range(p * self.stride, p * self.stride + f) for p, f in zip(pos, self.kernel)]
            res.append([int(np.ravel_multi_index(c, self.spatial)) for c in itertools.product(*ranges)])
        return res


def _conv(input_shape: Sequence[int], kernel, stride, filters) -> _Conv:  # noqa: ANN001
    shape = tuple(input_shape)
    if len(shape) not in (2, 3) or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1
                                       for s in shape):  # fmt: skip
        raise ShapeError(f"input_shape must be (C, L) or (C, H, W) with positive sizes, got {input_shape!r}")
    nd = len(shape) - 1
    k = _as_tuple(kernel, nd, "kernel")
    s = _as_tuple(stride, 1, "stride")[0]
    d1 = _nonneg_int(filters, "filters")
    if any(f > n for f, n in zip(k, shape[1:])):
        raise ShapeError(f"kernel {k} is larger than the input {tuple(shape[1:])}")
    return _Conv(int(shape[0]), tuple(int(v) for v in shape[1:]), k, s, d1)


# ------------------------------------------------------------------------------------------- CNN: Theorem 1
def _literal(c: _Conv, budget: int) -> int:
    """Theorem 1 (i) term by term: every t with 0 <= t_i <= min(d_1, |S_i|) (larger t_i have C(d_1, t_i) = 0
    or violate J = {i}), checked against every subset J of I."""
    fields = c.fields()
    m = len(fields)
    tmax = min(c.filters, len(fields[0]) * c.channels)
    n_cand = (tmax + 1) ** m
    if n_cand * (2**m) > budget:
        raise BudgetExceeded(
            f"literal enumeration of K_N needs {n_cand} candidates x {2**m} subsets J > budget {budget}; "
            "use method='auto'", partial=None)  # fmt: skip
    subsets = np.array(list(itertools.product((0, 1), repeat=m)), dtype=np.int64)  # (2^m, m)
    union = np.array([c.channels * len(set().union(*[fields[i] for i in range(m) if J[i]])) for J in subsets])
    binom = [math.comb(c.filters, t) for t in range(tmax + 1)]
    total = 0
    for t in itertools.product(range(tmax + 1), repeat=m):
        if np.all(subsets @ np.array(t, dtype=np.int64) <= union):
            total += math.prod(binom[x] for x in t)
    return total


class _BMatching:
    """Positions demand units; input pixels supply ``cap`` units; position i may use pixel q iff q in S_i.
    ``add(i)`` serves one more unit of i by an augmenting path (Ford-Fulkerson on the bipartite network)."""

    def __init__(self, fields: list[list[int]], n_pix: int, cap: int) -> None:
        self.fields, self.cap = fields, cap
        self.load = [0] * n_pix
        self.users: list[dict[int, int]] = [dict() for _ in range(n_pix)]  # pixel -> {position: units}

    def copy(self) -> _BMatching:
        new = _BMatching.__new__(_BMatching)
        new.fields, new.cap = self.fields, self.cap
        new.load = self.load[:]
        new.users = [dict(u) for u in self.users]
        return new

    def add(self, i: int) -> bool:
        for q in self.fields[i]:
            if self.load[q] < self.cap:
                self._give(i, q)
                return True
        # BFS over pixels: from pixel q (full), a user j of q may move one unit to another pixel of S_j.
        parent: dict[int, tuple[int, int] | None] = {q: None for q in self.fields[i]}
        frontier = list(self.fields[i])
        while frontier:
            nxt = []
            for q in frontier:
                for j in self.users[q]:
                    for q2 in self.fields[j]:
                        if q2 in parent:
                            continue
                        parent[q2] = (j, q)
                        if self.load[q2] < self.cap:
                            node = q2
                            while parent[node] is not None:
                                j_, q_ = parent[node]  # type: ignore[misc]
                                self._give(j_, node)
                                self._take(j_, q_)
                                node = q_
                            self._give(i, node)
                            return True
                        nxt.append(q2)
            frontier = nxt
        return False

    def _give(self, i: int, q: int) -> None:
        self.load[q] += 1
        self.users[q][i] = self.users[q].get(i, 0) + 1

    def _take(self, i: int, q: int) -> None:
        self.load[q] -= 1
        if self.users[q][i] == 1:
            del self.users[q][i]
        else:
            self.users[q][i] -= 1


def _interval_dp(c: _Conv) -> int:
    """1D (or any single line of positions with interval fields): the greedy that gives each position the
    leftmost free input neurons of its field serves t iff t is in K_N; sum over the greedy's pointer."""
    C, f, s, d1 = c.channels, c.kernel[0], c.stride, c.filters
    binom = [math.comb(d1, t) for t in range(d1 + 1)]
    states = {0: 1}  # pointer (first free input neuron) -> summed weight
    for i in range(c.out_spatial[0]):
        lo, hi = i * s * C, (i * s + f) * C
        nxt: dict[int, int] = {}
        for p, w in states.items():
            p = max(p, lo)
            for t in range(min(d1, hi - p) + 1):
                nxt[p + t] = nxt.get(p + t, 0) + w * binom[t]
        states = nxt
    return sum(states.values())


def _search(c: _Conv, budget: int, check_all: bool = False) -> int:
    """Depth-first search over t position by position with an incremental b-matching. A prefix that cannot
    be served prunes its subtree (K_N is closed downwards); a prefix whose remaining positions can all be
    served at their maximum closes its subtree with a product of binomial sums. ``check_all`` turns the
    shortcut off and checks every candidate (the "flow" baseline)."""
    fields = c.fields()
    m = len(fields)
    n_pix = math.prod(c.spatial)
    tmax = min(c.filters, len(fields[0]) * c.channels)
    binom = [math.comb(c.filters, t) for t in range(tmax + 1)]
    full = sum(binom)
    nodes = 0

    def rec(k: int, mt: _BMatching) -> int:
        nonlocal nodes
        nodes += 1
        if nodes > budget:
            raise BudgetExceeded(f"cnn_max_regions: search visited more than {budget} nodes; "
                                 "raise budget= (CLI: --budget)", partial=None)  # fmt: skip
        if k == m:
            return 1
        if not check_all:
            probe = mt.copy()
            if all(probe.add(i) for i in range(k, m) for _ in range(tmax)):
                return full ** (m - k)
        total = rec(k + 1, mt)
        cur = mt.copy()
        for t in range(1, tmax + 1):
            if not cur.add(k):
                break
            total += binom[t] * rec(k + 1, cur.copy())
        return total

    return rec(0, _BMatching(fields, n_pix, c.channels))


def _profile_dp(c: _Conv, budget: int) -> int:
    """Hall's condition as a dynamic programme over positions in raster order (any 1D or 2D shape).

    For a prefix P of positions and the pixels F that P shares with the positions still to come, every
    J subset of P leaves a *signature* (A, c): A = N(J) & F and c = d_0 |N(J) - F| - t(J) (its private capacity
    minus its demand). Hall's condition for J u J_f (J_f among the future positions) reads
    t(J_f) <= d_0 |N(J_f) - F| + c + d_0 |A u N(J_f) & F|, so the set of signatures is all the future needs
    to know. Adding position p with demand t maps (A, c) to (A | N(p), c - t) (p's field never meets the
    private pixels of P) and checks Hall for the new sets; pixels no future position can reach then move from
    A into the private part. Signatures with c >= 0 are implied by J = {} and dropped, as is (A, c) when some
    (A', c') has c' + d_0 |A' - A| <= c. States with equal signature sets are merged, weights summed.
    """
    C = c.channels
    fields = c.fields()
    m = len(fields)
    masks = [sum(1 << q for q in f) for f in fields]
    suffix = [0] * (m + 1)
    for k in range(m - 1, -1, -1):
        suffix[k] = suffix[k + 1] | masks[k]
    tmax = min(c.filters, len(fields[0]) * C)
    binom = [math.comb(c.filters, t) for t in range(tmax + 1)]
    states: dict[frozenset, int] = {frozenset(): 1}
    work = 0
    for k in range(m):
        fk, keep = masks[k], suffix[k + 1]
        nxt: dict[frozenset, int] = {}
        for key, w in states.items():
            base = list(key) + [(0, 0)]
            for t in range(tmax + 1):
                ext = [(A | fk, cc - t) for A, cc in base]
                if any(cc + C * (A.bit_count()) < 0 for A, cc in ext):
                    break  # Hall fails for some J u {p}; larger t fails too
                sigs: dict[int, int] = {}
                for A, cc in list(key) + ext:
                    gone = A & ~keep
                    A2, c2 = A & keep, cc + C * gone.bit_count()
                    if c2 < 0 and sigs.get(A2, 1) > c2:
                        sigs[A2] = c2
                items = sorted(sigs.items(), key=lambda x: x[1])
                kept: list[tuple[int, int]] = []
                for A, cc in items:
                    if not any(c1 + C * (A1 & ~A).bit_count() <= cc for A1, c1 in kept):
                        kept.append((A, cc))
                nk = frozenset(kept)
                nxt[nk] = nxt.get(nk, 0) + w * binom[t]
                work += 1
                if work > budget:
                    raise BudgetExceeded(f"cnn_max_regions: profile programme exceeded {budget} steps "
                                         f"({len(nxt)} states at position {k} of {m}); raise budget= (CLI: --budget)",
                                         partial=None)  # fmt: skip
        states = nxt
    return sum(states.values())


def _flow_literal(c: _Conv, budget: int) -> int:
    """Every candidate t checked with scipy's maximum_flow (the obvious search; a baseline for benchmarks)."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_flow

    fields = c.fields()
    m = len(fields)
    n_pix = math.prod(c.spatial)
    tmax = min(c.filters, len(fields[0]) * c.channels)
    if (tmax + 1) ** m > budget:
        raise BudgetExceeded(f"flow search: {(tmax + 1) ** m} candidates > budget {budget}", partial=None)
    binom = [math.comb(c.filters, t) for t in range(tmax + 1)]
    src, sink = 0, 1 + m + n_pix
    rows, cols, caps = [], [], []
    for i, f in enumerate(fields):
        for q in f:
            rows.append(1 + i)
            cols.append(1 + m + q)
            caps.append(c.channels)
    for q in range(n_pix):
        rows.append(1 + m + q)
        cols.append(sink)
        caps.append(c.channels)
    base_r, base_c, base_v = rows, cols, caps
    total = 0
    for t in itertools.product(range(tmax + 1), repeat=m):
        r = base_r + [src] * m
        cc = base_c + list(range(1, m + 1))
        v = base_v + list(t)
        g = csr_array((np.array(v, dtype=np.int32), (np.array(r), np.array(cc))), shape=(sink + 1, sink + 1))
        if maximum_flow(g, src, sink).flow_value == sum(t):
            total += math.prod(binom[x] for x in t)
    return total


def cnn_max_regions(
    input_shape: Sequence[int],
    kernel: int | Sequence[int],
    stride: int,
    filters: int,
    *,
    method: str = "auto",
    budget: int = 10**7,
    warn_caveat: bool = True,
) -> int:
    """Seed 003, Theorem 1 (i): the maximal number of linear regions of a one-layer ReLU CNN, exactly.

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

    Raises :class:`BudgetExceeded` when the literal/flow enumeration or the search exceeds ``budget`` steps.
    For shapes where the published value is provably not attained by any weights (see
    :func:`cnn_formula_caveat`) a :class:`RelugeomWarning` says so (``warn_caveat=False`` silences it); the
    published value is still returned, as published.
    """
    c = _conv(input_shape, kernel, stride, filters)
    if c.filters == 0:
        return 1
    note = cnn_formula_caveat(input_shape, kernel, stride, filters)
    if note and warn_caveat:
        warn(note)
    if method == "literal":
        return _literal(c, budget)
    if method == "flow":
        return _flow_literal(c, budget)
    if method == "search":
        return _search(c, budget)
    if method == "profile":
        return _profile_dp(c, budget)
    if method != "auto":
        raise ValueError(f"method must be 'auto', 'search', 'profile', 'flow' or 'literal', got {method!r}")
    if len(c.spatial) == 1:
        return _interval_dp(c)
    if c.out_spatial[0] == 1 and c.kernel[0] == c.spatial[0]:  # one row of positions: intervals along W
        return _interval_dp(_Conv(c.channels * c.spatial[0], (c.spatial[1],), (c.kernel[1],), c.stride, c.filters))
    if c.out_spatial[1] == 1 and c.kernel[1] == c.spatial[1]:
        return _interval_dp(_Conv(c.channels * c.spatial[1], (c.spatial[0],), (c.kernel[0],), c.stride, c.filters))
    try:  # the search is fastest where the constraints have slack; the profile programme where they bind
        return _search(c, min(budget, 20000))
    except BudgetExceeded:
        return _profile_dp(c, budget)


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
    return (f"seed 003 Theorem 1 over-counts for input {tuple(input_shape)}, kernel {c.kernel}, stride 1, "
            f"{filters} filters: with one input channel the {2 * f1 * f2} normals of two filters at "
            f"{f1}x{f2} neighbouring positions are linearly dependent for every weight (w_k * w_l = w_l * w_k), "
            "so no weights reach the published value; relugeom.layer_regions on random weights gives the count "
            "of almost every weight (docs/regions.md)")


# ------------------------------------------------------------------------------------- CNN: Theorems 2 and 3
@dataclass(frozen=True)
class ConvSpec:
    """One conv layer of seed 003's deep CNN: ``kernel`` (f or (f1, f2)), ``stride`` s_l, ``filters`` d_l."""

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
    layers: Sequence[ConvSpec | tuple], input_shape: Sequence[int], *, budget: int = 10**7
) -> pd.DataFrame:
    """Seed 003 Theorem 2 bounds for a deep ReLU CNN and Theorem 3's per-parameter comparisons.

    ``layers`` = [(kernel, stride, filters), ...] (no padding), ``input_shape`` = (d_0, n_0[, n_0']).
    Rows (``quantity``, ``kind``, ``value`` exact int or None, ``parameters``, ``log10_value``,
    ``log10_per_parameter``, ``holds``, ``condition``):

    * theorem2_lower: ``R_N' * prod_{l=1}^{L-1} floor(d_l/d_0)^{n_l d_0}`` (n_l = number of positions of layer l),
      N' the one-layer CNN on a (d_0, n_{L-1}) input with d_L filters of size f_L x d_0 and stride s_L.
      Requires d_l >= d_0 for every l.
    * theorem2_upper: ``R_N'' * prod_{l=2}^{L} sum_{i=0}^{n_0 d_0} C(n_l d_l, i)``, N'' the first layer alone.
      The seed's text extraction prints ``n_0 d_0`` as a factor in front of ``sum_{i=0}^{n_l d_l}``; that
      reading, ``R_N'' * prod_l n_0 d_0 2^{n_l d_l}``, is also given (theorem2_upper_as_printed); it is never
      smaller, so both are upper bounds.
    * one_layer_cnn: Theorem 3's N_2, one layer with the first kernel and stride and as many filters as give
      the same number of parameters, its exact R (Theorem 1).
    * fully_connected_upper: an L-layer fully connected net with the same input, depth and (about) the same
      number of parameters (equal widths), Serra et al. 2018 upper bound.
    """
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
    r_prime = cnn_max_regions((d0, *prev_spatial), last.kernel, last.stride, last.filters, budget=budget)
    lower = r_prime * math.prod((convs[l].filters // d0) ** (npos[l] * d0) for l in range(L - 1))
    r2 = cnn_max_regions(input_shape, c0.kernel, c0.stride, c0.filters, budget=budget)
    upper = r2 * math.prod(general_position_regions(npos[l] * convs[l].filters, D0) for l in range(1, L))
    printed = r2 * math.prod(D0 * 2 ** (npos[l] * convs[l].filters) for l in range(1, L))
    per_filter = d0 * math.prod(c0.kernel) + 1
    d_one = max(1, params // per_filter)
    try:
        r_one = cnn_max_regions(input_shape, c0.kernel, c0.stride, d_one, budget=budget)
    except BudgetExceeded:
        r_one = None
    # fully connected: L hidden layers of equal width w with D0*w + (L-1)*w^2 + L*w ~ params
    w = 1
    while D0 * (w + 1) + (L - 1) * (w + 1) ** 2 + L * (w + 1) <= params:
        w += 1
    fc_params = D0 * w + (L - 1) * w * w + L * w
    fc = _serra_upper([D0] + [w] * L)

    def row(q, kind, v, p, holds, cond):  # noqa: ANN001, ANN202
        lg = math.log10(v) if v else None
        return (q, kind, v, p, lg, (lg - math.log10(p)) if lg is not None else None, holds, cond)

    rows = [
        row("theorem2_lower", "lower", lower if cond_ok else None, params, cond_ok, "d_l >= d_0 for every layer"),
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
