"""Hostile and careless input: every case is built here, and each must cost one clear line and exit 1 or 2
(never 70, "a bug in relugeom"), and lose nothing (files that were there stay byte-identical, every finished
epoch stays present). Real processes where it matters: two concurrent `train`s, SIGKILL at the commit point,
Ctrl-C while torch is loading."""

import os
import pickle
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from _cli import run
from relugeom import Run, checkpoint_series, load_checkpoint, projection_stats, save_checkpoint
from relugeom.checkpoints import epoch_from_name
from relugeom.errors import CheckpointError, RelugeomError, RelugeomWarning, SkippedWarning
from relugeom.experiments.train import TrainConfig, train

TINY = dict(arch="lenet", dataset="digits", batch_size=64, n_train=64)
TINY_ARGS = ["--arch", "lenet", "--dataset", "digits", "--batch-size", "64", "--n-train", "64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "RELUGEOM_QUIET": "1"}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def cli_error(argv, capsys, code=1):
    """Run ``relugeom argv`` in-process; it must exit ``code`` with one error line (usage errors: click's block)."""
    got, out, err = run(argv, capsys)
    assert got == code, (got, err)
    assert "internal error" not in err and "bug in relugeom" not in err
    if code == 1:
        return one_line(err)
    return err


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "lenet"
    train(TrainConfig(**TINY, epochs=2, seed=1), out)
    return out


# ------------------------------------------------------------------------------------------ never destroy
def test_demo_never_touches_a_foreign_run_folder(tmp_path, capsys):
    foreign = tmp_path / "run"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model": "my own project"}')
    (foreign / "weights.bin").write_bytes(os.urandom(100))
    before = snapshot(tmp_path)
    for extra in ([], ["--overwrite"]):
        line = cli_error(["demo", "--out", str(tmp_path), "--epochs", "1", *extra], capsys)
        assert "not a relugeom run" in line and "nothing was touched" in line
        assert snapshot(tmp_path) == before


def test_demo_refuses_an_earlier_demo_unless_overwrite(tmp_path, capsys, lenet_run):
    import shutil

    shutil.copytree(lenet_run, tmp_path / "run")
    before = snapshot(tmp_path)
    line = cli_error(["demo", "--out", str(tmp_path), "--epochs", "1"], capsys)
    assert "already holds a relugeom demo" in line and "--overwrite" in line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("present", ["config.json", "metrics.csv", "resume.pt", "checkpoints"])
def test_train_refuses_a_folder_with_any_run_file(tmp_path, capsys, present):
    out = tmp_path / "run"
    out.mkdir()
    if present == "checkpoints":
        (out / "checkpoints").mkdir()
        (out / "checkpoints" / "mine.pt").write_bytes(b"precious")
    else:
        (out / present).write_bytes(b"precious " + present.encode())
    before = snapshot(out)
    line = cli_error(["train", *TINY_ARGS, "--epochs", "1", "--out", str(out)], capsys)
    assert str(out) in line and ("already holds a run" in line or "never finished an epoch" in line)
    with pytest.raises(RelugeomError):
        train(TrainConfig(**TINY, epochs=1), out)  # the Python API refuses too
    assert snapshot(out) == before


def test_a_folder_with_only_config_json_is_reported_and_resumable(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(RelugeomError, match="diverged at epoch 0"):  # a run that dies before its first epoch
        train(TrainConfig(**TINY, epochs=2, lr=1e-3, model_kwargs={}), out, data=_nan_digits())
    assert [p.name for p in Run(out).run_files()] == ["config.json"]
    line = cli_error(["train", *TINY_ARGS, "--epochs", "2", "--out", str(out)], capsys)
    assert "never finished an epoch" in line and f"--resume {out}" in line
    code, _, err = run(["train", "--resume", str(out)], capsys)  # resumed = started again with its config
    assert code == 0 and "starting the run again" in err
    assert [e.epoch for e in checkpoint_series(out)] == [0, 1, 2] and list(Run(out).metrics().epoch) == [0, 1, 2]


def _nan_digits():
    from relugeom.experiments.train import prepare_data

    data = prepare_data(TrainConfig(**TINY, epochs=1))
    data.train.x[:] = float("nan")
    return data


# ------------------------------------------------------------------------------------------ one writer
HOLD = textwrap.dedent("""
    import sys, time
    from relugeom import Run
    Run(sys.argv[1]).lock().acquire()
    print("locked", flush=True)
    time.sleep(300)
""")


def test_a_locked_run_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = cli_error(["train", *TINY_ARGS, "--epochs", "1", "--out", str(out)], capsys)
        assert f"PID {holder.pid}" in line and "another relugeom process" in line
        assert not Run(out).run_files()
        holder.kill()
        holder.wait(30)
    finally:
        if holder.poll() is None:
            holder.kill()
    code, _, err = run(["train", *TINY_ARGS, "--epochs", "1", "--out", str(out)], capsys)
    assert code == 0 and f"took over the lock left by process {holder.pid}" in err


def test_two_concurrent_trains_on_one_folder_leave_one_whole_run(tmp_path):
    out = tmp_path / "run"
    cmds = [[sys.executable, "-m", "relugeom", "-q", "train", *TINY_ARGS, "--epochs", "3", "--seed", str(seed),
             "--out", str(out)] for seed in (11, 22)]  # fmt: skip
    procs = [subprocess.Popen(c, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p.returncode, *p.communicate(timeout=300)) for p in procs]
    results = [(p.returncode, out, err) for p, (_, out, err) in zip(procs, results)]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 1], results
    winner = 11 if results[0][0] == 0 else 22
    loser_err = next(r[2] for r in results if r[0] == 1)
    line = one_line(loser_err)
    assert "another relugeom process (PID" in line or "already holds a run" in line
    # no chimera: config, every checkpoint and every metrics row are the winner's
    run_ = Run(out)
    assert run_.config["seed"] == winner
    series = checkpoint_series(out)
    assert [e.epoch for e in series] == [0, 1, 2, 3] and {e.meta["seed"] for e in series} == {winner}
    metrics = run_.metrics()
    for e in series:
        assert e.meta["train_loss"] == pytest.approx(metrics.set_index("epoch").train_loss[e.epoch])


# ------------------------------------------------------------------------------------------ commit point
KILL = textwrap.dedent("""
    import os, signal, sys, torch
    torch.set_num_threads(1)
    import relugeom.checkpoints as C
    from relugeom.experiments.train import TrainConfig, train

    out, where = sys.argv[1], sys.argv[2]
    save, write = C.save_checkpoint, C.atomic_write

    def kill():
        os.kill(os.getpid(), signal.SIGKILL)

    def save_checkpoint(path, sd, meta=None, extra=None):
        if os.path.basename(path) == "resume.pt" and meta["epoch"] == 2:
            if where == "before-resume":        # checkpoint and metrics row of epoch 2 written, resume.pt not
                kill()
            if where == "inside-resume":        # resume.pt half-written into its temporary file
                def half(f):
                    f.write(b"PK\\x03\\x04 half a zip")
                    f.flush()
                    kill()
                C.atomic_write(path, half)
        return save(path, sd, meta, extra)

    def atomic_write(path, fn):
        if where == "before-metrics" and os.path.basename(path) == "metrics.csv" and os.path.exists(
                os.path.join(os.path.dirname(path), "checkpoints", "epoch_0002.pt")):
            kill()
        return write(path, fn)

    C.save_checkpoint, C.atomic_write = save_checkpoint, atomic_write
    train(TrainConfig(arch="lenet", dataset="digits", batch_size=64, n_train=64, epochs=3, seed=5), out)
""")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("straight") / "run"
    train(TrainConfig(**TINY, epochs=3, seed=5), out)
    return out


@pytest.mark.parametrize("where", ["before-resume", "inside-resume"])
def test_sigkill_at_the_commit_point_then_resume_loses_no_metrics_row(tmp_path, capsys, straight, where):
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "-c", KILL, str(out), where], env=ENV, capture_output=True, text=True,
                       timeout=300)  # fmt: skip
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert Run(out).committed_epoch() == 1  # epoch 2 never committed
    if where == "inside-resume":
        assert any(f.name.startswith(".resume.pt.tmp-") for f in out.iterdir())
    torch.set_num_threads(1)
    code, _, err = run(["-q", "train", "--resume", str(out)], capsys)
    assert code == 0, err
    assert not [f.name for f in out.rglob(".*.tmp-*")]  # stale temporary files removed
    got, want = Run(out).metrics(), Run(straight).metrics()
    assert list(got.epoch) == [0, 1, 2, 3]
    pd.testing.assert_frame_equal(got.drop(columns="seconds"), want.drop(columns="seconds"))
    for e in range(4):
        a = load_checkpoint(Run(out).checkpoint_path(e)).state_dict
        b = load_checkpoint(Run(straight).checkpoint_path(e)).state_dict
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("epoch", [-2, 7])
def test_a_crafted_resume_epoch_is_refused_and_nothing_is_overwritten(tmp_path, capsys, lenet_run, epoch):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(lenet_run, out)
    ck = load_checkpoint(out / "resume.pt", mmap=False)
    save_checkpoint(out / "resume.pt", ck.state_dict, ck.meta, extra={**ck.extra, "epoch": epoch})
    before = snapshot(out)
    line = cli_error(["train", "--resume", str(out), "--epochs", "4"], capsys)
    assert "resume.pt" in line and ("not a finished epoch" in line or "missing" in line)
    assert snapshot(out) == before


