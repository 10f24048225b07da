"""The model zoo's ResNets against torchvision's published layout and parameter counts, written out here
independently of relugeom.zoo (key names, shapes, order; a functional forward pass), the registry's
architecture forms (names, package.module:factory, torchvision:/timm:), and the CLI on ResNet runs."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from _cli import run
from relugeom import layer_summary, load_checkpoint, model_from_state_dict, projection_stats, save_checkpoint
from relugeom.architectures import (
    ARCHITECTURES,
    create_model,
    get_architecture,
    infer_architecture,
    infer_kwargs,
    register_architecture,
)
from relugeom.errors import ArchitectureError, ShapeError
from relugeom.experiments.models import build_model

# torchvision's ResNet table (He et al. 2016, table 1; torchvision.models.resnet): block, blocks per stage, and
# the parameter counts torchvision publishes for 1000 classes (the weights' "num_params").
TV_RESNETS = {
    "resnet18": ("basic", (2, 2, 2, 2), 11_689_512),
    "resnet34": ("basic", (3, 4, 6, 3), 21_797_672),
    "resnet50": ("bottleneck", (3, 4, 6, 3), 25_557_032),
    "resnet101": ("bottleneck", (3, 4, 23, 3), 44_549_160),
    "resnet152": ("bottleneck", (3, 8, 36, 3), 60_192_808),
}


def tv_resnet_layout(block: str, blocks: tuple[int, ...], num_classes: int = 1000, stem: int = 7,
                     width: int = 64, in_channels: int = 3) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """torchvision's ResNet state dict, key -> shape, in its order: conv1, bn1, layer1..4 (block convs and
    batch norms, then ``downsample.0/1`` on the first block of a stage whose shape changes), fc."""
    sd: dict[str, tuple[int, ...]] = {}

    def conv(name, out, inp, k):
        sd[f"{name}.weight"] = (out, inp, k, k)

    def bn(name, c):
        for p in ("weight", "bias", "running_mean", "running_var"):
            sd[f"{name}.{p}"] = (c,)
        sd[f"{name}.num_batches_tracked"] = ()

    conv("conv1", width, in_channels, stem)
    bn("bn1", width)
    inplanes = width
    for s, n in enumerate(blocks, start=1):
        planes = width * 2 ** (s - 1)
        out = planes * (4 if block == "bottleneck" else 1)
        for b in range(n):
            p = f"layer{s}.{b}"
            if block == "basic":
                conv(f"{p}.conv1", planes, inplanes, 3), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
            else:
                conv(f"{p}.conv1", planes, inplanes, 1), bn(f"{p}.bn1", planes)
                conv(f"{p}.conv2", planes, planes, 3), bn(f"{p}.bn2", planes)
                conv(f"{p}.conv3", out, planes, 1), bn(f"{p}.bn3", out)
            if b == 0 and (s > 1 or inplanes != out):
                conv(f"{p}.downsample.0", out, inplanes, 1), bn(f"{p}.downsample.1", out)
            inplanes = out
    sd["fc.weight"], sd["fc.bias"] = (num_classes, inplanes), (num_classes,)
    return sd


def n_params(layout):
    return sum(int(torch.Size(s).numel()) for k, s in layout.items()
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))  # fmt: skip


def random_state_dict(layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in layout.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(s, generator=g) + 0.5
        elif k.endswith(("running_mean", "bias")):
            sd[k] = 0.1 * torch.randn(s, generator=g)
        elif k.startswith("bn") or ".bn" in k or "downsample.1" in k:
            sd[k] = 1 + 0.1 * torch.randn(s, generator=g)
        else:  # conv and linear weights: He-scaled so that activations stay O(1)
            fan_in = torch.Size(s[1:]).numel()
            sd[k] = torch.randn(s, generator=g) * (2 / fan_in) ** 0.5
    return sd


def reference_forward(sd, x, cifar=False):
    """torchvision's ResNet forward (eval mode), written functionally: stride 2 on the stem (ImageNet), on the
    first block of stages 2-4, carried by its 3x3 conv (conv1 of a BasicBlock, conv2 of a Bottleneck: v1.5)
    and by its downsample conv; padding k // 2."""

    def bn(h, p):
        return F.batch_norm(h, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            False, 0.0, 1e-5)  # fmt: skip

    def conv(h, p, stride=1):
        w = sd[f"{p}.weight"]
        return F.conv2d(h, w, stride=stride, padding=w.shape[-1] // 2)

    h = F.relu(bn(conv(x, "conv1", 1 if cifar else 2), "bn1"))
    if not cifar:
        h = F.max_pool2d(h, 3, 2, 1)
    bottleneck = "layer1.0.conv3.weight" in sd
    for s in range(1, 5):
        b = 0
        while f"layer{s}.{b}.conv1.weight" in sd:
            p, stride = f"layer{s}.{b}", 2 if s > 1 and b == 0 else 1
            if bottleneck:
                o = F.relu(bn(conv(h, f"{p}.conv1"), f"{p}.bn1"))
                o = F.relu(bn(conv(o, f"{p}.conv2", stride), f"{p}.bn2"))
                o = bn(conv(o, f"{p}.conv3"), f"{p}.bn3")
            else:
                o = F.relu(bn(conv(h, f"{p}.conv1", stride), f"{p}.bn1"))
                o = bn(conv(o, f"{p}.conv2"), f"{p}.bn2")
            short = bn(conv(h, f"{p}.downsample.0", stride), f"{p}.downsample.1") if f"{p}.downsample.0.weight" in sd \
                else h  # fmt: skip
            h = F.relu(o + short)
            b += 1
    return F.linear(h.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("name", sorted(TV_RESNETS))
def test_resnet_layout_and_parameter_count_are_torchvisions(name):
    block, blocks, published = TV_RESNETS[name]
    layout = tv_resnet_layout(block, blocks)
    assert n_params(layout) == published  # the hand-written table is torchvision's
    with torch.device("meta"):
        model = create_model(name, num_classes=1000, image_size=224)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(got) == list(layout) and got == layout
    assert sum(p.numel() for p in model.parameters()) == published
    # the CIFAR variant: the same keys, a 3x3 stem (64 x 3 x 3 x 3 instead of 64 x 3 x 7 x 7)
    with torch.device("meta"):
        cifar = create_model(f"{name}_cifar", num_classes=10)
    assert {k: tuple(v.shape) for k, v in cifar.state_dict().items()} == tv_resnet_layout(block, blocks, 10, stem=3)
    fc_in = layout["fc.weight"][1]
    assert sum(p.numel() for p in cifar.parameters()) == published - 64 * 3 * (49 - 9) - 990 * (fc_in + 1)


@pytest.mark.parametrize("name, size", [("resnet18", 64), ("resnet34", 32), ("resnet50", 64), ("resnet18_cifar", 16),
                                        ("resnet50_cifar", 8)])  # fmt: skip
def test_forward_equals_the_functional_reference(name, size):
    block, blocks, _ = TV_RESNETS[name.removesuffix("_cifar")]
    cifar = name.endswith("_cifar")
    sd = random_state_dict(tv_resnet_layout(block, blocks, 5, stem=3 if cifar else 7, width=8), seed=1)
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    model = model_from_state_dict(name, sd).double()
    x = torch.randn(3, 3, size, size, dtype=torch.float64)
    ref = reference_forward(sd, x, cifar=cifar)
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(model(x), ref, rtol=1e-10, atol=1e-10)


def test_torchvision_resnet18_checkpoint_loads_and_is_recognised(tmp_path):
    layout = tv_resnet_layout("basic", (2, 2, 2, 2))
    sd = random_state_dict(layout)
    torch.save(sd, tmp_path / "resnet18-f37072fd.pth")  # torchvision's file format: a bare state dict
    loaded = load_checkpoint(tmp_path / "resnet18-f37072fd.pth").state_dict
    assert infer_architecture(loaded) == "resnet18"
    for arch in ("resnet18", "auto", None):
        model = model_from_state_dict(arch, loaded)
        assert all(torch.equal(model.state_dict()[k], sd[k]) for k in sd)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), reference_forward(sd, x), rtol=1e-4, atol=1e-4)
    assert infer_kwargs("resnet18", loaded) == {"num_classes": 1000, "in_channels": 3, "width": 64, "image_size": 224}


