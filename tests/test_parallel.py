"""Analyses beyond one process: every way of running the work items gives the same tables as a serial run in
memory; parts are reused only while the checkpoint and the options are unchanged; a killed parallel run resumes
with only the missing parts; bad checkpoints and raising jobs are reported with their file in every mode; the
Slurm path runs through submitit against stub sbatch/srun/sacct commands that record their arguments."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from _cli import run as cli
from relugeom import load_checkpoint, save_checkpoint
from relugeom.errors import SkippedWarning
from relugeom.experiments.train import TrainConfig, train
from relugeom.parallel import PART_SUFFIX, parse_shard, process_pool, shard_from_env, shard_items
from relugeom.sources import map_sources
from relugeom.stats.projection import projection_stats

submitit = pytest.importorskip("submitit", reason="submitit is not installed: pip install 'relugeom[cluster]'")
RELUGEOM = [sys.executable, "-m", "relugeom"]


@pytest.fixture(scope="module")
def lenet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("par") / "run"
    train(TrainConfig(arch="lenet", dataset="digits", epochs=4, batch_size=32, seed=2, n_train=300), out)
    return out


def tables(out: Path, names) -> dict[str, pd.DataFrame]:
    """The tables written into ``out``, sorted by their key columns."""
    found = {}
    for name in names:
        df = pd.read_csv(out / f"{name}.csv")
        keys = [c for c in ("run", "seed", "epoch", "layer_index", "filter", "prev_filter", "state", "measure",
                            "kind", "index", "stage") if c in df]  # fmt: skip
        found[name] = df.sort_values(keys, kind="stable").reset_index(drop=True)
    return found


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


def n_parts(folder: Path) -> int:
    return len(list(folder.glob(f"*{PART_SUFFIX}")))


# ------------------------------------------------------------------------------------------------ units
def test_shards_partition_the_items():
    for n_items in range(0, 9):
        for n in range(1, 5):
            got = sorted(i for k in range(n) for i in shard_items(n_items, (k, n)))
            assert got == list(range(n_items))
    assert parse_shard("1/3") == (1, 3)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "8"}) == (7, 8)
    assert shard_from_env({}) is None


def test_pool_splits_the_threads():
    with process_pool(2, threads=1) as ex:
        assert ex.submit(torch.get_num_threads).result() == 1
        assert ex.submit(os.getpid).result() != os.getpid()


# ------------------------------------------------------------------------------------------------ equal tables
def test_stats_every_mode_gives_the_serial_tables(lenet_run, tmp_path, capsys):
    """Serial, --jobs 2, submitit's local and debug executors, and two shards: equal tables, equal to an in-memory
    run of the library without parts."""
    names = ("filters", "layers")
    files = [str(lenet_run / "checkpoints" / f"epoch_{e:04d}.pt") for e in (0, 2, 4)]  # 3 jobs, 3 processes
    results = {}
    for mode, extra in {"serial": [], "jobs2": ["--jobs", "2"], "local": ["--executor", "submitit-local"],
                        "debug": ["--executor", "submitit-debug"]}.items():  # fmt: skip
        code, _, err = cli(["-q", "stats", *files, "--out", str(tmp_path / mode), *extra], capsys)
        assert code == 0, err
        assert "3 part(s) computed, 0 reused" in err
        results[mode] = tables(tmp_path / mode, names)
    code, _, err = cli(["-q", "stats", *files, "--out", str(tmp_path / "sh"), "--shard", "0/2"], capsys)
    assert code == 0 and "shard 0/2: 2 part(s) computed" in err and "no table was written" in err
    assert not (tmp_path / "sh" / "filters.csv").exists()
    code, _, err = cli(["-q", "stats", *files, "--out", str(tmp_path / "sh"), "--shard", "1/2"], capsys)
    assert code == 0 and "1 part(s) computed, 2 reused" in err, err
    results["shards"] = tables(tmp_path / "sh", names)
    for mode in results:
        assert_same(results["serial"], results[mode])
    memory = projection_stats(files)  # no parts, no executor: the tables straight from the analysis
    serial = pd.read_csv(tmp_path / "serial" / "filters.csv")
    filters = sum(v.shape[0] for k, v in load_checkpoint(files[0]).state_dict.items()
                  if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4)  # fmt: skip
    assert len(memory) == len(serial) == 3 * filters
    pd.testing.assert_series_equal(serial["cos"], memory["cos"], check_exact=False, rtol=1e-15, atol=0)


@pytest.mark.slow
def test_other_verbs_serial_jobs_and_shards_agree(lenet_run, tmp_path, capsys):
    """cones, reinit, measures and regions train: serial = --jobs 2 = submitit debug = two shards."""
    verbs = {
        "cones": (["cones", str(lenet_run), "--input-shape", "1,8,8"], ("params", "states"), 5),
        "reinit": (["reinit", str(lenet_run), "--epochs", "0,2", "--random"], ("reinit",), 6 * 3),
        "measures": (["measures", str(lenet_run), "--measures", "fisher_rao,norms", "--n-train", "100", "--n-test",
                      "50"], ("measures",), 5),
        "regions_train": (["regions", "train", str(lenet_run), "--dataset", "digits", "--lines", "2", "--planes",
                           "0"], ("regions",), 5),
    }  # fmt: skip
    for verb, (argv, names, n_items) in verbs.items():
        got = {}
        for mode, extra in {"serial": [], "jobs2": ["--jobs", "2"], "debug": ["--executor", "submitit-debug"]}.items():
            out = tmp_path / verb / mode
            code, _, err = cli(["-q", *argv, "--out", str(out), *extra], capsys)
            assert code == 0, err
            assert f"{n_items} part(s) computed, 0 reused" in err, err
            got[mode] = tables(out, names)
        out = tmp_path / verb / "shards"
        for k in (0, 1):
            code, _, err = cli(["-q", *argv, "--out", str(out), "--shard", f"{k}/2"], capsys)
            assert code == 0, err
        got["shards"] = tables(out, names)
        for mode in got:
            assert_same(got["serial"], got[mode])


# ------------------------------------------------------------------------------------------------ resuming
def test_parts_are_not_reused_for_a_changed_checkpoint_or_changed_options(lenet_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(lenet_run, run)
    out = tmp_path / "out"
    assert cli(["-q", "stats", str(run), "--out", str(out)], capsys)[0] == 0
    # the same checkpoint saved again with other weights: only its part is computed again
    ckpt = run / "checkpoints" / "epoch_0002.pt"
    c = load_checkpoint(ckpt, mmap=False)
    flipped = {k: -v if k == "features.0.weight" else v for k, v in c.state_dict.items()}
    save_checkpoint(ckpt, flipped, c.meta, c.extra)
    code, _, err = cli(["-q", "stats", str(run), "--out", str(out)], capsys)
    assert code == 0 and "1 part(s) computed, 4 reused" in err, err
    fresh = projection_stats(run)
    got = pd.read_csv(out / "filters.csv")
    at2 = (got.epoch == 2) & (got.layer == "features.0")
    pd.testing.assert_series_equal(got.loc[at2, "cos"].reset_index(drop=True),
                                   fresh.loc[at2, "cos"].reset_index(drop=True), rtol=1e-15, atol=0)  # fmt: skip
    # the flip reversed the sign of every cos of that layer at that epoch
    before = projection_stats(lenet_run)
    assert (before.loc[at2, "cos"].to_numpy() == -got.loc[at2, "cos"].to_numpy()).all()
    # changed options (--linear): every part again
    code, _, err = cli(["-q", "stats", str(run), "--out", str(out), "--linear"], capsys)
    assert code == 0 and "5 part(s) computed, 0 reused" in err, err
    assert "classifier" in "".join(pd.read_csv(out / "layers.csv")["layer"])


@pytest.mark.slow
def test_a_killed_parallel_run_resumes_with_the_missing_parts(lenet_run, tmp_path):
    """A real SIGKILL of the whole process group (the CLI and its workers) midway, then a rerun."""
    argv = ["-q", "reinit", str(lenet_run), "--random", "--jobs", "2"]
    env = {**os.environ, "RELUGEOM_QUIET": "1"}
    parts = tmp_path / "killed" / "parts" / "reinit"
    n_items = 6 * 6  # lenet's 6 conv layers x (5 epochs + the random init)
    proc = subprocess.Popen([*RELUGEOM, *argv, "--out", str(tmp_path / "killed")], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while n_parts(parts) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = n_parts(parts)
    assert 0 < done < n_items, f"{done} of {n_items} parts were written before the kill"
    stamps = {p: p.stat().st_mtime_ns for p in parts.glob(f"*{PART_SUFFIX}")}
    again = subprocess.run([*RELUGEOM, *argv, "--out", str(tmp_path / "killed")], env=env, capture_output=True,
                           text=True)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert f"{n_items - done} part(s) computed, {done} reused" in again.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # the finished parts were not redone
    assert n_parts(parts) == n_items
    serial = subprocess.run([*RELUGEOM, "-q", "reinit", str(lenet_run), "--random", "--out", str(tmp_path / "s")],
                            env=env, capture_output=True, text=True)  # fmt: skip
    assert serial.returncode == 0, serial.stderr
    assert_same(tables(tmp_path / "killed", ("reinit",)), tables(tmp_path / "s", ("reinit",)))


# ------------------------------------------------------------------------------------------------ failures
def test_a_corrupt_checkpoint_is_the_same_warning_and_exit_3_in_every_mode(lenet_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(lenet_run, run)
    bad = run / "checkpoints" / "epoch_0001.pt"
    bad.write_bytes(bad.read_bytes()[:300])
    warnings_seen = set()
    for mode, extra in {"serial": [], "jobs2": ["--jobs", "2"], "local": ["--executor", "submitit-local"],
                        "debug": ["--executor", "submitit-debug"], "shard": ["--shard", "0/1"]}.items():  # fmt: skip
        code, _, err = cli(["-q", "stats", str(run), "--out", str(tmp_path / mode), *extra], capsys)
        assert code == 3, (mode, err)
        lines = [ln for ln in err.splitlines() if ln.startswith("warning:")]
        assert len(lines) == 1 and str(bad) in lines[0], (mode, err)
        warnings_seen.add(lines[0])
        assert sorted(pd.read_csv(tmp_path / mode / "layers.csv")["epoch"].unique()) == [0, 2, 3, 4]
    assert len(warnings_seen) == 1


def test_a_corrupt_reference_checkpoint_of_reinit_is_one_warning_and_exit_3(lenet_run, tmp_path, capsys):
    """Re-initialization with a damaged reference epoch: the same warnings (the first naming the file) and exit 3
    serially and in a pool; the other epochs' rows equal those of a run asked only for them."""
    run = tmp_path / "run"
    shutil.copytree(lenet_run, run)
    bad = run / "checkpoints" / "epoch_0001.pt"
    bad.write_bytes(bad.read_bytes()[:300])
    got, seen = {}, {}
    for mode, extra in {"serial": [], "jobs2": ["--jobs", "2"]}.items():
        code, _, err = cli(["-q", "reinit", str(run), "--epochs", "0,1,2", "--out", str(tmp_path / mode), *extra],
                           capsys)  # fmt: skip
        assert code == 3, (mode, err)
        seen[mode] = [ln for ln in err.splitlines() if ln.startswith("warning:")]
        assert seen[mode] and str(bad) in seen[mode][0], (mode, err)
        assert "Traceback" not in err
        got[mode] = tables(tmp_path / mode, ("reinit",))
        assert sorted(got[mode]["reinit"]["epoch"].unique()) == [0, 2]
    assert seen["serial"] == seen["jobs2"]
    assert_same(got["serial"], got["jobs2"])
    code, _, err = cli(["-q", "reinit", str(lenet_run), "--epochs", "0,2", "--out", str(tmp_path / "good")], capsys)
    assert code == 0, err
    good = tables(tmp_path / "good", ("reinit",))["reinit"].drop(columns="run")
    pd.testing.assert_frame_equal(got["serial"]["reinit"].drop(columns="run"), good, check_exact=True)


