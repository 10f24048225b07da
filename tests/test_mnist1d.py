"""MNIST-1D (Greydanus and Kobak 2020) as an embedded data set, its CNN, and the 1D analyses on it.

Independent truth: the package's own arrays (``mnist1d.data.make_dataset``), the published layout of the data set
(4000 + 1000 signals of length 40, 500 per class before the split), the authors' parameter names and count,
direct numpy computations of the normalisation and of the projection statistic, and forward passes for the
exact region counts along a segment.
"""

import random
import socket

import numpy as np
import pytest
import torch

from _cli import run
from relugeom.errors import DataError
from relugeom.experiments.data import Augment, load_dataset, readers, validation_split
from relugeom.experiments.data.readers import _generate_mnist1d, _mnist1d_arrays, mnist1d_cache_file
from relugeom.experiments.models import MNIST1DCNN, build_model, infer_kwargs, model_from_state_dict
from relugeom.regions.segment import regions_on_segment
from relugeom.stats.projection import layer_summary, projection_stats

mnist1d = pytest.importorskip("mnist1d")
# the package seeds numpy's legacy global generator; these tests check that relugeom restores it
# ruff: noqa: NPY002


@pytest.fixture(scope="module")
def package_arrays():
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    d = make_dataset(get_dataset_args())
    np.random.set_state(state)
    return d


def test_generated_offline_without_touching_the_global_rngs(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("MNIST-1D must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    np.random.seed(123)
    random.seed(7)
    before_np, before_py = np.random.get_state()[1].copy(), random.getstate()
    x, y, xte, yte = _generate_mnist1d()
    assert np.array_equal(np.random.get_state()[1], before_np) and random.getstate() == before_py
    # the published layout: 4000 training and 1000 test signals of length 40, 500 per class before the split
    assert x.shape == (4000, 40) and xte.shape == (1000, 40)
    assert np.array_equal(np.bincount(y, minlength=10) + np.bincount(yte, minlength=10), np.full(10, 500))


def test_the_cache_file_is_reused_and_a_bad_one_regenerated(tmp_path, monkeypatch):
    calls = []
    small = (np.arange(12.0).reshape(3, 4), np.array([0, 1, 2]), np.ones((2, 4)), np.array([1, 0]))

    def fake():
        calls.append(1)
        return small

    monkeypatch.setattr(readers, "_generate_mnist1d", fake)
    monkeypatch.setenv("RELUGEOM_CACHE", str(tmp_path))
    _mnist1d_arrays.cache_clear()
    try:
        first = _mnist1d_arrays()
        path = mnist1d_cache_file()
        assert path.parent == tmp_path and path.is_file() and len(calls) == 1
        _mnist1d_arrays.cache_clear()
        again = _mnist1d_arrays()  # a new process would read the file, not generate
        assert len(calls) == 1 and all(np.array_equal(a, b) for a, b in zip(first, again))
        path.write_bytes(b"not an npz file")
        _mnist1d_arrays.cache_clear()
        assert all(np.array_equal(a, b) for a, b in zip(_mnist1d_arrays(), small)) and len(calls) == 2
        monkeypatch.setenv("RELUGEOM_CACHE", "off")
        assert mnist1d_cache_file() is None
    finally:
        _mnist1d_arrays.cache_clear()


def test_loader_equals_the_packages_arrays(package_arrays):
    d = load_dataset("mnist1d", normalize="unit", val_fraction=0.1, split_seed=4)
    assert d.input_shape == (1, 40) and d.num_classes == 10 and d.augment is None
    assert (len(d.train), len(d.val), len(d.test)) == (3600, 400, 1000)
    tr, va = validation_split(4000, 0.1, 4)
    x, y = package_arrays["x"], package_arrays["y"]
    np.testing.assert_array_equal(d.train.x.numpy()[:, 0], x[tr].astype(np.float32))
    np.testing.assert_array_equal(d.val.x.numpy()[:, 0], x[va].astype(np.float32))
    np.testing.assert_array_equal(d.train.y.numpy(), y[tr])
    np.testing.assert_array_equal(d.test.x.numpy()[:, 0], package_arrays["x_test"].astype(np.float32))
    np.testing.assert_array_equal(d.test.y.numpy(), package_arrays["y_test"])


def test_standard_normalisation_uses_the_training_split(package_arrays):
    d = load_dataset("mnist1d", val_fraction=0.1)
    tr, _ = validation_split(4000, 0.1, 0)
    xtr = package_arrays["x"][tr].astype(np.float32)
    mean, std = xtr.mean(dtype=np.float64), xtr.std(dtype=np.float64)
    np.testing.assert_allclose(d.mean, [mean], rtol=1e-5) and np.testing.assert_allclose(d.std, [std], rtol=1e-5)
    np.testing.assert_allclose(d.test.x.numpy()[:, 0], (package_arrays["x_test"] - mean) / std, rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError, match="not pixels"):
        load_dataset("mnist1d", normalize="pm1")


def test_signal_augmentation_is_a_zero_filled_shift():
    x = torch.arange(1, 11, dtype=torch.float32).reshape(1, 1, 10).repeat(64, 2, 1)
    out = Augment(3, False)(x, torch.Generator().manual_seed(0))
    shifts = set()
    for row in out[:, 0]:
        nz = row[row != 0]
        start = int(torch.nonzero(row)[0])
        k = 3 - start if row[0] == 0 else int(nz[0]) - 1  # shift right by 3 - start, or left by the first value - 1
        assert torch.equal(nz, torch.arange(int(nz[0]), int(nz[0]) + len(nz), dtype=torch.float32))
        shifts.add(k)
    assert torch.equal(out[:, 0], out[:, 1]) and len(shifts) > 3


def test_the_cnn_has_the_authors_names_and_parameter_count():
    net = MNIST1DCNN()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {"conv1.weight": (25, 1, 5), "conv1.bias": (25,), "conv2.weight": (25, 25, 3),
                      "conv2.bias": (25,), "conv3.weight": (25, 25, 3), "conv3.bias": (25,),
                      "linear.weight": (10, 125), "linear.bias": (10,)}  # fmt: skip
    assert sum(p.numel() for p in net.parameters()) == 5210  # ConvBase(output_size=10): 150 + 1900 + 1900 + 1260
    x = torch.randn(3, 1, 40)
    h = x
    for conv in (net.conv1, net.conv2, net.conv3):  # the authors' forward: conv, then relu, three times
        h = torch.nn.functional.conv1d(h, conv.weight, conv.bias, stride=2, padding=1).relu()
    assert torch.allclose(net(x), h.flatten(1) @ net.linear.weight.T + net.linear.bias, atol=1e-6)
    assert torch.allclose(net(x[:, 0]), net(x))  # (N, 40) as the authors' model takes it
    rebuilt = model_from_state_dict("mnist1d_cnn", net.state_dict())
    assert torch.allclose(rebuilt(x), net(x))
    assert infer_kwargs("mnist1d_cnn", net.state_dict())["image_size"] == 40


def test_projection_statistic_of_the_conv1d_layers():
    net = build_model("mnist1d_cnn", num_classes=10, in_channels=1, image_size=40, init="torch", seed=3)
    s = layer_summary(projection_stats(net))
    assert s.layer.tolist() == ["conv1", "conv2", "conv3"]
    for name, n_neg in zip(s.layer, s.n_neg):
        w = getattr(net, name).weight.detach().double().reshape(25, -1).numpy()
        cos = w.sum(1) / (np.linalg.norm(w, axis=1) * np.sqrt(w.shape[1]))
        assert n_neg == pytest.approx(float((cos <= 0).mean()))
    again = build_model("mnist1d_cnn", num_classes=10, in_channels=1, image_size=40, init="torch", seed=3)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def _pattern(net, x):
    acts = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: acts.append((o > 0).flatten(1))) for m in
             (net.relu1, net.relu2, net.relu3)]  # fmt: skip
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    return torch.cat(acts, 1)