# ------------------------------------------------------------------------------------------ runs stay distinct
def test_two_runs_with_the_same_folder_name_stay_apart_and_duplicates_count_once(tmp_path, lenet_run):
    import shutil

    for seed_dir in ("seedA", "seedB"):
        shutil.copytree(lenet_run, tmp_path / seed_dir / "run")
    alone = projection_stats(lenet_run)
    both = projection_stats([tmp_path / "seedA" / "run", tmp_path / "seedB" / "run"])
    assert sorted(both.run.unique()) == ["seedA/run", "seedB/run"]
    for _, part in both.groupby("run"):
        pd.testing.assert_series_equal(part.cos.reset_index(drop=True), alone.cos.reset_index(drop=True),
                                       check_names=False)  # fmt: skip
    with pytest.warns(RelugeomWarning, match="given twice"):
        twice = projection_stats([lenet_run, str(lenet_run) + "/"])
    assert len(twice) == len(alone)


def test_stats_cli_keeps_runs_with_one_name_apart(tmp_path, capsys, lenet_run):
    import shutil

    for seed_dir in ("seedA", "seedB"):
        shutil.copytree(lenet_run, tmp_path / seed_dir / "run")
    code, _, _ = run(["stats", str(tmp_path / "seedA" / "run"), str(tmp_path / "seedB" / "run"),
                      "--out", str(tmp_path / "o")], capsys)  # fmt: skip
    assert code == 0
    layers = pd.read_csv(tmp_path / "o" / "layers.csv")
    single = layers[layers.run == "seedA/run"]
    assert set(layers.run) == {"seedA/run", "seedB/run"} and len(layers) == 2 * len(single)
    # n_filters is a layer's own filter count, never the sum over the two runs
    sd = load_checkpoint(lenet_run / "checkpoints" / "epoch_0000.pt").state_dict
    convs = [v.shape[0] for k, v in sd.items() if k.endswith("weight") and v.ndim == 4]
    assert list(single[single.epoch == 0].n_filters) == convs


