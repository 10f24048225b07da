"""Short ``repr`` of result objects: arrays, tensors, tables and long lists are summarised by their shape.

A dataclass opts in with ``__repr__ = short_repr`` in its body (a ``__repr__`` defined in the class body
is kept by ``@dataclass``); fields declared with ``repr=False`` stay hidden.

>>> import numpy as np
>>> from dataclasses import dataclass
>>> @dataclass
... class Result:
...     values: np.ndarray
...     name: str = "x"
...     __repr__ = short_repr
>>> Result(np.zeros((1000, 2)))
Result(values=ndarray(shape=(1000, 2), float64), name='x')
"""

from __future__ import annotations

import dataclasses
import reprlib
from typing import Any

_MAX_ITEMS = 6  # sequences and dicts up to this length are shown item by item
_MAX_CHARS = 80  # any one value's repr is cut to this length

_repr = reprlib.Repr()
_repr.maxstring = _MAX_CHARS
_repr.maxother = _MAX_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = _MAX_ITEMS


def summarize(value: Any) -> str:
    """A one-line description of ``value`` that never grows with the data it holds."""
    import numpy as np

    shape = getattr(value, "shape", None)
    if isinstance(value, np.ndarray) or type(value).__name__ == "Tensor":
        size = value.size if isinstance(value, np.ndarray) else value.numel()
        if value.ndim == 0 or (size <= _MAX_ITEMS and value.ndim == 1):
            return _cut(np.array2string(np.asarray(value.tolist()), precision=4, separator=", "))
        return f"{type(value).__name__}(shape={tuple(shape)}, {str(value.dtype).replace('torch.', '')})"
    if type(value).__name__ == "DataFrame":
        cols = list(value.columns)
        more = f", ... ({len(cols)} columns)" if len(cols) > _MAX_ITEMS else ""
        return f"DataFrame({len(value)} rows: {', '.join(map(str, cols[:_MAX_ITEMS]))}{more})"
    if type(value).__name__ == "Series":
        return f"Series({len(value)} rows)"
    if _is_module(value):
        return f"{type(value).__name__}(...)"
    if isinstance(value, (list, tuple)):
        if len(value) > _MAX_ITEMS:
            kinds = sorted({type(v).__name__ for v in value})
            return f"[{len(value)} items: {', '.join(kinds)}]"
        inner = ", ".join(summarize(v) for v in value)
        return _cut(f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})")
    if isinstance(value, dict):
        if len(value) > _MAX_ITEMS:
            return f"{{{len(value)} keys: {', '.join(_cut(repr(k), 20) for k in list(value)[:3])}, ...}}"
        return _cut("{" + ", ".join(f"{k!r}: {summarize(v)}" for k, v in value.items()) + "}")
    return _repr.repr(value)


def short_repr(self: Any) -> str:
    """``ClassName(field=summary, ...)`` over the dataclass fields shown in the repr, then the properties
    named in the class attribute ``_repr_properties`` (e.g. counts)."""
    parts = [f"{f.name}={summarize(getattr(self, f.name))}" for f in dataclasses.fields(self) if f.repr]
    parts += [f"{name}={summarize(getattr(self, name))}" for name in getattr(type(self), "_repr_properties", ())]
    return f"{type(self).__name__}({', '.join(parts)})"


def _cut(text: str, n: int = _MAX_CHARS) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def _is_module(value: Any) -> bool:
    return any(c.__name__ == "Module" and c.__module__.startswith("torch.nn") for c in type(value).__mro__)
