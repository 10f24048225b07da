"""MatConvNet models (``.mat``): the SimpleNN layout read into a PyTorch ConvNet with torchvision's key names.

Gamba et al. (2020, figs. 13-14) show the projection statistic of the VGG16 and AlexNet released in the MatConvNet
model zoo (``imagenet-vgg-verydeep-16.mat``, ``imagenet-caffe-alex.mat``). Those files hold a SimpleNN network
(MatConvNet's ``vl_simplenn`` format):

* ``layers``: a cell array of structs, in execution order, each with ``type`` and ``name``; ``conv`` layers carry
  ``weights = {filters, biases}`` (older files: ``filters``, ``biases``), ``stride`` and ``pad``; ``pool`` layers
  ``method`` (max/avg), ``pool`` (window), ``stride``, ``pad``; ``relu`` an optional ``leak``; ``normalize``/``lrn``
  ``param = [N kappa alpha beta]``; ``dropout`` a ``rate``; ``softmax`` nothing.
* ``meta`` (older files: top-level ``normalization`` and ``classes``): ``normalization.imageSize`` (H W C),
  ``normalization.averageImage`` and ``classes.name``/``description``.

Filters are H x W x C x O arrays (MATLAB's row, column, channel, filter: ``filters(y, x, c, o)``); PyTorch's
Conv2d weight is O x C x H x W, so the weight is ``filters.transpose(3, 2, 0, 1)``. A filter bank whose depth C
divides the incoming channels D forms D / C groups (AlexNet's conv2, 4, 5). Fully connected layers are stored as
convolutions whose support covers the whole incoming map (VGG16's fc6: 7 x 7 x 512 x 4096, then 1 x 1 x 4096 x
4096 and 1 x 1 x 4096 x 1000); they become ``nn.Linear`` layers whose weight is the same transpose flattened in
PyTorch's (C, H, W) order, so that ``flatten`` followed by the linear layer computes exactly the convolution.

The result is relugeom's ``ConvNet`` layout (``features`` -> ``avgpool`` -> flatten -> ``classifier``), with
torchvision's indices: ``features.N`` counts the feature layers in file order (VGG16's conv1_1 is
``features.0``, conv5_3 ``features.28``, as in torchvision), the classifier is torchvision's VGG layout
(Linear, ReLU, Dropout, ...: ``classifier.0/3/6``) or, for a Caffe AlexNet (11 x 11 stride-4 first layer),
torchvision's AlexNet layout (Dropout, Linear, ReLU, ...: ``classifier.1/4/6``). A file whose network equals
relugeom's ``vgg11/13/16/19`` is labelled with that architecture; ``imagenet-caffe-alex.mat`` is the original
AlexNet of Krizhevsky et al. (96-256-384-384-256 filters, grouped convolutions, local response normalisation),
which torchvision's AlexNet (64-192-384-256-256) is not, so it is labelled ``alexnet_caffe`` and built from the
file. The final softmax is left out (the model returns logits); dropout is the identity in evaluation.

MatConvNet networks expect H x W x C images in [0, 255] minus ``averageImage``; the converted model takes the
same values as a (C, H, W) tensor (``meta["mean"]`` holds the average pixel). Version 5/7 files are read with
``scipy.io``; version 7.3 (HDF5) files need the ``mat73`` package (``pip install relugeom[matconvnet]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._repr import short_repr
from .errors import CheckpointError, UnsupportedLayerError

MAT_SUFFIX = ".mat"
_HOW_V73 = "it is a MATLAB v7.3 (HDF5) file: install the mat73 package (pip install relugeom[matconvnet])"


@dataclass
class McnLayer:
    """One SimpleNN layer, with MATLAB's conventions (1-based nothing: all fields as stored)."""

    __repr__ = short_repr

    type: str
    name: str
    fields: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass
