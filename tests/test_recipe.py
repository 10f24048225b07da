"""Recipe options of seed 001 (sec. 3.1, A.1, figs. 6, 15, 20): label noise, pixel shuffle, image
folders, upscaling, schedules; each checked against a closed form or a direct construction."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _cli import exit_code
from relugeom import load_checkpoint
from relugeom.errors import DataError
from relugeom.experiments.data import (
    Batches,
    corrupt,
    load_dataset,
    load_image_folder,
    noisy_labels,
    pixel_permutation,
    shuffle_pixels,
)  # fmt: skip
from relugeom.experiments.train import TrainConfig, prepare_data, train


def test_label_noise_rate_is_binomial_and_labels_always_change():
    y = torch.from_numpy(np.random.default_rng(0).integers(0, 10, 20000))
    assert torch.equal(noisy_labels(y, 0.0, 10, seed=1), y)
    full = noisy_labels(y, 1.0, 10, seed=1)
    assert bool((full != y).all()) and int(full.min()) >= 0 and int(full.max()) <= 9
    p, n = 0.3, len(y)
    changed = float((noisy_labels(y, p, 10, seed=2) != y).float().mean())
    assert abs(changed - p) < 4 * np.sqrt(p * (1 - p) / n)  # 4 standard errors of a binomial proportion
    # the new class is uniform over the 9 others: counts of (new - old) mod 10 are equal up to noise
    shift = ((full - y) % 10).numpy()
    counts = np.bincount(shift, minlength=10)
    assert counts[0] == 0
    expected = n / 9
    assert np.all(np.abs(counts[1:] - expected) < 5 * np.sqrt(expected))
    assert torch.equal(noisy_labels(y, 0.3, 10, seed=2), noisy_labels(y, 0.3, 10, seed=2))
    with pytest.raises(DataError, match="probability"):
        noisy_labels(y, 1.5, 10)


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_uniform_label_noise_is_zhang_et_al_relabelling(p):
    """Zhang et al. 2017: a picked label becomes a class drawn uniformly from all C (possibly the old one), so the
    changed fraction is Binomial(n, p (C-1)/C)/n, a fraction p/C is picked but unchanged, and the new labels of
    the picked samples are uniform over the C classes whatever the old label."""
    c, n = 10, 40000
    y = torch.from_numpy(np.random.default_rng(5).integers(0, c, n))
    noisy = noisy_labels(y, p, c, seed=3, rule="uniform")
    changed = float((noisy != y).float().mean())
    q = p * (c - 1) / c
    assert abs(changed - q) < 4 * np.sqrt(q * (1 - q) / n)
    # the same seed picks the same samples under both rules (the shift rule changes exactly the picked ones)
    picked = (noisy_labels(y, p, c, seed=3, rule="shift") != y).numpy()
    unchanged_picked = float((picked & (noisy == y).numpy()).mean())
    assert abs(unchanged_picked - p / c) < 4 * np.sqrt((p / c) * (1 - p / c) / n)
    counts = np.bincount(noisy.numpy()[picked], minlength=c)  # uniform over all C classes: chi-square test
    expected = picked.sum() / c
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 27.9  # the 0.999 quantile of chi-square with 9 degrees of freedom
    assert not torch.equal(noisy, noisy_labels(y, p, c, seed=3, rule="shift"))
    with pytest.raises(DataError, match="rule"):
        noisy_labels(y, p, c, rule="flip")


def test_label_noise_rule_reaches_the_run_config(tmp_path):
    cfg = TrainConfig(arch="lenet", dataset="digits", epochs=0, n_train=300, label_noise=1.0,
                      label_noise_rule="uniform")  # fmt: skip
    data = prepare_data(cfg)
    clean = prepare_data(TrainConfig(arch="lenet", dataset="digits", epochs=0, n_train=300))
    same = float((data.train.y == clean.train.y).float().mean())
    assert 0.02 < same < 0.25 and data.info["label_noise_rule"] == "uniform"  # about 1/10 kept by chance
    train(cfg, tmp_path / "run")
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["config"]["label_noise_rule"] == "uniform" and doc["data"]["label_noise_rule"] == "uniform"


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 7), st.integers(1, 7), st.integers(0, 99))
def test_pixel_shuffle_is_one_permutation_per_image_shared_by_channels(n, c, h, w, seed):
    # distinct values per (image, channel, pixel) let us read the permutation off the output
    x = torch.arange(n * c * h * w, dtype=torch.float64).reshape(n, c, h, w)
    out = shuffle_pixels(x, np.arange(n), seed)
    assert out.shape == x.shape
    for i in range(n):
        perms = []
        for ch in range(c):
            src = x[i, ch].reshape(-1)
            dst = out[i, ch].reshape(-1)
            assert torch.equal(dst.sort().values, src.sort().values)  # same pixels, moved
            perms.append(((dst - src[0]).long()).tolist())  # position each output pixel came from
        assert all(p == perms[0] for p in perms)  # the same permutation in every channel
        assert perms[0] == pixel_permutation(i, h * w, seed).tolist()
    assert torch.equal(out, shuffle_pixels(x, np.arange(n), seed))  # fixed, not redrawn


def test_corrupt_leaves_validation_and_test_clean():
    clean = load_dataset("digits")
    noisy = corrupt(clean, label_noise=1.0, pixel_shuffle=True, seed=0)
    assert torch.equal(noisy.val.x, clean.val.x) and torch.equal(noisy.val.y, clean.val.y)
    assert torch.equal(noisy.test.x, clean.test.x) and torch.equal(noisy.test.y, clean.test.y)
    assert bool((noisy.train.y != clean.train.y).all())
    assert not torch.equal(noisy.train.x, clean.train.x)
    # pixel histograms of every training image are preserved
    a = clean.train.x.reshape(len(clean.train), -1).sort(1).values
    b = noisy.train.x.reshape(len(noisy.train), -1).sort(1).values
    assert torch.equal(a, b)
    # different images get different permutations
    assert pixel_permutation(0, 64).tolist() != pixel_permutation(1, 64).tolist()


def write_folder(root, sizes=((20, 24), (30, 22)), colors=((255, 0, 0), (0, 128, 255)), per_class=3):
    from PIL import Image

    for split in ("train", "val"):
        for k, (name, color) in enumerate(zip(("cat", "dog"), colors)):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", sizes[(i + k) % len(sizes)], color).save(d / f"{i}.png")


def test_image_folder_reads_crops_and_normalises(tmp_path):
    write_folder(tmp_path)
    d = load_image_folder(tmp_path, size=16, resize=18, normalize="unit", val_fraction=0.0)
    assert d.num_classes == 2 and len(d.train) == 6 and len(d.test) == 6 and d.input_shape == (3, 16, 16)
    # constant-colour images: every crop/resize gives the colour itself, so the closed form is colour / 255
    for split in (d.train, d.test):
        x, y = next(iter(Batches(split, 6, generator=torch.Generator().manual_seed(0))))
        assert x.shape == (6, 3, 16, 16)
        colors = torch.tensor([(255, 0, 0), (0, 128, 255)], dtype=torch.float32)[y] / 255
        torch.testing.assert_close(x, colors[:, :, None, None].expand_as(x), atol=1e-6, rtol=0)
    std = load_image_folder(tmp_path, size=16, resize=18)  # ImageNet normalisation
    x, y = next(iter(Batches(std.test, 6)))
    mean, sd = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    want = ((torch.tensor([(255, 0, 0), (0, 128, 255)], dtype=torch.float32)[y] / 255 - mean) / sd)
    torch.testing.assert_close(x[:, :, 3, 5], want, atol=1e-5, rtol=0)


def test_image_folder_random_crop_and_flip(tmp_path):
    from PIL import Image

    d = tmp_path / "train" / "a"
    d.mkdir(parents=True)
    arr = np.zeros((32, 32, 3), dtype=np.uint8)
    arr[:, :16] = 255  # left half white
    for i in range(8):
        Image.fromarray(arr).save(d / f"{i}.png")
    (tmp_path / "val" / "a").mkdir(parents=True)
    Image.fromarray(arr).save(tmp_path / "val" / "a" / "0.png")
    data = load_image_folder(tmp_path, size=8, resize=8, normalize="unit", val_fraction=0.0)
    x, _ = next(iter(Batches(data.train, 8, generator=torch.Generator().manual_seed(3))))
    # a horizontal flip puts the white half on the right: both orientations appear among 8 draws
    left_white = x[:, 0, :, 0] > 0.5
    right_white = x[:, 0, :, -1] > 0.5
    assert bool(left_white.any()) and bool(right_white.any())
    x2, _ = next(iter(Batches(data.train, 8, generator=torch.Generator().manual_seed(3))))
    assert torch.equal(x, x2)  # the generator alone decides the crops
    ev, _ = next(iter(Batches(data.test, 1)))
    # centre crop, no flip (the two columns at the edge are blurred by the antialiased resize)
    assert bool((ev[0, 0, :, :3] > 0.99).all()) and bool((ev[0, 0, :, 5:] < 0.01).all())


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(DataError, match="train"):
        load_image_folder(tmp_path)
    write_folder(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "val")
    with pytest.raises(DataError, match="val.*missing"):
        load_image_folder(tmp_path)
    write_folder(tmp_path / "x")
    (tmp_path / "x" / "train" / "cat" / "0.png").write_bytes(b"not an image")
    d = load_image_folder(tmp_path / "x", size=8, resize=8, val_fraction=0.0)
    with pytest.raises(DataError, match="0.png: not a readable image"):
        list(Batches(d.train, 6))


def test_train_on_folder_with_crop_size(tmp_path):
    write_folder(tmp_path / "data", per_class=4)
    code = exit_code(["-q", "train", "--arch", "lenet", "--dataset", "folder", "--data-dir", str(tmp_path / "data"),
                "--epochs", "1", "--image-size", "16", "--batch-size", "4", "--out", str(tmp_path / "run")])
    assert code == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["data"]["input_shape"] == [3, 16, 16] and cfg["data"]["num_classes"] == 2


def test_alexnet_on_digits_by_upscaling(tmp_path):
    cfg = TrainConfig(arch="alexnet", dataset="digits", epochs=1, n_train=64, batch_size=32, image_size=64,
                      model_kwargs={"hidden": 32})
    data = prepare_data(cfg)
    x, _ = next(iter(Batches(data.train, 4, resize=data.resize)))
    assert x.shape == (4, 1, 64, 64)
    # bilinear upscaling of a constant image is constant; of the data it keeps the image mean up to edge effects
    const = Batches(type(data.train)(torch.full((2, 1, 8, 8), 0.7), torch.zeros(2, dtype=torch.long)), 2, resize=64)
    torch.testing.assert_close(next(iter(const))[0], torch.full((2, 1, 64, 64), 0.7))
    m = train(cfg, tmp_path / "run")
    assert np.isfinite(m.train_loss).all()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["input_shape"] == [1, 64, 64]
    sd = load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0001.pt").state_dict
    assert sd["features.0.weight"].shape == (64, 1, 11, 11)


def test_cli_schedule_weight_decay_noise_and_init(tmp_path):
    code = exit_code(["-q", "train", "--arch", "lenet", "--dataset", "digits", "--epochs", "3", "--n-train", "96",
                "--batch-size", "48", "--schedule", "exp:0.5", "--no-weight-decay", "--no-augment",
                "--label-noise", "1", "--pixel-shuffle", "--lr", "0.02", "--init", "normal001",
                "--out", str(tmp_path / "r")])
    assert code == 0
    m = pd.read_csv(tmp_path / "r" / "metrics.csv")
    np.testing.assert_allclose(m.lr.iloc[1:], [0.02, 0.01, 0.005])  # lr * 0.5^(e-1)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    c = cfg["config"]
    assert c["weight_decay"] == 0 and c["augment"] is False and c["label_noise"] == 1 and c["pixel_shuffle"]
    assert cfg["data"]["label_noise"] == 1 and cfg["lr_drops"] == []
    w = load_checkpoint(tmp_path / "r" / "checkpoints" / "epoch_0000.pt").state_dict["features.2.weight"]
    assert abs(float(w.std()) - 0.01) < 0.002  # N(0, 0.01^2), 324 samples
    code = exit_code(["-q", "train", "--arch", "lenet", "--dataset", "digits", "--epochs", "2", "--n-train", "64",
                "--schedule", "step:1:0.1", "--out", str(tmp_path / "s")])
    assert code == 0
    np.testing.assert_allclose(pd.read_csv(tmp_path / "s" / "metrics.csv").lr.iloc[1:], [0.01, 0.001])
    assert json.loads((tmp_path / "s" / "config.json").read_text())["lr_drops"] == [1]


def test_sharded_batches_are_slices_of_the_single_process_batch(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        d = tmp_path / split / "a"
        d.mkdir(parents=True)
        for i in range(7):
            Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(d / f"{i}.png")
    data = load_image_folder(tmp_path, size=8, resize=9, val_fraction=0.0)
    digits = load_dataset("digits", augment=True)
    for split, aug in ((data.train, None), (digits.train, digits.augment)):
        def batches(shard, split=split, aug=aug):
            return list(Batches(split, 5, shuffle=True, augment=aug, generator=torch.Generator().manual_seed(1),
                                shard=shard))
        whole = batches(None)
        parts = [batches((r, 2)) for r in range(2)]
        for b, (x, y) in enumerate(whole):
            for r in range(2):
                assert torch.equal(parts[r][b][0], x[r::2]) and torch.equal(parts[r][b][1], y[r::2])
