"""K-FAC: exact Fisher blocks for one input, traces, mv/vTMv against the dense matrix, conv patches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from relugeom.errors import BudgetExceeded, ShapeError, UnsupportedLayerError
from relugeom.measures.kfac import kfac


def layer_grads(net, x, y_label, layer):
    """Row-major flattening of [dW | db] of the per-sample loss (autograd)."""
    loss = F.cross_entropy(net(x), torch.tensor([y_label]))
    gW, gb = torch.autograd.grad(loss, [layer.weight, layer.bias])
    return torch.cat([gW.reshape(gW.shape[0], -1), gb[:, None]], 1).reshape(-1)


@pytest.mark.parametrize("fisher", ["empirical", "model"])
def test_kfac_is_the_exact_fisher_block_for_one_input(fisher):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double()
    x = torch.randn(1, 3, dtype=torch.float64)
    y = torch.tensor([2])
    K = kfac(net, (x, y), fisher=fisher)
    p = F.softmax(net(x), 1)[0].detach()
    for block, layer in zip(K.blocks, (net[0], net[2], net[4])):
        if fisher == "empirical":
            g = layer_grads(net, x, 2, layer)
            exact = torch.outer(g, g)
        else:
            exact = sum(p[c] * torch.outer(layer_grads(net, x, c, layer), layer_grads(net, x, c, layer))
                        for c in range(3))  # fmt: skip
        torch.testing.assert_close(torch.kron(block.G, block.A), exact, rtol=1e-10, atol=1e-14)


def test_conv_with_one_position_is_exact_and_patches_match_slicing():
    torch.manual_seed(1)
    # kernel covers the whole input: one position, so KFC is exact for one sample
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3, 2)).double()
    x = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    K = kfac(net, (x, torch.tensor([1])))
    g = layer_grads(net, x, 1, net[0])
    torch.testing.assert_close(torch.kron(K.blocks[0].G, K.blocks[0].A), torch.outer(g, g), rtol=1e-10, atol=1e-14)
    # several positions, padding and stride: A from explicit slicing of the padded input
    conv = nn.Conv2d(2, 3, 3, padding=1, stride=2).double()
    net2 = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 9, 2)).double()
    X = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    K2 = kfac(net2, (X, torch.randint(0, 2, (4,))))
    Xp = F.pad(X, (1, 1, 1, 1))
    A = torch.zeros(19, 19, dtype=torch.float64)
    for n in range(4):
        for i in range(3):
            for j in range(3):
                a = torch.cat([Xp[n, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].reshape(-1), torch.ones(1)])
                A += torch.outer(a, a) / 9
    torch.testing.assert_close(K2.blocks[0].A, A / 4, rtol=1e-12, atol=1e-12)
    # G: sum over positions of output-gradient outer products, mean over samples (autograd per sample)
    G = torch.zeros(3, 3, dtype=torch.float64)
    ys = torch.randint(0, 2, (4,), generator=torch.Generator().manual_seed(5))
    K3 = kfac(net2, (X, ys))
    for n in range(4):
        s = conv(X[n : n + 1])
        rest = net2[1:](s)
        (gs,) = torch.autograd.grad(F.cross_entropy(rest, ys[n : n + 1]), s)
        gs = gs.reshape(3, -1)
        G += gs @ gs.T
    torch.testing.assert_close(K3.blocks[0].G, G / 4, rtol=1e-10, atol=1e-14)


def test_trace_mv_vtmv_against_dense():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5, 4, bias=False),
                        nn.ReLU(), nn.Linear(4, 3)).double()  # fmt: skip
    X, y = torch.randn(7, 2, 5, dtype=torch.float64), torch.randint(0, 3, (7,))
    for fisher in ("empirical", "model"):
        K = kfac(net, [(X[:4], y[:4]), (X[4:], y[4:])], fisher=fisher)
        D = K.dense()
        assert D.shape == (K.n_params, K.n_params)
        assert K.trace() == pytest.approx(float(torch.trace(D)), rel=1e-12)
        v = torch.randn(K.n_params, dtype=torch.float64)
        torch.testing.assert_close(K.mv(v), D @ v, rtol=1e-10, atol=1e-12)
        assert K.vTMv(v) == pytest.approx(float(v @ D @ v), rel=1e-10)
        assert K.table()["trace"].sum() == pytest.approx(K.trace(), rel=1e-12)
    theta = K.vector(net)
    assert theta.numel() == sum(p.numel() for p in net.parameters())
    flat = torch.cat([torch.cat([net[0].weight.reshape(3, -1), net[0].bias[:, None]], 1).reshape(-1),
                      net[3].weight.reshape(-1),
                      torch.cat([net[5].weight, net[5].bias[:, None]], 1).reshape(-1)]).detach()  # fmt: skip
    torch.testing.assert_close(theta, flat)
    with pytest.raises(ShapeError):
        K.mv(torch.zeros(3))
    with pytest.raises(BudgetExceeded):
        K.dense(max_params=10)


def test_unsupported_layers():
    net = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(UnsupportedLayerError, match="'0'"):
        kfac(net, (torch.randn(2, 2, 3, 3), torch.tensor([0, 1])))
