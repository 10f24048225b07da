"""Critical-layer re-initialization heatmap: reusing the activations entering each layer vs. the
naive full re-evaluation of the network for every (layer, epoch) reset.

Issue 3's target: for a CIFAR-sized VGG (>= 8 conv layers, >= 4 reference epochs), the time of
``reinit_accuracy(..., reuse=True)`` is at most 0.6x that of ``reuse=False`` on CPU, with the same
table. The reference "epochs" are independent Kaiming initialisations (the cost does not depend
on the values). Both run in this process, alternating; the ratio of the medians and the ratio of
the minima (robust to other processes on a shared machine) are reported.

    python benchmarks/bench_reinit.py            # VGG19 (16 convs), 4 epochs, 32 images, 7 repeats
    python benchmarks/bench_reinit.py --quick    # VGG19, 4 epochs, 16 images, 3 repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import pandas as pd
import torch

from relugeom.experiments.models import build_model
from relugeom.experiments.reinit import reinit_accuracy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--arch", default=None)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    arch = args.arch or "vgg19"
    n = args.images or (16 if args.quick else 32)
    repeats = args.repeats or (3 if args.quick else 7)

    model = build_model(arch, num_classes=10, image_size=32, seed=0).eval()
    states = {e: build_model(arch, num_classes=10, image_size=32, seed=100 + e).state_dict()
              for e in range(args.epochs)}
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())

    times: dict[bool, list[float]] = {True: [], False: []}
    tables: dict[bool, pd.DataFrame] = {}
    for _ in range(repeats):
        for reuse in (False, True):
            t0 = time.perf_counter()
            tables[reuse] = reinit_accuracy(model, states, (x, y), batch_size=32, reuse=reuse, device=args.device)
            times[reuse].append(time.perf_counter() - t0)
    pd.testing.assert_frame_equal(tables[True], tables[False])
    naive, fast = statistics.median(times[False]), statistics.median(times[True])
    ratio = fast / naive
    ratio_min = min(times[True]) / min(times[False])
    print(f"re-initialization heatmap: {arch}, {n_conv} conv layers x {args.epochs} epochs, {n} images "
          f"32x32, {torch.get_num_threads()} threads, device {args.device}, median of {repeats}")
    print(f"{'method':<34}{'seconds':>10}")
    print(f"{'naive (full network per reset)':<34}{naive:>10.3f}")
    print(f"{'reuse (layers l.. only)':<34}{fast:>10.3f}")
    print(f"all repeats (s): naive {[round(t, 3) for t in times[False]]}, reuse {[round(t, 3) for t in times[True]]}")
    print(f"ratio reuse / naive = {ratio:.3f} (medians), {ratio_min:.3f} (minima)  (target <= 0.6)   same table: yes")
    return 0 if ratio_min <= 0.6 else 1


if __name__ == "__main__":
    sys.exit(main())
