"""`relugeom reproduce`: the presets carry the paper's recipe (sec. 3.1, A.1, figure captions), the
tiny scale runs the whole pipeline, reruns skip or resume, missing data is named before training."""

from dataclasses import replace

import pandas as pd
import pytest

from relugeom.cli import main
from relugeom.errors import DataError
from relugeom.experiments.reproduce import EXPERIMENTS, experiment_plan, reproduce
from relugeom.experiments.train import read_run_config, train


def test_full_presets_follow_the_paper(tmp_path):
    for name in [n for n in EXPERIMENTS if n != "mnist1d"]:
        plan = experiment_plan(name, data_dir=str(tmp_path), seeds=3, scale="full")
        assert {s for _, s in plan} == {0, 1, 2}
        for variant, _ in plan:
            c = variant.config
            assert c.lr == 0.01 and c.momentum == 0.9 and c.init in ("kaiming_all", "normal001")
            assert c.arch in ("vgg19", "alexnet", "lenet")
        tiny = experiment_plan(name, seeds=1, scale="tiny")
        assert all(v.config.dataset == "digits" for v, _ in tiny)
    cfg = lambda n: experiment_plan(n, data_dir="d", seeds=1)[0][0].config  # noqa: E731
    assert cfg("vgg19-cifar10").schedule == "step" and cfg("vgg19-cifar10").weight_decay == 5e-4  # sec. 3.1, A.1
    noisy = cfg("noisy-labels")  # fig. 6: all labels noisy, exp decay 0.95, no augmentation, no weight decay
    assert noisy.label_noise == 1.0 and noisy.schedule == "exp:0.95" and noisy.augment is False
    assert noisy.weight_decay == 0.0
    assert cfg("pixel-shuffle").pixel_shuffle and cfg("pixel-shuffle").schedule == "exp:0.95"  # A.1
    fail = cfg("failing-init")  # fig. 15: N(0, 0.01), 10 epochs, ImageNet
    assert fail.init == "normal001" and fail.epochs == 10 and fail.dataset == "folder"
    assert cfg("vgg19-cifar100").schedule == "exp" and cfg("vgg19-cifar100").dataset == "cifar100"  # fig. 17
    first = [v.config for v, _ in experiment_plan("first-layers", data_dir="d", seeds=1)]  # fig. 21
    assert [c.normalize for c in first] == ["pm1", "pm1", "unit", "pm1"] and all(c.schedule == "exp" for c in first)
    scheds = {v.config.schedule for v, _ in experiment_plan("schedules", data_dir="d", seeds=1)}
    assert scheds == {"step", "exp"}


def test_mnist1d_preset_is_greydanus_and_kobaks_recipe():
    # their train.py (get_model_args): Adam, lr 1e-2, weight decay 0, batch 100, 8000 steps of 100 out of 4000
    # training signals = 200 epochs, no validation split, the model's default init; embedded, so no --data-dir
    plan = experiment_plan("mnist1d", seeds=3, scale="full")
    assert {s for _, s in plan} == {0, 1, 2}
    c = plan[0][0].config
    assert (c.arch, c.dataset, c.optimizer, c.lr, c.weight_decay, c.batch_size) == (
        "mnist1d_cnn", "mnist1d", "adam", 0.01, 0.0, 100)  # fmt: skip
    assert c.epochs * 4000 // c.batch_size == 8000 and c.val_fraction == 0 and c.schedule == "none"
    assert c.init == "torch" and c.data_dir is None


@pytest.mark.slow
def test_tiny_mnist1d_preset_draws_nl_and_region_counts(tmp_path):
    written = reproduce("mnist1d", tmp_path, seeds=1, scale="tiny")
    regions = pd.read_csv(written["mnist1d-cnn/regions"])
    assert sorted(regions.epoch.unique()) == [0, 1, 2, 3] and (regions.groupby("epoch").size() == 4).all()
    assert (regions.n_regions >= 1).all() and set(regions.kind) == {"line"}
    layers = pd.read_csv(written["mnist1d-cnn/layers"])
    assert sorted(layers.layer.unique()) == ["conv1", "conv2", "conv3"] and layers.epoch.max() == 3
    assert written["mnist1d-cnn/nl_epochs"].stat().st_size > 10_000


def test_full_scale_names_missing_data_before_training(tmp_path):
    with pytest.raises(DataError, match="needs --data-dir"):
        experiment_plan("vgg19-cifar10", scale="full")
    with pytest.raises(DataError, match="data_batch_1"):
        reproduce("vgg19-cifar10", tmp_path / "out", data_dir=str(tmp_path), seeds=1)
    assert not (tmp_path / "out" / "vgg19-cifar10" / "vgg19-cifar10" / "seed0").exists()
    with pytest.raises(DataError, match="train.*missing"):
        reproduce("failing-init", tmp_path / "out", data_dir=str(tmp_path), seeds=1)


def test_tiny_reinit_experiment_end_to_end_and_rerun(tmp_path):
    out = tmp_path / "out"
    plan = experiment_plan("vgg19-cifar10", seeds=2, scale="tiny")
    # seed 0 was interrupted after its first epoch: the preset resumes it
    variant, _ = plan[0]
    seed0 = out / "vgg19-cifar10" / variant.name / "seed0"
    train(replace(variant.config, epochs=1, seed=0), seed0)
    logs = []
    written = reproduce("vgg19-cifar10", out, seeds=2, scale="tiny", log=logs.append)
    assert any("seed 0: resumed" in m for m in logs) and any("seed 1: trained" in m for m in logs)
    assert read_run_config(seed0).epochs == 3
    vdir = out / "vgg19-cifar10" / variant.name
    over = pd.read_csv(vdir / "layers_over_seeds.csv")
    assert (over.n_runs == 2).all() and sorted(over.epoch.unique()) == [0, 1, 2, 3]
    drops = pd.read_csv(vdir / "reinit.csv")
    assert set(drops.run) == {"seed0", "seed1"} and (drops.epoch == -1).any()
    for key in ("nl_epochs", "histograms", "reinit_png", "critical_vs_bias_png"):
        assert written[f"{variant.name}/{key}"].stat().st_size > 1000
    stamp = (seed0 / "checkpoints" / "epoch_0003.pt").stat().st_mtime_ns
    logs.clear()
    reproduce("vgg19-cifar10", out, seeds=2, scale="tiny", log=logs.append)
    assert any("seed 0: done" in m for m in logs)
    assert (seed0 / "checkpoints" / "epoch_0003.pt").stat().st_mtime_ns == stamp  # not retrained


def test_cli_tiny_first_layers_and_list(tmp_path, capsys):
    try:
        main(["-q", "reproduce", "first-layers", "--scale", "tiny", "--seeds", "1", "--out", str(tmp_path)])
    except SystemExit as e:
        assert e.code == 0
    layers = pd.read_csv(tmp_path / "first-layers" / "lenet-mnist-pm1" / "layers.csv")
    assert (layers.layer_index == 0).all() and sorted(layers.epoch) == [0, 1, 2, 3]
    try:
        main(["reproduce", "--list"])
    except SystemExit as e:
        assert e.code == 0
    assert "noisy-labels" in capsys.readouterr().out
