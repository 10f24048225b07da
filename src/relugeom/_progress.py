"""Progress bars that show on a terminal and stay quiet when piped or under ``--quiet``."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_QUIET = os.environ.get("RELUGEOM_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar of this process."""
    global _QUIET
    _QUIET = quiet


def progress(items: Iterable[T], desc: str = "", total: int | None = None, leave: bool = False,
             delay: float = 0.0) -> Iterator[T]:  # fmt: skip
    """Wrap ``items`` in a tqdm bar on stderr when it is a terminal; otherwise yield them as they are.

    ``delay``: show the bar only once this many seconds have passed (for loops that are usually quick).
    """
    if _QUIET or not sys.stderr.isatty():
        yield from items
        return
    from tqdm.auto import tqdm

    yield from tqdm(items, desc=desc, total=total, leave=leave, dynamic_ncols=True, file=sys.stderr, delay=delay)


class _NoBar:
    """Stands in for a tqdm bar when progress is not shown."""

    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


def progress_bar(total: int | None, desc: str = "", delay: float = 0.0):  # noqa: ANN201
    """A bar advanced by hand (``bar.update(k)``, ``bar.close()``) for work that is not one loop; a silent
    stand-in where :func:`progress` would stay quiet."""
    if _QUIET or not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr, delay=delay)
