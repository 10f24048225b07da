"""`relugeom regions` verbs: printed formulas against the library, files written, bad input as one-line errors."""

import pandas as pd
import pytest

from _cli import run
from relugeom.checkpoints import save_checkpoint
from relugeom.experiments.models import build_model
from relugeom.regions.formulas import cnn_max_regions


def test_formula_prints_published_and_exact(capsys):
    code, out, err = run(["regions", "formula", "--input", "1,3,3", "--kernel", "2", "--filters", "2"], capsys)
    assert code == 0
    assert "256" in out and "255" in out and "over-counts" in err
    code, out, _ = run(["regions", "formula", "--input", "2,6", "--kernel", "3", "--filters", "3"], capsys)
    assert code == 0 and str(cnn_max_regions((2, 6), 3, 1, 3)) in out
    code, out, _ = run(["regions", "formula", "--widths", "2,8,8"], capsys)
    assert code == 0 and "592" in out and "1369" in out
    code, out, _ = run(["regions", "formula", "--input", "1,16", "--layers", "3:1:4,3:1:4"], capsys)
    assert code == 0 and "theorem2_lower" in out


def test_formula_bad_input(capsys):
    code, _, err = run(["regions", "formula", "--input", "1,3", "--kernel", "5", "--filters", "2"], capsys)
    assert code == 1 and err.startswith("error:") and "Traceback" not in err
    code, _, _ = run(["regions", "formula"], capsys)
    assert code == 2


@pytest.fixture()
def ckpt(tmp_path):
    m = build_model("mlp", hidden=[6, 6], in_channels=1, image_size=3, seed=0)
    p = tmp_path / "m.pt"
    save_checkpoint(p, m.state_dict(), {"epoch": 0, "arch": "mlp"})
    return p


def test_slice_segment_train(ckpt, tmp_path, capsys):
    out = tmp_path / "o"
    code, text, err = run(["regions", "slice", str(ckpt), "--arch", "mlp", "--input-shape", "1,3,3",
                            "--out", str(out), "--verify-points", "200"], capsys)  # fmt: skip
    assert code == 0, err
    df = pd.read_csv(out / "slice.csv")
    assert f"{df.region.nunique()} activation regions" in text
    assert (out / "slice.png").stat().st_size > 0 and pd.read_csv(out / "verify.csv").ok.all()
    code, text, err = run(["regions", "segment", str(ckpt), "--arch", "mlp", "--input-shape", "1,3,3",
                            "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert len(pd.read_csv(out / "segment.csv")) == int(text.split()[0])
    code, text, err = run(["regions", "train", str(ckpt), "--arch", "mlp", "--input-shape", "1,3,3",
                            "--out", str(out), "--lines", "2", "--planes", "1"], capsys)  # fmt: skip
    assert code == 0, err
    assert set(pd.read_csv(out / "regions.csv").kind) == {"line", "plane"}


def test_bare_state_dict_needs_arch(tmp_path, capsys):
    p = tmp_path / "bare.pt"
    save_checkpoint(p, build_model("mlp", hidden=[4], in_channels=1, image_size=3).state_dict(), {})
    code, _, err = run(["regions", "slice", str(p), "--input-shape", "1,3,3"], capsys)
    assert code == 1 and "--arch" in err


def test_slice_over_budget_stops_with_a_clear_error(tmp_path, capsys):
    # a ConvNet on digits: its first ReLU alone has 64*8*8 lines on the slice, millions of regions
    p = tmp_path / "vgg.pt"
    save_checkpoint(p, build_model("vgg9", num_classes=10, in_channels=1, image_size=8, seed=0).state_dict(), {})
    code, _, err = run(["regions", "slice", str(p), "--arch", "vgg9", "--input-shape", "1,8,8",
                         "--budget", "2000", "--out", str(tmp_path / "o")], capsys)  # fmt: skip
    assert code == 1 and "more than 2000 steps" in err and "--bounds" in err and "Traceback" not in err