@pytest.mark.parametrize("name", sorted(n for n in ARCHITECTURES if n.startswith("resnet")))
def test_a_saved_variant_reloads_and_is_inferred(name, tmp_path):
    net = build_model(name, num_classes=7, in_channels=1, image_size=32, width=4, seed=0)
    save_checkpoint(tmp_path / "net.pt", {f"module.{k}": v for k, v in net.state_dict().items()}, {})
    sd = load_checkpoint(tmp_path / "net.pt").state_dict
    assert infer_architecture(sd) == name
    back = model_from_state_dict(name, sd)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), net.state_dict().values()))
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(back(x), net.eval()(x))


@pytest.mark.parametrize("saved, asked, key", [
    ("resnet18", "resnet34", r"layer1: 2 blocks, resnet34 has 3.*is a resnet18.*--arch resnet18"),
    ("resnet34", "resnet50", r"layer1\.0\.conv3\.weight: missing \(BasicBlocks\).*is a resnet34"),
    ("resnet50", "resnet34", r"layer1\.0\.conv3\.weight: present \(Bottleneck blocks\).*is a resnet50"),
    ("resnet18_cifar", "resnet18", r"conv1\.weight: a 3x3 stem \(CIFAR variant\).*use --arch resnet18_cifar"),
    ("resnet18", "resnet18_cifar", r"conv1\.weight: a 7x7 stem \(ImageNet variant\)"),
    ("vgg9", "resnet18", r"conv1\.weight: missing"),
])  # fmt: skip
def test_a_state_dict_that_does_not_fit_names_the_key(saved, asked, key):
    sd = build_model(saved, image_size=32, **({"width": 4} if saved.startswith("resnet") else {})).state_dict()
    with pytest.raises(ArchitectureError, match=key):
        model_from_state_dict(asked, sd, where="net.pt: ")
    with pytest.raises(ArchitectureError, match="^net.pt: "):
        model_from_state_dict(asked, sd, where="net.pt: ")


