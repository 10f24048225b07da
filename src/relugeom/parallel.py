"""Running an analysis's work items beyond one process: executors, shards and resumable parts.

A series analysis is a list of *work items* (one checkpoint; for re-initialization one (epoch, layer)).
:func:`run_tasks` runs them

* in this process (``executor=None``), or on any ``concurrent.futures``-style executor: anything with
  ``submit(fn, *args)`` returning objects with ``result()``. :func:`process_pool` is a local pool that splits
  torch's threads between its workers; :func:`submitit_executor` submits to Slurm (or runs submitit's local and
  debug executors) through submitit, as one job array;
* only for the items of one shard (``shard=(k, n)``: items ``k, k + n, k + 2n, ...``), for users who write their
  own ``sbatch --array`` (:func:`shard_from_env` reads ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``);
* with one result file per item in ``parts`` (a folder, usually ``OUT/parts/VERB``), written atomically
  (:func:`~relugeom.checkpoints.atomic_write`). A part records what produced it: the identity (path, size,
  modification time) of every file the item read, and a fingerprint of the analysis and its options. A rerun
  reuses a part only when all of these still match, computes the missing or stale ones, and the tables are
  assembled from the parts, so an interrupted analysis loses only the items that were running.

Work items must be picklable: they carry paths and small option values, never loaded models, and the analysis
is a module-level function (or a :func:`functools.partial` of one). A part is a zip file holding ``part.json``
(the record above and the warnings the item raised, shown again whenever the part is used) and one Parquet
file per table; nothing in it is unpickled.

Errors: an item that fails with a :class:`~relugeom.errors.RelugeomError`, or with any other exception in a job
(a bug, a job killed by the cluster), comes back as a message naming its file, never as a traceback; the caller
applies its skip policy (in a series: a warning and the rest analysed; alone: an error).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ._repr import short_repr
from ._version import __version__
from .errors import RelugeomError, ShardIncomplete

log = logging.getLogger("relugeom")

PART_FORMAT = 1
PART_SUFFIX = ".part.zip"
EXECUTORS = ("pool", "slurm", "submitit-local", "submitit-debug")


# ------------------------------------------------------------------------------------------------ identity
def file_identity(path: str | os.PathLike) -> dict[str, Any]:
    """What a part records of a file it read: absolute path, size in bytes, modification time (ns); size and
    time are None for a file that is not there (the item then fails, naming it, and nothing is stored)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return {"path": str(p.absolute()), "size": None, "mtime_ns": None}
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _feed(h: Any, obj: Any) -> None:
    """Feed a canonical, process-independent description of ``obj`` into the hash ``h``."""

    def put(*parts: object) -> None:
        for part in parts:
            h.update(str(part).encode())
            h.update(b"\x00")

    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        put(type(obj).__name__, repr(obj))
    elif isinstance(obj, os.PathLike):
        put("path", os.fspath(obj))
        if os.path.isfile(obj):  # a file an analysis reads (an initialization): its identity too
            put(*file_identity(obj).values())
    elif isinstance(obj, (torch.device, torch.dtype)):
        put(type(obj).__name__, obj)
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        put("tensor", t.dtype, tuple(t.shape))
        h.update((t.view(torch.uint8) if t.numel() else t).numpy().tobytes())
    elif isinstance(obj, np.ndarray):
        put("ndarray", obj.dtype, obj.shape)
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, Mapping):
        put("map", len(obj))
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        put(type(obj).__name__, len(obj))
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, functools.partial):
        put("partial")
        _feed(h, obj.func)
        _feed(h, obj.args)
        _feed(h, obj.keywords)
    elif isinstance(obj, torch.nn.Module):
        put("module", type(obj).__qualname__)
        _feed(h, obj.state_dict())
    elif callable(obj) and hasattr(obj, "__qualname__"):
        put("callable", getattr(obj, "__module__", ""), obj.__qualname__)
    elif dataclasses.is_dataclass(obj):
        put("dataclass", type(obj).__qualname__)
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    elif isinstance(obj, torch.Generator):
        put("generator")
        _feed(h, obj.get_state())
    elif hasattr(obj, "__dict__"):
        put("object", type(obj).__module__, type(obj).__qualname__)
        _feed(h, vars(obj))
    else:
        put("repr", repr(obj))


