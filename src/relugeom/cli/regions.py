"""``relugeom regions``: published region counts (formula) and exact counts of a network (segment, slice, train)."""

from __future__ import annotations

import math
from pathlib import Path

import click
import numpy as np
import pandas as pd
import torch

from ..errors import ArchitectureError, BudgetExceeded, DataError, RelugeomError
from ..regions.points import gaussian_points, pick_points
from ._common import arch_option as _arch_option
from ._common import (
    describe_sources,
    echo_table,
    figure_options,
    find_run,
    format_option,
    note,
    out_option,
    parse_shape,
    schedule_options,
    seed_option,
    writable_folder,
    write_tables,
)


@click.group("regions")
def command() -> None:
    """Linear regions: the published formulas and bounds (Xiong et al. 2020), exact counts of a network along a
    segment, on a 2D slice, and over a training run (Hanin and Rolnick 2019)."""


def _ints(text: str | None) -> tuple[int, ...] | None:
    return None if text is None else parse_shape(text)


def _big(v: object) -> str:
    """An exact integer in full when short, else its leading digits and number of digits."""
    if v is None:
        return "-"
    if isinstance(v, int) and v.bit_length() > 13000:  # past Python's 4300-digit str() limit: from log10
        lg = math.log10(v)
        return f"{10 ** (lg - int(lg)):.4f}e{int(lg)} ({int(lg) + 1} digits)"
    s = str(v)
    return s if len(s) <= 30 else f"{s[:6]}...e{len(s) - 1} ({len(s)} digits)"


def _show(df: pd.DataFrame) -> None:
    view = df.copy()
    if "value" in view:
        view["value"] = [_big(v) for v in view["value"]]
    echo_table(view)


@command.command("formula")
@click.option("--input", "input_shape", default=None, help="Input shape C,L or C,H,W (PyTorch order).")
@click.option("--kernel", default=None, help="Kernel size k or kh,kw (one-layer CNN, Theorem 1).")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--filters", type=click.IntRange(min=0), default=None, help="Number of filters d_1.")
@click.option("--layers", default=None, help="Deep CNN for Theorems 2-3: 'k:s:d,k:s:d,...' (kernel:stride:filters).")
@click.option("--widths", default=None, help="Fully connected net n_0,n_1,...,n_L.")
@click.option("--method", type=click.Choice(["auto", "search", "profile", "flow", "literal"]), default="auto",
              show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=10**6, show_default=True,
              help="Stop (with an error) after this many steps instead of running for hours; it bounds all the "
                   "work (search, programmes, big-integer sums, the exact cross-check).")
@click.option("--no-exact", is_flag=True, help="Skip the exact count of random weights printed beside Theorem 1.")
def formula(input_shape, kernel, stride, filters, layers, widths, method, budget, no_exact) -> None:  # noqa: ANN001
    """Print the published counts exactly (big integers): Theorem 1 for --input/--kernel/--filters,
    Theorems 2-3 for --input/--layers, the fully connected results for --widths."""
    from ..regions.formulas import cnn_formula_caveat, cnn_max_regions, cnn_region_bounds, fc_region_bounds

    did = False
    if widths:
        _show(fc_region_bounds(list(_ints(widths)), budget=budget))
        did = True
    if input_shape and layers:
        specs = []
        for part in layers.split(","):
            try:
                k, s, d = (int(x) for x in part.split(":"))
            except ValueError:
                raise click.BadParameter(f"{part!r} is not kernel:stride:filters", param_hint="--layers") from None
            specs.append((k, s, d))
        _show(cnn_region_bounds(specs, _ints(input_shape), budget=budget))
        did = True
    if input_shape and kernel and filters is not None:
        shape, k = _ints(input_shape), _ints(kernel)
        k = k[0] if len(k) == 1 else k
        try:
            value = cnn_max_regions(shape, k, stride, filters, method=method, budget=budget)
            rows = [("theorem1_max_regions", _big(value), "as published (Xiong et al. 2020, Theorem 1 (i))")]
        except BudgetExceeded as e:
            from ..regions.formulas import cnn_max_regions_bounds

            b = cnn_max_regions_bounds(shape, k, stride, filters)
            click.echo(f"exact value out of reach ({e}); certified bounds instead", err=True)
            rows = [(f"theorem1_{side}_bound", _big(v), f"log10 = {math.log10(v):.3f} (certified; docs/regions.md)")
                    for side, v in (("lower", b.lower), ("upper", b.upper))]
        if not no_exact and cnn_formula_caveat(shape, k, stride, filters) and int(np.prod(shape)) <= 40:
            from ..regions.arrangement import random_layer_regions

            try:
                real = random_layer_regions(shape, k, stride, filters, seed=0, budget=budget)
                rows.append(("exact_count_random_weights", _big(real), "exact count of Gaussian weights (almost "
                                                                      "every weight; docs/regions.md)"))  # fmt: skip
            except BudgetExceeded:
                rows.append(("exact_count_random_weights", "-", f"not computed: more than --budget {budget} steps "
                                                                "(raise it, or pass --no-exact)"))  # fmt: skip
        echo_table(pd.DataFrame(rows, columns=["quantity", "value", "note"]))
        did = True
    if not did:
        raise click.UsageError("give --widths, or --input with --kernel and --filters, or --input with --layers")


