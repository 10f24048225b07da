"""Fisher-Rao norm: Euler's identity, JVP vs per-sample gradients vs (L+1)^2 identity, invariances."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _batchnorm import randomize as randomize_bn
from relugeom.errors import DataError, LayerError, RelugeomWarning, ShapeError
from relugeom.measures.fisher_rao import fisher_rao_norm


def mlp(widths, bias=False, act=nn.ReLU, seed=0):
    torch.manual_seed(seed)
    mods = []
    for i in range(len(widths) - 1):
        mods.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
        if i < len(widths) - 2:
            mods.append(act())
    return nn.Sequential(*mods).double()


def convnet(pool=nn.MaxPool2d, bias=False, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=bias), nn.ReLU(), pool(2),
        nn.Conv2d(3, 4, 3, padding=1, bias=bias), nn.ReLU(), pool(2),
        nn.Flatten(), nn.Linear(4, 3, bias=bias),
    ).double()  # fmt: skip


def per_sample_fr(net, X, y, fisher="empirical"):
    """E <theta, grad l>^2 by explicit per-sample backward passes (the definition)."""
    params = list(net.parameters())
    total = 0.0
    for i in range(X.shape[0]):
        out = net(X[i : i + 1])
        p = F.softmax(out, 1)[0].detach()
        labels = [int(y[i])] if fisher == "empirical" else range(out.shape[1])
        for c in labels:
            loss = F.cross_entropy(out, torch.tensor([c]))
            g = torch.autograd.grad(loss, params, retain_graph=True)
            d = sum((gi * pi).sum() for gi, pi in zip(g, params))
            total += float(d) ** 2 * (1.0 if fisher == "empirical" else float(p[c]))
    return total / X.shape[0]


@pytest.mark.parametrize("net, shape, depth", [
    (mlp([5, 7, 6, 3]), (5,), 3),
    (convnet(nn.MaxPool2d), (2, 4, 4), 3),
    (convnet(nn.AvgPool2d), (2, 4, 4), 3),
])  # fmt: skip
def test_euler_identity_and_routes_agree(net, shape, depth):
    torch.manual_seed(1)
    X = torch.randn(6, *shape, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    params = list(net.parameters())
    # <theta, grad_theta f_k> = (L+1) f_k for every logit (Euler, positive homogeneity).
    out = net(X[:2])
    for n in range(2):
        for k in range(3):
            g = torch.autograd.grad(out[n, k], params, retain_graph=True)
            lhs = sum((gi * pi).sum() for gi, pi in zip(g, params))
            assert float(lhs.detach()) == pytest.approx(depth * float(out[n, k].detach()), rel=1e-10, abs=1e-12)
    for fisher in ("empirical", "model"):
        r = fisher_rao_norm(net, (X, y), fisher=fisher)
        truth = per_sample_fr(net, X, y, fisher)
        assert r.depth == depth
        assert r.norm2 == pytest.approx(truth, rel=1e-9)
        assert r.norm2_identity == pytest.approx(truth, rel=1e-9)


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(2, 6), min_size=2, max_size=4), st.integers(0, 100))
def test_identity_matches_jvp_property(hidden, seed):
    net = mlp([4, *hidden, 3], seed=seed)
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    r = fisher_rao_norm(net, (X, y), fisher="model")
    assert r.depth == len(hidden) + 1
    assert r.norm2_identity == pytest.approx(r.norm2, rel=1e-9, abs=1e-300)


def hessian_diag_sum(net, X, y):
    params = list(net.parameters())
    loss = F.cross_entropy(net(X), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    tr = 0.0
    for j, g in enumerate(grads):
        flat = g.reshape(-1)
        for i in range(flat.numel()):
            h = torch.autograd.grad(flat[i], params[j], retain_graph=True)[0]
            tr += float(h.reshape(-1)[i])
    return tr


def test_invariant_under_rescaling_while_hessian_trace_is_not():
    net = mlp([4, 5, 6, 3])
    torch.manual_seed(3)
    X = torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    base = fisher_rao_norm(net, (X, y)).norm2
    h0 = hessian_diag_sum(net, X, y)
    # Dinh et al.'s alpha-scale: layer 1 times alpha, layer 2 times 1/alpha.
    scaled = mlp([4, 5, 6, 3])
    with torch.no_grad():
        scaled[0].weight.mul_(4.0)
        scaled[2].weight.div_(4.0)
    # node-wise rescaling of the second hidden layer's units
    lam = torch.tensor([0.5, 2.0, 3.0, 1.0, 0.25, 7.0], dtype=torch.float64)
    node = mlp([4, 5, 6, 3])
    with torch.no_grad():
        node[2].weight.mul_(lam[:, None])
        node[4].weight.div_(lam[None, :])
    for other in (scaled, node):
        assert torch.allclose(other(X), net(X), rtol=1e-12, atol=1e-12)
        assert fisher_rao_norm(other, (X, y)).norm2 == pytest.approx(base, rel=1e-9)
        assert abs(hessian_diag_sum(other, X, y) - h0) > 1e-3 * abs(h0)


def test_general_route_with_biases_bn_and_tanh():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 3)).double()
    net[1].running_mean.uniform_(-1, 1)
    net[1].running_var.uniform_(0.5, 2)
    net.eval()
    X = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    with pytest.warns(RelugeomWarning, match=r"'2' \(Tanh\)"):
        r = fisher_rao_norm(net, (X, y))
    assert r.norm2_identity is None and "Tanh" in r.identity_note and "batch norm" in r.identity_note
    assert r.norm2 == pytest.approx(per_sample_fr(net, X, y), rel=1e-9)


def test_unequal_depth_paths_detected():
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3, bias=False)
            self.b = nn.Linear(3, 3, bias=False)

        def forward(self, x):
            return self.b(torch.relu(self.a(x))) + x

    X, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 3, (8,))
    with pytest.warns(RelugeomWarning, match="unequal depth"):
        r = fisher_rao_norm(Skip().double(), (X, y))
    assert r.norm2_identity is None


def test_bad_input():
    net = mlp([4, 3])
    with pytest.raises(DataError, match="empty"):
        fisher_rao_norm(net, (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(DataError):
        fisher_rao_norm(net, (torch.full((2, 4), float("nan")), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(ShapeError):
        fisher_rao_norm(net, (torch.zeros(2, 5), torch.zeros(2, dtype=torch.long)))
    with pytest.raises(DataError, match="labels"):
        fisher_rao_norm(net, (torch.zeros(2, 4), torch.zeros(2)))
    bad = mlp([4, 3])
    with torch.no_grad():
        bad[0].weight[0, 0] = float("nan")
    with pytest.raises(LayerError, match="0.weight"):
        fisher_rao_norm(bad, (torch.zeros(2, 4), torch.zeros(2, dtype=torch.long)))
    huge = mlp([4, 3])
    with torch.no_grad():
        huge[0].weight.fill_(1e308)
    with pytest.raises(DataError, match="NaN"):
        fisher_rao_norm(huge, (torch.ones(2, 4), torch.zeros(2, dtype=torch.long)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fisher_rao_norm(net, [(torch.randn(3, 4), torch.tensor([0, 1, 2]))] * 2)


def test_hook_tangent_route_matches_jvp_and_falls_back():
    from torch.func import functional_call, jvp

    from relugeom.measures._tangent_theta import theta_tangent

    torch.manual_seed(4)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Dropout(0.5), nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3),
    ).double()  # fmt: skip
    for bn in (net[1], net[10]):
        randomize_bn(bn)
    net.eval()
    X = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))
    params = {k: v.detach() for k, v in net.named_parameters()}
    out_ref, u_ref = jvp(lambda p: functional_call(net, (p, dict(net.named_buffers())), (X,)), (params,), (params,))
    out, u = theta_tangent(net, X)
    torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(u, u_ref, rtol=1e-10, atol=1e-12)
    r = fisher_rao_norm(net, (X, y), identity=False)
    assert r.norm2 == pytest.approx(per_sample_fr(net, X, y), rel=1e-9)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x) + x

    # residual additions carry the tangents of both branches (the node-by-node route; it fell back before)
    res, x = Residual().double(), torch.randn(2, 3, dtype=torch.float64)
    p = {k: v.detach() for k, v in res.named_parameters()}
    _, u_ref = jvp(lambda q: functional_call(res, q, (x,)), (p,), (p,))
    torch.testing.assert_close(theta_tangent(res, x)[1], u_ref, rtol=1e-12, atol=1e-12)
    assert theta_tangent(nn.Sequential(nn.Linear(3, 3), nn.Tanh()).double(), torch.randn(2, 3).double()) is None


class EqualDepthBlock(nn.Module):
    """A bias-free residual block whose shortcut carries as many weight layers as the branch (two convs):
    every input-output path of a stack of them crosses the same number of weight layers."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.s1, self.s2 = nn.Conv2d(c, c, 1, bias=False), nn.Conv2d(c, c, 1, bias=False)

    def forward(self, x):  # noqa: ANN001, ANN201
        return F.relu(self.b(F.relu(self.a(x))) + self.s2(self.s1(x)))


class EqualDepthNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(EqualDepthBlock(3), EqualDepthBlock(3))
        self.fc = nn.Linear(3, 4, bias=False)

    def forward(self, x):  # noqa: ANN001, ANN201
        h = self.blocks(F.max_pool2d(torch.relu(self.stem(x)), 2))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


def euler_ratios(net, X):
    """<theta, grad_theta f_k(x)> / f_k(x) for every sample and logit (Euler: the degree, where f is homogeneous)."""
    params = list(net.parameters())
    out = net(X)
    ratios = []
    for n in range(X.shape[0]):
        for k in range(out.shape[1]):
            g = torch.autograd.grad(out[n, k], params, retain_graph=True)
            ratios.append(float(sum((gi * pi).sum() for gi, pi in zip(g, params))) / float(out[n, k]))
    return np.array(ratios)


def test_identity_route_on_a_residual_net_whose_paths_have_one_depth():
    torch.manual_seed(5)
    net = EqualDepthNet().double()
    X = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    # every path: stem, two convs per block (branch or shortcut), fc: L + 1 = 1 + 2 + 2 + 1 = 6 (Euler, autograd)
    np.testing.assert_allclose(euler_ratios(net, X[:2]), 6.0, rtol=1e-9)
    for fisher in ("empirical", "model"):
        r = fisher_rao_norm(net, (X, y), fisher=fisher)
        truth = per_sample_fr(net, X, y, fisher)
        assert r.depth == 6 and r.identity_note == ""
        assert r.norm2 == pytest.approx(truth, rel=1e-9)
        assert r.norm2_identity == pytest.approx(truth, rel=1e-9)


