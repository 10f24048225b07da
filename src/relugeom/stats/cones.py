"""Filters as polyhedral cones around the identity line, and how the cones of consecutive layers nest
(Gamba et al. 2019, "Polyhedral Cones", "Summary Statistics"; Carlsson 2019, sec. 4, eqs. 16-18).

A conv filter (w, b) acting on an input of shape (C, *S), D = C * prod(S) values, is looked at through
its circulant embedding (:func:`relugeom.geometry.unroll.circulant`): one hyperplane ``n_s . x + b = 0``
per spatial cyclic shift ``s`` of the filter's normal ``n`` (the kernel placed, centred, in a (C, *S)
array). All of them meet the identity line ``t * 1`` at the apex (Carlsson 2019, eq. 16)::

    apex        t = -b / sum(w)
    orientation sign(cos_D)
    opening     |arcsin(cos_D)|,  cos_D = sum(n) / (||n|| sqrt(D))   (the angle between the planes and 1)

For a filter i of layer l+1 against the filters p of layer l (consecutive conv layers with only a ReLU,
and optionally batch norms folded into the layers, between them; docs/cones.md, "Pairwise states")::

    dist_p = (t_i - t_p) * sqrt(D)   (D of layer l+1's input, the space where cone i lives)
    open_p = opening_i - opening_p
    d = max_p dist_p,  o = min_p open_p
    d >= 0, o > 0  -> OUT_PARTIAL_IN      d >= 0, o <= 0 -> OUT_FULL_IN
    d <  0, o >= 0 -> IN_FULL_OUT         d <  0, o < 0  -> IN_PARTIAL_OUT

and the rotation: the smallest angle between the normals' components orthogonal to 1, over all spatial
cyclic shifts of one of them. A cyclic shift is a circular convolution, so all shifts of all pairs come
from FFTs: for every frequency k, ``corr_k = A_k B_k^H`` (a matrix product over channels), then one
inverse FFT gives <a, shift_s b> for every s (never a dense D x D matrix). When the two layers read a
different number of channels (VGG: 3 -> 64, 64 -> 128, ...) their normals live in spaces of different
dimension; both are then restricted to the channel-constant inputs ``x[c, s] = u[s]``, a subspace of
each that contains the identity line, where a normal becomes its channel sum (``rotation_space`` says
which was used). Numerics: float64 throughout.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ArchitectureError, BudgetExceeded, ShapeError, SkippedWarning, warn
from ..layers import AffineLayer, batchnorm_affine, check_finite, find_layers
from ..sources import Source, SourceItem, map_sources

STATES: tuple[str, ...] = ("OUT_FULL_IN", "OUT_PARTIAL_IN", "IN_FULL_OUT", "IN_PARTIAL_OUT")
CONES: tuple[str, ...] = ("channel", "filter")
DENSE_SHIFTS_MAX = 64  # per-channel rotations on at most this many positions: dense shifts, else FFTs
MAX_PAIR_ROWS = 10**7  # per layer pair: the per-channel pairs table grows as filters x channels x channels
TIES: tuple[str, ...] = ("geometry", "authors")
PARAM_COLUMNS = ["layer", "layer_index", "stage", "block", "filter", "channel", "D", "apex", "orientation", "opening",
                 "cos_D"]  # fmt: skip
STATE_COLUMNS = ["layer", "layer_index", "stage", "block", "filter", "channel", "prev_layer", "prev_filter",
                 "prev_channel", "dist", "open_diff", "rotation", "rotation_shear", "rotation_space", "state",
                 "reason"]  # fmt: skip
PAIR_COLUMNS = ["layer", "layer_index", "stage", "block", "filter", "channel", "prev_layer", "prev_filter",
                "prev_channel", "dist", "open_diff", "rotation", "rotation_shear", "rotation_space",
                "state"]  # fmt: skip


# ---------------------------------------------------------------------------------------------- kernels


def embed_filters(
    weight: np.ndarray | torch.Tensor, spatial: Sequence[int], dilation: Sequence[int] | None = None, groups: int = 1
) -> np.ndarray:
    """The normal of each filter's first circulant hyperplane: the kernel placed in a (C, *spatial) array.

    Tap ``t`` of axis ``i`` lands at ``(t * d - d * (k - 1) // 2) mod spatial[i]`` (the centred kernel of
    :func:`~relugeom.geometry.unroll.circulant`, whose row for output position 0 this equals); taps that
    wrap onto one position add up. Returns float64 of shape (F, C, *spatial), C = groups * weight.shape[1].
    """
    w = weight.detach().cpu().double().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, float)
    f, cg, ks = w.shape[0], w.shape[1], w.shape[2:]
    n = len(ks)
    spatial = tuple(int(s) for s in spatial)
    if len(spatial) != n:
        raise ShapeError(f"a kernel of {n} spatial axes needs {n} spatial sizes, got {spatial}")
    dilation = tuple(dilation) if dilation is not None else (1,) * n
    out = np.zeros((f, groups * cg, *spatial))
    pos = _tap_positions(ks, dilation, spatial)
    grids = np.meshgrid(*pos, indexing="ij")
    wraps = not _taps_distinct(pos)
    per_group = f // groups
    for g in range(groups):
        rows = slice(g * per_group, (g + 1) * per_group)
        block = out[rows, g * cg : (g + 1) * cg]  # a view
        if wraps:  # np.add.at sums taps that wrap onto the same position (kernel larger than the input)
            np.add.at(block, (slice(None), slice(None), *grids), w[rows])
        else:
            block[(slice(None), slice(None), *grids)] = w[rows]
    return out


def _tap_positions(ks: Sequence[int], dilation: Sequence[int], spatial: Sequence[int]) -> list[np.ndarray]:
    """Where each kernel tap lands in the circulant embedding, per spatial axis (see :func:`embed_filters`)."""
    return [np.mod(np.arange(k) * d - d * (k - 1) // 2, s) for k, d, s in zip(ks, dilation, spatial)]


def _taps_distinct(pos: Sequence[np.ndarray]) -> bool:
    """True when no two taps wrap onto one position: the embedded normal is then the kernel, rearranged."""
    return all(len(np.unique(p)) == len(p) for p in pos)


def cone_geometry(normals: np.ndarray, bias: np.ndarray | None, dim: int | None = None) -> dict[str, np.ndarray]:
    """Apex, orientation, opening and cos_D of cones given by their normals (F, ...) and biases (F,).

    ``dim``: the dimension D of the space the cones live in, when ``normals`` hold only the non-zero entries
    (e.g. the kernels themselves, whose sum and norm are the embedded normal's when no taps wrap around);
    default: the size of one normal. A filter with sum(w) = 0 has its planes parallel to the identity line:
    apex NaN. A zero filter: all NaN.
    """
    flat = normals.reshape(normals.shape[0], -1)
    d = flat.shape[1] if dim is None else int(dim)
    s = flat.sum(axis=1)
    norm = np.sqrt(np.einsum("ij,ij->i", flat, flat))
    b = np.zeros(len(flat)) if bias is None else np.asarray(bias, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = s / (norm * math.sqrt(d))
        apex = np.where(s != 0, -b / s, np.nan)
    cos = np.clip(cos, -1.0, 1.0)
    return {"D": np.full(len(flat), d), "apex": apex, "orientation": np.sign(cos), "opening": np.abs(np.arcsin(cos)),
            "cos_D": cos}  # fmt: skip


def rotation_angles(
    a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, *, device: str | torch.device = "cpu",
    chunk: int = 1 << 24, fft_block: int | None = None,
) -> np.ndarray:
    """Smallest angle (radians, in [0, pi]) between ``a[i]`` and all cyclic shifts of ``b[p]``, after both
    lose their component along 1, for every pair (i, p).

    ``a`` is (I, C, *S) and ``b`` is (P, C, *S); shifts run over the spatial axes S. Computed with real FFTs
    over S and one complex matrix product over C per frequency (cost O(I P C prod(S)) plus the FFTs, never a
    dense prod(S) x prod(S) matrix). ``chunk`` bounds the entries of the (rows, P, *S) product;
    ``fft_block`` those of each inverse FFT (default 2**18 on CPU, small enough to stay in cache, which
    makes it several times faster; ``chunk`` elsewhere). A normal parallel to 1 has no orthogonal part: NaN.
    """
    ta = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a, dtype=torch.float64, device=device)
    tb = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b, dtype=torch.float64, device=device)
    if ta.shape[1:] != tb.shape[1:]:
        raise ShapeError(f"normals of shapes {tuple(ta.shape[1:])} and {tuple(tb.shape[1:])} cannot be compared")
    spatial = tuple(ta.shape[2:])
    axes = tuple(range(2, ta.dim()))
    dims = tuple(range(-len(spatial), 0))
    ta = ta - ta.mean(dim=tuple(range(1, ta.dim())), keepdim=True)
    tb = tb - tb.mean(dim=tuple(range(1, tb.dim())), keepdim=True)
    na = torch.linalg.vector_norm(ta.flatten(1), dim=1)
    nb = torch.linalg.vector_norm(tb.flatten(1), dim=1)
    fa = torch.fft.rfftn(ta, dim=axes)  # (I, C, *K)
    fb = torch.fft.rfftn(tb, dim=axes)  # (P, C, *K)
    kshape = tuple(fa.shape[2:])
    one_channel = fa.shape[1] == 1
    if one_channel:  # the sum over channels is a plain product: broadcast, no batched matmul
        fa, fbh = fa.flatten(1), fb.flatten(1).conj()  # (I, K), (P, K)
    else:
        fa = fa.flatten(2).permute(2, 0, 1)  # (K, I, C)
        fbh = fb.flatten(2).permute(2, 1, 0).conj()  # (K, C, P)
    n_p, per_row = tb.shape[0], max(1, tb.shape[0] * math.prod(spatial))
    if fft_block is None:
        fft_block = 1 << 18 if torch.device(device).type == "cpu" else chunk
    small = max(1, fft_block // per_row)
    rows = small if one_channel else max(small, chunk // per_row)
    best = torch.empty((ta.shape[0], n_p), dtype=torch.float64, device=device)
    for start in range(0, ta.shape[0], rows):
        if one_channel:
            spec = fa[start : start + rows, None, :] * fbh[None]  # (r, P, K)
        else:
            spec = torch.matmul(fa[:, start : start + rows], fbh).permute(1, 2, 0)  # (r, P, K): sum_c A conj(B)
        for sub in range(0, spec.shape[0], small):
            block = spec[sub : sub + small].reshape(-1, n_p, *kshape)
            # irfftn of A conj(B) gives sum_x a[x + s] b[x] for every shift s.
            corr = torch.fft.irfftn(block, s=spatial, dim=dims)
            best[start + sub : start + sub + block.shape[0]] = corr.flatten(2).amax(dim=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (best / (na[:, None] * nb[None, :])).cpu().numpy()
        zero = (na[:, None] * nb[None, :]).cpu().numpy() <= 1e-300
    cos[zero] = np.nan
    return np.arccos(np.clip(cos, -1.0, 1.0))


def _dense_shift_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`rotation_angles` for single-channel normals on few positions: a (n, *S), b (m, *S); every cyclic
    shift of every b written out, one matrix product (faster than many tiny FFTs when prod(S) is small)."""
    spatial = a.shape[1:]
    axes = tuple(range(1, 1 + len(spatial)))
    a = a.reshape(len(a), -1)
    a = a - a.mean(1, keepdims=True)
    b0 = b - b.reshape(len(b), -1).mean(1).reshape((-1,) + (1,) * len(spatial))
    shifts = np.stack([np.roll(b0, s, axis=axes).reshape(len(b), -1) for s in np.ndindex(*spatial)], 1)  # (m, S, S)
    best = (a @ shifts.reshape(-1, a.shape[1]).T).reshape(len(a), len(b), -1).max(2)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b0.reshape(len(b), -1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = best / (na[:, None] * nb[None, :])
    cos[(na[:, None] * nb[None, :]) <= 1e-300] = np.nan
    return np.arccos(np.clip(cos, -1.0, 1.0))


def classify(d: np.ndarray, o: np.ndarray, ties: str = "geometry") -> np.ndarray:
    """The four states from d = max_p dist_p and o = min_p open_p (docs/cones.md, "Pairwise states"); None where NaN.

    d > 0 (the apex of cone i lies beyond the farthest apex of the previous layer's cones) and d < 0 follow the
    authors' rule: o > 0 -> OUT_PARTIAL_IN else OUT_FULL_IN; o >= 0 -> IN_FULL_OUT else IN_PARTIAL_OUT.
    A tie, d exactly 0 (the apexes coincide; every apex is at 0 when the biases are 0, as at initialization):
    two cones with one apex are nested one in the other, decided by the openings alone, so ``ties="geometry"``
    (the default) gives OUT_FULL_IN when o <= 0 (cone i no wider: inside) and IN_FULL_OUT when o > 0 (cone i
    wider: it holds the others); ``ties="authors"`` keeps the authors' code, which counts d = 0 with d > 0
    (OUT_PARTIAL_IN when o > 0).
    """
    return _STATE_NAMES[_state_codes(d, o, ties)]


_STATE_NAMES = np.array(["OUT_PARTIAL_IN", "OUT_FULL_IN", "IN_FULL_OUT", "IN_PARTIAL_OUT", None], dtype=object)


def _state_codes(d: np.ndarray, o: np.ndarray, ties: str) -> np.ndarray:
    """:func:`classify` as codes into ``_STATE_NAMES``: 0 OUT_PARTIAL_IN, 1 OUT_FULL_IN, 2 IN_FULL_OUT,
    3 IN_PARTIAL_OUT, 4 None."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
    d = np.asarray(d, dtype=np.float64)
    o = np.asarray(o, dtype=np.float64)
    code = np.where(d >= 0, np.where(o > 0, 0, 1), np.where(o >= 0, 2, 3))
    if ties == "geometry":
        tie = d == 0
        code[tie] = np.where(o[tie] > 0, 2, 1)
    code[np.isnan(d) | np.isnan(o)] = 4
    return code


def _state_column(d: np.ndarray, o: np.ndarray, ties: str) -> pd.api.extensions.ExtensionArray:
    """:func:`classify` as a table column of the dtype pandas gives strings (taken from the four names, so a pair
    table's hundred thousand rows are not converted one string at a time)."""
    names = pd.array(_STATE_NAMES, dtype=pd.Series(_STATE_NAMES[:4]).dtype)  # the last, None, is missing
    return names.take(_state_codes(d, o, ties))


def _missing(n: int) -> pd.api.extensions.ExtensionArray:
    """``n`` missing integers (an all-NA ``Int64`` column, built without converting objects)."""
    return pd.arrays.IntegerArray(np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool))


def shear_rotation(phi: np.ndarray, opening_a: np.ndarray, opening_b: np.ndarray, sign_a: np.ndarray,
                   sign_b: np.ndarray) -> np.ndarray:  # fmt: skip
    """The poster's rotation: shear the wider cone along the identity line to the opening of the narrower one,
    then the smallest angle between its normal and the cyclic shifts of the other's (Gamba et al. 2019).

    A shear along 1 keeps a normal's component orthogonal to 1 and rescales the one along 1. At a common opening
    theta (``|arcsin cos(n, 1)|``, as :func:`cone_geometry`), two normals whose orthogonal parts make the angle
    phi make the angle ``arccos(s_a s_b sin^2 theta + cos^2 theta cos phi)`` (s: their orientations), increasing
    in phi; so the best shift is relugeom's (``phi`` from :func:`rotation_angles`), theta is the smaller opening.
    """
    # sin^2 increases on [0, pi/2], where the openings lie: sin^2 of the smaller opening is the smaller sin^2
    # (the sines of the broadcast operands, not of every pair)
    s2 = np.minimum(np.sin(opening_a) ** 2, np.sin(opening_b) ** 2)
    c = sign_a * sign_b * s2 + (1.0 - s2) * np.cos(phi)
    return np.arccos(np.clip(c, -1.0, 1.0))


# ---------------------------------------------------------------------------------------------- layers


def _fold_bn(layer: AffineLayer, bn: nn.Module | None, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Weight and bias of ``layer`` as float64 numpy, with an eval-mode batch norm folded in."""
    w = layer.weight.detach().cpu().double().numpy()
    b = np.zeros(w.shape[0]) if layer.bias is None else layer.bias.detach().cpu().double().numpy()
    if bn is None:
        return w, b
    scale, shift = (t.numpy() for t in batchnorm_affine(bn, f"{where}batch norm after layer {layer.name!r}"))
    return w * scale.reshape((-1,) + (1,) * (w.ndim - 1)), b * scale + shift


MAX_CONE_ELEMENTS = 2**28  # float64 entries of one layer's embedded normals (2 GiB): VGG on 3x224x224 fits


def cone_layers(obj: nn.Module, input_shape: Sequence[int], where: str = "") -> list[AffineLayer]:
    """The conv layers whose cones an input of ``input_shape`` defines, checked: every layer reached by
    such an input, and no layer's embedded normals (filters x channels x positions, float64) larger
    than ``MAX_CONE_ELEMENTS``. Raises :class:`~relugeom.errors.ShapeError` naming the layer otherwise."""
    shape = tuple(input_shape)
    try:
        layers = list(find_layers(obj, input_shape=shape, linear=False))
    except RuntimeError as e:  # the forward pass itself fails: the shape does not fit the network
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ShapeError(f"{where}an input of shape {shape} does not fit the network ({first})") from None
    for la in layers:
        if la.input_shape is None:
            raise ShapeError(f"{where}layer {la.name!r} is not reached by an input of shape {shape}")
        n = la.out_channels * math.prod(la.input_shape)
        if n > MAX_CONE_ELEMENTS:
            raise ShapeError(f"{where}an input of shape {shape} gives layer {la.name!r} cones over "
                             f"{math.prod(la.input_shape[1:])} positions: its embedded normals need "
                             f"{n * 8 / 2**30:.1f} GiB (at most {MAX_CONE_ELEMENTS * 8 / 2**30:.0f} GiB); "
                             "use the input size the network was trained on")  # fmt: skip
    return layers


class _Cones:
    """Cone normals and parameters of every conv layer of one model (internal)."""

    def __init__(self, obj: nn.Module | Mapping[str, torch.Tensor], input_shape: Sequence[int], where: str,
                 fold_bn: bool) -> None:  # fmt: skip
        if not isinstance(obj, nn.Module):
            raise ArchitectureError(
                f"{where}cone geometry needs the architecture (strides, pooling, input shapes), but got a bare state "
                "dict: pass arch= (--arch on the command line)"
            )
        from ..links import layer_links

        self.where = where
        self.layers = cone_layers(obj, input_shape, where)
        for la in self.layers:
            check_finite(la, where)
        self.links = layer_links(obj, self.layers, where, input_shape) if len(self.layers) > 1 else []
        bns: dict[str, nn.Module] = {}
        if fold_bn:
            for link in self.links:
                bns.update(link.bn)
        self.wb = {la.name: _fold_bn(la, bns.get(la.name), where) for la in self.layers}
        self._normals: dict[str, np.ndarray] = {}

    def normals(self, layer: AffineLayer, channel_sum: bool = False) -> np.ndarray:
        """Embedded normals (F, C, *S), or their channel sums (F, 1, *S), which embed the summed kernels."""
        key = (layer.name, channel_sum)
        if key not in self._normals:
            w, _ = self.wb[layer.name]
            groups = layer.groups or 1
            if channel_sum:
                w, groups = w.sum(axis=1, keepdims=True), 1
            self._normals[key] = embed_filters(w, layer.input_shape[1:], layer.dilation, groups)
        return self._normals[key]

    def params(self, layer: AffineLayer) -> dict[str, np.ndarray]:
        w, b = self.wb[layer.name]
        spatial = layer.input_shape[1:]
        if _taps_distinct(_tap_positions(w.shape[2:], layer.dilation or (1,) * len(spatial), spatial)):
            # the embedded normal is the kernel rearranged (and zeros): same sum and norm, D = C * prod(S)
            return cone_geometry(w, b, dim=math.prod(layer.input_shape))
        return cone_geometry(self.normals(layer), b)

    def channel_normals(self, layer: AffineLayer) -> np.ndarray:
        """Per (filter, channel) single-channel normals, (F, Cg, *S): each channel's kernel embedded alone."""
        key = (layer.name, "channel")
        if key not in self._normals:
            w, _ = self.wb[layer.name]
            f, cg = w.shape[:2]
            one = embed_filters(w.reshape(f * cg, 1, *w.shape[2:]), layer.input_shape[1:], layer.dilation, 1)
            self._normals[key] = one.reshape(f, cg, *one.shape[2:])
        return self._normals[key]

    def channel_params(self, layer: AffineLayer) -> dict[str, np.ndarray]:
        """Cones per (filter k, input channel c), shaped (F, Cg): the H x W single-channel circulant of w[k, c],
        D = prod(S), with the bias share b_k / Cg (the filter's pre-activation is the sum over its channels of
        ``w[k, c] * x_c + b_k / Cg``); ``channel`` is the input channel each column reads."""
        w, b = self.wb[layer.name]
        f, cg = w.shape[:2]
        spatial = layer.input_shape[1:]
        share = np.repeat(b / cg, cg)
        if _taps_distinct(_tap_positions(w.shape[2:], layer.dilation or (1,) * len(spatial), spatial)):
            geo = cone_geometry(w.reshape(f * cg, -1), share, dim=math.prod(spatial))
        else:
            geo = cone_geometry(self.channel_normals(layer).reshape(f * cg, -1), share)
        out = {k: v.reshape(f, cg) for k, v in geo.items()}
        groups = layer.groups or 1
        out["channel"] = (np.arange(f)[:, None] // max(1, f // groups)) * cg + np.arange(cg)[None, :]
        return out


def _meta(layer: AffineLayer, n: int) -> dict[str, object]:
    return {"layer": layer.name, "layer_index": layer.layer_index, "stage": layer.stage, "block": layer.block,
            "filter": np.arange(n)}  # fmt: skip


def _finish(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    df = pd.concat(frames, ignore_index=True)[columns]
    for c in ("stage", "block", "filter", "prev_filter", "channel", "prev_channel"):
        if c in df:
            df[c] = df[c].astype("Int64")
    return df


def _params_frame(cones: _Cones, per_channel: bool) -> pd.DataFrame:
    frames = []
    for la in cones.layers:
        if per_channel:
            p = cones.channel_params(la)
            f, cg = p["apex"].shape
            frames.append(pd.DataFrame({**_meta(la, f), "filter": np.repeat(np.arange(f), cg),
                                        **{k: v.ravel() for k, v in p.items()}}))  # fmt: skip
        else:
            frames.append(pd.DataFrame({**_meta(la, la.out_channels), "channel": pd.NA, **cones.params(la)}))
    return _finish(frames, PARAM_COLUMNS)


def cone_params(
    source: Source, input_shape: Sequence[int], *, arch: str | None = None, fold_bn: bool = True,
    cones: str = "channel",
) -> pd.DataFrame:
    """Apex, orientation and opening of the cone of every conv filter and input channel (Gamba et al. 2019;
    Carlsson 2019, eq. 16); ``cones="filter"``: one cone per whole filter.

    Parameters
    ----------
    source
        A module, checkpoint, run folder or list of those (state dicts need ``arch``).
    input_shape
        Shape of one network input, (C, H, W); each layer's cone lives on its own input shape.
    fold_bn
        Fold a batch norm that directly follows a conv (eval-mode statistics) into its weights.
    cones
        "channel" (the default; Gamba et al. 2019: "each channel of each filter defines a polyhedral cone"): one
        cone per (filter k, input channel c), the channel's kernel on its H x W positions (D = H * W) with the
        bias share b_k / C; "filter": one cone per whole filter in D = C * H * W.

    Returns
    -------
    DataFrame ``layer, layer_index, stage, block, filter, channel, D, apex, orientation, opening, cos_D``
    (float64; opening in radians; ``channel`` NA for whole-filter cones), preceded by ``run, seed, epoch`` for a
    series.

    Example
    -------
    >>> from relugeom.experiments.models import build_model
    >>> df = cone_params(build_model("vgg9", seed=0), (3, 32, 32), cones="filter")
    >>> df.groupby("layer_index").size().tolist()
    [64, 64, 128, 128, 256, 256]
    >>> cone_params(build_model("vgg9", seed=0), (3, 32, 32)).groupby("layer_index").size().tolist()[:2]
    [192, 4096]
    """

    return cone_tables(source, input_shape, arch=arch, fold_bn=fold_bn, tables=("params",), cones=cones)["params"]


def _normal_openings(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Opening and orientation of normals (N, ...) in their own space (for the shear rotation)."""
    g = cone_geometry(normals, None)
    return g["opening"], g["orientation"]


def _reduce(dist: np.ndarray, opend: np.ndarray, rot: np.ndarray, shear: np.ndarray, ties: str) -> dict:
    """Per cone of layer l+1 (last axis: the cones of layer l it is compared with): d = max dist, o = min open
    diff, the smallest rotation, the state."""
    n = dist.shape[-1]
    with np.errstate(invalid="ignore"):
        d = np.max(dist, axis=-1) if n else np.full(dist.shape[:-1], np.nan)
        o = np.min(opend, axis=-1) if n else np.full(dist.shape[:-1], np.nan)
        all_nan_rot = np.all(np.isnan(rot), axis=-1) if n else np.ones(dist.shape[:-1], bool)
        nearest = np.where(all_nan_rot, -1, np.argmin(np.where(np.isnan(rot), np.inf, rot), axis=-1))
        idx = np.maximum(nearest, 0)[..., None]
        rmin = np.where(all_nan_rot, np.nan, np.take_along_axis(rot, idx, -1)[..., 0])
        smin = np.where(all_nan_rot, np.nan, np.take_along_axis(shear, idx, -1)[..., 0])
    state = classify(d, o, ties)
    reason = np.where(pd.isna(state), "apex or opening undefined (a zero filter or sum(w) = 0)", None)
    return {"d": d, "o": o, "nearest": nearest, "rotation": rmin, "rotation_shear": smin, "state": state,
            "reason": reason}  # fmt: skip


def _pair_rows(cones: _Cones, la: AffineLayer, lb: AffineLayer, device: str, ties: str,
               want_pairs: bool) -> tuple[pd.DataFrame | None, pd.DataFrame]:  # fmt: skip
    """Whole-filter cones: per-pair (i in lb, p in la) table and per-filter-i table with the state."""
    pa, pb = cones.params(la), cones.params(lb)
    d_b = float(pb["D"][0]) if len(pb["D"]) else float("nan")
    dist = (pb["apex"][:, None] - pa["apex"][None, :]) * math.sqrt(d_b)
    opend = pb["opening"][:, None] - pa["opening"][None, :]
    (ca, *sa), (cb, *sb) = la.input_shape, lb.input_shape
    if sa != sb:
        warn(f"{cones.where}layers {la.name!r} and {lb.name!r} read inputs of different spatial sizes "
             f"{tuple(sa)} and {tuple(sb)} (a stride): their rotation is left NaN", SkippedWarning)  # fmt: skip
        rot, space = np.full(dist.shape, np.nan), "none"
        shear = rot
    else:
        channel_sum = ca != cb
        nb, na = cones.normals(lb, channel_sum=channel_sum), cones.normals(la, channel_sum=channel_sum)
        rot, space = rotation_angles(nb, na, device=device), "channel_sum" if channel_sum else "full"
        (ob, sgb), (oa, sga) = _normal_openings(nb), _normal_openings(na)
        shear = shear_rotation(rot, oa[None, :], ob[:, None], sga[None, :], sgb[:, None])
    ni, npv = dist.shape
    pairs = None
    if want_pairs:
        pairs = pd.DataFrame({
            "layer": lb.name, "layer_index": lb.layer_index, "stage": lb.stage, "block": lb.block,
            "filter": np.repeat(np.arange(ni), npv), "channel": _missing(ni * npv), "prev_layer": la.name,
            "prev_filter": np.tile(np.arange(npv), ni), "prev_channel": _missing(ni * npv), "dist": dist.ravel(),
            "open_diff": opend.ravel(), "rotation": rot.ravel(), "rotation_shear": shear.ravel(),
            "rotation_space": space, "state": _state_column(dist.ravel(), opend.ravel(), ties),
        })  # fmt: skip
    r = _reduce(dist, opend, rot, shear, ties)
    per_filter = pd.DataFrame({
        **_meta(lb, ni), "channel": pd.NA, "prev_layer": la.name,
        "prev_filter": pd.array(np.where(r["nearest"] < 0, None, r["nearest"]), dtype="Int64"), "prev_channel": pd.NA,
        "dist": r["d"], "open_diff": r["o"], "rotation": r["rotation"], "rotation_shear": r["rotation_shear"],
        "rotation_space": space, "state": r["state"], "reason": r["reason"],
    })  # fmt: skip
    return pairs, per_filter


def _pair_rows_channel(cones: _Cones, la: AffineLayer, lb: AffineLayer, device: str, ties: str,
                       want_pairs: bool) -> tuple[pd.DataFrame | None, pd.DataFrame]:  # fmt: skip
    """Per-channel cones (the authors' pairing): the cone of filter i of layer l+1 on its input channel c against
    the cones of filter c of layer l (the filter that produced channel c) on each of its own input channels j.
    Computed one channel c at a time (never the whole filters x channels x channels array)."""
    pa, pb = cones.channel_params(la), cones.channel_params(lb)
    fb, cgb = pb["apex"].shape
    cga = pa["apex"].shape[1]
    chan = pb["channel"]  # (fb, cgb): the filter of layer l feeding each cone of layer l+1
    if want_pairs and fb * cgb * cga > MAX_PAIR_ROWS:
        raise BudgetExceeded(f"{cones.where}the per-channel pairs table of {la.name!r} -> {lb.name!r} would have "
                             f"{fb * cgb * cga} rows (more than {MAX_PAIR_ROWS}); leave out pairs (--pairs) or use "
                             "whole-filter cones (cones='filter', --cones filter)")  # fmt: skip
    scale = math.sqrt(float(math.prod(lb.input_shape[1:])))
    sa, sb = la.input_shape[1:], lb.input_shape[1:]
    space = "channel" if sa == sb else "none"
    if sa != sb:
        warn(f"{cones.where}layers {la.name!r} and {lb.name!r} read inputs of different spatial sizes "
             f"{tuple(sa)} and {tuple(sb)} (a stride): their rotation is left NaN", SkippedWarning)  # fmt: skip
    else:
        nb, na = cones.channel_normals(lb), cones.channel_normals(la)  # (fb, cgb, *S), (fa, cga, *S)
    keys = ("d", "o", "nearest", "rotation", "rotation_shear", "state", "reason")
    red = {k: np.empty((fb, cgb), dtype=object if k in ("state", "reason") else float) for k in keys}
    red["nearest"] = np.empty((fb, cgb), dtype=np.int64)
    parts: list[pd.DataFrame] = []
    for c in np.unique(chan):
        rows = np.nonzero(chan == c)
        dist = (pb["apex"][rows][:, None] - pa["apex"][c][None, :]) * scale  # (n, cga)
        opend = pb["opening"][rows][:, None] - pa["opening"][c][None, :]
        if space == "channel":
            if math.prod(sb) <= DENSE_SHIFTS_MAX and torch.device(device).type == "cpu":
                rot = _dense_shift_angles(nb[rows], na[c])
            else:
                rot = rotation_angles(nb[rows][:, None], na[c][:, None], device=device)
            shear = shear_rotation(rot, pa["opening"][c][None, :], pb["opening"][rows][:, None],
                                   pa["orientation"][c][None, :], pb["orientation"][rows][:, None])  # fmt: skip
        else:
            rot = shear = np.full(dist.shape, np.nan)
        r = _reduce(dist, opend, rot, shear, ties)
        for k in keys:
            red[k][rows] = r[k]
        if want_pairs:
            n = len(rows[0])
            parts.append(pd.DataFrame({
                "layer": lb.name, "layer_index": lb.layer_index, "stage": lb.stage, "block": lb.block,
                "filter": np.repeat(rows[0], cga), "channel": int(c), "prev_layer": la.name, "prev_filter": int(c),
                "prev_channel": np.tile(np.arange(cga), n), "dist": dist.ravel(), "open_diff": opend.ravel(),
                "rotation": rot.ravel(), "rotation_shear": shear.ravel(), "rotation_space": space,
                "state": _state_column(dist.ravel(), opend.ravel(), ties),
                "_cone": np.repeat(rows[0] * cgb + rows[1], cga),
            }))  # fmt: skip
    pairs = None
    if want_pairs:  # in (filter, channel, prev_channel) order
        pairs = pd.concat(parts, ignore_index=True).sort_values(["_cone", "prev_channel"], kind="stable")
        pairs = pairs.drop(columns="_cone").reset_index(drop=True)
    per_cone = pd.DataFrame({
        **_meta(lb, fb), "filter": np.repeat(np.arange(fb), cgb), "channel": chan.ravel(), "prev_layer": la.name,
        "prev_filter": chan.ravel(),
        "prev_channel": pd.array(np.where(red["nearest"] < 0, None, red["nearest"]).ravel(), dtype="Int64"),
        "dist": red["d"].ravel(), "open_diff": red["o"].ravel(), "rotation": red["rotation"].ravel(),
        "rotation_shear": red["rotation_shear"].ravel(), "rotation_space": space, "state": red["state"].ravel(),
        "reason": red["reason"].ravel(),
    })  # fmt: skip
    return pairs, per_cone


def _skip_row(la: AffineLayer, lb: AffineLayer, reason: str) -> pd.DataFrame:
    return pd.DataFrame([{"layer": lb.name, "layer_index": lb.layer_index, "stage": lb.stage, "block": lb.block,
                          "filter": None, "channel": None, "prev_layer": la.name, "prev_filter": None,
                          "prev_channel": None, "dist": np.nan, "open_diff": np.nan, "rotation": np.nan,
                          "rotation_shear": np.nan, "rotation_space": None, "state": None,
                          "reason": reason}])  # fmt: skip


def _tables_one(cones: _Cones, tables: Sequence[str], device: str | torch.device, per_channel: bool,
                ties: str) -> dict[str, pd.DataFrame]:  # fmt: skip
    """The asked-for tables ("params", "states", "pairs") of one model, from one set of cones."""
    out = {"params": _params_frame(cones, per_channel)} if "params" in tables else {}
    if "states" not in tables and "pairs" not in tables:
        return out
    per_pair, per_filter = [], []
    rows_of = _pair_rows_channel if per_channel else _pair_rows
    for la, lb, link in zip(cones.layers, cones.layers[1:], cones.links):
        if not link.ok:
            reason = str(link.reason)
            if not reason.startswith("pooling"):
                warn(f"{cones.where}pair {la.name!r} -> {lb.name!r} skipped: {reason}", SkippedWarning)
            per_filter.append(_skip_row(la, lb, reason))
            continue
        pair_df, filt_df = rows_of(cones, la, lb, device, ties, "pairs" in tables)
        if pair_df is not None:
            per_pair.append(pair_df)
        per_filter.append(filt_df)
    if "states" in tables:
        out["states"] = _finish(per_filter, STATE_COLUMNS)
    if "pairs" in tables:
        out["pairs"] = _finish(per_pair, PAIR_COLUMNS)
    return out


def cone_tables(
    source: Source,
    input_shape: Sequence[int],
    *,
    arch: str | None = None,
    fold_bn: bool = True,
    tables: Sequence[str] = ("params", "states"),
    device: str | torch.device = "cpu",
    cones: str = "channel",
    ties: str = "geometry",
    **schedule: Any,
) -> dict[str, pd.DataFrame]:
    """Several cone tables from one pass over ``source`` (each checkpoint loaded and traced once).

    ``tables``: any of "params" (:func:`cone_params`), "states" (:func:`cone_states`) and "pairs"
    (:func:`cone_states` with ``pairs=True``); ``cones`` and ``ties`` as there. Returns ``{name: DataFrame}``.
    ``schedule``: ``executor``, ``parts``, ``shard`` (see :func:`~relugeom.sources.map_sources`).

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    >>> tables = cone_tables(net, (1, 6, 6))
    >>> {name: len(df) for name, df in tables.items()}  # a cone per filter and input channel (3 x 1 + 4 x 3)
    {'params': 15, 'states': 12}
    """
    unknown = set(tables) - {"params", "states", "pairs"}
    if unknown:
        raise ValueError(f"unknown cone tables {sorted(unknown)}; choose from params, states, pairs")
    if cones not in CONES:
        raise ValueError(f"cones must be one of {CONES}, got {cones!r}")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, got {ties!r}")

    analyse = functools.partial(_cones_item, input_shape=tuple(input_shape), fold_bn=fold_bn, tables=tuple(tables),
                                device=str(device), channel=cones == "channel", ties=ties)  # fmt: skip
    return map_sources(source, analyse, arch=arch, desc="cones: checkpoints", **schedule)


def _cones_item(obj, item: SourceItem, *, input_shape: tuple[int, ...], fold_bn: bool, tables: tuple[str, ...],
                device: str, channel: bool, ties: str) -> dict[str, pd.DataFrame]:  # noqa: ANN001
    found = _Cones(obj, input_shape, f"{item.path}: " if item.path else "", fold_bn)
    return _tables_one(found, tables, device, channel, ties)


def cone_states(
    source: Source,
    input_shape: Sequence[int],
    *,
    arch: str | None = None,
    fold_bn: bool = True,
    pairs: bool = False,
    device: str | torch.device = "cpu",
    cones: str = "channel",
    ties: str = "geometry",
) -> pd.DataFrame:
    """Nesting state of every cone of layer l+1 against the cones of layer l it reads (Gamba et al. 2019).

    ``cones="channel"`` (the default, the authors' pairing): the cone of filter i on input channel c against the
    cones of filter c of layer l (which produced channel c) on each of its input channels j; one row per (i, c),
    ``prev_filter`` = c and ``prev_channel`` the j of the smallest rotation. ``cones="filter"``: the cone of the
    whole filter i against those of all filters p of layer l; one row per i. ``ties``: how d = 0 is classified
    (:func:`classify`).

    Consecutive conv layers form a pair when only a ReLU (and batch norms right after the layers, folded in)
    lies between them; any other pair (pooling between them, a residual connection, another activation) gets
    one row with ``state`` NA and the ``reason``, and a warning unless the reason is pooling (a stage
    boundary, expected).

    Returns
    -------
    One row per cone: ``layer, layer_index, stage, block, filter, channel, prev_layer, prev_filter, prev_channel``
    (the cone of layer l with the smallest rotation), ``dist`` (= max_p dist_p), ``open_diff`` (= min_p open_p),
    ``rotation`` (min over p, radians; relugeom's: the normals' parts orthogonal to 1), ``rotation_shear`` (the
    poster's: the wider cone sheared to the narrower's opening, :func:`shear_rotation`), ``rotation_space``
    ("channel", "full" or "channel_sum", see the module docstring), ``state`` (one of :data:`STATES`),
    ``reason``. With ``pairs=True``: one row per compared pair with ``dist, open_diff, rotation,
    rotation_shear`` and ``state``, the pair classified on its own (:func:`classify` of its ``dist`` and
    ``open_diff``: one previous cone in place of the max/min over all of them; skipped pairs are left out).

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    >>> states = cone_states(net, (1, 6, 6))
    >>> states[["layer", "prev_layer"]].drop_duplicates().values.tolist(), bool(states.state.isin(STATES).all())
    ([['2', '0']], True)
    """

    name = "pairs" if pairs else "states"
    return cone_tables(source, input_shape, arch=arch, fold_bn=fold_bn, tables=(name,), device=device, cones=cones,
                       ties=ties)[name]  # fmt: skip


def state_distribution(states: pd.DataFrame, level: str = "net") -> pd.DataFrame:
    """Fraction of filters in each state (the poster's result figures), long form.

    ``level``: "net" (all pairs of a model), "stage" (block-wise: per stage) or "layer" (per pair). Grouped by
    ``run, seed, epoch`` when present. Columns: the keys, ``state``, ``count``, ``fraction``. Skipped pairs and
    undefined states are left out.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    >>> dist = state_distribution(cone_states(net, (1, 6, 6)))
    >>> dist.state.tolist(), round(float(dist.fraction.sum()), 12), int(dist["count"].sum())  # 12 cones of layer 2
    (['OUT_FULL_IN', 'OUT_PARTIAL_IN', 'IN_FULL_OUT', 'IN_PARTIAL_OUT'], 1.0, 12)
    """
    keys = [c for c in ("run", "seed", "epoch") if c in states]
    keys += {"net": [], "stage": ["stage"], "layer": ["layer_index", "layer"]}[level]
    df = states[states["state"].notna()]
    counts = df.groupby(keys + ["state"], dropna=False).size() if keys else df.groupby("state").size()
    counts = counts.rename("count").reset_index()
    full = pd.MultiIndex.from_product(
        [sorted(df[k].dropna().unique().tolist()) if k in df else [None] for k in keys] + [list(STATES)],
        names=keys + ["state"],
    ) if keys else pd.Index(list(STATES), name="state")  # fmt: skip
    counts = counts.set_index(keys + ["state"]).reindex(full, fill_value=0).reset_index()
    total = counts.groupby(keys)["count"].transform("sum") if keys else counts["count"].sum()
    counts["fraction"] = counts["count"] / total
    return counts[counts["count"].groupby([counts[k] for k in keys]).transform("sum") > 0] if keys else counts
