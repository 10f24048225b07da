"""Critical layers by weight re-initialization (Gamba et al. 2020 sec. 3.3, figs. 2, 16, 18, 19, 23, 24;
Zhang, Bengio and Singer, "Are all layers created equal?").

For a trained network, each convolutional layer l and each reference state e (a checkpoint epoch,
or a fresh random initialisation), layer l's weight and bias are reset to their values at e, all
other parameters staying trained, and the top-1 accuracy is measured. The table records::

    drop(l, e) = (acc_trained - acc_reset(l, e)) / acc_trained

the relative drop of Gamba et al. 2020's heatmaps (rows: epochs, columns: layers). Only the convolution's
``weight`` and ``bias`` are reset; batch-norm layers (scale, shift and running statistics) keep
their trained values, and the evaluation is in ``eval()`` mode (no dropout, BN running stats).

Reuse: resetting layer l changes only the nodes of the network's graph (:mod:`relugeom.graph`) that
depend on it, so for every batch the trained network is run once, node by node, and as soon as every value
that layer l's dependants read from outside (its input, and in a residual network the shortcut values they
are added to) has been computed, those dependants alone are recomputed, once per reference state. This works
for any network the walker reads, residual ones included; the trained pass is checked against the model's own
forward on the first batch, and a model whose graph cannot be read (or does not reproduce it) is evaluated in
full per state, with a warning (``reuse=False`` forces that naive path, the baseline of
``benchmarks/bench_reinit.py``).
"""

from __future__ import annotations

import copy
import functools
import math
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._progress import progress
from .._repr import short_repr
from ..errors import DataError, RelugeomError, RelugeomWarning, UnsupportedLayerError, warn
from ..graph import Graph, Node, walk
from ..layers import find_layers

RANDOM_EPOCH = -1  # the ``epoch`` of the fresh random initialisation in the tables


@dataclass
class _Reset:
    """What resetting one layer recomputes: its dependants in graph order, the outside values they read (the
    frontier), the graph position after which all of those exist (the trigger), and each dependant's last
    reader among them."""

    name: str
    nodes: list[Node]
    frontier: set[Node]
    trigger: int
    last: dict[Node, int]


def _plan(graph: Graph, name: str) -> _Reset | None:
    calls = graph.calls(name)
    if not calls:
        return None
    desc = graph.descendants(calls)
    nodes = [n for n in graph.nodes if n in desc]
    frontier = {i for n in nodes for i in n.inputs if i not in desc}
    last = {n: max((u.index for u in n.users if u in desc), default=n.index) for n in nodes}
    return _Reset(name, nodes, frontier, max(i.index for i in frontier), last)


def _recompute(graph: Graph, reset: _Reset, values: dict[Node, Any]) -> Any:
    """The network's output with ``reset``'s dependants recomputed (the other values read from ``values``)."""
    local: dict[Node, Any] = {}
    view = ChainMap(local, values)
    for node in reset.nodes:
        local[node] = graph.compute(node, view)
        for i in node.inputs:
            if i in local and reset.last[i] <= node.index:
                del local[i]
    return local[graph.output] if graph.output in local else values[graph.output]


def _sweep(graph: Graph, resets: list[_Reset], x: torch.Tensor, on_reset: Callable[[_Reset, Callable[[], Any]], None]
           ) -> Any:  # fmt: skip
    """One trained pass over the graph; at each reset's trigger, ``on_reset(reset, recompute)``. Values are kept
    while a later node or a pending reset reads them."""
    keep = dict(graph.last_use)
    for r in resets:
        for f in r.frontier:
            keep[f] = max(keep[f], r.trigger)
    free_at: dict[int, list[Node]] = {}
    for node, t in keep.items():
        free_at.setdefault(t, []).append(node)
    at: dict[int, list[_Reset]] = {}
    for r in resets:
        at.setdefault(r.trigger, []).append(r)
    values: dict[Node, Any] = {}
    out = None
    for node in graph.nodes:
        values[node] = x if node is graph.input else graph.compute(node, values)
        if node is graph.output:
            out = values[node]
        for r in at.get(node.index, []):
            on_reset(r, lambda r=r: _recompute(graph, r, values))
        for done in free_at.get(node.index, []):
            values.pop(done, None)
    return out


