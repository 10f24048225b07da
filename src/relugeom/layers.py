"""Find the affine layers (Conv1d/2d/3d, Linear) of any ``nn.Module`` or state dict.

Every analysis starts here. A layer is described by an :class:`AffineLayer`: its dotted module
name (as in ``named_modules()``), kind, weight, bias, convolution hyper-parameters, and its
position: ``layer_index`` (0-based among the selected layers), ``stage`` (incremented after every
pooling module, in module order) and ``block`` (index inside the stage), as fixed in DESIGN.md.

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

from .errors import ArchitectureError, LayerError, ShapeError

_KINDS: dict[type, str] = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Conv3d: "conv3d", nn.Linear: "linear"}
_RANK_KIND = {2: "linear", 3: "conv1d", 4: "conv2d", 5: "conv3d"}
POOLING: tuple[type, ...] = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.LPPool1d, nn.LPPool2d,
)  # fmt: skip


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


def _from_module(name: str, module: nn.Module) -> AffineLayer:
    kind = _KINDS[type(module)] if type(module) in _KINDS else next(
        k for t, k in _KINDS.items() if isinstance(module, t)
    )
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
    if isinstance(layer, nn.Module) and _is_affine(layer):
        return _from_module(name or type(layer).__name__, layer)
    from .errors import UnsupportedLayerError

    raise UnsupportedLayerError(
        f"{type(layer).__name__} is not an affine layer (Conv1d/2d/3d or Linear); cannot treat it"
    )


def _is_affine(module: nn.Module) -> bool:
    # Transposed convolutions subclass _ConvNd but are not the maps the papers study.
    return isinstance(module, tuple(_KINDS)) and not isinstance(module, nn.modules.conv._ConvTransposeNd)


def _module_layers(model: nn.Module) -> list[AffineLayer]:
    out: list[AffineLayer] = []
    stage, block = 0, 0
    for name, module in model.named_modules():
        if isinstance(module, POOLING):
            stage, block = stage + 1, 0
        elif _is_affine(module):
            out.append(replace(_from_module(name, module), stage=stage, block=block))
            block += 1
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


def _trace_shapes(model: nn.Module, layers: list[AffineLayer], input_shape: tuple[int, ...]) -> dict:
    """Input and output shape (without batch) of each layer for one example input, via hooks.

    Runs on the meta device (no memory, no arithmetic); falls back to a real forward pass of a
    zero input for modules that cannot run on meta tensors.
    """
    wanted = {layer.name for layer in layers}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def hook(name: str):
        def fn(_mod, args, out):
            if name not in shapes and args and isinstance(args[0], torch.Tensor):
                shapes[name] = (tuple(args[0].shape[1:]), tuple(out.shape[1:]))

        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n in wanted]
    try:
        try:
            meta = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
            x = torch.empty((1, *input_shape), device="meta")
            torch.func.functional_call(model, meta, (x,))
        except (NotImplementedError, RuntimeError) as meta_error:
            shapes.clear()
            first = next(model.parameters(), None)
            dtype = first.dtype if first is not None else torch.float32
            device = first.device if first is not None else "cpu"
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    model(torch.zeros((1, *input_shape), dtype=dtype, device=device))
            except (RuntimeError, ValueError) as e:
                raise ShapeError(
                    f"input shape {tuple(input_shape)} does not fit the model: {e}".split("\n")[0]
                ) from meta_error
            finally:
                model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return shapes


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
    elif isinstance(source, Mapping):
        layers = _state_dict_layers(source)
    else:
        raise TypeError(f"expected an nn.Module or a state dict, got {type(source).__name__}")
    if input_shape is not None and isinstance(source, nn.Module) and layers:
        shapes = _trace_shapes(source, layers, tuple(input_shape))
        layers = [
            replace(layer, input_shape=shapes[layer.name][0], output_shape=shapes[layer.name][1])
            if layer.name in shapes else layer
            for layer in layers
        ]  # fmt: skip
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


def batchnorm_affine(bn: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An eval-mode batch norm as the per-channel affine map ``y = scale * x + shift`` (float64).

    ``scale = gamma / sqrt(running_var + eps)``, ``shift = beta - running_mean * scale``: folding it into
    the layer before it gives ``W' = W * scale``, ``b' = b * scale + shift``. A batch norm without running
    statistics normalises every batch by its own, which no fixed affine map reproduces:
    :class:`ArchitectureError` with ``name`` (e.g. "run/epoch_3.pt: batch norm 'features.1'").
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ArchitectureError(
            f"{name} keeps no running statistics (track_running_stats=False): it normalises "
            "each batch by its own statistics and cannot be folded into the layer before it"
        )
    var = bn.running_var.detach().cpu().double()
    scale = 1.0 / torch.sqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().cpu().double()
    shift = -bn.running_mean.detach().cpu().double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().cpu().double()
    return scale, shift


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
