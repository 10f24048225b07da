"""The projection statistic and the measure n_l (Gamba et al. 2020, sec. 2.3, eqs. 1-2).

For a filter w (one output channel of a conv weight, all C/groups * prod(kernel) entries, or one row
of a linear weight)::

    cos = sum(w) / (||w||_2 * sqrt(numel(w)))                                  (Gamba et al. 2020, eq. 1)

the cosine between the filter's hyperplane normal and the all-ones direction of its own receptive
field; the bias never enters. The paper's cosine over the layer's whole input space differs only by
the positive factor sqrt(numel(w) / (C*H*W)), so signs and n_l agree. A zero filter has cos = NaN,
is counted in ``n_zero``, and is left out of n_l::

    n_l = #{non-zero filters with cos <= 0} / #{non-zero filters}               (Gamba et al. 2020, eq. 2)

Numerics: sums and norms are accumulated in float64 from the stored weights.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import SkippedWarning, warn
from ..layers import AffineLayer, check_finite, find_layers
from ..sources import Source, SourceItem, map_sources

FILTER_COLUMNS = ["layer", "layer_index", "stage", "block", "filter", "cos"]


_BLOCK_BYTES = 1 << 18  # rows converted to float64 at a time: stays in the CPU cache


def filter_sums(layer: AffineLayer) -> tuple[np.ndarray, np.ndarray]:
    """Per filter, ``sum(w)`` and ``||w||_2`` in float64 (exact conversion of the stored weights,
    float64 accumulation), in one cache-blocked pass over the weight.

    Live weights on a GPU are summed there (float64) and only the per-filter results are copied back.
    A NaN or inf anywhere in a filter makes its sum or norm non-finite (finite float32/float16
    values cannot overflow a float64 sum of squares), which :func:`filter_cosines` uses as its
    finiteness check.
    """
    w = layer.filters()
    if w.device.type not in ("cpu", "cuda"):  # MPS and others have no float64: sum on the CPU
        w = w.cpu()
    n = w.shape[1]
    ones = torch.ones(n, 1, dtype=torch.float64, device=w.device)
    rows = max(1, _BLOCK_BYTES // (8 * max(n, 1)))
    sums, norms = [], []
    for chunk in torch.split(w, rows):
        c64 = chunk.to(torch.float64)
        sums.append((c64 @ ones)[:, 0])
        norms.append(torch.linalg.vector_norm(c64, dim=1))
    return torch.cat(sums).cpu().numpy(), torch.cat(norms).cpu().numpy()


def filter_cosines(layer: AffineLayer, where: str = "") -> np.ndarray:
    """The projection statistic of every filter of ``layer`` as a float64 array (NaN for zero filters).

    Raises :class:`~relugeom.errors.LayerError` naming the layer when its weight or bias holds NaN/inf.

    Example
    -------
    >>> from relugeom.layers import find_layers
    >>> conv = nn.Conv2d(1, 4, 2, bias=False)
    >>> w = torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [0, 0, 0, 0], [-1, -1, -1, -3]])
    >>> _ = conv.weight.data.copy_(w.view(4, 1, 2, 2))
    >>> filter_cosines(find_layers(conv)[0]).round(3)  # sum(w) / (||w|| sqrt(4)): 1, 0, NaN (zero), -6/sqrt(48)
    array([ 1.   ,  0.   ,    nan, -0.866])
    """
    s, norm = filter_sums(layer)
    if not (np.isfinite(s).all() and np.isfinite(norm).all()) or (
        layer.bias is not None and not bool(torch.isfinite(layer.bias).all())
    ):
        check_finite(layer, where)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = s / (norm * np.sqrt(layer.filter_numel))
    cos[norm == 0] = np.nan
    return cos


def _stats_one(
    obj: nn.Module | Mapping[str, torch.Tensor], where: str, *, linear: bool, pointwise: bool
) -> pd.DataFrame:
    layers = find_layers(obj, linear=linear, pointwise=pointwise)
    if not layers:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c == "cos" else "object") for c in FILTER_COLUMNS})
    coses = []
    for layer in layers:
        cos = filter_cosines(layer, where)
        n_zero = int(np.isnan(cos).sum())
        if n_zero:
            warn(
                f"{where}layer {layer.name!r}: {n_zero} of {len(cos)} filters are all zero; "
                "their cos is NaN, counted in n_zero and left out of n_l",
                SkippedWarning,
            )
        coses.append(cos)
    counts = [len(c) for c in coses]

    def per_layer(key: str) -> np.ndarray:
        return np.repeat(np.array([getattr(layer, key) for layer in layers], dtype=object), counts)

    return pd.DataFrame(
        {
            "layer": per_layer("name"),
            "layer_index": per_layer("layer_index").astype(np.int64),
            "stage": pd.array(per_layer("stage"), dtype="Int64"),
            "block": pd.array(per_layer("block"), dtype="Int64"),
            "filter": np.concatenate([np.arange(n) for n in counts]),
            "cos": np.concatenate(coses),
        }
    )


def _stats_item(obj: nn.Module | Mapping[str, torch.Tensor], item: SourceItem, *, linear: bool,
                pointwise: bool) -> pd.DataFrame:  # fmt: skip
    where = f"{item.path}: " if item.path else ""
    return _stats_one(obj, where, linear=linear, pointwise=pointwise)


def projection_stats(
    source: Source, *, linear: bool = False, pointwise: bool = False, arch: str | None = None, **schedule: Any
) -> pd.DataFrame:
    """Per-filter projection statistic (Gamba et al. 2020, eq. 1) of every analysed layer.

    Parameters
    ----------
    source
        An ``nn.Module``, a state dict, a checkpoint path, a run folder (every epoch) or a list of
        those (several runs: the ``run`` and ``seed`` columns tell them apart).
    linear
        Also analyse the linear layers (all of them).
    pointwise
        Also analyse convolutions with a 1x1 (one-position) kernel.
    arch
        Build state dicts into this architecture (gives ``stage`` and ``block``); relugeom
        checkpoints carry their own.
    schedule
        ``executor``, ``parts``, ``shard``: see :func:`~relugeom.sources.map_sources`.

    Returns
    -------
    DataFrame with ``layer, layer_index, stage, block, filter, cos`` (float64, NaN for zero
    filters), preceded by ``run, seed, epoch`` when the source is a series.

    Example
    -------
    >>> from relugeom.experiments.models import build_model
    >>> df = projection_stats(build_model("vgg9", seed=0))
    >>> df.groupby("layer_index").size().tolist()
    [64, 64, 128, 128, 256, 256]
    """
    analyse = functools.partial(_stats_item, linear=linear, pointwise=pointwise)
    return map_sources(source, analyse, arch=arch, desc="stats: checkpoints", **schedule)


def layer_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per layer (and run/seed/epoch): ``n_filters``, ``n_zero``, ``n_neg`` (= n_l, the
    fraction of non-zero filters with cos <= 0; Gamba et al. 2020, eq. 2) and ``mean_cos`` (over non-zero filters).

    Example
    -------
    >>> conv = nn.Conv2d(1, 3, 2, bias=False)
    >>> _ = conv.weight.data.copy_(torch.tensor([[1.0, 1, 1, 1], [1, -1, 1, -1], [-1, -1, -1, -3]]).view(3, 1, 2, 2))
    >>> layer_summary(projection_stats(conv))[["n_filters", "n_zero", "n_neg"]].values.tolist()  # cos 1, 0, -0.87
    [[3.0, 0.0, 0.6666666666666666]]
    """
    keys = [c for c in ("run", "seed", "epoch") if c in df] + ["layer", "layer_index", "stage", "block"]
    cos = df["cos"].to_numpy(dtype=np.float64)
    work = df[keys].copy()
    work["_nonzero"] = ~np.isnan(cos)
    work["_neg"] = np.where(np.isnan(cos), 0.0, cos <= 0)
    work["_cos"] = np.where(np.isnan(cos), 0.0, cos)
    g = work.groupby(keys, dropna=False, sort=False)
    out = g.agg(n_filters=("_nonzero", "size"), n_nonzero=("_nonzero", "sum"),
                neg=("_neg", "sum"), cos_sum=("_cos", "sum")).reset_index()  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):
        out["n_zero"] = out["n_filters"] - out["n_nonzero"]
        out["n_neg"] = out["neg"] / out["n_nonzero"].where(out["n_nonzero"] > 0)
        out["mean_cos"] = out["cos_sum"] / out["n_nonzero"].where(out["n_nonzero"] > 0)
    out = out.drop(columns=["n_nonzero", "neg", "cos_sum"])
    out["n_zero"] = out["n_zero"].astype("int64")
    sort = [c for c in ("run", "seed", "epoch") if c in out] + ["layer_index"]
    return out.sort_values(sort, kind="stable").reset_index(drop=True)


