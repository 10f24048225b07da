"""The command line: outputs, help, and one clear message (no traceback) for each kind of bad input."""

import re
import subprocess
import sys

import pandas as pd
import pytest
import torch

from _cli import run
from relugeom import save_checkpoint
from relugeom.cli import VERBS
from relugeom.experiments.models import build_model


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("series")
    for e in range(3):
        model = build_model("vgg9", in_channels=1, image_size=8, seed=e)
        save_checkpoint(root / "checkpoints" / f"epoch_{e:04d}.pt", model.state_dict(),
                        {"epoch": e, "seed": 0, "arch": "vgg9", "train_loss": 1.0 / (e + 1)})
    pd.DataFrame({"epoch": [0, 1, 2], "train_loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.1, 0.7],
                  "train_acc": [0.1, 0.5, 0.8], "val_acc": [0.1, 0.4, 0.7]}).to_csv(root / "metrics.csv", index=False)
    return root


def test_stats_on_a_run_writes_tables_and_plots(series, tmp_path, capsys):
    code, out, _ = run(["stats", str(series), "--out", str(tmp_path), "--format", "parquet"], capsys)
    assert code == 0
    assert "n_l@0" in out and "features.12" in out
    for name in ("filters.parquet", "layers.parquet", "histograms.png", "nl_epochs.png"):
        assert (tmp_path / name).stat().st_size > 0
    layers = pd.read_parquet(tmp_path / "layers.parquet")
    assert set(layers.columns) >= {"epoch", "layer", "layer_index", "stage", "block", "n_filters", "n_zero",
                                   "n_neg", "mean_cos"}
    assert len(layers) == 3 * 6