def test_exact_segment_regions_of_the_conv1d_net_against_forward_passes():
    net = build_model("mnist1d_cnn", num_classes=10, in_channels=1, image_size=40, init="torch", seed=1,
                      channels=6).double().eval()  # fmt: skip
    for m in (net.conv1, net.conv2, net.conv3):
        torch.nn.init.normal_(m.bias, std=0.3)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 40, generator=g, dtype=torch.float64), torch.randn(1, 40, generator=g, dtype=torch.float64)
    seg = regions_on_segment(net, a, b)
    t = np.sort(np.asarray(seg.breakpoints, dtype=np.float64))
    assert seg.n_activation_regions == len(t) + 1 > 5
    # every exact breakpoint flips the activation pattern; between two breakpoints the pattern is constant
    gap = np.diff(np.concatenate([[0.0], t, [1.0]])).min()
    eps = min(1e-7, gap / 4)
    for tk in t:
        left, right = _pattern(net, (a + (tk - eps) * (b - a))[None]), _pattern(net, (a + (tk + eps) * (b - a))[None])
        assert not torch.equal(left, right)
    edges = np.concatenate([[0.0], t, [1.0]])
    for lo, hi in zip(edges[:-1], edges[1:]):
        ts = torch.linspace(lo + (hi - lo) * 1e-3, hi - (hi - lo) * 1e-3, 9, dtype=torch.float64)
        pats = _pattern(net, (a + ts[:, None] * (b - a))[:, None])
        assert bool((pats == pats[0]).all())


@pytest.mark.slow
def test_train_and_analyse_a_short_mnist1d_run(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(["train", "--arch", "mnist1d_cnn", "--dataset", "mnist1d", "--epochs", "5",
                             "--optimizer", "adam", "--lr", "0.01", "--batch-size", "100", "--schedule", "none",
                             "--no-weight-decay", "--init", "torch", "--val-fraction", "0", "--out", str(out)],
                            capsys)  # fmt: skip
    assert code == 0, err
    import pandas as pd

    m = pd.read_csv(out / "metrics.csv")
    assert m.test_acc.iloc[0] < 0.2 and m.test_acc.iloc[-1] > 0.5  # learns (chance is 0.1); 94% after 200 epochs
    assert "test_acc" in stdout
    code, stdout, err = run(["stats", str(out), "--out", str(tmp_path / "s")], capsys)
    assert code == 0 and "conv3" in stdout and (tmp_path / "s" / "nl_epochs.png").is_file()
    code, stdout, err = run(["regions", "segment", str(out / "checkpoints" / "epoch_0005.pt"), "--dataset", "mnist1d",
                             "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == 0 and "activation regions" in stdout, err
