"""Readers of the standard on-disk formats: scikit-learn digits, CIFAR python pickles, MNIST idx files, and the
MNIST-1D generator (Greydanus and Kobak 2020, the ``mnist1d`` package).

Each returns ``(x_train, y_train, x_test, y_test)`` as numpy arrays, pixels in [0, 1] (MNIST-1D: the
package's values, already standardised by the package)."""

from __future__ import annotations

import functools
import gzip
import pickle
import random
import struct
import zlib
from pathlib import Path

import numpy as np

from ...errors import DataError


def _read_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    test = np.arange(len(y)) % 5 == 0
    return x[~test], y[~test], x[test], y[test]


def _find(data_dir: Path, names: list[str], what: str, how: str) -> Path:
    for name in names:
        for base in (data_dir, data_dir / "raw", data_dir / "MNIST" / "raw"):
            if (base / name).exists():
                return base / name
    raise DataError(f"{data_dir}: no {what} (looked for {', '.join(names)}). {how}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            # CIFAR batches are plain dicts of bytes, lists and numpy arrays; the restricted
            # unpickler refuses anything that would import other code.
            return _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as e:
        raise DataError(f"{path}: not a CIFAR python batch ({str(e)[:120]})") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }  # fmt: skip

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


_CIFAR_HOW = "Download the 'python version' archive from the CIFAR page and pass the extracted folder as --data-dir."


