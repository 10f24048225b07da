"""Cone states of every pair of a CIFAR-sized VGG9 (FFT rotations) vs. a straightforward dense implementation.

Issue 4's targets: at least 100x faster than building dense circulants, same numbers; the whole VGG9 on
32x32 inputs in under a minute on 2 cores. The dense baselines compute the same rotations (and the same
dist/open_diff) from explicit dense circulant matrices in the space the rotation is defined in (D = H*W
for VGG9's pairs, whose layers read different channel counts; D = C*H*W for an extra pair of equal-width
layers):

* dense/pair:   for each pair (i, p), the D x D circulant of p (its rows: all cyclic shifts), mean-free rows,
                one mat-vec with i's normal, max over rows;
* dense/filter: the same circulant once per filter p, one mat-mat with all normals of layer l+1.

    python benchmarks/bench_cones.py            # VGG9 on 3x32x32 + an equal-width pair
    python benchmarks/bench_cones.py --quick    # VGG9 on 3x16x16, seconds
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import numpy as np
import torch
from torch import nn

from relugeom.experiments.models import build_model
from relugeom.stats.cones import cone_geometry, cone_states, embed_filters, rotation_angles


def dense_circulant(v: np.ndarray) -> np.ndarray:
    """Rows: every spatial cyclic shift of v (C, *S), flattened: the dense (prod S) x (C prod S) block."""
    spatial = v.shape[1:]
    rows = [np.roll(v, s, axis=tuple(range(1, v.ndim))).ravel() for s in np.ndindex(*spatial)]
    return np.stack(rows)


def dense_pair_rotations(a: np.ndarray, b: np.ndarray, per_pair: bool) -> np.ndarray:
    """Angles between a[i] and all shifts of b[p] from dense circulants of b[p]."""
    out = np.empty((len(a), len(b)))
    ac = a.reshape(len(a), -1)
    ac = ac - ac.mean(axis=1, keepdims=True)
    an = np.linalg.norm(ac, axis=1)
    for p in range(len(b)):
        c = dense_circulant(b[p])
        c = c - c.mean(axis=1, keepdims=True)
        cn = np.linalg.norm(c[0])
        if per_pair:
            for i in range(len(a)):
                out[i, p] = (c @ ac[i]).max() / (an[i] * cn)
        else:
            out[:, p] = (c @ ac.T).max(axis=0) / (an * cn)
    return np.arccos(np.clip(out, -1, 1))


def conv_input_shapes(model: nn.Module, shape: tuple[int, ...]) -> tuple[list[nn.Conv2d], dict]:
    """The model's Conv2d modules in order and the input shape of each, by one forward pass with hooks."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    shapes = {}
    hooks = [m.register_forward_hook(lambda mod, a, o: shapes.update({mod: tuple(a[0].shape[1:])})) for m in convs]
    with torch.no_grad():
        model(torch.zeros(1, *shape, dtype=torch.float64))
    for h in hooks:
        h.remove()
    return convs, shapes


