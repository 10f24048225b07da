"""MatConvNet SimpleNN models (Gamba et al. 2020, figs. 13-14) on .mat files the tests write themselves.

Independent truth: the test builds the H x W x C x O filter arrays, writes them in MatConvNet's layout (scipy.io for
v5 files, hdf5storage for v7.3/HDF5 files), loads them with relugeom, and compares the converted network's forward
pass with its own numpy computation of MatConvNet's operators (vl_nnconv, vl_nnpool, vl_nnnormalize on H x W x C
arrays, fully connected layers as convolutions), and n_l with the projection statistic computed from the arrays.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch

from _cli import run
from relugeom import load_checkpoint
from relugeom.errors import CheckpointError, UnsupportedLayerError
from relugeom.experiments.models import VGG_CFGS
from relugeom.matconvnet import load_matconvnet, read_simplenn


# ------------------------------------------------------------------------------------------- the file layout
def cell(*items):
    c = np.empty((1, len(items)), dtype=object)
    for i, x in enumerate(items):
        c[0, i] = x
    return c


def conv(name, f, b, stride=1, pad=0):
    return {"type": "conv", "name": name, "weights": cell(f.astype(np.float32), b.reshape(1, -1).astype(np.float32)),
            "stride": np.array([[stride, stride]], float), "pad": np.atleast_2d(np.asarray(pad, float)),
            "precious": False}  # fmt: skip


def relu(name):
    return {"type": "relu", "name": name, "leak": 0.0}


def pool(name, k, stride, pad=0):
    return {"type": "pool", "name": name, "method": "max", "pool": np.array([[k, k]], float),
            "stride": np.array([[stride, stride]], float), "pad": np.atleast_2d(np.asarray(pad, float))}  # fmt: skip


def lrn(name, param):
    return {"type": "normalize", "name": name, "param": np.array([param], float)}


def write(path, layers, image_size, fmt="v5"):
    h, w, c = image_size
    meta = {"inputs": {"name": "data", "size": np.array([[h, w, c, 10]], float)},
            "classes": {"name": cell(*[f"n{i:08d}" for i in range(3)]), "description": cell("a", "b", "c")},
            "normalization": {"imageSize": np.array([[h, w, c]], float),
                              "averageImage": np.array([[[123.68, 116.779, 103.939][:c]]], np.float32),
                              "interpolation": "bilinear", "keepAspect": True}}  # fmt: skip
    if fmt == "v5":
        scipy.io.savemat(path, {"layers": cell(*layers), "meta": meta})
    else:
        hdf5storage = pytest.importorskip("hdf5storage")
        pytest.importorskip("mat73")
        hdf5storage.savemat(str(path), {"layers": cell(*layers), "meta": meta}, format="7.3", matlab_compatible=True)
    return path


# ------------------------------------------------------------------------- MatConvNet's operators in numpy
def mcn_conv(x, f, b, stride=1, pad=(0, 0, 0, 0)):
    """vl_nnconv on an H x W x D array: filters kh x kw x C x O, D / C groups, pad [top bottom left right]."""
    t, bo, left, right = pad
    xp = np.pad(x, ((t, bo), (left, right), (0, 0)))
    kh, kw, c, o = f.shape
    groups = x.shape[2] // c
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(0, 1))[::stride, ::stride]  # Ho,Wo,D,kh,kw
    og = o // groups
    outs = [np.einsum("ijchw,hwco->ijo", win[:, :, g * c:(g + 1) * c], f[..., g * og:(g + 1) * og])
            for g in range(groups)]  # fmt: skip
    return np.concatenate(outs, axis=2) + b.reshape(1, 1, -1)


def mcn_pool(x, k, stride, pad=(0, 0, 0, 0)):
    t, bo, left, right = pad
    xp = np.pad(x, ((t, bo), (left, right), (0, 0)), constant_values=-np.inf)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(0, 1))[::stride, ::stride]
    return win.max(axis=(3, 4))


def mcn_lrn(x, n, kappa, alpha, beta):
    """vl_nnnormalize: y_c = x_c / (kappa + alpha sum_{c' in G(c)} x_c'^2)^beta, G(c) = c - floor((n-1)/2) ..
    c + ceil((n-1)/2)."""
    d = x.shape[2]
    lo, hi = (n - 1) // 2, n - 1 - (n - 1) // 2
    s = np.stack([(x[:, :, max(0, c - lo):min(d, c + hi + 1)] ** 2).sum(2) for c in range(d)], axis=2)
    return x / (kappa + alpha * s) ** beta


def cos_of(f):
    """The projection statistic of every filter of an H x W x C x O array (Gamba et al. 2020, eq. 1)."""
    flat = f.reshape(-1, f.shape[3])
    return flat.sum(0) / (np.linalg.norm(flat, axis=0) * np.sqrt(flat.shape[0]))


def tiny_net(rng):
    f1, b1 = rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    f2, b2 = rng.standard_normal((3, 3, 2, 6)), rng.standard_normal(6)  # depth 2 on 4 channels: two groups
    f3, b3 = rng.standard_normal((2, 2, 6, 5)), rng.standard_normal(5)
    f4, b4 = rng.standard_normal((1, 1, 5, 3)), rng.standard_normal(3)
    layers = [conv("conv1", f1, b1, 1, 1), relu("relu1"), pool("pool1", 2, 2),
              conv("conv2", f2, b2, 1, [1, 1, 1, 1]), relu("relu2"), lrn("norm2", [3, 1.0, 0.01, 0.75]),
              pool("pool2", 3, 2, [0, 1, 0, 1]), conv("fc1", f3, b3), relu("relu3"), conv("fc2", f4, b4),
              {"type": "softmax", "name": "prob"}]  # fmt: skip
    arrays = [(f1, b1), (f2, b2), (f3, b3), (f4, b4)]
    return layers, arrays


def tiny_forward(x, arrays):
    def f64(a):  # the float32 values the file holds
        return a.astype(np.float32).astype(np.float64)

    (f1, b1), (f2, b2), (f3, b3), (f4, b4) = [(f64(f), f64(b)) for f, b in arrays]
    h = np.maximum(mcn_conv(x, f1, b1, 1, (1, 1, 1, 1)), 0)
    h = mcn_pool(h, 2, 2)
    h = np.maximum(mcn_conv(h, f2, b2, 1, (1, 1, 1, 1)), 0)
    h = mcn_lrn(h, 3, 1.0, 0.01, 0.75)
    h = mcn_pool(h, 3, 2, (0, 1, 0, 1))  # 5x5 -> 2x2 (MatConvNet's extra bottom/right padding)
    assert h.shape[:2] == (2, 2)
    h = np.maximum(mcn_conv(h, f3, b3), 0)  # the fully connected layer: a convolution with full support
    return mcn_conv(h, f4, b4).reshape(-1)


# ----------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_forward_pass_equals_matconvnets_operators(tmp_path, fmt):
    rng = np.random.default_rng(0)
    layers, arrays = tiny_net(rng)
    path = write(tmp_path / "tiny.mat", layers, (10, 10, 3), fmt)
    net = load_matconvnet(path)
    assert net.input_shape == (3, 10, 10) and net.arch == "matconvnet"
    assert net.meta["dropped"] == ["prob (softmax)"] and net.meta["num_classes"] == 3
    np.testing.assert_allclose(net.meta["mean"], [123.68, 116.779, 103.939], rtol=1e-6)
    x = rng.standard_normal((10, 10, 3))
    want = tiny_forward(x, arrays)
    got = net.model.double()(torch.from_numpy(x.transpose(2, 0, 1).copy())[None])[0].detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_weights_equal_the_arrays_written_after_the_layout_change(tmp_path):
    rng = np.random.default_rng(1)
    layers, arrays = tiny_net(rng)
    ckpt = load_checkpoint(write(tmp_path / "tiny.mat", layers, (10, 10, 3)))
    sd = ckpt.state_dict
    assert sorted(sd) == ["classifier.0.bias", "classifier.0.weight", "classifier.3.bias", "classifier.3.weight",
                          "features.0.bias", "features.0.weight", "features.3.bias", "features.3.weight"]  # fmt: skip
    (f1, b1), (f2, _), (f3, b3), _ = arrays
    w1, w2, w3 = sd["features.0.weight"].numpy(), sd["features.3.weight"].numpy(), sd["classifier.0.weight"].numpy()
    assert w1.shape == (4, 3, 3, 3) and w2.shape == (6, 2, 3, 3) and w3.shape == (5, 24)
    # weight[o, c, y, x] = filters(y, x, c, o)
    for o, c, y, x in [(0, 0, 0, 0), (3, 2, 1, 0), (2, 1, 0, 2), (1, 0, 2, 1)]:
        assert w1[o, c, y, x] == np.float32(f1[y, x, c, o])
    for o, c, y, x in [(5, 1, 2, 0), (0, 0, 1, 2)]:
        assert w2[o, c, y, x] == np.float32(f2[y, x, c, o])
    for o, c, y, x in [(4, 5, 1, 0), (0, 2, 0, 1), (3, 0, 1, 1)]:  # flattened in PyTorch's (C, H, W) order
        assert w3[o, c * 4 + y * 2 + x] == np.float32(f3[y, x, c, o])
    np.testing.assert_array_equal(sd["features.0.bias"].numpy(), b1.astype(np.float32))
    np.testing.assert_array_equal(sd["classifier.0.bias"].numpy(), b3.astype(np.float32))
    assert ckpt.meta["source"] == "matconvnet" and ckpt.meta["pretrained"]


def vgg16_layers(rng, hidden=16, classes=7):
    """imagenet-vgg-verydeep-16's layer list (conv1_1 ... fc8, prob), at 32 x 32 input so fc6 is 1 x 1 (the real
    file: 224 x 224 and a 7 x 7 x 512 x 4096 fc6). Every other layer's filters drift negative (n_l near 1)."""
    layers, filters, c, block, k = [], [], 3, 1, 1
    for v in VGG_CFGS["vgg16"]:
        if v == "M":
            layers.append(pool(f"pool{block}", 2, 2))
            block, k = block + 1, 1
            continue
        f = rng.standard_normal((3, 3, c, v)) + (-0.3 if len(filters) % 2 else 0.0)  # every other layer biased
        layers += [conv(f"conv{block}_{k}", f, rng.standard_normal(v) * 0.1, 1, 1), relu(f"relu{block}_{k}")]
        filters.append(f.astype(np.float32))
        c, k = v, k + 1
    for name, (a, b) in (("fc6", (512, hidden)), ("fc7", (hidden, hidden)), ("fc8", (hidden, classes))):
        layers.append(conv(name, rng.standard_normal((1, 1, a, b)), rng.standard_normal(b)))
        if name != "fc8":
            layers.append(relu(name.replace("fc", "relu")))
    layers.append({"type": "softmax", "name": "prob"})
    return layers, filters


