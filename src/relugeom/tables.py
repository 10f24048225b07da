"""Writing tables: CSV, Parquet or JSON (records), always atomically."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pandas as pd

from .checkpoints import atomic_write

FORMATS = ("csv", "parquet", "json")


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Tuples (shapes, strides) become strings so that every format can hold them."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype == object and out[c].map(lambda v: isinstance(v, tuple)).any():
            out[c] = out[c].map(lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v)
    return out


def write_table(df: pd.DataFrame, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write ``df`` to ``path`` (the suffix is set from ``fmt``, or ``fmt`` read off the suffix)."""
    p = Path(path)
    fmt = (fmt or p.suffix.lstrip(".") or "csv").lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    p = p.with_suffix(f".{fmt}")
    df = _plain(df)
    if fmt == "csv":
        data = df.to_csv(index=False).encode()
    elif fmt == "json":
        data = df.to_json(orient="records", indent=1).encode()
    else:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    return atomic_write(p, lambda f: f.write(data))