def test_resnets_have_no_single_depth_and_the_identity_route_is_refused():
    from _resnets import randomize_bn as randomize_all_bn
    from relugeom.measures._tangent_theta import theta_tangent
    from relugeom.zoo.resnet import resnet

    torch.manual_seed(6)
    X = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    # bias-free and without batch norm, a ResNet's identity shortcuts skip two convs: the Euler ratio
    # <theta, grad f> / f differs from logit to logit, so no single L satisfies the identity
    plain = resnet(18, cifar=True, num_classes=3, width=2).double()
    for m in plain.modules():
        for cname, child in m.named_children():
            if type(child).__name__ == "BatchNorm2d":
                setattr(m, cname, nn.Identity())
    plain.fc.bias = None
    ratios = euler_ratios(plain, X[:2])
    assert ratios.max() - ratios.min() > 0.1
    with pytest.warns(RelugeomWarning, match=r"paths of unequal depth meet .*: operator\.add\(\) in module 'layer1\.0' "
                                             r"\(BasicBlock\) \(1 and 3 weight layers\)"):  # fmt: skip
        r = fisher_rao_norm(plain, (X, y))
    assert r.norm2_identity is None and r.depth is None
    assert r.norm2 == pytest.approx(per_sample_fr(plain, X, y), rel=1e-9)
    # the zoo's ResNet-18 as it comes (batch norm, biased fc): the JVP route, node by node, equals the
    # per-sample gradients; the identity is refused with the reasons named
    net = randomize_all_bn(resnet(18, cifar=True, num_classes=3, width=2).double())
    assert theta_tangent(net, X) is not None  # carried through the residual additions, no torch.func fallback
    for fisher in ("empirical", "model"):
        with pytest.warns(RelugeomWarning, match="unequal depth"):
            r = fisher_rao_norm(net, (X, y), fisher=fisher)
        assert r.norm2_identity is None and "module 'bn1' (BatchNorm2d)" in r.identity_note
        assert "a non-zero bias: module 'fc' (Linear)" in r.identity_note
        assert r.norm2 == pytest.approx(per_sample_fr(net, X, y, fisher), rel=1e-9)
