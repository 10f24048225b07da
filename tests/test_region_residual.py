"""Exact regions of residual networks: against the same functions rewritten by hand as sequential networks (the
skip carried through always-on units of a wider layer: an independent construction), against fine sampling of
activation patterns, and against forward passes."""

import numpy as np
import pytest
import torch

from _resnets import DenseCat, ResConv, ResMLP, ResNet, randomize_bn, sequential_resconv, sequential_resmlp
from relugeom.regions.cells import _forward_record, _prepare
from relugeom.regions.segment import regions_on_segment
from relugeom.regions.slice import partition_2d


def _sampled_changes(net, x0, x1, n=20001):
    """Activation-pattern changes seen by ``n`` forward passes along the segment (a lower bound)."""
    t = np.linspace(0, 1, n)
    x0, x1 = x0.double(), x1.double()
    X = x0[None] + torch.from_numpy(t).reshape(-1, *[1] * x0.dim()) * (x1 - x0)[None]
    out, pats, _ = _forward_record(_prepare(net), X)
    keys = [b"|".join(np.asarray(p[i]).tobytes() for p in pats) for i in range(n)]
    return t, X, out, [i for i in range(1, n) if keys[i] != keys[i - 1]]


def _check_segment(net, x0, x1):
    seg = regions_on_segment(net, x0, x1)
    t, X, out, changes = _sampled_changes(net, x0, x1)
    assert len(changes) + 1 <= seg.n_activation_regions
    for i in changes:  # every sampled change brackets an exact breakpoint
        assert np.any((seg.breakpoints >= t[i - 1] - 1e-12) & (seg.breakpoints <= t[i] + 1e-12))
    out = out.numpy()
    for _, r in seg.pieces.iterrows():  # each piece's affine function is the network's
        m = (t > r.t_start) & (t < r.t_end)
        np.testing.assert_allclose(r.value_at_0[None] + t[m, None] * r.slope[None], out[m], atol=1e-9)
    return seg


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_residual_mlp_segment_equals_its_sequential_rewrite(seed):
    torch.manual_seed(seed)
    net = ResMLP(d=2, m=8, c=3).double()
    x0, x1 = torch.randn(2) * 2, torch.randn(2) * 2
    seg = _check_segment(net, x0, x1)
    ref = regions_on_segment(sequential_resmlp(net, big=50.0), x0, x1)
    assert seg.n_activation_regions == ref.n_activation_regions > 1
    assert seg.n_linear_regions == ref.n_linear_regions
    np.testing.assert_allclose(seg.breakpoints, ref.breakpoints, atol=1e-10)


@pytest.mark.parametrize("seed", [0, 1])
def test_residual_mlp_slice_equals_its_sequential_rewrite(seed):
    torch.manual_seed(seed)
    net = ResMLP(d=2, m=8, c=3).double()
    box = (-2.0, 2.0, -2.0, 2.0)
    P = partition_2d(net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], box)
    Q = partition_2d(sequential_resmlp(net, big=10.0), [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], box)
    assert P.n_regions == Q.n_regions > 4
    assert P.n_linear_regions == Q.n_linear_regions
    v = P.verify(n_points=400, seed=seed)
    assert v.loc[0, "ok"], v
    # the whole plane too (the rewrite's extra units stay on only in a box: compare within it)
    W = partition_2d(net, [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], None)
    assert W.n_regions >= P.n_regions and W.verify(n_points=300).loc[0, "ok"]


def test_residual_convnet_segment_and_slice_equal_the_sequential_rewrite():
    torch.manual_seed(3)
    net = ResConv(c=1, m=2, side=4, classes=3).double()
    seq = sequential_resconv(net, big=100.0)
    x0, x1 = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    seg = _check_segment(net, x0, x1)
    ref = regions_on_segment(seq, x0, x1)
    assert seg.n_activation_regions == ref.n_activation_regions > 1
    np.testing.assert_allclose(seg.breakpoints, ref.breakpoints, atol=1e-10)
    u, v = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    P = partition_2d(net, x0, u, v, (-1, 1, -1, 1))
    Q = partition_2d(seq, x0, u, v, (-1, 1, -1, 1))
    assert P.n_regions == Q.n_regions > 4 and P.n_linear_regions == Q.n_linear_regions
    assert P.verify(n_points=300).loc[0, "ok"]


def test_small_resnet_with_batch_norm_max_pool_and_downsampling():
    torch.manual_seed(0)
    net = randomize_bn(ResNet(blocks=(1, 1), widths=(2, 3), in_channels=1, num_classes=3))
    x0, x1 = torch.randn(1, 8, 8), torch.randn(1, 8, 8)
    seg = _check_segment(net, x0, x1)
    assert seg.n_activation_regions > 1
    P = partition_2d(net, x0, x1 - x0, torch.randn(1, 8, 8), (0, 1, -0.2, 0.2))
    assert P.n_regions > 1 and P.verify(n_points=300).loc[0, "ok"]


def test_concatenation_and_functional_pooling():
    torch.manual_seed(1)
    net = DenseCat(c=1, g=2, classes=2)
    x0, x1 = torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    _check_segment(net, x0, x1)
    P = partition_2d(net, x0, x1 - x0, torch.randn(1, 4, 4), (0, 1, -0.5, 0.5))
    assert P.verify(n_points=300).loc[0, "ok"]


def test_regions_over_training_on_a_residual_network():
    from relugeom.regions.training import regions_over_training

    torch.manual_seed(0)
    nets = [ResMLP(d=2, m=6, c=2).double() for _ in range(2)]
    X, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    df = regions_over_training(nets, (X, y), n_lines=2, n_planes=1, seed=0)
    assert len(df) == 2 * 3
    a, b = (int(i) for i in df.iloc[0].points.split(","))
    d = X[b].double() - X[a].double()
    seq = sequential_resmlp(nets[0], big=100.0)
    ref = regions_on_segment(seq, X[a].double() - 0.5 * d, X[b].double() + 0.5 * d)
    assert df.iloc[0].n_regions == ref.n_activation_regions
