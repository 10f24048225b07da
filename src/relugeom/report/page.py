"""A whole run at a glance: one self-contained HTML page (or Markdown for a lab notebook).

The page draws tables that exist already; it computes nothing. It holds, for one run or several
(seeds: mean and a one-standard-deviation band): the configuration, the training curves, n_l over
epochs (Gamba et al. 2020, eq. 2), the cos histograms at initialization and at the end (eq. 1), every
analysis relugeom has written for the run (re-initialization, cones, regions, measures), provenance,
and each table as a download.

Where the analyses are looked for (:func:`find_tables`): the run folder itself, every sub-folder of it
whose name starts with ``relugeom-`` (what ``relugeom VERB RUN --out RUN/relugeom-VERB`` writes), and the
extra folders given. Tables are recognised by their file names (``reinit.csv``, ``states_net.parquet``,
...: the names the verbs write), in CSV, Parquet or JSON.

Offline by construction: figures are PNG ``data:`` URIs, downloads are ``data:`` URIs, there is no
script, and a Content-Security-Policy (``default-src 'none'``) forbids the browser to fetch anything.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .._repr import short_repr

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
TABLE_SUFFIXES = (".csv", ".parquet", ".json")
# file stem -> (section, what it is)
KNOWN_TABLES: dict[str, tuple[str, str]] = {
    "layers": ("projection", "n_l per layer and epoch (relugeom stats)"),
    "filters": ("projection", "cos per filter (relugeom stats)"),
    "reinit": ("reinit", "accuracy drop per layer and reference epoch (relugeom reinit)"),
    "critical_vs_bias": ("reinit", "re-initialization drop beside n_l (relugeom reinit)"),
    "states_net": ("cones", "net-wise distribution of cone states (relugeom cones)"),
    "states_stage": ("cones", "cone states per stage (relugeom cones)"),
    "regions_summary": ("regions", "linear regions over training (relugeom regions train)"),
    "segment": ("regions", "regions along a segment (relugeom regions segment)"),
    "slice": ("regions", "regions on a 2D slice (relugeom regions slice)"),
    "measures": ("measures", "complexity measures over training (relugeom measures)"),
}
SECTIONS = {
    "reinit": "Re-initialization (critical layers)",
    "cones": "Cones",
    "regions": "Linear regions",
    "measures": "Complexity measures",
}
MAX_ROWS = 30


def find_tables(run_dir: str | Path, extra: Iterable[str | Path] = ()) -> dict[str, Path]:
    """The analysis tables written for a run: ``{stem: path}`` (see the module docstring for where)."""
    run = Path(run_dir)
    folders = [run]
    if run.is_dir():
        folders += sorted(p for p in run.iterdir() if p.is_dir() and p.name.startswith("relugeom-"))
    folders += [Path(p) for p in extra]
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            if p.is_file() and p.suffix in TABLE_SUFFIXES and p.stem in KNOWN_TABLES and p.stem not in found:
                found[p.stem] = p
    return found


def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by a verb (CSV, Parquet or JSON records)."""
    p = Path(path)
    if p.suffix == ".parquet":
        return pd.read_parquet(p)
    if p.suffix == ".json":
        return pd.read_json(p, orient="records")
    return pd.read_csv(p)


@dataclass
class RunTables:
    """What the report shows of one run: its config document, metrics, n_l table, per-filter cos at
    the first and last epoch, and the analysis tables found (``{stem: DataFrame}``)."""

    __repr__ = short_repr

    label: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    metrics: pd.DataFrame | None = None
    layers: pd.DataFrame | None = None
    filters_first: pd.DataFrame | None = None
    filters_last: pd.DataFrame | None = None
    analyses: dict[str, pd.DataFrame] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)


@dataclass
class Section:
    __repr__ = short_repr

    title: str
    anchor: str
    text: list[str] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (caption, PNG)
    tables: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # (file name, caption, table)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # key/value rows
    open_tables: bool = False  # tables shown unfolded


@dataclass
class Report:
    __repr__ = short_repr

    title: str
    sections: list[Section]
    provenance: list[tuple[str, str]]


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _stack(runs: Sequence[RunTables], attr: str) -> pd.DataFrame | None:
    frames = []
    for r in runs:
        df = getattr(r, attr) if attr != "analyses" else None
        if df is not None and len(df):
            df = df.drop(columns=[c for c in ("run",) if c in df]).copy()
            df.insert(0, "run", r.label)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else None


def _stack_analysis(runs: Sequence[RunTables], stem: str) -> pd.DataFrame | None:
    frames = []
    for r in runs:
        df = r.analyses.get(stem)
        if df is None or not len(df):
            continue
        df = df.copy()
        if "run" in df and len(runs) > 1:
            own = df[df["run"].astype(str) == Path(r.label).name]
            df = own if len(own) else df
        if "run" in df:
            df = df.drop(columns=["run"])
        df.insert(0, "run", r.label)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else None


