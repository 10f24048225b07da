"""A step budget for the exact counters: past it, :class:`BudgetExceeded` with a message saying what to do."""

from __future__ import annotations

from ..errors import BudgetExceeded


class Budget:
    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0

    def tick(self, what: str) -> None:
        self.used += 1
        if self.used > self.limit:
            raise BudgetExceeded(f"{what}: more than {self.limit} steps; raise the budget (budget=, --budget), use a "
                                 "smaller input or model, or a smaller box (bounds=, --bounds)",
                                 partial=None)  # fmt: skip