# ------------------------------------------------------------------------------------------ epochs from names
def test_epochs_from_names_are_whole_tokens_and_the_last_match(tmp_path):
    assert epoch_from_name(Path("convnet_lr1e-3_epoch7.pt")) == 7
    assert epoch_from_name(Path("step1000_ep3.pt")) == 3
    assert epoch_from_name(Path("epoch2_finetune_epoch5.pth")) == 5
    assert epoch_from_name(Path("deep_model_ep12.ckpt")) == 12
    sd = {"conv.weight": torch.randn(2, 1, 3, 3)}
    for e in (0, 1, 2, 10):
        torch.save(sd, tmp_path / f"convnet_lr1e-3_epoch{e}.pt")
    with pytest.warns(RelugeomWarning, match="read from their names"):
        assert [e.epoch for e in checkpoint_series(tmp_path)] == [0, 1, 2, 10]


def test_repeated_or_ambiguous_name_epochs_are_ordered_by_name_with_a_warning(tmp_path):
    sd = {"conv.weight": torch.randn(2, 1, 3, 3)}
    names = ["run3_ckpt_10.pt", "run3_ckpt_2.pt", "run3_ckpt_1.pt"]  # several numbers, no 'epoch' token
    for n in names:
        torch.save(sd, tmp_path / n)
    with pytest.warns(RelugeomWarning, match="name order"):
        series = checkpoint_series(tmp_path)
    assert [e.path.name for e in series] == ["run3_ckpt_1.pt", "run3_ckpt_2.pt", "run3_ckpt_10.pt"]
    assert [e.epoch for e in series] == [0, 1, 2]