def test_malformed_resnet_state_dicts_name_the_key():
    layout = tv_resnet_layout("basic", (2, 2, 6, 2), num_classes=3, width=4)
    with pytest.raises(ArchitectureError, match=r"BasicBlocks \(2, 2, 6, 2\) per stage match no ResNet depth"):
        infer_architecture(random_state_dict(layout))
    sd = random_state_dict(tv_resnet_layout("basic", (2, 2, 2, 2), width=4))
    del sd["fc.weight"]
    with pytest.raises(ArchitectureError, match=r"fc\.weight: missing"):
        infer_architecture(sd)
    sd = random_state_dict(tv_resnet_layout("basic", (2, 2, 2, 2), width=4, stem=5))
    with pytest.raises(ArchitectureError, match=r"conv1\.weight: a 5x5 stem"):
        model_from_state_dict("resnet18", sd)
    with pytest.raises(ArchitectureError, match="fits no zoo architecture"):
        infer_architecture({"w.weight": torch.zeros(3, 3, 3, 3)})


def test_zoo_state_dicts_of_other_families_are_inferred():
    for name, kw in [("vgg9", {}), ("vgg11_bn", {}), ("lenet", {"in_channels": 1, "image_size": 8}),
                     ("mlp", {"in_channels": 1, "image_size": 8, "hidden": [5, 6]})]:  # fmt: skip
        sd = build_model(name, **kw).state_dict()
        assert infer_architecture(sd) == name
        model_from_state_dict("auto", sd)