def _batches(data, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:  # noqa: ANN001
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if x.shape[0] != y.shape[0]:
            raise DataError(f"data: {x.shape[0]} inputs but {y.shape[0]} labels")
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return data


@torch.no_grad()
def reinit_accuracy(
    model: nn.Module,
    states: Mapping[int, Mapping[str, torch.Tensor]],
    data,  # noqa: ANN001
    *,
    layers: Sequence[str] | None = None,
    batch_size: int = 256,
    reuse: bool = True,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Accuracy of ``model`` with one conv layer at a time reset to each reference state.

    ``states`` maps a reference epoch (``RANDOM_EPOCH`` for a random init) to a state dict holding
    at least ``LAYER.weight`` (and ``LAYER.bias``) of the layers analysed; ``data`` is ``(X, y)``
    or an iterable of batches. ``layers`` defaults to every conv layer. Returns one row per
    (layer, epoch) with ``layer``, ``layer_index``, ``epoch``, ``acc_trained``, ``acc_reset``,
    ``drop`` = (acc_trained - acc_reset) / acc_trained. The model is restored afterwards.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)).eval()
    >>> X = torch.randn(32, 1, 4, 4)
    >>> y = net(X).argmax(1)  # labels the model gets all right
    >>> zero = {"0.weight": torch.zeros(2, 1, 3, 3), "0.bias": torch.zeros(2)}  # a dead layer: constant output
    >>> df = reinit_accuracy(net, {1: {k: v.clone() for k, v in net.state_dict().items()}, 0: zero}, (X, y))
    >>> df[["layer", "epoch", "acc_trained", "drop"]].values.tolist()[0]  # reset to its own weights: no drop
    ['0', 1, 1.0, 0.0]
    >>> bool(df.acc_reset.iloc[1] == (y == net(torch.zeros(1, 1, 4, 4)).argmax(1)).float().mean())
    True
    """
    model = model.to(device).eval()
    found = {la.name: la for la in find_layers(model, linear=False)}
    names = list(found) if layers is None else list(layers)
    for name in names:
        if name not in found:
            raise RelugeomError(f"layer {name!r}: not a conv layer of the model (conv layers: {', '.join(found)})")
    if not names:
        raise RelugeomError("the model has no conv layer to re-initialise")
    epochs = list(states)
    for e, sd in states.items():
        for name in names:
            w = sd.get(f"{name}.weight")
            if w is None or tuple(w.shape) != tuple(found[name].module.weight.shape):
                raise RelugeomError(f"reference state of epoch {e}: no weight of layer {name} with the trained shape")
    modules = {name: found[name].module for name in names}
    ref = {(name, e): (states[e][f"{name}.weight"].to(device, modules[name].weight.dtype),
                       None if modules[name].bias is None else states[e][f"{name}.bias"].to(device))
           for name in names for e in epochs}  # fmt: skip
    correct = {(name, e): 0 for name in names for e in epochs}
    n_correct, n = 0, 0
    graph: Graph | None = None
    resets: list[_Reset] = []
    checked = not reuse

    def swap(name: str, w: torch.Tensor, b: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        mod = modules[name]
        old = (mod.weight.data, None if mod.bias is None else mod.bias.data)
        mod.weight.data = w
        if mod.bias is not None and b is not None:
            mod.bias.data = b
        return old

    def hits(out: torch.Tensor, y: torch.Tensor) -> int:
        return int((out.argmax(1) == y).sum())

    for x, y in progress(_batches(data, batch_size), desc="re-init"):
        x, y = x.to(device), y.to(device)
        n += int(y.shape[0])
        if not checked:
            checked = True
            try:
                graph = walk(model, x)
                plans = [_plan(graph, name) for name in names]
                resets = [r for r in plans if r is not None]
                if not torch.allclose(graph.run(x), model(x), atol=1e-5, rtol=1e-4):
                    raise UnsupportedLayerError("the graph's output differs from the model's")
            except UnsupportedLayerError as e:
                warn(f"re-initialization: no activation reuse ({e}); every reset runs the whole network",
                     RelugeomWarning)  # fmt: skip
                graph, resets = None, []
        if graph is not None:
            fast = {r.name for r in resets}

            def on_reset(r: _Reset, recompute: Callable[[], Any], y: torch.Tensor = y) -> None:
                for e in epochs:
                    old = swap(r.name, *ref[(r.name, e)])
                    correct[(r.name, e)] += hits(recompute(), y)
                    swap(r.name, *old)

            trained = hits(_sweep(graph, resets, x, on_reset), y)
            n_correct += trained
            for name in names:
                if name not in fast:  # never called by the forward pass: a reset changes nothing
                    for e in epochs:
                        correct[(name, e)] += trained
            continue
        n_correct += hits(model(x), y)
        for name in names:
            for e in epochs:
                old = swap(name, *ref[(name, e)])
                correct[(name, e)] += hits(model(x), y)
                swap(name, *old)
    if n == 0:
        raise DataError("re-initialization: the evaluation data is empty")
    acc = n_correct / n
    if acc == 0:
        warn("the trained model has accuracy 0: relative drops are undefined (NaN)", RelugeomWarning)
    rows = []
    for k, name in enumerate(names):
        for e in epochs:
            a = correct[(name, e)] / n
            rows.append({"layer": name, "layer_index": k, "epoch": e, "acc_trained": acc, "acc_reset": a,
                         "drop": (acc - a) / acc if acc > 0 else math.nan})  # fmt: skip
    return pd.DataFrame(rows)


def _select(available: list[int], epochs: Sequence[int] | None, run_dir: Path) -> list[int]:
    if epochs is None:
        return available
    from ..errors import SkippedWarning

    missing = [e for e in epochs if e not in available]
    if missing:
        warn(f"{run_dir}: no readable checkpoint for epoch(s) {missing} (available: {available}); left out",
             SkippedWarning)  # fmt: skip
    chosen = [e for e in epochs if e in available]
    if not chosen:
        raise RelugeomError(f"{run_dir}: none of the epochs {list(epochs)} has a readable checkpoint")
    return chosen


def reinit_run(
    run_dir: str | Path,
    *,
    epochs: Sequence[int] | None = None,
    random: bool = False,
    split: str = "test",
    seed: int | None = None,
    batch_size: int = 256,
    reuse: bool = True,
    device: str | torch.device = "cpu",
    data=None,  # noqa: ANN001
    arch: str | None = None,
    executor: Any = None,
    parts: str | Path | None = None,
    shard: tuple[int, int] | None = None,
    label: str | None = None,
) -> pd.DataFrame:
    """Re-initialization table of a run folder (its last checkpoint is the trained model).

    ``epochs``: reference checkpoints (default: all); ``random``: also a fresh initialisation of
    the run's scheme with ``seed`` (``epoch = -1``; default the run's seed + 1000, so that it is
    never the run's own epoch 0); ``split``: ``test`` or ``val`` of the run's data
    set (re-read as ``config.json`` says; corruptions only ever touch the training split), unless
    ``data`` (``(X, y)`` or batches) is given. A missing or corrupt checkpoint is warned about and
    left out; the table gains ``run`` (``label``, default the folder's name; see
    :func:`relugeom.sources.run_labels` for several runs) and ``seed`` columns. ``arch`` overrides the run's
    architecture; for a run recorded from your own training loop with your own model, name its class or
    factory as ``module:QualName`` (its recorded ``model_kwargs`` rebuild it; the fresh random init is then
    the factory's own, seeded with ``seed``).

    Each (reference epoch, layer) is one work item with its own part: ``executor``, ``parts`` and ``shard`` run
    them as :func:`~relugeom.sources.map_sources` runs checkpoints (each part records the trained and the
    reference checkpoint). The items still to compute run as jobs that keep the activation reuse of
    :func:`reinit_accuracy`: in this process one job (one trained pass per batch for every item), on an
    executor one job per reference epoch (its layers share the trained pass).

    Example
    -------
    >>> import tempfile
    >>> from relugeom.checkpoints import Run
    >>> from relugeom.experiments.models import build_model
    >>> run = Run(tempfile.mkdtemp())  # a run folder with epochs 0 and 1, as `relugeom train` writes it
    >>> nets = [build_model("lenet", in_channels=1, image_size=8, seed=e) for e in (0, 1)]
    >>> with run.lock():
    ...     _ = run.write_config({"config": {"arch": "lenet", "dataset": "digits", "epochs": 1}, "data": {},
    ...                           "lr_drops": []})
    ...     for e, net in enumerate(nets):
    ...         run.commit_epoch(e, net.state_dict(), {"epoch": e, "arch": "lenet"}, [{"epoch": e}], {"epoch": e})
    >>> X = torch.randn(32, 1, 8, 8)
    >>> df = reinit_run(run.path, data=(X, nets[1].eval()(X).argmax(1)))
    >>> df.layer.nunique(), float(df[df.epoch == 1]["drop"].abs().max())  # 6 conv layers; the trained epoch's weights
    (6, 0.0)
    """
    from ..checkpoints import Run, load_checkpoint
    from ..errors import CheckpointError, SkippedWarning
    from ..parallel import Task, fingerprint, part_name, reraise_for_debugging, run_tasks
    from .train import read_run_config

    run = Run(run_dir)
    config = read_run_config(run.path)
    series = run.checkpoints()
    trained = None
    for entry in reversed(series):  # the trained model: the last checkpoint that loads
        try:
            trained = (entry, load_checkpoint(entry.path).state_dict)
            break
        except CheckpointError as e:
            warn(f"{e}; epoch {entry.epoch} left out", SkippedWarning)
    if trained is None:
        raise RelugeomError(f"{run_dir}: no readable checkpoint")
    final, final_sd = trained
    arch = arch or config.arch
    if arch is None:
        recorded = next((e.meta.get("model_factory") or e.meta.get("model_class") for e in series
                         if e.meta.get("model_class")), None)  # fmt: skip
        hint = f"pass --arch {recorded}" if recorded else "pass --arch"
        raise RelugeomError(f"{run_dir}: the run names no relugeom architecture; {hint} to rebuild its model "
                            "(relugeom imports only code you name)")  # fmt: skip
    kwargs = next((e.meta["model_kwargs"] for e in reversed(series) if isinstance(e.meta.get("model_kwargs"), dict)),
                  {}) if ":" in arch else {}  # fmt: skip
    layers = [la.name for la in find_layers(_build(run.path, arch, kwargs, final_sd), linear=False)]
    if not layers:
        raise RelugeomError(f"{run_dir}: the model has no conv layer to re-initialise")
    if split not in ("test", "val") and data is None:
        raise RelugeomError(f"split must be test or val, got {split!r}")
    by_epoch = {e.epoch: e.path for e in series if e.epoch <= final.epoch}
    refs: dict[int, Path | None] = {e: by_epoch[e] for e in _select(sorted(by_epoch), epochs, run_dir)}
    if random:
        refs[RANDOM_EPOCH] = None
    options = {"split": split, "seed": (config.seed or 0) + 1000 if seed is None else seed, "batch_size": batch_size,
               "reuse": reuse, "device": str(device), "data": data, "arch": arch, "kwargs": kwargs,
               "init": config.init or "kaiming"}  # fmt: skip
    spec = fingerprint(_reinit_item, options)
    tasks = []
    for k, layer in enumerate(layers):
        for e, ref in refs.items():
            name = part_name(run.name, f"L{k:02d}", layer, "random" if ref is None else f"epoch{e:04d}",
                             fingerprint(str(final.path.resolve()))[:10])  # fmt: skip
            sources = (final.path,) if ref is None else (final.path, ref)
            group = "all" if executor is None else f"epoch{e}"
            tasks.append(Task(name, str(ref or final.path), _reinit_item,
                              (run.path, final.path, ref, e, layer, k, options), sources, spec, group,
                              _reinit_items))  # fmt: skip
    outcomes = run_tasks(tasks, executor=executor, parts=parts, shard=shard, desc="reinit")
    frames, reported = [], set()
    for outcome in outcomes:
        if outcome.error is not None:
            reraise_for_debugging(outcome)
            if outcome.error not in reported:  # a bad reference checkpoint: once, not once per layer
                reported.add(outcome.error)
                warn(f"{outcome.error}; left out", SkippedWarning)
            continue
        frames.append(outcome.tables)
    if not frames:
        raise RelugeomError(f"{run_dir}: no re-initialization could be evaluated")
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "seed", pd.array([config.seed] * len(df), dtype="Int64"))
    df.insert(0, "run", label or run.name)
    df["trained_epoch"] = final.epoch
    return df


def _build(run_dir: Path, arch: str, kwargs: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """The run's model with ``state``: a relugeom architecture, or a ``module:QualName`` factory with ``kwargs``."""
    from .models import model_from_factory, model_from_state_dict

    where = f"{run_dir}: "
    if ":" in arch:
        return model_from_factory(arch, state, dict(kwargs), where)
    return model_from_state_dict(arch, state, where=where)


@functools.lru_cache(maxsize=4)
def _trained(run_dir: Path, final: Path, stamp: tuple, arch: str, kwargs_json: str) -> nn.Module:
    """The trained model, once per process (``stamp``: the checkpoint's size and mtime)."""
    import json

    from ..checkpoints import load_checkpoint

    return _build(run_dir, arch, json.loads(kwargs_json), load_checkpoint(final).state_dict)


@functools.lru_cache(maxsize=4)
def _eval_data(run_dir: Path, split: str, batch_size: int, stamp: tuple) -> Any:
    """The run's test or validation batches, read once per process (``stamp``: config.json's size and mtime)."""
    from .data import Batches
    from .train import prepare_data, read_run_config

    config = read_run_config(run_dir)
    splits = prepare_data(config)
    part = splits.test if split == "test" else splits.val
    if part is None or len(part) == 0:
        raise DataError(f"{run_dir}: the {split} split of {config.dataset} is empty; use --split val")
    return list(Batches(part, batch_size, resize=splits.resize))


def _reference(ref: Path | None, model: nn.Module, options: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The state a layer is reset to: a reference checkpoint's, or (``ref`` None) a fresh seeded initialisation."""
    from ..checkpoints import load_checkpoint
    from .models import build_model, import_factory, infer_kwargs

    arch, kwargs = options["arch"], options["kwargs"]
    if ref is not None:
        return dict(load_checkpoint(ref).state_dict)
    if ":" in arch:
        with torch.random.fork_rng(devices=[]):  # seeded, leaving the caller's random state alone
            torch.manual_seed(options["seed"])
            return import_factory(arch)(**kwargs).state_dict()
    return build_model(arch, **infer_kwargs(arch, model.state_dict()), init=options["init"],
                       seed=options["seed"]).state_dict()  # fmt: skip


def _reinit_items(items: Sequence[tuple]) -> list[pd.DataFrame | Exception]:
    """Work items of :func:`reinit_run` as one job, all of one trained checkpoint: every (epoch, layer) asked for,
    in one :func:`reinit_accuracy` call (one trained pass per batch); an item whose reference checkpoint cannot
    be read comes back as its error."""
    import json

    run_dir, final, _, _, _, _, options = items[0]
    st = final.stat()
    # a copy of the process's cached model: jobs on a thread pool must not swap each other's layers
    model = copy.deepcopy(_trained(run_dir, final, (st.st_size, st.st_mtime_ns), options["arch"],
                                   json.dumps(options["kwargs"], sort_keys=True)))  # fmt: skip
    states: dict[int, Mapping[str, torch.Tensor]] = {}
    failed: dict[int, Exception] = {}
    layers: dict[str, int] = {}
    for _, _, ref, epoch, layer, k, _ in items:
        if epoch not in states and epoch not in failed:
            try:
                states[epoch] = _reference(ref, model, options)
            except RelugeomError as e:
                failed[epoch] = e
        if epoch in states:
            w = states[epoch].get(f"{layer}.weight")
            if w is None or tuple(w.shape) != tuple(model.get_submodule(layer).weight.shape):
                failed[epoch] = RelugeomError(f"{ref}: no weight of layer {layer} with the trained shape")
                del states[epoch]
            else:
                layers[layer] = k
    df = pd.DataFrame()
    if states:
        data = options["data"]
        if data is None:
            cst = (run_dir / "config.json").stat()
            data = _eval_data(run_dir, options["split"], options["batch_size"], (cst.st_size, cst.st_mtime_ns))
        layer_order = sorted(layers, key=layers.get)
        df = reinit_accuracy(model, states, data, layers=layer_order, batch_size=options["batch_size"],
                             reuse=options["reuse"], device=options["device"])  # fmt: skip
        df["layer_index"] = df["layer"].map(layers)
    out: list[pd.DataFrame | Exception] = []
    for _, _, _, epoch, layer, _, _ in items:
        if epoch in failed:
            out.append(failed[epoch])
        else:
            out.append(df[(df["layer"] == layer) & (df["epoch"] == epoch)].reset_index(drop=True))
    return out


def _reinit_item(run_dir: Path, final: Path, ref: Path | None, epoch: int, layer: str, layer_index: int,
                 options: Mapping[str, Any]) -> pd.DataFrame:  # fmt: skip
    """One work item of :func:`reinit_run` alone: the accuracy with ``layer`` reset to its state at ``epoch``."""
    (got,) = _reinit_items([(run_dir, final, ref, epoch, layer, layer_index, options)])
    if isinstance(got, Exception):
        raise got
    return got


@dataclass(frozen=True)
class CriticalBias:
    """Per-layer n_l at the end of training next to the re-initialization drop (Gamba et al. 2020 figs. 2
    and 7), and Spearman's rank correlations of the drop with n_l and with the bias |2 n_l - 1|."""

    __repr__ = short_repr

    table: pd.DataFrame
    rho: float
    pvalue: float
    rho_bias: float
    pvalue_bias: float


def critical_vs_bias(drops: pd.DataFrame, summary: pd.DataFrame) -> CriticalBias:
    """Compare the re-initialization drops with n_l of the trained model.

    ``drops``: :func:`reinit_accuracy` / :func:`reinit_run` rows (the mean over the checkpoint epochs,
    random init excluded, and over runs is each layer's drop); ``summary``: ``layer_summary`` of the
    trained checkpoints (the last epoch of each run is used). Layers are matched by name.

    Example
    -------
    >>> drops = pd.DataFrame({"layer": ["a", "b", "c"], "layer_index": [0, 1, 2], "epoch": 0, "drop": [0.1, 0.5, 0.9]})
    >>> summary = pd.DataFrame({"layer": ["a", "b", "c"], "n_neg": [0.2, 0.5, 0.7]})
    >>> cb = critical_vs_bias(drops, summary)
    >>> cb.rho, cb.rho_bias, cb.table["bias"].round(2).tolist()  # ranks of |2 n_l - 1| = 0.6, 0, 0.4 vs 1, 2, 3
    (1.0, -0.5, [0.6, 0.0, 0.4])
    """
    from scipy.stats import spearmanr

    d = drops[drops["epoch"] != RANDOM_EPOCH]
    per_layer = d.groupby("layer", sort=False).agg(layer_index=("layer_index", "first"), drop=("drop", "mean"),
                                                  drop_std=("drop", "std")).reset_index()  # fmt: skip
    s = summary
    if "epoch" in s:
        last = s.groupby("run")["epoch"].transform("max") if "run" in s else s["epoch"].max()
        s = s[s["epoch"] == last]
    nl = s.groupby("layer", sort=False)["n_neg"].mean().rename("n_l").reset_index()
    table = per_layer.merge(nl, on="layer", how="inner").sort_values("layer_index").reset_index(drop=True)
    if len(table) < 3:
        raise RelugeomError(f"only {len(table)} layer(s) in common between the drops and the statistics; "
                            "a rank correlation needs at least 3")  # fmt: skip
    table["bias"] = (2 * table["n_l"] - 1).abs()
    with np.errstate(invalid="ignore"):
        r1 = spearmanr(table["n_l"], table["drop"])
        r2 = spearmanr(table["bias"], table["drop"])
    return CriticalBias(table, float(r1.statistic), float(r1.pvalue), float(r2.statistic), float(r2.pvalue))
