"""Pieces shared by the CLI verbs: output options, table writing, printing."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pandas as pd

from ..tables import FORMATS, write_table

out_option = click.option(
    "--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Folder for the tables and plots (created if needed).",
)  # fmt: skip
format_option = click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="csv", show_default=True, help="Table format."
)

def _check_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--device``: a torch device this machine has, or a usage error saying which ones it has."""
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise click.BadParameter(f"{value!r} is not a torch device (cpu, cuda, cuda:1, mps, ...)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise click.BadParameter(f"{value!r}: no CUDA device here (torch {torch.__version__}); use cpu")
        if dev.index is not None and dev.index >= n:
            raise click.BadParameter(f"{value!r}: only {n} CUDA device(s) here (cuda:0 to cuda:{n - 1})")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise click.BadParameter(f"{value!r}: no MPS device here; use cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise click.BadParameter(f"{value!r}: relugeom runs on cpu, cuda or mps")
    return value


device_option = click.option(
    "--device", default="cpu", show_default=True, callback=_check_device,
    help="Torch device (cpu, cuda, cuda:1, mps).",
)  # fmt: skip


def figure_options(f: Callable) -> Callable:
    """``--fig-format png|svg|pdf`` and ``--dpi`` for a verb that draws; the command receives them as one
    ``figures`` argument (a :class:`relugeom.report.FigureOutput`)."""
    from ..report import DEFAULT_DPI, FIG_FORMATS, FigureOutput

    @functools.wraps(f)
    def command(*args, fig_format: str, dpi: int, **kwargs):  # noqa: ANN002, ANN003, ANN202
        return f(*args, figures=FigureOutput(fig_format, dpi), **kwargs)

    command = click.option("--dpi", type=click.IntRange(min=10, max=2400), default=DEFAULT_DPI, show_default=True,
                           help="Resolution of the figures (pixels per inch of a PNG).")(command)  # fmt: skip
    return click.option("--fig-format", "fig_format", type=click.Choice(FIG_FORMATS), default="png",
                        show_default=True, help="File format of the figures.")(command)  # fmt: skip


def find_run(sources: str | Path | tuple | list) -> Path | None:
    """The first of ``sources`` that is a run folder of ``relugeom train`` (it has a config.json), or None."""
    from ..checkpoints import Run

    for s in [sources] if isinstance(sources, (str, Path)) else sources:
        if Run(s).is_run():
            return Path(s)
    return None


def describe_sources(sources: tuple | list) -> str:
    """A figure title naming what was analysed: the run (or file) names, and the architecture and data set
    of a run folder, e.g. ``"vgg9-s0 (vgg9 on cifar10)"``; a folder named just ``run`` with its parent."""
    from ..sources import run_labels

    names = run_labels(list(sources))
    if len(names) == 1 and names[0] == "run":  # `relugeom demo` writes OUT/run: name OUT too
        names = [Path(os.path.abspath(sources[0])).parent.name + "/run"]
    what = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    run = find_run(sources)
    if run is None:
        return what
    from ..checkpoints import Run

    doc = Run(run).read_config()
    data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
    arch, dataset = doc["config"].get("arch"), data.get("name") or doc["config"].get("dataset")
    return what + (f" ({arch} on {dataset})" if arch and dataset else "")


def note(message: str) -> None:
    """One line on stderr saying what relugeom chose for the user (a default taken from the run, ...)."""
    click.echo(message, err=True)
class ArchParam(click.ParamType):
    """``--arch``: a zoo name, ``torchvision:NAME``, ``timm:NAME`` or ``package.module:factory`` (and ``auto``
    where a state dict is read), checked when the command line is parsed."""

    name = "arch"

    def __init__(self, allow_auto: bool = False) -> None:
        self.allow_auto = allow_auto

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201
        from ..architectures import get_architecture
        from ..errors import ArchitectureError

        if self.allow_auto and str(value).lower() == "auto":
            return "auto"
        try:
            return get_architecture(value).name
        except ArchitectureError as e:
            self.fail(str(e), param, ctx)


def arch_help(lead: str, auto: bool = False) -> str:
    """The help text of ``--arch``: every zoo name and the other forms."""
    from ..architectures import ARCHITECTURES

    return (f"{lead}{'; auto (read off the keys)' if auto else ''}; zoo: {', '.join(sorted(ARCHITECTURES))}; "
            "or torchvision:NAME, timm:NAME (when installed), package.module:factory (your own model).")


def arch_option(lead: str = "Architecture of bare state dicts"):  # noqa: ANN201
    """``--arch`` of the analysis verbs (``auto`` allowed; checked when the command line is parsed)."""
    return click.option("--arch", type=ArchParam(allow_auto=True), default=None, help=arch_help(lead, auto=True))


SEED_MAX = 2**63 - 1


def seed_option(help_text: str = "Random seed."):  # noqa: ANN201
    """``--seed``: a whole number from 0 to 2^63 - 1 (what torch, numpy and JSON all take)."""
    return click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True, help=help_text)


def writable_folder(out: Path) -> Path:
    """Create ``out`` if needed and check that a file can be written in it, before any computing.

    Raises :class:`~relugeom.errors.WriteError` (one line, exit 1) for a read-only or full disk, a
    missing permission, or a file where the folder should be.
    """
    import tempfile

    from ..checkpoints import write_error
    from ..errors import WriteError

    if out.exists() and not out.is_dir():
        raise WriteError(f"{out}: is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise write_error(out, e) from None
    return out


def write_tables(out: Path, tables: dict[str, pd.DataFrame], fmt: str) -> list[Path]:
    """Write each table as ``out/NAME.FMT`` (atomically); return the paths."""
    return [write_table(df, out / name, fmt) for name, df in tables.items()]


def echo_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> None:
    """Print a table to stdout without truncation."""
    with pd.option_context("display.max_rows", 200, "display.max_columns", 50, "display.width", 200):
        click.echo(df.to_string(index=False, float_format=floatfmt.format))


def parse_shape(text: str, option: str | None = None) -> tuple[int, ...]:
    """``"3,32,32"`` (or ``"3x32x32"``) -> (3, 32, 32); anything else is a usage error naming ``option``."""
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    if not parts or any(not p.isdigit() or int(p) <= 0 for p in parts):
        raise click.BadParameter(f"{text!r} is not a shape like 3,32,32 (positive whole numbers)", param_hint=option)
    return tuple(int(p) for p in parts)


# ------------------------------------------------------------------------------------------------ parallel runs
class Schedule:
    """Where a verb's work items run (``--jobs``, ``--executor``, ``--shard``, the Slurm options) and where their
    parts go (``OUT/parts/VERB``); :meth:`open` gives the keyword arguments of the analysis functions."""

    def __init__(self, jobs: int, executor: str | None, shard: str | None, slurm: dict) -> None:
        from ..parallel import parse_shard, shard_from_env

        self.jobs, self.kind, self.slurm = jobs, executor or ("pool" if jobs > 1 else None), slurm
        self.shard = parse_shard(shard) if shard else shard_from_env()

    @contextlib.contextmanager
    def open(self, out: Path, verb: str) -> Iterator[dict]:
        from ..parallel import process_pool, submitit_executor

        executor = None
        if self.kind == "pool":
            executor = process_pool(self.jobs)
        elif self.kind is not None:
            cluster = {"slurm": "slurm", "submitit-local": "local", "submitit-debug": "debug"}[self.kind]
            executor = submitit_executor(out / "submitit", cluster, jobs=self.jobs if self.jobs > 1 else None,
                                         **self.slurm)  # fmt: skip
        try:
            yield {"executor": executor, "parts": out / "parts" / verb, "shard": self.shard}
        finally:
            if hasattr(executor, "shutdown"):
                executor.shutdown(wait=True, cancel_futures=True)


def _slurm_option(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for text in value:
        key, sep, val = text.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{text!r}: use KEY=VALUE, e.g. account=myproject")
        out[key.strip().replace("-", "_")] = val.strip()
    return out


_schedule_options = [
    click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Work items (checkpoints) at once: local worker processes sharing the cores, or with "
                      "--executor slurm the most array tasks running at once."),
    click.option("--executor", "executor", type=click.Choice(["pool", "slurm", "submitit-local", "submitit-debug"]),
                 default=None, help="Where work items run: pool (local processes, the default with --jobs N), "
                                    "slurm (one job array through submitit; pip install 'relugeom[cluster]'), or "
                                    "submitit's local / debug executors to try a set-up on one machine."),
    click.option("--shard", default=None, metavar="K/N",
                 help="Compute only shard K of N of the work items (for your own sbatch --array; default from "
                      "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT). The run that finds every part assembles the "
                      "tables."),
    click.option("--slurm-partition", default=None, help="Slurm partition (--executor slurm)."),
    click.option("--slurm-time", "slurm_time", type=click.IntRange(min=1), default=None,
                 help="Time limit per job, minutes (--executor slurm; default 60)."),
    click.option("--slurm-mem", "slurm_mem", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Memory per job, GB (--executor slurm)."),
    click.option("--slurm-cpus", type=click.IntRange(min=1), default=None, help="CPUs per job (--executor slurm)."),
    click.option("--slurm-gpus", type=click.IntRange(min=0), default=None, help="GPUs per job (--executor slurm)."),
    click.option("--slurm-option", "slurm_option", multiple=True, callback=_slurm_option, metavar="KEY=VALUE",
                 help="Any other sbatch option, repeatable: --slurm-option account=proj --slurm-option qos=low."),
]  # fmt: skip


def schedule_options(f: Callable) -> Callable:
    """Add the parallel-run options to a verb; it receives them as one ``schedule`` (:class:`Schedule`)."""

    @functools.wraps(f)
    def wrapper(*args: Any, jobs: int, executor: str | None, shard: str | None, slurm_partition: str | None,
                slurm_time: int | None, slurm_mem: float | None, slurm_cpus: int | None, slurm_gpus: int | None,
                slurm_option: dict, **kwargs: Any) -> Any:  # fmt: skip
        from ..errors import RelugeomError

        slurm = {"partition": slurm_partition, "timeout_min": slurm_time, "mem_gb": slurm_mem,
                 "cpus_per_task": slurm_cpus, "gpus_per_node": slurm_gpus, "options": slurm_option}  # fmt: skip
        given = [f"--{k.replace('_', '-')}" for k, v in (("slurm_partition", slurm_partition),
                 ("slurm_time", slurm_time), ("slurm_mem", slurm_mem), ("slurm_cpus", slurm_cpus),
                 ("slurm_gpus", slurm_gpus), ("slurm_option", slurm_option)) if v]  # fmt: skip
        if given and executor != "slurm":
            raise click.UsageError(f"{', '.join(given)} only apply with --executor slurm")
        try:
            schedule = Schedule(jobs, executor, shard, slurm)
        except RelugeomError as e:
            raise click.UsageError(str(e)) from None
        return f(*args, schedule=schedule, **kwargs)

    for opt in reversed(_schedule_options):
        wrapper = opt(wrapper)
    return wrapper
