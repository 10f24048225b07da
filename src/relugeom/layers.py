"""Find the affine layers (Conv1d/2d/3d, Linear) of any ``nn.Module`` or state dict.

Every analysis starts here. A layer is described by an :class:`AffineLayer`: its dotted module
name (as in ``named_modules()``), kind, weight, bias, convolution hyper-parameters, and its
position: ``layer_index`` (0-based among the selected layers, in module order), ``stage`` and
``block`` (index inside the stage). Which modules are affine layers is asked
of the layer-rule registry (:mod:`relugeom.modules`, role ``"layer"``); a module with weights of its
own that no rule covers (a transposed convolution, attention) is left out with a warning naming it.

``stage`` is the resolution level of the layer's output, read from the network's graph
(:mod:`relugeom.graph`): 0 at the input, +1 wherever the network downsamples (a pooling or a
convolution with stride > 1, read by each node's rule from its hyper-parameters; a convolution without
padding that only trims the border does not count), so a ResNet's ``layer1``..``layer4`` are four
stages and the strided first convolution of a stage and its downsampling shortcut belong to the stage
they produce. An adaptive pooling counts where it shrinks the map: with ``input_shape`` the sizes
decide, without it counts as shrinking. When the model cannot be traced with ``torch.fx`` and no
``input_shape`` is given, ``stage`` and ``block`` are unknown (NA), with a warning.

From a bare state dict, conv vs. linear comes from the weight's rank (3, 4, 5 -> conv1d/2d/3d,
2 -> linear); hyper-parameters, stages and input shapes are then unknown (``None``/NA), since a
state dict holds no pooling or stride information; pass the architecture to get them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import pandas as pd
import torch
from torch import nn

from ._repr import short_repr
from .errors import LayerError, RelugeomWarning, UnsupportedLayerError, warn
from .modules import rule_for_module
from .modules.batchnorm import batchnorm_affine
from .modules.registry import skip_warning

_RANK_KIND = {2: "linear", 3: "conv1d", 4: "conv2d", 5: "conv3d"}
__all__ = ["AffineLayer", "as_affine", "batchnorm_affine", "check_finite", "find_layers", "layer_table"]


@dataclass(frozen=True)
class AffineLayer:
    """One affine layer: ``y = W * x + b`` (a convolution or a matrix product).

    ``weight`` keeps the layer's own dtype and device; analyses convert (to float64 for geometry).
    Convolution hyper-parameters are ``None`` when the layer came from a bare state dict.

    Example
    -------
    >>> conv = find_layers(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))[0]
    >>> conv.name, conv.kind, conv.out_channels, conv.filter_numel, conv.kernel_size
    ('0', 'conv2d', 4, 27, (3, 3))
    """

    __repr__ = short_repr

    name: str
    kind: str
    weight: torch.Tensor = field(repr=False)
    bias: torch.Tensor | None = field(repr=False)
    layer_index: int = 0
    stage: int | None = None
    block: int | None = None
    stride: tuple[int, ...] | None = None
    padding: tuple[int, ...] | str | None = None
    dilation: tuple[int, ...] | None = None
    groups: int | None = None
    padding_mode: str | None = None
    input_shape: tuple[int, ...] | None = None
    output_shape: tuple[int, ...] | None = None
    module: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def is_conv(self) -> bool:
        return self.kind != "linear"

    @property
    def out_channels(self) -> int:
        """Number of filters (output channels, or rows of a linear weight)."""
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * (self.groups or 1)

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.weight.shape[2:])

    @property
    def is_pointwise(self) -> bool:
        """A conv whose kernel covers one spatial position (1x1, 1x1x1, k=1)."""
        return self.is_conv and all(k == 1 for k in self.kernel_size)

    @property
    def filter_numel(self) -> int:
        """Entries of one filter: C/groups * prod(kernel) for a conv, in_features for a linear layer."""
        return int(self.weight[0].numel())

    def filters(self) -> torch.Tensor:
        """The weight as an (F, filter_numel) matrix, one filter per row (a view where possible)."""
        return self.weight.reshape(self.out_channels, -1)


def _tuple(v: object, n: int) -> tuple[int, ...]:
    if isinstance(v, int):
        return (v,) * n
    return tuple(int(x) for x in v)  # type: ignore[union-attr]


def _kind(module: nn.Module) -> str | None:
    """"linear", "conv1d/2d/3d" for a module whose rule makes it an affine layer, else None."""
    rule = rule_for_module(module)
    if rule is None or rule.role != "layer":
        return None
    return "linear" if rule.family == "linear" else _RANK_KIND.get(module.weight.dim(), "conv")


def _from_module(name: str, module: nn.Module) -> AffineLayer:
    kind = _kind(module)
    weight = module.weight.detach()
    bias = None if module.bias is None else module.bias.detach()
    if kind == "linear":
        return AffineLayer(name, kind, weight, bias, module=module)
    n = weight.dim() - 2
    padding = module.padding if isinstance(module.padding, str) else _tuple(module.padding, n)
    return AffineLayer(
        name, kind, weight, bias,
        stride=_tuple(module.stride, n), padding=padding, dilation=_tuple(module.dilation, n),
        groups=int(module.groups), padding_mode=str(module.padding_mode), module=module,
    )  # fmt: skip


def as_affine(layer: nn.Module | AffineLayer, name: str = "") -> AffineLayer:
    """An :class:`AffineLayer` for a Conv1d/2d/3d or Linear module (an AffineLayer is returned as is)."""
    if isinstance(layer, AffineLayer):
        return layer
    if isinstance(layer, nn.Module) and _kind(layer) is not None:
        return _from_module(name or type(layer).__name__, layer)
    raise UnsupportedLayerError(
        f"{type(layer).__name__} is not an affine layer (Conv1d/2d/3d or Linear); cannot treat it"
    )


def _module_layers(model: nn.Module) -> list[AffineLayer]:
    """The affine layers in module order; modules with weights of their own and no rule are named in a
    warning (never dropped silently)."""
    out: list[AffineLayer] = []
    skipped = []
    for name, module in model.named_modules():
        if _kind(module) is not None:
            out.append(_from_module(name, module))
        elif rule_for_module(module) is None and any(True for _ in module.parameters(recurse=False)):
            skipped.append(f"module {name!r} ({type(module).__name__})")
    skip_warning(skipped, "the layer list (affine layers: Linear, Conv1d/2d/3d)")
    return out


def _state_dict_layers(state_dict: Mapping[str, torch.Tensor]) -> list[AffineLayer]:
    out: list[AffineLayer] = []
    for key, value in state_dict.items():
        if not key.endswith("weight") or not isinstance(value, torch.Tensor):
            continue
        kind = _RANK_KIND.get(value.dim())
        if kind is None:
            continue  # BN/LayerNorm scales (rank 1) and anything exotic
        name = key[: -len("weight")].rstrip(".")
        bias = state_dict.get(f"{name}.bias" if name else "bias")
        out.append(AffineLayer(name, kind, value.detach(), None if bias is None else bias.detach()))
    return out


def _positions(model: nn.Module, layers: list[AffineLayer], input_shape: tuple[int, ...] | None) -> list[AffineLayer]:
    """Stage (resolution level of the output) and, with ``input_shape``, input and output shapes of each layer,
    from the model's graph (its first call of each layer)."""
    from .graph import walk

    try:
        graph = walk(model, input_shape=input_shape)
    except UnsupportedLayerError as e:
        warn(f"{type(model).__name__}: stages unknown: {e}; pass input_shape", RelugeomWarning)
        return layers
    shapes = graph.shapes(input_shape) if input_shape is not None else None
    levels = graph.levels(shapes)
    out = []
    for layer in layers:
        calls = graph.calls(layer.name)
        if not calls:
            out.append(layer)
            continue
        node = calls[0]
        shape_in = shapes.get(node.inputs[0]) if shapes is not None and node.inputs else None
        shape_out = shapes.get(node) if shapes is not None else None
        out.append(replace(layer, stage=levels[node], input_shape=shape_in, output_shape=shape_out))
    return out


