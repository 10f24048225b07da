"""The Run object: a run folder's layout, its commit point, its lock, and what it returns for a real run."""

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import asdict

import pandas as pd
import pytest
import torch

from relugeom import Run, load_checkpoint, save_checkpoint
from relugeom.checkpoints import atomic_write_text
from relugeom.errors import CheckpointError, RelugeomError, RelugeomWarning, RunLockedError
from relugeom.experiments.train import TrainConfig, train
from relugeom.sources import dedupe_sources, run_labels

CFG = TrainConfig(arch="lenet", dataset="digits", epochs=5, batch_size=64, n_train=128, seed=7, schedule="step:2:0.1")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    return out, train(CFG, out)


def test_run_reads_what_train_wrote(trained):
    out, metrics = trained
    run = Run(out)
    assert run.is_run() and run.name == "r" and not run.foreign_files()
    assert run.config == asdict(CFG)
    assert run.data["name"] == "digits" and run.data["input_shape"] == [1, 8, 8] and run.data["n_train"] == 128
    # step:2:0.1 over 5 epochs: the rate drops after epochs 2 and 4 (the lr column says so independently)
    assert run.lr_drops == [2, 4]
    lr = metrics.set_index("epoch").lr
    assert [e for e in range(1, 5) if lr[e + 1] < lr[e]] == run.lr_drops
    assert [e.epoch for e in run.checkpoints()] == [0, 1, 2, 3, 4, 5] == list(run.checkpoint_epochs())
    assert run.committed_epoch() == 5
    pd.testing.assert_frame_equal(run.metrics(), metrics, check_dtype=False)
    for e in run.checkpoints():  # each checkpoint carries its own metrics row
        assert e.meta["val_acc"] == pytest.approx(metrics.val_acc[e.epoch])


def _commit(run, epoch, rows):
    row = {"epoch": epoch, "lr": 0.1, "train_loss": 1.0 / (epoch + 1), "train_acc": 0.5, "val_loss": 2.0,
           "val_acc": 0.25, "test_loss": 3.0, "test_acc": 0.125, "seconds": 0.5}
    rows.append(row)
    run.commit_epoch(epoch, {"w": torch.full((2,), float(epoch))}, row, rows, {"optimizer": {}})
    return row


def test_commit_point_is_resume_pt(tmp_path):
    run, rows = Run(tmp_path / "run"), []
    with run.lock():
        for e in range(3):
            _commit(run, e, rows)
        # a crash in epoch 3 after its checkpoint and metrics row, before resume.pt
        save_checkpoint(run.checkpoint_path(3), {"w": torch.full((2,), 3.0)}, {"epoch": 3})
        atomic_write_text(run.metrics_path, pd.DataFrame(rows + [{**rows[-1], "epoch": 3}]).to_csv(index=False))
    assert run.committed_epoch() == 2
    assert list(run.metrics().epoch) == [0, 1, 2]            # the uncommitted row is not part of the run
    assert list(run.metrics(upto=3).epoch) == [0, 1, 2, 3]
    assert float(load_checkpoint(run.resume_path).state_dict["w"][0]) == 2.0


def test_missing_metrics_rows_are_rebuilt_from_the_checkpoints(tmp_path):
    run, rows = Run(tmp_path), []
    with run.lock():
        written = [_commit(run, e, rows) for e in range(4)]
    table = pd.read_csv(run.metrics_path)
    atomic_write_text(run.metrics_path, table[table.epoch != 1].to_csv(index=False))  # a row lost by an old crash
    with pytest.warns(RelugeomWarning, match="rebuilt the rows of epoch"):
        got = run.metrics()
    pd.testing.assert_frame_equal(got, pd.DataFrame(written), check_dtype=False)


@pytest.mark.parametrize("epoch, match", [(-2, "not a finished epoch"), ("3", "not a finished epoch"),
                                          (True, "not a finished epoch"), (7, "epoch_0007.pt is missing")])
def test_resume_epoch_is_checked_against_the_checkpoints(tmp_path, epoch, match):
    run, rows = Run(tmp_path), []
    with run.lock():
        for e in range(2):
            _commit(run, e, rows)
    save_checkpoint(run.resume_path, {"w": torch.zeros(2)}, {}, extra={"epoch": epoch, "optimizer": {}})
    with pytest.raises(CheckpointError, match=match) as e:
        run.load_resume()
    assert "resume.pt" in str(e.value)


def test_stale_temporary_files_of_relugeom_only_are_removed(tmp_path):
    run, rows = Run(tmp_path), []
    with run.lock():
        _commit(run, 0, rows)
        stale = [tmp_path / ".resume.pt.tmp-ab12cd_3", tmp_path / "checkpoints" / ".epoch_0001.pt.tmp-zz9x8w7v",
                 tmp_path / ".metrics.csv.tmp-0a1b2c3d"]
        keep = [tmp_path / ".notes.txt.tmp-ab12cd34", tmp_path / "checkpoints" / ".model.pt.tmp-abcdefgh"]
        for p in stale + keep:
            p.write_bytes(b"x")
        assert sorted(run.remove_stale_temps()) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    run = Run(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            run.lock().acquire()
    with run.lock():  # released: free again, and no warning (it was released cleanly)
        pass


HOLD = textwrap.dedent("""
    import sys, time
    from relugeom import Run
    lock = Run(sys.argv[1]).lock().acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def test_lock_of_another_process_and_of_a_dead_one(tmp_path):
    run = Run(tmp_path / "run")
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run.path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"PID {proc.pid}\\b"):
            run.lock().acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.warns(RelugeomWarning, match=f"took over the lock left by process {proc.pid}"):
        lock = run.lock().acquire()
    lock.release()


def test_remove_deletes_a_pure_run_and_refuses_anything_else(tmp_path):
    run, rows = Run(tmp_path / "run"), []
    with run.lock():
        _commit(run, 0, rows)
        run.write_config({"config": {"arch": "lenet"}})
    (run.path / "notes.txt").write_text("mine")
    with pytest.raises(RelugeomError, match="notes.txt"):
        run.remove()
    assert (run.path / "notes.txt").read_text() == "mine" and run.resume_path.exists()
    (run.path / "notes.txt").unlink()
    run.remove()
    assert not run.path.exists()


def test_a_lock_that_created_the_folder_leaves_no_empty_folder(tmp_path):
    with Run(tmp_path / "new").lock():
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()


def test_run_labels_are_distinct_and_duplicates_warn(tmp_path):
    a, b = tmp_path / "seedA" / "run", tmp_path / "seedB" / "run"
    a.mkdir(parents=True), b.mkdir(parents=True)
    assert run_labels([a, b]) == ["seedA/run", "seedB/run"]
    assert run_labels([a]) == ["run"]
    os.symlink(a, tmp_path / "alias")
    with pytest.warns(RelugeomWarning, match="given twice"):
        assert dedupe_sources([str(a), b, tmp_path / "alias", str(a) + "/"]) == [str(a), b]


def test_read_config_names_a_foreign_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model": "resnet"}')
    with pytest.raises(CheckpointError, match="config.json: not a relugeom training config"):
        _ = Run(tmp_path).config
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not a relugeom"):
        _ = Run(tmp_path).lr_drops


def test_the_public_api_is_lazy_and_complete():
    import relugeom

    assert set(relugeom.__all__) == set(relugeom._MODULE_OF)
    for name in relugeom.__all__:  # every exported name resolves to an object defined where _EXPORTS says
        assert getattr(relugeom, name).__module__.startswith("relugeom")
    # `import relugeom` (and so the command's start-up, before its error handling) does not load torch
    code = "import sys, relugeom, relugeom.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
