"""The algorithms behind Xiong et al. 2020, Theorem 1 (i): the exact maximal number of linear regions of a
one-layer ReLU CNN, ``R_N = sum_{t in K_N} prod_i C(d_1, t_i)``, as exact Python integers.

Membership of t in K_N is Hall's condition (position i replicated t_i times must be matched to distinct input
neurons of its receptive field S_i), so it is a max-flow question; for 1D inputs, whose receptive fields are
intervals with increasing ends, a greedy decides it and the sum becomes a dynamic programme. Methods: the
interval programme, a depth-first search with an incremental matching, a profile programme over Hall
signatures, max-flow per candidate, and the literal enumeration over every subset J (for cross-checks).
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import BudgetExceeded, ShapeError
from ._budget import Budget, as_budget

_HINT = "raise budget= (CLI: --budget)"


def _nonneg_int(x: object, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 0:
        raise ShapeError(f"{name} must be a non-negative integer, got {x!r}")
    return int(x)


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

    @property
    def n_positions(self) -> int:
        return math.prod(self.out_spatial)

    def fields(self, budget: Budget | None = None) -> list[list[int]]:
        """S_i as lists of flat spatial indices (each spatial index stands for ``channels`` input neurons)."""
        if budget is not None:
            budget.ops(self.n_positions * (math.prod(self.kernel) + 1), "cnn_max_regions: receptive fields")
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
    m = c.n_positions
    tmax = min(c.filters, math.prod(c.kernel) * c.channels)
    n_cand = (tmax + 1) ** m
    if n_cand * (2**m) > budget:
        raise BudgetExceeded(
            f"literal enumeration of K_N needs {n_cand} candidates x {2**m} subsets J > budget {budget}; "
            "use method='auto'", partial=None)  # fmt: skip
    fields = c.fields()
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

    def __init__(self, fields: list[list[int]], n_pix: int, cap: int, budget: Budget | None = None) -> None:
        self.fields, self.cap, self.budget = fields, cap, budget
        self.load = [0] * n_pix
        self.users: list[dict[int, int]] = [dict() for _ in range(n_pix)]  # pixel -> {position: units}

    def _spend(self, ops: int) -> None:
        if self.budget is not None:
            self.budget.ops(ops, "cnn_max_regions: search")

    def copy(self) -> _BMatching:
        self._spend(2 * len(self.load))
        new = _BMatching.__new__(_BMatching)
        new.fields, new.cap, new.budget = self.fields, self.cap, self.budget
        new.load = self.load[:]
        new.users = [dict(u) for u in self.users]
        return new

    def add(self, i: int) -> bool:
        self._spend(len(self.fields[i]))
        for q in self.fields[i]:
            if self.load[q] < self.cap:
                self._give(i, q)
                return True
        # BFS over pixels: from pixel q (full), a user j of q may move one unit to another pixel of S_j.
        parent: dict[int, tuple[int, int] | None] = {q: None for q in self.fields[i]}
        frontier = list(self.fields[i])
        while frontier:
            nxt = []
            self._spend(len(frontier))
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


def _interval_dp(c: _Conv, budget: int | Budget | None = None) -> int:
    """1D (or any single line of positions with interval fields): the greedy that gives each position the
    leftmost free input neurons of its field serves t iff t is in K_N; sum over the greedy's pointer."""
    C, f, s, d1 = c.channels, c.kernel[0], c.stride, c.filters
    binom = [math.comb(d1, t) for t in range(d1 + 1)]
    states = {0: 1}  # pointer (first free input neuron) -> summed weight
    for i in range(c.out_spatial[0]):
        lo, hi = i * s * C, (i * s + f) * C
        nxt: dict[int, int] = {}
        if budget is not None:
            bud = as_budget(budget, _HINT)
            bud.ops(sum((min(d1, hi - max(p, lo)) + 1) * (1 + w.bit_length() // 64) for p, w in states.items()),
                    "cnn_max_regions: interval programme")  # fmt: skip
        for p, w in states.items():
            p = max(p, lo)
            for t in range(min(d1, hi - p) + 1):
                nxt[p + t] = nxt.get(p + t, 0) + w * binom[t]
        states = nxt
    return sum(states.values())


def _search(c: _Conv, budget: int | Budget, check_all: bool = False) -> int:
    """Depth-first search over t position by position with an incremental b-matching. A prefix that cannot
    be served prunes its subtree (K_N is closed downwards); a prefix whose remaining positions can all be
    served at their maximum closes its subtree with a product of binomial sums. ``check_all`` turns the
    shortcut off and checks every candidate (the "flow" baseline). A step is a node or ``OPS_PER_STEP``
    operations of the matching; the recursion is one level per output position, so a shape with more
    positions than Python's recursion limit allows is refused (BudgetExceeded) before any work."""
    m = c.n_positions
    if m + 100 > sys.getrecursionlimit():
        raise BudgetExceeded(f"cnn_max_regions: the search recurses once per output position and this layer has "
                             f"{m}; use method='profile' (or 'auto')", partial=None)  # fmt: skip
    bud = as_budget(budget, _HINT)
    fields = c.fields(bud)
    n_pix = math.prod(c.spatial)
    tmax = min(c.filters, len(fields[0]) * c.channels)
    binom = [math.comb(c.filters, t) for t in range(tmax + 1)]
    full = sum(binom)

    def rec(k: int, mt: _BMatching) -> int:
        bud.tick("cnn_max_regions: search")
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

    bud.ops(2 * n_pix, "cnn_max_regions: search")
    return rec(0, _BMatching(fields, n_pix, c.channels, bud))


def _profile_dp(c: _Conv, budget: int | Budget) -> int:
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
    bud = as_budget(budget, _HINT)
    what = "cnn_max_regions: profile programme"
    fields = c.fields(bud)
    m = len(fields)
    words = math.prod(c.spatial) // 64 + 1  # the pixel sets are Python ints of that many 64-bit words
    bud.ops(2 * m * words, what)
    masks = [sum(1 << q for q in f) for f in fields]
    suffix = [0] * (m + 1)
    for k in range(m - 1, -1, -1):
        suffix[k] = suffix[k + 1] | masks[k]
    tmax = min(c.filters, len(fields[0]) * C)
    binom = [math.comb(c.filters, t) for t in range(tmax + 1)]
    states: dict[frozenset, int] = {frozenset(): 1}
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
                try:
                    bud.tick(what)
                    bud.ops(len(base) * (len(kept) + 2) * words, what)
                except BudgetExceeded as e:
                    raise BudgetExceeded(f"{e} ({len(nxt)} states at position {k} of {m})", partial=None) from None
        states = nxt
    return sum(states.values())


def _flow_literal(c: _Conv, budget: int) -> int:
    """Every candidate t checked with scipy's maximum_flow (the obvious search; a baseline for benchmarks)."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import maximum_flow

    m = c.n_positions
    n_pix = math.prod(c.spatial)
    tmax = min(c.filters, math.prod(c.kernel) * c.channels)
    if (tmax + 1) ** m > budget:
        raise BudgetExceeded(f"flow search: {(tmax + 1) ** m} candidates > budget {budget}", partial=None)
    fields = c.fields()
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


# ------------------------------------------------------------------------------- certified bounds on R_N
def _covered(n: int, f: int, s: int) -> int:
    """How many of ``n`` input positions some window ``[i s, i s + f)`` covers."""
    m = (n - f) // s + 1
    return len(set().union(*[range(i * s, i * s + f) for i in range(m)]))


def _private_rows(m: int, f: int, s: int) -> list[int]:
    """Sizes of disjoint sets of input rows, the i-th inside window ``[i s, i s + f)``, covering every row some
    window covers: row i takes ``[i s, (i+1) s)`` (its first s rows) and the last window takes all its rows."""
    return [min(f, s) for _ in range(m - 1)] + [f]


def _strip_bounds(c: _Conv, axis: int) -> tuple[int, int]:
    """Lower and upper bounds on R_N from the lines of positions along ``axis`` (0: rows, 1: columns).

    Upper: dropping every Hall constraint whose J meets two lines leaves one independent 1D problem per line,
    whose fields are intervals of ``f_axis`` full pixel lines: ``R_N <= R_1D(d_0 f_axis)^{m_axis}``.
    Lower: giving line i only its private pixel lines (disjoint across lines) makes the lines independent
    1D problems whose matchings together are one matching of the whole layer, so every such t is in K_N.
    """
    other = 1 - axis
    C, s, d1 = c.channels, c.stride, c.filters
    f, m = c.kernel[axis], c.out_spatial[axis]

    @functools.cache
    def line(channels: int) -> int:
        return _interval_dp(_Conv(channels, (c.spatial[other],), (c.kernel[other],), s, d1))

    upper = line(C * f) ** m
    lower = math.prod(line(C * k) ** n for k, n in Counter(_private_rows(m, f, s)).items())
    return lower, upper


def _sum_binomials_upper(n: int, d: int, exact_max: int = 4096) -> int:
    """A certified upper bound on ``sum_{j <= d} C(n, j)``, exact when ``d <= exact_max`` or ``d >= n``.

    Else, for ``2 d < n``: consecutive terms grow by ``C(n, j) / C(n, j-1) = (n-j+1) / j >= (n-d+1) / d > 1``,
    so the sum is at most ``C(n, d) / (1 - r)`` with ``r = d / (n-d+1)``: ``C(n, d) (n-d+1) / (n-2d+1)``,
    rounded up (within that factor of the sum). For ``2 d >= n``: ``2^n`` (within a factor 2).
    """
    if d >= n:
        return 2**n
    if d <= exact_max:
        total, term = 0, 1
        for j in range(d + 1):
            total += term
            term = term * (n - j) // (j + 1)
        return total
    if 2 * d < n:
        return -(-math.comb(n, d) * (n - d + 1) // (n - 2 * d + 1))
    return 2**n


def _general_position_upper(c: _Conv) -> int:
    """``sum_{j <= D} C(N, j)`` (or its certified upper bound, :func:`_sum_binomials_upper`): every t in K_N has
    ``sum t <= D = #U S`` (J = I), N the number of neurons."""
    D = c.channels * math.prod(_covered(n, f, c.stride) for n, f in zip(c.spatial, c.kernel))
    N = c.filters * math.prod(c.out_spatial)
    return _sum_binomials_upper(N, D)


def _theorem1_bounds(c: _Conv) -> tuple[int, int]:
    """Certified lower and upper bounds on Theorem 1's value (exact integers), cheap for any shape."""
    if len(c.spatial) == 1:
        v = _interval_dp(c)
        return v, v
    rows, cols = _strip_bounds(c, 0), _strip_bounds(c, 1)
    return max(rows[0], cols[0]), min(rows[1], cols[1], _general_position_upper(c))


def _delta_regions(c: _Conv) -> int:
    """The number of regions of the layer with *delta filters*: filter k is one 1 at (channel c_k, offset o_k)
    of its window (offsets taken round robin) and the biases are distinct. Neuron (k, p) is then the hyperplane
    ``x[c_k, p + o_k] = -b_k``, so the arrangement is a product of 1D arrangements and has
    ``prod_v (1 + n_v)`` regions, n_v the number of filters whose delta lands on input neuron v at some output
    position. A lower bound on the maximum over weights R_N that needs no theorem."""
    offsets = list(itertools.product(range(c.channels), *[range(f) for f in c.kernel]))
    hits = np.zeros((c.channels, *c.spatial), dtype=np.int64)
    for k in range(c.filters):
        ch, *o = offsets[k % len(offsets)]
        idx = tuple(slice(oi, oi + (m - 1) * c.stride + 1, c.stride) for oi, m in zip(o, c.out_spatial))
        hits[(ch, *idx)] += 1
    return math.prod(int(h) + 1 for h in hits.ravel())
