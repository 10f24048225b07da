"""Figures: the file format and resolution asked for, and the structure a reader relies on (no empty grid
cells, one legend, labelled axes, log scales where values span decades, a colour scale that the random
re-initialization row does not dominate)."""

import struct

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import LogNorm, Normalize

from _cli import run
from relugeom.report import FigureOutput, save_figure
from relugeom.report._layout import grid_shape

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<svg"}


def png_size(path):
    """(width, height) in pixels from the PNG's IHDR chunk (bytes 16-24), read without any imaging library."""
    data = path.read_bytes()[:24]
    assert data[:8] == MAGIC["png"] and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def is_format(path, fmt):
    head = path.read_bytes()[:4096]
    return MAGIC[fmt] in head if fmt == "svg" else head.startswith(MAGIC[fmt])


def assert_no_empty_axes(fig):
    """Every axes of the figure shows data, or holds only the figure's legend or a note (axis off); a hidden
    axes is an empty cell too."""
    for ax in fig.axes:
        assert ax.get_visible(), "a hidden (empty) grid cell"
        if not ax.axison:
            assert ax.get_legend() is not None or ax.texts, "an empty cell"
            continue
        assert ax.has_data(), f"empty axes {ax.get_title()!r}"


# ------------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_toy_writes_the_asked_format(fmt, tmp_path, capsys):
    code, out, err = run(["toy", "--out", str(tmp_path), "--fig-format", fmt], capsys)
    assert code == 0, err
    for name in ("flows", "preimages"):
        path = tmp_path / f"{name}.{fmt}"
        assert is_format(path, fmt), path
        assert str(path) in out
    assert not list(tmp_path.glob("*.png")) or fmt == "png"


def test_dpi_sets_the_pixel_size(tmp_path, capsys):
    sizes = {}
    for dpi in (50, 100):
        code, _, err = run(["toy", "--out", str(tmp_path / str(dpi)), "--dpi", str(dpi)], capsys)
        assert code == 0, err
        sizes[dpi] = png_size(tmp_path / str(dpi) / "flows.png")
    for a, b in zip(sizes[50], sizes[100]):
        assert abs(b - 2 * a) <= 4  # twice the dots per inch: twice the pixels (up to the tight bbox's rounding)


def test_every_drawing_verb_has_the_figure_options(capsys):
    from relugeom.cli import _register, cli

    _register()
    commands = [cli.commands[v] for v in ("stats", "cones", "measures", "reinit", "reproduce", "toy", "demo")]
    commands += [cli.commands["regions"].commands[v] for v in ("segment", "slice", "train")]
    for cmd in commands:
        names = {o for p in cmd.params for o in p.opts}
        assert {"--fig-format", "--dpi"} <= names, cmd.name


def test_figure_output_rejects_bad_values():
    with pytest.raises(ValueError):
        FigureOutput("jpg")
    with pytest.raises(ValueError):
        FigureOutput("png", 0)


def test_stats_pdf_at_a_low_dpi(tmp_path, capsys):
    import torch

    from relugeom import save_checkpoint
    from relugeom.experiments.models import build_model

    for e in range(2):
        save_checkpoint(tmp_path / "run" / "checkpoints" / f"epoch_{e:04d}.pt",
                        build_model("vgg9", in_channels=1, image_size=8, seed=e).state_dict(),
                        {"epoch": e, "arch": "vgg9"})  # fmt: skip
    code, out, err = run(["stats", str(tmp_path / "run"), "--out", str(tmp_path / "o"), "--fig-format", "pdf",
                          "--dpi", "40"], capsys)  # fmt: skip
    assert code == 0, err
    assert is_format(tmp_path / "o" / "histograms.pdf", "pdf") and is_format(tmp_path / "o" / "nl_epochs.pdf", "pdf")
    del torch


# ------------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("n", range(1, 18))
def test_grid_has_at_most_one_empty_cell_in_most_cases(n):
    rows, cols = grid_shape(n)
    assert rows * cols >= n and cols <= 4 and rows <= cols + 1
    # the fewest empty cells among the grids allowed (brute force over every shape)
    allowed = [(r, c) for c in range(1, 5) for r in range(1, 20) if r * c >= n and (r <= c + 1 or c == min(4, n))]
    assert rows * cols - n == min(r * c - n for r, c in allowed)


def _per_filter(n_layers, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    rows = []
    for li in range(n_layers):
        for _ in range(16):
            rows.append({"layer_index": li, "layer": f"features.{li}", "cos": rng.normal(shift, 0.1)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_layers", [1, 5, 6, 7, 16])
def test_histograms_have_no_empty_cell_and_labelled_y(n_layers):
    from relugeom.report.projection import cos_histograms

    fig = cos_histograms(_per_filter(n_layers, 0, -0.05), _per_filter(n_layers, 1), title="run x")
    assert_no_empty_axes(fig)
    data_axes = [ax for ax in fig.axes if ax.axison]
    assert len(data_axes) == n_layers
    assert all(ax.get_ylabel() == "filters" for ax in data_axes if ax.get_subplotspec().is_first_col())
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    assert len(legends) == 1
    assert fig._suptitle.get_text() == "run x"


def _summary(n_runs, epochs=4, layers=3):
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"run": f"s{r}", "layer_index": li, "layer": f"c{li}", "epoch": e,
                          "n_neg": float(np.clip(0.5 + 0.05 * e + rng.normal(0, 0.05), 0, 1))}
                         for r in range(n_runs) for li in range(layers) for e in range(epochs)])  # fmt: skip


