"""K-FAC: exact Fisher blocks for one input, traces, mv/vTMv against the dense matrix, conv patches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _resnets import randomize_bn
from relugeom.errors import BudgetExceeded, RelugeomWarning, ShapeError, UnsupportedLayerError
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


def per_sample_fisher(net, x, y_label, layer, fisher):
    """The exact Fisher block of ``layer``'s row-major [W | b] for one input: from per-sample gradients."""
    if fisher == "empirical":
        g = layer_grads(net, x, y_label, layer)
        return torch.outer(g, g)
    p = F.softmax(net(x), 1)[0].detach()
    return sum(p[c] * torch.outer(layer_grads(net, x, c, layer), layer_grads(net, x, c, layer))
               for c in range(p.numel()))  # fmt: skip


@pytest.mark.parametrize("fisher", ["empirical", "model"])
@pytest.mark.parametrize("cin, cout, groups", [(4, 4, 4), (4, 8, 4), (6, 4, 2)])  # depthwise, x2 depthwise, grouped
def test_grouped_and_depthwise_blocks_are_the_exact_fisher_for_one_input(fisher, cin, cout, groups):
    torch.manual_seed(6)
    # the kernel covers the whole input: one position, so each group's G (x) A is its exact Fisher block
    conv = nn.Conv2d(cin, cout, 3, groups=groups)
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(cout, 3)).double()
    x = torch.randn(1, cin, 3, 3, dtype=torch.float64)
    K = kfac(net, (x, torch.tensor([1])), fisher=fisher)
    block = K.blocks[0]
    assert block.groups == groups and block.A.shape == (groups, 9 * cin // groups + 1, 9 * cin // groups + 1)
    exact = per_sample_fisher(net, x, 1, net[0], fisher)
    n = block.n_params // groups  # a group's rows of [W | b] are contiguous in the row-major order
    for g in range(groups):
        torch.testing.assert_close(torch.kron(block.G[g], block.A[g]), exact[g * n : (g + 1) * n, g * n : (g + 1) * n],
                                   rtol=1e-10, atol=1e-14)  # fmt: skip
    # the groups' cross terms are left out like the layers' (block diagonal), and the whole layer's diagonal
    # is exact: trace, mv and vTMv against the dense matrix
    D = K.dense()
    first = D[: block.n_params, : block.n_params]
    mask = torch.block_diag(*[torch.ones(n, n, dtype=torch.bool)] * groups)
    torch.testing.assert_close(first[mask], exact[mask], rtol=1e-10, atol=1e-14)
    assert (first[~mask] == 0).all()
    torch.testing.assert_close(torch.diagonal(first), torch.diagonal(exact), rtol=1e-10, atol=1e-14)
    v = torch.randn(K.n_params, dtype=torch.float64)
    torch.testing.assert_close(K.mv(v), D @ v, rtol=1e-10, atol=1e-12)
    assert K.vTMv(v) == pytest.approx(float(v @ D @ v), rel=1e-10)
    assert K.trace() == pytest.approx(float(torch.trace(D)), rel=1e-12)
    theta = K.vector(net)
    assert torch.equal(theta[: block.n_params],
                       torch.cat([conv.weight.reshape(cout, -1), conv.bias[:, None]], 1).reshape(-1).detach())


def test_depthwise_factors_over_positions_and_samples_match_explicit_patches():
    torch.manual_seed(7)
    conv = nn.Conv2d(3, 3, 3, stride=2, padding=1, dilation=1, groups=3, padding_mode="reflect")
    net = nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(3 * 9, 2)).double()
    X = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    ys = torch.randint(0, 2, (4,), generator=torch.Generator().manual_seed(3))
    K = kfac(net, (X, ys))
    Xp = F.pad(X, (1, 1, 1, 1), mode="reflect")
    A = torch.zeros(3, 10, 10, dtype=torch.float64)
    for n in range(4):
        for c in range(3):
            for i in range(3):
                for j in range(3):
                    a = torch.cat([Xp[n, c, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3].reshape(-1), torch.ones(1)])
                    A[c] += torch.outer(a, a) / 9
    torch.testing.assert_close(K.blocks[0].A, A / 4, rtol=1e-12, atol=1e-12)
    G = torch.zeros(3, 1, 1, dtype=torch.float64)
    for n in range(4):
        s = net[0](X[n : n + 1])
        (gs,) = torch.autograd.grad(F.cross_entropy(net[1:](s), ys[n : n + 1]), s)
        G[:, 0, 0] += (gs[0] ** 2).sum((1, 2))
    torch.testing.assert_close(K.blocks[0].G, G / 4, rtol=1e-10, atol=1e-14)


