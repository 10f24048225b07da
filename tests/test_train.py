"""The training recipe on digits: loss goes down, every epoch is kept with its metadata."""

import json

import pandas as pd
import pytest
import torch

from relugeom import checkpoint_series, load_checkpoint, projection_stats
from relugeom.errors import RelugeomError
from relugeom.experiments.train import TrainConfig, lr_drops, make_scheduler, parse_schedule, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    metrics = train(TrainConfig(arch="lenet", dataset="digits", epochs=4, batch_size=32, seed=3, n_train=600), out)
    return out, metrics


def test_training_lowers_the_loss(run):
    _, m = run
    assert list(m.epoch) == [0, 1, 2, 3, 4]
    assert m.train_loss.iloc[-1] < 0.5 * m.train_loss.iloc[0]
    assert m.val_acc.iloc[-1] > 0.5  # far above chance (0.1)


def test_run_folder_has_every_epoch_with_metadata(run):
    out, m = run
    series = checkpoint_series(out)
    assert [e.epoch for e in series] == [0, 1, 2, 3, 4]
    for e in series:
        meta = e.meta
        assert meta["seed"] == 3 and meta["arch"] == "lenet" and meta["dataset"] == "digits"
        row = m[m.epoch == e.epoch].iloc[0]
        assert meta["train_loss"] == pytest.approx(row.train_loss) and meta["val_acc"] == pytest.approx(row.val_acc)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["momentum"] == 0.9 and cfg["config"]["weight_decay"] == 5e-4 and cfg["config"]["lr"] == 0.01
    pd.testing.assert_frame_equal(pd.read_csv(out / "metrics.csv"), m, check_dtype=False)
    # weights actually change between epochs, and the series is analysable
    w0 = load_checkpoint(series[0].path).state_dict["features.0.weight"]
    w4 = load_checkpoint(series[-1].path).state_dict["features.0.weight"]
    assert not torch.equal(w0, w4)
    df = projection_stats(out)
    assert sorted(df.epoch.unique()) == [0, 1, 2, 3, 4] and df.stage.notna().all()


def test_same_seed_same_weights(tmp_path):
    cfg = TrainConfig(arch="lenet", epochs=1, batch_size=64, seed=1, n_train=128)
    train(cfg, tmp_path / "a")
    train(cfg, tmp_path / "b")
    a = load_checkpoint(tmp_path / "a" / "checkpoints" / "epoch_0001.pt").state_dict
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "epoch_0001.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_schedules():
    assert parse_schedule("step") == ("step", 25, 0.1)
    kind, _, f = parse_schedule("exp")
    assert kind == "exp" and f ** 25 == pytest.approx(0.1)
    assert parse_schedule("step:10:0.5") == ("step", 10, 0.5)
    assert lr_drops("step", 80) == [25, 50, 75] and lr_drops("exp", 80) == []
    with pytest.raises(RelugeomError, match="bad schedule"):
        parse_schedule("cosine")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = make_scheduler(opt, "step")
    lrs = []
    for _ in range(60):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[24] == pytest.approx(0.01) and lrs[25] == pytest.approx(0.001) and lrs[50] == pytest.approx(1e-4)
