"""The layer-rule registry: lookup, the unsupported-module policy, user registration, the windows of max-pools
against torch, the unrolled operators against forward passes, and the generated supported-modules table."""

import operator
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from _batchnorm import randomize
from relugeom.errors import UnsupportedLayerError
from relugeom.graph import walk
from relugeom.modules import Rule, register_rule, rule_for_function, rule_for_method, rule_for_module
from relugeom.modules.registry import unregister_rule
from relugeom.modules.table import modules_markdown
from relugeom.regions.segment import regions_on_segment


def test_lookup_by_type_function_and_method():
    assert rule_for_module(nn.Conv3d(1, 1, 1)).role == "layer"
    assert rule_for_module(nn.BatchNorm1d(2)).role == "norm"
    assert rule_for_module(nn.MaxPool3d(2)).role == "max"
    assert rule_for_function(torch.relu) is rule_for_function(F.relu) is rule_for_method("relu")
    assert rule_for_function(operator.add).family == rule_for_function(torch.cat).family.replace(
        "concatenation", "residual addition")
    assert rule_for_function(F.max_pool2d).role == "max" and rule_for_function(F.adaptive_avg_pool2d).bias_free
    # never silently: transposed convs and attention have no rule
    assert rule_for_module(nn.ConvTranspose2d(1, 1, 2)) is None
    assert rule_for_module(nn.MultiheadAttention(4, 1)) is None


def test_a_subclass_takes_its_base_rule_only_without_its_own_forward():
    class Named(nn.Conv2d):
        pass

    class Standardized(nn.Conv2d):
        def forward(self, x):  # noqa: ANN001, ANN201
            w = self.weight - self.weight.mean()
            return self._conv_forward(x, w, self.bias)

    assert rule_for_module(Named(1, 1, 1)) is rule_for_module(nn.Conv2d(1, 1, 1))
    assert rule_for_module(Standardized(1, 1, 1)) is None


