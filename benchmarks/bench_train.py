"""relugeom's training loop vs. a bare PyTorch loop on the same model, data, batches and optimizer.

Issue 3's target: training overhead ratio at most 1.05. Two ratios are printed:

* ``loop``: the training part of each epoch (``metrics.csv``'s ``seconds``: forward, backward, SGD
  step, loss/accuracy bookkeeping, progress bar) against a bare loop doing forward, loss, backward
  and step over the same batches -- the overhead the issue asks about;
* ``total``: the whole ``train()`` call (with the per-epoch validation/test evaluation, the epoch-0
  evaluation and the atomic checkpoints) against the bare loop plus the same evaluations.

Synthetic CIFAR-sized data (3x32x32, 10 classes), the paper's augmentation (shifts and flips).
Both run in this process, alternating; ratios of the minima over the repeats (robust to other
processes on a shared machine) and of the medians are printed. With ``--device cuda`` it also
reports samples per second.

    python benchmarks/bench_train.py            # vgg9, 384 images, 2 epochs, 3 repeats
    python benchmarks/bench_train.py --quick    # lenet, 1024 images, 2 epochs, 3 repeats
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from relugeom.experiments.data import Augment, Batches, DataSplits, Split
from relugeom.experiments.models import build_model
from relugeom.experiments.train import TrainConfig, evaluate, make_scheduler, train


def synthetic(n: int, seed: int = 0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)
    split = lambda m: Split(torch.randn(m, 3, 32, 32, generator=g), torch.randint(0, 10, (m,), generator=g))  # noqa: E731
    return DataSplits("synthetic", split(n), split(n // 8), split(n // 8), 10, augment=Augment(4, True))


def bare(config: TrainConfig, data: DataSplits, device: str, with_eval: bool) -> tuple[float, float]:
    """(seconds of the training steps, total seconds) of a plain loop."""
    t_all = time.perf_counter()
    torch.manual_seed(config.seed)
    model = build_model(config.arch, num_classes=10, in_channels=3, image_size=32, init=config.init,
                        seed=config.seed).to(device)  # fmt: skip
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    sched = make_scheduler(opt, config.schedule)
    batches = Batches(data.train, config.batch_size, shuffle=True, augment=data.augment,
                      generator=torch.Generator().manual_seed(config.seed))  # fmt: skip
    if with_eval:
        evaluate(model, Batches(data.train, 256), device)
        evaluate(model, Batches(data.val, 256), device)
        evaluate(model, Batches(data.test, 256), device)
    steps = 0.0
    for _ in range(config.epochs):
        t0 = time.perf_counter()
        model.train()
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()
        steps += time.perf_counter() - t0
        sched.step()
        if with_eval:
            evaluate(model, Batches(data.val, 256), device)
            evaluate(model, Batches(data.test, 256), device)
    return steps, time.perf_counter() - t_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--arch", default=None)
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    arch = args.arch or ("lenet" if args.quick else "vgg9")
    n = args.images or (1024 if args.quick else 384)
    epochs = args.epochs or (2 if args.quick else 2)
    repeats = args.repeats or 3
    data = synthetic(n)
    config = TrainConfig(arch=arch, dataset="synthetic", epochs=epochs, batch_size=args.batch_size, seed=0)
    times: dict[str, list[float]] = {"bare_steps": [], "bare_total": [], "rg_steps": [], "rg_total": []}
    warm = TrainConfig(**{**config.__dict__, "epochs": 1})
    bare(warm, data, args.device, with_eval=True)  # warm-up: allocator, kernels, first-call costs
    with tempfile.TemporaryDirectory() as tmp:
        train(warm, Path(tmp) / "warm", device=args.device, data=data)
    for _ in range(repeats):
        steps, _ = bare(config, data, args.device, with_eval=False)
        times["bare_steps"].append(steps)
        _, total = bare(config, data, args.device, with_eval=True)
        times["bare_total"].append(total)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            metrics = train(config, Path(tmp) / "run", device=args.device, data=data)
            times["rg_total"].append(time.perf_counter() - t0)
        times["rg_steps"].append(float(pd.to_numeric(metrics.seconds).iloc[1:].sum()))
    lo = {k: min(v) for k, v in times.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"training: {arch} on {n} synthetic 3x32x32 images, batch {args.batch_size}, {epochs} epoch(s), "
          f"{torch.get_num_threads()} threads, device {args.device}, {repeats} repeats")
    print(f"{'':<28}{'bare (min s)':>14}{'relugeom (min s)':>18}{'ratio min':>11}{'ratio median':>14}")
    for key, label in (("steps", "loop (training steps)"), ("total", "total (with eval, ckpts)")):
        b, r = lo[f"bare_{key}"], lo[f"rg_{key}"]
        print(f"{label:<28}{b:>14.3f}{r:>18.3f}{r / b:>11.3f}{med[f'rg_{key}'] / med[f'bare_{key}']:>14.3f}")
    sps = n * epochs / lo["rg_steps"]
    print(f"relugeom training throughput: {sps:.1f} samples/s (target: loop ratio <= 1.05)")
    return 0 if lo["rg_steps"] / lo["bare_steps"] <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