def _unit(runs: Sequence[RunTables]) -> str:
    units = {str((r.config.get("recorder") or {}).get("unit", "epoch")) for r in runs}
    return "step" if units == {"step"} else "epoch"


def training_curves(metrics: pd.DataFrame, unit: str = "epoch") -> Figure:
    """Every numeric metric over the series, one panel each; several runs: mean line and a band of one
    standard deviation (``metrics`` holds a ``run`` column)."""
    skip = {"run", "epoch", "global_step", "seconds", "train_epoch", "seed"}
    cols = [c for c in metrics.columns if c not in skip and pd.api.types.is_numeric_dtype(metrics[c])
            and metrics[c].notna().sum() > 0]  # fmt: skip
    n_runs = metrics["run"].nunique() if "run" in metrics else 1
    ncols = min(3, max(1, len(cols)))
    nrows = max(1, math.ceil(len(cols) / ncols))
    fig = Figure(figsize=(3.6 * ncols, 2.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, col in zip(axes, cols):
        g = metrics.groupby("epoch")[col].agg(["mean", "std", "count"]).reset_index().dropna(subset=["mean"])
        ax.plot(g["epoch"], g["mean"], color="C0", marker="o" if len(g) < 15 else None, ms=3)
        if n_runs > 1:
            sd = g["std"].fillna(0.0)
            ax.fill_between(g["epoch"], g["mean"] - sd, g["mean"] + sd, color="C0", alpha=0.25, lw=0)
        ax.set_title(col.replace("_", " "), fontsize=9)
        ax.set_xlabel(unit + (" (0 = initialization)" if unit == "epoch" else ""), fontsize=8)
        ax.tick_params(labelsize=7)
        if unit == "epoch":
            ax.xaxis.get_major_locator().set_params(integer=True)
        positive = g["mean"][g["mean"] > 0]
        if len(positive) == len(g) and len(g) > 1 and positive.max() / positive.min() > 100:
            ax.set_yscale("log")
    for ax in axes[len(cols) :]:
        ax.set_visible(False)
    if n_runs > 1:
        fig.suptitle(f"mean over {n_runs} runs, band = one standard deviation", fontsize=9)
    return fig


def _first_last_filters(runs: Sequence[RunTables]) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    first, last = _stack(runs, "filters_first"), _stack(runs, "filters_last")
    return first, last


def build_report(runs: Sequence[RunTables], *, title: str | None = None,
                 provenance: Sequence[tuple[str, str]] = ()) -> Report:  # fmt: skip
    """Lay out the sections of the page from the runs' tables (figures are drawn here, as PNG)."""
    from .projection import cos_histograms, nl_over_epochs

    several = len(runs) > 1
    unit = _unit(runs)
    title = title or ("relugeom report: " + (runs[0].label if not several else f"{len(runs)} runs"))
    sections: list[Section] = []

    # -- runs and configuration: one column per run
    s = Section("Runs and configuration", "config")
    columns: dict[str, dict[str, str]] = {}
    for r in runs:
        cfg = r.config.get("config") or {}
        data = r.config.get("data") or {}
        rec = r.config.get("recorder") or {}
        n_ckpt = "-" if r.layers is None or "epoch" not in r.layers else str(r.layers["epoch"].nunique())
        shown = {"folder": str(r.path), **{k: v for k, v in cfg.items() if v not in (None, {}, [])},
                 **{f"data.{k}": v for k, v in data.items() if k in ("name", "input_shape", "num_classes", "n_train",
                                                                     "n_val", "n_test") and v is not None},
                 **{f"hparams.{k}": v for k, v in (r.config.get("hparams") or {}).items()},
                 **({"recorded by": rec.get("framework"), "recorded every": rec.get("unit"),
                     "model": rec.get("model_factory") or rec.get("model_class")} if rec else {}),
                 "checkpoints": n_ckpt, "lr drops": r.config.get("lr_drops") or "-"}  # fmt: skip
        columns[r.label] = {k: str(v) for k, v in shown.items()}
    s.tables.append(("config.csv", "configuration", pd.DataFrame(columns).rename_axis("setting").reset_index()))
    s.open_tables = True
    sections.append(s)

    # -- training curves
    metrics = _stack(runs, "metrics")
    s = Section("Training curves", "training")
    if metrics is not None and "epoch" in metrics:
        caption = "Metrics logged during training" + (" (mean and one standard deviation over runs)" if several else "")
        s.figures.append((caption, figure_png(training_curves(metrics, unit))))
        s.tables.append(("metrics.csv", "metrics per " + unit, metrics))
    else:
        s.text.append("No metrics.csv in the run folder.")
    sections.append(s)

    # -- projection statistic
    layers = _stack(runs, "layers")
    s = Section("Projection statistic and n_l (Gamba et al. 2020, eqs. 1-2)", "projection")
    if layers is not None and len(layers):
        s.text.append("n_l is the fraction of a layer's filters whose projection statistic cos = sum(w) / "
                      "(||w|| sqrt(numel(w))) is at most 0 (Gamba et al. 2020, eq. 2). 0.5 is the balanced "
                      "value of a symmetric initialization.")  # fmt: skip
        if "epoch" in layers and layers["epoch"].nunique() > 1:
            drops = sorted({int(d) for r in runs for d in (r.config.get("lr_drops") or [])})
            m = metrics[["run", "epoch", *[c for c in ("train_loss", "val_loss", "train_acc", "val_acc")
                                           if c in metrics]]] if metrics is not None else None  # fmt: skip
            fig = nl_over_epochs(layers, m, lr_drops=drops)
            s.figures.append((f"n_l of every layer over {unit}s" + (", mean and band over runs" if several else "")
                              + (" (dotted red: learning-rate drops)" if drops else ""), figure_png(fig)))  # fmt: skip
        first, last = _first_last_filters(runs)
        if last is not None and len(last):
            lab_last = "end" if "epoch" not in last else f"{unit} {int(last['epoch'].max())}"
            fig = cos_histograms(last, first, labels=(lab_last, "initialization"))
            pooled = f" (filters pooled over {len(runs)} runs)" if several else ""
            s.figures.append(("cos per layer at initialization and at the end" + pooled, figure_png(fig)))
        s.tables.append(("layers.csv", "n_l per layer and " + unit + (" (all runs)" if several else ""), layers))
        if several and "epoch" in layers:
            from_runs = layers.groupby(["epoch", "layer_index", "layer"])["n_neg"].agg(["mean", "std", "count"])
            s.tables.append(("n_l_over_runs.csv", "n_l mean and standard deviation over runs",
                             from_runs.reset_index().rename(columns={"count": "n_runs"})))  # fmt: skip
    else:
        s.text.append("No checkpoint could be analysed.")
    sections.append(s)

    # -- analyses written by the verbs
    for key, heading in SECTIONS.items():
        s = Section(heading, key)
        for stem, (sec, what) in KNOWN_TABLES.items():
            if sec != key:
                continue
            df = _stack_analysis(runs, stem)
            if df is None:
                continue
            fig = _analysis_figure(stem, df)
            if fig is not None:
                s.figures.append((what, figure_png(fig)))
            where = ", ".join(sorted({str(r.sources[stem]) for r in runs if stem in r.sources}))
            s.tables.append((f"{stem}.csv", f"{what}; from {where}", df))
        if not s.tables:
            verb = {"reinit": "reinit RUN", "cones": "cones RUN",
                    "regions": "regions train RUN", "measures": "measures RUN"}[key]  # fmt: skip
            s.text.append(f"Not computed for this run. Run <code>relugeom {html.escape(verb)} --out "
                          f"RUN/relugeom-{key}</code> and build the report again.")  # fmt: skip
        sections.append(s)
    return Report(title, sections, list(provenance))


def _analysis_figure(stem: str, df: pd.DataFrame) -> Figure | None:
    try:
        if stem == "reinit":
            from .reinit import reinit_heatmap

            return reinit_heatmap(df)
        if stem == "states_net":
            from .cones import state_distribution_figure

            return state_distribution_figure(df.drop(columns=["run"]) if df["run"].nunique() == 1 else df)
        if stem == "regions_summary" and "epoch" in df:
            from .regions import training_figure

            return training_figure(df.drop(columns=["run"]) if df["run"].nunique() == 1 else df)
        if stem == "measures" and "epoch" in df:
            from .measures import measures_over_epochs

            return measures_over_epochs(df)
    except (KeyError, ValueError, TypeError, IndexError):
        return None  # a table from another relugeom version: shown and downloadable, not drawn
    return None


# ------------------------------------------------------------------------------------------------- HTML

_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#233;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;font-size:13px;opacity:.85}
nav{padding:8px 28px;background:#eef1f4;font-size:13px}nav a{margin-right:14px;color:#235}
main{padding:6px 28px 40px;max-width:1200px}section{margin-top:22px}
h2{font-size:18px;border-bottom:1px solid #ccd;padding-bottom:4px}
figure{margin:10px 0 18px}figure img{max-width:100%;border:1px solid #e3e3e3;background:#fff}
figcaption{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border:1px solid #dde;padding:2px 6px;
text-align:right}th{background:#eef1f4}td.k,td:first-child{text-align:left;color:#444}
details{margin:6px 0 14px}summary{cursor:pointer;font-size:13px}a.dl{font-size:12px;margin-left:8px}
.note{font-size:12px;color:#666}code{background:#eef1f4;padding:0 3px}
"""


def _cell(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.4g}"
    return html.escape(str(v))


def _html_table(df: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in df.head(max_rows).itertuples(index=False))  # fmt: skip
    more = f'<p class="note">first {max_rows} of {len(df)} rows; download for all</p>' if len(df) > max_rows else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>{more}"


def _csv_uri(df: pd.DataFrame) -> str:
    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(df.to_csv(index=False).encode()).decode()


def to_html(report: Report) -> str:
    """The report as one HTML page with everything inside it (figures and downloads as data URIs)."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(report.title)}</title><style>{_STYLE}</style></head><body>",
        f"<header><h1>{html.escape(report.title)}</h1>",
        "<p>" + " &middot; ".join(f"{html.escape(k)} {html.escape(v)}" for k, v in report.provenance[:4]) + "</p>",
        "</header><nav>",
        *[f'<a href="#{s.anchor}">{html.escape(s.title.split(" (")[0])}</a>' for s in report.sections],
        '<a href="#provenance">Provenance</a></nav><main>',
    ]
    for s in report.sections:
        parts.append(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>')
        parts += [f'<p class="note">{t}</p>' for t in s.text]
        if s.pairs:
            parts.append("<table>" + "".join(f'<tr><td class="k">{k}</td><td class="k">{v}</td></tr>'
                                             for k, v in s.pairs) + "</table>")  # fmt: skip
        for caption, png in s.figures:
            uri = "data:image/png;base64," + base64.b64encode(png).decode()
            parts.append(f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
        for name, caption, df in s.tables:
            parts.append(f"<details{' open' if s.open_tables else ''}><summary>{html.escape(caption)} ({len(df)} rows)"
                         f'<a class="dl" download="{html.escape(name)}" href="{_csv_uri(df)}">download '
                         f"{html.escape(name)}</a></summary>{_html_table(df)}</details>")  # fmt: skip
        parts.append("</section>")
    parts.append('<section id="provenance"><h2>Provenance</h2><table>')
    parts += [f'<tr><td class="k">{html.escape(k)}</td><td class="k">{html.escape(v)}</td></tr>'
              for k, v in report.provenance]  # fmt: skip
    parts.append("</table></section></main></body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------- Markdown


def _md_table(df: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.head(max_rows).itertuples(index=False):
        lines.append("| " + " | ".join(html.unescape(_cell(v)).replace("|", "\\|") for v in row) + " |")
    if len(df) > max_rows:
        lines.append(f"\n*first {max_rows} of {len(df)} rows*")
    return "\n".join(lines)


def to_markdown(report: Report, assets: str) -> tuple[str, dict[str, bytes]]:
    """The report as Markdown for a lab notebook, and its files (``{ASSETS/NAME: bytes}``: the figures
    as PNG and every table as CSV, linked relatively from the Markdown)."""
    import re

    files: dict[str, bytes] = {}
    out = [f"# {report.title}", ""]
    for s in report.sections:
        out += [f"## {s.title}", ""]
        out += [re.sub(r"<[^>]+>", "`", html.unescape(t)).replace("``", "`") + "\n" for t in s.text]
        if s.pairs:
            out += ["| | |", "|---|---|"]
            out += [f"| {re.sub(r'<[^>]+>', '', html.unescape(k))} | {html.unescape(v)} |" for k, v in s.pairs]
            out.append("")
        for i, (caption, png) in enumerate(s.figures):
            name = f"{assets}/{s.anchor}_{i + 1}.png"
            files[name] = png
            out += [f"![{caption}]({name})", "", f"*{caption}*", ""]
        for name, caption, df in s.tables:
            path = f"{assets}/{name}"
            files[path] = df.to_csv(index=False).encode()
            out += [f"**{caption}** ([{name}]({path}))", "", _md_table(df), ""]
    out += ["## Provenance", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in report.provenance]
    return "\n".join(out) + "\n", files


def provenance_rows(runs: Sequence[RunTables], command: Sequence[str], now: str) -> list[tuple[str, str]]:
    """Who made the page and the runs: versions now and when each run was written, the commands, the date."""
    import platform

    import torch

    from .._version import __version__

    rows = [("relugeom", __version__), ("torch", torch.__version__), ("python", platform.python_version()),
            ("generated", now), ("command", " ".join(command))]  # fmt: skip
    for r in runs:
        v: Mapping[str, Any] = r.config.get("versions") or {}
        if v:
            rows.append((f"{r.label}: written with", ", ".join(f"{k} {val}" for k, val in v.items())))
        cmd = (r.config.get("recorder") or {}).get("command")
        if cmd:
            rows.append((f"{r.label}: training command", " ".join(map(str, cmd))))
        for stem, p in sorted(r.sources.items()):
            rows.append((f"{r.label}: {stem}", str(p)))
    return rows
