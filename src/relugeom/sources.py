"""What an analysis can be pointed at, resolved to models or state dicts one at a time.

A *source* is an ``nn.Module``, a state dict, a checkpoint path, a run folder (its checkpoints in
epoch order), or a list of those. :func:`iter_sources` yields one :class:`SourceItem` per model,
loading lazily so that a long series never sits in memory at once. :func:`map_sources` applies a
per-model analysis and stacks the resulting tables with ``run``, ``seed`` and ``epoch`` columns.

Error policy: a source given alone that cannot be loaded or analysed raises; inside a run folder
or a list, the bad item is reported as a :class:`~relugeom.errors.RelugeomWarning` naming the file
and the others are still analysed (an error is raised only when nothing is left).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ._repr import short_repr
from .architectures import model_from_state_dict
from .checkpoints import checkpoint_series, load_checkpoint
from .errors import RelugeomError, SkippedWarning, warn

Source = nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike | Sequence[Any]


@dataclass
class SourceItem:
    """One model to analyse and where it came from."""

    __repr__ = short_repr

    label: str
    path: Path | None = None
    epoch: int | None = None
    run: str | None = None
    seed: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    in_series: bool = False
    _obj: nn.Module | Mapping[str, torch.Tensor] | None = field(default=None, repr=False)
    _arch: str | None = field(default=None, repr=False)

    def load(self) -> nn.Module | Mapping[str, torch.Tensor]:
        """The module or state dict (loaded from ``path`` on first use; built as ``arch`` if given)."""
        if self._obj is None and self.path is not None and self.path.suffix.lower() == ".mat":
            from .matconvnet import load_matconvnet  # a MatConvNet model: the network is built from the file

            net = load_matconvnet(self.path)
            self.meta = {**net.meta, **self.meta}
            self._obj = net.model
        if self._obj is None:
            assert self.path is not None
            ckpt = load_checkpoint(self.path)
            self.meta = {**ckpt.meta, **self.meta}
            self._obj = ckpt.state_dict
        obj = self._obj
        arch = self._arch or self.meta.get("arch")
        if isinstance(obj, Mapping) and arch:
            where = f"{self.path}: " if self.path else ""
            # the arguments it was built with, when recorded for this architecture (relugeom's own, or the
            # user's factory a recorder noted: it is imported only because the user named it with --arch)
            recorded = {str(self.meta.get(k)) for k in ("arch", "model_factory", "model_class") if self.meta.get(k)}
            kwargs = self.meta.get("model_kwargs", {}) if str(arch) in recorded else {}
            obj = model_from_state_dict(str(arch), obj, where=where, **(kwargs if isinstance(kwargs, Mapping) else {}))
        return obj

    def rebuild_hint(self) -> str:
        """What to pass to rebuild a bare state dict's network (the class a recorder noted)."""
        cls = self.meta.get("model_factory") or self.meta.get("model_class")
        if isinstance(cls, str) and ":" in cls:
            return f"pass --arch {cls} to rebuild it (relugeom imports only code you name)"
        return "pass --arch so that the network can be built"


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and all(isinstance(v, torch.Tensor) for v in obj.values())