def test_conv3d_with_one_position_is_exact():
    torch.manual_seed(8)
    net = nn.Sequential(nn.Conv3d(2, 3, 2), nn.ReLU(), nn.Flatten(), nn.Linear(3, 2)).double()
    x = torch.randn(1, 2, 2, 2, 2, dtype=torch.float64)
    K = kfac(net, (x, torch.tensor([0])), fisher="model")
    exact = per_sample_fisher(net, x, 0, net[0], "model")
    torch.testing.assert_close(torch.kron(K.blocks[0].G, K.blocks[0].A), exact, rtol=1e-10, atol=1e-14)


def test_residual_network_blocks_against_per_sample_autograd():
    from relugeom.zoo.resnet import resnet

    torch.manual_seed(9)
    net = resnet(18, cifar=True, num_classes=3, width=2).double()
    randomize_bn(net)
    X = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    ys = torch.tensor([0, 2, 1])
    with pytest.warns(RelugeomWarning, match="no block for module 'bn1' .BatchNorm2d."):
        K = kfac(net, (X, ys))
    convs = [n for n, m in net.named_modules() if type(m).__name__ in ("Conv2d", "Linear")]
    assert [b.name for b in K.blocks] == convs  # every layer, the shortcuts' 1x1 convs included
    # fc: one position, so for one input its block is the exact Fisher block of the per-sample gradient
    with pytest.warns(RelugeomWarning):
        K1 = kfac(net, (X[:1], ys[:1]))
    g = layer_grads(net, X[:1], int(ys[0]), net.fc)
    torch.testing.assert_close(torch.kron(K1.blocks[-1].G, K1.blocks[-1].A), torch.outer(g, g), rtol=1e-10,
                               atol=1e-14)  # fmt: skip
    # a conv inside a residual block (its gradient flows through the skip connections): G by autograd
    conv = net.layer2[0].conv2
    G = torch.zeros(4, 4, dtype=torch.float64)
    kept: list = []
    for n in range(3):
        kept.clear()
        h = conv.register_forward_hook(lambda _m, _a, o: kept.append(o))
        loss = F.cross_entropy(net(X[n : n + 1]), ys[n : n + 1])
        h.remove()
        (gs,) = torch.autograd.grad(loss, kept[0])
        gs = gs.reshape(4, -1)
        G += gs @ gs.T
    block = K.blocks[convs.index("layer2.0.conv2")]
    torch.testing.assert_close(block.G, G / 3, rtol=1e-10, atol=1e-14)


def test_unknown_and_shared_layers_are_refused_with_their_names():
    X, y = torch.randn(2, 2, 3, 3), torch.tensor([0, 1])
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ConvTranspose2d(2, 2, 1), nn.Flatten(), nn.Linear(18, 2))
    with pytest.raises(UnsupportedLayerError, match=r"K-FAC: module '1' \(ConvTranspose2d\) is not supported"):
        kfac(net, (X, y))

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):  # noqa: ANN001, ANN201
            return self.head(torch.relu(self.a(torch.relu(self.a(x)))))

    with pytest.raises(UnsupportedLayerError, match=r"module 'a' \(Linear\) is called more than once"):
        kfac(Twice(), (torch.randn(2, 4), y))
    # an input the model does not take: the model's own shape error, also before an unsupported module is reported
    with pytest.raises(ShapeError, match=r"does not accept inputs of shape \(5,\)"):
        kfac(Twice(), (torch.randn(2, 5), y))
    with pytest.raises(ShapeError, match=r"does not accept inputs of shape \(3, 4, 4\)"):
        kfac(net, (torch.randn(2, 3, 4, 4), y))
