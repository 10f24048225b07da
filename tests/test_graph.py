"""The network walker against the model's own forward pass: relugeom's zoo, torchvision-style ResNets and
hand-written residual nets with functional ops; the module-order fallback and its refusals."""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _resnets import BasicBlock, DenseCat, ResConv, ResMLP, ResNet, randomize_bn
from relugeom.errors import UnsupportedLayerError
from relugeom.experiments.models import ARCHITECTURES, build_model
from relugeom.graph import walk


def _same(model, x):
    model.eval()
    g = walk(model)
    with torch.no_grad():
        want = model(x.clone())
        got = g.run(x.clone())
    assert g.traced
    assert got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=0), (got - want).abs().max()
    return g


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_walker_reproduces_every_zoo_model(arch):
    if arch.startswith("resnet"):
        size, shape, kw = 32, (3, 32, 32), {"width": 8}
    elif arch == "mnist1d_cnn":
        size, shape, kw = 40, (1, 40), {}
    else:
        size = 64 if arch == "alexnet" else 32
        shape, kw = (3, size, size), {"hidden": 32}
    model = build_model(arch, num_classes=10, in_channels=shape[0], image_size=size, seed=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = _same(randomize_bn(model), torch.randn(2, *shape))
    assert all(n.rule is not None for n in g.operations), [n.label for n in g.operations if n.rule is None]


@pytest.mark.parametrize("cifar", [False, True])
def test_walker_reproduces_a_resnet18(cifar):
    net = randomize_bn(ResNet(cifar=cifar, widths=(8, 16, 32, 64)))
    g = _same(net, torch.randn(2, 3, 32, 32))
    # the inplace ReLU module of every block is one module called twice: two nodes
    assert len(g.calls("layer1.0.relu")) == 2
    adds = [n for n in g.nodes if n.rule is not None and n.rule.family == "residual addition"]
    assert len(adds) == 8


@pytest.mark.parametrize("net,shape", [(ResMLP(), (5, 2)), (ResConv(), (3, 1, 4, 4)), (DenseCat(), (2, 2, 6, 6))])
def test_walker_reproduces_functional_residual_nets(net, shape):
    g = _same(net, torch.randn(shape))
    assert all(n.rule is not None for n in g.operations), [n.label for n in g.operations if n.rule is None]


def test_inplace_operations_do_not_corrupt_kept_values():
    # the walker's values stay those of the forward pass even where the model writes in place
    block = randomize_bn(BasicBlock(3, 3))
    g = walk(block)
    x = torch.randn(2, 3, 5, 5)
    values = {}
    with torch.no_grad():
        g.run(x, values=values)
        bn2 = next(n for n in g.nodes if n.target == "bn2")
        assert torch.equal(values[bn2], block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x))))))