# ------------------------------------------------------------------------------------------ non-finite training
def test_divergence_stops_naming_the_epoch_and_records_no_nan_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    import re

    line = cli_error(["train", *TINY_ARGS, "--epochs", "4", "--lr", "1e6", "--out", str(out)], capsys)
    m = re.search(r"diverged at epoch (\d+) \(non-finite weights in features", line)
    bad = int(m.group(1))
    assert bad >= 1 and f"epoch {bad} was not recorded" in line
    run_ = Run(out)  # every finished epoch is there, finite; the diverged one is nowhere
    assert list(run_.checkpoint_epochs()) == list(range(bad)) and run_.committed_epoch() == bad - 1
    assert list(run_.metrics().epoch) == list(range(bad))
    for e in range(bad):
        sd = load_checkpoint(run_.checkpoint_path(e)).state_dict
        assert all(bool(torch.isfinite(t).all()) for t in sd.values())


@pytest.mark.parametrize("lr", ["nan", "inf", "-1"])
def test_impossible_learning_rates_are_usage_errors(tmp_path, capsys, lr):
    err = cli_error(["train", *TINY_ARGS, "--epochs", "1", "--lr", lr, "--out", str(tmp_path / "r")], capsys, 2)
    assert "--lr" in err and not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------ hostile checkpoints
