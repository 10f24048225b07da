"""Hyper-parameters of pooling nodes (module or functional), shared by the max- and average-pool rules."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..graph import Node


def ntuple(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v)
    return (int(v),) * n


def pool_name(node: Node) -> str:
    if node.module is not None:
        return f"pooling {type(node.module).__name__} {node.module_name!r}"
    return f"pooling {node.label}"


def params(node: Node, nd: int, kind: str) -> dict[str, Any]:
    """kernel_size, stride, padding, dilation, ceil_mode of a max (``kind="max"``) or average pooling node over
    ``nd`` spatial dims, from the module's attributes or the function's arguments."""
    from .rule import Rule

    names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode") if kind == "max" else \
        ("kernel_size", "stride", "padding", "ceil_mode")  # fmt: skip
    defaults = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}
    got = {n: Rule.arg(node, i + 1, n, defaults.get(n)) for i, n in enumerate(names)}
    k = ntuple(got["kernel_size"], nd)
    s = got["stride"]
    s = k if s is None or (isinstance(s, (tuple, list)) and len(s) == 0) else ntuple(s, nd)
    return {"kernel_size": k, "stride": s, "padding": ntuple(got["padding"], nd),
            "dilation": ntuple(got.get("dilation", 1), nd), "ceil_mode": bool(got["ceil_mode"])}  # fmt: skip


def _axis(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> tuple[np.ndarray, np.ndarray]:
    span = d * (k - 1) + 1
    num = size + 2 * p - span
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    idx = np.arange(out)[:, None] * s - p + np.arange(k)[None, :] * d
    return idx, (idx >= 0) & (idx < size)


def _adaptive_axis(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    start = np.array([(o * size) // out for o in range(out)])
    end = np.array([-(-((o + 1) * size) // out) for o in range(out)])
    width = int((end - start).max())
    idx = start[:, None] + np.arange(width)[None, :]
    return idx, idx < end[:, None]


def windows(axes: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, ...]) -> np.ndarray:
    """(n_out, window) flat input indices of (C, *S) inputs from per-axis (index, valid) tables, -1 invalid."""
    spatial = shape[1:]
    n = len(axes)
    out_sizes = [a[0].shape[0] for a in axes]
    win = [a[0].shape[1] for a in axes]
    ndim = 2 * n
    flat = np.zeros((1,) * ndim, dtype=np.int64)
    valid = np.ones((1,) * ndim, dtype=bool)
    for i, (idx, ok) in enumerate(axes):
        view = [1] * ndim
        view[i], view[n + i] = idx.shape
        flat = flat + idx.reshape(view) * int(math.prod(spatial[i + 1 :]))
        valid = valid & ok.reshape(view)
    full = (*out_sizes, *win)
    flat = np.broadcast_to(flat, full).reshape(math.prod(out_sizes), math.prod(win))
    valid = np.broadcast_to(valid, full).reshape(math.prod(out_sizes), math.prod(win))
    per_c = math.prod(spatial)
    members = flat[None] + (np.arange(shape[0]) * per_c)[:, None, None]
    members = np.where(valid[None], members, -1)
    return members.reshape(-1, members.shape[-1])


def pool_windows(node: Node, shape: tuple[int, ...], nd: int) -> np.ndarray:
    p = params(node, nd, "max")
    axes = [_axis(shape[1 + i], p["kernel_size"][i], p["stride"][i], p["padding"][i], p["dilation"][i],
                  p["ceil_mode"]) for i in range(nd)]  # fmt: skip
    return windows(axes, shape)


def adaptive_windows(node: Node, shape: tuple[int, ...], nd: int) -> np.ndarray:
    from .rule import Rule

    size = Rule.arg(node, 1, "output_size")
    size = tuple(size) if isinstance(size, (tuple, list)) else (size,) * nd
    out = [shape[1 + i] if size[i] is None else int(size[i]) for i in range(nd)]
    return windows([_adaptive_axis(shape[1 + i], out[i]) for i in range(nd)], shape)
