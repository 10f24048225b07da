"""Overhead of recording a training loop with relugeom's Recorder (a checkpoint per epoch, n_l of every
layer, cos histograms to TensorBoard) against the same loop without it, on a CIFAR-sized VGG
(relugeom's vgg9, 3x32x32 inputs, random data of CIFAR's shape).

Both loops run in this process, alternated (plain, recorded, plain, recorded, ...), from the same
initial weights and data; the ratio is the median over repeats of recorded / plain wall time per run. The
writes are also timed alone: one checkpoint commit (checkpoint, metrics.csv and resume.pt, each
fsynced), the n_l computation and the TensorBoard histograms.

    OMP_NUM_THREADS=2 python benchmarks/bench_callback.py [--epochs 3] [--samples 2048] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from relugeom.experiments.callbacks import Recorder
from relugeom.experiments.callbacks.recorder import live_stats
from relugeom.experiments.models import build_model


def train(net, x, y, epochs, batch, rec=None):  # noqa: ANN001, ANN201
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for _ in range(epochs):
        total = torch.zeros(())
        for i in range(0, len(x), batch):
            loss = nn.functional.cross_entropy(net(x[i : i + batch]), y[i : i + batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach()
            if rec is not None:
                rec.step()
        if rec is not None:
            rec.end_epoch(train_loss=total)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.samples, 3, 32, 32)
    y = torch.randint(0, 10, (args.samples,))
    base = build_model("vgg9", num_classes=10, in_channels=3, image_size=32, seed=0)
    n_params = sum(p.numel() for p in base.parameters())
    tmp = Path(tempfile.mkdtemp(prefix="bench_callback_"))
    plain_t, rec_t = [], []
    try:
        train(copy.deepcopy(base), x[:256], y[:256], 1, args.batch)  # warm-up
        for r in range(args.repeats):
            net = copy.deepcopy(base)
            t0 = time.perf_counter()
            train(net, x, y, args.epochs, args.batch)
            plain_t.append(time.perf_counter() - t0)
            net = copy.deepcopy(base)
            t0 = time.perf_counter()
            with Recorder(tmp / f"run{r}", net, seed=0, data="random-cifar", arch="vgg9", input_shape=(3, 32, 32),
                          num_classes=10, tensorboard=True) as rec:  # fmt: skip
                train(net, x, y, args.epochs, args.batch, rec)
            rec_t.append(time.perf_counter() - t0)
        # the recorder's own costs, alone
        net = copy.deepcopy(base)
        with Recorder(tmp / "parts", net, seed=0, arch="vgg9", tensorboard=True) as rec:
            commit, stats, tb = [], [], []
            for e in range(1, 6):
                state = {k: v.detach() for k, v in net.state_dict().items()}
                t0 = time.perf_counter()
                rec.run.commit_epoch(100 + e, state, {"epoch": 100 + e}, rec.rows, {"recorder": "bench"})
                commit.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                s = live_stats(net)
                stats.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for _, cos in s.groupby("layer_index")["cos"]:
                    rec.writer.add_histogram("h", cos.to_numpy(), e)
                rec.writer.flush()
                tb.append(time.perf_counter() - t0)
        ckpt_mb = sum(p.stat().st_size for p in (tmp / "run0" / "checkpoints").iterdir()) / (args.epochs + 1) / 2**20
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    ratio = med(r / p for r, p in zip(rec_t, plain_t))
    per_epoch = med(plain_t) / args.epochs
    print(f"vgg9 (3x32x32, {n_params / 1e6:.2f} M parameters), {args.samples} random samples, batch {args.batch}, "
          f"{args.epochs} epochs, {args.repeats} repeats, torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'loop':<28}{'median s':>10}{'runs (s)':>30}")
    print(f"{'plain':<28}{med(plain_t):>10.2f}{', '.join(f'{t:.2f}' for t in plain_t):>30}")
    print(f"{'with Recorder':<28}{med(rec_t):>10.2f}{', '.join(f'{t:.2f}' for t in rec_t):>30}")
    print(f"overhead ratio (median of recorded / plain): {ratio:.3f}   (target <= 1.05)")
    print(f"recorder costs per checkpoint (median of 5): commit {med(commit) * 1e3:.0f} ms "
          f"(checkpoint {ckpt_mb:.1f} MiB + metrics.csv + resume.pt, fsynced), n_l {med(stats) * 1e3:.0f} ms, "
          f"TensorBoard histograms {med(tb) * 1e3:.0f} ms")  # fmt: skip
    cost = med(commit) + med(stats) + med(tb)
    print(f"= {cost:.2f} s per checkpoint against {per_epoch:.1f} s per epoch here ({100 * cost / per_epoch:.1f}%); "
          f"a real CIFAR epoch (50,000 samples) is {50000 / args.samples:.0f}x longer")  # fmt: skip


if __name__ == "__main__":
    main()