def test_small_images_need_the_cifar_variant():
    with pytest.raises(ShapeError, match=r"resnet18: 8x8 images are too small.*use resnet18_cifar"):
        build_model("resnet18", in_channels=1, image_size=8)
    with pytest.raises(ShapeError, match=r"resnet50_cifar: 4x4 images are too small.*--image-size 8"):
        build_model("resnet50_cifar", image_size=4)
    net = build_model("resnet18_cifar", in_channels=1, image_size=8, width=4, seed=0)
    shapes = {}
    for n in ("layer1", "layer4"):
        getattr(net, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert shapes == {"layer1": (2, 4, 8, 8), "layer4": (2, 32, 1, 1)}  # stride 1 stem, no max-pool: 8 -> 1


def test_user_factory_module_colon_name():
    arch = get_architecture("_zoo_factory:small_net")
    net = arch(num_classes=4, in_channels=1, image_size=8)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    sd = build_model("_zoo_factory:small_net", num_classes=4, in_channels=1, image_size=8, hidden=9).state_dict()
    back = model_from_state_dict("_zoo_factory:small_net", sd, image_size=8, hidden=9)
    assert torch.equal(back[-1].weight, sd["6.weight"])
    with pytest.raises(ArchitectureError, match="shape mismatches"):  # hidden is not in the state dict's sizes
        model_from_state_dict("_zoo_factory:small_net", sd, image_size=8)
    with pytest.raises(ArchitectureError, match="cannot import 'no_such_module_xyz'"):
        get_architecture("no_such_module_xyz:f")
    with pytest.raises(ArchitectureError, match="has no 'small_nett'; did you mean small_net"):
        get_architecture("_zoo_factory:small_nett")
    with pytest.raises(ArchitectureError, match="is not callable"):
        get_architecture("_zoo_factory:NOT_CALLABLE")
    with pytest.raises(ArchitectureError, match="unexpected keyword argument 'depth'"):
        build_model("_zoo_factory:small_net", image_size=8, depth=3)


def test_register_architecture():
    @register_architecture("test_tiny", description="a test net")
    def tiny(*, num_classes=10, in_channels=3, image_size=32, hidden=3):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_channels * image_size**2, hidden),
                                   torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))  # fmt: skip

    try:
        net = build_model("TEST_TINY", num_classes=2, in_channels=1, image_size=2, seed=0)
        assert net(torch.zeros(1, 1, 2, 2)).shape == (1, 2)
        with pytest.raises(ArchitectureError, match="already registered"):
            register_architecture("test_tiny", tiny)
        # without an infer function, classes and input channels are read off the weights
        assert get_architecture("test_tiny").kwargs_from(net.state_dict()) == {"num_classes": 2}
    finally:
        ARCHITECTURES.pop("test_tiny", None)
    for bad in ("auto", "a:b"):
        with pytest.raises(ArchitectureError, match="reserved"):
            register_architecture(bad, tiny)
    with pytest.raises(ArchitectureError, match="unknown architecture 'resnet81'; did you mean resnet18"):
        get_architecture("resnet81")


# --------------------------------------------------------------------------------- torchvision: and timm:
def _importable(name):
    try:
        __import__(name)
        return True, ""
    except Exception as e:  # a broken install fails in many ways
        return False, f"{name} does not import here ({type(e).__name__}: {str(e)[:80]})"