def fingerprint(*objs: Any) -> str:
    """A SHA-256 of the analysis and its options (tensors by content, functions by import name), the same in
    every process; part of every part's record, so changed options never reuse old parts.

    >>> fingerprint({"a": 1, "b": [2.0]}) == fingerprint({"b": [2.0], "a": 1})
    True
    >>> fingerprint(torch.zeros(3)) == fingerprint(torch.zeros(4))
    False
    """
    h = hashlib.sha256()
    _feed(h, __version__)
    for obj in objs:
        _feed(h, obj)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ tasks
@dataclass
class Task:
    """One work item: ``fn(*args)`` returns a table or a dict of tables.

    ``name`` is the part's file name (unique within a parts folder); ``label`` names the item in messages
    (its checkpoint file); ``sources`` are the files the item reads (their identities go into the part);
    ``spec`` is the fingerprint of the analysis and its options.

    Tasks with the same non-empty ``group`` and ``batch`` function that are still to compute run as one job:
    ``batch([task.args, ...])`` returns one table (or an exception: that item failed) per task, so that work
    shared between items (re-initialization's trained forward pass) is done once per job; each item still gets
    its own part.
    """

    __repr__ = short_repr

    name: str
    label: str
    fn: Callable[..., pd.DataFrame | dict[str, pd.DataFrame]]
    args: tuple = ()
    sources: Sequence[Path] = ()
    spec: str = ""
    group: str = ""
    batch: Callable[[Sequence[tuple]], list[Any]] | None = None


@dataclass
class Outcome:
    """What came back for one task: its tables (or ``error``, a one-line message naming the file) and the
    warnings it raised, as ``(category name, message)``."""

    __repr__ = short_repr

    tables: pd.DataFrame | dict[str, pd.DataFrame] | None = None
    warnings: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    reused: bool = False
    exc: BaseException | None = field(default=None, repr=False)


