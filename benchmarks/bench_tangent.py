"""Tangent sensitivity: the piecewise-linear route against the generic per-sample nested autograd (torch.func).

Both compute the same ||S(x) z||^2 per sample and ||E_x S(x)||_F^2 (float64; the spectral norm as by default); the
table prints their times, the ratio (piecewise-linear / generic, < 1 means faster) and the largest relative
difference of the per-sample values and of ||E_x S(x)||_F^2.

    python benchmarks/bench_tangent.py            # VGG9 on 1x8x8 (exact, 64 directions) and on 3x32x32 (random)
    python benchmarks/bench_tangent.py --quick    # fewer samples
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from relugeom.experiments.models import build_model
from relugeom.measures.tangent import tangent_sensitivity


def timed(fn):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n = 8 if args.quick else 32
    cases = [("vgg9 1x8x8", (1, 8, 8), "exact"), ("vgg9 3x32x32", (3, 32, 32), "random")]
    rows, ok = [], True
    for name, shape, method in cases:
        model = build_model("vgg9", in_channels=shape[0], image_size=shape[1], seed=0)
        X = torch.randn(n, *shape, generator=torch.Generator().manual_seed(0))
        data = (X, torch.zeros(n, dtype=torch.long))
        kw = {"method": method, "n_probes": 4, "seed": 0}
        t_fast, fast = timed(lambda: tangent_sensitivity(model, data, route="piecewise_linear", **kw))  # noqa: B023
        t_slow, slow = timed(lambda: tangent_sensitivity(model, data, route="generic", **kw))  # noqa: B023
        diff = max(float(np.max(np.abs(fast.per_sample_sq - slow.per_sample_sq) / np.abs(slow.per_sample_sq))),
                   abs(fast.frobenius_sq - slow.frobenius_sq) / abs(slow.frobenius_sq))
        ok &= diff < 1e-9
        rows.append((name, method, n, t_fast, t_slow, diff))
    print(f"threads: torch {torch.get_num_threads()}")
    print(f"{'model':<16}{'method':<8}{'samples':>8}{'pl (s)':>10}{'generic (s)':>13}{'ratio':>8}{'max rel diff':>14}")
    for name, method, k, tf, ts, diff in rows:
        print(f"{name:<16}{method:<8}{k:>8}{tf:>10.2f}{ts:>13.2f}{tf / ts:>8.3f}{diff:>14.1e}")
    print("exact: one probe per input coordinate; random: 4 Rademacher probes per sample (same seed for both routes)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
