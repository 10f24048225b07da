"""`relugeom train` prints one line per epoch as it goes (for nohup and batch schedulers): read from a pipe
while the process still runs, and the n_l on each line against the checkpoint's own weights."""

import re
import subprocess
import sys

import numpy as np

from _tinynet import n_l_brute
from relugeom import load_checkpoint


def test_train_prints_a_flushed_line_per_epoch(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "relugeom", "-q", "train", "--arch", "lenet", "--dataset", "digits", "--epochs", "2",
           "--n-train", "200", "--batch-size", "50", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # epoch 0 (the initialization), written before any training
    still_running = proc.poll() is None
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert first.startswith("epoch 0/2"), first
    assert still_running, "the first line arrived only when the process ended: stdout is not flushed per epoch"
    lines = [first] + [ln for ln in rest.splitlines() if ln.startswith("epoch ")]
    assert [int(re.match(r"epoch (\d+)/2", ln).group(1)) for ln in lines] == [0, 1, 2]
    for ln in lines:
        e = int(re.match(r"epoch (\d+)", ln).group(1))
        sd = load_checkpoint(out / "checkpoints" / f"epoch_{e:04d}.pt").state_dict
        nl = [n_l_brute(v) for k, v in sd.items() if k.endswith("weight") and v.dim() == 4]
        lo, mean, hi = (float(v) for v in re.search(r"n_l min/mean/max ([\d.]+)/([\d.]+)/([\d.]+)", ln).groups())
        assert (lo, mean, hi) == (round(min(nl), 2), round(float(np.mean(nl)), 2), round(max(nl), 2)), ln
        assert f"({len(nl)} layers)" in ln
    assert "train loss" in lines[1] and "val loss" in lines[1]