class _Branchy(nn.Module):
    """Control flow on the data: torch.fx cannot trace it; its modules are a chain in registration order."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.relu, self.b = nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)

    def forward(self, x):  # noqa: ANN001, ANN201
        if x.sum() > 1e9:
            return x
        return self.b(self.relu(self.a(x)))


class _BranchySkip(_Branchy):
    def forward(self, x):  # noqa: ANN001, ANN201
        if x.sum() > 1e9:
            return x
        h = self.relu(self.a(x))
        return self.b(h + h)


def test_fallback_to_module_order_only_when_the_forward_pass_confirms_it():
    net = _Branchy()
    x = torch.randn(4, 3)
    with pytest.raises(UnsupportedLayerError, match="cannot be traced with torch.fx.*example input"):
        walk(net)
    g = walk(net, x)
    assert not g.traced and [n.target for n in g.operations] == ["a", "relu", "b"]
    assert torch.allclose(g.run(x), net(x))
    with pytest.raises(UnsupportedLayerError, match="does not reproduce its forward pass"):
        walk(_BranchySkip(), x)


class _Flat(nn.Module):
    def __init__(self, relu: bool) -> None:
        super().__init__()
        self.conv, self.fc, self.relu = nn.Conv2d(1, 2, 3), nn.Linear(8, 3), relu

    def forward(self, x):  # noqa: ANN001, ANN201
        if x.sum() > 1e9:
            return x
        h = self.conv(x)
        return self.fc((F.relu(h) if self.relu else h).flatten(1))


def test_fallback_inserts_the_flatten_a_forward_does_implicitly():
    x = torch.randn(2, 1, 4, 4)
    net = _Flat(relu=False)
    g = walk(net, x)
    assert [n.target for n in g.operations] == ["conv", torch.flatten, "fc"]
    assert torch.allclose(g.run(x), net(x))
    with pytest.raises(UnsupportedLayerError, match="does not reproduce"):
        walk(_Flat(relu=True), x)  # the functional ReLU is invisible to module order


@pytest.mark.parametrize("arch,stem", [("resnet18", 1), ("resnet18_cifar", 0)])
def test_resnet_stages_are_its_layer_groups(arch, stem):
    # stage = resolution level: every conv of layerK (the strided first conv and the downsampling shortcut
    # included) shares one stage, layer1..layer4 are consecutive stages; with and without an input shape
    from relugeom.layers import find_layers

    side = 64 if arch == "resnet18" else 32  # layer4's map is 2x2 or 4x4: the final average pooling shrinks it
    model = build_model(arch, num_classes=10, image_size=side, width=4, seed=0)
    for shape in (None, (3, side, side)):
        layers = find_layers(model, input_shape=shape)
        stage = {la.name: la.stage for la in layers}
        groups = {}
        for name, s in stage.items():
            groups.setdefault(name.split(".")[0], set()).add(s)
        assert groups["conv1"] == {stem}
        # the imagenet stem's max-pool halves the map once more before layer1
        first = stem + (1 if arch == "resnet18" else 0)
        assert [groups[f"layer{i}"] for i in range(1, 5)] == [{first}, {first + 1}, {first + 2}, {first + 3}]
        assert stage["fc"] == first + 4  # the adaptive average pooling to 1x1 shrinks the map
        blocks = [la.block for la in layers if la.name.startswith("layer2")]
        assert blocks == list(range(len(blocks)))


def test_copies_made_by_the_analyses_are_traced_once_while_their_original_is_unchanged(monkeypatch):
    import copy
    import gc
    import weakref

    import relugeom.graph as graph_module
    from relugeom.graph import copied

    traces = []
    real = graph_module._Tracer.trace

    def counted(self, root, *args, **kwargs):
        traces.append(type(root))
        return real(self, root, *args, **kwargs)

    monkeypatch.setattr(graph_module._Tracer, "trace", counted)

    class Shifted(nn.Module):  # a constant made in forward: the tracer stores it on the traced copy only
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)) + torch.tensor(0.5))

    torch.manual_seed(0)
    x = torch.randn(5, 4)
    res = ResMLP(4, 6, 3)
    for net in (res, Shifted()):
        traces.clear()
        graphs = []
        for _ in range(3):
            c = copied(net, copy.deepcopy(net).double().eval())
            graphs.append(walk(c))
            # each copy's graph runs that copy's modules and reproduces its forward pass
            assert all(n.module is c.get_submodule(str(n.target)) for n in graphs[-1].operations if n.op == "module")
            assert torch.allclose(graphs[-1].run(x.double()), c(x.double()))
        assert len(traces) == (1 if net is res else 3)  # the constant's copy cannot reuse a trace

    traces.clear()
    res.out = nn.Sequential(res.out, nn.Tanh())  # the original changed: the next copy is traced again
    c = copied(res, copy.deepcopy(res).eval())
    assert torch.allclose(walk(c).run(x), c(x)) and len(traces) == 1
    c2 = copied(res, copy.deepcopy(res).train())  # a copy adjusted differently (training flags) is traced anew
    walk(c2)
    assert len(traces) == 2
    # the cache does not keep an analysis' copies (their parameters) alive once the analysis drops them
    gone = [weakref.ref(c), weakref.ref(c2)]
    del c, c2, graphs
    gc.collect()
    assert all(r() is None for r in gone)
    assert walk(res) is walk(res)  # while a model the user holds keeps its graph


def test_a_walked_graph_is_reused_only_while_the_model_and_the_registry_are_unchanged():
    from relugeom.modules import Rule, register_rule, unregister_rule

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    x = torch.randn(5, 4)
    g = walk(net)
    assert walk(net) is g  # unchanged: walked once
    net[1] = nn.LeakyReLU(0.1)  # a module replaced: walked again, and the new graph computes the new function
    g2 = walk(net)
    assert g2 is not g and torch.allclose(g2.run(x), net(x))
    assert [n.module for n in g2.operations][1] is net[1]
    net.train()
    assert walk(net) is not g2  # the training flag is traced as a constant
    net.eval()

    class Halve(nn.Module):
        def forward(self, x):
            return x / 2

    class HalveRule(Rule):
        family, role, bias_free, description = "examples", "linear", True, "divides by 2"

    net2 = nn.Sequential(nn.Linear(4, 6), Halve())
    before = walk(net2)
    register_rule(Halve, HalveRule())
    try:
        after = walk(net2)  # the registry changed: Halve is now a leaf with a rule
        assert after is not before and any(n.module is net2[1] and n.rule is not None for n in after.operations)
        assert torch.allclose(after.run(x), net2(x))
    finally:
        unregister_rule(Halve)
