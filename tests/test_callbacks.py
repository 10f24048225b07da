"""Training loops recorded by relugeom: the plain Recorder, the Lightning callback and the Hugging Face
TrainerCallback, each driving a real training run of a tiny ConvNet (the real packages, no mocks).

Independent truths: the epoch-0 checkpoint equals a copy of the weights taken before the first step and
the last one the trained weights; n_l logged to TensorBoard equals n_l counted by the sign identity
cos <= 0 <=> sum(w) <= 0 on the saved weights; the cos histograms hold one value per filter, with the
minimum and maximum of cos computed by the closed form sum(w) / (||w|| sqrt(n)); metrics rows are the
values the loop logged. The run folders are then analysed by `relugeom stats` (and `reinit`).
"""

import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from _cli import run
from _tinynet import TinyNet, digits, n_l_brute
from relugeom import load_checkpoint
from relugeom.checkpoints import checkpoint_series
from relugeom.experiments.callbacks import Recorder

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

CONVS = ("features.0", "features.2")


def events(folder):
    """Every event file under ``folder`` read back with TensorBoard's own reader."""
    files = sorted(p for p in folder.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {folder}"
    accs = []
    for f in files:
        ea = EventAccumulator(str(f), size_guidance={"scalars": 0, "histograms": 0})
        ea.Reload()
        accs.append(ea)
    return accs


def tb_scalars(folder):
    out = {}
    for ea in events(folder):
        for tag in ea.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in ea.Scalars(tag))
    return out


def tb_histograms(folder):
    out = {}
    for ea in events(folder):
        for tag in ea.Tags()["histograms"]:
            out.setdefault(tag, []).extend((e.step, e.histogram_value) for e in ea.Histograms(tag))
    return out


def closed_form_cos(weight):
    w = weight.detach().double().reshape(weight.shape[0], -1)
    return (w.sum(1) / (w.norm(dim=1) * math.sqrt(w.shape[1]))).numpy()


def check_run(out, init_state, final_state, n_epochs, key_prefix=""):
    """The run folder's checkpoints against the weights the test copied itself."""
    series = checkpoint_series(out)
    assert [e.epoch for e in series] == list(range(n_epochs + 1))
    first = load_checkpoint(series[0].path).state_dict
    last = load_checkpoint(series[-1].path).state_dict
    for k, v in init_state.items():
        assert torch.equal(first[key_prefix + k], v), k
    for k, v in final_state.items():
        assert torch.equal(last[key_prefix + k], v), k
    assert not torch.equal(first[key_prefix + "features.0.weight"], last[key_prefix + "features.0.weight"])
    return series


def check_tensorboard(tb_dir, out, n_epochs, *, scalars_from_tb=True, prefix="", step="epoch"):
    """n_l scalars and cos histograms in the event files against the saved checkpoints."""
    series = checkpoint_series(out)
    hists = tb_histograms(tb_dir)
    steps = [e.epoch if step == "epoch" else e.meta["global_step"] for e in series]
    for i, layer in enumerate(CONVS):
        tag = f"relugeom/cos/{i + 1:02d}_{prefix}{layer}"
        assert tag in hists, sorted(hists)
        by_step = dict(hists[tag])
        assert sorted(by_step) == steps
        for e, s in zip(series, steps):
            w = load_checkpoint(e.path).state_dict[f"{prefix}{layer}.weight"]
            cos = closed_form_cos(w)
            h = by_step[s]
            assert h.num == w.shape[0]
            assert h.min == pytest.approx(cos.min(), abs=1e-6) and h.max == pytest.approx(cos.max(), abs=1e-6)
    if scalars_from_tb:
        sc = tb_scalars(tb_dir)
        for i, layer in enumerate(CONVS):
            values = dict(sc[f"relugeom/n_l/{i + 1:02d}_{prefix}{layer}"])
            for e in series:
                w = load_checkpoint(e.path).state_dict[f"{prefix}{layer}.weight"]
                assert values[e.epoch] == pytest.approx(n_l_brute(w), abs=1e-6)


