"""Analyses of a 16-checkpoint run with ``--jobs 2`` (a local process pool) against serial, on 2 cores.

Issue 15's target: ``measures --measures fisher_rao,norms`` and ``cones`` over a 16-checkpoint run run at least
1.7x faster with two workers (one torch thread each) than serially (two torch threads), with identical tables.
Both are timed in this process, from the call to the assembled tables (the pool's start and every part's
writing and reading included), alternating serial and parallel; the best of the repeats is reported. The
machine's own ceiling is printed beside them: the speed-up of single-threaded work (a Python loop, torch
convolutions) run by two processes at once over one alone. Virtual CPUs that share physical cores give well under
2x there, and no analysis can beat that. Tables that
are not bit-identical are reported with their largest relative difference: the workers' single-thread float
reductions may round differently from the serial run's two threads.

    OMP_NUM_THREADS=2 python benchmarks/bench_parallel.py           # 16 VGG9 checkpoints (3x32x32), 2 repeats
    OMP_NUM_THREADS=2 python benchmarks/bench_parallel.py --quick   # 6 checkpoints, 1 repeat
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from relugeom import save_checkpoint
from relugeom.experiments.models import build_model
from relugeom.measures import complexity_table
from relugeom.parallel import process_pool
from relugeom.stats.cones import cone_tables


def _max_rel_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """The largest relative difference between the numeric cells of two tables of one shape (NaN = NaN); inf when
    the shapes or the other cells differ. Workers run one torch thread each and the serial run two, so float
    reductions may round differently in the last bits."""
    if a.shape != b.shape or list(a.columns) != list(b.columns):
        return float("inf")
    num = a.select_dtypes("number").columns
    rest = [c for c in a.columns if c not in num]
    if not a[rest].equals(b[rest]):
        return float("inf")
    x, y = a[num].to_numpy(float), b[num].to_numpy(float)
    both_nan = np.isnan(x) & np.isnan(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(both_nan, 0.0, np.abs(x - y) / np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-300))
    return float(np.nanmax(d, initial=0.0)) if d.size else 0.0


_WORK = {  # (set-up, single-threaded work of about 2-3 s): pure Python, and float64 convolutions in torch
    "python loop": ("", "s = 0\nfor i in range(25_000_000): s += i"),
    "torch conv (1 thread)": (
        "import torch\ntorch.set_num_threads(1)\nx = torch.randn(32, 64, 32, 32, dtype=torch.float64)\n"
        "w = torch.randn(64, 64, 3, 3, dtype=torch.float64)",
        "for _ in range(12): torch.conv2d(x, w, padding=1)",
    ),
}


def machine_ceiling(jobs: int) -> dict[str, float]:
    """What ``jobs`` processes can gain on this machine at best: the same single-threaded work run by one process
    alone and by ``jobs`` processes at once (separate interpreters that start the work at one agreed moment, after
    their imports); the ceiling is ``jobs`` x the time alone over the slowest of the group. On ``jobs`` real idle
    cores it is ``jobs``; virtual CPUs that share a physical core, or a busy host, give less."""
    out = {}
    for name, (setup, work) in _WORK.items():

        def group(n: int, setup: str = setup, work: str = work) -> float:
            start = time.time() + 3.0
            code = (f"import time\n{setup}\ntime.sleep(max(0.0, {start} - time.time()))\nt = time.perf_counter()\n"
                    f"{work}\nprint(time.perf_counter() - t)")  # fmt: skip
            procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
                     for _ in range(n)]  # fmt: skip
            return max(float(p.communicate()[0]) for p in procs)

        alone = min(group(1) for _ in range(2))
        together = min(group(jobs) for _ in range(2))
        out[name] = jobs * alone / together
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--checkpoints", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    n_ckpt = args.checkpoints or (6 if args.quick else 16)
    repeats = args.repeats or (1 if args.quick else 2)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    print(f"{n_ckpt} VGG9 checkpoints (3x32x32), {args.jobs} workers x {max(1, torch.get_num_threads() // args.jobs)}"
          f" thread(s) vs serial with {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    X = torch.randn(500, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (500,), generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        model = build_model("vgg9", num_classes=10, image_size=32, seed=0)
        for e in range(n_ckpt):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 1e-2)
            save_checkpoint(run / "checkpoints" / f"epoch_{e:04d}.pt", model.state_dict(),
                            {"epoch": e, "seed": 0, "arch": "vgg9"})  # fmt: skip
        analyses = {
            "measures fisher_rao,norms": lambda **kw: complexity_table(run, (X, y), (X[:200], y[:200]),
                                                                       ["fisher_rao", "norms"], **kw),
            "cones": lambda **kw: cone_tables(run, (3, 32, 32), **kw),
        }  # fmt: skip
        rows, ok = [], True
        for name, analyse in analyses.items():
            best = {"serial": float("inf"), "jobs": float("inf")}
            tables = {}
            for r in range(repeats):
                for mode in ("serial", "jobs"):
                    parts = Path(tmp) / f"{name}-{mode}-{r}".replace(" ", "_").replace(",", "_")
                    t0 = time.perf_counter()
                    if mode == "serial":
                        out = analyse(parts=parts)
                    else:
                        with process_pool(args.jobs) as ex:
                            out = analyse(parts=parts, executor=ex)
                    best[mode] = min(best[mode], time.perf_counter() - t0)
                    tables[mode] = out
            a, b = tables["serial"], tables["jobs"]
            pairs = [(a[k], b[k]) for k in a] if isinstance(a, dict) else [(a, b)]
            same = all(x.equals(y) for x, y in pairs)
            rel = max(_max_rel_diff(x, y) for x, y in pairs)
            speedup = best["serial"] / best["jobs"]
            ok &= same and speedup >= 1.7
            rows.append({"analysis": name, "serial_s": best["serial"], f"jobs{args.jobs}_s": best["jobs"],
                         "speed_up": speedup, "identical_tables": same, "max_rel_diff": rel,
                         "target": ">= 1.7x"})  # fmt: skip
    ceiling = machine_ceiling(args.jobs)
    print(pd.DataFrame(rows).to_string(index=False, float_format="{:.2f}".format))
    print(f"this machine's ceiling for {args.jobs} processes (the same single-threaded work alone and {args.jobs} at "
          "once, started together after their imports): " + ", ".join(f"{k} {v:.2f}x" for k, v in ceiling.items()))
    for row in rows:
        diff = "" if row["identical_tables"] else f" (largest relative difference {row['max_rel_diff']:.1e})"
        print(f"{row['analysis']}: speed-up {row['speed_up']:.2f}x with --jobs {args.jobs} (target >= 1.7x: "
              f"{'met' if row['speed_up'] >= 1.7 else 'NOT met'}); tables "
              f"{'identical' if row['identical_tables'] else 'DIFFERENT'} to serial"
              f"{diff}")
    print(f"load average after: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a loaded machine depresses the "
          "speed-up)")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