def _error_message(label: str, e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    if isinstance(e, RelugeomError):
        return msg if label in msg else f"{label}: {msg}"
    return f"{label}: the job failed ({type(e).__name__}: {msg[:300]})"


def run_task(task: Task, part: Path | None = None, quiet: bool = False) -> Outcome:
    """Run one task where it is called (a worker, a Slurm job, or this process): catch its warnings and any
    exception (as a message naming the file), and write its part when ``part`` is given."""
    if quiet:
        from ._progress import set_quiet

        set_quiet(True)
    record = _record(task) if part is not None else None  # the files as they were before the item read them
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            tables = task.fn(*task.args)
        except Exception as e:  # noqa: BLE001 -- every failure becomes a message naming the file
            # in this process, the exception itself too (so that a lone model's error keeps its type)
            return Outcome(error=_error_message(task.label, e), exc=None if quiet else e)
    seen = [(w.category.__name__, str(w.message)) for w in caught]
    out = Outcome(tables, seen)
    if part is not None:
        write_part(part, task, out, record)
        out = Outcome(None, seen)  # the caller reads the part back: every mode assembles from the same bytes
    return out


def run_job(tasks: Sequence[Task], parts: Sequence[Path | None], quiet: bool = False) -> list[Outcome]:
    """Run a job: one task (:func:`run_task`), or several of one group through their ``batch`` function, writing
    each item's part. The warnings the job raised go with its first item that succeeded (shown once)."""
    # torch.fx patches nn.Module.__call__ while it traces and warnings.catch_warnings is process-global: jobs
    # given to a thread pool run one at a time (for parallel jobs, use processes: --jobs N, submitit)
    with _ONE_JOB_AT_A_TIME:
        return _run_job(tasks, parts, quiet)


_ONE_JOB_AT_A_TIME = threading.RLock()


def _run_job(tasks: Sequence[Task], parts: Sequence[Path | None], quiet: bool) -> list[Outcome]:
    if len(tasks) == 1 and tasks[0].batch is None:
        return [run_task(tasks[0], parts[0], quiet)]
    if quiet:
        from ._progress import set_quiet

        set_quiet(True)
    records = [None if p is None else _record(t) for t, p in zip(tasks, parts)]
    batch = tasks[0].batch
    assert batch is not None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = list(batch([t.args for t in tasks]))
        except Exception as e:  # noqa: BLE001 -- every failure becomes a message naming the file
            return [Outcome(error=_error_message(t.label, e), exc=None if quiet else e) for t in tasks]
    if len(got) != len(tasks):
        raise RuntimeError(f"{batch.__qualname__} returned {len(got)} results for {len(tasks)} items")
    seen = [(w.category.__name__, str(w.message)) for w in caught]
    outs = []
    for t, p, record, tables in zip(tasks, parts, records, got):
        if isinstance(tables, BaseException):
            outs.append(Outcome(error=_error_message(t.label, tables), exc=None if quiet else tables))
            continue
        out, seen = Outcome(tables, seen), []
        if p is not None:
            write_part(p, t, out, record)
            out = Outcome(None, out.warnings)
        outs.append(out)
    return outs


def _jobs(todo: Sequence[int], tasks: Sequence[Task]) -> list[list[int]]:
    """The items to compute, joined into jobs: one per group of tasks sharing ``group`` and ``batch``."""
    jobs: dict[Any, list[int]] = {}
    for i in todo:
        t = tasks[i]
        key = (t.group, t.batch) if t.group and t.batch is not None else i
        jobs.setdefault(key, []).append(i)
    return list(jobs.values())


def reraise_for_debugging(outcome: Outcome) -> None:
    """With ``RELUGEOM_DEBUG=1``, raise a failed item's own exception (when it failed in this process) instead of
    reporting it as a skipped item: its traceback is what a bug report needs."""
    if outcome.exc is not None and os.environ.get("RELUGEOM_DEBUG", "") not in ("", "0"):
        raise outcome.exc


# ------------------------------------------------------------------------------------------------ parts
def _record(task: Task) -> dict[str, Any]:
    return {"format": PART_FORMAT, "name": task.name, "label": task.label, "spec": task.spec,
            "sources": [file_identity(p) for p in task.sources]}  # fmt: skip


def write_part(path: Path, task: Task, outcome: Outcome, record: dict[str, Any] | None = None) -> Path:
    """Write one part atomically: ``part.json`` (what produced it, its warnings) and a Parquet file per table.
    ``record``: the task's files and options as taken before it ran (default: now)."""
    from .checkpoints import atomic_write

    several = isinstance(outcome.tables, dict)
    tables = outcome.tables if several else {"": outcome.tables}
    meta = {**(record or _record(task)), "warnings": outcome.warnings, "several": several, "tables": list(tables)}
    blobs = {}
    for i, df in enumerate(tables.values()):
        buf = io.BytesIO()
        df.to_parquet(buf, index=True)
        blobs[f"table{i}.parquet"] = buf.getvalue()

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
            for name, blob in blobs.items():
                z.writestr(name, blob)
            z.writestr("part.json", json.dumps(meta))  # written last: a zip without it is not a part

    return atomic_write(path, write)


def read_part(path: Path, task: Task) -> Outcome | None:
    """The part at ``path`` if it was produced by exactly this task (same analysis, options and file
    identities); None when it is missing, unreadable or stale."""
    if not path.is_file():
        return None
    try:
        with zipfile.ZipFile(path) as z:
            meta = json.loads(z.read("part.json"))
            if {k: meta.get(k) for k in ("format", "name", "spec", "sources")} != {
                k: v for k, v in _record(task).items() if k != "label"
            }:
                return None
            tables = {name: pd.read_parquet(io.BytesIO(z.read(f"table{i}.parquet")))
                      for i, name in enumerate(meta["tables"])}  # fmt: skip
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        log.warning("%s: unreadable part, computed again (%s)", path, str(e)[:120])
        return None
    out = tables if meta["several"] else tables[""]
    return Outcome(out, [tuple(w) for w in meta["warnings"]], reused=True)


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def part_name(*words: object) -> str:
    """A file name for a part from its words (run, file, epoch, layer), safe on every file system.

    >>> part_name("seedA/run", "epoch_0003.pt")
    'seedA_run-epoch_0003.pt'
    """
    return "-".join(_UNSAFE.sub("_", str(w)).strip("_") for w in words if w not in (None, ""))[:150]


# ------------------------------------------------------------------------------------------------ running
def shard_items(n_items: int, shard: tuple[int, int] | None) -> list[int]:
    """Indices of the items that shard ``(k, n)`` computes: ``k, k + n, k + 2n, ...`` (all without a shard)."""
    if shard is None:
        return list(range(n_items))
    k, n = shard
    return list(range(k, n_items, n))


def _category(name: str) -> type[Warning]:
    """The warning class called ``name`` (relugeom's own, or a built-in one); UserWarning for others."""
    import builtins

    from . import errors

    for module in (errors, builtins):
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, Warning):
            return cls
    return UserWarning


