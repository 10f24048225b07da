"""Critical-layer re-initialization: the reuse path against full re-evaluation of freshly built
models, closed-form cases (reset to the trained epoch: no drop), the CLI, and the rank correlation."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from relugeom import load_checkpoint
from relugeom.cli import main
from relugeom.errors import RelugeomError
from relugeom.experiments.data import load_dataset
from relugeom.experiments.models import build_model, model_from_state_dict
from relugeom.experiments.reinit import RANDOM_EPOCH, critical_vs_bias, reinit_accuracy, reinit_run
from relugeom.experiments.train import TrainConfig, evaluate, train


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reinit") / "run"
    train(TrainConfig(arch="lenet", dataset="digits", epochs=3, batch_size=32, seed=2, n_train=400), out)
    return out


def naive_accuracy(run, epoch_state, layer, x, y):
    """Independent path: a freshly built model from a merged state dict, evaluated in full."""
    final = load_checkpoint(run / "checkpoints" / "epoch_0003.pt").state_dict
    sd = dict(final)
    sd[f"{layer}.weight"] = epoch_state[f"{layer}.weight"]
    sd[f"{layer}.bias"] = epoch_state[f"{layer}.bias"]
    model = model_from_state_dict("lenet", {k: v.clone() for k, v in sd.items()})
    return evaluate(model, [(x, y)])[1]


def test_reuse_matches_full_reevaluation_of_rebuilt_models(run):
    d = load_dataset("digits")
    df = reinit_run(run, random=True, seed=7)
    layers = ["features.0", "features.2", "features.5", "features.7", "features.10", "features.12"]
    assert list(df.layer.unique()) == layers
    assert sorted(df.epoch.unique()) == [RANDOM_EPOCH, 0, 1, 2, 3]
    fresh = build_model("lenet", num_classes=10, in_channels=1, image_size=8, init="kaiming_all", seed=7).state_dict()
    for _, row in df.iterrows():
        state = fresh if row.epoch == RANDOM_EPOCH else \
            load_checkpoint(run / "checkpoints" / f"epoch_{int(row.epoch):04d}.pt").state_dict
        acc = naive_accuracy(run, state, row.layer, d.test.x, d.test.y)
        assert row.acc_reset == pytest.approx(acc, abs=1e-12)
    trained = evaluate(model_from_state_dict("lenet", load_checkpoint(run / "checkpoints" / "epoch_0003.pt")
                                             .state_dict), [(d.test.x, d.test.y)])[1]
    np.testing.assert_allclose(df.acc_trained, trained, rtol=0, atol=1e-12)
    # resetting to the trained epoch itself changes nothing
    assert (df[df.epoch == 3]["drop"] == 0).all()
    np.testing.assert_allclose(df["drop"], (df.acc_trained - df.acc_reset) / df.acc_trained)
    # the naive path of the module gives the same table
    slow = reinit_run(run, random=True, seed=7, reuse=False)
    pd.testing.assert_frame_equal(df, slow)


def test_reinit_accuracy_on_a_hand_made_chain():
    # y = argmax of a 1-conv network whose conv is the identity: resetting it to zero makes all logits
    # equal (argmax 0), so the accuracy is the fraction of class 0 -- a closed form
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 2, 1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
        conv.bias.zero_()
    model = nn.Sequential(conv, nn.Flatten(1))
    x = torch.randn(50, 1, 1, 1)
    y = (x.reshape(-1) < 0).long()
    zero = {"0.weight": torch.zeros(2, 1, 1, 1), "0.bias": torch.zeros(2)}
    df = reinit_accuracy(model, {0: zero}, (x, y))
    assert df.acc_trained.iloc[0] == 1.0
    assert df.acc_reset.iloc[0] == pytest.approx(float((y == 0).float().mean()))
    assert torch.equal(model[0].weight.reshape(-1), torch.tensor([1.0, -1.0]))  # restored
    with pytest.raises(RelugeomError, match="no weight of layer 0"):
        reinit_accuracy(model, {0: {}}, (x, y))


def test_critical_vs_bias_rank_correlation():
    drops = pd.DataFrame({"layer": list("abcd") * 2, "layer_index": [0, 1, 2, 3] * 2, "epoch": [0] * 4 + [1] * 4,
                          "drop": [0.9, 0.5, 0.1, 0.0, 0.7, 0.5, 0.1, 0.0]})
    summary = pd.DataFrame({"layer": list("abcd") * 2, "epoch": [0] * 4 + [5] * 4,
                            "n_neg": [0.5] * 4 + [0.95, 0.8, 0.6, 0.55]})
    cb = critical_vs_bias(drops, summary)
    assert list(cb.table.n_l) == [0.95, 0.8, 0.6, 0.55]  # the last epoch's n_l
    assert cb.table["drop"].tolist() == pytest.approx([0.8, 0.5, 0.1, 0.0])
    assert cb.rho == pytest.approx(1.0) and cb.rho_bias == pytest.approx(1.0)  # monotone: Spearman 1
    summary.loc[4:, "n_neg"] = [0.1, 0.2, 0.3, 0.4]
    assert critical_vs_bias(drops, summary).rho == pytest.approx(-1.0)


def test_cli_reinit_writes_heatmap_and_handles_bad_epoch(run, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(run, bad)
    (bad / "checkpoints" / "epoch_0001.pt").write_bytes(b"truncated")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            main(["-q", "reinit", str(bad), "--epochs", "0-2", "--random", "--out", str(tmp_path / "o")])
            code = 0
        except SystemExit as e:
            code = e.code
    assert code == 3  # finished, epoch 1 skipped
    df = pd.read_csv(tmp_path / "o" / "reinit.csv")
    assert sorted(df.epoch.unique()) == [RANDOM_EPOCH, 0, 2]
    assert (tmp_path / "o" / "reinit.png").stat().st_size > 0
    cb = pd.read_csv(tmp_path / "o" / "critical_vs_bias.csv")
    assert len(cb) == 6 and {"n_l", "drop", "bias"} <= set(cb.columns)


def test_reuse_on_a_resnet_matches_full_reevaluation_of_rebuilt_models():
    # independent truth: for every (layer, epoch) a new ResNet is built, loaded with the trained state dict
    # where that layer's weights come from the reference state, and evaluated in full
    from _resnets import ResNet, randomize_bn

    def build(seed):
        torch.manual_seed(seed)
        return randomize_bn(ResNet(blocks=(1, 1), widths=(4, 6), in_channels=1, num_classes=4), seed)

    trained = build(0)
    states = {e: build(10 + e).state_dict() for e in range(2)}
    x = torch.randn(40, 1, 12, 12)
    with torch.no_grad():
        y = trained(x).argmax(1)
    y[::3] = torch.randint(0, 4, (len(y[::3]),))  # some wrong labels: an accuracy strictly inside (0, 1)
    df = reinit_accuracy(trained, states, (x, y), batch_size=16)
    convs = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2",
             "layer2.0.downsample.0"]
    assert list(df.layer.unique()) == convs
    for _, row in df.iterrows():
        sd = {k: v.clone() for k, v in trained.state_dict().items()}
        sd[f"{row.layer}.weight"] = states[row.epoch][f"{row.layer}.weight"]
        rebuilt = build(99)
        rebuilt.load_state_dict(sd)
        with torch.no_grad():
            acc = int((rebuilt.eval()(x).argmax(1) == y).sum()) / len(y)
        assert row.acc_reset == pytest.approx(acc, abs=1e-12), row.layer
    assert 0 < df.acc_trained.iloc[0] < 1 and (df.acc_reset != df.acc_trained).any()
    pd.testing.assert_frame_equal(df, reinit_accuracy(trained, states, (x, y), batch_size=16, reuse=False))


def test_reinit_run_of_a_resnet_run(tmp_path):
    # a ResNet run written by `relugeom train`: the reuse path equals rebuilt models evaluated in full, and the
    # CLI writes the table
    out = tmp_path / "run"
    train(TrainConfig(arch="resnet18_cifar", dataset="digits", epochs=1, batch_size=64, seed=0, n_train=128,
                      model_kwargs={"width": 4}), out)  # fmt: skip
    d = load_dataset("digits")
    x, y = d.test.x[:200], d.test.y[:200]
    df = reinit_run(out, data=(x, y))
    assert df.layer.nunique() == 20 and set(df.epoch) == {0, 1}
    final = load_checkpoint(out / "checkpoints" / "epoch_0001.pt").state_dict
    first = load_checkpoint(out / "checkpoints" / "epoch_0000.pt").state_dict
    for _, row in df[df.epoch == 0].iloc[::4].iterrows():
        sd = {k: v.clone() for k, v in final.items()}
        sd[f"{row.layer}.weight"] = first[f"{row.layer}.weight"]
        model = model_from_state_dict("resnet18_cifar", sd)
        assert row.acc_reset == pytest.approx(evaluate(model, [(x, y)])[1], abs=1e-12)
    assert (df[df.epoch == 1]["drop"] == 0).all()
    try:
        main(["-q", "reinit", str(out), "--epochs", "0,1", "--out", str(tmp_path / "ri")])
        code = 0
    except SystemExit as e:
        code = e.code
    assert code == 0
    cli = pd.read_csv(tmp_path / "ri" / "reinit.csv")
    assert cli.layer.nunique() == 20 and (tmp_path / "ri" / "reinit.png").stat().st_size > 0
