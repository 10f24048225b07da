"""Norm measures: path norms vs explicit path enumeration and unrolled matrices, BN folding, invariances."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from _batchnorm import randomize as randomize_bn
from relugeom.errors import ArchitectureError, RelugeomWarning, UnsupportedLayerError
from relugeom.geometry.unroll import unroll
from relugeom.measures.norms import fold_batchnorm, margins, norm_measures, path_norm


def small_mlp(bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4, bias=bias), nn.ReLU(), nn.Linear(4, 3, bias=bias), nn.ReLU(),
                         nn.Linear(3, 2, bias=bias)).double()  # fmt: skip


def enumerate_paths(net, p):
    """sum over every input->output path (and bias->output path) of prod |w|^p, by brute force."""
    Ws = [m.weight.detach().numpy() for m in net if isinstance(m, nn.Linear)]
    bs = [m.bias.detach().numpy() if m.bias is not None else None for m in net if isinstance(m, nn.Linear)]
    total = 0.0
    for start in range(len(Ws) + 1):  # start = 0: input units; start = j+1: bias of layer j
        layers = Ws[start:] if start == 0 else Ws[start:]
        first = [range(Ws[0].shape[1])] if start == 0 else [range(Ws[start - 1].shape[0])]
        if start > 0 and bs[start - 1] is None:
            continue
        ranges = first + [range(W.shape[0]) for W in layers]
        for path in itertools.product(*ranges):
            prod = 1.0 if start == 0 else abs(bs[start - 1][path[0]]) ** p
            for k, W in enumerate(layers):
                prod *= abs(W[path[k + 1], path[k]]) ** p
            total += prod
    return total


@pytest.mark.parametrize("bias", [True, False])
def test_path_norms_equal_enumeration(bias):
    net = small_mlp(bias)
    for p in (1, 2):
        assert path_norm(net, (3,), p) == pytest.approx(enumerate_paths(net, p), rel=1e-12)


def test_conv_path_norms_equal_unrolled_matrix_products():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3, bias=False),
    ).double()  # fmt: skip
    # average pooling = depthwise conv of weight 1/4, stride 2
    pool = nn.Conv2d(3, 3, 2, stride=2, groups=3, bias=False).double()
    with torch.no_grad():
        pool.weight.fill_(0.25)
    mats = [unroll(net[0], (2, 4, 4))[0], unroll(pool, (3, 4, 4))[0], unroll(net[3], (3, 2, 2))[0],
            unroll(net[6], (8,))[0]]  # fmt: skip
    for p in (1, 2):
        v = np.ones(2 * 16)
        for A in mats:
            v = abs(A).power(p) @ v
        assert path_norm(net, (2, 4, 4), p) == pytest.approx(v.sum(), rel=1e-12)


def test_node_rescaling_invariance_of_path_norms_not_frobenius():
    net = small_mlp(True)
    X = torch.randn(30, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (30,))
    r0 = norm_measures(net, (X, y))
    lam = torch.tensor([0.2, 3.0, 1.5, 5.0], dtype=torch.float64)
    other = small_mlp(True)
    with torch.no_grad():
        other[0].weight.mul_(lam[:, None])
        other[0].bias.mul_(lam)
        other[2].weight.div_(lam[None, :])
    assert torch.allclose(other(X), net(X), rtol=1e-12, atol=1e-12)
    r1 = norm_measures(other, (X, y))
    assert r1.l1_path == pytest.approx(r0.l1_path, rel=1e-12)
    assert r1.l2_path == pytest.approx(r0.l2_path, rel=1e-12)
    assert r1.margin == pytest.approx(r0.margin, rel=1e-10)
    assert abs(r1.frobenius_product - r0.frobenius_product) > 1e-3 * r0.frobenius_product
    assert abs(r1.spectral_product - r0.spectral_product) > 1e-3 * r0.spectral_product


def test_products_margin_and_distance_against_direct_computation():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(12, 4)).double()  # fmt: skip
    init = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(12, 4)).double()  # fmt: skip
    X = torch.randn(40, 2, 4, 4, dtype=torch.float64)
    y = net(X).argmax(1)
    y[:3] = (y[:3] + 1) % 4  # a few misclassified samples
    r = norm_measures(net, (X, y), margin_percentile=30, init=init)
    fro = math.prod(float((m.weight.detach() ** 2).sum()) for m in (net[0], net[4]))
    spec = (np.linalg.svd(unroll(net[0], (2, 4, 4))[0].toarray(), compute_uv=False)[0] ** 2
            * np.linalg.norm(net[4].weight.detach().numpy(), 2) ** 2)  # fmt: skip
    logits = net(X).detach().numpy()
    ms = [logits[i, y[i]] - max(logits[i, j] for j in range(4) if j != y[i]) for i in range(40)]
    gamma = np.percentile(ms, 30)
    dist = math.sqrt(sum(float(((a - b).detach() ** 2).sum()) for a, b in zip(net.parameters(), init.parameters())))
    assert r.frobenius_product == pytest.approx(fro, rel=1e-12)
    assert r.spectral_product == pytest.approx(spec, rel=1e-6)
    assert r.margin == pytest.approx(gamma, rel=1e-12)
    np.testing.assert_allclose(np.sort(margins(net, (X, y))), np.sort(ms), rtol=1e-12)
    assert r.distance_to_init == pytest.approx(dist, rel=1e-12)
    assert gamma > 0
    assert r.l1_path_over_margin2 == pytest.approx(r.l1_path**2 / gamma**2, rel=1e-12)
    assert r.l2_path_over_margin2 == pytest.approx(r.l2_path / gamma**2, rel=1e-12)
    assert r.frobenius_over_margin2 == pytest.approx(fro / gamma**2, rel=1e-12)
    assert r.spectral_over_margin2 == pytest.approx(spec / gamma**2, rel=1e-6)
    assert r.depth == 2 and r.bn_folded == ()
    with pytest.raises(ArchitectureError, match="1.bias|4.weight|0.bias"):
        norm_measures(net, (X, y), init={"0.weight": torch.zeros(3, 2, 3, 3)})


def test_batchnorm_folding_keeps_the_function():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                        nn.Linear(12, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2)).double()  # fmt: skip
    for bn in (net[1], net[5]):
        randomize_bn(bn, var=(0.3, 3))
    net.eval()
    folded, names = fold_batchnorm(net)
    assert names == ["1", "5"]
    assert not any(isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d) for m in folded.modules())
    X = torch.randn(7, 2, 4, 4, dtype=torch.float64)
    assert torch.allclose(folded(X), net(X), rtol=1e-12, atol=1e-12)
    r = norm_measures(net, (X, folded(X).argmax(1)))
    assert r.bn_folded == ("1", "5") and r.depth == 3
    bad = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2)).double()
    with pytest.raises(UnsupportedLayerError, match="'0'"):
        fold_batchnorm(bad)
    # without running statistics a batch norm normalises each batch by its own: no fixed map to fold
    batchwise = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.ReLU()).eval()
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    assert not torch.allclose(batchwise(torch.cat([a, b]))[:5], batchwise(a))  # the batch changes the output
    with pytest.raises(ArchitectureError, match="'1' keeps no running statistics"):
        fold_batchnorm(batchwise)


def test_path_norm_rejects_non_relu():
    net = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2))
    with pytest.raises(UnsupportedLayerError, match="Tanh"):
        path_norm(net, (3,), 1)


def test_norm_measures_fall_back_for_non_relu():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    X = torch.randn(10, 3, dtype=torch.float64)
    with pytest.warns(RelugeomWarning, match=r"'1' \(Tanh\)"):
        r = norm_measures(net, (X, net(X).argmax(1)))
    assert math.isnan(r.l1_path) and math.isnan(r.l2_path_over_margin2)
    fro = float((net[0].weight.detach() ** 2).sum() * (net[2].weight.detach() ** 2).sum())
    assert r.frobenius_product == pytest.approx(fro, rel=1e-12)
