"""H-polyhedra ``{x : A_ub x <= b_ub, A_eq x = b_eq}`` in float64, with emptiness, containment, dimension,
an interior point and uniform-ish samples, all decided by linear programs (scipy's HiGHS).

The preimages of Carlsson 2019 (eq. 9) are returned as such polyhedra (:mod:`relugeom.geometry.preimage`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.linalg import null_space
from scipy.optimize import linprog

from .._repr import short_repr
from ..errors import DataError, LayerError, ShapeError

_DENSE_LIMIT = 4096


def _dense(a: np.ndarray | sp.sparray) -> np.ndarray:
    return a.toarray() if sp.issparse(a) else np.asarray(a, dtype=np.float64)


@dataclass(frozen=True)
class Polyhedron:
    """``{x in R^d : A_ub x <= b_ub, A_eq x = b_eq}`` in float64 (H-representation).

    ``A_ub``/``A_eq`` may be dense arrays or scipy sparse arrays. LPs use scipy's HiGHS; ``tol`` is the
    feasibility tolerance for membership and for deciding that an inequality is tight.

    Example
    -------
    >>> import numpy as np
    >>> # the triangle x >= 0, x1 + x2 <= 1
    >>> T = Polyhedron.from_constraints(2, ub=[(-np.eye(2), np.zeros(2)), (np.ones((1, 2)), [1.0])])
    >>> T.contains(np.array([0.2, 0.3])), T.contains(np.array([1.0, 1.0])), T.dimension(), T.is_empty()
    (True, False, 2, False)
    """

    __repr__ = short_repr

    A_ub: np.ndarray | sp.sparray
    b_ub: np.ndarray
    A_eq: np.ndarray | sp.sparray
    b_eq: np.ndarray
    tol: float = 1e-9
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def d(self) -> int:
        return int(self.A_ub.shape[1])

    @classmethod
    def from_constraints(cls, d: int, ub: Sequence[tuple] = (), eq: Sequence[tuple] = (), tol: float = 1e-9
                         ) -> Polyhedron:  # fmt: skip
        """Stack blocks of ``(A, b)`` (dense or sparse) into one polyhedron in R^d."""

        def stack(blocks: Sequence[tuple]) -> tuple[sp.csr_array, np.ndarray]:
            if not blocks:
                return sp.csr_array((0, d)), np.zeros(0)
            return (sp.vstack([sp.csr_array(a) for a, _ in blocks]).tocsr(),
                    np.concatenate([np.asarray(b, dtype=np.float64).ravel() for _, b in blocks]))  # fmt: skip

        a_ub, b_ub = stack(ub)
        a_eq, b_eq = stack(eq)
        return cls(a_ub, b_ub, a_eq, b_eq, tol)

    # ------------------------------------------------------------------ membership and LPs
    def contains(self, x: np.ndarray, tol: float | None = None) -> bool | np.ndarray:
        """Whether ``x`` (a point, or an (n, d) array of points) satisfies every constraint to ``tol``."""
        tol = self.tol if tol is None else tol
        pts = np.atleast_2d(np.asarray(x, dtype=np.float64))
        if pts.shape[1] != self.d:
            raise ShapeError(f"points of dimension {pts.shape[1]} against a polyhedron in R^{self.d}")
        ok = np.ones(len(pts), dtype=bool)
        if self.A_ub.shape[0]:
            ok &= np.all((self.A_ub @ pts.T).T <= self.b_ub + tol * (1 + np.abs(self.b_ub)), axis=1)
        if self.A_eq.shape[0]:
            ok &= np.all(np.abs((self.A_eq @ pts.T).T - self.b_eq) <= tol * (1 + np.abs(self.b_eq)), axis=1)
        return bool(ok[0]) if np.ndim(x) == 1 else ok

    def _lp(self, c: np.ndarray, a_ub=None, b_ub=None, a_eq=None, b_eq=None, bounds=None):  # noqa: ANN001, ANN202
        a_ub = self.A_ub if a_ub is None else a_ub
        a_eq = self.A_eq if a_eq is None else a_eq
        return linprog(
            c,
            A_ub=a_ub if a_ub.shape[0] else None, b_ub=(self.b_ub if b_ub is None else b_ub) if a_ub.shape[0] else None,
            A_eq=a_eq if a_eq.shape[0] else None, b_eq=(self.b_eq if b_eq is None else b_eq) if a_eq.shape[0] else None,
            bounds=bounds if bounds is not None else (None, None), method="highs",
        )  # fmt: skip

    def feasible_point(self) -> np.ndarray | None:
        """A point of the polyhedron, or None when it is empty."""
        if "point" not in self._cache:
            res = self._lp(np.zeros(self.d))
            if res.status not in (0, 2):
                raise RelugeomLPError(f"HiGHS failed on a feasibility LP: {res.message}")
            self._cache["point"] = None if res.status == 2 else res.x
        return self._cache["point"]

    def is_empty(self) -> bool:
        """True when no x satisfies the constraints (an LP through HiGHS)."""
        return self.feasible_point() is None

    def _implicit(self) -> np.ndarray:
        """Boolean mask of the inequalities that hold with equality on the whole polyhedron.

        Repeatedly maximise the sum of slacks s_i in [0, 1] of the undecided inequalities: those that get a
        positive slack are not implicit; when none does, all undecided ones are (each LP decides at least one).
        """
        if "implicit" in self._cache:
            return self._cache["implicit"]
        m, d = self.A_ub.shape
        undecided = np.ones(m, dtype=bool)
        a_ub = sp.csr_array(self.A_ub)
        while undecided.any():
            idx = np.flatnonzero(undecided)
            s_block = sp.csr_array((np.ones(len(idx)), (idx, np.arange(len(idx)))), shape=(m, len(idx)))
            a = sp.hstack([a_ub, s_block]).tocsr()
            a_eq = sp.hstack([sp.csr_array(self.A_eq), sp.csr_array((self.A_eq.shape[0], len(idx)))]).tocsr()
            c = np.concatenate([np.zeros(d), -np.ones(len(idx))])
            bounds = [(None, None)] * d + [(0, 1)] * len(idx)
            res = self._lp(c, a_ub=a, a_eq=a_eq, bounds=bounds)
            if res.status != 0:
                raise RelugeomLPError(f"HiGHS failed while looking for implicit equalities: {res.message}")
            slack = res.x[d:]
            loose = slack > 1e-9
            if not loose.any():
                break
            undecided[idx[loose]] = False
        self._cache["implicit"] = undecided
        return undecided

    def _hull(self) -> tuple[np.ndarray, np.ndarray]:
        """(E, e): all equalities, given and implicit, as dense rows (the affine hull is E x = e)."""
        if self.d > _DENSE_LIMIT:
            raise ShapeError(f"a polyhedron in R^{self.d} is too large for dense affine-hull computations")
        imp = self._implicit()
        e_rows = np.vstack([_dense(self.A_eq), _dense(self.A_ub)[imp]])
        return e_rows, np.concatenate([self.b_eq, self.b_ub[imp]])

    def dimension(self) -> int:
        """Affine dimension (-1 when empty): d minus the rank of all equalities, implicit ones included."""
        if self.is_empty():
            return -1
        e_rows, _ = self._hull()
        rank = np.linalg.matrix_rank(e_rows, tol=1e-9 * max(1.0, np.abs(e_rows).max(initial=0))) if len(e_rows) else 0
        return self.d - int(rank)

    def interior_point(self) -> np.ndarray:
        """A point of the relative interior (the Chebyshev centre inside the affine hull, radius capped at 1)."""
        if self.is_empty():
            raise DataError("the polyhedron is empty: it has no interior point")
        imp = self._implicit()
        loose = ~imp
        a_u = _dense(self.A_ub)[loose]
        norms = np.linalg.norm(a_u, axis=1)
        e_rows, e = self._hull()
        a = np.hstack([a_u, norms[:, None]])
        a_eq = np.hstack([e_rows, np.zeros((len(e_rows), 1))])
        c = np.zeros(self.d + 1)
        c[-1] = -1.0
        res = linprog(c, A_ub=a if len(a) else None, b_ub=self.b_ub[loose] if len(a) else None,
                      A_eq=a_eq if len(a_eq) else None, b_eq=e if len(a_eq) else None,
                      bounds=[(None, None)] * self.d + [(0, 1)], method="highs")  # fmt: skip
        if res.status != 0:
            raise RelugeomLPError(f"HiGHS failed on the Chebyshev-centre LP: {res.message}")
        return res.x[:-1]

    def sample(self, n: int, seed: int | None = None, *, radius: float = 10.0, thin: int = 10) -> np.ndarray:
        """``n`` points of the polyhedron by hit-and-run inside its affine hull, shape (n, d).

        Starts at a relative-interior point x0 and walks with ``thin`` steps between kept points (after as
        many burn-in steps); unbounded polyhedra are intersected with the ball of ``radius`` around x0, so the
        walk targets the uniform distribution on P ∩ ball(x0, radius). Deterministic for a given ``seed``.
        """
        rng = np.random.default_rng(seed)
        x0 = self.interior_point()
        e_rows, _ = self._hull()
        basis = null_space(e_rows) if len(e_rows) else np.eye(self.d)
        if basis.shape[1] == 0:
            return np.repeat(x0[None], n, axis=0)
        loose = ~self._implicit()
        a_u = _dense(self.A_ub)[loose] @ basis  # constraints in hull coordinates z: a_u z <= b_u - A x0
        b_u = self.b_ub[loose] - _dense(self.A_ub)[loose] @ x0
        z = np.zeros(basis.shape[1])
        out = np.empty((n, self.d))
        for k in range(thin + n * thin):
            u = rng.normal(size=len(z))
            u /= np.linalg.norm(u)
            # ball: |z + l u|^2 <= R^2
            zu = float(z @ u)
            disc = math.sqrt(max(zu * zu - (z @ z - radius * radius), 0.0))
            lo, hi = -zu - disc, -zu + disc
            if len(a_u):
                au, slack = a_u @ u, b_u - a_u @ z
                with np.errstate(divide="ignore"):
                    ratio = slack / au
                pos, neg = au > 1e-14, au < -1e-14
                if pos.any():
                    hi = min(hi, float(ratio[pos].min()))
                if neg.any():
                    lo = max(lo, float(ratio[neg].max()))
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            z = z + rng.uniform(lo, hi) * u
            if k >= thin and (k - thin) % thin == thin - 1:
                out[(k - thin) // thin] = x0 + basis @ z
        return out

    def intersect(self, other: Polyhedron) -> Polyhedron:
        """The intersection (constraints of both)."""
        return Polyhedron.from_constraints(
            self.d, ub=[(self.A_ub, self.b_ub), (other.A_ub, other.b_ub)],
            eq=[(self.A_eq, self.b_eq), (other.A_eq, other.b_eq)], tol=self.tol,
        )  # fmt: skip


class RelugeomLPError(LayerError):
    """HiGHS did not solve an LP (numerical trouble); the message says which."""


# ------------------------------------------------------------------------------------------ preimages
