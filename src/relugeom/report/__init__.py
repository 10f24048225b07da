"""Figures (matplotlib, Agg backend) drawn from analysis tables; nothing here computes geometry."""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from ..checkpoints import atomic_write  # noqa: E402


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` atomically (PNG, PDF or SVG by the suffix) and close it."""
    p = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=p.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return atomic_write(p, lambda f: f.write(buf.getvalue()))