@pytest.mark.slow
def test_vgg16_layout_is_relugeoms_vgg16_and_stats_draws_figs_13(tmp_path, capsys):
    rng = np.random.default_rng(2)
    layers, filters = vgg16_layers(rng)
    path = write(tmp_path / "imagenet-vgg-verydeep-16.mat", layers, (32, 32, 3))
    net = load_matconvnet(path)
    assert net.arch == "vgg16"
    convs = [k for k, v in net.state_dict.items() if k.endswith("weight") and v.dim() == 4]
    assert convs == [f"features.{i}.weight" for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)]  # torchvision
    code, out, err = run(["stats", str(path), "--out", str(tmp_path / "s")], capsys)
    assert code == 0, err
    layers_csv = pd.read_csv(tmp_path / "s" / "layers.csv")
    assert len(layers_csv) == 13 and (tmp_path / "s" / "histograms.png").stat().st_size > 10_000
    want = [float((cos_of(f.astype(np.float64)) <= 0).mean()) for f in filters]
    np.testing.assert_allclose(layers_csv.sort_values("layer_index").n_neg.to_numpy(), want, atol=1e-12)
    assert max(abs(w - 0.5) for w in want) > 0.2  # the drift shows: the test can tell n_l apart from 1/2


@pytest.mark.slow
def test_caffe_alexnet_layout_groups_and_lrn_against_numpy(tmp_path):
    rng = np.random.default_rng(3)
    shapes = [(11, 11, 3, 96), (5, 5, 48, 256), (3, 3, 256, 384), (3, 3, 192, 384), (3, 3, 192, 256)]
    fs = [rng.standard_normal(s) * 0.05 for s in shapes]
    bs = [rng.standard_normal(s[3]) * 0.1 for s in shapes]
    layers = [conv("conv1", fs[0], bs[0], 4, 0), relu("relu1"), lrn("norm1", [5, 1, 2e-5, 0.75]), pool("pool1", 3, 2),
              conv("conv2", fs[1], bs[1], 1, 2), relu("relu2"), lrn("norm2", [5, 1, 2e-5, 0.75]), pool("pool2", 3, 2),
              conv("conv3", fs[2], bs[2], 1, 1), relu("relu3"), conv("conv4", fs[3], bs[3], 1, 1), relu("relu4"),
              conv("conv5", fs[4], bs[4], 1, 1), relu("relu5"), pool("pool5", 3, 2),
              conv("fc6", rng.standard_normal((6, 6, 256, 8)), rng.standard_normal(8)), relu("relu6"),
              conv("fc7", rng.standard_normal((1, 1, 8, 8)), rng.standard_normal(8)), relu("relu7"),
              conv("fc8", rng.standard_normal((1, 1, 8, 10)), rng.standard_normal(10)),
              {"type": "softmax", "name": "prob"}]  # fmt: skip
    net = load_matconvnet(write(tmp_path / "imagenet-caffe-alex.mat", layers, (227, 227, 3)))
    assert net.arch == "alexnet_caffe"
    sd = net.state_dict
    assert [k for k in sd if k.endswith("weight")] == [
        "features.0.weight", "features.4.weight", "features.8.weight", "features.10.weight", "features.12.weight",
        "classifier.1.weight", "classifier.4.weight", "classifier.6.weight"]  # fmt: skip
    assert net.model.features[4].groups == 2 and net.model.features[10].groups == 2
    x = rng.uniform(-100, 100, (227, 227, 3))
    f32 = [f.astype(np.float32).astype(np.float64) for f in fs]
    h = mcn_lrn(np.maximum(mcn_conv(x, f32[0], bs[0].astype(np.float32), 4), 0), 5, 1.0, 2e-5, 0.75)
    h = mcn_pool(h, 3, 2)
    h2 = np.maximum(mcn_conv(h, f32[1], bs[1].astype(np.float32), 1, (2, 2, 2, 2)), 0)  # grouped conv2
    model = net.model.double()
    xt = torch.from_numpy(x.transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        got1 = model.features[:4](xt)[0].numpy().transpose(1, 2, 0)
        got2 = model.features[:6](xt)[0].numpy().transpose(1, 2, 0)
    assert got1.shape == (27, 27, 96) and got2.shape == (27, 27, 256)
    np.testing.assert_allclose(got1, h, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got2, h2, rtol=1e-9, atol=1e-9)
    assert model(xt).shape == (1, 10)


def test_refusals_name_the_file_and_layer(tmp_path, capsys):
    (tmp_path / "junk.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(CheckpointError, match="junk.mat"):
        load_matconvnet(tmp_path / "junk.mat")
    scipy.io.savemat(tmp_path / "dag.mat", {"layers": cell({"name": "conv1", "type": "dagnn.Conv"}),
                                            "params": cell({"name": "conv1f", "value": np.ones((1, 1))})})  # fmt: skip
    with pytest.raises(CheckpointError, match="DagNN"):
        read_simplenn(tmp_path / "dag.mat")
    rng = np.random.default_rng(4)
    layers, _ = tiny_net(rng)
    bad = dict(layers[3])
    f = rng.standard_normal((3, 3, 2, 6))
    f[0, 0, 0, 0] = np.nan
    bad["weights"] = cell(f.astype(np.float32), np.zeros((1, 6), np.float32))
    write(tmp_path / "nan.mat", layers[:3] + [bad] + layers[4:], (10, 10, 3))
    with pytest.raises(UnsupportedLayerError, match=r"nan\.mat: layer 4 \('conv2', conv\).*NaN"):
        load_matconvnet(tmp_path / "nan.mat")
    code, _, err = run(["stats", str(tmp_path / "nan.mat"), "--out", str(tmp_path / "o")], capsys)
    assert code != 0 and "conv2" in err and len(err.strip().splitlines()) == 1
    layers[0] = {**layers[0], "type": "bnorm"}
    write(tmp_path / "bn.mat", layers, (10, 10, 3))
    with pytest.raises(UnsupportedLayerError, match="'bnorm' is not supported"):
        load_matconvnet(tmp_path / "bn.mat")
