"""How consecutive affine layers of a module are connected, and whether a pair is a plain
``layer -> [batch norm] -> ReLU -> layer`` chain that the cone geometry (Gamba et al. 2019; Carlsson 2019) can treat.

The connection is read from the network's graph (:mod:`relugeom.graph`), and what each node between the two
layers is, from its rule (:meth:`relugeom.modules.Rule.cone_role`): every node between them must have a single
user (otherwise the output also feeds a residual or another branch) and be a ReLU, a batch norm directly after
the first layer (folded into it, eval-mode statistics), a dropout or an identity. Anything else makes the pair
untreatable, and :class:`Link` says why: a pooling (a stage boundary), another activation, a reshape, a
concatenation, or a residual connection.

Residual networks: the two convolutions inside a ResNet block (``conv1 -> bn1 -> relu -> conv2``) form a plain
pair and are treated; a pair whose path crosses the block's addition (``conv2`` of one block and ``conv1`` of
the next: "an addition (residual connection) between the pair"), whose first layer's output also feeds the
shortcut ("feeds 2 operations (a branch or residual)"), or whose second layer does not read the first's output
(a downsampling shortcut: "does not read the output") is skipped with that reason, since the cone geometry
is defined for one layer acting on the ReLU of the previous one alone. When the model cannot be traced, the
pairs are judged on the module-order fallback (checked against the forward pass); when that fails too, every
pair is skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from ._repr import short_repr
from .errors import UnsupportedLayerError
from .graph import Graph, Node, walk
from .layers import AffineLayer

_ACTIVATIONS = {"gelu", "tanh", "sigmoid", "silu", "elu", "leaky_relu", "softplus", "relu6", "hardtanh", "mish",
                "selu", "celu", "hardswish", "hardsigmoid", "logsigmoid", "softsign", "tanhshrink"}  # fmt: skip


@dataclass(frozen=True)
class Link:
    """The connection from ``first`` to ``second`` (dotted module names).

    ``ok`` when the pair is a plain chain with one ReLU; else ``reason`` says what is between them.
    ``bn`` maps a layer name to the batch norm module that directly follows it (to be folded).
    """

    __repr__ = short_repr

    first: str
    second: str
    ok: bool
    reason: str | None = None
    bn: dict[str, nn.Module] = field(default_factory=dict, compare=False)


def _classify(node: Node) -> tuple[str, str]:
    """(kind, description) of a node between two layers: its rule's cone role, in the words of the reasons."""
    if node.rule is not None:
        role, desc = node.rule.cone_role(node)
        return {"fold-bn": "bn", "break": "other"}.get(role, role), desc
    if node.op == "module":
        kind = type(node.module).__name__
        if type(node.module).__module__.startswith("torch.nn.modules.activation"):
            return "act", f"non-ReLU activation {kind} {node.target!r} between the pair"
        return "other", f"module {kind} {node.target!r} between the pair"
    name = str(node.target) if node.op == "method" else getattr(node.target, "__name__", str(node.target))
    if name.rstrip("_") in _ACTIVATIONS:
        return "act", f"non-ReLU activation {name}() between the pair"
    return "other", f"operation {node.label} between the pair"


def _graph_links(graph: Graph, layers: list[AffineLayer]) -> list[Link]:
    bn: dict[str, nn.Module] = {}
    for layer in layers:
        calls = graph.calls(layer.name)
        if len(calls) == 1 and len(calls[0].users) == 1:
            user = calls[0].users[0]
            if user.op == "module" and _classify(user)[0] == "bn":
                bn[layer.name] = user.module  # type: ignore[assignment]
    links = []
    for a, b in zip(layers, layers[1:]):
        ca, cb = graph.calls(a.name), graph.calls(b.name)
        if len(ca) != 1 or len(cb) != 1:
            which, n = (a.name, len(ca)) if len(ca) != 1 else (b.name, len(cb))
            links.append(Link(a.name, b.name, False, f"layer {which!r} is called {n} times"))
            continue
        links.append(_walk(a.name, b.name, ca[0], cb[0], bn))
    return links


def _walk(a: str, b: str, na: Node, nb: Node, bn: dict[str, nn.Module]) -> Link:
    pairs_bn = {k: v for k, v in bn.items() if k in (a, b)}
    if len(na.users) != 1:
        return Link(a, b, False, f"the output of {a!r} feeds {len(na.users)} operations (a branch or residual)")
    node = nb.args[0] if nb.args else None
    chain: list[tuple[str, str]] = []
    while node is not na:
        if not isinstance(node, Node) or node.op in ("input", "output", "attribute"):
            return Link(a, b, False, f"{b!r} does not read the output of {a!r}")
        kind, desc = _classify(node)
        if len(node.users) != 1:
            return Link(a, b, False, f"the output of {desc} feeds {len(node.users)} operations (a branch or residual)")
        chain.append((kind, desc))
        if kind in ("pool", "act", "other"):
            return Link(a, b, False, desc)
        if len(node.inputs) != 1:
            return Link(a, b, False, f"{desc} takes {len(node.inputs)} inputs")
        node = node.inputs[0]
    return _judge(a, b, list(reversed(chain)), pairs_bn)


def _judge(a: str, b: str, chain: list[tuple[str, str]], bn: dict[str, nn.Module]) -> Link:
    """``chain`` lists what lies between a and b, from a to b."""
    kinds = [k for k, _ in chain]
    relus = kinds.count("relu")
    if relus == 0:
        return Link(a, b, False, "no ReLU between the pair (the two layers compose to one affine map)", bn)
    if relus > 1:
        return Link(a, b, False, f"{relus} ReLUs between the pair", bn)
    for i, (kind, desc) in enumerate(chain):
        if kind == "bn" and any(k != "pass" for k in kinds[:i]):
            return Link(a, b, False, f"{desc} after the ReLU cannot be folded into {a!r}", bn)
    return Link(a, b, True, None, bn)


def layer_links(model: nn.Module, layers: list[AffineLayer], where: str = "",
                input_shape: Sequence[int] | None = None) -> list[Link]:  # fmt: skip
    """One :class:`Link` per consecutive pair of ``layers`` (as found by ``find_layers`` on ``model``).

    ``input_shape`` (one input, without the batch axis) lets the module-order fallback be checked when the
    model cannot be traced with ``torch.fx``.
    """
    if len(layers) < 2:
        return []
    try:
        graph = walk(model, input_shape=input_shape)
    except UnsupportedLayerError as e:
        return [Link(a.name, b.name, False, f"{where}{e}") for a, b in zip(layers, layers[1:])]
    return _graph_links(graph, layers)