class Scale(nn.Module):
    """A user's module: multiplies by a fixed factor (torch.fx would trace it to a ``mul`` without a rule)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x):  # noqa: ANN001, ANN201
        return x * self.factor


class ScaleRule(Rule):
    family, role, bias_free, description = "tests", "linear", True, "multiplies by a positive factor"

    def cone_role(self, node):  # noqa: ANN001, ANN201
        return "pass", node.label


def test_unknown_module_is_refused_with_its_name_until_a_rule_is_registered():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 4), nn.ReLU(), nn.Sequential(Scale(-2.0)), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(UnsupportedLayerError, match=r"operator\.mul\(\) in module '2\.0' \(Scale\).*register_rule"):
        regions_on_segment(net, [-3.0], [3.0])
    register_rule(Scale, ScaleRule())
    try:
        with pytest.raises(ValueError, match="already has"):
            register_rule(Scale, ScaleRule())
        g = walk(net)
        assert [n.label for n in g.operations][2] == "module '2.0' (Scale)"
        seg = regions_on_segment(net, [-3.0], [3.0])
        # independent truth: the same function written with a Linear layer instead of Scale
        twin = nn.Sequential(net[0], net[1], nn.Linear(4, 4), nn.ReLU(), net[4])
        with torch.no_grad():
            twin[2].weight.copy_(-2.0 * torch.eye(4))
            twin[2].bias.zero_()
        ref = regions_on_segment(twin, [-3.0], [3.0])
        assert seg.n_activation_regions == ref.n_activation_regions
        np.testing.assert_allclose(seg.breakpoints, ref.breakpoints, atol=1e-12)
    finally:
        unregister_rule(Scale)


@pytest.mark.parametrize("module,what", [
    (nn.ConvTranspose2d(1, 1, 2), "module '1' (ConvTranspose2d)"),
    (nn.GELU(), "module '1' (GELU)"),
])  # fmt: skip
def test_unsupported_modules_are_named(module, what):
    net = nn.Sequential(nn.Conv2d(1, 1, 1), module, nn.Flatten())
    with pytest.raises(UnsupportedLayerError, match=re.escape(f"exact region counters: {what} is not supported")):
        regions_on_segment(net, torch.zeros(1, 3, 3), torch.ones(1, 3, 3))


def test_configurations_a_rule_cannot_treat_are_named():
    bn = nn.BatchNorm1d(2, track_running_stats=False)
    with pytest.raises(UnsupportedLayerError, match="module '1' .BatchNorm1d.*running statistics"):
        regions_on_segment(nn.Sequential(nn.Linear(2, 2), bn), [0.0, 0.0], [1.0, 1.0])

    class Mix(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return torch.cat([x, x], 0)

    with pytest.raises(UnsupportedLayerError, match="batch dimension"):
        regions_on_segment(Mix(), [0.0, 0.0], [1.0, 1.0])


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.integers(1, 2),
       st.booleans(), st.integers(4, 7), st.integers(0, 10**6))
@settings(max_examples=60, deadline=None)
def test_max_pool_windows_match_torch(nd, k, s, p, d, ceil, size, seed):
    # independent truth: torch's max-pool; the largest member of every window is its output
    if p > (d * (k - 1) + 1) // 2:
        p = 0
    assume(size + 2 * p >= d * (k - 1) + 1)
    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
    shape = (2,) + (size,) * nd
    x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    want = fn(x, k, s, p, d, ceil_mode=ceil)
    mod = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[nd - 1](k, s, p, d, ceil_mode=ceil)
    node = walk(nn.Sequential(mod)).operations[0]
    members = node.rule.windows(node, shape)
    vals = np.where(members >= 0, x.reshape(-1).numpy()[np.maximum(members, 0)], -np.inf)
    np.testing.assert_array_equal(vals.max(1), want.reshape(-1).numpy())


@pytest.mark.parametrize("out", [(1, 1), (2, 3), (3, 2), (5, 4)])
def test_adaptive_max_pool_windows_match_torch(out):
    x = torch.randn(1, 2, 5, 7, dtype=torch.float64)
    node = walk(nn.Sequential(nn.AdaptiveMaxPool2d(out))).operations[0]
    members = node.rule.windows(node, (2, 5, 7))
    vals = np.where(members >= 0, x.reshape(-1).numpy()[np.maximum(members, 0)], -np.inf)
    np.testing.assert_array_equal(vals.max(1), F.adaptive_max_pool2d(x, out).reshape(-1).numpy())


@pytest.mark.parametrize("module,shape", [
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True), (2, 5, 5)),
    (nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 4)),
    (randomize(nn.BatchNorm2d(2)).eval(), (2, 3, 3)),
    (nn.Conv2d(2, 3, 3, stride=2, padding=1, groups=1, padding_mode="reflect"), (2, 5, 5)),
    (nn.Flatten(), (2, 2, 2)),
    (nn.Dropout(0.5).eval(), (3, 2)),
])  # fmt: skip
def test_unrolled_operators_against_forward_passes(module, shape):
    module = module.double()
    node = walk(nn.Sequential(module)).operations[0]
    A, b = node.rule.unroll(node, shape)
    x = torch.randn((4, *shape), dtype=torch.float64)
    with torch.no_grad():
        want = module(x).reshape(4, -1).numpy()
    np.testing.assert_allclose(x.reshape(4, -1).numpy() @ A.T.toarray() + b, want, atol=1e-12)


def test_facts_for_the_measures():
    relu, bn, conv = (rule_for_module(m) for m in (nn.ReLU(), nn.BatchNorm2d(1), nn.Conv2d(1, 1, 1)))
    assert relu.homogeneous and not relu.parametrized and relu.piecewise_linear
    assert bn.parametrized and not bn.homogeneous and conv.parametrized
    assert rule_for_module(nn.MaxPool2d(2)).homogeneous and rule_for_module(nn.Flatten()).homogeneous
    assert rule_for_module(nn.PReLU()).parametrized and rule_for_module(nn.PReLU()).homogeneous
    # where a rule cannot give a measure its part it says so, never a wrong number
    x = torch.zeros(1, 1, 2, 2)
    node = walk(nn.Sequential(nn.ReLU())).operations[0]
    assert node.rule.kfac_patches(node, x) is NotImplemented and node.rule.pl_sq_norm(node, x, x) is NotImplemented
    prelu = walk(nn.Sequential(nn.PReLU())).operations[0]
    assert prelu.rule.theta_tangent(prelu, {}, {}, x) is NotImplemented
    assert isinstance(prelu.rule.param_degree(prelu), str) and prelu.rule.path_map(prelu, [x], {}, 1) is NotImplemented


def test_kfac_rows_of_a_grouped_3d_conv_reproduce_its_output():
    torch.manual_seed(3)
    conv = nn.Conv3d(4, 6, 2, padding=1, groups=2, padding_mode="circular").double()
    node = walk(nn.Sequential(conv)).operations[0]
    x = torch.randn(2, 4, 3, 3, 3, dtype=torch.float64)
    a = node.rule.kfac_patches(node, x)  # (B, T, G, K): W_g a_{t,g} + b_g is the output at t
    y = torch.einsum("btgk,gok->bgot", a, conv.weight.reshape(2, 3, -1)).reshape(2, 6, -1) + conv.bias[:, None]
    torch.testing.assert_close(y, conv(x).reshape(2, 6, -1).detach(), rtol=1e-12, atol=1e-12)
    rows = node.rule.kfac_grads(node, conv(x).detach())
    assert rows.shape == (2, a.shape[1], 2, 3)
    torch.testing.assert_close(rows[:, :, 1, 2], conv(x).detach().reshape(2, 6, -1)[:, 5], rtol=0, atol=0)


@pytest.mark.parametrize("module,shape", [
    (nn.AvgPool2d(3, 2, 1), (2, 5, 5)),
    (nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), (2, 6, 6)),
    (nn.AvgPool2d(2, divisor_override=3), (1, 4, 4)),
    (nn.AvgPool1d(3, 2, 1, ceil_mode=True), (2, 6)),
    (nn.AvgPool3d(2, 1), (1, 3, 3, 3)),
    (nn.AdaptiveAvgPool2d((2, 3)), (2, 5, 4)),
    (nn.Flatten(), (2, 2, 2)),
])  # fmt: skip
def test_path_norm_coefficients_against_the_unrolled_operator(module, shape):
    # independent truth: the squared entries of the exact operator (unroll evaluates the map on unit vectors)
    node = walk(nn.Sequential(module.double())).operations[0]
    A, _ = node.rule.unroll(node, shape)
    x = torch.rand((3, *shape), dtype=torch.float64)
    for p in (1, 2):
        got = node.rule.path_map(node, [x], {}, p).reshape(3, -1).numpy()
        np.testing.assert_allclose(got, x.reshape(3, -1).numpy() @ abs(A.T).power(p).toarray(), rtol=1e-12)


def test_supported_modules_doc_is_generated_from_the_registry():
    doc = Path(__file__).resolve().parents[1] / "docs" / "modules.md"
    assert doc.read_text() == modules_markdown(), "run: python -m relugeom.modules docs/modules.md"


def test_every_migrated_analysis_names_a_module_without_a_rule():
    import warnings

    from relugeom.errors import SkippedWarning
    from relugeom.experiments.reinit import reinit_accuracy
    from relugeom.layers import find_layers
    from relugeom.stats.cones import cone_states

    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(2, 2, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(2, 2, 3, padding=1), nn.Flatten())
    # the layer list can do without it: one warning naming it, never a silent drop
    with pytest.warns(SkippedWarning, match=r"module '2' \(ConvTranspose2d\)"):
        assert [la.name for la in find_layers(net)] == ["0", "4"]
    # cones: the pair across it is skipped, and the reason names it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        states = cone_states(net, (1, 4, 4))
    assert states.reason.dropna().str.contains("ConvTranspose2d '2'").all()
    # exact regions: refused with its name
    with pytest.raises(UnsupportedLayerError, match=r"module '2' \(ConvTranspose2d\) is not supported"):
        regions_on_segment(net, torch.zeros(1, 4, 4), torch.ones(1, 4, 4))
    # re-initialization only evaluates the network: it works, the transposed conv is not among the layers reset
    x = torch.randn(8, 1, 4, 4)
    with torch.no_grad():
        y = net(x).argmax(1)
    with pytest.warns(SkippedWarning, match="ConvTranspose2d"):
        df = reinit_accuracy(net, {0: net.state_dict()}, (x, y))
    assert list(df.layer) == ["0", "4"] and (df["drop"] == 0).all()


def test_exact_regions_through_dilated_ceil_mode_and_3d_max_pools():
    # the windows above feed the exact counters: pieces checked against forward passes and sampling
    from relugeom.regions.slice import partition_2d

    torch.manual_seed(5)
    net2 = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1, dilation=2, ceil_mode=True),
                         nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).double()
    P = partition_2d(net2, torch.randn(1, 7, 7), torch.randn(1, 7, 7), torch.randn(1, 7, 7), (-1, 1, -1, 1))
    assert P.n_regions > 1 and P.verify(n_points=300).loc[0, "ok"]
    net3 = nn.Sequential(nn.Conv3d(1, 2, 2), nn.ReLU(), nn.MaxPool3d(2), nn.Flatten(), nn.Linear(2, 1)).double()
    x0, x1 = torch.randn(1, 3, 3, 3), torch.randn(1, 3, 3, 3)
    seg = regions_on_segment(net3, x0, x1)
    t = np.linspace(0, 1, 4001)
    X = x0.double()[None] + torch.from_numpy(t).reshape(-1, 1, 1, 1, 1) * (x1 - x0).double()[None]
    with torch.no_grad():
        out = net3(X).numpy().ravel()
    for _, r in seg.pieces.iterrows():
        m = (t > r.t_start) & (t < r.t_end)
        np.testing.assert_allclose(r.value_at_0[0] + r.slope[0] * t[m], out[m], atol=1e-9)