def _rezip(src: Path, dst: Path, edit) -> None:
    """Copy a torch zip checkpoint, letting ``edit(name, bytes)`` change records (CRCs stay valid)."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in z.infolist():
            out.writestr(info.filename, edit(info.filename, z.read(info)))


def test_a_record_shorter_than_declared_is_refused_not_mapped_as_garbage(tmp_path):
    torch.save({"w": torch.arange(10, dtype=torch.float32)}, tmp_path / "ok.pt")
    # the pickle now declares 64 floats for a record of 10: mmap would read 54 floats of whatever follows
    _rezip(tmp_path / "ok.pt", tmp_path / "short.pt",
           lambda n, b: b.replace(b"K\n", b"K@") if n.endswith("data.pkl") else b)  # fmt: skip
    assert torch.load(tmp_path / "short.pt", mmap=True, weights_only=True)["w"].shape == (64,)  # torch: garbage
    with pytest.raises(CheckpointError, match=r"short\.pt: tensor record data/0 holds 40 bytes where its pickle "
                                              r"declares 256"):  # fmt: skip
        load_checkpoint(tmp_path / "short.pt")


def test_verify_checks_every_record_crc(tmp_path):
    save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(1000)}, {"epoch": 1})
    data = bytearray((tmp_path / "c.pt").read_bytes())
    data[data.find(b"\x00\x00\x80\x3f") + 2] ^= 0x01  # one bit of one weight, on a disk one does not trust
    (tmp_path / "c.pt").write_bytes(bytes(data))
    assert float(load_checkpoint(tmp_path / "c.pt").state_dict["w"].sum()) != 1000  # loads, silently wrong
    with pytest.raises(CheckpointError, match=r"c\.pt: record .*data/0 fails its CRC-32 check"):
        load_checkpoint(tmp_path / "c.pt", verify=True)


def test_an_expanded_view_larger_than_its_storage_is_refused_before_it_is_used(tmp_path):
    torch.save({"w": torch.ones(1).expand(2**40)}, tmp_path / "bomb.pt")  # 4 TB once materialised
    assert (tmp_path / "bomb.pt").stat().st_size < 4096
    with pytest.raises(CheckpointError, match=r"bomb\.pt: tensor 'w' is an expanded view of 1099511627776 elements"):
        load_checkpoint(tmp_path / "bomb.pt")


@pytest.mark.parametrize("bad, match", [
    ({"conv.weight": torch.ones(2, 1, 3, 3, dtype=torch.int64)}, "has dtype int64"),
    ({"conv.weight": torch.ones(2, 1, 3, 3, dtype=torch.bool)}, "has dtype bool"),
    ({"conv.weight": torch.ones(2, 1, 3, 3, dtype=torch.complex64)}, "has dtype complex64"),
    ({"relugeom": 1, "state_dict": {"conv.weight": torch.ones(2, 1, 3, 3)}, "meta": [1, 2]}, "metadata is a list"),
    ({"relugeom": 1, "state_dict": {"conv.weight": torch.ones(2, 1, 3, 3)}, "meta": {"epoch": float("nan")}},
     "epoch = nan"),
    ({"relugeom": 1, "state_dict": {"conv.weight": torch.ones(2, 1, 3, 3)}, "meta": {"epoch": "3"}}, "epoch = '3'"),
])  # fmt: skip
def test_bad_contents_name_the_file_and_a_series_skips_only_that_file(tmp_path, capsys, lenet_run, bad, match):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(lenet_run, out)
    torch.save(bad, out / "checkpoints" / "epoch_0001.pt")
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(out / "checkpoints" / "epoch_0001.pt")
    assert "epoch_0001.pt" in str(e.value)
    code, _, err = run(["stats", str(out), "--out", str(tmp_path / "o")], capsys)
    assert code == 3 and "epoch_0001.pt" in err and "skipped" in err  # the rest of the series is analysed
    assert sorted(pd.read_csv(tmp_path / "o" / "layers.csv").epoch.unique()) == [0, 2]


def test_special_files_random_bytes_and_non_utf8_names(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    result = {}

    def load():
        try:
            load_checkpoint(fifo)
        except CheckpointError as e:
            result["err"] = str(e)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "loading a FIFO blocked"
    assert "is a FIFO" in result["err"]
    with pytest.raises(CheckpointError, match="is a device"):
        load_checkpoint("/dev/zero")
    (tmp_path / "random.pt").write_bytes(b"\x00" + np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"random\.pt: not a checkpoint") as e:
        load_checkpoint(tmp_path / "random.pt")
    assert "run or import code" not in str(e.value)
    name = os.fsdecode(b"epoch_\xff\xfe.pt")
    try:
        save_checkpoint(tmp_path / name, {"w": torch.arange(3.0)}, {"epoch": 4})
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses names that are not valid UTF-8")
    ck = load_checkpoint(tmp_path / name)
    assert ck.epoch == 4 and torch.equal(ck.state_dict["w"], torch.arange(3.0))


# ------------------------------------------------------------------------------------------ one line, exit 1 or 2
def test_a_folder_where_an_output_file_goes(tmp_path, capsys, lenet_run):
    (tmp_path / "o" / "filters.csv").mkdir(parents=True)
    line = cli_error(["stats", str(lenet_run), "--out", str(tmp_path / "o")], capsys)
    assert "filters.csv: is a folder" in line


def test_out_that_is_a_file_or_unwritable_is_refused_before_computing(tmp_path, capsys, lenet_run):
    (tmp_path / "file").write_text("x")
    err = cli_error(["stats", str(lenet_run), "--out", str(tmp_path / "file")], capsys, 2)  # click says so
    assert "is a file" in err and (tmp_path / "file").read_text() == "x"
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(ro)]).returncode != 0:
            pytest.skip("root without mount: no read-only folder to test")
    else:
        ro.chmod(0o555)
    try:
        t0 = time.perf_counter()
        line = cli_error(["train", *TINY_ARGS, "--epochs", "1", "--out", str(ro / "run")], capsys)
        assert "cannot write" in line and ("Read-only" in line or "Permission denied" in line)
        line = cli_error(["stats", str(lenet_run), "--out", str(ro / "s")], capsys)
        assert "cannot write" in line and time.perf_counter() - t0 < 60
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)])
        else:
            ro.chmod(0o755)


FULL = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))   # files past 20 KB fail, as on a full disk
    from relugeom.cli import main
    main(sys.argv[1:])
""")


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    pytest.importorskip("resource")
    p = subprocess.run([sys.executable, "-c", FULL, "-q", "train", *TINY_ARGS, "--epochs", "1", "--out",
                        str(tmp_path / "run")], env=ENV, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 1, p.stderr
    line = one_line(p.stderr)
    assert "cannot write" in line and "epoch_0000.pt" in line and "inline_container" not in line


@pytest.mark.parametrize("argv, hint", [
    (["train", *TINY_ARGS, "--epochs", "1", "--schedule", "step:0:0.1"], "--schedule"),
    (["train", *TINY_ARGS, "--epochs", "1", "--image-size", "100000"], "--image-size"),
    (["train", *TINY_ARGS, "--epochs", "1", "--seed", str(10**30)], "--seed"),
    (["demo", "--seed", "-1"], "--seed"),
])  # fmt: skip
def test_bad_option_values_are_usage_errors(tmp_path, capsys, argv, hint):
    err = cli_error([*argv, "--out", str(tmp_path / "o")], capsys, 2)
    assert hint in err and not (tmp_path / "o").exists()


def test_input_shape_errors_are_usage_errors(tmp_path, capsys, lenet_run):
    for shape in ("1,x,8", "1,4096,4096", "3,8,8"):
        err = cli_error(["cones", str(lenet_run), "--input-shape", shape, "--out", str(tmp_path / "o")], capsys, 2)
        assert "--input-shape" in err
    for shape, match in (("1,4096,4096", "more than the 2^20"), ("3,8,8", "does not fit")):
        err = cli_error(["regions", "segment", str(lenet_run), "--input-shape", shape, "--out", str(tmp_path / "o")],
                        capsys, 2)  # fmt: skip
        assert "--input-shape" in err and match in err


def test_stats_on_an_mlp_says_so_and_suggests_linear(tmp_path, capsys):
    train(TrainConfig(arch="mlp", dataset="digits", epochs=1, batch_size=64, n_train=64), tmp_path / "mlp")
    line = cli_error(["stats", str(tmp_path / "mlp"), "--out", str(tmp_path / "o")], capsys)
    assert "no conv layers" in line and "--linear" in line
    code, _, _ = run(["stats", str(tmp_path / "mlp"), "--linear", "--out", str(tmp_path / "o")], capsys)
    assert code == 0


def test_points_files_that_are_pickles(tmp_path, capsys, lenet_run):
    with open(tmp_path / "points.pt", "wb") as f:
        pickle.dump({"x": [[1.0, 2.0]]}, f, protocol=4)
    np.save(tmp_path / "points.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for name, match in (("points.pt", "not a PyTorch checkpoint"), ("points.npy", "a pickle")):
        line = cli_error(["regions", "segment", str(lenet_run), "--points", str(tmp_path / name), "--out",
                          str(tmp_path / "o")], capsys)  # fmt: skip
        assert name in line and match in line


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels: a few dozen bytes that would decode to gigabytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def test_a_decompression_bomb_in_an_image_folder(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            d = tmp_path / "data" / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (12, 12), (i * 40, 0, 0)).save(d / f"{i}.png")
    (tmp_path / "data" / "val" / "b" / "bomb.png").write_bytes(_png_header(40000, 40000))
    line = cli_error(["train", "--arch", "lenet", "--dataset", "folder", "--data-dir", str(tmp_path / "data"),
                      "--image-size", "8", "--epochs", "1", "--out", str(tmp_path / "run")], capsys)  # fmt: skip
    assert "bomb.png" in line and "decompression bomb" in line


def _cifar(folder: Path, data: np.ndarray, labels: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f)


@pytest.mark.parametrize("data, labels, match", [
    (np.zeros((4, 3000), np.uint8), [0, 1, 2, 3], r"of shape \(4, 3000\)"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2, 10], "labels run from 0 to 10, outside 0..9"),
    (np.zeros((4, 3072), np.uint8), [0, 1, 2], "3 labels for 4 images"),
])  # fmt: skip
def test_bad_cifar_batches(tmp_path, capsys, data, labels, match):
    _cifar(tmp_path / "cifar-10-batches-py", data, labels)
    line = cli_error(["train", "--arch", "lenet", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--epochs", "1",
                      "--out", str(tmp_path / "run")], capsys)  # fmt: skip
    assert "data_batch_1" in line
    import re

    assert re.search(match, line), line


def test_ctrl_c_while_torch_loads_is_one_line(tmp_path):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see when torch is loading")
    p = subprocess.Popen([sys.executable, "-m", "relugeom", "stats", str(tmp_path / "x.pt")], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    maps = Path(f"/proc/{p.pid}/maps")
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        try:
            if "libtorch" in maps.read_text():
                break
        except OSError:
            pass
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and one_line(err) == "interrupted"


def test_regions_formula_budget_bounds_all_the_work(capsys):
    from relugeom.regions.formulas import cnn_max_regions

    t0 = time.perf_counter()
    # past the budget, the exact value gives way to certified bounds (exit 0), the whole run still bounded in time
    code, out, err = run(["regions", "formula", "--input", "3,224,224", "--kernel", "3", "--filters", "64",
                          "--budget", "20000"], capsys)  # fmt: skip
    assert code == 0 and "more than 20000 steps" in err and "certified bounds instead" in err
    assert "theorem1_lower_bound" in out and "theorem1_upper_bound" in out and time.perf_counter() - t0 < 60
    # the published value is printed although its exact cross-check is out of budget
    code, out, _ = run(["regions", "formula", "--input", "1,5,5", "--kernel", "3", "--filters", "2", "--budget",
                        "500"], capsys)  # fmt: skip
    literal = cnn_max_regions((1, 5, 5), 3, 1, 2, method="literal", budget=10**8, warn_caveat=False)
    assert code == 0 and str(literal) in out and "not computed" in out
    code, out, _ = run(["regions", "formula", "--input", "1,5,5", "--kernel", "3", "--filters", "2", "--no-exact"],
                       capsys)  # fmt: skip
    assert code == 0 and str(literal) in out and "exact_count" not in out


def test_readme_lists_every_exit_code():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("Exit codes"):]
    for code in ("`0`", "`1`", "`2`", "`3`", "`70`", "`130`"):
        assert code in section[:1200], code


def test_skipped_warning_category_for_series(tmp_path):
    # a series of one good and one random file: the random one is skipped (exit 3 on the CLI), not fatal
    save_checkpoint(tmp_path / "a.pt", {"c.weight": torch.ones(2, 1, 3, 3)}, {"epoch": 0})
    (tmp_path / "b.pt").write_bytes(b"\x00" + np.random.default_rng(1).bytes(64))
    with pytest.warns(SkippedWarning, match=r"b\.pt: not a checkpoint"):
        assert [e.epoch for e in checkpoint_series(tmp_path)] == [0]
