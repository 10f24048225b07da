"""``relugeom toy``: the 2- and 3-node circulant networks of Carlsson 2019 and their pictures (figs. 2-4)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..errors import RelugeomError
from ._common import echo_table, figure_options, out_option, seed_option, writable_folder


def _parse_params(text: str | None, nodes: int) -> list[list[float]] | None:
    if text is None:
        return None
    try:
        layers = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        raise RelugeomError(f"--params {text!r}: expected numbers like 'a,b,c;a,b,c'") from None
    bad = [p for p in layers if len(p) != nodes + 1]
    if bad or not layers:
        raise RelugeomError(f"--params: each layer of a {nodes}-node network takes {nodes + 1} numbers "
                            f"(the circulant row and the bias), got {bad or text!r}")  # fmt: skip
    return layers


@click.command("toy")
@click.option("--nodes", type=click.Choice(["2", "3"]), default="2", show_default=True, help="Nodes per layer.")
@click.option("--layers", "n_layers", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--params", default=None,
              help="Layers as 'a,b,c;a,b,c;...' (row then bias: eq. 19 for 2 nodes, a,b,c,d for eq. 20).")
@seed_option("Seed of the random near-identity layers.")
@click.option("--max-pieces", type=click.IntRange(1), default=300, show_default=True)
@out_option
@figure_options
def command(nodes, n_layers, params, seed, max_pieces, out, figures) -> None:  # noqa: ANN001
    """Render the pictures of Carlsson 2019 for a toy circulant network into --out (default ./relugeom-toy).

    Both: dual_basis.png (the first layer's planes, dual basis and a preimage cone, fig. 1) and preimages.png.
    2 nodes: flows.png (layer boundaries remapped to the input, fig. 2). 3 nodes: cells.png (cells and their
    images, fig. 3) and manifold.png (the piecewise-planar input manifold mapped to an affine output, fig. 4).
    Prints each layer's nesting: the paper's dual-basis definition and relugeom's face criterion.
    """
    import pandas as pd

    from ..geometry.toy import (
        affine_output_manifold,
        cells,
        dual_basis_data,
        flow_field,
        layer_nesting,
        point_preimages,
        toy_network,
    )
    from ..report.toy import cells_figure, dual_basis_figure, flows_figure, manifold_figure, preimages_figure

    d = int(nodes)
    out = writable_folder(out or Path("relugeom-toy"))
    net = toy_network(d, n_layers, params=_parse_params(params, d), seed=seed)
    nest = layer_nesting(net)
    paths = []
    ys = np.array([[0.5, 0.0], [0.0, 0.3]]) if d == 2 else np.array([[0.4, 0.0, 0.0], [0.3, 0.2, 0.0]])
    pre = point_preimages(net, ys, max_pieces=max_pieces)
    y_fig1 = np.array([0.5, 0.0]) if d == 2 else np.array([0.4, 0.0, 0.0])
    try:
        paths.append(figures.save(dual_basis_figure(dual_basis_data(net[0], y_fig1)), out, "dual_basis"))
    except RelugeomError as e:  # a singular first layer has no dual basis
        click.echo(f"dual_basis.png not drawn: {e}", err=True)
    paths.append(figures.save(preimages_figure(pre, ys), out, "preimages"))
    if d == 2:
        paths.append(figures.save(flows_figure(flow_field(net), nest), out, "flows"))
    else:
        paths.append(figures.save(cells_figure(cells(net[0], seed=seed)), out, "cells"))
        manifold = affine_output_manifold(net, max_pieces=max_pieces)
        paths.append(figures.save(manifold_figure(manifold), out, "manifold"))
    rows = [{"layer": k, "W row": np.array2string(w[0], precision=3), "bias": b[0]} for k, (w, b) in enumerate(net)]
    table = pd.DataFrame(rows).merge(pd.DataFrame(nest or [{"layer": 0}]), on="layer", how="left")
    echo_table(table)
    click.echo("\nwrote " + ", ".join(str(p) for p in paths))