def test_nl_over_epochs_integer_ticks_lr_drop_in_legend_and_bands_below_lines():
    from matplotlib.collections import PolyCollection

    from relugeom.report.projection import nl_over_epochs

    fig = nl_over_epochs(_summary(3), lr_drops=[2, 25])
    ax = fig.axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert all(float(t).is_integer() for t in ticks)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "learning-rate drop" in labels
    assert ax.get_xlim()[1] < 10  # the drop at 25, after the last epoch (3), is not drawn
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    lines = [ln for ln in ax.lines if ln.get_label().startswith(("1:", "2:", "3:"))]
    assert len(bands) == 3 and len(lines) == 3
    assert max(b.get_alpha() for b in bands) <= 0.2 and max(b.get_zorder() for b in bands) < min(
        ln.get_zorder() for ln in lines)


def _measures_table():
    rows = []
    for e in range(5):
        for m, v in (("train_loss", 2.0 / (e + 1)), ("test_loss", 2.2 / (e + 1)), ("generalization_gap", 0.2 / (e + 1)),
                     ("spectral_product", 10.0 ** (e + 1)), ("margin", 1.0 + 0.1 * e), ("l1_path", np.nan)):
            rows.append({"epoch": e, "measure": m, "value": v, "std_error": np.nan})
    return pd.DataFrame(rows)


def test_measures_figure_one_legend_log_scale_gap_axis_and_nan_note():
    from relugeom.report.measures import measures_over_epochs

    fig = measures_over_epochs(_measures_table())
    assert_no_empty_axes(fig)
    titles = {ax.get_title(): ax for ax in fig.axes if ax.axison and ax.get_title()}
    spectral = next(ax for t, ax in titles.items() if t.startswith("spectral_product"))
    margin = next(ax for t, ax in titles.items() if t.startswith("margin"))
    assert spectral.get_yscale() == "log" and margin.get_yscale() == "linear"  # 1e1..1e5 vs 1.0..1.4
    assert not any(t.startswith("l1_path") for t in titles)  # NaN at every epoch: no panel ...
    notes = [t.get_text() for ax in fig.axes for t in ax.texts] + [fig._supxlabel.get_text() if fig._supxlabel
                                                                     else ""]  # fmt: skip
    assert any("l1_path" in n for n in notes)  # ... but a note naming it
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
    assert len(legends) == 1
    twins = [ax for ax in fig.axes if ax.axison and not ax.get_title() and ax.get_ylabel()]
    assert twins and all("gap" in ax.get_ylabel() for ax in twins)


def test_reinit_scale_is_set_by_the_epoch_rows_not_the_random_row():
    from relugeom.report.reinit import RANDOM_EPOCH, reinit_heatmap

    rows = [{"run": "r", "layer_index": li, "epoch": e, "drop": 0.01 * li * (e + 1)} for li in range(4) for e in (0, 1)]
    rows += [{"run": "r", "layer_index": li, "epoch": RANDOM_EPOCH, "drop": 0.9} for li in range(4)]
    fig = reinit_heatmap(pd.DataFrame(rows))
    image = fig.axes[0].images[0]
    assert image.norm.vmax == pytest.approx(0.01 * 3 * 2)  # the largest drop among the epoch rows
    assert isinstance(image.norm, Normalize) and not isinstance(image.norm, LogNorm)
    assert len(fig.axes[0].texts) == 12  # every cell shows its value
    assert_no_empty_axes(fig)


def test_cone_state_lines_are_all_distinguishable():
    from relugeom.report.cones import state_distribution_figure
    from relugeom.stats.cones import STATES

    net = pd.DataFrame([{"epoch": e, "state": s, "fraction": 1.0 if s == STATES[0] else 0.0}
                        for e in range(3) for s in STATES])  # fmt: skip
    fig = state_distribution_figure(net)
    lines = [ln for ln in fig.axes[0].lines if ln.get_label().split()[0] in STATES]
    assert len(lines) == 4
    assert len({(ln.get_marker(), ln.get_linestyle()) for ln in lines}) == 4  # three of them lie on top of each other
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sum("0 at every epoch" in t for t in labels) == 3


def test_slice_figure_zoom_panel_points_and_boundary_in_the_legend(tmp_path):
    from relugeom.report.regions import slice_figure, zoom_box

    square = np.array([[-100.0, -100.0], [100.0, -100.0], [100.0, 100.0], [-100.0, 100.0]])
    small = [np.array([[x, y], [x + 0.5, y], [x + 0.5, y + 0.5], [x, y + 0.5]]) for x in np.arange(-1, 2, 0.5)
             for y in np.arange(-1, 2, 0.5)]  # fmt: skip
    polys = [square, *small]
    fig = slice_figure(polys, np.arange(len(polys)), [np.array([[-100.0, 0.0], [100.0, 0.0]])],
                       bounds=(-100, 100, -100, 100), zoom=True)  # fmt: skip
    assert len(fig.axes) == 2
    box = zoom_box(polys, np.array([[0, 0], [1, 0], [0, 1]]))
    assert fig.axes[1].get_xlim() == pytest.approx(box[:2]) and box[1] - box[0] < 10
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "decision boundary" in labels and "data points" in labels
    assert_no_empty_axes(fig)
    save_figure(fig, tmp_path / "s.png")


def test_toy_figures_have_axis_labels_and_legends():
    from relugeom.geometry.toy import flow_field, layer_nesting, toy_network
    from relugeom.report.toy import flows_figure

    net = toy_network(2, 3, seed=0)
    fig = flows_figure(flow_field(net), layer_nesting(net))
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel()
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == 1 + 3 and "layer 1" in labels[1]
