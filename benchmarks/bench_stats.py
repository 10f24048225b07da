"""Projection statistics of a checkpoint series vs. only loading the same files with torch.load.

Issue 2's target: for a series of CIFAR-sized VGG19 checkpoints (20M conv weights each), the
total time of ``projection_stats(run_dir)`` (listing the series, loading every checkpoint safely,
building the architecture, computing cos in float64) is at most 1.25x the time of a bare
``torch.load`` loop over the same files. Both run in this process on a warm page cache,
alternating, and the median of the repeats is reported.

Every load is checked first (zip records against the pickle's storages, tensors against their
storage: see ``relugeom/_torchfile.py``); that is inside the 1.25x. The last row is the cost of
``--verify`` (``relugeom.checkpoints.set_verify(True)``): the CRC-32 of every record, i.e. one more
read of every byte; it is off by default and not part of the target.

    python benchmarks/bench_stats.py            # 10 checkpoints, 5 repeats
    python benchmarks/bench_stats.py --quick    # 3 checkpoints, 3 repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from relugeom import projection_stats, save_checkpoint
from relugeom.checkpoints import set_verify
from relugeom.experiments.models import build_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--checkpoints", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    n_ckpt = args.checkpoints or (3 if args.quick else 10)
    repeats = args.repeats or (3 if args.quick else 5)

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "vgg19-run"
        model = build_model("vgg19", num_classes=10, image_size=32, seed=0)
        conv_weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        for e in range(n_ckpt):
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 1e-3)
            save_checkpoint(run / "checkpoints" / f"epoch_{e:04d}.pt", model.state_dict(),
                            {"epoch": e, "seed": 0, "arch": "vgg19"})  # fmt: skip
        files = sorted((run / "checkpoints").glob("*.pt"))
        size_mb = sum(f.stat().st_size for f in files) / 2**20

        def baseline() -> None:
            for f in files:
                torch.load(f, map_location="cpu")

        def relugeom() -> None:
            df = projection_stats(run)
            assert df["epoch"].nunique() == n_ckpt

        def verified() -> None:
            old = set_verify(True)
            try:
                relugeom()
            finally:
                set_verify(old)

        baseline(), relugeom()  # warm the page cache and imports
        t_base, t_ours, t_verify = [], [], []
        for _ in range(repeats):
            for fn, acc in ((baseline, t_base), (relugeom, t_ours), (verified, t_verify)):
                t0 = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t0)
        base, ours, ver = statistics.median(t_base), statistics.median(t_ours), statistics.median(t_verify)

    ratio = ours / base
    print(f"VGG19 (CIFAR-sized) series: {n_ckpt} checkpoints, {conv_weights / 1e6:.1f}M conv weights each, "
          f"{size_mb:.0f} MB; torch {torch.__version__}, {torch.get_num_threads()} threads; median of {repeats}")
    print(f"{'what':<44}{'seconds':>10}{'per ckpt':>10}")
    print(f"{'torch.load of every file (baseline)':<44}{base:>10.3f}{base / n_ckpt:>10.3f}")
    print(f"{'projection_stats(run_dir) (relugeom)':<44}{ours:>10.3f}{ours / n_ckpt:>10.3f}")
    print(f"{'ratio relugeom / baseline (target <= 1.25)':<44}{ratio:>10.3f}")
    print(f"{'projection_stats with --verify (CRC-32)':<44}{ver:>10.3f}{ver / n_ckpt:>10.3f}")
    print(f"{'ratio with --verify / baseline (no target)':<44}{ver / base:>10.3f}")
    return 0 if ratio <= 1.25 else 1


if __name__ == "__main__":
    sys.exit(main())
