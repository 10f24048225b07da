"""How consecutive affine layers of a module are connected, and whether a pair is a plain
``layer -> [batch norm] -> ReLU -> layer`` chain that the cone geometry (Gamba et al. 2019; Carlsson 2019) can treat.

The connection is read from a ``torch.fx`` trace of the model: every node between the two layers
must have a single user (otherwise the output also feeds a residual or another branch) and be a
ReLU, a batch norm directly after the first layer (folded into it, eval-mode statistics), a
dropout or an identity. Anything else (pooling, another activation, an addition, a
concatenation, a reshape) makes the pair untreatable, and :class:`Link` says why. When the model
cannot be traced, the modules between the two layers in module order are judged instead, and a
warning says that residual connections could then not be seen.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import nn

from ._repr import short_repr
from .errors import RelugeomWarning, warn
from .layers import POOLING, AffineLayer

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_PASS = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_RELU_FUNCS = {torch.relu, torch.relu_, nn.functional.relu}
_ADD_FUNCS = {operator.add, operator.iadd, torch.add}
_POOL_FUNCS = {getattr(nn.functional, n) for n in dir(nn.functional) if "pool" in n}


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


def _classify_module(name: str, m: nn.Module) -> tuple[str, str]:
    """(kind, description) of a module between two layers."""
    if isinstance(m, nn.ReLU):
        return "relu", f"ReLU {name!r}"
    if isinstance(m, _BN):
        return "bn", f"batch norm {name!r}"
    if isinstance(m, _PASS) or type(m) is nn.Sequential:
        return "pass", name
    if isinstance(m, POOLING):
        return "pool", f"pooling {type(m).__name__} {name!r} between the pair"
    if type(m).__module__.startswith("torch.nn.modules.activation"):
        return "act", f"non-ReLU activation {type(m).__name__} {name!r} between the pair"
    if isinstance(m, nn.Flatten):
        return "other", f"reshape {name!r} between the pair"
    return "other", f"module {type(m).__name__} {name!r} between the pair"


def _classify_node(node: torch.fx.Node, modules: dict[str, nn.Module]) -> tuple[str, str]:
    if node.op == "call_module":
        return _classify_module(str(node.target), modules[str(node.target)])
    target = node.target
    if node.op == "call_function":
        if target in _RELU_FUNCS:
            return "relu", "relu()"
        if target in _ADD_FUNCS:
            return "residual", "an addition (residual connection) between the pair"
        if target in _POOL_FUNCS:
            return "pool", f"pooling {getattr(target, '__name__', target)}() between the pair"
        if target is nn.functional.dropout:
            return "pass", "dropout()"
        if target is torch.cat:
            return "other", "a concatenation between the pair"
        name = getattr(target, "__name__", str(target))
        if name in {"gelu", "tanh", "sigmoid", "silu", "elu", "leaky_relu", "softplus", "relu6", "hardtanh"}:
            return "act", f"non-ReLU activation {name}() between the pair"
        return "other", f"operation {name}() between the pair"
    if node.op == "call_method":
        if target in ("relu", "relu_"):
            return "relu", f".{target}()"
        if target in ("add", "add_"):
            return "residual", "an addition (residual connection) between the pair"
        return "other", f"operation .{target}() between the pair"
    return "other", f"{node.op} {target} between the pair"


def _fx_links(model: nn.Module, layers: list[AffineLayer]) -> list[Link]:
    gm = torch.fx.symbolic_trace(model)
    modules = dict(gm.named_modules())
    nodes: dict[str, list[torch.fx.Node]] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            nodes.setdefault(str(n.target), []).append(n)
    bn: dict[str, nn.Module] = {}
    for layer in layers:
        calls = nodes.get(layer.name, [])
        if len(calls) == 1 and len(calls[0].users) == 1:
            user = next(iter(calls[0].users))
            if user.op == "call_module" and isinstance(modules[str(user.target)], _BN):
                bn[layer.name] = modules[str(user.target)]
    links = []
    for a, b in zip(layers, layers[1:]):
        ca, cb = nodes.get(a.name, []), nodes.get(b.name, [])
        if len(ca) != 1 or len(cb) != 1:
            which = a.name if len(ca) != 1 else b.name
            links.append(Link(a.name, b.name, False, f"layer {which!r} is called {len(nodes.get(which, []))} times"))
            continue
        links.append(_walk(a.name, b.name, ca[0], cb[0], modules, bn))
    return links


def _walk(
    a: str, b: str, na: torch.fx.Node, nb: torch.fx.Node, modules: dict[str, nn.Module], bn: dict[str, nn.Module]
) -> Link:
    pairs_bn = {k: v for k, v in bn.items() if k in (a, b)}
    if len(na.users) != 1:
        return Link(a, b, False, f"the output of {a!r} feeds {len(na.users)} operations (a branch or residual)")
    node = nb.args[0] if nb.args else None
    chain: list[tuple[str, str]] = []
    while node is not na:
        if not isinstance(node, torch.fx.Node) or node.op in ("placeholder", "output"):
            return Link(a, b, False, f"{b!r} does not read the output of {a!r}")
        kind, desc = _classify_node(node, modules)
        if len(node.users) != 1 and kind != "residual":
            return Link(a, b, False, f"the output of {desc} feeds {len(node.users)} operations (a branch or residual)")
        chain.append((kind, desc))
        if kind in ("pool", "act", "residual", "other"):
            return Link(a, b, False, desc)
        tensors = [x for x in node.args if isinstance(x, torch.fx.Node)]
        if len(tensors) != 1:
            return Link(a, b, False, f"{desc} takes {len(tensors)} inputs")
        node = tensors[0]
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


def _module_order_links(model: nn.Module, layers: list[AffineLayer]) -> list[Link]:
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children()) or isinstance(m, _BN)]
    position = {n: i for i, (n, _) in enumerate(leaves)}
    bn: dict[str, nn.Module] = {}
    for layer in layers:
        i = position.get(layer.name)
        if i is not None and i + 1 < len(leaves) and isinstance(leaves[i + 1][1], _BN):
            bn[layer.name] = leaves[i + 1][1]
    links = []
    for a, b in zip(layers, layers[1:]):
        ia, ib = position.get(a.name), position.get(b.name)
        if ia is None or ib is None or ib <= ia:
            links.append(Link(a.name, b.name, False, "the two layers' order could not be determined"))
            continue
        chain = [_classify_module(n, m) for n, m in leaves[ia + 1 : ib]]
        bad = next(((k, d) for k, d in chain if k in ("pool", "act", "other")), None)
        if bad is not None:
            links.append(Link(a.name, b.name, False, bad[1]))
            continue
        links.append(_judge(a.name, b.name, chain, {k: v for k, v in bn.items() if k in (a.name, b.name)}))
    return links


def layer_links(model: nn.Module, layers: list[AffineLayer], where: str = "") -> list[Link]:
    """One :class:`Link` per consecutive pair of ``layers`` (as found by ``find_layers`` on ``model``)."""
    if len(layers) < 2:
        return []
    try:
        return _fx_links(model, layers)
    except Exception as e:  # noqa: BLE001 - any tracing failure falls back to module order
        warn(
            f"{where}{type(model).__name__} could not be traced with torch.fx ({type(e).__name__}); pairs are "
            "judged from module order, where residual connections are invisible",
            RelugeomWarning,
        )
        return _module_order_links(model, layers)