# ------------------------------------------------------------------------------------------------- models
source_arg = click.argument("source")
arch_option = _arch_option("Architecture of a bare state dict")
points_options = [
    click.option("--points", "points", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                 help="Data points: a tensor file (.pt, loaded with weights_only=True) or .npy, shape (N, *input)."),
    click.option("--dataset", default=None, help="Take data points from this data set's validation split "
                                                 "(digits, mnist1d, mnist, cifar10, ...). Default: the run "
                                                 "folder's own data set (its config.json)."),
    click.option("--data-dir", default=None, help="Folder of the data set files."),
    click.option("--input-shape", default=None, help="Input shape of random Gaussian points (e.g. 1,8,8)."),
    seed_option("Which points are drawn."),
]  # fmt: skip


def _with_points(f):  # noqa: ANN001, ANN202
    for opt in reversed(points_options):
        f = opt(f)
    return f


def _load_model(source: str, arch: str | None):  # noqa: ANN202
    """The model of a checkpoint, or of a run folder's last checkpoint (the trained network), and the line
    that says which checkpoint of a run it is (shown once the data points are read too), or None."""
    from torch import nn

    from ..sources import iter_sources

    items = list(iter_sources(source, arch=arch))
    item = items[-1]
    obj = item.load()
    if not isinstance(obj, nn.Module):
        raise ArchitectureError(f"{source}: a bare state dict; {item.rebuild_hint()} and evaluated")
    which = f"model: {Path(source).name} at epoch {item.epoch} (its last checkpoint)" if len(items) > 1 else None
    return obj, item, which


def _points(points, dataset, data_dir, input_shape, seed, n, item=None, run=None) -> torch.Tensor:  # noqa: ANN001
    """The data points: --points, --dataset, else the run's own data set (its config.json), else Gaussian
    points of --input-shape or of the checkpoint's input shape."""
    if points is not None:
        return _read_points(points)
    if dataset:
        from ..experiments.data import load_dataset

        return load_dataset(dataset, data_dir).val.x.double()
    if input_shape is None and run is not None:
        from ..experiments.data import Batches
        from ..experiments.train import prepare_data, read_run_config

        config = read_run_config(run)
        data = prepare_data(config)
        X = next(iter(Batches(data.val, 256, resize=data.resize)))[0]
        note(f"points: {len(X)} samples of the validation split of {config.dataset} (the run's data set, from "
             f"{run / 'config.json'}); --dataset, --points or --input-shape choose others")  # fmt: skip
        return X.double()
    shape = parse_shape(input_shape, "--input-shape") if input_shape else None
    if shape is None and item is not None and item.meta.get("input_shape"):
        shape = tuple(item.meta["input_shape"])
        note(f"points: Gaussian N(0, I) of shape {','.join(map(str, shape))} (the checkpoint's input shape; "
             "no data set known: pass --dataset or --points for data)")  # fmt: skip
    if shape is None:
        raise click.UsageError("give --points, --dataset or --input-shape (for random points)")
    if input_shape and item is not None:
        _check_fits(item, shape)
    return gaussian_points(shape, max(n, 3), seed)


