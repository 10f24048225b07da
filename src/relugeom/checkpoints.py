"""Safe checkpoint loading, checkpoint series and atomic saving.

* ``.pt``/``.pth``/``.tar``/``.ckpt`` files are read with ``torch.load(weights_only=True)``: a pickle
  that would run code is refused before anything runs. Raw state dicts, and dicts that wrap one
  under ``state_dict``, ``model``, ``model_state_dict``, ``net`` or ``weights`` (torchvision,
  Lightning, the authors' code), are accepted; a ``module.`` prefix (DataParallel/DDP) is removed.
* ``.safetensors`` files are read with safetensors; relugeom's metadata rides in the header.
* ``.mat`` files are MatConvNet models (:mod:`relugeom.matconvnet`), converted to torchvision's key names.
* Every file relugeom writes goes through :func:`atomic_write`: temp file in the same folder,
  flush, fsync, rename. A crash leaves either the old file or the new one, never half of one.

relugeom checkpoints are ``{"relugeom": 1, "state_dict": ..., "meta": {...}}`` where ``meta`` holds
``epoch, seed, arch, dataset`` and the epoch's train/val loss and accuracy.
"""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import re
import socket
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import torch

from ._repr import short_repr
from ._torchfile import (
    UNKNOWN,
    _first_line,
    check_tensors,
    check_zip,
    evaluated,
    file_kind,
    loadable_name,
    open_regular,
)
from .errors import CheckpointError, RelugeomError, RunLockedError, SkippedWarning, WriteError, warn

if TYPE_CHECKING:
    import pandas as pd

TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
SUFFIXES = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)
FORMAT_VERSION = 1
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")
_META_KEY = "relugeom_meta"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its state dict, relugeom metadata (empty for foreign files) and the
    remaining top-level entries (optimizer, scheduler, RNG states, ... for resuming).

    Example
    -------
    >>> import tempfile, torch
    >>> path = save_checkpoint(f"{tempfile.mkdtemp()}/net.pt", {"w": torch.ones(2, 3)}, {"epoch": 4, "arch": "mlp"})
    >>> ckpt = load_checkpoint(path)
    >>> ckpt.epoch, ckpt.meta["arch"], ckpt.state_dict["w"].shape
    (4, 'mlp', torch.Size([2, 3]))
    """

    __repr__ = short_repr

    path: Path | None
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def epoch(self) -> int | None:
        e = self.meta.get("epoch")
        return None if e is None else int(e)


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


_VERIFY = False


def set_verify(on: bool) -> bool:
    """Check every zip record's CRC-32 on every later load (``relugeom --verify``); returns the old setting.

    For disks one does not trust: it reads each file once more (see ``benchmarks/bench_stats.py``).
    """
    global _VERIFY
    old, _VERIFY = _VERIFY, bool(on)
    return old


def _torch_load(path: Path, mmap: bool, verify: bool | None = None) -> Any:
    """``torch.load(weights_only=True)`` of a file checked first by :mod:`relugeom._torchfile`."""
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        try:
            size = os.fstat(fd).st_size
            kind = file_kind(path, f.read(512))
            if kind == "zip":
                check_zip(path, f, size, verify=_VERIFY if verify is None else verify)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
        name = loadable_name(path, fd)
        mmap = mmap and kind == "zip" and name is not None  # legacy files cannot be memory-mapped
        try:
            f.seek(0)
            with warnings.catch_warnings():  # torch's notes on pickle protocols and the like: the error says it
                warnings.simplefilter("ignore", UserWarning)
                return torch.load(f if name is None else name, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            first = next((ln for ln in lines if re.search(r"GLOBAL|[Uu]nsupported|allowed", ln)), _first_line(e))
            if re.search(r"GLOBAL|Unsupported global|allowed global|Trying to call", str(e)):
                raise CheckpointError(
                    f"{path}: refused: the file's pickle asks to run or import code ({first[:160]}). "
                    "relugeom loads with weights_only=True; re-save the file as a plain state dict "
                    "(torch.save(model.state_dict(), ...)) or as safetensors from a trusted environment"
                ) from None
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first[:160]})") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError,
                TypeError, AttributeError, struct.error) as e:  # fmt: skip
            raise CheckpointError(
                f"{path}: cannot be read as a PyTorch checkpoint, it may be truncated ({_first_line(e)})"
            ) from None


def load_tensors(path: str | os.PathLike) -> Any:
    """What a torch file holds (a tensor, or a dict/list of them), read as safely as a checkpoint:
    ``weights_only=True`` after the same file checks, each tensor checked against its storage."""
    p = Path(path)
    obj = _torch_load(p, mmap=False)
    found = {"": obj} if isinstance(obj, torch.Tensor) else obj if isinstance(obj, Mapping) else {}
    check_tensors(p, {str(k): v for k, v in found.items() if isinstance(v, torch.Tensor) and not v.is_complex()})
    return obj


def _whole(path: Path | None, key: str, value: Any, *, minimum: int | None = 0) -> int:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not (value.is_floating_point() or value.is_complex()):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
        want = "a whole number" + (f" >= {minimum}" if minimum is not None else "")
        raise CheckpointError(f"{path}: its metadata gives {key} = {value!r:.60}, not {want}")
    return value


def check_meta(path: Path | None, meta: Any) -> dict[str, Any]:
    """relugeom metadata, checked: a dict whose ``epoch`` (>= 0) and ``seed`` are whole numbers and
    whose ``arch`` is a name. Raises :class:`CheckpointError` naming the file otherwise."""
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{path}: its relugeom metadata is a {type(meta).__name__}, not a dict")
    meta = dict(meta)
    if meta.get("epoch") is not None:
        meta["epoch"] = _whole(path, "epoch", meta["epoch"])
    if meta.get("seed") is not None:
        meta["seed"] = _whole(path, "seed", meta["seed"], minimum=None)
    if meta.get("arch") is not None and not isinstance(meta["arch"], str):
        raise CheckpointError(f"{path}: its metadata gives arch = {meta['arch']!r:.60}, not a name")
    return meta


def _unwrap(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    if _is_tensor_dict(obj):
        return _strip_prefix(dict(obj)), {}, {}
    if isinstance(obj, Mapping):
        meta = check_meta(path, obj.get("meta", {})) if obj.get("relugeom") else {}
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if _is_tensor_dict(inner):
                extra = {k: v for k, v in obj.items() if k not in (key, "meta", "relugeom")}
                return _strip_prefix(dict(inner)), meta, extra
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(
            f"{path}: holds a dict but no state dict (top-level keys: {keys}); expected tensors, "
            f"or a dict with one of {', '.join(_WRAPPER_KEYS)}"
        )
    raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a state dict")


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = True, verify: bool | None = None) -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True`` or safetensors) onto the CPU.

    ``mmap=True`` maps tensor storage from the file instead of copying it (zip-format files);
    pages are read as they are touched. Before ``torch.load`` sees the file, its records are checked
    against its pickle (a record shorter than declared is refused, not mapped as garbage); after it,
    every tensor is checked against its storage (an expanded view larger than its storage is refused
    before it is materialised) and weights and biases must be real floating point. ``verify=True``
    also checks every record's CRC-32 (default: :func:`set_verify`, off).

    Raises :class:`CheckpointError` naming the file when it is missing, not a regular file, not a
    checkpoint, refused (its pickle would run code), truncated or damaged, holds no state dict, or
    carries metadata that is not relugeom's (see :func:`check_meta`).

    Example
    -------
    >>> import tempfile, torch
    >>> path = f"{tempfile.mkdtemp()}/resnet.pth"
    >>> torch.save({"state_dict": {"module.fc.weight": torch.zeros(10, 4)}}, path)  # a DataParallel script's file
    >>> list(load_checkpoint(path).state_dict)  # unwrapped, "module." stripped
    ['fc.weight']
    """
    p = Path(path)
    if p.suffix == SAFETENSORS_SUFFIX:
        ckpt = _load_safetensors(p)
    elif p.suffix.lower() == ".mat":  # a MatConvNet model (relugeom.matconvnet), torchvision key names
        from .matconvnet import load_matconvnet

        os.close(open_regular(p))  # missing, a folder, a FIFO or a device: refused before the reader opens it
        net = load_matconvnet(p)
        ckpt = Checkpoint(p, net.state_dict, net.meta, {})
    else:
        sd, meta, extra = _unwrap(p, _torch_load(p, mmap, verify))
        ckpt = Checkpoint(p, sd, meta, extra)
    check_tensors(p, ckpt.state_dict)
    return ckpt


