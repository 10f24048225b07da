"""What a PyTorch checkpoint file must look like before relugeom hands it to ``torch.load``.

``torch.load(weights_only=True)`` never runs code, but with ``mmap=True`` it trusts the file's
layout: a tensor record shorter than its pickle declares is mapped anyway (its tail is whatever
follows in the file: garbage weights, exit 0), and a tensor view is rebuilt without checking that it
fits its storage (an expanded, stride-0 view of a 4-byte storage can claim a billion elements and
take gigabytes once it is used). This module checks, in order:

* the file is a regular file (a FIFO would block ``open``, a device never ends);
* its first bytes are a zip archive (``torch.save`` since 1.6), a pickle (the legacy format) or a
  tar archive (very old torch); anything else is "not a checkpoint";
* for a zip: one ``data.pkl``, and every storage it references (read from the pickle's opcodes with
  :mod:`pickletools`, nothing executed) has a stored, uncompressed record of exactly the declared
  size inside the file; with ``verify=True`` every record's CRC-32 is checked too, as ``zipfile``
  does (it reads the whole file once: see ``benchmarks/bench_stats.py`` for the cost);
* after loading: every tensor lies inside its storage and holds no more elements than its storage
  (:func:`check_tensors`), before anything touches its values.
"""

from __future__ import annotations

import os
import pickletools
import stat
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import CheckpointError

ZIP_MAGIC = b"PK\x03\x04"
_STORAGE_DTYPES = {f"{name}Storage": dtype for name, dtype in (
    ("Float", torch.float32), ("Double", torch.float64), ("Half", torch.float16), ("BFloat16", torch.bfloat16),
    ("Long", torch.int64), ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8), ("Byte", torch.uint8),
    ("Bool", torch.bool), ("ComplexFloat", torch.complex64), ("ComplexDouble", torch.complex128))}  # fmt: skip
_MAX_PICKLE = 1 << 30  # a data.pkl larger than this is not a state dict (a decompression bomb at best)


def file_kind(path: Path, head: bytes) -> str:
    """``zip``, ``pickle`` or ``tar`` from a file's first 512 bytes; CheckpointError otherwise."""
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}"):  # pickle PROTO opcode (protocol 2+), or protocol 0/1
        return "pickle"
    if head[257:262] == b"ustar":
        return "tar"
    what = "an empty file" if not head else "neither a PyTorch zip archive nor a pickle"
    raise CheckpointError(f"{path}: not a checkpoint ({what})")


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, refusing at once anything but a regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise CheckpointError(f"{path}: is a folder; use checkpoint_series() for a run folder")
    _refuse_special(path, st.st_mode)
    try:  # O_NONBLOCK: a FIFO swapped in after the stat still cannot block the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        _refuse_special(path, os.fstat(fd).st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_special(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISFIFO(mode):
        kind = "a FIFO (named pipe)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    else:
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
    raise CheckpointError(f"{path}: is {kind}, not a checkpoint file")


def loadable_name(path: Path, fd: int) -> str | None:
    """A name ``torch.load`` can open for ``fd``: the path itself when it is valid UTF-8, else the
    descriptor's ``/proc/self/fd`` (or ``/dev/fd``) name; None when there is neither."""
    try:
        str(path).encode("utf-8")
        return str(path)
    except UnicodeEncodeError:
        pass
    for name in (f"/proc/self/fd/{fd}", f"/dev/fd/{fd}"):
        if os.path.exists(name):
            return name
    return None