def test_a_job_that_raises_is_reported_with_its_file(lenet_run, tmp_path):
    import _parallel_jobs

    for executor in (None, process_pool(2), submitit.AutoExecutor(tmp_path / "sub", cluster="debug")):
        with pytest.warns(SkippedWarning) as caught:
            df = map_sources(lenet_run, _parallel_jobs.raise_at_epoch_2, executor=executor,
                             parts=tmp_path / f"parts{id(executor)}")  # fmt: skip
        if hasattr(executor, "shutdown"):
            executor.shutdown()
        messages = [str(w.message) for w in caught if issubclass(w.category, SkippedWarning)]
        assert len(messages) == 1
        assert "epoch_0002.pt" in messages[0] and "ValueError: boom at epoch 2" in messages[0]
        assert sorted(df["epoch"]) == [0, 1, 3, 4]


def test_a_checkpoint_of_the_wrong_architecture_is_reported_by_the_cli(lenet_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(lenet_run, run)
    from relugeom.experiments.models import build_model

    wrong = build_model("mlp", in_channels=1, image_size=8, hidden=[5], seed=0)
    save_checkpoint(run / "checkpoints" / "epoch_0003.pt", wrong.state_dict(), {"epoch": 3, "seed": 2,
                                                                                  "arch": "lenet"})  # fmt: skip
    for extra in ([], ["--jobs", "2"]):
        code, _, err = cli(["-q", "cones", str(run), "--input-shape", "1,8,8", "--out", str(tmp_path / "o"), *extra],
                           capsys)  # fmt: skip
        assert code == 3, err
        assert "epoch_0003.pt" in err and "skipped" in err


# ------------------------------------------------------------------------------------------------ slurm
STUB_SBATCH = r'''#!{python}
"""Stub sbatch: records its arguments and script, then runs each array task in the background like Slurm."""
import os, re, subprocess, sys
script = sys.argv[-1]
text = open(script).read()
with open({log!r}, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\n" + text + "\n----\n")
m = re.search(r"#SBATCH --array=(\d+)-(\d+)", text)
tasks = range(int(m.group(1)), int(m.group(2)) + 1) if m else [None]
folder = text.strip().splitlines()[-1].split()[-1]
code = """
import os, subprocess, sys, time
jobs = %r
deadline = time.time() + 120
while not all(os.path.exists(p) for _, p in jobs) and time.time() < deadline:
    time.sleep(0.05)
for p in [subprocess.Popen(["bash", %r], env={{**os.environ, **env}}) for env, _ in jobs]:
    p.wait()
"""
jobs = []
for t in tasks:
    env = {{"SLURM_JOB_ID": "4242" if t is None else str(5000 + t), "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
           "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "stub"}}
    if t is not None:
        env.update(SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID=str(t))
    name = "4242" if t is None else f"4242_{{t}}"
    jobs.append((env, os.path.join(folder, f"{{name}}_submitted.pkl")))
subprocess.Popen([sys.executable, "-c", code % (jobs, script)], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("Submitted batch job 4242")
'''
STUB_SRUN = r'''#!{python}
"""Stub srun: drops srun's own options and runs the command."""
import os, sys
args = sys.argv[1:]
while args and args[0].startswith("--"):
    args = args[2:] if args[0] in ("--output", "--error") else args[1:]
os.execvp(args[0], args)
'''
STUB_SACCT = "#!/bin/sh\necho 'JobID|State|NodeList'\n"


def test_slurm_path_with_stub_sbatch(lenet_run, tmp_path, capsys, monkeypatch):
    if shutil.which("bash") is None:
        pytest.skip("no bash here to run the stub Slurm commands")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "sbatch.log"
    for name, text in {"sbatch": STUB_SBATCH.format(python=sys.executable, log=str(log)),
                       "srun": STUB_SRUN.format(python=sys.executable), "sacct": STUB_SACCT,
                       "scancel": "#!/bin/sh\nexit 0\n"}.items():  # fmt: skip
        (bin_ / name).write_text(textwrap.dedent(text))
        (bin_ / name).chmod((bin_ / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    files = [str(lenet_run / "checkpoints" / f"epoch_{e:04d}.pt") for e in (0, 4)]
    code, _, err = cli(["-q", "stats", *files, "--out", str(tmp_path / "slurm"), "--executor", "slurm",
                        "--jobs", "3", "--slurm-partition", "gpu-short", "--slurm-time", "7", "--slurm-mem", "2",
                        "--slurm-option", "account=geom"], capsys)  # fmt: skip
    assert code == 0, err
    recorded = log.read_text()
    for flag in ("#SBATCH --partition=gpu-short", "#SBATCH --time=7", "#SBATCH --mem=2GB", "#SBATCH --array=0-1%2",
                 "#SBATCH --account=geom"):  # fmt: skip
        assert flag in recorded
    assert recorded.count("----") == 1  # one job array, not one job per checkpoint
    assert cli(["-q", "stats", *files, "--out", str(tmp_path / "serial")], capsys)[0] == 0
    assert_same(tables(tmp_path / "slurm", ("filters", "layers")), tables(tmp_path / "serial", ("filters", "layers")))


def test_slurm_without_srun_is_a_clear_error(lenet_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    code, _, err = cli(["-q", "stats", str(lenet_run), "--out", str(tmp_path / "o"), "--executor", "slurm"], capsys)
    assert code == 1 and "srun" in err and "--jobs" in err
    code, _, err = cli(["-q", "stats", str(lenet_run), "--out", str(tmp_path / "o"), "--slurm-time", "3"], capsys)
    assert code == 2 and "--executor slurm" in err


# ------------------------------------------------------------------------------------------------ reproduce
@pytest.mark.slow
def test_reproduce_trains_its_seeds_as_parallel_jobs(tmp_path):
    """Two seeds trained at once in a pool (one torch thread each, as this process): the same runs, statistics
    and re-initialization tables as training them one after the other."""
    from relugeom.experiments.reproduce import reproduce

    logs = []
    reproduce("vgg19-cifar10", tmp_path / "serial", seeds=2, scale="tiny")
    with process_pool(2, threads=torch.get_num_threads()) as ex:
        reproduce("vgg19-cifar10", tmp_path / "pool", seeds=2, scale="tiny", executor=ex, log=logs.append)
    assert sum("trained" in line for line in logs) == 2
    for name in ("layers", "reinit"):
        found = [tables(tmp_path / mode / "vgg19-cifar10" / "vgg19-cifar10", (name,)) for mode in ("serial", "pool")]
        assert_same(*found)
    assert n_parts(tmp_path / "pool" / "vgg19-cifar10" / "vgg19-cifar10" / "parts" / "stats") > 0


# ------------------------------------------------------------------------------------------------ reinit jobs
def test_reinit_items_share_the_trained_pass_on_a_resnet(tmp_path, monkeypatch):
    """Re-initialization parts are per (epoch, layer), but the items run as jobs that keep the activation reuse:
    one reinit_accuracy call in this process, one per reference epoch on an executor; on a ResNet run the tables
    equal the naive path (every reset runs the whole network) exactly, and a rerun computes only the missing
    parts, in one call over just their layers."""
    from concurrent.futures import ThreadPoolExecutor

    from relugeom.experiments import reinit as reinit_mod
    from relugeom.experiments.data import load_dataset

    out = tmp_path / "run"
    train(TrainConfig(arch="resnet18_cifar", dataset="digits", epochs=1, batch_size=64, seed=0, n_train=64,
                      model_kwargs={"width": 2}), out)  # fmt: skip
    d = load_dataset("digits")
    data = (d.test.x[:120], d.test.y[:120])
    naive = reinit_mod.reinit_run(out, data=data, reuse=False)
    assert naive.layer.nunique() == 20 and len(naive) == 40
    calls = []
    real = reinit_mod.reinit_accuracy

    def counting(model, states, data, **kw):  # noqa: ANN001, ANN202
        calls.append((sorted(states), list(kw["layers"])))
        return real(model, states, data, **kw)

    monkeypatch.setattr(reinit_mod, "reinit_accuracy", counting)
    key = ["epoch", "layer_index"]

    def same(df: pd.DataFrame) -> None:
        pd.testing.assert_frame_equal(df.sort_values(key).reset_index(drop=True),
                                      naive.sort_values(key).reset_index(drop=True), check_exact=True)  # fmt: skip

    same(reinit_mod.reinit_run(out, data=data, parts=tmp_path / "serial"))
    assert len(calls) == 1 and calls[0][0] == [0, 1] and len(calls[0][1]) == 20
    calls.clear()
    parts = tmp_path / "threads"
    with ThreadPoolExecutor(2) as ex:
        same(reinit_mod.reinit_run(out, data=data, parts=parts, executor=ex))
    assert sorted(c[0] for c in calls) == [[0], [1]] and all(len(c[1]) == 20 for c in calls)
    assert n_parts(parts) == 40
    gone = sorted(parts.glob(f"*-epoch0000-*{PART_SUFFIX}"))[:3]
    for p in gone:
        p.unlink()
    calls.clear()
    same(reinit_mod.reinit_run(out, data=data, parts=parts))
    assert len(calls) == 1 and calls[0][0] == [0] and len(calls[0][1]) == 3
    assert n_parts(parts) == 40
