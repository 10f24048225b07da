"""All complexity measures of Daróczy 2020 for one model or a whole run, as one tidy table.

:func:`measure_model` returns long-form rows ``measure, value, std_error`` for one model;
:func:`complexity_table` maps it over a source (a module, a checkpoint, a run folder: every epoch)
and adds ``run, seed, epoch``. Besides the measures, every model gets ``train_loss``, ``test_loss``,
``train_error``, ``test_error``, ``generalization_gap`` (test loss minus train loss) and
``error_gap`` (test error minus train error), so that each measure can be set beside the gap.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from .._progress import progress
from ..checkpoints import load_checkpoint
from ..errors import RelugeomError
from ..sources import Source, SourceItem, iter_sources, map_sources
from ._common import Data, accuracy_and_loss, batches, prepare
from .fisher_rao import fisher_rao_norm
from .kfac import kfac
from .norms import norm_measures
from .sharpness import epsilon_sharpness, expected_sharpness, hessian_trace
from .tangent import tangent_sensitivity

MEASURES = ("fisher_rao", "kfac", "norms", "sharpness", "expected_sharpness", "hessian_trace", "tangent")
# the default set costs about 9 forward+backward passes over the measured data per checkpoint (at most 20, issue
# 15; benchmarks/bench_measures.py); the Hessian trace, tangent sensitivity, epsilon-sharpness and K-FAC are opt-in
DEFAULT_MEASURES = ("fisher_rao", "norms", "expected_sharpness")


def _rows(prefix: str, values: Mapping[str, float | None], se: Mapping[str, float] | None = None) -> list[dict]:
    se = se or {}
    return [{"measure": f"{prefix}{k}", "value": math.nan if v is None else float(v), "std_error": se.get(k, 0.0)}
            for k, v in values.items()]  # fmt: skip


def _subset(data: list[tuple[torch.Tensor, torch.Tensor]], n: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if n is None:
        return data
    out, left = [], n
    for x, y in data:
        if left <= 0:
            break
        out.append((x[:left], y[:left]))
        left -= int(y.shape[0])
    return out


def _pairs(n_probes: int) -> int:
    """Expected sharpness draws ``n_probes // 2`` antithetic pairs (``n_probes`` forward passes, at least 2 pairs for
    the standard error), so that the default set stays within 20 passes even when every sample is measured."""
    return max(2, n_probes // 2)


def estimate_costs(
    measures: Sequence[str], *, n_train: int, n_test: int = 0, max_samples: int | None = 256, n_probes: int = 20,
    input_numel: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Estimated cost of each measure of one checkpoint, in forward+backward passes over the ``n_train``
    measured samples (a forward pass counts 1/3), from how many passes over how much data it makes;
    ``benchmarks/bench_measures.py`` checks these against timings. Columns ``measure, passes, how``; the first
    row, ``losses``, is the train and test loss every checkpoint gets.

    >>> costs = estimate_costs(["fisher_rao", "hessian_trace"], n_train=1000, max_samples=250, n_probes=10)
    >>> costs["passes"].round(2).tolist()
    [0.33, 0.6, 5.38]
    """
    n = max(1, n_train)
    frac = min(n, max_samples or n) / n
    d_in = input_numel or 0
    # tangent: the exact method (d_in <= 256) takes every input direction, the random one its own and as many
    # shared probes; a forward-mode pass with the layers' products costs about 1.6 passes (VGG9 on digits,
    # benchmarks/bench_measures.py), and the spectral norm by Lanczos (when E_x S(x) is too large to keep) about
    # 100 passes over the measured samples
    tangent_probes = d_in if 0 < d_in <= 256 else 2 * max(2, n_probes // 4)
    table = {
        "fisher_rao": (0.6, "one forward-mode pass and the loss gradients of the outputs"),
        "kfac": (2.0, "one forward and backward with per-layer factor products"),
        "norms": (3.5, "one forward for the margin; spectral norms by Lanczos, path norms"),
        "sharpness": (200 * frac, f"up to 50 L-BFGS steps (about 4 passes each) on {frac:.0%} of the data"),
        "expected_sharpness": (_pairs(n_probes) * 2 * frac * 0.45,
                               f"{_pairs(n_probes)} antithetic pairs ({2 * _pairs(n_probes)} forwards) on {frac:.0%} "
                               "of the data"),
        "hessian_trace": ((1.5 + 2 * n_probes) * frac, f"{n_probes} Hessian-vector products on {frac:.0%}"),
        "tangent": ((1.6 * tangent_probes + 100) * frac,
                    f"{tangent_probes} forward-mode passes and up to about 100 for the spectral norm, on {frac:.0%} "
                    "of the data"),
    }  # fmt: skip
    rows = [{"measure": "losses", "passes": (n + n_test) / n / 3, "how": "one forward over the train and test data"}]
    rows += [{"measure": m, "passes": table[m][0], "how": table[m][1]} for m in MEASURES if m in measures]
    return pd.DataFrame(rows)


def measure_rows(
    name: str, model: nn.Module, tr: list, small: list, *, init: nn.Module | Mapping[str, torch.Tensor] | None = None,
    fisher: str = "empirical", seed: int = 0, epsilon: float = 1e-3, sigma: float = 1e-2, n_probes: int = 20,
    device: str | torch.device = "cpu",
) -> list[dict]:  # fmt: skip
    """The rows of one measure ``name`` of a prepared model: ``tr`` the measured batches, ``small`` their first
    ``max_samples`` samples (for the costly measures)."""
    if name == "fisher_rao":
        r = fisher_rao_norm(model, tr, fisher=fisher, device=device)
        return _rows("", {"fisher_rao_norm2": r.norm2, "fisher_rao_norm2_identity": r.norm2_identity,
                          "fisher_rao_depth": r.depth})  # fmt: skip
    if name == "kfac":
        K = kfac(model, tr, fisher=fisher, device=device)
        return _rows("", {"kfac_trace": K.trace(), "kfac_fisher_rao_norm2": K.vTMv(K.vector(model))})
    if name == "norms":
        d = norm_measures(model, tr, init=init, device=device).as_dict()
        keys = ("margin", "frobenius_product", "spectral_product", "l1_path", "l2_path", "frobenius_over_margin2",
                "spectral_over_margin2", "l1_path_over_margin2", "l2_path_over_margin2", "distance_to_init")
        return _rows("", {k: d[k] for k in keys})
    if name == "sharpness":
        s = epsilon_sharpness(model, small, epsilon, seed=seed, device=device)
        return _rows("", {"epsilon_sharpness": s.value})
    if name == "expected_sharpness":
        e = expected_sharpness(model, small, sigma, n_samples=_pairs(n_probes), seed=seed, device=device)
        return _rows("", {"expected_sharpness": e.value}, {"expected_sharpness": e.std_error})
    if name == "hessian_trace":
        h = hessian_trace(model, small, n_samples=n_probes, seed=seed, device=device)
        return _rows("", {"hessian_trace": h.value}, {"hessian_trace": h.std_error})
    if name == "tangent":
        d_in = small[0][0][0].numel()
        method = "exact" if d_in <= 256 else "random"
        t = tangent_sensitivity(model, small, method=method, n_probes=max(2, n_probes // 4), seed=seed, device=device,
                                spectral=True, spectral_tol=0 if method == "exact" else 1e-4)  # fmt: skip
        fro_se = t.frobenius_sq_se / (2 * t.frobenius) if t.frobenius > 0 else 0.0  # first-order (delta method)
        return _rows("", {"tangent_sensitivity_frobenius": t.frobenius,
                          "tangent_sensitivity_frobenius_sq": t.frobenius_sq,
                          "tangent_sensitivity_spectral": t.spectral, "mean_sq_sample_sensitivity": t.mean_sq},
                     {"tangent_sensitivity_frobenius": fro_se, "tangent_sensitivity_frobenius_sq": t.frobenius_sq_se,
                      "mean_sq_sample_sensitivity": t.std_error})  # fmt: skip
    raise RelugeomError(f"unknown measure {name!r}; choose from {', '.join(MEASURES)}")


def measure_model(
    model: nn.Module, train: Data, test: Data | None = None, measures: Sequence[str] = DEFAULT_MEASURES, *,
    init: nn.Module | Mapping[str, torch.Tensor] | None = None, fisher: str = "empirical", seed: int = 0,
    max_samples: int | None = 256, epsilon: float = 1e-3, sigma: float = 1e-2, n_probes: int = 20,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:  # fmt: skip
    """Long-form table (``measure, value, std_error``) of the chosen ``measures`` of one model.

    ``train`` is the data the measures are computed on; ``test`` gives the generalization gap.
    The costly measures (sharpness, Hessian trace, tangent sensitivity) use the first
    ``max_samples`` training samples; every stochastic one is seeded with ``seed``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> df = measure_model(net, (X, y), measures=("norms",)).set_index("measure")
    >>> w1, w2 = net[0].weight.detach().double(), net[2].weight.detach().double()
    >>> bool(abs(df.value["frobenius_product"] - float(w1.norm() ** 2 * w2.norm() ** 2)) < 1e-12)  # prod ||W_i||_F^2
    True
    """
    unknown = [m for m in measures if m not in MEASURES]
    if unknown:
        raise RelugeomError(f"unknown measure(s) {', '.join(unknown)}; choose from {', '.join(MEASURES)}")
    model = prepare(model, device=device)
    tr = batches(train, device=device)
    small = _subset(tr, max_samples)
    rows: list[dict] = []
    acc, loss = accuracy_and_loss(model, tr)
    base = {"train_loss": loss, "train_error": 1 - acc}
    if test is not None:
        te = batches(test, device=device)
        tacc, tloss = accuracy_and_loss(model, te)
        base.update(test_loss=tloss, test_error=1 - tacc, generalization_gap=tloss - loss,
                    error_gap=(1 - tacc) - (1 - acc))  # fmt: skip
    rows += _rows("", base)
    chosen = [m for m in MEASURES if m in measures]
    for name in progress(chosen, desc="measures", total=len(chosen)) if len(chosen) > 1 else chosen:
        rows += measure_rows(name, model, tr, small, init=init, fisher=fisher, seed=seed, epsilon=epsilon, sigma=sigma,
                             n_probes=n_probes, device=device)  # fmt: skip
    return pd.DataFrame(rows, columns=["measure", "value", "std_error"])


def complexity_table(
    source: Source, train: Data, test: Data | None = None, measures: Sequence[str] = DEFAULT_MEASURES, *,
    arch: str | None = None, init: str | os.PathLike | nn.Module | Mapping[str, torch.Tensor] | None = "first",
    executor: Any = None, parts: str | os.PathLike | None = None, shard: tuple[int, int] | None = None, **kwargs,
) -> pd.DataFrame:  # fmt: skip
    """:func:`measure_model` over every model of ``source`` (a run folder: every epoch), stacked.

    ``init="first"`` takes the first model of the source as the initialization when it is epoch 0
    (a run folder written by ``relugeom train``), for the distance to initialization; a path is loaded
    where each checkpoint is measured. ``executor``, ``parts``, ``shard``: see
    :func:`~relugeom.sources.map_sources`. Columns: ``run, seed, epoch`` (when known), ``measure, value,
    std_error``.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> X, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    >>> models = [nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)) for _ in range(2)]
    >>> df = complexity_table(models, (X, y), measures=("norms",))
    >>> df.columns.tolist(), sorted(set(df.measure))[:3]
    (['measure', 'value', 'std_error'], ['distance_to_init', 'frobenius_over_margin2', 'frobenius_product'])
    """
    train_ = batches(train)  # resolved once, re-used for every checkpoint
    test_ = None if test is None else batches(test)
    if isinstance(init, str) and init == "first":
        first = next(iter_sources(source, arch=arch), None)
        init = None
        if first is not None and (first.epoch == 0 or first.meta.get("epoch") == 0):
            init = first.path if first.path is not None else first.load()  # jobs load a path themselves
    elif isinstance(init, (str, os.PathLike)) and not Path(init).is_file():
        raise RelugeomError(f"init must be 'first', a checkpoint file, a module or a state dict, got {init!r}")
    analyse = functools.partial(_measure_item, train=train_, test=test_, measures=tuple(measures), init=init,
                                options=kwargs)  # fmt: skip
    return map_sources(source, analyse, arch=arch, executor=executor, parts=parts, shard=shard,
                       desc="measures: checkpoints")  # fmt: skip


def _measure_item(model: nn.Module | Mapping[str, torch.Tensor], item: SourceItem, *, train: Data,
                  test: Data | None, measures: Sequence[str], init: object,
                  options: Mapping) -> pd.DataFrame:  # fmt: skip
    if isinstance(init, (str, os.PathLike)):
        init = load_checkpoint(init).state_dict
    return measure_model(model, train, test, measures, init=init, **options)