def _cifar_batch(path: Path, key: bytes, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch, checked: ``data`` is (N, 3072) bytes, ``key`` holds N labels in 0..classes-1."""
    d = _unpickle(path)
    if not isinstance(d, dict) or b"data" not in d or key not in d:
        raise DataError(f"{path}: not a CIFAR-{classes} batch (no 'data' and {key.decode()!r})")
    try:
        data, labels = np.asarray(d[b"data"]), np.asarray(d[key])
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: not a CIFAR-{classes} batch ({str(e)[:120]})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype.kind not in "ui":
        raise DataError(f"{path}: its 'data' is {data.dtype} of shape {data.shape}; a CIFAR batch holds "
                        "(N, 3072) bytes (3 x 32 x 32 pixels per row)")  # fmt: skip
    if data.size and (data.min() < 0 or data.max() > 255):
        raise DataError(f"{path}: its pixels run from {data.min()} to {data.max()}, not 0..255")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or labels.dtype.kind not in "ui":
        raise DataError(f"{path}: {labels.size} {key.decode()} for {data.shape[0]} images; a CIFAR batch has one "
                        "whole-number label per image")  # fmt: skip
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{path}: labels run from {labels.min()} to {labels.max()}, outside 0..{classes - 1} "
                        f"of CIFAR-{classes}")  # fmt: skip
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _read_cifar(data_dir: Path, classes: int) -> tuple[np.ndarray, ...]:
    folder = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
    base = data_dir / folder if (data_dir / folder).is_dir() else data_dir
    if classes == 10:
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, key = ["test_batch"], b"labels"
    else:
        train_files, test_files, key = ["train"], ["test"], b"fine_labels"
    missing = [f for f in train_files + test_files if not (base / f).exists()]
    if missing:
        raise DataError(f"{base}: CIFAR-{classes} files missing: {', '.join(missing)}. {_CIFAR_HOW}")

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for f in files:
            x, y = _cifar_batch(base / f, key, classes)
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs).astype(np.float32) / 255.0, np.concatenate(ys)

    return (*read(train_files), *read(test_files))


_MAX_IDX_BYTES = 1 << 32  # what the header of an idx file may claim (MNIST holds 47 MB; 4 GiB is plenty)


def _read_idx(path: Path) -> np.ndarray:
    """An idx file of bytes; only as many bytes as its header declares are read (and decompressed), so a
    gzip bomb cannot fill the memory, and a file shorter or longer than its header says is refused."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            zero, dtype, ndim = struct.unpack(">HBB", head)
            if zero != 0 or dtype != 0x08 or not 1 <= ndim <= 4:
                raise ValueError("bad magic number")
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            size = int(np.prod(dims, dtype=object))
            if size > _MAX_IDX_BYTES:
                raise ValueError(f"its header declares {size} bytes")
            data = f.read(size)
            if len(data) != size or f.read(1):
                raise ValueError(f"it holds {'fewer' if len(data) != size else 'more'} bytes than its header "
                                 f"declares ({'x'.join(map(str, dims))})")  # fmt: skip
        return np.frombuffer(data, dtype=np.uint8).reshape(dims)
    except (OSError, ValueError, struct.error, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not an idx file ({str(e)[:120]})") from None


def _read_mnist(data_dir: Path) -> tuple[np.ndarray, ...]:
    how = "Download the four MNIST idx files and pass their folder as --data-dir."
    out = []
    stems = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for stem in stems:
        path = _find(data_dir, [stem, f"{stem}.gz", stem.replace("-idx", ".idx")], f"MNIST file {stem}", how)
        out.append(_read_idx(path))
    xtr, ytr, xte, yte = out
    if len(xtr) != len(ytr) or len(xte) != len(yte):
        raise DataError(f"{data_dir}: MNIST images and labels disagree in number")
    if xtr.ndim != 3 or xte.ndim != 3 or ytr.ndim != 1 or yte.ndim != 1:
        raise DataError(f"{data_dir}: MNIST images must be N x H x W and labels N (got {xtr.shape}, {ytr.shape})")
    for y in (ytr, yte):
        if y.size and y.max() > 9:
            raise DataError(f"{data_dir}: MNIST labels run up to {y.max()}, outside 0..9")
    return (xtr[:, None].astype(np.float32) / 255.0, ytr.astype(np.int64),
            xte[:, None].astype(np.float32) / 255.0, yte.astype(np.int64))  # fmt: skip


MNIST1D_HOW = "install it with `pip install mnist1d` (or `pip install relugeom[mnist1d]`)"


def _generate_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The default MNIST-1D data set, generated offline by the package.

    ``mnist1d.data.make_dataset(get_dataset_args())``: the package's templates, default arguments and
    seed 42, 4000 training and 1000 test signals of length 40, the data set of the paper (its
    ``get_dataset`` would download a pickle instead; relugeom never calls it). ``make_dataset`` seeds
    the global ``random`` and ``numpy.random`` states; they are restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError(f"the mnist1d data set needs the mnist1d package: {MNIST1D_HOW}") from None
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002 (the package seeds them)
    try:
        d = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)  # noqa: NPY002
    x, xte = np.asarray(d["x"]), np.asarray(d["x_test"])
    return x, np.asarray(d["y"]), xte, np.asarray(d["y_test"])


def mnist1d_cache_file() -> Path | None:
    """Where the generated MNIST-1D arrays are kept between processes: ``$RELUGEOM_CACHE`` (``off``: nowhere),
    else ``$XDG_CACHE_HOME/relugeom`` or ``~/.cache/relugeom``; the name carries the package's version and a
    hash of its default arguments, so another version or other defaults generate afresh."""
    import hashlib
    import os
    from importlib.metadata import PackageNotFoundError, version

    env = os.environ.get("RELUGEOM_CACHE")
    if env is not None and env.strip().lower() in ("", "0", "off", "none"):
        return None
    try:
        from mnist1d.data import get_dataset_args

        args = {k: v for k, v in get_dataset_args(as_dict=True).items() if k != "url"}
        ver = version("mnist1d")
    except (ImportError, PackageNotFoundError):
        return None
    key = hashlib.sha256(repr(sorted(args.items())).encode()).hexdigest()[:12]
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relugeom"
    return base / f"mnist1d-{ver}-{key}.npz"


_MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_generate_mnist1d`, kept for the process and in :func:`mnist1d_cache_file` (written atomically,
    read with ``allow_pickle=False``; an unreadable or malformed cache file is generated again)."""
    path = mnist1d_cache_file()
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = tuple(np.asarray(f[k]) for k in _MNIST1D_KEYS)
            x, y, xte, yte = arrays
            if x.ndim == 2 and xte.ndim == 2 and len(x) == len(y) and len(xte) == len(yte) and x.shape[1] == \
                    xte.shape[1] and y.dtype.kind in "iu" and yte.dtype.kind in "iu":  # fmt: skip
                return arrays  # type: ignore[return-value]
        except (OSError, ValueError, KeyError, EOFError):
            pass
    arrays = _generate_mnist1d()
    if path is not None:
        import io

        from ...checkpoints import atomic_write
        from ...errors import RelugeomError

        buf = io.BytesIO()
        np.savez(buf, **dict(zip(_MNIST1D_KEYS, arrays)))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda f: f.write(buf.getvalue()))
        except (OSError, RelugeomError):  # a cache that cannot be written only costs time
            pass
    return arrays


def _read_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D as (N, 1, 40) float32 signals and int64 labels (see :func:`_generate_mnist1d`)."""
    x, y, xte, yte = _mnist1d_arrays()
    return (x[:, None].astype(np.float32), y.astype(np.int64),
            xte[:, None].astype(np.float32), yte.astype(np.int64))  # fmt: skip
