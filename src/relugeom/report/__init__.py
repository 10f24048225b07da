"""Figures (matplotlib, Agg backend) drawn from analysis tables; nothing here computes geometry."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..checkpoints import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIG_FORMATS = ("png", "svg", "pdf")
DEFAULT_DPI = 150


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = DEFAULT_DPI) -> Path:
    """Save ``fig`` atomically (PNG, PDF or SVG by the suffix) and close it.

    ``dpi`` sets the pixel size of a PNG (figure inches x dpi) and the resolution of raster parts of a
    PDF or SVG; vector output is otherwise resolution-free.
    """
    import matplotlib

    matplotlib.use("Agg")  # figures are files: never open a window
    import matplotlib.pyplot as plt

    p = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=p.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write(p, lambda f: f.write(buf.getvalue()))


@dataclass(frozen=True)
class FigureOutput:
    """Where and how the CLI verbs write their figures: ``format`` (png, svg or pdf) and ``dpi``.

    >>> FigureOutput("svg", 300).path("out", "histograms")
    PosixPath('out/histograms.svg')
    """

    format: str = "png"
    dpi: int = DEFAULT_DPI

    def __post_init__(self) -> None:
        if self.format not in FIG_FORMATS:
            raise ValueError(f"figure format {self.format!r}: choose from {', '.join(FIG_FORMATS)}")
        if self.dpi <= 0:
            raise ValueError(f"dpi must be positive, got {self.dpi}")

    def path(self, folder: str | os.PathLike, stem: str) -> Path:
        """``folder/stem.FORMAT``."""
        return Path(folder) / f"{stem}.{self.format}"

    def save(self, fig: Figure, folder: str | os.PathLike, stem: str) -> Path:
        """Save ``fig`` as ``folder/stem.FORMAT`` at this dpi (atomically) and close it."""
        return save_figure(fig, self.path(folder, stem), dpi=self.dpi)