@pytest.mark.parametrize("package, name", [("torchvision", "resnet18"), ("timm", "resnet18")])
def test_torchvision_and_timm_models_have_the_zoos_names(package, name):
    ok, why = _importable(package)
    if not ok:
        pytest.skip(why)
    theirs = create_model(f"{package}:{name}", num_classes=1000).state_dict()
    with torch.device("meta"):
        ours = create_model(name, num_classes=1000, image_size=224).state_dict()
    assert {k: tuple(v.shape) for k, v in theirs.items()} == {k: tuple(v.shape) for k, v in ours.items()}


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_a_missing_package_is_a_clear_error(package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # import raises ModuleNotFoundError
    with pytest.raises(ArchitectureError, match=rf"--arch {package}:resnet18: {package} is not installed; pip install"):
        get_architecture(f"{package}:resnet18")


@pytest.mark.parametrize("package", ["torchvision", "timm"])
def test_a_broken_package_is_a_clear_error(package, tmp_path, monkeypatch):
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text(
        "raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, package, raising=False)
    with pytest.raises(ArchitectureError, match=rf"{package} is installed but does not import here \(RuntimeError: "
                                                r"operator torchvision::nms"):  # fmt: skip
        get_architecture(f"{package}:resnet18")


def test_torchvision_route_passes_weights_none_and_checks_channels(monkeypatch):
    calls = []
    models = types.SimpleNamespace(list_models=lambda: ["resnet18", "vgg16"],
                                   get_model=lambda name, **kw: calls.append((name, kw)) or torch.nn.Linear(1, 1))
    monkeypatch.setitem(sys.modules, "torchvision", types.SimpleNamespace(models=models))
    create_model("torchvision:resnet18", num_classes=7, image_size=224)
    assert calls == [("resnet18", {"weights": None, "num_classes": 7})]
    with pytest.raises(ShapeError, match="3 input channels, not 1"):
        create_model("torchvision:resnet18", in_channels=1)
    with pytest.raises(ArchitectureError, match="torchvision has no model 'resnet81'; did you mean resnet18"):
        get_architecture("torchvision:resnet81")


# ------------------------------------------------------------------------------------------------- CLI
def _expected_layers(width, blocks=(2, 2, 2, 2)):
    """(layers, filters) that stats reports for a ResNet with BasicBlocks by default: every conv with a kernel
    larger than 1 (the stem and two 3x3 per block; the 1x1 downsample convs are left out)."""
    n_layers = 1 + 2 * sum(blocks)
    n_filters = width + sum(2 * n * width * 2**s for s, n in enumerate(blocks))
    return n_layers, n_filters


@pytest.mark.slow
def test_train_resnet18_cifar_on_digits_then_stats(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["train", "--arch", "resnet18_cifar", "--model-arg", "width=4", "--dataset", "digits",
                             "--epochs", "2", "--n-train", "96", "--batch-size", "32", "--init", "kaiming",
                             "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.epoch) == [0, 1, 2] and metrics.train_loss.notna().all()
    first = load_checkpoint(out / "checkpoints" / "epoch_0000.pt")
    last = load_checkpoint(out / "checkpoints" / "epoch_0002.pt")
    assert last.meta["arch"] == "resnet18_cifar" and last.meta["model_kwargs"] == {
        "num_classes": 10, "in_channels": 1, "image_size": 8, "width": 4}
    assert not torch.equal(first.state_dict["layer4.1.conv2.weight"], last.state_dict["layer4.1.conv2.weight"])
    layers = layer_summary(projection_stats(out))  # the run's checkpoints name their architecture
    n_layers, n_filters = _expected_layers(4)
    assert layers.groupby("epoch").size().tolist() == [n_layers] * 3
    assert layers.groupby("epoch").n_filters.sum().tolist() == [n_filters] * 3


def test_train_refuses_imagenet_resnet_on_digits(tmp_path, capsys):
    code, _, err = run(["train", "--arch", "resnet18", "--dataset", "digits", "--epochs", "1",
                        "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == 1 and "use resnet18_cifar" in err and not (tmp_path / "r").exists()
    code, _, err = run(["train", "--arch", "resnet81", "--dataset", "digits", "--epochs", "1",
                        "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == 2 and "did you mean resnet18" in err
    code, _, err = run(["train", "--arch", "torchvision:resnet18", "--dataset", "digits", "--epochs", "1",
                        "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code in (1, 2) and "torchvision" in err and not (tmp_path / "r").exists()
    code, _, err = run(["train", "--arch", "mlp", "--model-arg", "width", "--dataset", "digits", "--epochs", "1",
                        "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == 2 and "is not KEY=VALUE" in err


def test_train_help_lists_the_zoo(capsys):
    code, out, _ = run(["train", "--help"], capsys)
    assert code == 0
    for name in ("resnet18_cifar", "resnet50", "torchvision:NAME", "timm:NAME", "package.module:factory"):
        assert name in out.replace("\n", " ").replace("  ", "")


def test_train_a_user_factory_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(["train", "--arch", "_zoo_factory:small_net", "--model-arg", "hidden=7", "--dataset", "digits",
                        "--epochs", "1", "--n-train", "64", "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    df = projection_stats(out)  # the checkpoints name the factory and its option, so they rebuild
    assert sorted(df.epoch.unique()) == [0, 1] and set(df.layer) == {"0"}


@pytest.fixture(scope="module")
def tv_resnet18_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "resnet18-f37072fd.pth"
    torch.save(random_state_dict(tv_resnet_layout("basic", (2, 2, 2, 2))), path)
    return path


def test_stats_on_a_torchvision_resnet_checkpoint(tv_resnet18_file, tmp_path, capsys):
    n_layers, n_filters = _expected_layers(64)
    code, out, err = run(["stats", str(tv_resnet18_file), "--arch", "auto", "--init", "random",
                          "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0, err
    layers = pd.read_csv(tmp_path / "layers.csv")
    assert len(layers) == n_layers and layers.n_filters.sum() == n_filters
    assert layers.layer.iloc[0] == "conv1" and layers.layer.iloc[-1] == "layer4.1.conv2"
    filters = pd.read_csv(tmp_path / "filters.csv")
    w = torch.load(tv_resnet18_file, weights_only=True)["layer2.0.conv1.weight"].double().flatten(1)
    cos = w.sum(1) / (w.norm(dim=1) * w.shape[1] ** 0.5)  # eq. 1 of Gamba et al. 2020, by hand
    got = filters[filters.layer == "layer2.0.conv1"].sort_values("filter").cos.to_numpy()
    assert abs(got - cos.numpy()).max() < 1e-6
    code, _, err = run(["stats", str(tv_resnet18_file), "--arch", "resnet34", "--out", str(tmp_path / "x")], capsys)
    assert code == 1 and "layer1: 2 blocks, resnet34 has 3" in err and str(tv_resnet18_file) in err
    code, _, err = run(["stats", str(tv_resnet18_file), "--arch", "resnet5O", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "unknown architecture 'resnet5O'" in err
