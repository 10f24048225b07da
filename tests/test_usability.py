"""What a user sees besides the numbers: defaults taken from the run, one line per repeated warning, progress
bars only on a terminal, and short reprs of result objects."""

import json
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from _cli import run
from relugeom import save_checkpoint
from relugeom._progress import set_quiet
from relugeom.errors import RelugeomWarning
from relugeom.experiments.data import load_dataset
from relugeom.experiments.models import build_model


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    """A real run of `relugeom train` (a small MLP on digits, 2 epochs)."""
    from relugeom.experiments.train import TrainConfig, train

    out = tmp_path_factory.mktemp("mlp") / "run"
    train(TrainConfig(arch="mlp", dataset="digits", epochs=2, batch_size=64, n_train=300,
                      model_kwargs={"hidden": [6, 6]}), out)  # fmt: skip
    return out


def test_regions_train_takes_the_runs_data_not_noise(mlp_run, tmp_path, capsys, monkeypatch):
    import relugeom.regions.training as training

    seen = {}
    real = training.regions_over_training

    def spy(source, X, **kw):
        seen["X"] = X
        return real(source, X, **kw)

    monkeypatch.setattr(training, "regions_over_training", spy)
    code, _, err = run(["regions", "train", str(mlp_run), "--lines", "1", "--planes", "0",
                        "--out", str(tmp_path)], capsys)  # fmt: skip
    assert code == 0, err
    assert "validation split of digits" in err and "config.json" in err
    # the same points as the run's validation split, read here independently of the CLI
    val = load_dataset("digits", normalize="standard", val_fraction=0.1, split_seed=0).val.x
    assert torch.equal(seen["X"], val[: len(seen["X"])].double())
    assert len(seen["X"]) == min(256, len(val))


def test_regions_slice_of_a_run_is_its_trained_model(mlp_run, tmp_path, capsys):
    code, text, err = run(["regions", "slice", str(mlp_run), "--out", str(tmp_path), "--verify-points", "50"], capsys)
    assert code == 0, err
    assert "at epoch 2 (its last checkpoint)" in err and "validation split of digits" in err


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory):
    """Checkpoints of a vgg9 run folder with the config.json `relugeom train` writes (data section)."""
    root = tmp_path_factory.mktemp("conv") / "run"
    for e in range(2):
        model = build_model("vgg9", in_channels=1, image_size=8, seed=e)
        save_checkpoint(root / "checkpoints" / f"epoch_{e:04d}.pt", model.state_dict(),
                        {"epoch": e, "seed": 0, "arch": "vgg9"})  # fmt: skip
    doc = {"config": {"arch": "vgg9", "dataset": "digits", "epochs": 1},
           "data": {"name": "digits", "input_shape": [1, 8, 8], "num_classes": 10}, "lr_drops": []}  # fmt: skip
    (root / "config.json").write_text(json.dumps(doc))
    return root


def test_cones_takes_the_input_shape_from_the_run(conv_run, tmp_path, capsys):
    code, _, err = run(["cones", str(conv_run), "--out", str(tmp_path / "a")], capsys)
    assert code == 0, err
    assert "input shape 1,8,8 (digits" in err
    code, _, err = run(["cones", str(conv_run), "--input-shape", "1,8,8", "--out", str(tmp_path / "b")], capsys)
    assert code == 0, err
    a, b = (pd.read_csv(tmp_path / d / "params.csv") for d in "ab")
    pd.testing.assert_frame_equal(a, b)


def test_cones_without_a_run_asks_for_the_input_shape(conv_run, tmp_path, capsys):
    code, _, err = run(["cones", str(conv_run / "checkpoints" / "epoch_0001.pt"), "--out", str(tmp_path)], capsys)
    assert code == 2 and "--input-shape" in err


# ------------------------------------------------------------------------------------------------ warnings
def test_a_warning_repeated_over_checkpoints_is_shown_once_with_a_count(tmp_path, capsys):
    for e in range(4):
        sd = build_model("vgg9", in_channels=1, image_size=8, seed=e).state_dict()
        sd["features.7.weight"][5] = 0
        save_checkpoint(tmp_path / "run" / "checkpoints" / f"epoch_{e:04d}.pt", sd, {"epoch": e, "arch": "vgg9"})
    code, _, err = run(["stats", str(tmp_path / "run"), "--out", str(tmp_path / "o")], capsys)
    assert code == 3
    assert err.count("1 of 128 filters are all zero") == 2  # the first one, then the count
    assert "(repeated for 4 checkpoints)" in err