def find_layers(
    source: nn.Module | Mapping[str, torch.Tensor],
    *,
    input_shape: tuple[int, ...] | None = None,
    conv: bool = True,
    linear: bool = True,
    pointwise: bool = True,
) -> list[AffineLayer]:
    """The affine layers of a module or state dict, in module order.

    Parameters
    ----------
    source
        An ``nn.Module`` or a state dict (name -> tensor).
    input_shape
        Shape of one example input without the batch axis, e.g. ``(3, 32, 32)``; when given with a
        module, each layer's ``input_shape`` and ``output_shape`` are filled in.
    conv, linear, pointwise
        Which layers to keep: convolutions, linear layers, and (among convs) those with a kernel of
        one spatial position. ``layer_index`` and ``block`` count the kept layers only.

    Example
    -------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3))
    >>> [(l.name, l.stage, l.block) for l in find_layers(net)]
    [('0', 0, 0), ('3', 1, 0)]
    """
    if isinstance(source, nn.Module):
        layers = _module_layers(source)
        if layers:
            layers = _positions(source, layers, None if input_shape is None else tuple(input_shape))
    elif isinstance(source, Mapping):
        layers = _state_dict_layers(source)
    else:
        raise TypeError(f"expected an nn.Module or a state dict, got {type(source).__name__}")
    kept = [
        layer for layer in layers
        if (linear if layer.kind == "linear" else conv and (pointwise or not layer.is_pointwise))
    ]  # fmt: skip
    out: list[AffineLayer] = []
    blocks: dict[int | None, int] = {}
    for i, layer in enumerate(kept):
        block = None
        if layer.stage is not None:
            block = blocks.get(layer.stage, 0)
            blocks[layer.stage] = block + 1
        out.append(replace(layer, layer_index=i, block=block))
    return out


