"""``relugeom cones``: tables and figures for a run and several seeds; bad input is one clear line."""

import pandas as pd
import pytest
import torch
from torch import nn

from _cli import run
from relugeom import save_checkpoint
from relugeom.experiments.models import build_model
from relugeom.stats.cones import STATES


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cones")
    for seed in range(2):
        for e in range(3):
            model = build_model("vgg9", in_channels=1, image_size=8, seed=10 * seed + e)
            with torch.no_grad():
                for m in model.modules():
                    if isinstance(m, nn.Conv2d):
                        m.bias.normal_(0, 0.1)
            save_checkpoint(root / f"seed{seed}" / "checkpoints" / f"epoch_{e:04d}.pt", model.state_dict(),
                            {"epoch": e, "seed": seed, "arch": "vgg9"})
    return root


def test_cones_on_two_seeds_writes_tables_and_figures(runs, tmp_path, capsys, monkeypatch):
    from relugeom.sources import SourceItem

    loads = []
    real_load = SourceItem.load
    monkeypatch.setattr(SourceItem, "load", lambda item: loads.append(item.path) or real_load(item))
    code, out, err = run(["cones", str(runs / "seed0"), str(runs / "seed1"), "--input-shape", "1,8,8",
                          "--out", str(tmp_path), "--pairs", "--cones", "filter"], capsys)
    assert code == 0, err
    # every checkpoint read once for all three tables; the first once more, before any work, to check --input-shape
    assert len(set(loads)) == 6 and len(loads) == 7 and loads.count(loads[0]) == 2
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    assert len(pairs) == 6 * (64 * 64 + 128 * 128 + 256 * 256)
    for name in ("params.csv", "states.csv", "states_net.csv", "states_stage.csv", "pairs.csv", "pairs_net.csv",
                 "states_net.png", "states_stage.png", "continuous.png"):
        assert (tmp_path / name).stat().st_size > 0
    pairs_net = pd.read_csv(tmp_path / "pairs_net.csv")  # every pair counted once per run and epoch
    assert pairs_net["count"].sum() == len(pairs) and set(pairs.state) <= set(STATES)
    states = pd.read_csv(tmp_path / "states.csv")
    ok = states[states.state.notna()]
    # vgg9: 3 within-stage pairs, 64 + 128 + 256 filters, 2 runs x 3 epochs
    assert len(ok) == 2 * 3 * (64 + 128 + 256)
    assert set(ok.state) <= set(STATES)
    assert states[states.state.isna()].reason.str.contains("pooling").all()
    net = pd.read_csv(tmp_path / "states_net.csv")
    assert net.groupby(["run", "epoch"]).fraction.sum().round(12).eq(1).all()
    assert "OUT_FULL_IN" in out


def test_cones_bad_input(runs, tmp_path, capsys):
    code, _, err = run(["cones", str(runs / "seed0"), "--input-shape", "3,8,8", "--out", str(tmp_path)], capsys)
    assert code == 2 and "--input-shape" in err  # a shape that does not fit the model is a usage error
    code, _, err = run(["cones", str(runs / "seed0"), "--input-shape", "a,b", "--out", str(tmp_path)], capsys)
    assert code in (1, 2) and "input-shape" in err.lower()


def test_cones_per_channel_is_the_default(runs, tmp_path, capsys):
    code, out, err = run(["cones", str(runs / "seed0"), "--input-shape", "1,8,8", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    params = pd.read_csv(tmp_path / "params.csv")
    # vgg9 on 1x8x8: per (filter, input channel): 64*1 + 64*64 + 128*64 + 128*128 + 256*128 + 256*256 per epoch
    assert len(params) == 3 * (64 + 64 * 64 + 128 * 64 + 128 * 128 + 256 * 128 + 256 * 256)
    states = pd.read_csv(tmp_path / "states.csv")
    ok = states[states.state.notna()]
    assert len(ok) == 3 * (64 * 64 + 128 * 128 + 256 * 256) and set(ok.rotation_space) == {"channel"}
    assert (ok.prev_filter == ok.channel).all()