def _check_fits(item, shape: tuple[int, ...]) -> None:  # noqa: ANN001
    """--input-shape against the model (one forward pass of zeros): a shape that does not fit is a usage error."""
    from torch import nn

    model = item.load()
    if not isinstance(model, nn.Module):
        return
    param = next(model.parameters(), None)
    if math.prod(shape) > 2**20:
        raise click.BadParameter(f"{shape} has {math.prod(shape)} values per input, more than the 2^20 that exact "
                                 "region counts take; use the model's own input size", param_hint="--input-shape")
    try:
        with torch.no_grad():
            model.eval()(torch.zeros((1, *shape), dtype=param.dtype if param is not None else torch.float32))
    except (RuntimeError, ValueError, IndexError) as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise click.BadParameter(f"{shape} does not fit the model ({first})", param_hint="--input-shape") from None


def _read_points(path: Path) -> torch.Tensor:
    """Points from a .npy file (no pickles) or a torch tensor file (weights_only), as float64 (N, *input)."""
    from .._torchfile import open_regular
    from ..checkpoints import load_tensors

    if path.suffix == ".npy":
        import os

        fd = open_regular(path)  # a FIFO or a device is refused before anything blocks
        try:
            with os.fdopen(fd, "rb") as f:
                X = torch.from_numpy(np.load(f, allow_pickle=False))
        except ValueError as e:
            why = "it holds Python objects (a pickle), not numbers" if "allow_pickle" in str(e) else str(e)[:120]
            raise DataError(f"{path}: not a .npy array of points ({why})") from None
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: cannot be read as a .npy array ({str(e)[:120]})") from None
    else:
        X = load_tensors(path)
        if isinstance(X, dict):
            X = X.get("x", X.get("X"))
    if not torch.is_tensor(X) or X.ndim < 2 or X.is_complex() or X.dtype == torch.bool:
        raise DataError(f"{path}: expected a real tensor of points of shape (N, *input) (or a dict with key 'x')")
    X = X.double()
    if not bool(torch.isfinite(X).all()):
        raise DataError(f"{path}: the points hold NaN or inf values")
    return X


@command.command("segment")
@source_arg
@arch_option
@_with_points
@click.option("--extend", type=float, default=0.0, show_default=True, help="Extend the segment by this fraction.")
@out_option
@format_option
@figure_options
def segment(source, arch, points, dataset, data_dir, input_shape, seed, extend, out, fmt, figures) -> None:  # noqa: ANN001
    """Exact breakpoints, activation and linear regions along the segment between two data points."""
    from ..regions.segment import regions_on_segment
    from ..report.regions import segment_figure

    out = writable_folder(out or Path("relugeom-regions"))
    model, item, which = _load_model(source, arch)
    a, b = pick_points(_points(points, dataset, data_dir, input_shape, seed, 2, item, find_run(source)), 2, seed)
    if which:
        note(which)
    d = b - a
    seg = regions_on_segment(model, a - extend * d, b + extend * d)
    pieces = seg.pieces.assign(value_at_0=[v.tolist() for v in seg.pieces.value_at_0],
                               slope=[v.tolist() for v in seg.pieces.slope])  # fmt: skip
    paths = write_tables(out, {"segment": pieces}, fmt)
    lo, hi = -extend, 1 + extend  # a and b on the extended segment's t in [0, 1]
    fig = segment_figure(seg.pieces, marks={"a": (0 - lo) / (hi - lo), "b": (1 - lo) / (hi - lo)},
                         title=f"{Path(source).name}: {seg.n_activation_regions:,} activation regions, "
                               f"{seg.n_linear_regions:,} linear regions on the segment a-b (exact)")  # fmt: skip
    paths.append(figures.save(fig, out, "segment"))
    click.echo(f"{seg.n_activation_regions} activation regions, {seg.n_linear_regions} linear regions, "
               f"{len(seg.breakpoints)} breakpoints (exact)")  # fmt: skip
    for p in paths:
        click.echo(f"wrote {p}")