def _emit(outcome: Outcome) -> None:
    for category, message in outcome.warnings:
        warnings.warn(message, _category(category), stacklevel=4)


def run_tasks(
    tasks: Sequence[Task],
    *,
    executor: Any = None,
    parts: str | os.PathLike | None = None,
    shard: tuple[int, int] | None = None,
    desc: str = "items",
) -> list[Outcome]:
    """Run ``tasks`` (see the module docstring) and return one :class:`Outcome` per task, in order.

    Warnings that tasks raised are shown again here, in this process (once per task, also for reused parts).
    With ``shard``, only that shard's tasks are computed; when parts of other shards are still missing,
    :class:`ShardIncomplete` is raised after this shard's parts are written.
    """
    from ._progress import progress

    folder = None if parts is None else Path(parts)
    if shard is not None and folder is None:
        raise RelugeomError("--shard needs a folder for the parts (--out): the shards' results meet there")
    # a task that reads no file (an in-memory model) runs here and is not stored
    paths = [None if folder is None or not t.sources else folder / f"{t.name}{PART_SUFFIX}" for t in tasks]
    results: list[Outcome | None] = [None] * len(tasks)
    for i, (t, p) in enumerate(zip(tasks, paths)):
        if p is not None:
            results[i] = read_part(p, t)
    reused = sum(r is not None for r in results)
    mine = set(shard_items(len(tasks), shard))
    todo = [i for i in range(len(tasks)) if results[i] is None and i in mine]
    jobs = _jobs(todo, tasks)
    remote = [j for j, job in enumerate(jobs) if executor is not None and all(tasks[i].sources for i in job)]
    pending: dict[int, Any] = {}
    # jobs on a thread pool enter and leave warnings.catch_warnings out of order (it is not thread-safe): this
    # process's warning filters and display are restored once they are done, before any warning is shown again
    restore = warnings.catch_warnings()
    restore.__enter__()
    try:
        if remote:
            batch = getattr(executor, "batch", None)  # submitit: one job array instead of one job per item
            with batch() if callable(batch) and len(remote) > 1 else contextlib.nullcontext():
                for j in remote:
                    pending[j] = executor.submit(run_job, [tasks[i] for i in jobs[j]], [paths[i] for i in jobs[j]],
                                                 True)  # fmt: skip
        for j in progress(range(len(jobs)), desc=desc, total=len(jobs)) if len(jobs) > 1 else range(len(jobs)):
            job = jobs[j]
            if j in pending:
                try:
                    outs = pending[j].result()
                except Exception as e:  # noqa: BLE001 -- a job killed, lost or refused by the cluster
                    outs = [Outcome(error=_error_message(tasks[i].label, e)) for i in job]
            else:
                outs = run_job([tasks[i] for i in job], [paths[i] for i in job])
            for i, out in zip(job, outs):
                results[i] = out
                if out.error is None and paths[i] is not None:
                    back = read_part(paths[i], tasks[i])
                    for _ in range(20 if j in pending and back is None else 0):  # a shared file system may lag
                        time.sleep(0.5)
                        back = read_part(paths[i], tasks[i])
                    if back is None:
                        results[i] = Outcome(error=f"{tasks[i].label}: its part {paths[i]} was not written or "
                                                   "changed while it was read")  # fmt: skip
                    else:
                        results[i] = Outcome(back.tables, back.warnings)
    except BaseException:
        if isinstance(executor, ProcessPoolExecutor):
            executor.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        restore.__exit__(None, None, None)
    computed = sum(1 for i in todo if results[i] is not None and results[i].error is None)
    if folder is not None and computed + reused:
        log.info("%s: %d part(s) computed, %d reused, in %s", desc, computed, reused, folder)
    missing = [i for i in range(len(tasks)) if results[i] is None]
    if missing:
        k, n = shard  # type: ignore[misc]
        raise ShardIncomplete(f"shard {k}/{n}: {computed} part(s) computed, {reused} reused, in {folder}; "
                              f"{len(missing)} part(s) of other shards are still missing, so no table was "
                              "written. Rerun when every shard has finished (or without --shard) to assemble "
                              "the tables")  # fmt: skip
    for r in results:
        _emit(r)  # type: ignore[arg-type]
    return results  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ executors
