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

import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import CheckpointError, SkippedWarning, warn

TORCH_SUFFIXES = (".pt", ".pth", ".tar", ".ckpt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
SUFFIXES = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)
FORMAT_VERSION = 1
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net", "weights")
_META_KEY = "relugeom_meta"


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: its state dict, relugeom metadata (empty for foreign files) and the
    remaining top-level entries (optimizer, scheduler, RNG states, ... for resuming)."""

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


def _torch_load(path: Path, mmap: bool) -> Any:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as e:
            if mmap and "mmap" in str(e):  # legacy (pre-1.6, non-zip) files cannot be memory-mapped
                return torch.load(path, map_location="cpu", weights_only=True)
            raise
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e) or "Unsupported operand" in str(e):
            raise CheckpointError(
                f"{path}: refused: the file's pickle asks to run or import code ({first[:160]}). "
                "relugeom loads with weights_only=True; re-save the file as a plain state dict "
                "(torch.save(model.state_dict(), ...)) or as safetensors from a trusted environment"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({first[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch checkpoint, it may be truncated ({msg[:160]})"
        ) from None


def _unwrap(path: Path, obj: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    if _is_tensor_dict(obj):
        return _strip_prefix(dict(obj)), {}, {}
    if isinstance(obj, Mapping):
        meta = dict(obj.get("meta", {})) if obj.get("relugeom") else {}
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


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = True) -> Checkpoint:
    """Load a checkpoint safely (``weights_only=True`` or safetensors) onto the CPU.

    ``mmap=True`` maps tensor storage from the file instead of copying it (zip-format files);
    pages are read as they are touched.

    Raises :class:`CheckpointError` naming the file when it is missing, refused (its pickle would run
    code), truncated, or holds no state dict.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file")
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder; use checkpoint_series() for a run folder")
    if p.suffix == SAFETENSORS_SUFFIX:
        return _load_safetensors(p)
    if p.suffix.lower() == ".mat":  # a MatConvNet model (relugeom.matconvnet), torchvision key names
        from .matconvnet import load_matconvnet

        net = load_matconvnet(p)
        return Checkpoint(p, net.state_dict, net.meta, {})
    sd, meta, extra = _unwrap(p, _torch_load(p, mmap))
    return Checkpoint(p, sd, meta, extra)


def _load_safetensors(p: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p}: cannot be read as safetensors ({str(e).splitlines()[0][:160]})") from None
    if not sd:
        raise CheckpointError(f"{p}: holds no tensors")
    meta = json.loads(header[_META_KEY]) if _META_KEY in header else {}
    return Checkpoint(p, _strip_prefix(sd), meta, {})


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """relugeom metadata of a checkpoint without reading its tensors (``{}`` for foreign files)."""
    p = Path(path)
    if p.suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{p}: cannot be read as safetensors ({str(e)[:160]})") from None
        return json.loads(header[_META_KEY]) if _META_KEY in header else {}
    obj = _torch_load(p, mmap=True)
    if isinstance(obj, Mapping) and obj.get("relugeom"):
        return dict(obj.get("meta", {}))
    return {}


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


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file through ``write(fileobj)`` atomically: temp file, flush, fsync, rename.

    The temp file lives in the target's folder under a hidden name (``.NAME.tmp-*``), so it is
    never mistaken for a finished file; on any error it is removed and the target is untouched. The
    finished file has the usual permissions (0666 less the umask), not the temp file's 0600.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.tmp-", dir=p.parent)
    try:
        # mkstemp makes the file private (0600); a finished file gets the mode open() would give it
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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

    epoch: int
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


_EPOCH_IN_NAME = re.compile(r"(?:epoch|ep|e)[_=\-]?(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")


def epoch_from_name(path: Path) -> int | None:
    """The epoch written in a file name: ``epoch_12``, ``ep12``, ``epoch=12``, else its last number."""
    stem = path.name
    for suffix in SUFFIXES:
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    m = _EPOCH_IN_NAME.search(stem)
    if m:
        return int(m.group(1))
    numbers = _NUMBER.findall(stem)
    return int(numbers[-1]) if numbers else None


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Checkpoint files of a run folder (its ``checkpoints/`` subfolder when there is one)."""
    folder = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.endswith(SUFFIXES)
    )  # fmt: skip


def checkpoint_series(run_dir: str | os.PathLike) -> list[SeriesEntry]:
    """The checkpoints of a run folder in epoch order.

    The epoch comes from relugeom's metadata inside each file; for foreign files, from a number in
    the file name (with a warning). Unreadable files and files without any epoch are reported as
    warnings and left out; a folder with no usable checkpoint is an error.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise CheckpointError(f"{run}: no such run folder")
    entries: dict[int, SeriesEntry] = {}
    from_names: list[str] = []
    for p in checkpoint_files(run):
        if p.name == "resume.pt":
            continue
        try:
            meta = read_meta(p)
        except CheckpointError as e:
            warn(f"{e}; skipped", SkippedWarning)
            continue
        epoch = meta.get("epoch")
        if epoch is None:
            epoch = epoch_from_name(p)
            if epoch is None:
                warn(f"{p}: no epoch in its metadata or its name; skipped", SkippedWarning)
                continue
            from_names.append(p.name)
        epoch = int(epoch)
        if epoch in entries:
            warn(f"{p}: epoch {epoch} already given by {entries[epoch].path.name}; skipped", SkippedWarning)
            continue
        entries[epoch] = SeriesEntry(epoch, p, meta)
    if from_names:
        shown = ", ".join(from_names[:3]) + (" ..." if len(from_names) > 3 else "")
        warn(f"{run}: epochs of {len(from_names)} file(s) read from their names ({shown}): no relugeom metadata")
    if not entries:
        raise CheckpointError(f"{run}: no readable checkpoint ({', '.join(SUFFIXES)}) in this folder")
    return [entries[e] for e in sorted(entries)]
