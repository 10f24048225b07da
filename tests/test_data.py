"""Data loaders on files the tests write in the standard formats; augmentation against a direct construction."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from relugeom.errors import DataError
from relugeom.experiments.data import Augment, Batches, Split, load_dataset, validation_split


def write_cifar(root, classes=10, n_per_batch=20, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    folder.mkdir(parents=True)
    key = b"labels" if classes == 10 else b"fine_labels"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"] if classes == 10 else ["train", "test"]
    written = {}
    for name in names:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, n_per_batch).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, key: labels, b"batch_label": name.encode()}, f)
        written[name] = (data, labels)
    return written


def write_mnist(root, n_train=30, n_test=10, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, arr, magic in (("images-idx3", x, 0x0803), ("labels-idx1", y, 0x0801)):
            blob = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(blob))
            else:
                (root / name).write_bytes(blob)
        out[prefix] = (x, y)
    return out


def test_cifar10_from_pickles(tmp_path):
    written = write_cifar(tmp_path)
    d = load_dataset("cifar10", tmp_path, normalize="unit", val_fraction=0.1)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10
    assert len(d.train) + len(d.val) == 100 and len(d.val) == 10 and len(d.test) == 20
    data, labels = written["test_batch"]
    np.testing.assert_allclose(d.test.x.numpy(), data.reshape(-1, 3, 32, 32) / 255.0, rtol=1e-6)
    assert d.test.y.tolist() == labels
    assert d.augment == Augment(4, True)


def test_cifar100_and_pm1(tmp_path):
    write_cifar(tmp_path, classes=100)
    d = load_dataset("cifar100", tmp_path / "cifar-100-python", normalize="pm1")
    assert d.num_classes == 100
    assert d.train.x.min() >= -1 and d.train.x.max() <= 1


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    written = write_mnist(tmp_path / "MNIST" / "raw", gz=gz)
    d = load_dataset("mnist", tmp_path, normalize="unit", val_fraction=0.0)
    x, y = written["t10k"]
    np.testing.assert_allclose(d.test.x[:, 0].numpy(), x / 255.0, rtol=1e-6)
    assert d.test.y.tolist() == y.tolist() and d.augment == Augment(4, False)


def test_standard_normalisation_is_per_channel_on_train(tmp_path):
    write_cifar(tmp_path)
    d = load_dataset("cifar10", tmp_path)
    x = d.train.x.double()
    np.testing.assert_allclose(x.mean(dim=(0, 2, 3)).numpy(), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(dim=(0, 2, 3), unbiased=False).numpy(), 1, atol=1e-5)


def test_missing_files_are_named(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3.*python version"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="needs --data-dir"):
        load_dataset("cifar100")
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("svhn")


def test_refuses_pickles_that_import_code(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "test"):
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"fine_labels": [0], b"x": Augment()}, f)
    with pytest.raises(DataError, match="refused"):
        load_dataset("cifar100", tmp_path)


def test_validation_split_is_seeded_disjoint_and_complete():
    tr, va = validation_split(1000, 0.1, seed=3)
    assert len(va) == 100 and len(set(tr) | set(va)) == 1000 and not set(tr) & set(va)
    assert np.array_equal(va, validation_split(1000, 0.1, seed=3)[1])
    assert not np.array_equal(va, validation_split(1000, 0.1, seed=4)[1])


def test_digits_defaults():
    d = load_dataset("digits")
    assert d.input_shape == (1, 8, 8) and d.augment is None and len(d.test) == 360


def test_augment_is_a_zero_filled_shift_and_flip():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6) + 1
    gen = torch.Generator().manual_seed(0)
    aug = Augment(shift=2, flip=True)
    state = gen.get_state()
    out = aug(x, gen)
    gen.set_state(state)
    oy, ox = torch.randint(0, 5, (2,), generator=gen), torch.randint(0, 5, (2,), generator=gen)
    flip = torch.rand(2, generator=gen) < 0.5
    for b in range(2):
        dy, dx = 2 - int(oy[b]), 2 - int(ox[b])   # content moves by (dy, dx)
        ref = np.zeros((3, 5, 6), np.float32)
        src = x[b].numpy()
        for i in range(5):
            for j in range(6):
                if 0 <= i - dy < 5 and 0 <= j - dx < 6:
                    ref[:, i, j] = src[:, i - dy, j - dx]
        if flip[b]:
            ref = ref[:, :, ::-1]
        np.testing.assert_array_equal(out[b].numpy(), ref)


def test_batches_cover_every_sample_once_per_epoch():
    split = Split(torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1), torch.arange(10))
    b = Batches(split, 4, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert len(b) == 3
    seen = torch.cat([y for _, y in b])
    assert sorted(seen.tolist()) == list(range(10))
    again = torch.cat([y for _, y in b])
    assert not torch.equal(seen, again)  # a new order each epoch