def _init_worker(threads: int) -> None:
    from threadpoolctl import threadpool_limits

    # numpy/scipy's BLAS (ARPACK's Lanczos, SVDs) keeps the thread count of the parent's environment unless told:
    # two workers x two BLAS threads on two cores would contend with each other and with torch's threads
    threadpool_limits(threads)  # set for the worker's lifetime (nothing restores them)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    from ._progress import set_quiet

    set_quiet(True)


def process_pool(jobs: int, threads: int | None = None) -> ProcessPoolExecutor:
    """A local pool of ``jobs`` worker processes, each with ``threads`` torch threads (default: this process's
    torch threads divided between the workers, at least 1, so that workers x threads <= cores).

    Workers are started from a fork server that has imported torch but run nothing (Linux), else spawned:
    never forked from a process whose OpenMP threads are running.
    """
    import multiprocessing as mp

    if jobs < 1:
        raise RelugeomError(f"--jobs must be at least 1, got {jobs}")
    threads = threads or max(1, torch.get_num_threads() // jobs)
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "pandas", "relugeom.parallel"])
    else:
        ctx = mp.get_context("spawn")
    return ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads,))


def submitit_executor(
    folder: str | os.PathLike,
    cluster: str = "slurm",
    *,
    jobs: int | None = None,
    partition: str | None = None,
    timeout_min: int | None = None,
    mem_gb: float | None = None,
    cpus_per_task: int | None = None,
    gpus_per_node: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> Any:
    """A submitit ``AutoExecutor`` (``cluster``: ``slurm``, or submitit's ``local`` / ``debug`` executors for
    trying a set-up on one machine) writing its logs under ``folder``.

    ``partition``, ``timeout_min`` (default 60), ``mem_gb``, ``cpus_per_task`` and ``gpus_per_node`` are passed
    through;
    ``jobs`` caps how many array tasks run at once; ``options`` adds any other sbatch option (``{"account":
    "proj", "qos": "low"}`` become ``slurm_account``, ``slurm_qos``). Needs ``pip install relugeom[cluster]``.
    """
    try:
        import submitit
    except ImportError:
        raise RelugeomError("--executor slurm needs submitit: pip install 'relugeom[cluster]'") from None
    if cluster not in ("slurm", "local", "debug"):
        raise RelugeomError(f"unknown submitit cluster {cluster!r}; choose slurm, local or debug")
    try:
        ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    except RuntimeError as e:
        raise RelugeomError(f"cannot submit to {cluster}: {e} (no `srun` on PATH: run this on the cluster's login "
                            "node, or use --jobs N here)") from None  # fmt: skip
    params: dict[str, Any] = {"name": "relugeom", "timeout_min": 60}  # submitit's default, 5 minutes, kills analyses
    for key, value in (("timeout_min", timeout_min), ("mem_gb", mem_gb), ("cpus_per_task", cpus_per_task),
                       ("gpus_per_node", gpus_per_node)):  # fmt: skip
        if value is not None:
            params[key] = value
    if cluster == "slurm":
        if partition:
            params["slurm_partition"] = partition
        if jobs:
            params["slurm_array_parallelism"] = jobs
        params.update({k if k.startswith("slurm_") else f"slurm_{k}": v for k, v in (options or {}).items()})
    try:
        ex.update_parameters(**params)
    except (ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0]
        raise RelugeomError(f"submitit refused the job options: {first}") from None
    return ex


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N.

    >>> parse_shard("1/4")
    (1, 4)
    """
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise RelugeomError(f"--shard {text!r}: use K/N, e.g. 0/4 (shard K of N, counting from 0)") from None
    if n < 1 or not 0 <= k < n:
        raise RelugeomError(f"--shard {text!r}: K must be in 0..N-1 and N at least 1")
    return k, n


def shard_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of this Slurm array task: ``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN,
    SLURM_ARRAY_TASK_COUNT)``, or None outside an array job.

    >>> shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"})
    (2, 4)
    """
    env = os.environ if env is None else env
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        k = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        n = int(env["SLURM_ARRAY_TASK_COUNT"])
    except ValueError:
        return None
    return parse_shard(f"{k}/{n}")