def check_finite(layer: AffineLayer, where: str = "") -> None:
    """Raise :class:`LayerError` naming the layer when its weight or bias holds NaN or inf."""
    for part, t in (("weight", layer.weight), ("bias", layer.bias)):
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise LayerError(
                f"{where}layer {layer.name!r}: {part} has {n_bad} NaN/inf value(s); "
                "the checkpoint is corrupt or training diverged"
            )


def layer_table(
    source: nn.Module | Mapping[str, torch.Tensor], *, input_shape: tuple[int, ...] | None = None, **select: bool
) -> pd.DataFrame:
    """One row per affine layer: name, position, kind, shapes and conv hyper-parameters.

    Example
    -------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
    ...                     nn.Flatten(), nn.Linear(8, 2))
    >>> t = layer_table(net, input_shape=(1, 8, 8))
    >>> t[["layer", "stage", "kind", "n_filters", "input_shape", "output_shape"]].values.tolist()
    ... # doctest: +NORMALIZE_WHITESPACE
    [['0', 0, 'conv2d', 4, (1, 8, 8), (4, 6, 6)], ['3', 1, 'conv2d', 8, (4, 3, 3), (8, 1, 1)],
     ['6', 1, 'linear', 2, (8,), (2,)]]
    """
    rows = []
    for layer in find_layers(source, input_shape=input_shape, **select):
        rows.append(
            {
                "layer": layer.name,
                "layer_index": layer.layer_index,
                "stage": layer.stage,
                "block": layer.block,
                "kind": layer.kind,
                "weight_shape": tuple(layer.weight.shape),
                "n_filters": layer.out_channels,
                "filter_numel": layer.filter_numel,
                "has_bias": layer.bias is not None,
                "kernel_size": layer.kernel_size or None,
                "stride": layer.stride,
                "padding": layer.padding,
                "dilation": layer.dilation,
                "groups": layer.groups,
                "input_shape": layer.input_shape,
                "output_shape": layer.output_shape,
            }
        )
    df = pd.DataFrame(rows)
    if not df.empty:
        df[["stage", "block", "groups"]] = df[["stage", "block", "groups"]].astype("Int64")
    return df