def test_warnings_that_differ_only_in_the_file_are_one(capsys):
    from relugeom.cli import WarningDisplay

    d = WarningDisplay()
    for e in range(3):
        d.show(RelugeomWarning(f"runs/a/checkpoints/epoch_{e:04d}.pt: pair 'x' -> 'y' skipped: pooling"),
               RelugeomWarning, "f", 1)  # fmt: skip
    d.show(RelugeomWarning("layer 'conv1': another problem"), RelugeomWarning, "f", 1)
    d.summary()
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: runs/a/checkpoints/epoch_0000.pt: pair 'x' -> 'y' skipped: pooling",
                   "warning: layer 'conv1': another problem",
                   "warning: <file>: pair 'x' -> 'y' skipped: pooling (repeated for 3 checkpoints)"]  # fmt: skip


# ------------------------------------------------------------------------------------------------ progress
def test_progress_bar_per_checkpoint_on_a_terminal_only(conv_run, capsys, monkeypatch):
    from relugeom import projection_stats

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    set_quiet(False)
    try:
        projection_stats(conv_run)
        err = capsys.readouterr().err
        # the bar is drawn at 0/2 at once; later redraws depend on timing (tqdm's mininterval)
        assert "checkpoints" in err and "0/2" in err
        set_quiet(True)
        projection_stats(conv_run)
        assert capsys.readouterr().err == ""
    finally:
        set_quiet(True)


# ------------------------------------------------------------------------------------------------ repr
def test_result_reprs_are_short():
    from relugeom.regions.segment import regions_on_segment
    from relugeom.regions.slice import partition_2d

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)).double()
    x = torch.randn(3, 6, dtype=torch.float64)
    P = partition_2d(net, x[0], x[1] - x[0], x[2] - x[0], None)
    assert len(P.polygons) > 100
    text = repr(P)
    # the generated dataclass repr would print every vertex of every polygon
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = len(str(P.polygons)) + len(str(P.patterns))
    assert len(text) < 700 < full
    assert f"n_regions={len(np.unique(P.region))}" in text and f"polygons=[{len(P.polygons)} items" in text
    S = regions_on_segment(net, x[0], x[1])
    assert len(repr(S)) < 400 and f"pieces=DataFrame({len(S.pieces)} rows" in repr(S)


def test_tangent_bound_repr_is_short_and_keeps_the_numbers():
    from relugeom.measures.tangent_bound import tangent_sensitivity_bound

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 3, bias=False))
    b = tangent_sensitivity_bound(net, (torch.randn(2000, 4), torch.zeros(2000, dtype=torch.long)))
    assert b.active_counts.size == 2000
    full = len(np.array2string(b.active_counts, threshold=10**9))  # what a repr listing every sample prints
    text = repr(b)
    assert len(text) < 400 < full
    assert "active_counts=ndarray(shape=(2000,)" in text and f"n_params={b.n_params}" in text


def _public_dataclasses():
    import dataclasses
    import importlib
    import pkgutil

    import relugeom

    for info in pkgutil.walk_packages(relugeom.__path__, "relugeom."):
        if info.name.endswith("__main__") or ".cli" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == info.name
                    and not name.startswith("_")):  # fmt: skip
                yield obj


def test_every_result_dataclass_holding_data_has_the_short_repr():
    """A dataclass with a field that can hold data of any size (an array, tensor, table or list) must not use
    the generated repr, which prints all of it (a Partition2D printed 310,000 characters)."""
    import dataclasses
    import re

    from relugeom._repr import short_repr

    sized = re.compile(r"ndarray|Tensor|DataFrame|Series|list\[|dict\[|Mapping|Sequence")
    settings = {"TrainConfig"}  # options the user wrote (a few JSON values): shown in full on purpose
    found, long_repr = 0, []
    for cls in _public_dataclasses():
        if cls.__name__ in settings:
            continue
        fields = [f for f in dataclasses.fields(cls) if f.repr and sized.search(str(f.type))]
        if fields:
            found += 1
            if cls.__repr__ is not short_repr:
                long_repr.append(f"{cls.__module__}.{cls.__qualname__} ({', '.join(f.name for f in fields)})")
    assert found > 10, found  # the walk did find the result classes
    assert not long_repr, long_repr
