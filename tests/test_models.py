"""Architectures against torchvision's published layouts (written out by hand here) and the inits' laws."""

import math

import pytest
import torch

from relugeom import find_layers, model_from_state_dict, projection_stats
from relugeom.errors import ArchitectureError, ShapeError
from relugeom.experiments.models import build_model, initialize

# torchvision's VGG16 (configuration D) state dict: key -> shape, written out from its layout.
_VGG16_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
                (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512),
                (28, 512, 512)]
TV_VGG16 = {**{f"features.{i}.weight": (o, c, 3, 3) for i, c, o in _VGG16_CONVS},
            **{f"features.{i}.bias": (o,) for i, _, o in _VGG16_CONVS},
            "classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
            "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
            "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}
TV_ALEXNET = {"features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
              "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
              "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
              "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
              "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
              "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
              "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
              "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)}


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("arch, table", [("vgg16", TV_VGG16), ("alexnet", TV_ALEXNET)])
def test_torchvision_layout(arch, table):
    with torch.device("meta"):
        from relugeom.experiments.models import ARCHITECTURES

        model = ARCHITECTURES[arch](num_classes=1000, in_channels=3, image_size=224)
    assert _shapes(model) == table


def test_torchvision_format_vgg16_state_dict_loads(tmp_path):
    torch.manual_seed(0)
    sd = {k: torch.randn(s) * 0.01 for k, s in TV_VGG16.items()}
    torch.save(sd, tmp_path / "vgg16-397923af.pth")
    from relugeom import load_checkpoint

    model = model_from_state_dict("vgg16", load_checkpoint(tmp_path / "vgg16-397923af.pth").state_dict)
    assert all(torch.equal(model.state_dict()[k], sd[k]) for k in sd)
    assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)
    df = projection_stats(tmp_path / "vgg16-397923af.pth", arch="vgg16")
    assert df.layer.nunique() == 13 and df.stage.max() == 4


def test_mismatch_names_missing_unexpected_and_shapes():
    sd = build_model("vgg11", image_size=32).state_dict()
    sd["features.99.weight"] = sd.pop("features.3.weight")
    with pytest.raises(ArchitectureError, match=r"missing keys: features\.3\.weight.*unexpected keys: features\.99"):
        model_from_state_dict("vgg11", sd)
    sd = build_model("vgg11", image_size=32).state_dict()
    with pytest.raises(ArchitectureError, match="missing keys"):
        model_from_state_dict("vgg13", sd)
    with pytest.raises(ArchitectureError, match="unknown architecture 'resnet51'"):
        model_from_state_dict("resnet51", sd)
    with pytest.raises(ArchitectureError, match=r"conv1\.weight: missing"):
        model_from_state_dict("resnet50", sd)


def test_lightning_prefix_is_stripped():
    sd = build_model("vgg9", image_size=32, seed=0).state_dict()
    model = model_from_state_dict("vgg9", {f"model.{k}": v for k, v in sd.items()})
    assert torch.equal(model.features[0].weight, sd["features.0.weight"])


def test_lenet_and_vgg9_layouts():
    lenet = build_model("lenet", in_channels=1, image_size=28, num_classes=10)
    convs = [l.weight.shape[0] for l in find_layers(lenet, linear=False)]
    fcs = [tuple(l.weight.shape) for l in find_layers(lenet, conv=False)]
    assert convs == [6, 6, 16, 16, 64, 64] and fcs == [(120, 576), (84, 120), (10, 84)]
    assert all(l.kernel_size == (3, 3) for l in find_layers(lenet, linear=False))
    vgg9 = build_model("vgg9", image_size=32)
    assert [l.weight.shape[0] for l in find_layers(vgg9, linear=False)] == [64, 64, 128, 128, 256, 256]
    assert vgg9(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert build_model("vgg19", image_size=32, num_classes=100)(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ShapeError, match="too small"):
        build_model("vgg19", image_size=16)


def _std_ok(t, std):
    n = t.numel()
    s = t.double().pow(2).mean().sqrt().item()
    # the sample std of n Gaussians has relative standard deviation ~ 1/sqrt(2n): 6 sigma
    return abs(s / std - 1) < 6 / math.sqrt(2 * n) and abs(t.double().mean().item()) < 6 * std / math.sqrt(n)


def test_inits_follow_their_laws():
    m = build_model("vgg11", image_size=32, init="kaiming", seed=0)
    conv = m.features[3]  # 128 x 64 x 3 x 3: fan_out = 128 * 9
    assert _std_ok(conv.weight, math.sqrt(2 / (128 * 9))) and torch.all(conv.bias == 0)
    assert _std_ok(m.classifier[0].weight, 0.01)
    m = build_model("vgg11", image_size=32, init="kaiming_all", seed=0)
    assert _std_ok(m.classifier[0].weight, math.sqrt(2 / 512))
    m = build_model("vgg11", image_size=32, init="normal001", seed=0)
    assert _std_ok(m.features[3].weight, 0.01) and _std_ok(m.classifier[3].weight, 0.01)
    a, b = build_model("vgg9", seed=5), build_model("vgg9", seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    with pytest.raises(ArchitectureError, match="unknown initialisation"):
        initialize(a, "xavier")