def _safetensors_header(p: Path, f: Any) -> dict[str, Any]:
    header = f.metadata() or {}
    if _META_KEY not in header:
        return {}
    try:
        meta = json.loads(header[_META_KEY])
    except ValueError as e:
        raise CheckpointError(f"{p}: its relugeom metadata is not valid JSON ({str(e)[:120]})") from None
    return check_meta(p, meta)


def _open_safetensors(p: Path) -> tuple[int, str]:
    fd = open_regular(p)
    name = loadable_name(p, fd)
    if name is None:
        os.close(fd)
        raise CheckpointError(f"{p}: its name is not valid UTF-8 and this system has no /proc/self/fd; rename it")
    return fd, name


def _load_safetensors(p: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    fd, name = _open_safetensors(p)
    try:
        with safe_open(name, framework="pt") as f:
            meta = _safetensors_header(p, f)
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"{p}: cannot be read as safetensors ({_first_line(e)})") from None
    finally:
        os.close(fd)
    if not sd:
        raise CheckpointError(f"{p}: holds no tensors")
    return Checkpoint(p, _strip_prefix(sd), meta, {})


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """relugeom metadata of a checkpoint without reading its tensors (``{}`` for foreign files),
    checked by :func:`check_meta`."""
    p = Path(path)
    if p.suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError, safe_open

        fd, name = _open_safetensors(p)
        try:
            with safe_open(name, framework="pt") as f:
                return _safetensors_header(p, f)
        except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"{p}: cannot be read as safetensors ({_first_line(e)})") from None
        finally:
            os.close(fd)
    meta = _scanned_meta(p)  # relugeom's zip files: read from the checked pickle, without torch.load
    if meta is not None:
        return meta
    obj = _torch_load(p, mmap=True)
    if isinstance(obj, Mapping) and obj.get("relugeom"):
        return check_meta(p, obj.get("meta", {}))
    return {}


def _scanned_meta(p: Path) -> dict[str, Any] | None:
    """The metadata of a zip checkpoint as the layout check read it from the pickle; None when the
    pickle builds it with calls (then only ``torch.load`` can say) or the file is not a zip."""
    import copy

    fd = open_regular(p)
    with os.fdopen(fd, "rb") as f:
        try:
            if file_kind(p, f.read(512)) != "zip":
                return None
            top = check_zip(p, f, os.fstat(fd).st_size, verify=_VERIFY)
        except OSError as e:
            raise CheckpointError(f"{p}: cannot be read ({e.strerror or e})") from None
    if not isinstance(top, dict):
        return {} if top is UNKNOWN else None  # UNKNOWN: an OrderedDict state dict, a foreign file
    flag = top.get("relugeom")
    if flag is UNKNOWN:
        return None
    if not flag:
        return {}
    meta = top.get("meta", {})
    if not evaluated(meta):
        return None
    return check_meta(p, copy.deepcopy(meta))


