"""Benchmarks of relugeom.regions, as ratios against baselines run in the same process.

1. cnn_max_regions (Xiong et al. 2020 Theorem 1) against the literal enumeration of K_N (every t, every subset J) and
   against checking every candidate t with a max-flow; absolute times for the issue's two reference shapes;
   a sweep of 2D sizes with a 10 s limit each.
2. partition_2d (whole plane) against relucent (enumerates every region of an MLP with LPs) on 2D-input MLPs
   seeded with torch.manual_seed(0): region counts and time; and against a dense-grid sampler of the same
   slice (which misses regions).
3. regions_on_segment on a ResNet-18 (the zoo's, torchvision layout, Kaiming init, 3x32x32) along the segment
   between two inputs: regions found, seconds, and the ratio against re-running the forward pass (float64) at
   every region's midpoint, the cheapest independent check; the pieces' affine maps are checked against those
   forward passes.

    python benchmarks/bench_regions.py           # full (several minutes; relucent optional)
    python benchmarks/bench_regions.py --quick   # seconds (the ResNet on 2% of the segment)
    python benchmarks/bench_regions.py --resnet-only [--arch resnet18_cifar] [--fraction 0.1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

from relugeom.regions.cells import _forward_record
from relugeom.regions.formulas import cnn_max_regions
from relugeom.regions.slice import partition_2d

warnings.simplefilter("ignore")


def timed(f, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN201
    t = time.perf_counter()
    r = f(*a, **k)
    return r, time.perf_counter() - t


def timed_min(f, *a, repeat=3, **k):  # noqa: ANN001, ANN002, ANN003, ANN201
    """The fastest of ``repeat`` runs (the machine is shared; microsecond timings are noisy)."""
    best = None
    for _ in range(repeat):
        r, t = timed(f, *a, **k)
        best = t if best is None else min(best, t)
    return r, best


def _worker(q, args):  # noqa: ANN001
    t = time.perf_counter()
    r = cnn_max_regions(*args, budget=10**9)
    q.put((r, time.perf_counter() - t))


def with_limit(args: tuple, limit: float) -> tuple[object, float | None]:
    q: mp.Queue = mp.Queue()
    p = mp.Process(target=_worker, args=(q, args))
    p.start()
    p.join(limit)
    if p.is_alive():
        p.terminate()
        p.join()
        return None, None
    return q.get()


def bench_formula(quick: bool) -> pd.DataFrame:
    rows = []
    if quick:
        shapes = [((1, 6), 2, 1, 2), ((1, 8), 3, 1, 2), ((1, 3, 3), 2, 1, 2), ((1, 3, 4), 2, 1, 2)]
    else:  # the larger shapes on which the literal enumeration still finishes (0.05 s to a few s)
        shapes = [((1, 10), 3, 1, 2), ((1, 12), 3, 1, 2), ((2, 7), 2, 1, 3), ((1, 3, 5), 2, 1, 2),
                  ((1, 4, 4), 2, 1, 2), ((1, 3, 6), 2, 1, 2), ((1, 4, 5), 3, 1, 3)]
    for shape, k, s, d in shapes:
        lit, t_lit = timed(cnn_max_regions, shape, k, s, d, method="literal", budget=10**9)
        fast, t_fast = timed_min(cnn_max_regions, shape, k, s, d)
        assert lit == fast
        rows.append({"case": f"{shape} k={k} s={s} d={d}", "baseline": "literal K_N", "baseline_s": t_lit,
                     "relugeom_s": t_fast, "ratio": t_lit / t_fast, "value": str(fast)})  # fmt: skip
    flow_shape = ((1, 5, 5), 3, 1, 2) if not quick else ((1, 4, 4), 3, 1, 2)
    fl, t_fl = timed(cnn_max_regions, *flow_shape, method="flow", budget=10**9)
    fast, t_fast = timed_min(cnn_max_regions, *flow_shape)
    assert fl == fast
    rows.append({"case": f"{flow_shape[0]} k={flow_shape[1]} s=1 d={flow_shape[3]}", "baseline": "max-flow per t",
                 "baseline_s": t_fl, "relugeom_s": t_fast, "ratio": t_fl / t_fast, "value": str(fast)})  # fmt: skip
    for case in [((1, 1000), 3, 1, 64), ((1, 5, 5), 3, 1, 2)]:
        v, t = timed(cnn_max_regions, *case)
        rows.append({"case": f"{case[0]} k={case[1]} s=1 d={case[3]}", "baseline": "(absolute)", "baseline_s": np.nan,
                     "relugeom_s": t, "ratio": np.nan, "value": f"{len(str(v))} digits"})  # fmt: skip
    return pd.DataFrame(rows)


def sweep_2d(limit: float) -> pd.DataFrame:
    rows = []
    for shape, k, d in [((1, 5, 5), 3, 2), ((1, 5, 5), 3, 3), ((1, 5, 5), 3, 4), ((1, 6, 6), 3, 2), ((1, 6, 6), 3, 3),
                        ((1, 6, 6), 2, 2), ((1, 7, 7), 3, 2), ((1, 8, 8), 3, 2), ((2, 5, 5), 3, 2), ((3, 6, 6), 3, 4),
                        ((1, 5, 5), 2, 2), ((1, 6, 6), 2, 3), ((1, 7, 7), 2, 2), ((1, 7, 7), 3, 3), ((1, 8, 8), 2, 2),
                        ((3, 8, 8), 3, 8), ((3, 32, 32), 3, 2), ((1, 28, 28), 5, 1)]:  # fmt: skip
        v, t = with_limit((shape, k, 1, d), limit)
        rows.append({"input": str(shape), "kernel": k, "filters": d, "seconds": t,
                     "within_limit": t is not None})  # fmt: skip
    return pd.DataFrame(rows)


def _mlp(widths: list[int]) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def dense_grid_count(P, n: int) -> int:  # noqa: ANN001
    x0, x1, y0, y1 = P.bounds
    g1, g2 = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    Z = np.array(np.meshgrid(g1, g2)).reshape(2, -1).T
    keys = set()
    for chunk in np.array_split(Z, max(1, len(Z) // 50000)):
        _, pats, _ = _forward_record(P.graph, P.points(chunk))
        keys |= {b"|".join(np.asarray(p[i]).tobytes() for p in pats) for i in range(len(chunk))}
    return len(keys)


def bench_partition(quick: bool, relucent_on: bool) -> pd.DataFrame:
    nets = [[2, 8, 8, 1]] if quick else [[2, 32, 32, 1], [2, 64, 64, 1], [2, 32, 32, 32, 1]]
    rows = []
    for w in nets:
        net = _mlp(w)
        P, t_ours = timed(partition_2d, net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], None)
        ok = bool(P.verify(n_points=500).loc[0, "ok"])
        row = {"mlp": "-".join(map(str, w)), "relugeom_regions": P.n_regions, "relugeom_s": t_ours, "verify": ok}
        if relucent_on:
            try:
                import relucent

                def run(net=net):  # noqa: ANN001, ANN202
                    c = relucent.Complex(net)
                    c.bfs(nworkers=2, verbose=0)
                    return len(c)

                n_rel, t_rel = timed(run)
                row.update(relucent_regions=n_rel, relucent_s=t_rel, ratio=t_rel / t_ours,
                           same_count=n_rel == P.n_regions)  # fmt: skip
            except ImportError:
                row.update(relucent_regions=None, relucent_s=None, ratio=None, same_count=None)
        n_grid = 300 if quick else 1000
        s, t_s = timed(dense_grid_count, P, n_grid)
        row.update(grid=f"{n_grid}x{n_grid}", grid_regions=s, grid_s=t_s, grid_missed=P.n_regions - s)
        rows.append(row)
    return pd.DataFrame(rows)


def bench_resnet(arch: str, fraction: float) -> pd.DataFrame:
    from relugeom.experiments.models import build_model
    from relugeom.regions.segment import regions_on_segment

    net = build_model(arch, num_classes=10, in_channels=3, image_size=32, seed=0).eval()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 32, 32, generator=gen)
    x1 = x0 + fraction * (torch.randn(3, 32, 32, generator=gen) - x0)
    seg, t_exact = timed(regions_on_segment, net, x0, x1)
    mids = torch.from_numpy(((seg.pieces.t_start + seg.pieces.t_end) / 2).to_numpy())
    ref = net.double()

    def forward_at_midpoints() -> torch.Tensor:
        a, d = x0.double(), (x1 - x0).double()
        with torch.no_grad():
            return torch.cat([ref(a[None] + m.reshape(-1, 1, 1, 1) * d[None]) for m in mids.split(256)])

    out, t_fwd = timed(forward_at_midpoints)
    maps = np.stack(seg.pieces.value_at_0) + mids.numpy()[:, None] * np.stack(seg.pieces.slope)
    err = float(np.abs(maps - out.numpy()).max() / max(1.0, float(out.abs().max())))
    return pd.DataFrame([{"model": f"{arch} 3x32x32", "segment": f"{fraction:g} of x0 -> x1",
                          "activation_regions": seg.n_activation_regions, "linear_regions": seg.n_linear_regions,
                          "exact_s": t_exact, "forward_at_midpoints_s": t_fwd, "ratio": t_exact / t_fwd,
                          "max_rel_err": err}])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes only (seconds)")
    ap.add_argument("--no-relucent", action="store_true", help="skip the relucent baseline")
    ap.add_argument("--resnet-only", action="store_true", help="only the ResNet segment benchmark")
    ap.add_argument("--arch", default="resnet18", help="the ResNet of the segment benchmark (default resnet18)")
    ap.add_argument("--fraction", type=float, default=None,
                    help="the part of the segment x0 -> x1 counted (default 1, --quick 0.02)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    fraction = args.fraction if args.fraction is not None else (0.02 if args.quick else 1.0)
    if args.resnet_only:
        print("== regions_on_segment on a ResNet vs the forward pass at every region's midpoint ==")
        print(bench_resnet(args.arch, fraction).to_string(index=False, float_format="{:.4g}".format))
        return
    print("== cnn_max_regions (Xiong et al. 2020 Theorem 1) ==")
    print(bench_formula(args.quick).to_string(index=False, float_format="{:.4g}".format))
    if not args.quick:
        print("\n== 2D shapes (stride 1) within 10 s ==")
        print(sweep_2d(10.0).to_string(index=False, float_format="{:.3g}".format))
    print("\n== partition_2d over the whole plane vs relucent and a dense grid ==")
    print(bench_partition(args.quick, not args.no_relucent).to_string(index=False, float_format="{:.4g}".format))
    print("\n== regions_on_segment on a ResNet vs the forward pass at every region's midpoint ==")
    print(bench_resnet(args.arch, fraction).to_string(index=False, float_format="{:.4g}".format))


if __name__ == "__main__":
    main()
