"""Cone states of every pair of a CIFAR-sized VGG9 (FFT rotations) vs. straightforward dense implementations.

Issue 4's targets: at least 100x faster than a straightforward dense implementation (dense circulants,
D = C*H*W) on the same layers, same numbers; the whole VGG9 on 32x32 inputs in under a minute on 2 cores.
Every baseline computes the same dist, open_diff and rotation of every pair:

* dense/literal: the issue's baseline. Each filter's dense circulant in its own input space D = C*H*W (its
                 prod(S) x D block of the layer's circulant: one row per spatial cyclic shift), built once
                 per filter into a reused buffer; apex and opening read from the rows (where they meet and
                 how they lean to the identity line), the rotation from the rows taken to the rotation space
                 (their channel sums when the two layers read different channel counts), one mat-mat per
                 filter of layer l against all normals of layer l+1.
* dense/reduced: a stronger baseline that already uses two of relugeom's shortcuts: apex and opening from
                 the kernels, and the circulant built directly in the rotation space (D = H*W for VGG9's
                 pairs), once per filter of layer l, one mat-mat against all normals of layer l+1.

The equal-width pair (C -> C -> C) has its rotation in the full space, where both baselines build the
same C*H*W circulants.

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
from functools import partial

import numpy as np
import torch
from torch import nn

from relugeom.experiments.models import build_model
from relugeom.stats.cones import cone_geometry, cone_states, embed_filters, rotation_angles


def dense_circulant(v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Rows: every spatial cyclic shift of v (C, *S), flattened: the dense (prod S) x (C prod S) block."""
    spatial = v.shape[1:]
    out = np.empty((math.prod(spatial), v.size)) if out is None else out
    for k, s in enumerate(np.ndindex(*spatial)):
        out[k] = np.roll(v, s, axis=tuple(range(1, v.ndim))).ravel()
    return out


def to_rotation_space(rows: np.ndarray, channels: int, channel_sum: bool) -> np.ndarray:
    """Rows (n, C*prod S) restricted to the rotation space (channel sums when asked), mean-free."""
    if channel_sum:
        rows = rows.reshape(len(rows), channels, -1).sum(axis=1)
    return rows - rows.mean(axis=1, keepdims=True)


def dense_pair_rotations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angles between a[i] and all shifts of b[p] from dense circulants of b[p], one per filter p."""
    out = np.empty((len(a), len(b)))
    ac = to_rotation_space(a.reshape(len(a), -1), 1, False)
    an = np.linalg.norm(ac, axis=1)
    for p in range(len(b)):
        c = to_rotation_space(dense_circulant(b[p]), 1, False)
        out[:, p] = (c @ ac.T).max(axis=0) / (an * np.linalg.norm(c[0]))
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


def within_stage_pairs(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[nn.Conv2d, nn.Conv2d, tuple, tuple]]:
    """(layer l, layer l+1, their input shapes) for consecutive convs reading the same spatial size."""
    convs, shapes = conv_input_shapes(model, shape)
    return [(la, lb, shapes[la], shapes[lb]) for la, lb in zip(convs, convs[1:]) if shapes[la][1:] == shapes[lb][1:]]


def normals_of_pairs(model: nn.Module, shape: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(normals of layer l+1, normals of layer l) in the rotation space, for every within-stage pair."""
    out = []
    for la, lb, sa, sb in within_stage_pairs(model, shape):
        na, nb = embed_filters(la.weight, sa[1:]), embed_filters(lb.weight, sb[1:])
        if na.shape[1] != nb.shape[1]:
            na, nb = na.sum(axis=1, keepdims=True), nb.sum(axis=1, keepdims=True)
        out.append((nb, na))
    return out


def pair_table(apex_a, open_a, apex_b, open_b, d_b: int, rot: np.ndarray) -> np.ndarray:  # noqa: ANN001
    """(i, p) rows of dist, open_diff, rotation, in cone_states' order."""
    dist = (apex_b[:, None] - apex_a[None, :]) * math.sqrt(d_b)
    opend = open_b[:, None] - open_a[None, :]
    return np.stack([dist.ravel(), opend.ravel(), rot.ravel()], axis=1)


def dense_reduced_states(model: nn.Module, shape: tuple[int, ...]) -> list[np.ndarray]:
    """dist, open_diff and rotation of every pair: apex/opening from the kernels, circulants in the rotation space."""
    out = []
    for (la, lb, sa, sb), (nb, na) in zip(within_stage_pairs(model, shape), normals_of_pairs(model, shape)):
        ga = cone_geometry(embed_filters(la.weight, sa[1:]), la.bias.detach().double().numpy())
        gb = cone_geometry(embed_filters(lb.weight, sb[1:]), lb.bias.detach().double().numpy())
        rot = dense_pair_rotations(nb, na)
        out.append(pair_table(ga["apex"], ga["opening"], gb["apex"], gb["opening"], math.prod(sb), rot))
    return out


