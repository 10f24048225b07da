"""Safe loading, wrappers, series order and atomic writing."""

import os

import pytest
import torch
from safetensors.torch import save_file

from relugeom import checkpoint_series, load_checkpoint, save_checkpoint
from relugeom.checkpoints import atomic_write, epoch_from_name
from relugeom.errors import CheckpointError, RelugeomWarning, SkippedWarning


def _sd():
    torch.manual_seed(0)
    return {"features.0.weight": torch.randn(4, 3, 3, 3), "features.0.bias": torch.randn(4),
            "classifier.weight": torch.randn(2, 4)}


def _same(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".tar", ".safetensors"])
def test_roundtrip_with_meta(tmp_path, suffix):
    path = save_checkpoint(tmp_path / f"c{suffix}", _sd(), {"epoch": 3, "arch": "vgg9", "val_acc": 0.5})
    ck = load_checkpoint(path)
    _same(ck.state_dict, _sd())
    assert ck.meta == {"epoch": 3, "arch": "vgg9", "val_acc": 0.5} and ck.epoch == 3


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd, "epoch": 7},                      # authors' code / Lightning
    lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}},
    lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},   # DataParallel
])
def test_foreign_wrappers(tmp_path, wrap):
    torch.save(wrap(_sd()), tmp_path / "f.pth")
    ck = load_checkpoint(tmp_path / "f.pth")
    _same(ck.state_dict, _sd())
    assert ck.meta == {}


def test_legacy_non_zip_format(tmp_path):
    torch.save(_sd(), tmp_path / "old.pth.tar", _use_new_zipfile_serialization=False)
    _same(load_checkpoint(tmp_path / "old.pth.tar").state_dict, _sd())


def test_plain_safetensors(tmp_path):
    save_file(_sd(), tmp_path / "w.safetensors")
    _same(load_checkpoint(tmp_path / "w.safetensors").state_dict, _sd())


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": _sd(), "payload": _Evil(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [
    (None, "no such file"),
    (b"hello, I am a text file\n", "not a checkpoint"),
    (b"", "not a checkpoint \\(an empty file\\)"),
])
def test_bad_files(tmp_path, content, match):
    p = tmp_path / "bad.pt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(p)
    assert str(p) in str(e.value)


def test_truncated_file(tmp_path):
    save_checkpoint(tmp_path / "good.pt", _sd(), {"epoch": 1})
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pt"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "cut.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(CheckpointError, match=r"cut\.safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")


def test_no_state_dict_inside(tmp_path):
    torch.save({"lr": 0.1, "names": ["a"]}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="no state dict .*lr, names"):
        load_checkpoint(tmp_path / "x.pt")


def test_series_order_comes_from_metadata(tmp_path):
    # names sort against the epochs: the metadata rules
    for name, epoch in (("a.pt", 2), ("b.pt", 0), ("c.safetensors", 1)):
        save_checkpoint(tmp_path / name, _sd(), {"epoch": epoch})
    assert [(e.epoch, e.path.name) for e in checkpoint_series(tmp_path)] == [(0, "b.pt"), (1, "c.safetensors"),
                                                                             (2, "a.pt")]


def test_series_foreign_names_warn_and_bad_files_are_skipped(tmp_path):
    for e in (10, 2, 1):
        torch.save(_sd(), tmp_path / f"model_epoch{e}.pth")
    (tmp_path / "model_epoch5.pth").write_bytes(b"garbage")
    (tmp_path / ".model_epoch6.pth.tmp-x").write_bytes(b"unfinished")   # hidden temp files are ignored
    with pytest.warns(RelugeomWarning) as record:
        series = checkpoint_series(tmp_path)
    assert [e.epoch for e in series] == [1, 2, 10]
    messages = [str(r.message) for r in record]
    assert any("read from their names" in m for m in messages)
    assert any("model_epoch5.pth" in m and issubclass(r.category, SkippedWarning) for m, r in zip(messages, record))


def test_epoch_from_name():
    from pathlib import Path

    assert epoch_from_name(Path("epoch_0012.pt")) == 12
    assert epoch_from_name(Path("vgg19_ep7_acc93.pth")) == 7
    assert epoch_from_name(Path("epoch=3-step=100.ckpt")) == 3
    assert epoch_from_name(Path("checkpoint-45.pt")) == 45
    assert epoch_from_name(Path("final.pt")) is None


def test_empty_or_missing_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        checkpoint_series(tmp_path)
    with pytest.raises(CheckpointError, match="no such run folder"):
        checkpoint_series(tmp_path / "nope")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "t.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["t.bin"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_write_gives_the_permissions_open_would(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "atomic.bin", lambda f: f.write(b"x"))
        with open(tmp_path / "plain.bin", "wb") as f:  # the truth: what a plain open() creates
            f.write(b"x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "atomic.bin").st_mode & 0o777 == os.stat(tmp_path / "plain.bin").st_mode & 0o777