# ---------------------------------------------------------------------------------------------
# atomic writing


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _RecordingWriter:
    """A file object that remembers the OSError of a failed write: ``torch.save`` replaces it with an
    opaque ``inline_container.cc`` message, the user needs "No space left on device"."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._f.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def write_error(path: Path, err: BaseException) -> WriteError:
    """The one-line :class:`WriteError` for a failed write of ``path`` (full or read-only disk, no
    permission, a folder where the file goes)."""
    if isinstance(err, IsADirectoryError) or path.is_dir():
        return WriteError(f"{path}: is a folder, so the file cannot be written; remove it or choose another --out")
    if isinstance(err, OSError):
        reason = err.strerror or str(err)
        hint = {errno.ENOSPC: "free some space or choose another --out",
                errno.EDQUOT: "free some space or choose another --out",
                errno.EFBIG: "the file is larger than this system allows (ulimit -f)",
                errno.EROFS: "choose another --out", errno.EACCES: "choose another --out",
                errno.EPERM: "choose another --out"}.get(err.errno or 0, "")  # fmt: skip
        return WriteError(f"cannot write {path}: {reason}" + (f"; {hint}" if hint else ""))
    return WriteError(f"cannot write {path}: {str(err).strip().splitlines()[0][:160] if str(err).strip() else err!r}")


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(fileobj)`` atomically: temp file, flush, fsync, rename.

    The temp file lives in the target's folder under a hidden name (``.NAME.tmp-*``), so it is
    never mistaken for a finished file; on any error it is removed and the target is untouched. The
    finished file has the usual permissions (0666 less the umask), not the temp file's 0600.

    Raises :class:`~relugeom.errors.WriteError` naming the file when the disk is full or read-only,
    permission is missing, or a folder stands where the file goes.
    """
    p = Path(path)
    tmp: str | None = None
    recorder: _RecordingWriter | None = None
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.tmp-", dir=p.parent)
        # mkstemp makes the file private (0600); a finished file gets the mode open() would give it
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            recorder = _RecordingWriter(f)
            write(recorder)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if recorder is not None and recorder.error is not None:
            raise write_error(p, recorder.error) from None
        if isinstance(e, OSError):
            raise write_error(p, e) from None
        if isinstance(e, RuntimeError) and ("inline_container" in str(e) or "PytorchStreamWriter" in str(e)):
            raise write_error(p, e) from None
        raise
    _fsync_dir(p.parent)
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write` for a text file (UTF-8)."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Save a state dict with relugeom metadata, atomically.

    ``.safetensors`` paths store the tensors with safetensors and ``meta`` as JSON in the header
    (``extra`` is not allowed there); any other suffix uses ``torch.save`` of
    ``{"relugeom": 1, "state_dict", "meta", **extra}``, loadable with ``weights_only=True``.

    Example
    -------
    >>> import tempfile, torch
    >>> folder = tempfile.mkdtemp()
    >>> save_checkpoint(f"{folder}/w.safetensors", {"w": torch.eye(2)}, {"epoch": 1}).suffix
    '.safetensors'
    >>> load_checkpoint(f"{folder}/w.safetensors").meta
    {'epoch': 1}
    """
    p = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta = dict(meta or {})
    if p.suffix == SAFETENSORS_SUFFIX:
        if extra:
            raise ValueError("safetensors checkpoints hold tensors and metadata only; use .pt for extra state")
        from safetensors.torch import save

        blob = save(sd, metadata={_META_KEY: json.dumps(meta)})
        return atomic_write(p, lambda f: f.write(blob))
    obj = {"relugeom": FORMAT_VERSION, "state_dict": sd, "meta": meta, **dict(extra or {})}
    return atomic_write(p, lambda f: torch.save(obj, f))


# ---------------------------------------------------------------------------------------------
# series


@dataclass(frozen=True)
class SeriesEntry:
    """One checkpoint of a run: its epoch, file, and relugeom metadata (``{}`` for foreign files)."""

    __repr__ = short_repr

    epoch: int
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


_EPOCH_TOKEN = re.compile(r"(?<![A-Za-z0-9])(?:epochs?|ep)[_=\-]?(\d+)(?![0-9A-Za-z])", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")
_NATURAL = re.compile(r"(\d+)")


def _stem(path: Path) -> str:
    stem = path.name
    for suffix in SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return stem


def epoch_from_name(path: Path) -> int | None:
    """The epoch written in a file name: a whole token ``epoch_12``, ``ep12``, ``epoch=12`` (the last
    one when there are several), else the name's last number.

    >>> epoch_from_name(Path("convnet_lr1e-3_epoch7.pt")), epoch_from_name(Path("step1000_ep3.pt"))
    (7, 3)
    """
    epoch, _ = _name_epoch(path)
    return epoch


def _name_epoch(path: Path) -> tuple[int | None, bool]:
    """(epoch, ambiguous): ambiguous when no epoch token names it and the name holds several numbers."""
    stem = _stem(path)
    tokens = _EPOCH_TOKEN.findall(stem)
    if tokens:
        return int(tokens[-1]), False
    numbers = _NUMBER.findall(stem)
    return (int(numbers[-1]) if numbers else None), len(numbers) > 1


def _natural_key(name: str) -> list[object]:
    return [(0, int(t)) if t.isdigit() else (1, t) for t in _NATURAL.split(name) if t]


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run folder (its ``checkpoints/`` subfolder when there is one); anything
    there that is not a regular file (a FIFO, a device) is warned about and left out."""
    folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    files = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.name.endswith(SUFFIXES) or p.is_dir():
            continue
        if p.is_file():
            files.append(p)
        elif p.exists():
            warn(f"{p}: not a regular file (a FIFO or a device?); skipped", SkippedWarning)
    return files


def checkpoint_series(run_dir: str | os.PathLike) -> list[SeriesEntry]:
    """The checkpoints of a run folder in epoch order.

    The epoch comes from relugeom's metadata inside each file; for foreign files, from the file
    name (see :func:`epoch_from_name`, with a warning). When the names give repeated or ambiguous
    epochs, the files are taken in (natural) name order and numbered 0, 1, 2, ... with a warning
    saying so. Unreadable files and files without any epoch are reported as warnings and left out;
    a folder with no usable checkpoint is an error.

    Example
    -------
    >>> import tempfile, torch
    >>> run = tempfile.mkdtemp()
    >>> for e in (10, 2, 0):
    ...     _ = save_checkpoint(f"{run}/checkpoints/epoch_{e:04d}.pt", {"w": torch.full((1,), float(e))}, {"epoch": e})
    >>> [(s.epoch, s.path.name) for s in checkpoint_series(run)]
    [(0, 'epoch_0000.pt'), (2, 'epoch_0002.pt'), (10, 'epoch_0010.pt')]
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run folder")
    entries: dict[int, SeriesEntry] = {}
    named: list[tuple[Path, int, bool]] = []
    for p in checkpoint_files(run):
        if p.name == Run.RESUME_FILE:
            continue
        try:
            meta = read_meta(p)
        except CheckpointError as e:
            warn(f"{e}; skipped", SkippedWarning)
            continue
        epoch = meta.get("epoch")
        if epoch is None:
            epoch, ambiguous = _name_epoch(p)
            if epoch is None:
                warn(f"{p}: no epoch in its metadata or its name; skipped", SkippedWarning)
            else:
                named.append((p, epoch, ambiguous))
            continue
        if epoch in entries:
            warn(f"{p}: epoch {epoch} already given by {entries[epoch].path.name}; skipped", SkippedWarning)
            continue
        entries[epoch] = SeriesEntry(epoch, p, meta)
    if named:
        epochs = [e for _, e, _ in named]
        repeated = len(set(epochs)) < len(epochs) or bool(set(epochs) & set(entries))
        ambiguous = [p.name for p, _, a in named if a]
        shown = ", ".join(p.name for p, _, _ in named[:3]) + (" ..." if len(named) > 3 else "")
        if (repeated or ambiguous) and not entries:
            named.sort(key=lambda t: _natural_key(t[0].name))
            why = "repeat" if repeated else f"are ambiguous ({', '.join(ambiguous[:2])}: several numbers, no 'epoch')"
            warn(f"{run}: the epochs in the file names {why}; the {len(named)} files are taken in name order and "
                 f"numbered 0-{len(named) - 1} ({named[0][0].name} first, {named[-1][0].name} last)")  # fmt: skip
            entries = {i: SeriesEntry(i, p, {}) for i, (p, _, _) in enumerate(named)}
        else:
            for p, epoch, _ in named:
                if epoch in entries:
                    warn(f"{p}: epoch {epoch} already given by {entries[epoch].path.name}; skipped", SkippedWarning)
                    continue
                entries[epoch] = SeriesEntry(epoch, p, {})
            warn(f"{run}: epochs of {len(named)} file(s) read from their names ({shown}): no relugeom metadata")
    if not entries:
        raise CheckpointError(f"{run}: no readable checkpoint ({', '.join(SUFFIXES)}) in this folder")
    return [entries[e] for e in sorted(entries)]


# ---------------------------------------------------------------------------------------------
# run folders

_RUN_CHECKPOINT = re.compile(r"^epoch_(\d+)\.pt$")
_STALE_TEMP = re.compile(r"^\.(?:config\.json|metrics\.csv|resume\.pt|epoch_\d+\.pt)\.tmp-[A-Za-z0-9_]+$")
METRIC_COLUMNS = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "seconds")


@dataclass(frozen=True)
class Run:
    """A run folder written by ``relugeom train``: one place that knows its layout.

    ::

        config.json                the training config, the data set's spec, the lr drops, versions
        metrics.csv                one row per finished epoch (lr, losses, accuracies, seconds)
        checkpoints/epoch_NNNN.pt  the weights after each epoch (0 = the initialisation), with metadata
        resume.pt                  optimizer, scheduler and RNG states: the commit point
        .relugeom.lock             who writes the run now (see :meth:`lock`)

    **Commit protocol.** :meth:`commit_epoch` writes epoch ``e``'s checkpoint, then ``metrics.csv``,
    then ``resume.pt``, each atomically. ``resume.pt`` is the commit point: epoch ``e`` is finished
    when ``resume.pt`` says so. A crash anywhere before that leaves the previous commit intact; files
    of the unfinished epoch are relugeom's own and are rewritten when the run is resumed.
    :meth:`metrics` returns the rows up to the commit point, rebuilding any missing row from its
    checkpoint's metadata (runs written before this protocol could lose one).

    **One writer.** :meth:`lock` holds an exclusive lock on ``.relugeom.lock`` (``flock``) for a
    writer's lifetime; a second writer gets :class:`~relugeom.errors.RunLockedError` naming the first
    one's PID. The kernel frees the lock when its process dies, so a crash never blocks a run: the
    next writer takes it over and warns.

    Example
    -------
    >>> import tempfile, torch
    >>> run = Run(tempfile.mkdtemp())
    >>> with run.lock():
    ...     _ = run.write_config({"config": {"arch": "mlp"}, "data": {"num_classes": 2}, "lr_drops": [25]})
    ...     run.commit_epoch(0, {"w": torch.zeros(2, 2)}, {"epoch": 0}, [{"epoch": 0, "train_loss": 0.7}],
    ...                      {"step": 0})
    >>> run.config["arch"], run.lr_drops, run.committed_epoch(), [e.epoch for e in run.checkpoints()]
    ('mlp', [25], 0, [0])
    """

    path: Path

    CONFIG_FILE = "config.json"
    METRICS_FILE = "metrics.csv"
    RESUME_FILE = "resume.pt"
    CHECKPOINT_DIR = "checkpoints"
    LOCK_FILE = ".relugeom.lock"
    RUN_FILES = (CONFIG_FILE, METRICS_FILE, RESUME_FILE, CHECKPOINT_DIR)

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    def __str__(self) -> str:
        return str(self.path)

    # -- layout ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS_FILE

    @property
    def resume_path(self) -> Path:
        return self.path / self.RESUME_FILE

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / self.CHECKPOINT_DIR

    def checkpoint_path(self, epoch: int) -> Path:
        """Where relugeom writes epoch ``epoch``'s checkpoint."""
        return self.checkpoint_dir / f"epoch_{epoch:04d}.pt"

    def run_files(self) -> list[Path]:
        """The run files present (``config.json``, ``metrics.csv``, ``resume.pt``, ``checkpoints/``)."""
        return [self.path / n for n in self.RUN_FILES if os.path.lexists(self.path / n)]

    def is_run(self) -> bool:
        """Whether the folder holds a ``config.json`` (a run folder, finished or not)."""
        return self.config_path.is_file()

    def foreign_files(self) -> list[Path]:
        """Files in the folder that relugeom's training does not write (empty for a pure run folder)."""
        if not self.path.is_dir():
            return []
        known = {*self.RUN_FILES, self.LOCK_FILE}
        out = [p for p in self.path.iterdir() if p.name not in known and not _STALE_TEMP.match(p.name)]
        if self.checkpoint_dir.is_dir():
            out += [p for p in self.checkpoint_dir.iterdir()
                    if not _RUN_CHECKPOINT.match(p.name) and not _STALE_TEMP.match(p.name)]  # fmt: skip
        return sorted(out)

    # -- config ---------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        """The whole ``config.json`` document (``config``, ``data``, ``lr_drops``, ``versions``)."""
        p = self.config_path
        if not p.is_file():
            raise CheckpointError(f"{self.path}: no {self.CONFIG_FILE}, so not a run folder of `relugeom train`")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{p}: not a relugeom training config ({str(e)[:120]})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict):
            raise CheckpointError(f"{p}: not a relugeom training config (no 'config' section)")
        return doc

    @property
    def config(self) -> dict[str, Any]:
        """The training config (``TrainConfig`` as a dict)."""
        return dict(self.read_config()["config"])

    @property
    def data(self) -> dict[str, Any]:
        """The data set's spec: name, input shape, classes, split sizes, normalisation, augmentation."""
        data = self.read_config().get("data", {})
        return dict(data) if isinstance(data, dict) else {}

    @property
    def lr_drops(self) -> list[int]:
        """Epochs after which the learning rate drops (the red ticks of Gamba et al. 2020's figures)."""
        drops = self.read_config().get("lr_drops", [])
        return [int(d) for d in drops] if isinstance(drops, list) else []

    def write_config(self, doc: Mapping[str, Any]) -> Path:
        """Write ``config.json`` atomically."""
        return atomic_write_text(self.config_path, json.dumps(dict(doc), indent=2))

    # -- checkpoints and metrics ----------------------------------------------------------------
    def checkpoints(self) -> list[SeriesEntry]:
        """The run's checkpoints in epoch order (see :func:`checkpoint_series`)."""
        return checkpoint_series(self.path)

    def checkpoint_epochs(self) -> dict[int, Path]:
        """``{epoch: path}`` of the checkpoints relugeom wrote (``checkpoints/epoch_NNNN.pt``), by name."""
        if not self.checkpoint_dir.is_dir():
            return {}
        found = {}
        for p in self.checkpoint_dir.iterdir():
            m = _RUN_CHECKPOINT.match(p.name)
            if m and p.is_file():
                found[int(m.group(1))] = p
        return dict(sorted(found.items()))

    def metrics(self, upto: int | None = None) -> pd.DataFrame:
        """The per-epoch metrics up to epoch ``upto`` (default: the commit point, else every epoch).

        A row missing from ``metrics.csv`` whose checkpoint exists is rebuilt from that checkpoint's
        metadata (with a warning). Rows are sorted by epoch, one per epoch.
        """
        import pandas as pd

        if upto is None:
            try:
                upto = self.committed_epoch()
            except CheckpointError:  # an analysis still gets the table; resuming checks resume.pt itself
                upto = None
        table = pd.DataFrame(columns=list(METRIC_COLUMNS))
        if self.metrics_path.is_file():
            try:
                table = pd.read_csv(self.metrics_path)
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{self.metrics_path}: cannot be read as a table ({str(e)[:120]})") from None
            if "epoch" not in table:
                raise CheckpointError(f"{self.metrics_path}: no 'epoch' column, so not relugeom's metrics")
            table = table[pd.to_numeric(table["epoch"], errors="coerce").notna()]
            table = table.astype({"epoch": "int64"}).drop_duplicates("epoch", keep="last")
        have = set(table["epoch"].tolist())
        columns = list(table.columns) if len(table.columns) else list(METRIC_COLUMNS)
        rebuilt = []
        for epoch, path in self.checkpoint_epochs().items():
            if epoch in have or (upto is not None and epoch > upto):
                continue
            try:
                meta = read_meta(path)
            except CheckpointError:
                continue
            if meta.get("epoch") == epoch:
                rebuilt.append({c: meta.get(c, math.nan) for c in columns})
        if rebuilt:
            warn(f"{self.metrics_path}: rebuilt the rows of epoch(s) {', '.join(str(r['epoch']) for r in rebuilt)} "
                 "from their checkpoints' metadata")  # fmt: skip
            table = pd.concat([table, pd.DataFrame(rebuilt, columns=columns)], ignore_index=True)
        if upto is not None:
            table = table[table["epoch"] <= upto]
        return table.sort_values("epoch", kind="stable").reset_index(drop=True)

    # -- resume state ---------------------------------------------------------------------------
    def load_resume(self, *, mmap: bool = False) -> Checkpoint:
        """``resume.pt``, checked: its ``epoch`` is a whole number >= 0 whose checkpoint is present."""
        ckpt = load_checkpoint(self.resume_path, mmap=mmap)
        epoch = ckpt.extra.get("epoch")
        if isinstance(epoch, torch.Tensor) and epoch.numel() == 1 and not epoch.is_floating_point():
            epoch = int(epoch)
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise CheckpointError(f"{self.resume_path}: its epoch {epoch!r} is not a finished epoch "
                                  "(a whole number >= 0); not a relugeom resume file, or a tampered one")  # fmt: skip
        if not self.checkpoint_path(epoch).is_file():
            present = list(self.checkpoint_epochs())
            shown = f"epochs {present[0]}-{present[-1]}" if present else "none"
            raise CheckpointError(f"{self.resume_path}: says epoch {epoch} is finished, but "
                                  f"{self.checkpoint_path(epoch)} is missing (checkpoints present: {shown}); "
                                  "this run cannot be resumed safely")  # fmt: skip
        return ckpt

    def committed_epoch(self) -> int | None:
        """The last finished epoch (the commit point in ``resume.pt``), or None before the first."""
        if not self.resume_path.is_file():
            return None
        return int(self.load_resume(mmap=True).extra["epoch"])

    def commit_epoch(
        self,
        epoch: int,
        state_dict: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any],
        metrics: pd.DataFrame | list[dict[str, Any]],
        resume_state: Mapping[str, Any],
    ) -> None:
        """Record a finished epoch: its checkpoint, ``metrics.csv`` (every row so far), then
        ``resume.pt`` (``resume_state`` plus ``epoch``), the commit point. Hold :meth:`lock`."""
        import pandas as pd

        table = metrics if isinstance(metrics, pd.DataFrame) else pd.DataFrame(metrics)
        save_checkpoint(self.checkpoint_path(epoch), state_dict, {**meta, "epoch": epoch})
        atomic_write_text(self.metrics_path, table.to_csv(index=False))
        save_checkpoint(self.resume_path, state_dict, {**meta, "epoch": epoch},
                        extra={**resume_state, "epoch": epoch})  # fmt: skip

    def remove_stale_temps(self) -> list[Path]:
        """Remove the temporary files (``.NAME.tmp-*``) that an interrupted writer of this run left;
        only relugeom's own names are touched. Hold :meth:`lock`. Returns what was removed."""
        removed = []
        for folder in (self.path, self.checkpoint_dir):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if _STALE_TEMP.match(p.name) and p.is_file():
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed

    def remove(self) -> None:
        """Delete the run (its run files only), refusing when the folder holds anything else."""
        foreign = self.foreign_files()
        if foreign:
            shown = ", ".join(str(p.relative_to(self.path)) for p in foreign[:3])
            raise RelugeomError(f"{self.path}: holds files relugeom did not write ({shown}); nothing was deleted")
        with self.lock():
            for p in self.checkpoint_epochs().values():
                p.unlink()
            self.remove_stale_temps()
            for name in (self.METRICS_FILE, self.RESUME_FILE, self.CONFIG_FILE):
                (self.path / name).unlink(missing_ok=True)
            if self.checkpoint_dir.is_dir():
                self.checkpoint_dir.rmdir()
            (self.path / self.LOCK_FILE).unlink(missing_ok=True)
        self.path.rmdir()

    # -- lock -----------------------------------------------------------------------------------
    def lock(self) -> RunLock:
        """An exclusive lock on the run for one writer (a context manager; see :class:`RunLock`)."""
        return RunLock(self)


class RunLock:
    """The exclusive lock of a run folder, held by one process for a writer's lifetime.

    ``acquire`` creates the folder (checking that it is writable) and ``.relugeom.lock``, takes an
    ``flock`` on it and writes ``PID HOST`` into it. A second process (or a second lock in this
    one) gets :class:`~relugeom.errors.RunLockedError` naming the holder's PID at once. The kernel
    releases the lock of a process that dies; its PID stays in the file, so the next holder warns
    that it took the lock over. ``release`` empties the file and unlocks (and removes the folder again
when ``acquire`` created it and nothing else was written).
    """

    def __init__(self, run: Run) -> None:
        self.run = run
        self.path = run.path / Run.LOCK_FILE
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> RunLock:
        try:
            self._created = not self.run.path.exists()
            self.run.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_error(self.path, e) from None
        try:
            held = _try_lock(fd)
        except OSError as e:
            os.close(fd)
            raise write_error(self.path, e) from None
        holder = _read_holder(fd)
        if not held:
            os.close(fd)
            who = f"PID {holder[0]}" + (f" on {holder[1]}" if holder[1] and holder[1] != socket.gethostname() else "")
            raise RunLockedError(f"{self.run.path}: another relugeom process ({who if holder[0] else 'PID unknown'}) "
                                 "is writing this run; wait for it to finish or stop it, then retry")  # fmt: skip
        if holder[0] and holder[0] != str(os.getpid()):
            warn(f"{self.run.path}: took over the lock left by process {holder[0]}, which ended without releasing "
                 "it (killed or crashed); its finished epochs are kept")  # fmt: skip
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            raise write_error(self.path, e) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
            if self._created and [p.name for p in self.run.path.iterdir()] == [Run.LOCK_FILE]:
                self.path.unlink()  # nothing was written: leave no empty folder behind
                self.run.path.rmdir()
        except OSError:
            pass
        os.close(fd)  # closing the descriptor releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    """Take an exclusive, non-blocking lock on ``fd``; False when another holder has it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read_holder(fd: int) -> tuple[str, str]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").split()
    except OSError:
        return "", ""
    pid = text[0] if text and text[0].isdigit() else ""
    return pid, text[1] if len(text) > 1 else ""
