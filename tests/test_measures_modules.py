"""Every complexity measure asks the layer-rule registry: a module without a rule is refused with its name where
the measure needs the module's rule, named in a warning where the measure can do without it, and never dropped
silently. Sharpness and the Hessian trace only evaluate the loss: they take any module."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relugeom.errors import RelugeomWarning, UnsupportedLayerError
from relugeom.measures import (
    conv_spectral_norm,
    expected_sharpness,
    fisher_rao_norm,
    hessian_trace,
    kfac,
    measure_model,
    norm_measures,
    path_norm,
    tangent_sensitivity,
)

CONVT = "module '1' (ConvTranspose2d)"
GELU = "module '1' (GELU)"


def nets():
    torch.manual_seed(0)
    convt = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ConvTranspose2d(2, 2, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(2 * 16, 3)).double()  # fmt: skip
    gelu = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.GELU(), nn.Flatten(), nn.Linear(2 * 16, 3)).double()
    X = torch.randn(6, 1, 4, 4, dtype=torch.float64)
    return convt, gelu, (X, torch.tensor([0, 1, 2, 0, 1, 2]))


def fr_by_hand(net, X, y):
    params = list(net.parameters())
    total = 0.0
    for i in range(X.shape[0]):
        g = torch.autograd.grad(F.cross_entropy(net(X[i : i + 1]), y[i : i + 1]), params)
        total += float(sum((gi * pi).sum() for gi, pi in zip(g, params))) ** 2
    return total / X.shape[0]


def test_kfac_refuses_a_module_holding_parameters_without_a_rule():
    convt, gelu, data = nets()
    with pytest.raises(UnsupportedLayerError, match=re.escape(f"K-FAC: {CONVT} is not supported")):
        kfac(convt, data)
    # a parameter-free module needs no rule: K-FAC's factors come from the layers and the backward pass
    assert [b.name for b in kfac(gelu, data).blocks] == ["0", "3"]


def test_norm_measures_refuse_it_and_path_norms_name_it():
    convt, gelu, data = nets()
    with pytest.raises(UnsupportedLayerError, match=re.escape(f"norm measures: {CONVT} is not supported")):
        norm_measures(convt, data)
    with pytest.raises(UnsupportedLayerError, match=re.escape(f"{GELU} (no layer rule)")):
        path_norm(gelu, (1, 4, 4))
    with pytest.warns(RelugeomWarning, match=re.escape(GELU)):
        r = norm_measures(gelu, data)
    assert math.isnan(r.l1_path) and r.frobenius_product > 0


def test_fisher_rao_names_it_and_keeps_the_jvp_route():
    convt, _, (X, y) = nets()
    with pytest.warns(RelugeomWarning, match=re.escape("no layer rule") + ".*" + re.escape(CONVT)):
        r = fisher_rao_norm(convt, (X, y))
    assert r.norm2_identity is None and CONVT in r.identity_note
    assert r.norm2 == pytest.approx(fr_by_hand(convt, X, y), rel=1e-9)


def test_tangent_piecewise_linear_route_refuses_it_and_auto_takes_the_generic_route():
    convt, gelu, data = nets()
    for net, what in ((convt, CONVT), (gelu, GELU)):
        with pytest.raises(UnsupportedLayerError, match=re.escape(f"the piecewise-linear tangent route: {what}")):
            tangent_sensitivity(net, data, method="random", n_probes=2, route="piecewise_linear")
        assert tangent_sensitivity(net, data, method="random", n_probes=2).route == "generic"


def test_spectral_norm_refuses_it():
    with pytest.raises(UnsupportedLayerError, match="ConvTranspose2d is not an affine layer"):
        conv_spectral_norm(nn.ConvTranspose2d(2, 2, 3), (2, 4, 4))


def test_sharpness_and_hessian_trace_take_any_module():
    convt, _, data = nets()
    assert math.isfinite(expected_sharpness(convt, data, n_samples=2).value)
    assert math.isfinite(hessian_trace(convt, data, n_samples=2).value)


def test_the_table_passes_the_refusal_on():
    convt, _, data = nets()
    with pytest.raises(UnsupportedLayerError, match=re.escape(CONVT)):
        measure_model(convt, data, measures=("kfac",))