@command.command("slice")
@source_arg
@arch_option
@_with_points
@click.option("--bounds", default=None, help="Box z1min,z1max,z2min,z2max in slice coordinates; default: the "
                                             "whole plane (a box that provably holds every vertex).")
@click.option("--verify-points", type=click.IntRange(min=0), default=500, show_default=True)
@click.option("--budget", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Stop (with an error) after this many cell cuts instead of running for hours.")
@out_option
@format_option
@figure_options
def slice_(source, arch, points, dataset, data_dir, input_shape, seed, bounds, verify_points, budget, out, fmt,
           figures) -> None:  # noqa: ANN001
    """Exact partition of the plane through three data points a, b, c (a + z1 (b - a) + z2 (c - a))."""
    from ..regions.slice import partition_2d
    from ..report.regions import slice_figure

    out = writable_folder(out or Path("relugeom-regions"))
    model, item, which = _load_model(source, arch)
    a, b, c = pick_points(_points(points, dataset, data_dir, input_shape, seed, 3, item, find_run(source)), 3, seed)
    if which:
        note(which)
    box = None
    if bounds:
        try:
            box = tuple(float(x) for x in bounds.split(","))
        except ValueError:
            raise click.BadParameter(f"{bounds!r} is not four numbers", param_hint="--bounds") from None
    P = partition_2d(model, a, b - a, c - a, box, budget=budget)
    tables = {"slice": P.to_frame()}
    if verify_points:
        v = P.verify(n_points=verify_points, seed=seed)
        tables["verify"] = v
        if not bool(v.loc[0, "ok"]):
            raise RelugeomError(f"verification against forward passes failed: {v.to_dict('records')[0]}")
    paths = write_tables(out, tables, fmt)
    where = "whole plane" if P.whole_plane else f"box {P.bounds}"
    fig = slice_figure(P.polygons, P.region, P.decision_boundary(), bounds=P.bounds, zoom=P.whole_plane,
                       title=f"{Path(source).name}: {P.n_regions:,} activation regions, {P.n_linear_regions:,} "
                             f"linear regions on the {where} through a, b, c (exact)")  # fmt: skip
    paths.append(figures.save(fig, out, "slice"))
    click.echo(f"{P.n_regions} activation regions, {P.n_linear_regions} linear regions on the {where} (exact)")
    if verify_points:
        click.echo(f"verified at {verify_points} random points: ok")
    for p in paths:
        click.echo(f"wrote {p}")


@command.command("train")
@click.argument("sources", nargs=-1, required=True)
@arch_option
@_with_points
@click.option("--lines", "n_lines", type=click.IntRange(min=0), default=4, show_default=True)
@click.option("--planes", "n_planes", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--extend", type=float, default=0.5, show_default=True)
@out_option
@format_option
@figure_options
@schedule_options
def train(sources, arch, points, dataset, data_dir, input_shape, seed, n_lines, n_planes, extend, out, fmt,  # noqa: ANN001
          figures, schedule) -> None:  # fmt: skip
    """Exact region counts on lines / planes through data points for every checkpoint of a run."""
    from ..regions.training import regions_over_training, training_summary
    from ..report.regions import training_figure
    from ..sources import iter_sources

    out = writable_folder(out or Path("relugeom-regions"))
    item = next(iter_sources(list(sources), arch=arch))
    X = _points(points, dataset, data_dir, input_shape, seed, 3, item, find_run(sources))
    with schedule.open(out, "regions_train") as sched:
        df = regions_over_training(list(sources), X, n_lines=n_lines, n_planes=n_planes, extend=extend, seed=seed,
                                   arch=arch, **sched)  # fmt: skip
    summ = training_summary(df)
    paths = write_tables(out, {"regions": df, "regions_summary": summ}, fmt)
    if "epoch" in summ:
        paths.append(figures.save(training_figure(summ, title=describe_sources(sources)), out, "regions_epochs"))
    echo_table(summ)
    for p in paths:
        click.echo(f"wrote {p}")
