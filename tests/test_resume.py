"""Resume: a run killed with SIGKILL mid-epoch and resumed ends bitwise equal to an uninterrupted run."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from _cli import exit_code
from relugeom import checkpoint_series, load_checkpoint
from relugeom.errors import RelugeomError
from relugeom.experiments.train import TrainConfig, resume, train

# vgg9 has dropout (global RNG), digits with augment=True has random shifts (data generator)
CONFIG = dict(arch="vgg9", dataset="digits", epochs=3, batch_size=32, seed=5, n_train=160, augment=True,
              model_kwargs={"hidden": 16})

SCRIPT = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from relugeom.experiments import data as D
    from relugeom.experiments.train import TrainConfig, train

    marker, out = sys.argv[1], sys.argv[2]
    orig, calls = D.Batches.__iter__, [0]

    def slow(self):
        if self.shuffle:
            calls[0] += 1
        for i, b in enumerate(orig(self)):
            if self.shuffle and calls[0] == 2 and i == 2:   # in the middle of epoch 2
                open(marker, "w").close()
                time.sleep(120)
            yield b

    D.Batches.__iter__ = slow
    train(TrainConfig(**CONFIG), out)
""").replace("CONFIG", repr(CONFIG))




def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(tmp_path):
    killed, marker = tmp_path / "killed", tmp_path / "marker"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RELUGEOM_QUIET": "1"}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(marker), str(killed)], env=env)
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, "the training subprocess ended before it was killed"
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    # nothing partial under a final name: epochs 0 and 1 only, each loadable
    assert [e.epoch for e in checkpoint_series(killed)] == [0, 1]
    for f in (killed / "checkpoints").iterdir():
        if not f.name.startswith("."):
            load_checkpoint(f)
    assert exit_code(["-q", "train", "--resume", str(killed)]) == 0

    torch.set_num_threads(1)
    train(TrainConfig(**CONFIG), tmp_path / "straight")
    for e in range(4):
        a = load_checkpoint(killed / "checkpoints" / f"epoch_{e:04d}.pt").state_dict
        b = load_checkpoint(tmp_path / "straight" / "checkpoints" / f"epoch_{e:04d}.pt").state_dict
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"epoch {e} {k} differs after resume"
    import pandas as pd

    ma, mb = pd.read_csv(killed / "metrics.csv"), pd.read_csv(tmp_path / "straight" / "metrics.csv")
    pd.testing.assert_frame_equal(ma.drop(columns="seconds"), mb.drop(columns="seconds"))


def test_resume_refuses_finished_and_foreign_folders(tmp_path, capsys):
    cfg = TrainConfig(arch="lenet", dataset="digits", epochs=1, batch_size=64, n_train=64)
    train(cfg, tmp_path / "run")
    with pytest.raises(RelugeomError, match="already finished epoch 1 of 1"):
        resume(tmp_path / "run")
    (tmp_path / "foreign").mkdir()
    assert exit_code(["train", "--resume", str(tmp_path / "foreign")]) == 1
    assert "no config.json" in capsys.readouterr().err
    assert exit_code(["train", "--resume", str(tmp_path / "run"), "--arch", "vgg9"]) == 2  # config is the run's own
    # extending a finished run continues it: 2 epochs from resume equal 2 straight epochs
    resume(tmp_path / "run", epochs=2)
    train(TrainConfig(**{**cfg.__dict__, "epochs": 2}), tmp_path / "two")
    a = load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_0002.pt").state_dict
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "epoch_0002.pt").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