class _Global:
    """A ``GLOBAL`` reference seen in a pickle (never imported)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


class _Unknown:
    """What the scanner does not evaluate (an object built by a call, a tensor, a storage)."""

    def __repr__(self) -> str:
        return "<not evaluated>"


UNKNOWN = _Unknown()


def scan(pickle_bytes: bytes) -> tuple[list[tuple[str, torch.dtype | None, int]], object]:
    """Read a torch ``data.pkl`` from its opcodes: ``(key, dtype, numel)`` of every storage it references,
    and its top-level object with literals, tuples, lists and dicts evaluated (anything built by a call,
    such as a tensor or an OrderedDict, is :data:`UNKNOWN`).

    A small stack machine over :func:`pickletools.genops`: nothing is imported or called. Raises ValueError
    on a malformed pickle.
    """
    stack: list[object] = []
    marks: list[int] = []
    memo: dict[int, object] = {}
    found: list[tuple[str, torch.dtype | None, int]] = []
    literal = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}

    def to_mark() -> list[object]:
        k = marks.pop()
        items = stack[k:]
        del stack[k:]
        return items

    def put(d: object, pairs: list[object]) -> None:
        if isinstance(d, dict):
            for key, value in zip(pairs[::2], pairs[1::2]):
                if isinstance(key, (str, int, float, bool, bytes)) or key is None:
                    d[key] = value

    for op, arg, _ in pickletools.genops(pickle_bytes):
        name = op.name
        if name == "MARK":
            marks.append(len(stack))
        elif name in literal:
            stack.append(literal[name])
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(int(arg), UNKNOWN))
        elif name == "GLOBAL":
            module, _, qual = str(arg).partition(" ")
            stack.append(_Global(module, qual))
        elif name == "STACK_GLOBAL":
            qual, module = stack.pop(), stack.pop()
            stack.append(_Global(str(module), str(qual)))
        elif name == "TUPLE":
            stack.append(tuple(to_mark()))
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = tuple(stack[-n:])
            del stack[-n:]
            stack.append(items)
        elif name == "EMPTY_TUPLE":
            stack.append(())
        elif name == "EMPTY_DICT":
            stack.append({})
        elif name == "EMPTY_LIST":
            stack.append([])
        elif name == "DICT":
            d: dict[object, object] = {}
            put(d, to_mark())
            stack.append(d)
        elif name == "LIST":
            stack.append(to_mark())
        elif name == "SETITEM":
            value, key = stack.pop(), stack.pop()
            put(stack[-1], [key, value])
        elif name == "SETITEMS":
            pairs = to_mark()
            put(stack[-1], pairs)
        elif name == "APPEND":
            value = stack.pop()
            if isinstance(stack[-1], list):
                stack[-1].append(value)  # type: ignore[attr-defined]
        elif name == "APPENDS":
            values = to_mark()
            if isinstance(stack[-1], list):
                stack[-1].extend(values)  # type: ignore[attr-defined]
        elif name == "BINPERSID":
            _record(stack.pop(), found)
            stack.append(UNKNOWN)
        elif name == "STOP":
            return found, stack[-1] if stack else UNKNOWN
        elif op.arg is not None and not op.stack_before and len(op.stack_after) == 1:
            stack.append(arg)  # ints, floats, strings, bytes
        else:
            before = op.stack_before
            if pickletools.markobject in before:
                to_mark()
                before = before[: before.index(pickletools.markobject)]
            if len(before) > len(stack):
                raise ValueError(f"pickle stack underflow at {name}")
            if before:
                del stack[len(stack) - len(before) :]
            stack.extend([UNKNOWN] * len(op.stack_after))
    raise ValueError("the pickle has no STOP")


def evaluated(obj: object) -> bool:
    """Whether ``obj`` (from :func:`scan`) holds no :data:`UNKNOWN` anywhere."""
    if obj is UNKNOWN or isinstance(obj, _Global):
        return False
    if isinstance(obj, dict):
        return all(evaluated(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(evaluated(v) for v in obj)
    return True


def _record(pid: object, found: list[tuple[str, torch.dtype | None, int]]) -> None:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
        return
    _, kind, key, _, numel = pid
    dtype = None
    if isinstance(kind, _Global) and kind.module == "torch" and kind.name.isidentifier():
        obj = getattr(torch, kind.name, None)
        dtype = obj if isinstance(obj, torch.dtype) else _STORAGE_DTYPES.get(kind.name)
    if not isinstance(dtype, torch.dtype):
        dtype = None
    if not isinstance(numel, int) or numel < 0:
        raise ValueError(f"storage {key!r} declares {numel!r} elements")
    found.append((str(key), dtype, numel))


def _data_offset(f: BinaryIO, info: zipfile.ZipInfo) -> int:
    f.seek(info.header_offset)
    header = f.read(30)
    if len(header) != 30 or not header.startswith(ZIP_MAGIC):
        raise CheckpointError("")
    n, m = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + n + m


_SCANNED: dict[tuple[int, int, int, int], object] = {}  # (device, inode, size, mtime_ns) -> top object


def check_zip(path: Path, f: BinaryIO, size: int, *, verify: bool = False) -> object:
    """Check a zip-format torch checkpoint's records against its pickle (see the module docstring) and
    return the pickle's top-level object as :func:`scan` reads it (no code runs, no tensor is read).

    A file whose layout passed is remembered by device, inode, size and modification time, so that the
    metadata pass and the loading pass of a series check it once; ``verify`` reads every CRC each time."""
    st = os.fstat(f.fileno())
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _SCANNED and not verify:
        return _SCANNED[key]
    top = _check_zip(path, f, size, verify=verify)
    if len(_SCANNED) > 4096:
        _SCANNED.clear()
    _SCANNED[key] = top
    return top


def _check_zip(path: Path, f: BinaryIO, size: int, *, verify: bool) -> object:
    try:
        zf = zipfile.ZipFile(f)
        infos = {i.filename: i for i in zf.infolist()}
        pickles = [n for n in infos if n == "data.pkl" or n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: a zip archive, but not a PyTorch checkpoint (no single data.pkl)")
        prefix = pickles[0][: -len("data.pkl")]
        if verify:
            bad = zf.testzip()
            if bad is not None:
                raise CheckpointError(f"{path}: record {bad} fails its CRC-32 check: the file is damaged")
        pkl_info = infos[pickles[0]]
        if pkl_info.file_size > _MAX_PICKLE:
            raise CheckpointError(f"{path}: its data.pkl claims {pkl_info.file_size} bytes; not a state dict")
        pkl = zf.read(pkl_info)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise CheckpointError(f"{path}: cannot be read as a PyTorch checkpoint, a damaged or truncated zip archive "
                              f"({_first_line(e)})") from None
    try:
        refs, top = scan(pkl)
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: not a checkpoint (its data.pkl is not a pickle: {_first_line(e)})") from None
    for key, dtype, numel in refs:
        info = infos.get(f"{prefix}data/{key}")
        if info is None:
            raise CheckpointError(f"{path}: tensor record data/{key} is missing: the file is damaged")
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{path}: tensor record data/{key} is compressed; PyTorch never writes that")
        if dtype is not None:
            need = numel * dtype.itemsize
            if info.file_size != need:
                raise CheckpointError(f"{path}: tensor record data/{key} holds {info.file_size} bytes where its "
                                      f"pickle declares {need}: the file is damaged or crafted")  # fmt: skip
        try:
            end = _data_offset(f, info) + info.file_size
        except (CheckpointError, OSError, struct.error):
            end = size + 1
        if end > size:
            raise CheckpointError(f"{path}: tensor record data/{key} runs past the end of the file: it is truncated")
    return top


def check_tensors(path: Path, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Every tensor inside its storage, no more elements than its storage holds, weights and biases real
    floating point (refused otherwise, naming the file and the tensor, before any value is read)."""
    for name, t in state_dict.items():
        if t.layout != torch.strided or t.is_quantized:
            raise CheckpointError(f"{path}: tensor {name!r} is sparse or quantized; relugeom reads dense tensors")
        leaf = name.rsplit(".", 1)[-1]
        if t.is_complex() or (leaf in ("weight", "bias") and not t.is_floating_point()):
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {str(t.dtype).replace('torch.', '')}; "
                                  "relugeom analyses real floating-point weights")  # fmt: skip
        if t.numel() == 0:
            continue
        capacity = t.untyped_storage().nbytes() // t.element_size()
        extent = t.storage_offset() + sum((s - 1) * st for s, st in zip(t.shape, t.stride())) + 1
        if extent > capacity or min(t.stride(), default=0) < 0:
            raise CheckpointError(f"{path}: tensor {name!r} reaches outside its storage ({extent} of {capacity} "
                                  "elements): the file is damaged or crafted")  # fmt: skip
        if t.numel() > capacity:
            gb = t.numel() * t.element_size() / 1e9
            raise CheckpointError(f"{path}: tensor {name!r} is an expanded view of {t.numel()} elements over a storage "
                                  f"of {capacity} ({gb:.1f} GB once used); refused: save it with .contiguous()")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]
