"""``relugeom measures``: a table over epochs with the gap, plots, and clear errors for bad input."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from _cli import run
from relugeom import save_checkpoint
from relugeom.cli import VERBS
from relugeom.experiments.data import load_dataset
from relugeom.experiments.models import build_model
from relugeom.measures import complexity_table, fisher_rao_norm


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("mseries")
    for e in range(2):
        model = build_model("mlp", in_channels=1, image_size=8, hidden=[12], seed=e)
        save_checkpoint(root / "checkpoints" / f"epoch_{e:04d}.pt", model.state_dict(),
                        {"epoch": e, "seed": 0, "arch": "mlp"})  # fmt: skip
    return root


def test_measures_over_a_run(series, tmp_path, capsys):
    assert "measures" in VERBS
    code, out, err = run(["-q", "measures", str(series), "--data", "digits", "--measures", "fisher_rao,norms,kfac",
                          "--n-train", "60", "--n-test", "40", "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0, err
    df = pd.read_csv(tmp_path / "measures.csv")
    assert (tmp_path / "measures.png").stat().st_size > 1000
    assert sorted(df["epoch"].unique()) == [0, 1]
    wide = df.pivot_table(index="epoch", columns="measure", values="value")
    assert (wide["generalization_gap"] - (wide["test_loss"] - wide["train_loss"])).abs().max() < 1e-12
    assert wide.loc[0, "distance_to_init"] == 0 and wide.loc[1, "distance_to_init"] > 0
    # the table's numbers are the model's: train loss and Fisher-Rao norm recomputed directly
    data = load_dataset("digits", augment=False)
    X, y = data.train.x[:60].double(), data.train.y[:60]
    model = build_model("mlp", in_channels=1, image_size=8, hidden=[12], seed=1).double().eval()
    assert wide.loc[1, "train_loss"] == pytest.approx(float(F.cross_entropy(model(X), y).detach()), rel=1e-9)
    assert wide.loc[1, "fisher_rao_norm2"] == pytest.approx(fisher_rao_norm(model, (X, y)).norm2, rel=1e-9)
    assert "fisher_rao_norm2" in out


def test_library_table_on_a_single_model():
    model = build_model("mlp", in_channels=1, image_size=8, hidden=[6], seed=0)
    X, y = torch.randn(20, 1, 8, 8), torch.randint(0, 10, (20,))
    df = complexity_table(model, (X, y), (X, y), ["hessian_trace", "tangent"], max_samples=10, n_probes=4)
    assert list(df.columns) == ["measure", "value", "std_error"]
    row = df.set_index("measure").loc["hessian_trace"]
    assert row["std_error"] > 0
    assert df.set_index("measure").loc["generalization_gap", "value"] == 0


def test_bad_input(series, tmp_path, capsys):
    code, _, err = run(["measures", str(series), "--data", "digits", "--measures", "bogus"], capsys)
    assert code == 2 and "bogus" in err
    code, _, err = run(["measures", str(series), "--out", str(tmp_path)], capsys)
    assert code == 1 and "--data" in err
    sd = build_model("mlp", in_channels=1, image_size=8, hidden=[5]).state_dict()
    torch.save(sd, tmp_path / "bare.pt")
    code, _, err = run(["measures", str(tmp_path / "bare.pt"), "--data", "digits", "--out", str(tmp_path)], capsys)
    assert code == 1 and "nn.Module" in err


def test_default_set_prints_its_cost_first_and_stays_within_20_passes(series, tmp_path, capsys):
    code, out, err = run(["-q", "measures", str(series), "--data", "digits", "--n-train", "60", "--n-test", "40",
                          "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0, err
    lines = err.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("estimated cost per checkpoint"))
    rows = {ln.split()[0]: float(ln.split()[1]) for ln in lines[start + 1 : start + 6]}
    assert set(rows) == {"losses", "fisher_rao", "norms", "expected_sharpness", "total"}
    assert rows["total"] == pytest.approx(sum(v for k, v in rows.items() if k != "total"), abs=0.2)
    assert rows["total"] <= 20
    measured = set(pd.read_csv(tmp_path / "measures.csv")["measure"])
    assert {"fisher_rao_norm2", "spectral_product", "expected_sharpness"} <= measured
    assert "hessian_trace" not in measured and "tangent_sensitivity" not in measured  # opt-in