def run_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Distinct labels of run folders (or files) given together: each path relative to their deepest
    common folder, so ``seedA/run`` and ``seedB/run`` stay apart; a lone path is labelled by its name.

    >>> run_labels(["exp/seedA/run", "exp/seedB/run"])
    ['seedA/run', 'seedB/run']
    >>> run_labels(["exp/seedA/run"])
    ['run']
    """
    full = [Path(os.path.abspath(p)) for p in paths]
    if len(full) == 1:
        return [full[0].name or str(full[0])]
    common = Path(os.path.commonpath(full))
    return [p.relative_to(common).as_posix() if p != common else (p.name or str(p)) for p in full]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def dedupe_sources(sources: Sequence[Any], *, quiet: bool = False) -> list[Any]:
    """The sources with paths given twice (the same file or folder, by any name) kept once, with a
    warning unless ``quiet``."""
    kept: list[Any] = []
    paths: list[Path] = []
    for s in sources:
        if isinstance(s, (str, os.PathLike)):
            p = Path(s)
            twin = next((q for q in paths if _same_file(p, q)), None)
            if twin is not None:
                if not quiet:
                    warn(f"{p}: given twice (as {twin} too); analysed once")
                continue
            paths.append(p)
        kept.append(s)
    return kept


def _path_items(p: Path, *, run: str | None, arch: str | None, in_series: bool) -> Iterator[SourceItem]:
    if p.is_dir():
        for e in checkpoint_series(p):
            seed = e.meta.get("seed")
            yield SourceItem(
                label=str(e.path), path=e.path, epoch=e.epoch, run=run or p.name,
                seed=None if seed is None else int(seed), meta=dict(e.meta), in_series=True, _arch=arch,
            )  # fmt: skip
    else:
        yield SourceItem(label=str(p), path=p, run=run, in_series=in_series, _arch=arch)


def iter_sources(source: Source, *, arch: str | None = None, _in_series: bool = False) -> Iterator[SourceItem]:
    """Resolve ``source`` to :class:`SourceItem` s (see the module docstring).

    ``arch`` builds each state dict into that architecture (so that stages and input shapes are
    known); relugeom checkpoints name their own architecture and are built the same way. In a list,
    every path is labelled with :func:`run_labels` (the ``run`` column), and a path given twice is
    analysed once (with a warning).
    """
    if isinstance(source, nn.Module):
        yield SourceItem(label=type(source).__name__, _obj=source, in_series=_in_series, _arch=arch)
    elif _is_state_dict(source):
        yield SourceItem(label="state_dict", _obj=source, in_series=_in_series, _arch=arch)  # type: ignore[arg-type]
    elif isinstance(source, (str, os.PathLike)):
        yield from _path_items(Path(source), run=None, arch=arch, in_series=_in_series)
    elif isinstance(source, Sequence) and not isinstance(source, (bytes, str)):
        items = dedupe_sources(source)
        paths = [Path(s) for s in items if isinstance(s, (str, os.PathLike))]
        labels = dict(zip(map(id, paths), run_labels(paths))) if len(paths) > 1 else {}
        k = 0
        for s in items:
            if isinstance(s, (str, os.PathLike)):
                p = paths[k]
                k += 1
                yield from _path_items(p, run=labels.get(id(p)), arch=arch, in_series=True)
            else:
                yield from iter_sources(s, arch=arch, _in_series=True)
    else:
        raise TypeError(
            f"cannot analyse a {type(source).__name__}: give an nn.Module, a state dict, a checkpoint path, "
            "a run folder or a list of those"
        )


def _analyse_item(analyse: Callable, item: SourceItem) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """One work item of :func:`map_sources`: load the item (in the worker) and analyse it."""
    return analyse(item.load(), item)


def source_tasks(items: Sequence[SourceItem], analyse: Callable, *, arch: str | None = None) -> list:
    """One :class:`~relugeom.parallel.Task` per item: a checkpoint's part is named after its run and file and
    records the file's identity; an in-memory model is a task that reads no file (run here, not stored)."""
    from .parallel import Task, fingerprint, part_name

    spec = fingerprint(analyse, arch)
    tasks = []
    for item in items:
        if item.path is None:
            tasks.append(Task("", item.label, _analyse_item, (analyse, item), (), spec))
            continue
        digest = fingerprint(str(item.path.resolve()))[:10]
        tasks.append(Task(part_name(item.run, item.path.name, digest), str(item.path), _analyse_item, (analyse, item),
                          (item.path,), spec))  # fmt: skip
    return tasks