def dense_literal_states(model: nn.Module, shape: tuple[int, ...], buffer: np.ndarray) -> list[np.ndarray]:
    """dist, open_diff and rotation of every pair from each filter's dense circulant in D = C*H*W."""
    out = []
    for la, lb, sa, sb in within_stage_pairs(model, shape):
        channel_sum = sa[0] != sb[0]
        geo, kept = {}, {}
        for layer, s in ((la, sa), (lb, sb)):
            normals = embed_filters(layer.weight, s[1:])
            bias = layer.bias.detach().double().numpy()
            n_rows, d = math.prod(s[1:]), math.prod(s)
            apex, opening, rot_rows = [], [], []
            for f in range(len(normals)):
                rows = dense_circulant(normals[f], buffer[: n_rows * d].reshape(n_rows, d))
                sums = rows.sum(axis=1)  # every plane meets t*1 where sum(row) t + b = 0
                apex.append(np.mean(-bias[f] / sums))
                cos = sums / (np.linalg.norm(rows, axis=1) * math.sqrt(d))
                opening.append(np.mean(np.abs(np.arcsin(np.clip(cos, -1, 1)))))
                # layer l: all shifted rows; layer l+1: its unshifted plane
                keep = rows if layer is la else rows[:1]
                rot_rows.append(to_rotation_space(keep, s[0], channel_sum))
            geo[layer] = (np.array(apex), np.array(opening))
            kept[layer] = rot_rows
        b_rows = np.concatenate(kept[lb])  # (I, rotation space)
        b_norm = np.linalg.norm(b_rows, axis=1)
        rot = np.empty((len(b_rows), len(kept[la])))
        for p, a_rows in enumerate(kept[la]):
            rot[:, p] = (a_rows @ b_rows.T).max(axis=0) / (b_norm * np.linalg.norm(a_rows[0]))
        rot = np.arccos(np.clip(rot, -1, 1))
        out.append(pair_table(*geo[la], *geo[lb], math.prod(sb), rot))
    return out


def literal_buffer(model: nn.Module, shape: tuple[int, ...]) -> np.ndarray:
    """One touched buffer for the largest circulant block, so page faults stay out of the baseline's time."""
    size = max(math.prod(s[1:]) * math.prod(s) for pair in within_stage_pairs(model, shape) for s in pair[2:])
    return np.ones(size)


def timed(fn):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    r = fn()
    return time.perf_counter() - t, r


def compare(name: str, model: nn.Module, shape: tuple[int, ...], rows: list) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cone_states(model, shape, pairs=True, cones="filter")  # warm-up (imports, fx)
        t_fft = min(timed(lambda: cone_states(model, shape, pairs=True, cones="filter"))[0] for _ in range(3))
        _, pairs = timed(lambda: cone_states(model, shape, pairs=True, cones="filter"))
    ours = pairs[["dist", "open_diff", "rotation"]].to_numpy()
    t_literal, literal = timed(partial(dense_literal_states, model, shape, literal_buffer(model, shape)))
    t_reduced, reduced = timed(lambda: dense_reduced_states(model, shape))
    t_reduced = min(t_reduced, *(timed(lambda: dense_reduced_states(model, shape))[0] for _ in range(2)))
    diff = max(np.nanmax(np.abs(ours - np.concatenate(d))) for d in (literal, reduced))
    normals = normals_of_pairs(model, shape)
    t_rot = min(timed(lambda: [rotation_angles(b, a) for b, a in normals])[0] for _ in range(3))
    t_rot_dense = min(timed(lambda: [dense_pair_rotations(b, a) for b, a in normals])[0] for _ in range(3))
    rows.append((name, len(ours), t_fft, t_literal, t_reduced, diff, t_rot, t_rot_dense))


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
    print(f"{'case':<34}{'pairs':>8}{'fft (s)':>9}{'literal':>9}{'reduced':>9}{'x literal':>11}{'x reduced':>11}"
          f"{'max |diff|':>12}{'rot fft':>9}{'rot dense':>10}{'x rot':>7}")  # fmt: skip
    ok = True
    for name, n, tf, tl, tr_, diff, tr, trd in rows:
        print(f"{name:<34}{n:>8}{tf:>9.3f}{tl:>9.2f}{tr_:>9.3f}{tl / tf:>11.0f}{tr_ / tf:>11.1f}"
              f"{diff:>12.2e}{tr:>9.4f}{trd:>10.3f}{trd / tr:>7.0f}")  # fmt: skip
        ok &= diff < 1e-8
    print("fft = cone_states(model, shape, pairs=True, cones='filter') (whole-filter cones, what the baselines "
          "compute), the whole pipeline (layer tracing, BN folding, tables);\n"
          "literal / reduced = the dense baselines (module docstring); rot fft / rot dense = the rotations alone "
          "(rotation_angles vs. the reduced dense circulants),\nwithout tracing and tables. Best of 3 runs each, "
          "the literal baseline: one run")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