class SimpleNN:
    """A MatConvNet SimpleNN network as read from a ``.mat`` file."""

    __repr__ = short_repr

    path: Path
    layers: list[McnLayer]
    image_size: tuple[int, ...] | None = None  # (H, W, C) from meta.normalization.imageSize
    average_image: np.ndarray | None = None
    n_classes_named: int | None = None


# ------------------------------------------------------------------------------------------------ reading
def _plain(x: Any) -> Any:
    """scipy.io's nested (1, 1) object arrays and mat_structs as plain Python values (dicts, lists, arrays, str)."""
    from scipy.io.matlab import mat_struct

    if isinstance(x, mat_struct):
        return {name: _plain(getattr(x, name)) for name in x._fieldnames}
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "US":
            return "".join(str(s) for s in x.ravel())
        if x.dtype == object:
            items = [_plain(v) for v in x.ravel(order="F")]
            return items[0] if x.size == 1 and not isinstance(items[0], (np.ndarray, list)) else items
        if x.dtype.names:  # a struct array read as a record array
            recs = [{n: _plain(r[n]) for n in x.dtype.names} for r in x.ravel(order="F")]
            return recs[0] if len(recs) == 1 else recs
    return x


def _read_raw(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        raw = scipy.io.loadmat(str(path), squeeze_me=False, struct_as_record=False, mat_dtype=False)
    except NotImplementedError:  # v7.3: HDF5
        try:
            import mat73
        except ImportError:
            raise CheckpointError(f"{path}: {_HOW_V73}") from None
        try:
            return dict(mat73.loadmat(str(path)))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: cannot be read as a MATLAB v7.3 file ({str(e)[:160]})") from None
    except (ValueError, TypeError, OSError, EOFError, AssertionError) as e:
        raise CheckpointError(f"{path}: cannot be read as a MATLAB .mat file ({str(e)[:160]})") from None
    return {k: _plain(v) for k, v in raw.items() if not k.startswith("__")}


def _as_list(x: Any) -> list[Any]:
    if x is None:
        return []
    if isinstance(x, dict):
        return [x]
    return list(x)


def read_simplenn(path: str | Path) -> SimpleNN:
    """The SimpleNN network of a MatConvNet ``.mat`` file (v5/v7 through scipy.io, v7.3 through mat73).

    Raises :class:`CheckpointError` naming the file when it is not a SimpleNN network (a DagNN file, with
    ``params`` and layer ``block`` s, is refused with that explanation).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such file")
    raw = _read_raw(p)
    if "layers" not in raw:
        raise CheckpointError(f"{p}: no 'layers' variable, so not a MatConvNet network (variables: "
                              f"{', '.join(sorted(raw)) or 'none'})")  # fmt: skip
    if "params" in raw:
        raise CheckpointError(f"{p}: a MatConvNet DagNN network (layers + params); relugeom reads the SimpleNN "
                              "layout (convert with dagnn.DagNN.loadobj(...).saveobj() is not enough: use a SimpleNN "
                              "model such as imagenet-vgg-verydeep-16.mat)")  # fmt: skip
    layers = []
    for i, rec in enumerate(_as_list(raw["layers"])):
        if not isinstance(rec, dict) or "type" not in rec:
            raise CheckpointError(f"{p}: layers{{{i + 1}}} is not a struct with a 'type' field")
        name = rec.get("name")
        layers.append(McnLayer(str(rec["type"]), str(name) if isinstance(name, str) and name else f"layer{i + 1}",
                               rec))  # fmt: skip
    meta = raw.get("meta") if isinstance(raw.get("meta"), dict) else {}
    norm = meta.get("normalization", raw.get("normalization"))
    norm = norm if isinstance(norm, dict) else {}
    size = norm.get("imageSize")
    image_size = None
    if size is not None and np.size(size) >= 2:
        s = [int(v) for v in np.ravel(size)]
        image_size = (s[0], s[1], s[2] if len(s) > 2 else 3)
    avg = norm.get("averageImage")
    classes = meta.get("classes", raw.get("classes"))
    names = classes.get("name") if isinstance(classes, dict) else None
    n_named = len(names) if isinstance(names, list) else None
    return SimpleNN(p, layers, image_size, None if avg is None else np.asarray(avg, dtype=np.float64), n_named)


# ------------------------------------------------------------------------------------------------ conversion
def _ints(v: Any, n: int, what: str, where: str) -> tuple[int, ...]:
    a = np.ravel(np.asarray(1 if v is None else v, dtype=np.float64))
    if a.size == 1:
        a = np.repeat(a, n)
    if a.size != n or not np.all(a == np.round(a)):
        raise UnsupportedLayerError(f"{where}: {what} {np.ravel(v).tolist()} is not {n} integers")
    return tuple(int(x) for x in a)


def _pad(v: Any, where: str) -> tuple[int, int, int, int]:
    a = np.ravel(np.asarray(0 if v is None else v, dtype=np.float64))
    if a.size == 1:
        a = np.repeat(a, 4)
    elif a.size == 2:
        a = np.repeat(a, 2)
    if a.size != 4:
        raise UnsupportedLayerError(f"{where}: pad {a.tolist()} is not [top bottom left right]")
    return tuple(int(x) for x in a)  # type: ignore[return-value]


def _filters_biases(layer: McnLayer, where: str) -> tuple[np.ndarray, np.ndarray]:
    f = layer.fields
    w = f.get("weights")
    if isinstance(w, (list, tuple)) and len(w) >= 1:
        filters, biases = w[0], (w[1] if len(w) > 1 else None)
    elif "filters" in f:  # MatConvNet before beta-12
        filters, biases = f["filters"], f.get("biases")
    else:
        raise UnsupportedLayerError(f"{where}: a conv layer without weights {{filters, biases}}")
    filters = np.asarray(filters, dtype=np.float32)
    if filters.ndim > 4 or filters.size == 0:
        raise UnsupportedLayerError(f"{where}: filters of shape {filters.shape} (expected H x W x C x O)")
    filters = filters.reshape(filters.shape + (1,) * (4 - filters.ndim))  # MATLAB drops trailing singletons
    o = filters.shape[3]
    biases = np.zeros(o, np.float32) if biases is None or np.size(biases) == 0 else np.ravel(
        np.asarray(biases, dtype=np.float32))
    if biases.size != o:
        raise UnsupportedLayerError(f"{where}: {biases.size} biases for {o} filters")
    if not (np.isfinite(filters).all() and np.isfinite(biases).all()):
        raise UnsupportedLayerError(f"{where}: filters or biases contain NaN or inf")
    return filters, biases


def _square(v: tuple[int, int]) -> int | tuple[int, int]:
    return v[0] if v[0] == v[1] else v


def _out(n: int, k: int, s: int, lo: int, hi: int) -> int:
    return (n + lo + hi - k) // s + 1


@dataclass
class Converted:
    """A converted network: the model (float32, eval mode), its state dict and what relugeom knows of it."""

    __repr__ = short_repr

    model: nn.Module
    arch: str
    input_shape: tuple[int, int, int] | None
    meta: dict[str, Any]

    @property
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.model.state_dict().items()}


def _classifier_start(net: SimpleNN) -> int:
    """Index of the first fully connected layer: the suffix after the last pooling whose convolutions, after the
    first, are all 1 x 1 (the fc-as-conv layers); ``len(layers)`` when there is none."""
    convs = [i for i, l in enumerate(net.layers) if l.type == "conv"]
    last_pool = max((i for i, l in enumerate(net.layers) if l.type == "pool"), default=-1)
    tail = [i for i in convs if i > last_pool]
    start = len(net.layers)
    for i in reversed(tail):
        start = i
        filters, _ = _filters_biases(net.layers[i], "")
        if filters.shape[0] * filters.shape[1] > 1:
            break
    return start


def convert(net: SimpleNN) -> Converted:
    """The PyTorch model of a SimpleNN network (see the module docstring), checked layer by layer on its shapes.

    Raises :class:`UnsupportedLayerError` naming the file and layer for what has no exact PyTorch counterpart
    (batch norm, asymmetric conv padding, an even LRN window, a leaky ReLU, custom layers).
    """
    from .zoo.vgg import ConvNet

    fc0 = _classifier_start(net)
    channels = net.image_size[2] if net.image_size else None
    hw = net.image_size[:2] if net.image_size else None
    features: list[nn.Module] = []
    classifier_parts: list[tuple[nn.Linear, bool]] = []  # (linear, followed by a ReLU)
    alex_style = False
    dropped: list[str] = []
    fc_support: tuple[int, int] | None = None
    first_conv = True
    for i, layer in enumerate(net.layers):
        where = f"{net.path}: layer {i + 1} ({layer.name!r}, {layer.type})"
        t = layer.type.lower()
        f = layer.fields
        if t == "conv":
            filters, biases = _filters_biases(layer, where)
            kh, kw, c, o = filters.shape
            if channels is None:
                channels = c
            if channels % c:
                raise UnsupportedLayerError(f"{where}: filters of depth {c} on {channels} channels (not a divisor)")
            groups = channels // c
            stride = _ints(f.get("stride"), 2, "stride", where)
            top, bottom, left, right = _pad(f.get("pad"), where)
            dil = _ints(f.get("dilate", 1), 2, "dilate", where)
            if i >= fc0:
                if (top, bottom, left, right) != (0, 0, 0, 0) or groups != 1 or dil != (1, 1):
                    raise UnsupportedLayerError(f"{where}: a fully connected layer with padding, groups or dilation")
                if hw is not None and hw != (kh, kw) and not (hw == (1, 1) and kh == kw == 1):
                    raise UnsupportedLayerError(f"{where}: a {kh}x{kw} fully connected layer on a {hw[0]}x{hw[1]} map")
                if fc_support is None:
                    fc_support = (kh, kw)
                lin = nn.Linear(c * kh * kw, o)
                with torch.no_grad():
                    lin.weight.copy_(torch.from_numpy(filters.transpose(3, 2, 0, 1).reshape(o, -1).copy()))
                    lin.bias.copy_(torch.from_numpy(biases))
                classifier_parts.append((lin, False))
                hw = (1, 1)
            else:
                if top != bottom or left != right:
                    raise UnsupportedLayerError(f"{where}: asymmetric padding {[top, bottom, left, right]} "
                                                "(PyTorch's Conv2d pads both sides alike)")  # fmt: skip
                conv = nn.Conv2d(channels, o, (kh, kw), stride=stride, padding=(top, left), dilation=dil,
                                 groups=groups)  # fmt: skip
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(filters.transpose(3, 2, 0, 1).copy()))
                    conv.bias.copy_(torch.from_numpy(biases))
                features.append(conv)
                if first_conv and (kh, kw) == (11, 11) and stride == (4, 4):
                    alex_style = True
                first_conv = False
                if hw is not None:
                    hw = (_out(hw[0], dil[0] * (kh - 1) + 1, stride[0], top, bottom),
                          _out(hw[1], dil[1] * (kw - 1) + 1, stride[1], left, right))  # fmt: skip
            channels = o
        elif t == "relu":
            leak = f.get("leak")
            if leak is not None and np.size(leak) and float(np.ravel(leak)[0]) != 0:
                raise UnsupportedLayerError(f"{where}: a leaky ReLU (leak {float(np.ravel(leak)[0])})")
            if i >= fc0:
                if not classifier_parts:
                    raise UnsupportedLayerError(f"{where}: a ReLU before the first fully connected layer")
                classifier_parts[-1] = (classifier_parts[-1][0], True)
            else:
                features.append(nn.ReLU(inplace=True))
        elif t == "pool":
            if i >= fc0:
                raise UnsupportedLayerError(f"{where}: pooling between fully connected layers")
            k = _ints(f.get("pool"), 2, "pool", where)
            stride = _ints(f.get("stride"), 2, "stride", where)
            top, bottom, left, right = _pad(f.get("pad"), where)
            method = str(f.get("method", "max")).lower()
            ceil = False
            if (top, left) != (bottom, right):
                # MatConvNet's extra bottom/right padding (Caffe's ceil rounding): ceil_mode, when it gives
                # the same output size
                ceil = bottom - top in (0, 1) and right - left in (0, 1)
                if not ceil or hw is None or any(
                    _out(n, kk, ss, a, b) != math.ceil((n + 2 * a - kk) / ss) + 1
                    for n, kk, ss, a, b in ((hw[0], k[0], stride[0], top, bottom), (hw[1], k[1], stride[1], left,
                                                                                      right))):  # fmt: skip
                    raise UnsupportedLayerError(f"{where}: pooling padding {[top, bottom, left, right]} has no "
                                                "PyTorch equivalent (on this input size)")  # fmt: skip
            kk, ss, pp = _square(k), _square(stride), _square((top, left))  # torchvision's ints where square
            if method == "max":
                features.append(nn.MaxPool2d(kk, ss, padding=pp, ceil_mode=ceil))
            elif method == "avg" and (top, bottom, left, right) == (0, 0, 0, 0):
                features.append(nn.AvgPool2d(kk, ss))
            else:
                raise UnsupportedLayerError(f"{where}: {method} pooling with padding is not supported")
            if hw is not None:
                hw = (_out(hw[0], k[0], stride[0], top, bottom), _out(hw[1], k[1], stride[1], left, right))
        elif t in ("normalize", "lrn"):
            if i >= fc0:
                raise UnsupportedLayerError(f"{where}: normalisation between fully connected layers")
            prm = np.ravel(np.asarray(f.get("param"), dtype=np.float64))
            if prm.size != 4 or int(prm[0]) != prm[0] or int(prm[0]) % 2 == 0:
                raise UnsupportedLayerError(f"{where}: LRN param {prm.tolist()} (need [N kappa alpha beta], N odd)")
            n, kappa, alpha, beta = prm
            # vl_nnnormalize: x / (kappa + alpha sum_window x^2)^beta; PyTorch divides alpha by the window size
            features.append(nn.LocalResponseNorm(int(n), alpha=float(alpha * n), beta=float(beta), k=float(kappa)))
        elif t == "dropout":
            if i < fc0:
                features.append(nn.Dropout(float(np.ravel(f.get("rate", 0.5))[0])))
        elif t in ("softmax", "softmaxloss", "loss"):
            if i != len(net.layers) - 1:
                raise UnsupportedLayerError(f"{where}: {t} is not the last layer")
            dropped.append(f"{layer.name} ({t})")
        else:
            raise UnsupportedLayerError(f"{where}: layer type {layer.type!r} is not supported (conv, relu, pool, "
                                        "normalize/lrn, dropout, softmax)")  # fmt: skip
    if not classifier_parts:
        raise UnsupportedLayerError(f"{net.path}: no fully connected layer at the end (a fully convolutional "
                                    "network); relugeom converts classification ConvNets")  # fmt: skip
    mods: list[nn.Module] = []
    for j, (lin, relu) in enumerate(classifier_parts):
        last = j == len(classifier_parts) - 1
        if alex_style and not last:
            mods.append(nn.Dropout(0.5))
        mods.append(lin)
        if not last:
            if not relu:
                raise UnsupportedLayerError(f"{net.path}: fully connected layer {j + 1} is not followed by a ReLU")
            mods.append(nn.ReLU(inplace=True))
            if not alex_style:
                mods.append(nn.Dropout(0.5))
    support = fc_support or (1, 1)
    model = ConvNet(nn.Sequential(*features), nn.AdaptiveAvgPool2d(support), nn.Sequential(*mods)).eval()
    input_shape = None
    if net.image_size:
        input_shape = (net.image_size[2], net.image_size[0], net.image_size[1])
    arch = _label(model, input_shape, alex_style)
    meta: dict[str, Any] = {"arch": arch, "source": "matconvnet", "pretrained": True, "file": str(net.path),
                            "layers": [f"{l.name} ({l.type})" for l in net.layers], "dropped": dropped}  # fmt: skip
    if input_shape:
        meta["input_shape"] = list(input_shape)
    if net.average_image is not None and net.average_image.size:
        avg = net.average_image
        meta["mean"] = [float(v) for v in (avg.reshape(-1, avg.shape[-1]).mean(0) if avg.ndim == 3 else np.ravel(avg))]
    meta["num_classes"] = int(classifier_parts[-1][0].out_features)
    return Converted(model, arch, input_shape, meta)


def _label(model: nn.Module, input_shape: tuple[int, int, int] | None, alex_style: bool) -> str:
    """relugeom's name of the architecture when the converted network is exactly it (same modules, same
    hyper-parameters, same state-dict shapes), else ``alexnet_caffe`` for a Caffe AlexNet or ``matconvnet``."""
    from .errors import RelugeomError
    from .zoo.vgg import VGG_CFGS, vgg_factory

    sd = model.state_dict()
    n_convs = sum(1 for v in sd.values() if v.dim() == 4)
    for arch in ("vgg11", "vgg13", "vgg16", "vgg19"):
        if n_convs != sum(1 for v in VGG_CFGS[arch] if v != "M") or "classifier.6.weight" not in sd:
            continue
        try:
            with torch.device("meta"):
                ref = vgg_factory(arch, False)(num_classes=int(sd["classifier.6.weight"].shape[0]),
                                          in_channels=int(sd["features.0.weight"].shape[1]),
                                          image_size=input_shape[1] if input_shape else 224,
                                          hidden=int(sd["classifier.0.weight"].shape[0]),
                                          pool=int(model.avgpool.output_size[0]))  # fmt: skip
        except (KeyError, RelugeomError):
            continue
        same_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()} == {
            k: tuple(v.shape) for k, v in sd.items()}  # fmt: skip
        if same_shapes and [repr(m) for m in ref.modules()][1:] == [repr(m) for m in model.modules()][1:]:
            return arch
    return "alexnet_caffe" if alex_style else "matconvnet"


def load_matconvnet(path: str | Path) -> Converted:
    """Read a MatConvNet SimpleNN ``.mat`` file and convert it (see the module docstring).

    Example
    -------
    >>> import tempfile, numpy as np, scipy.io
    >>> f = np.ones((3, 3, 1, 2), np.float32); fc = np.ones((4, 4, 2, 3), np.float32)
    >>> layers = np.empty((1, 4), object)
    >>> layers[0, 0] = {"type": "conv", "name": "conv1", "weights": np.array([[f, np.zeros((1, 2), np.float32)]],
    ...                 dtype=object), "stride": 1.0, "pad": 1.0}
    >>> layers[0, 1] = {"type": "relu", "name": "relu1"}
    >>> layers[0, 2] = {"type": "pool", "name": "pool1", "method": "max", "pool": 2.0, "stride": 2.0, "pad": 0.0}
    >>> layers[0, 3] = {"type": "conv", "name": "fc", "weights": np.array([[fc, np.zeros((1, 3), np.float32)]],
    ...                 dtype=object), "stride": 1.0, "pad": 0.0}
    >>> path = tempfile.mkdtemp() + "/tiny.mat"
    >>> scipy.io.savemat(path, {"layers": layers, "meta": {"normalization": {"imageSize": [8.0, 8.0, 1.0]}}})
    >>> net = load_matconvnet(path)
    >>> sorted(net.state_dict), net.input_shape
    (['classifier.0.bias', 'classifier.0.weight', 'features.0.bias', 'features.0.weight'], (1, 8, 8))
    """
    return convert(read_simplenn(path))