def map_sources(
    source: Source,
    analyse: Callable[[nn.Module | Mapping[str, torch.Tensor], SourceItem], pd.DataFrame | dict[str, pd.DataFrame]],
    *,
    arch: str | None = None,
    executor: Any = None,
    parts: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
    desc: str = "checkpoints",
) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Apply ``analyse(model_or_state_dict, item)`` to every item of ``source`` and stack the tables.

    A series shows a progress bar (``desc``, one step per checkpoint) on a terminal, unless quiet.

    ``run``, ``seed`` and ``epoch`` columns are put first when any item has them (the epoch from
    the checkpoint's metadata, else the series' epoch). When ``analyse`` returns a dict of tables
    (several analyses of one loaded checkpoint), each is stacked on its own: a dict comes back.

    Beyond one process (see :mod:`relugeom.parallel`): ``executor`` (anything with ``submit()`` returning
    futures: :func:`~relugeom.parallel.process_pool`, :func:`~relugeom.parallel.submitit_executor`, a
    ``concurrent.futures`` executor) runs one checkpoint per job, which loads it itself, so ``analyse`` must be
    picklable (a module-level function or a ``functools.partial`` of one); ``parts`` is a folder for one result
    file per checkpoint, reused by a rerun while the checkpoint and the options are unchanged; ``shard=(k, n)``
    computes only every n-th checkpoint from the k-th. A series shows a progress bar (``desc``).

    >>> from relugeom.experiments.models import build_model
    >>> map_sources(build_model("mlp", seed=0), lambda m, item: pd.DataFrame({"n": [len(list(m.parameters()))]}))
       n
    0  6
    """
    from .parallel import reraise_for_debugging, run_tasks

    items = list(iter_sources(source, arch=arch))  # SourceItems load lazily: this lists paths, not weights
    tasks = source_tasks(items, analyse, arch=arch)
    outcomes = run_tasks(tasks, executor=executor, parts=parts, shard=shard, desc=desc)
    frames: dict[str, list[pd.DataFrame]] = {}
    failures: list[str] = []
    cols = {"run": False, "seed": False, "epoch": False}
    several = False
    for item, outcome in zip(items, outcomes):
        if outcome.error is not None:
            if not item.in_series:
                if outcome.exc is not None:
                    raise outcome.exc
                raise RelugeomError(outcome.error)
            reraise_for_debugging(outcome)
            warn(f"{outcome.error}; skipped, the rest of the series is analysed", SkippedWarning)
            failures.append(item.label)
            continue
        result = outcome.tables
        several = isinstance(result, dict)
        meta = dict(item.meta)
        if item.path is not None and "epoch" not in meta and item.epoch is None:
            meta = {**_file_meta(item.path), **meta}
        epoch = item.epoch if item.epoch is not None else meta.get("epoch")
        seed = item.seed if item.seed is not None else meta.get("seed")
        values = {"run": item.run, "seed": seed, "epoch": epoch}
        for name, value in values.items():
            cols[name] |= value is not None
        for key, df in (result.items() if several else [("", result)]):
            df = df.copy()
            for i, (name, value) in enumerate(values.items()):
                df.insert(i, name, value)
            frames.setdefault(key, []).append(df)
    if not frames:
        raise RelugeomError(f"nothing could be analysed ({len(failures)} bad checkpoint(s))")
    drop = [c for c, used in cols.items() if not used]
    stacked = {}
    for key, parts_ in frames.items():
        out = pd.concat(parts_, ignore_index=True).drop(columns=drop)
        for c in ("seed", "epoch"):
            if c in out:
                out[c] = out[c].astype("Int64")
        stacked[key] = out
    return stacked if several else stacked[""]


def _file_meta(path: Path) -> dict[str, Any]:
    """relugeom metadata of a lone checkpoint file (its epoch and seed), read without its tensors: the item was
    loaded in another process, or its table came from a part."""
    from .checkpoints import read_meta
    from .errors import CheckpointError

    try:
        return read_meta(path)
    except CheckpointError:
        return {}