def test_help_is_complete(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and all(v in out for v in VERBS)
    for verb in VERBS:
        code, out, _ = run([verb, "--help"], capsys)
        assert code == 0 and "Usage: relugeom " + verb in out and "--help" in out


@pytest.mark.parametrize("verb, args", [
    ("train", ["--epochs", "1"]), ("cones", ["x.pt", "--input-shape", "1,8,8"]), ("measures", ["x.pt"]),
    ("reinit", ["run"]), ("reproduce", ["noisy_labels"]),
])  # fmt: skip
@pytest.mark.parametrize("device, pattern", [
    ("bogus", "is not a torch device"), ("cuda:0", "CUDA"), ("xla", "cpu, cuda or mps"),
])  # fmt: skip
def test_a_device_this_machine_lacks_is_a_usage_error(tmp_path, capsys, verb, args, device, pattern):
    import torch

    if device == "cuda:0" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run([verb, *args, "--device", device, "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--device" in err and pattern in err, err
    assert not (tmp_path / "o").exists()


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _bad_inputs(tmp_path):
    good = build_model("vgg9", in_channels=1, image_size=8, seed=0).state_dict()
    torch.save({"state_dict": good, "x": _Evil()}, tmp_path / "evil.pt")
    save_checkpoint(tmp_path / "ok.pt", good)
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    nan = {k: v.clone() for k, v in good.items()}
    nan["features.5.weight"][3, 0, 1, 1] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", nan)
    return good


@pytest.mark.parametrize("name, extra, code, pattern", [
    ("evil.pt", [], 1, r"evil\.pt: refused"),
    ("cut.pt", [], 1, r"cut\.pt: cannot be read"),
    ("notes.pt", [], 1, r"notes\.pt"),
    ("missing.pt", [], 1, r"missing\.pt: no such file"),
    ("ok.pt", ["--arch", "vgg11"], 1, r"ok\.pt: .*does not fit"),
    ("ok.pt", ["--arch", "lenet"], 1, r"ok\.pt: .*(missing keys|shape mismatches)"),
    ("nan.pt", [], 1, r"nan\.pt: layer 'features\.5': weight has 1 NaN/inf"),
])
def test_bad_input_gives_one_clear_message(tmp_path, capsys, name, extra, code, pattern):
    _bad_inputs(tmp_path)
    got, out, err = run(["stats", str(tmp_path / name), "--out", str(tmp_path / "o"), *extra], capsys)
    assert got == code
    assert re.search(pattern, err), err
    assert "pwned" not in out
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_zero_filters_are_reported_with_exit_3(tmp_path, capsys):
    sd = build_model("vgg9", in_channels=1, image_size=8, seed=0).state_dict()
    sd["features.7.weight"][5] = 0
    save_checkpoint(tmp_path / "z.pt", sd, {"arch": "vgg9"})
    code, out, err = run(["stats", str(tmp_path / "z.pt"), "--out", str(tmp_path / "o")], capsys)
    assert code == 3 and "layer 'features.7': 1 of 128 filters are all zero" in err
    layers = pd.read_csv(tmp_path / "o" / "layers.csv").set_index("layer")
    assert layers.loc["features.7", "n_zero"] == 1


def test_one_bad_checkpoint_in_a_series(series, tmp_path, capsys):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(series, run_dir)
    (run_dir / "checkpoints" / "epoch_0001.pt").write_bytes(b"\x00" * 100)
    code, out, err = run(["stats", str(run_dir), "--out", str(tmp_path / "o")], capsys)
    assert code == 3 and "epoch_0001.pt" in err and "skipped" in err
    assert sorted(pd.read_csv(tmp_path / "o" / "layers.csv").epoch.unique()) == [0, 2]


def test_console_script_exit_code_and_stderr(tmp_path):
    p = subprocess.run([sys.executable, "-m", "relugeom", "stats", str(tmp_path / "nope.pt")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.strip() == f"error: {tmp_path / 'nope.pt'}: no such file"


def test_train_refuses_an_existing_run(series, capsys):
    code, _, err = run(["train", "--arch", "lenet", "--dataset", "digits", "--epochs", "1", "--out", str(series)],
                       capsys)
    assert code == 1 and "already holds a run" in err


def test_demo_end_to_end(tmp_path, capsys):
    code, out, _ = run(["demo", "--epochs", "2", "--out", str(tmp_path)], capsys)
    assert code == 0 and "n_l@2" in out
    for name in ("filters.csv", "layers.csv", "histograms.png", "nl_epochs.png", "run/metrics.csv",
                 "run/checkpoints/epoch_0002.pt"):
        assert (tmp_path / name).exists()
    before = (tmp_path / "run/metrics.csv").read_bytes()
    code, _, err = run(["demo", "--epochs", "1", "--out", str(tmp_path)], capsys)  # a rerun does not replace it...
    assert code == 1 and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "run/metrics.csv").read_bytes() == before
    code, _, _ = run(["demo", "--epochs", "1", "--out", str(tmp_path), "--overwrite"], capsys)  # ...unless asked
    assert code == 0 and not (tmp_path / "run/checkpoints/epoch_0002.pt").exists()


def test_stats_on_a_torchvision_format_alexnet_against_a_random_init(tmp_path, capsys):
    """Figs. 1, 9-12: a torchvision-layout checkpoint (plain state dict, torchvision key names) vs. a fresh
    Kaiming init; n_l of each conv layer equals the fraction computed directly with numpy from the file."""
    import numpy as np

    sd = build_model("alexnet", num_classes=7, image_size=63, hidden=32, seed=3).state_dict()
    assert [k for k in sd if k.endswith("weight")][:5] == [f"features.{i}.weight" for i in (0, 3, 6, 8, 10)]
    torch.save(sd, tmp_path / "alexnet-owt.pth")
    out = tmp_path / "out"
    code, text, _ = run(["stats", str(tmp_path / "alexnet-owt.pth"), "--arch", "alexnet", "--init", "random",
                         "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, text
    assert (out / "histograms.png").stat().st_size > 0
    layers = pd.read_csv(out / "layers.csv").sort_values("layer_index")
    expected = []
    for i in (0, 3, 6, 8, 10):
        w = sd[f"features.{i}.weight"].double().numpy().reshape(sd[f"features.{i}.weight"].shape[0], -1)
        expected.append(np.mean(w.sum(axis=1) <= 0))
    np.testing.assert_allclose(layers["n_neg"].to_numpy(), expected)