def summary_over_runs(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation of n_l over runs (seeds), per layer and epoch (Gamba et al. 2020 sec. 3.1:
    "3 independent seeds ... mean ... shaded areas corresponding to one standard deviation").

    ``summary`` is :func:`layer_summary` of several run folders (a ``run`` column). Returns one row
    per (epoch, layer) with ``n_runs``, ``n_l_mean``, ``n_l_std`` (sample deviation, ddof=1; 0 for a
    single run), ``mean_cos_mean`` and ``mean_cos_std``.

    Example
    -------
    >>> import pandas as pd
    >>> summary = pd.DataFrame({"run": ["seed0", "seed1", "seed2"], "layer": "features.0", "layer_index": 0,
    ...                         "n_neg": [0.25, 0.5, 0.75], "mean_cos": [0.1, 0.0, -0.1]})
    >>> summary_over_runs(summary)[["layer", "n_runs", "n_l_mean", "n_l_std"]].values.tolist()
    [['features.0', 3, 0.5, 0.25]]
    """
    keys = [c for c in ("epoch",) if c in summary] + ["layer_index", "layer"]
    g = summary.groupby(keys, dropna=False, sort=True)
    out = g.agg(n_runs=("n_neg", "count"), n_l_mean=("n_neg", "mean"), n_l_std=("n_neg", "std"),
                mean_cos_mean=("mean_cos", "mean"), mean_cos_std=("mean_cos", "std")).reset_index()  # fmt: skip
    out[["n_l_std", "mean_cos_std"]] = out[["n_l_std", "mean_cos_std"]].fillna(0.0)
    return out
