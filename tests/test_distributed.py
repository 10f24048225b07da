"""DDP under torchrun: 2 CPU processes (gloo) match one process with the same global batch."""

import os
import socket
import subprocess
import sys

import torch

from relugeom import load_checkpoint
from relugeom.experiments.train import TrainConfig, train


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_one_process(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RELUGEOM_QUIET": "1"}
    # 99 samples in batches of 32: the last batch (3) splits 2/1 over the ranks (ragged on purpose)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           f"--master_port={free_port()}", "-m", "relugeom", "-q", "train", "--arch", "lenet",
           "--dataset", "digits", "--epochs", "2", "--n-train", "99", "--batch-size", "32", "--seed", "4",
           "--no-augment", "--out", str(out)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list(out.glob("**/.*tmp*"))
    torch.set_num_threads(1)
    single = train(TrainConfig(arch="lenet", dataset="digits", epochs=2, n_train=99, batch_size=32, seed=4,
                               augment=False), tmp_path / "one")
    for e in (1, 2):
        a = load_checkpoint(out / "checkpoints" / f"epoch_{e:04d}.pt")
        b = load_checkpoint(tmp_path / "one" / "checkpoints" / f"epoch_{e:04d}.pt")
        for k in b.state_dict:
            torch.testing.assert_close(a.state_dict[k], b.state_dict[k], atol=2e-5, rtol=1e-4)
        assert abs(a.meta["train_loss"] - single.train_loss[e]) < 1e-4
        assert a.meta["val_acc"] == single.val_acc[e] or abs(a.meta["val_acc"] - single.val_acc[e]) < 0.02
    # the weights moved, so the comparison is not between two initialisations
    w0 = load_checkpoint(tmp_path / "one" / "checkpoints" / "epoch_0000.pt").state_dict["features.0.weight"]
    assert (w0 - b.state_dict["features.0.weight"]).abs().max() > 1e-3