def normals_of_pairs(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(normals of layer l+1, normals of layer l) in the rotation space, for every within-stage pair."""
    convs, shapes = conv_input_shapes(model, shape)
    out = []
    for la, lb in zip(convs, convs[1:]):
        if shapes[la][1:] != shapes[lb][1:]:
            continue
        na, nb = embed_filters(la.weight, shapes[la][1:]), embed_filters(lb.weight, shapes[lb][1:])
        if na.shape[1] != nb.shape[1]:
            na, nb = na.sum(axis=1, keepdims=True), nb.sum(axis=1, keepdims=True)
        out.append((nb, na))
    return out


def dense_states(model: nn.Module, shape: tuple[int, ...], per_pair: bool) -> list[np.ndarray]:
    """dist, open_diff and rotation of every within-stage pair, the dense way (for the same layers)."""
    convs, shapes = conv_input_shapes(model, shape)
    out = []
    for la, lb in zip(convs, convs[1:]):
        sa, sb = shapes[la], shapes[lb]
        if sa[1:] != sb[1:]:
            continue  # a pooling between them: not a pair
        na = embed_filters(la.weight, sa[1:])
        nb = embed_filters(lb.weight, sb[1:])
        ga = cone_geometry(na, la.bias.detach().double().numpy())
        gb = cone_geometry(nb, lb.bias.detach().double().numpy())
        dist = (gb["apex"][:, None] - ga["apex"][None, :]) * math.sqrt(gb["D"][0])
        opend = gb["opening"][:, None] - ga["opening"][None, :]
        if na.shape[1] != nb.shape[1]:
            na, nb = na.sum(axis=1, keepdims=True), nb.sum(axis=1, keepdims=True)
        rot = dense_pair_rotations(nb, na, per_pair)
        out.append(np.stack([dist.ravel(), opend.ravel(), rot.ravel()], axis=1))
    return out


def timed(fn):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def compare(name: str, model: nn.Module, shape: tuple[int, ...], rows: list) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cone_states(model, shape, pairs=True)  # warm-up (imports, fx)
        t_fft, pairs = timed(lambda: cone_states(model, shape, pairs=True))
        t_states, _ = timed(lambda: cone_states(model, shape))
    t_filter, dense = timed(lambda: dense_states(model, shape, per_pair=False))
    ours = pairs[["dist", "open_diff", "rotation"]].to_numpy()
    theirs = np.concatenate(dense)
    diff = np.nanmax(np.abs(ours - theirs))
    n_pairs = len(ours)
    t_pair, dense2 = timed(lambda: dense_states(model, shape, per_pair=True))
    diff = max(diff, np.nanmax(np.abs(ours - np.concatenate(dense2))))
    normals = normals_of_pairs(model, shape)
    t_rot, _ = timed(lambda: [rotation_angles(b, a) for b, a in normals])
    t_rot_dense, _ = timed(lambda: [dense_pair_rotations(b, a, per_pair=False) for b, a in normals])
    rows.append((name, n_pairs, t_fft, t_states, t_filter, t_pair, diff, t_rot, t_rot_dense))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--wide", default=None, help="channels,size of the equal-width pair (default 16,16; quick 8,8)")
    args = ap.parse_args()
    torch.manual_seed(0)
    size = 16 if args.quick else 32
    vgg = build_model("vgg9", image_size=size, seed=0).double().eval()
    with torch.no_grad():
        for m in vgg.modules():
            if isinstance(m, nn.Conv2d):
                m.bias.normal_(0, 0.1)
    rows: list = []
    compare(f"vgg9 3x{size}x{size}", vgg, (3, size, size), rows)
    c, s = (8, 8) if args.quick else (16, 16)
    if args.wide:
        c, s = (int(v) for v in args.wide.split(","))
    wide = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1)).double()
    compare(f"equal width {c}x{s}x{s} (full space)", wide, (c, s, s), rows)
    print(f"threads: torch {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"{'case':<34}{'pairs':>8}{'fft (s)':>10}{'states(s)':>10}{'dense/filt':>12}{'dense/pair':>12}"
          f"{'x filt':>9}{'x pair':>9}{'max |diff|':>12}{'rot fft':>9}{'rot dense':>10}{'x rot':>8}")  # fmt: skip
    ok = True
    for name, n, tf, ts, tdf, tdp, diff, tr, trd in rows:
        print(f"{name:<34}{n:>8}{tf:>10.3f}{ts:>10.3f}{tdf:>12.3f}{tdp:>12.3f}{tdf / tf:>9.1f}{tdp / tf:>9.1f}"
              f"{diff:>12.2e}{tr:>9.3f}{trd:>10.3f}{trd / tr:>8.1f}")  # fmt: skip
        ok &= diff < 1e-8
    print("fft = cone_states(model, shape, pairs=True), the whole pipeline (layer tracing, BN folding, all pairs);"
          " states = the per-filter table;\nrot fft / rot dense = the rotations alone (rotation_angles vs. dense "
          "circulants per filter), without layer tracing and tables")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
