"""Pieces shared by the complexity measures: data batches, model copies, losses, the network graph."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ArchitectureError, DataError, LayerError, ShapeError, UnsupportedLayerError
from ..graph import Graph, Node, copied, walk

Data = tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


def batches(data: Data, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """``(X, y)`` or an iterable of ``(x, y)`` batches -> a list of batches on ``device``, inputs in ``dtype``.

    Raises :class:`DataError` for empty data, non-integer labels or mismatched lengths.
    """
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        items: Iterable[Any] = [data]
    elif isinstance(data, (Mapping, str, bytes)) or not isinstance(data, Iterable):
        raise DataError(f"data must be a pair of tensors (X, y) or an iterable of (x, y) batches, got {type(data)!r}")
    else:
        items = data
    out = []
    for i, item in enumerate(items):
        try:
            x, y = item
        except (TypeError, ValueError):
            raise DataError(f"batch {i} is not an (x, y) pair") from None
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise DataError(f"batch {i}: x and y must be tensors")
        if y.dim() != 1 or y.dtype in (torch.float16, torch.float32, torch.float64, torch.bool):
            raise DataError(f"batch {i}: labels must be a 1-D integer tensor of class indices, got {tuple(y.shape)} "
                            f"{y.dtype}")  # fmt: skip
        if x.shape[0] != y.shape[0]:
            raise DataError(f"batch {i}: {x.shape[0]} inputs but {y.shape[0]} labels")
        if x.shape[0] == 0:
            continue
        if not all_finite(x):
            raise DataError(f"batch {i}: the inputs contain NaN or inf")
        out.append((x.to(device=device, dtype=dtype), y.to(device=device, dtype=torch.long)))
    if not out:
        raise DataError("the data are empty: give at least one sample")
    return out


def n_samples(data: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(int(y.shape[0]) for _, y in data)


def prepare(model: nn.Module, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float64) -> nn.Module:
    """A detached copy of ``model`` in eval mode, in ``dtype`` on ``device``, with in-place ReLUs made out-of-place."""
    if not isinstance(model, nn.Module):
        raise ArchitectureError(
            "complexity measures need an nn.Module (they run the network); build the state dict into its "
            "architecture first (relugeom.model_from_state_dict, or --arch on the command line)"
        )
    m = copied(model, copy.deepcopy(model).to(device=device, dtype=dtype).eval())
    for mod in m.modules():
        if hasattr(mod, "inplace"):
            mod.inplace = False
    for name, p in m.named_parameters():
        if not all_finite(p):
            raise LayerError(f"parameter {name!r} contains NaN or inf; the measures are undefined")
    return m


def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of ``model`` on ``x``, checked to be a (batch, classes) tensor."""
    try:
        out = model(x)
    except RuntimeError as e:
        raise ShapeError(f"the model does not accept inputs of shape {tuple(x.shape[1:])}: {e}") from None
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ShapeError(f"the model must return (batch, classes) logits, got shape {tuple(out.shape)}")
    return out


@contextmanager
def shape_checked(model: nn.Module, x: torch.Tensor) -> Iterator[None]:
    """Run an analysis' own passes over the network; where they fail, the :class:`ShapeError` of :func:`forward`
    on one input of ``x`` when the model does not take such inputs (a clearer message than the failing layer's),
    else the failure itself. No forward pass is spent on the check unless something failed."""
    try:
        yield
    except (RuntimeError, ValueError, TypeError, UnsupportedLayerError):
        forward(model, x[:1])
        raise


def all_finite(t: torch.Tensor) -> bool:
    """True when no entry of ``t`` is NaN or inf (one reduction; the element-wise test only if the sum overflows)."""
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_loss(loss: torch.Tensor, where: str = "") -> None:
    if not all_finite(loss):
        raise DataError(f"{where}the loss is NaN or inf (diverged weights or bad inputs); the measure is undefined")


def mean_loss(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean cross-entropy over all samples (differentiable in the model's parameters)."""
    total, n = 0.0, 0
    for x, y in data:
        total = total + F.cross_entropy(forward(model, x), y, reduction="sum")
        n += int(y.shape[0])
    loss = total / n
    check_loss(loss)
    return loss


def accuracy_and_loss(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    with torch.no_grad():
        correct, total, n = 0, 0.0, 0
        for x, y in data:
            out = forward(model, x)
            total += float(F.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            n += int(y.shape[0])
    return correct / n, total / n


def network_graph(model: nn.Module, x: torch.Tensor) -> Graph:
    """The computation graph of a prepared model (:func:`relugeom.graph.walk`), every node with its layer rule;
    where ``torch.fx`` cannot trace the model, the module order checked against ``model(x[:1])``."""
    return walk(model, x[:1])


def parameter_holders(graph: Graph) -> tuple[list[Node], list[Node]]:
    """The graph's nodes that hold parameters: ``(with a rule, without one)``. Without a rule: a module the
    registry does not know (a transposed convolution, attention) or a parameter read directly in ``forward``."""
    params = {n for n, _ in graph.model.named_parameters()}
    ruled, unruled = [], []
    for node in graph.nodes:
        if node.op == "attribute" and str(node.target) in params:
            unruled.append(node)
        elif node.op == "module" and node.rule is None and any(True for _ in node.module.parameters()):
            unruled.append(node)
        elif node.rule is not None and node.rule.parametrized:
            ruled.append(node)
    return ruled, unruled


def shared(graph: Graph, nodes: list[Node]) -> str | None:
    """Why a measure with one block per layer cannot take ``nodes``: a module called more than once (shared
    weights), named; None when every one is called once."""
    for node in nodes:
        if node.op == "module" and len(graph.calls(str(node.target))) > 1:
            return f"{node.label} is called more than once (shared weights)"
    return None