def train_plain(net, x, y, rec, epochs, batch=64):
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    logged = []
    for _ in range(epochs):
        total = 0.0
        for i in range(0, len(x), batch):
            loss = nn.functional.cross_entropy(net(x[i : i + batch]), y[i : i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step()
            total += float(loss.detach())
        acc = float((net(x).argmax(1) == y).float().mean())
        logged.append((total, acc))
        rec.end_epoch(train_loss=total, train_acc=torch.tensor(acc))
    return logged


# ------------------------------------------------------------------------------------------------- plain


def test_plain_recorder_run_folder_tensorboard_and_stats(tmp_path, capsys):
    torch.manual_seed(0)
    x, y = digits(256)
    net = TinyNet()
    init = copy.deepcopy(net.state_dict())
    out = tmp_path / "run"
    with Recorder(out, net, seed=0, data="digits", input_shape=(1, 8, 8), num_classes=10, model_factory=TinyNet,
                  model_kwargs={"width": 6}, tensorboard=True, hparams={"lr": 0.1}) as rec:  # fmt: skip
        logged = train_plain(net, x, y, rec, epochs=3)
    series = check_run(out, init, net.state_dict(), 3)
    # metadata and metrics: what the loop logged, with global steps
    meta = series[-1].meta
    assert meta["global_step"] == 12 and meta["seed"] == 0 and meta["dataset"] == "digits"
    assert meta["model_factory"] == "_tinynet:TinyNet" and meta["model_kwargs"] == {"width": 6}
    m = pd.read_csv(out / "metrics.csv")
    assert m["epoch"].tolist() == [0, 1, 2, 3]
    assert m["global_step"].tolist() == [0, 4, 8, 12]
    np.testing.assert_allclose(m["train_loss"].iloc[1:], [t for t, _ in logged])
    np.testing.assert_allclose(m["train_acc"].iloc[1:], [a for _, a in logged], rtol=1e-6)
    doc = json.loads((out / "config.json").read_text())
    assert doc["hparams"] == {"lr": 0.1} and doc["recorder"]["unit"] == "epoch"
    check_tensorboard(out / "tensorboard", out, 3)
    assert [v for _, v in sorted(tb_scalars(out / "tensorboard")["metrics/train_loss"])] == pytest.approx(
        [t for t, _ in logged], rel=1e-6)  # fmt: skip
    # every verb reads the folder
    code, text, err = run(["stats", str(out), "--out", str(tmp_path / "stats")], capsys)
    assert code == 0, err
    layers = pd.read_csv(tmp_path / "stats" / "layers.csv")
    last = load_checkpoint(series[-1].path).state_dict
    got = layers[(layers.epoch == 3)].set_index("layer")["n_neg"]
    for layer in CONVS:
        assert got[layer] == pytest.approx(n_l_brute(last[f"{layer}.weight"]))


def test_plain_recorder_every_n_steps(tmp_path):
    torch.manual_seed(1)
    x, y = digits(128)
    net = TinyNet(width=4)
    with Recorder(tmp_path / "run", net, seed=1, data="digits", every_n_steps=3) as rec:
        train_plain(net, x, y, rec, epochs=3, batch=32)  # 12 steps: checkpoints at 0, 3, 6, 9, 12
    series = checkpoint_series(tmp_path / "run")
    assert [e.epoch for e in series] == [0, 3, 6, 9, 12]
    assert [e.meta["global_step"] for e in series] == [0, 3, 6, 9, 12]
    assert series[-1].meta["unit"] == "step"
    assert torch.equal(load_checkpoint(series[-1].path).state_dict["features.0.weight"], net.features[0].weight)


def test_recorder_refuses_a_folder_holding_a_run_and_resumes(tmp_path):
    net = TinyNet(width=2)
    with Recorder(tmp_path / "run", net, seed=0) as rec:
        rec.end_epoch(train_loss=1.0)
    with pytest.raises(Exception, match="already holds a run"):
        Recorder(tmp_path / "run", net).start()
    with torch.no_grad():
        net.features[0].weight.add_(1.0)
    with Recorder(tmp_path / "run", net, seed=0, resume=True) as rec:
        rec.end_epoch(train_loss=0.5)
    series = checkpoint_series(tmp_path / "run")
    assert [e.epoch for e in series] == [0, 1, 2]
    assert torch.equal(load_checkpoint(series[-1].path).state_dict["features.0.weight"], net.features[0].weight)
    assert pd.read_csv(tmp_path / "run" / "metrics.csv")["train_loss"].tolist()[1:] == [1.0, 0.5]


def test_recorded_relugeom_architecture_runs_reinit(tmp_path, capsys):
    """A relugeom architecture trained in the user's own loop: `reinit` rebuilds it and the run's data."""
    from relugeom.experiments.models import build_model

    torch.manual_seed(0)
    x, y = digits(256)
    net = build_model("lenet", num_classes=10, in_channels=1, image_size=8, seed=0)
    with Recorder(tmp_path / "run", net, seed=0, data="digits", arch="lenet", input_shape=(1, 8, 8)) as rec:
        train_plain(net, x, y, rec, epochs=2)
    code, text, err = run(["reinit", str(tmp_path / "run"), "--out", str(tmp_path / "ri")], capsys)
    assert code == 0, err
    drops = pd.read_csv(tmp_path / "ri" / "reinit.csv")
    # resetting to the trained epoch itself changes nothing: a drop of exactly 0
    assert (drops[drops.epoch == 2]["drop"].abs() < 1e-12).all()


def test_own_model_rebuilt_only_when_named(tmp_path, capsys):
    torch.manual_seed(0)
    x, y = digits(128)
    net = TinyNet()
    with Recorder(tmp_path / "run", net, seed=0, data="digits", model_factory=TinyNet, model_kwargs={"width": 6},
                  input_shape=(1, 8, 8)) as rec:  # fmt: skip
        train_plain(net, x, y, rec, epochs=2)
    ckpt = str(tmp_path / "run" / "checkpoints" / "epoch_0002.pt")
    code, _, err = run(["regions", "segment", ckpt, "--dataset", "digits", "--out", str(tmp_path / "r")], capsys)
    assert code == 1 and "pass --arch _tinynet:TinyNet" in err
    code, text, err = run(["regions", "segment", ckpt, "--arch", "_tinynet:TinyNet", "--dataset", "digits",
                           "--out", str(tmp_path / "r")], capsys)  # fmt: skip
    assert code == 0, err
    assert "linear regions" in text
    code, text, err = run(["reinit", str(tmp_path / "run"), "--arch", "_tinynet:TinyNet", "--out",
                           str(tmp_path / "ri")], capsys)  # fmt: skip
    assert code == 0, err
    drops = pd.read_csv(tmp_path / "ri" / "reinit.csv")
    assert (drops[drops.epoch == 2]["drop"].abs() < 1e-12).all()
    assert set(drops.layer) == {"features.0", "features.2"}


# ------------------------------------------------------------------------------------------------- Lightning


def test_lightning_callback(tmp_path, capsys):
    L = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import TensorBoardLogger

    from relugeom.experiments.callbacks.lightning import RelugeomCallback

    class Module(L.LightningModule):
        def __init__(self, width: int = 6):
            super().__init__()
            self.save_hyperparameters()
            self.net = TinyNet(width)

        def training_step(self, batch, i):
            x, y = batch
            loss = nn.functional.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, i):
            x, y = batch
            out = self.net(x)
            self.log("val_loss", nn.functional.cross_entropy(out, y))
            self.log("val_acc", (out.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    L.seed_everything(3)
    x, y = digits(192)
    ds = torch.utils.data.TensorDataset(x, y)
    train_dl = torch.utils.data.DataLoader(ds, batch_size=64)
    val_dl = torch.utils.data.DataLoader(ds, batch_size=192)
    module = Module()
    init = copy.deepcopy(module.net.state_dict())
    out = tmp_path / "run"
    logger = TensorBoardLogger(str(tmp_path / "tb"), name="lit")
    cb = RelugeomCallback(out, module="net", data="digits", input_shape=(1, 8, 8), model_factory=TinyNet,
                          model_kwargs={"width": 6})  # fmt: skip
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=logger, callbacks=[cb],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, train_dl, val_dl)
    series = check_run(out, init, module.net.state_dict(), 2)
    assert series[-1].meta["global_step"] == 6 and series[-1].meta["seed"] == 3
    m = pd.read_csv(out / "metrics.csv")
    assert {"train_loss", "val_loss", "val_acc", "lr"} <= set(m.columns)
    # the last val_acc recorded is the trained network's accuracy on the validation data
    with torch.no_grad():
        acc = float((module.net(x).argmax(1) == y).float().mean())
    assert m["val_acc"].iloc[-1] == pytest.approx(acc, abs=1e-6)
    # histograms in the trainer's TensorBoardLogger at epochs 0..2; n_l through log_dict
    check_tensorboard(tmp_path / "tb", out, 2, scalars_from_tb=False, step="global_step")
    sc = tb_scalars(tmp_path / "tb")
    for i, layer in enumerate(CONVS):
        values = [v for _, v in sorted(sc[f"relugeom/n_l/{i + 1:02d}_{layer}"])]
        expected = [n_l_brute(load_checkpoint(e.path).state_dict[f"{layer}.weight"]) for e in series]
        assert values == pytest.approx(expected, abs=1e-6)
    code, _, err = run(["stats", str(out), "--out", str(tmp_path / "stats")], capsys)
    assert code == 0, err


# ------------------------------------------------------------------------------------------------- Hugging Face


class HFNet(nn.Module):
    """What the Trainer wants: forward(pixel_values, labels) -> {"loss", "logits"}; ``net`` is the ConvNet."""

    def __init__(self):
        super().__init__()
        self.net = TinyNet()

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


class DictData(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def test_huggingface_trainer_callback(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from relugeom.experiments.callbacks.huggingface import RelugeomTrainerCallback

    torch.manual_seed(0)
    x, y = digits(128)
    model = HFNet()
    init = copy.deepcopy(model.net.state_dict())
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), num_train_epochs=2, per_device_train_batch_size=32,
        per_device_eval_batch_size=128, eval_strategy="epoch", logging_strategy="epoch", save_strategy="no",
        report_to=["tensorboard"], use_cpu=True, seed=5, disable_tqdm=True, learning_rate=0.05,
        dataloader_num_workers=0,
    )  # fmt: skip
    cb = RelugeomTrainerCallback(module="net", data="digits", input_shape=(1, 8, 8))
    trainer = transformers.Trainer(model=model, args=args, train_dataset=DictData(x, y), eval_dataset=DictData(x, y),
                                   callbacks=[cb])  # fmt: skip
    trainer.train()
    out = tmp_path / "hf" / "relugeom"
    series = check_run(out, init, model.net.state_dict(), 2)
    assert series[-1].meta["global_step"] == 8 and series[-1].meta["seed"] == 5
    m = pd.read_csv(out / "metrics.csv")
    assert {"loss", "eval_loss"} <= set(m.columns)
    # the last eval_loss recorded is the trained network's loss on the evaluation data
    with torch.no_grad():
        loss = float(nn.functional.cross_entropy(model.net(x), y))
    assert m["eval_loss"].iloc[-1] == pytest.approx(loss, rel=1e-4)
    check_tensorboard(out / "tensorboard", out, 2)
    code, _, err = run(["stats", str(out), "--out", str(tmp_path / "stats")], capsys)
    assert code == 0, err
