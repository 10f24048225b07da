"""Sharpness (Hutchinson, expected, epsilon) and tangent sensitivity against exact values and closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _batchnorm import randomize as randomize_bn
from relugeom.errors import BudgetExceeded, RelugeomWarning, UnsupportedLayerError
from relugeom.measures.sharpness import epsilon_sharpness, expected_sharpness, hessian_trace
from relugeom.measures.tangent import tangent_sensitivity


def exact_hessian_trace(net, X, y):
    params = list(net.parameters())
    grads = torch.autograd.grad(F.cross_entropy(net(X), y), params, create_graph=True)
    tr = 0.0
    for j, g in enumerate(grads):
        flat = g.reshape(-1)
        for i in range(flat.numel()):
            tr += float(torch.autograd.grad(flat[i], params[j], retain_graph=True)[0].reshape(-1)[i])
    return tr


@pytest.fixture
def problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    X = torch.randn(20, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    return net, X, y


def test_hutchinson_within_standard_error_and_not_rescaling_invariant(problem):
    net, X, y = problem
    exact = exact_hessian_trace(net, X, y)
    est = hessian_trace(net, [(X[:10], y[:10]), (X[10:], y[10:])], n_samples=200, seed=1)
    assert abs(est.value - exact) <= 4 * est.std_error and est.std_error > 0
    assert hessian_trace(net, (X, y), n_samples=20, seed=3) == hessian_trace(net, (X, y), n_samples=20, seed=3)
    other = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        other[0].weight.mul_(5)
        other[0].bias.mul_(5)
        other[2].weight.div_(5)
    assert torch.allclose(other(X), net(X))
    est2 = hessian_trace(other, (X, y), n_samples=200, seed=1)
    assert abs(est2.value - est.value) > 4 * (est.std_error**2 + est2.std_error**2) ** 0.5


def test_expected_sharpness_is_half_sigma2_trace_for_small_sigma(problem):
    net, X, y = problem
    sigma = 1e-3
    exact = exact_hessian_trace(net, X, y)
    est = expected_sharpness(net, (X, y), sigma=sigma, n_samples=400, seed=0)
    assert est.loss == pytest.approx(float(F.cross_entropy(net(X), y).detach()), rel=1e-12)
    assert abs(est.value - sigma**2 / 2 * exact) <= 4 * est.std_error + 1e-3 * sigma**2 * abs(exact)
    assert est.std_error > 0


def test_epsilon_sharpness_equals_vertex_enumeration_on_a_convex_problem():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(2, 2, bias=False)).double()  # linear model: the loss is convex in theta
    X = torch.randn(10, 2, dtype=torch.float64)
    y = torch.randint(0, 2, (10,))
    eps = 0.05
    theta = net[0].weight.detach().reshape(-1)
    r = eps * (theta.abs() + 1)
    base = float(F.cross_entropy(net(X), y))
    best = max(float(F.cross_entropy(X @ (theta + torch.tensor(s, dtype=torch.float64) * r).reshape(2, 2).T, y))
               for s in itertools.product([-1.0, 1.0], repeat=4))  # fmt: skip
    res = epsilon_sharpness(net, (X, y), eps, restarts=3, seed=0)
    assert res.max_loss <= best + 1e-12
    assert res.value == pytest.approx((best - base) / (1 + base), rel=1e-6)
    assert len(res.values) == 3


def test_tangent_sensitivity_closed_form_and_estimator():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 3, bias=False)).double()
    X = torch.randn(8, 4, dtype=torch.float64)
    y = torch.zeros(8, dtype=torch.long)
    W, V = net[0].weight.detach(), net[2].weight.detach()
    # f = 1^T V relu(W x): d/dx df/dV_kj = D_j W_j, d/dx df/dW_ji = (sum_k V_kj) D_j e_i; per logit k:
    # d/dx df_k/dV_kj = D_j W_j (for each of the 3 logits), d/dx df_k/dW_ji = V_kj D_j e_i
    sum_truth, logit_truth = [], []
    for x in X:
        act = W @ x > 0
        sum_truth.append(float(3 * (W[act] ** 2).sum() + 4 * (V.sum(0)[act] ** 2).sum()))
        logit_truth.append(float(3 * (W[act] ** 2).sum() + 4 * (V[:, act] ** 2).sum()))
    ex = tangent_sensitivity(net, (X, y))
    np.testing.assert_allclose(ex.per_sample_sq, sum_truth, rtol=1e-12)
    assert ex.std_error == 0 and ex.mean_norm == pytest.approx(np.sqrt(sum_truth).mean(), rel=1e-12)
    pl = tangent_sensitivity(net, (X, y), output="per_logit")
    np.testing.assert_allclose(pl.per_sample_sq, logit_truth, rtol=1e-12)
    est = tangent_sensitivity(net, [(X[:5], y[:5]), (X[5:], y[5:])], method="random", n_probes=32, seed=4)
    assert est.std_error > 0
    assert abs(est.mean_sq - ex.mean_sq) <= 3 * est.std_error


def test_tangent_sensitivity_conv_against_nested_autograd_and_constant_on_a_region():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2)).double()
    x = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    params = list(net.parameters())

    def tangent(inp):
        out = net(inp).sum()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(out, params, create_graph=True)])

    S = torch.autograd.functional.jacobian(tangent, x)  # (N_theta, 1, 1, 3, 3)
    r = tangent_sensitivity(net, (x, torch.zeros(1, dtype=torch.long)))
    assert r.per_sample_sq[0] == pytest.approx(float((S**2).sum()), rel=1e-12)
    # two points of one activation region (same ReLU and max-pool pattern) have identical S(x)
    pattern = lambda z: (net[0](z) > 0, net[2](net[1](net[0](z))), net[1](net[0](z)).argmax())  # noqa: E731
    x2 = x + 1e-4 * torch.randn_like(x)
    p1, p2 = pattern(x), pattern(x2)
    assert torch.equal(p1[0], p2[0])
    S2 = torch.autograd.functional.jacobian(tangent, x2)
    torch.testing.assert_close(S2, S, rtol=0, atol=1e-12)
    r2 = tangent_sensitivity(net, (torch.cat([x, x2]), torch.zeros(2, dtype=torch.long)))
    assert r2.per_sample_sq[0] == pytest.approx(r2.per_sample_sq[1], rel=1e-12)


def test_tangent_budget():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 40 * 40, 2))
    with pytest.raises(BudgetExceeded, match="random"):
        tangent_sensitivity(net, (torch.randn(1, 3, 40, 40), torch.zeros(1, dtype=torch.long)))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.head = nn.Linear(2 * 5 * 5, 3)

    def forward(self, x):  # noqa: ANN001, ANN201
        h = torch.relu(self.a(x))
        return self.head(torch.flatten(torch.relu(self.b(h) + h), 1))


class _Tokens(nn.Module):  # a Linear layer on (batch, positions, features) inputs
    def __init__(self) -> None:
        super().__init__()
        self.mix, self.head = nn.Linear(5, 4), nn.Linear(2 * 4, 3)

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.head(torch.flatten(F.leaky_relu(self.mix(x.reshape(-1, 2, 5)), 0.1), 1))


def _pl_nets():
    torch.manual_seed(3)
    return {
        "conv-bn-pool": (nn.Sequential(
            nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1), randomize_bn(nn.BatchNorm2d(4)), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(4, 3, 2, padding=1, dilation=2), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(3, 6), randomize_bn(nn.BatchNorm1d(6)), nn.ReLU(), nn.Linear(6, 3)), (2, 8, 8)),
        "conv1d": (nn.Sequential(nn.Conv1d(2, 3, 3, padding="valid"), nn.ReLU(), nn.AvgPool1d(2), nn.Flatten(),
                                 nn.Linear(9, 3)), (2, 8)),
        "residual": (_Residual(), (2, 5, 5)),
        "tokens": (_Tokens(), (10,)),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["conv-bn-pool", "conv1d", "residual", "tokens"])
@pytest.mark.parametrize("method", ["exact", "random"])
def test_piecewise_linear_route_equals_per_sample_nested_autograd(name, method):
    net, shape = _pl_nets()[name]
    net = net.double().eval()
    X = torch.randn(7, *shape, dtype=torch.float64)
    data = [(X[:4], torch.zeros(4, dtype=torch.long)), (X[4:], torch.zeros(3, dtype=torch.long))]
    fast = tangent_sensitivity(net, data, method=method, route="piecewise_linear", n_probes=3, seed=2)
    slow = tangent_sensitivity(net, data, method=method, route="generic", n_probes=3, seed=2)
    assert fast.route == "piecewise_linear" and slow.route == "generic"
    assert tangent_sensitivity(net, data, method=method, n_probes=3, seed=2).route == "piecewise_linear"
    np.testing.assert_allclose(fast.per_sample_sq, slow.per_sample_sq, rtol=1e-10)
    assert fast.std_error == pytest.approx(slow.std_error, rel=1e-8, abs=1e-300)


def test_auto_route_falls_back_where_the_network_is_not_piecewise_linear():
    torch.manual_seed(0)
    X, y = torch.randn(5, 4, dtype=torch.float64), torch.zeros(5, dtype=torch.long)
    smooth = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    assert tangent_sensitivity(smooth, (X, y)).route == "generic"  # the module check sees the Tanh
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        tangent_sensitivity(smooth, (X, y), route="piecewise_linear")

    class Hidden(nn.Module):  # a functional tanh: the network's graph sees it
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.b(torch.tanh(self.a(x)))

    hidden = Hidden().double()
    r = tangent_sensitivity(hidden, (X, y))
    assert r.route == "generic"
    with pytest.raises(UnsupportedLayerError, match=r"torch\.tanh\(\) \(graph node 'tanh'\) is not supported"):
        tangent_sensitivity(hidden, (X, y), route="piecewise_linear")

    # the safety net behind the rules: a rule that wrongly calls a smooth module piecewise linear is caught
    # by the comparison with the generic route on the first samples
    from relugeom.modules import Rule, register_rule, unregister_rule

    class Soft(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN201
            return F.softplus(x)

    class WrongRule(Rule):
        family, role, description = "tests", "activation", "claims to be a ReLU"

    register_rule(Soft, WrongRule())
    try:
        soft = nn.Sequential(nn.Linear(4, 6), Soft(), nn.Linear(6, 2)).double()
        with pytest.warns(RelugeomWarning, match="disagrees"):
            r = tangent_sensitivity(soft, (X, y))
        truth = tangent_sensitivity(soft, (X, y), route="generic")
    finally:
        unregister_rule(Soft)
    assert r.route == "generic"
    np.testing.assert_allclose(r.per_sample_sq, truth.per_sample_sq, rtol=1e-12)


# ------------------------------------------------- the defined quantity E_x S(x) against the explicit Jacobian
def dense_sample_sensitivity(net, x, per_logit=False):
    """S(x) built densely by autograd: the Jacobian, with respect to x, of the parameter gradient (N_theta x d_in;
    per logit (K N_theta) x d_in, logit-major)."""
    params = list(net.parameters())

    def tangent(inp):
        out = net(inp[None])[0]
        if not per_logit:
            return torch.cat([g.reshape(-1) for g in torch.autograd.grad(out.sum(), params, create_graph=True)])
        return torch.cat([torch.cat([g.reshape(-1) for g in torch.autograd.grad(o, params, create_graph=True)])
                          for o in out])  # fmt: skip

    return torch.autograd.functional.jacobian(tangent, x).reshape(-1, x.numel())


def _defined_nets():
    torch.manual_seed(5)
    return {
        "mlp": (nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)), (4,)),
        "conv-bn-pool": (nn.Sequential(nn.Conv2d(1, 3, 2), randomize_bn(nn.BatchNorm2d(3)), nn.ReLU(),
                                       nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 2)), (1, 5, 5)),
        "conv1d-tanh": (nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(12, 2)), (2, 6)),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["mlp", "conv-bn-pool", "conv1d-tanh"])
def test_tangent_sensitivity_is_the_mean_of_the_explicit_jacobians(name):
    net, shape = _defined_nets()[name]
    net = net.double().eval()
    X = torch.randn(9, *shape, dtype=torch.float64)
    data = [(X[:4], torch.zeros(4, dtype=torch.long)), (X[4:], torch.zeros(5, dtype=torch.long))]
    S = torch.stack([dense_sample_sensitivity(net, x) for x in X])  # (n, N_theta, d_in)
    M = S.mean(0)
    fro_sq, spec = float((M**2).sum()), float(torch.linalg.matrix_norm(M, 2))
    mean_sq = float((S**2).sum((1, 2)).mean())
    r = tangent_sensitivity(net, data)
    assert r.frobenius_sq == pytest.approx(fro_sq, rel=1e-10) and r.frobenius_sq_se == 0
    assert r.frobenius == pytest.approx(fro_sq**0.5, rel=1e-10)
    assert r.spectral == pytest.approx(spec, rel=1e-10) and r.spectral_method == "svd"
    assert r.mean_sq == pytest.approx(mean_sq, rel=1e-10) == r.mean_sq_sample_sensitivity
    assert fro_sq < mean_sq  # Jensen: the defined quantity is not the mean squared sample sensitivity
    # the dense matrix too large (dense_limit): columns in blocks, spectral by Lanczos, same numbers
    b = tangent_sensitivity(net, data, dense_limit=S.shape[1] * 2, spectral=True, spectral_tol=0)
    assert b.frobenius_sq == pytest.approx(fro_sq, rel=1e-10)
    assert b.spectral_method == "svds" and b.spectral == pytest.approx(spec, rel=1e-8)
    # the image-sized estimator: shared Rademacher probes, unbiased, with a standard error
    est = tangent_sensitivity(net, data, method="random", n_probes=48, seed=3, spectral=True,
                             spectral_tol=1e-10)
    assert est.frobenius_sq_se > 0 and abs(est.frobenius_sq - fro_sq) <= 3.5 * est.frobenius_sq_se
    assert est.spectral == pytest.approx(spec, rel=1e-6)


def test_tangent_sensitivity_per_logit_against_the_explicit_jacobian():
    net, shape = _defined_nets()["mlp"]
    net = net.double()
    X = torch.randn(6, *shape, dtype=torch.float64)
    S = torch.stack([dense_sample_sensitivity(net, x, per_logit=True) for x in X])
    M = S.mean(0)
    r = tangent_sensitivity(net, (X, torch.zeros(6, dtype=torch.long)), output="per_logit")
    assert r.frobenius_sq == pytest.approx(float((M**2).sum()), rel=1e-10)
    assert r.spectral == pytest.approx(float(torch.linalg.matrix_norm(M, 2)), rel=1e-10)
    assert r.mean_sq == pytest.approx(float((S**2).sum((1, 2)).mean()), rel=1e-10)


def test_random_estimator_standard_error_is_calibrated():
    # over independent seeds, the estimates scatter around the exact value as their standard errors say
    net, shape = _defined_nets()["mlp"]
    net = net.double()
    X = torch.randn(8, *shape, dtype=torch.float64)
    data = (X, torch.zeros(8, dtype=torch.long))
    exact = tangent_sensitivity(net, data, spectral=False).frobenius_sq
    z = [(e.frobenius_sq - exact) / e.frobenius_sq_se
         for e in (tangent_sensitivity(net, data, method="random", n_probes=16, seed=s, spectral=False)
                   for s in range(30))]  # fmt: skip
    assert abs(np.mean(z)) < 0.8 and 0.5 < np.std(z) < 1.6


# ------------------------------------------------- Daróczy 2020, Proposition 3.2
@pytest.mark.parametrize("p,mu,sigma", [(1, 3.0, 1.5), (2, 0.5, 2.0), (3, 10.0, 2.0), (4, -2.0, 1.0), (5, 20.0, 4.0)])
def test_kummer_reading_is_the_normal_absolute_moment(p, mu, sigma):
    from scipy.integrate import quad
    from scipy.stats import norm

    from relugeom.measures.tangent_bound import normal_abs_moment

    truth = quad(lambda t: abs(t) ** p * norm.pdf(t, mu, sigma), -np.inf, np.inf, epsabs=0, epsrel=1e-11)[0]
    assert normal_abs_moment(p, mu, sigma) == pytest.approx(truth, rel=1e-8)


def test_proposition_3_2_on_a_bias_free_net():
    from relugeom.errors import ArchitectureError
    from relugeom.measures.tangent_bound import normal_abs_moment, tangent_sensitivity_bound

    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 6, bias=False), nn.ReLU(), nn.Linear(6, 4, bias=False), nn.ReLU(),
                        nn.Linear(4, 2, bias=False)).double()  # fmt: skip
    X = torch.randn(40, 3, dtype=torch.float64)
    r = tangent_sensitivity_bound(net, (X, torch.zeros(40, dtype=torch.long)))
    # T(x): active hidden units, counted by hand
    h1 = X @ net[0].weight.T
    T = (h1 > 0).sum(1) + (torch.relu(h1) @ net[2].weight.T > 0).sum(1)
    np.testing.assert_array_equal(r.active_counts, T.numpy())
    w = [float(net[i].weight.detach().abs().max()) for i in (0, 2, 4)]
    k, mu, sigma = 3, float(T.double().mean()), float(T.double().std())
    by_hand = 50 * 3 * normal_abs_moment(k - 1, mu, sigma) ** 2 / k ** (2 * k) * np.prod(w) ** 2
    assert r.bound == pytest.approx(by_hand, rel=1e-10) and r.n_params == 6 * 3 + 4 * 6 + 2 * 4 == 50
    S = torch.stack([dense_sample_sensitivity(net, x) for x in X]).mean(0)
    assert r.measured_frobenius_sq == pytest.approx(float((S**2).sum()), rel=1e-10)
    assert r.holds == (r.measured_frobenius_sq <= r.bound)
    with pytest.raises(ArchitectureError, match="bias"):
        tangent_sensitivity_bound(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), (X.float(), None))


def nested_autograd_sq(net, x):
    """||S(x)||_F^2 for one input by plain nested autograd: sum_j ||grad_theta (d f / d x_j)||^2, f the sum of
    the logits (S is the mixed second derivative, so its rows are the parameter gradients of grad_x f)."""
    params = list(net.parameters())
    x = x.clone().requires_grad_(True)
    (gx,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    total = 0.0
    for j in range(gx.numel()):
        gs = torch.autograd.grad(gx.reshape(-1)[j], params, retain_graph=True, allow_unused=True)
        total += sum(float((g**2).sum()) for g in gs if g is not None)
    return total


def test_piecewise_linear_route_on_a_resnet_with_batch_norm_equals_nested_autograd():
    from _resnets import randomize_bn as randomize_all_bn
    from relugeom.zoo.resnet import resnet

    torch.manual_seed(11)
    net = randomize_all_bn(resnet(18, cifar=True, in_channels=1, num_classes=3, width=2).double())
    X = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    data = (X, torch.zeros(3, dtype=torch.long))
    auto = tangent_sensitivity(net, data)  # exact: the 64 input directions
    assert auto.route == "piecewise_linear"
    truth = [nested_autograd_sq(net, X[n : n + 1]) for n in range(3)]
    np.testing.assert_allclose(auto.per_sample_sq, truth, rtol=1e-10)
    est = tangent_sensitivity(net, data, method="random", n_probes=3, seed=1, route="piecewise_linear")
    ref = tangent_sensitivity(net, data, method="random", n_probes=3, seed=1, route="generic")
    np.testing.assert_allclose(est.per_sample_sq, ref.per_sample_sq, rtol=1e-10)
    # E_x S(x) through the layer rules' batch sums (residual additions, batch norms) against the generic route
    assert est.frobenius_sq == pytest.approx(ref.frobenius_sq, rel=1e-10)
