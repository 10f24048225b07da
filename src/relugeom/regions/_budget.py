"""A step budget for the exact counters: past it, :class:`BudgetExceeded` with a message saying what to do.

A *step* is one unit of an algorithm's main loop (a cell cut, a search node, a programme state), or
``OPS_PER_STEP`` elementary operations of its bulk work (building receptive fields, copying a matching,
a word of big-integer arithmetic), so that the budget bounds all the work, not only the loop.
"""

from __future__ import annotations

from ..errors import BudgetExceeded

OPS_PER_STEP = 1000
_HINT = "raise the budget (budget=, --budget), use a smaller input or model, or a smaller box (bounds=, --bounds)"


class Budget:
    def __init__(self, limit: int, hint: str = _HINT, parent: Budget | None = None) -> None:
        self.limit, self.used, self.hint, self.parent = limit, 0, hint, parent
        self._ops = 0

    def charge(self, steps: int, what: str) -> None:
        """Spend ``steps`` steps (also on the parent budget); BudgetExceeded past the limit."""
        self.used += steps
        if self.parent is not None:
            self.parent.charge(steps, what)
        if self.used > self.limit:
            raise BudgetExceeded(f"{what}: more than {self.limit} steps; {self.hint}", partial=None)

    def tick(self, what: str) -> None:
        self.charge(1, what)

    def ops(self, n: int, what: str) -> None:
        """Spend ``n`` elementary operations (``OPS_PER_STEP`` make a step)."""
        self._ops += n
        if self._ops >= OPS_PER_STEP:
            steps, self._ops = divmod(self._ops, OPS_PER_STEP)
            self.charge(steps, what)

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def sub(self, limit: int) -> Budget:
        """A budget of at most ``limit`` steps whose spending also counts here."""
        return Budget(min(limit, self.remaining), self.hint, parent=self)


def as_budget(budget: int | Budget, hint: str = _HINT) -> Budget:
    return budget if isinstance(budget, Budget) else Budget(int(budget), hint)
