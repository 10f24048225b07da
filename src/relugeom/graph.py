"""The network walker: a model's computation graph, every analysis' one way through a network.

:func:`walk` reads the graph with ``torch.fx`` (symbolic tracing): module calls, functional operations
(``F.relu``, ``torch.relu``, ``+``, ``torch.cat``, ``torch.flatten``, ``.view``, ``.reshape``, ...) and the data
flow between them, residual connections and concatenations included. Modules with a layer rule
(:mod:`relugeom.modules`) are kept whole; other modules are traced through, so a user's residual block becomes
its convolutions, batch norms, ReLUs and the addition. Each :class:`Node` carries its rule (None when the
registry has none: the analyses then apply the one unsupported-module policy).

Where tracing fails (control flow that depends on the data, say), the graph falls back to the leaf modules in
registration order, but only when an example input is given and applying them in that order reproduces the
model's own forward pass on it; otherwise :class:`~relugeom.errors.UnsupportedLayerError` says why.

Tracing costs milliseconds, so a walked graph is kept and reused while the model's modules (identity, type,
training flag), its forward method and the layer-rule registry are unchanged; the copies an analysis makes of
a model (float64, eval mode: :func:`copied`) reuse the trace of the unchanged original's earlier copies. Plain
attributes that ``forward`` branches on are not watched: after changing one, walk a fresh copy of the model.

Example
-------
>>> import torch
>>> from torch import nn
>>> class Block(nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
...     def forward(self, x):
...         return torch.relu(self.b(torch.relu(self.a(x))) + x)
>>> g = walk(Block())
>>> [n.name for n in g.nodes]
['x', 'a', 'relu', 'b', 'add', 'relu_1', 'output']
>>> x = torch.randn(3, 4)
>>> bool(torch.equal(g.run(x), Block.forward(g.model, x)))
True
"""

from __future__ import annotations

import math
import operator
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import ShapeError, UnsupportedLayerError
from .modules import Rule, is_leaf, rule_for_function, rule_for_method, rule_for_module
from .modules.registry import generation, require

_INPLACE_FUNCS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.iand, operator.ior}


@dataclass(eq=False)
class Node:
    """One operation of a network's graph.

    ``op`` is "input", "module" (``target`` is the dotted module name, ``module`` the module), "function"
    (``target`` the function), "method" (``target`` the tensor method's name), "attribute" (a parameter or
    buffer read in ``forward``; ``target`` its dotted name) or "output". ``args``/``kwargs`` hold other nodes
    where the operation reads their values. ``owner`` is the dotted name and type of the innermost module whose
    forward holds a functional operation, for messages.
    """

    name: str
    op: str
    target: Any
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    module: nn.Module | None = None
    rule: Rule | None = None
    owner: tuple[str, str] | None = None
    index: int = 0
    inputs: list[Node] = field(default_factory=list, repr=False)
    # the nodes that read this one, held weakly (the graph holds them): strong references both ways would make
    # every graph a reference cycle, and the model a graph holds (an analysis' float64 copy) would outlive the
    # analysis until the cyclic garbage collector runs
    _users: list[weakref.ref] = field(default_factory=list, repr=False)

    @property
    def users(self) -> list[Node]:
        """The nodes that read this node's value, in graph order."""
        return [u for u in (r() for r in self._users) if u is not None]

    @property
    def module_name(self) -> str | None:
        """The dotted module name (as in ``named_modules()``) of a module call, else None."""
        return str(self.target) if self.op == "module" else None

    @property
    def label(self) -> str:
        """The node in words, for messages: "module 'layer1.0.conv1' (Conv2d)", "torch.cat() in module ..."."""
        if self.op == "module":
            return f"module {self.target!r} ({type(self.module).__name__})"
        if self.op == "function":
            from .modules.registry import _key_name

            what = f"{_key_name(self.target)}()"
        elif self.op == "method":
            what = f".{self.target}()"
        else:
            what = f"{self.op} {self.target!r}"
        if self.owner is not None and self.owner[0]:
            return f"{what} in module {self.owner[0]!r} ({self.owner[1]})"
        return f"{what} (graph node {self.name!r})"

    def bind(self, values: Mapping[Node, Any]) -> tuple[list[Any], dict[str, Any]]:
        """``args`` and ``kwargs`` with every node replaced by its value in ``values``."""
        return [_subst(a, values) for a in self.args], {k: _subst(v, values) for k, v in self.kwargs.items()}

    def call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        """Run the operation itself (as the model's forward does) on argument values."""
        if self.op == "module":
            return self.module(*args, **kwargs)  # type: ignore[misc]
        if self.op == "function":
            return self.target(*args, **kwargs)
        if self.op == "method":
            return getattr(args[0], self.target)(*args[1:], **kwargs)
        raise ValueError(f"node {self.name!r} ({self.op}) is not an operation")

    @property
    def in_place(self) -> bool:
        """Whether the operation may write into its first argument."""
        if self.op == "module":
            return bool(getattr(self.module, "inplace", False))
        if self.op == "function":
            return self.target in _INPLACE_FUNCS or bool(self.kwargs.get("inplace", False))
        if self.op == "method":
            return str(self.target).endswith("_") and not str(self.target).startswith("__")
        return False

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op}, {self.target!r})"


def _subst(a: Any, values: Mapping[Node, Any]) -> Any:
    if isinstance(a, Node):
        return values[a]
    if isinstance(a, (list, tuple)):
        return type(a)(_subst(x, values) for x in a)
    if isinstance(a, dict):
        return {k: _subst(v, values) for k, v in a.items()}
    return a


def _node_refs(a: Any, out: list[Node]) -> None:
    if isinstance(a, Node):
        if a not in out:
            out.append(a)
    elif isinstance(a, (list, tuple)):
        for x in a:
            _node_refs(x, out)
    elif isinstance(a, dict):
        for x in a.values():
            _node_refs(x, out)


class Graph:
    """A network's computation graph: :class:`Node` objects in an order where every node follows its inputs.

    ``traced`` is True for a ``torch.fx`` graph and False for the module-order fallback (checked against the
    forward pass). ``input`` is the first input node, ``output`` the output node.
    """

    def __init__(self, model: nn.Module, nodes: list[Node], traced: bool) -> None:
        self.model = model
        self.nodes = nodes
        self.traced = traced
        for i, n in enumerate(nodes):
            n.index = i
            n.inputs = []
            n._users = []
        for n in nodes:
            _node_refs(n.args, n.inputs)
            _node_refs(n.kwargs, n.inputs)
            for i in n.inputs:
                i._users.append(weakref.ref(n))
        self.last_use = {n: max((u.index for u in n.users), default=n.index) for n in nodes}
        """For every node, the index of its last user (its own index when it has none)."""
        inputs = [n for n in nodes if n.op == "input"]
        if not inputs:
            raise UnsupportedLayerError(f"{type(model).__name__}.forward takes no input")
        self.input = inputs[0]
        self.output = nodes[-1]

    def __iter__(self):  # noqa: ANN204
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def operations(self) -> list[Node]:
        """The nodes that compute something (module, function and method calls)."""
        return [n for n in self.nodes if n.op in ("module", "function", "method")]

    def calls(self, module_name: str) -> list[Node]:
        """The nodes that call the module ``module_name`` (several when a module is reused)."""
        return [n for n in self.nodes if n.op == "module" and n.target == module_name]

    def require(self, analysis: str, nodes: Iterable[Node] | None = None) -> None:
        """The unsupported-module policy for an analysis that needs every operation's rule: raise
        :class:`UnsupportedLayerError` naming the first operation without a rule, or with a configuration its
        rule cannot treat exactly."""
        for n in self.operations if nodes is None else nodes:
            require(n, analysis)

    def descendants(self, nodes: Iterable[Node]) -> set[Node]:
        """``nodes`` and every node whose value depends on one of them."""
        out = set(nodes)
        for n in self.nodes[min((m.index for m in out), default=len(self.nodes)) :]:
            if n not in out and any(i in out for i in n.inputs):
                out.add(n)
        return out

    def compute(self, node: Node, values: Mapping[Node, Any]) -> Any:
        """One node's value from its inputs' values (out of place: the rule's forward, or a copy of an in-place
        operation's first argument when the node has no rule)."""
        if node.op == "attribute":
            return _attribute(self.model, str(node.target))
        if node.op == "input":
            return _default(node)
        args, kwargs = node.bind(values)
        if node.op == "output":
            return args[0]
        if node.rule is not None:
            return node.rule.forward(node, args, kwargs)
        if node.in_place and args and isinstance(args[0], torch.Tensor):
            args[0] = args[0].clone()
        return node.call(args, kwargs)

    def run(
        self,
        x: torch.Tensor,
        *,
        hook: Callable[[Node, list[Any], dict[str, Any]], Any] | None = None,
        values: dict[Node, Any] | None = None,
    ) -> Any:
        """Evaluate the graph on ``x`` (a batch), node by node.

        ``hook(node, args, kwargs)`` is called before every operation with its argument values; a value other
        than None replaces the operation's output. ``values``, when given, receives every node's value;
        otherwise values are dropped as soon as their last user has run.
        """
        keep = values is not None
        vals: dict[Node, Any] = {} if values is None else values
        last = self.last_use
        for node in self.nodes:
            if node.op == "input":
                vals[node] = x if node is self.input else _default(node)
                continue
            out = None
            if hook is not None and node.op in ("module", "function", "method"):
                args, kwargs = node.bind(vals)
                out = hook(node, args, kwargs)
            vals[node] = self.compute(node, vals) if out is None else out
            if not keep:
                for i in node.inputs:
                    if last[i] <= node.index:
                        vals.pop(i, None)
        return vals[self.output]

    def shapes(self, input_shape: Sequence[int]) -> dict[Node, tuple[int, ...]]:
        """The shape (without the batch axis) of every tensor node's value for one input of ``input_shape``.

        Runs on the meta device (no memory, no arithmetic); falls back to a real forward pass of a zero input
        (in eval mode) for operations that cannot run on meta tensors.
        """
        model = self.model
        values: dict[Node, Any] = {}
        was_training = model.training
        model.eval()  # shapes do not depend on the mode; a batch norm in training mode refuses one 1x1 sample
        try:
            meta = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict(keep_vars=True).items()}
            torch.func.functional_call(_Runner(self, values), {f"model.{k}": v for k, v in meta.items()},
                                       (torch.empty((1, *input_shape), device="meta"),))  # fmt: skip
        except (NotImplementedError, RuntimeError, ValueError, TypeError) as meta_error:
            values.clear()
            first = next(model.parameters(), None)
            dtype = first.dtype if first is not None else torch.float32
            device = first.device if first is not None else "cpu"
            try:
                with torch.no_grad():
                    self.run(torch.zeros((1, *input_shape), dtype=dtype, device=device), values=values)
            except (RuntimeError, ValueError, TypeError) as e:
                raise ShapeError(
                    f"input shape {tuple(input_shape)} does not fit the model: {e}".split("\n")[0]
                ) from meta_error
        finally:
            model.train(was_training)
        return {n: tuple(v.shape[1:]) for n, v in values.items() if isinstance(v, torch.Tensor) and v.dim() > 0}

    def levels(self, shapes: Mapping[Node, tuple[int, ...]] | None = None) -> dict[Node, int]:
        """The resolution level of every node's output: 0 at the input, +1 wherever a node downsamples (a pooling
        or a convolution with stride > 1, as each rule's :meth:`~relugeom.modules.Rule.shrinks` reads its
        hyper-parameters; a convolution without padding that trims the border does not count). Where a rule
        cannot tell (an adaptive pooling) or a node has no rule, the sizes in ``shapes`` (:meth:`shapes`)
        decide; without shapes an adaptive pooling counts as shrinking."""
        level: dict[Node, int] = {}
        for node in self.nodes:
            ins = [i for i in node.inputs if i in level]
            base = max((level[i] for i in ins), default=0)
            shrink: bool | None = False
            if node.op in ("module", "function", "method"):
                shrink = node.rule.shrinks(node) if node.rule is not None else None
                if shrink is None and shapes is not None:  # the sizes decide
                    src = next((_spatial(shapes[i]) for i in ins if i in shapes), None)
                    dst = _spatial(shapes[node]) if node in shapes else None
                    shrink = src is not None and dst is not None and dst < src
                elif shrink is None:  # an adaptive pooling usually shrinks; an operation without a rule, unknown
                    shrink = node.rule is not None
            level[node] = base + int(shrink)
        return level


def _spatial(shape: tuple[int, ...]) -> int | None:
    """Number of spatial positions of a (C, *S) activation; None for flat features."""
    return math.prod(shape[1:]) if len(shape) >= 2 else None


class _Runner(nn.Module):
    """The graph as a module, so that ``torch.func.functional_call`` can swap the model's tensors."""

    def __init__(self, graph: Graph, values: dict[Node, Any]) -> None:
        super().__init__()
        self.model = graph.model
        self._graph, self._values = graph, values

    def forward(self, x: torch.Tensor) -> Any:
        return self._graph.run(x, values=self._values)


def _attribute(model: nn.Module, target: str) -> Any:
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _resolves(model: nn.Module, target: str) -> bool:
    try:
        _attribute(model, target)
    except AttributeError:
        return False
    return True


def _default(node: Node) -> Any:
    if node.args:
        return node.args[0]
    raise UnsupportedLayerError(f"the model's forward takes a second input {node.name!r} without a default; "
                                "relugeom analyses feed one input tensor")  # fmt: skip


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return is_leaf(m) or super().is_leaf_module(m, module_qualified_name)


def _rule(op: str, target: Any, module: nn.Module | None) -> Rule | None:
    if op == "module":
        return rule_for_module(module)  # type: ignore[arg-type]
    if op == "function":
        return rule_for_function(target)
    if op == "method":
        return rule_for_method(str(target))
    return None


def _from_fx(model: nn.Module, fx_graph: torch.fx.Graph) -> Graph:
    ours: dict[torch.fx.Node, Node] = {}

    def conv(a: Any) -> Any:
        return torch.fx.node.map_arg(a, lambda n: ours[n])

    nodes = []
    for n in fx_graph.nodes:
        op = {"placeholder": "input", "call_module": "module", "call_function": "function", "call_method": "method",
              "get_attr": "attribute", "output": "output"}[n.op]  # fmt: skip
        module = model.get_submodule(str(n.target)) if op == "module" else None
        stack = n.meta.get("nn_module_stack") or {}
        owner = None
        if stack and op != "module":
            path, cls = list(stack.values())[-1]
            owner = (str(path), getattr(cls, "__name__", str(cls)))
        node = Node(n.name, op, n.target, tuple(conv(n.args)), dict(conv(n.kwargs)), module,
                    _rule(op, n.target, module), owner)  # fmt: skip
        ours[n] = node
        nodes.append(node)
    return Graph(model, nodes, traced=True)


def _leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    children = list(model.named_children())
    if is_leaf(model) or not children:
        return [(prefix, model)]
    out = []
    for name, m in children:
        out += _leaves(m, f"{prefix}.{name}" if prefix else name)
    return out


def _module_order(model: nn.Module, example: torch.Tensor, why: str) -> Graph:
    """The leaf modules in registration order, with a flatten inserted where a linear layer reads a batch of
    feature maps, checked against ``model(example)``."""
    nodes = [Node("x", "input", "x")]
    y = example
    with torch.no_grad():
        want = model(example)
        for name, m in _leaves(model):
            if isinstance(y, torch.Tensor) and y.dim() > 2 and getattr(m, "in_features", None) == y[0].numel():
                flat = Node(f"flatten_before_{name}", "function", torch.flatten, (nodes[-1], 1))
                flat.rule = rule_for_function(torch.flatten)
                nodes.append(flat)
                y = torch.flatten(y, 1)
            node = Node(name.replace(".", "_") or "module", "module", name, (nodes[-1],), {}, m, rule_for_module(m))
            nodes.append(node)
            try:
                y = m(y)
            except (RuntimeError, TypeError, ValueError) as e:
                raise UnsupportedLayerError(
                    f"{type(model).__name__} cannot be traced with torch.fx ({why}), and its modules in "
                    f"registration order do not run one after the other ({node.label}: {str(e).splitlines()[0]})"
                ) from None
    nodes.append(Node("output", "output", "output", (nodes[-1],)))
    same = isinstance(y, torch.Tensor) and isinstance(want, torch.Tensor) and y.shape == want.shape and \
        torch.allclose(y, want, rtol=1e-5, atol=1e-6)  # fmt: skip
    if not same:
        raise UnsupportedLayerError(
            f"{type(model).__name__} cannot be traced with torch.fx ({why}), and applying its modules in "
            "registration order does not reproduce its forward pass (skip connections or functional operations); "
            "make its forward traceable, or register a rule for the module that torch.fx cannot trace"
        )
    return Graph(model, nodes, traced=False)


_TRACING = threading.Lock()


def walk(model: nn.Module, example: torch.Tensor | None = None, *, input_shape: Sequence[int] | None = None
         ) -> Graph:  # fmt: skip
    """The computation graph of ``model`` (see the module docstring).

    ``example`` (a batch), or ``input_shape`` (one input without the batch axis: a zero input of the model's
    dtype is used), is needed only when ``torch.fx`` cannot trace the model: the module-order fallback is then
    checked against ``model(example)``. The model should be in the mode it will be analysed in (eval): tracing
    records ``self.training`` as a constant.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    key = _signature(model)
    hit = _WALKED.get(id(model))
    graph = hit[2]() if hit is not None and hit[0]() is model and hit[1] == key else None
    if graph is not None:
        _WALKED.move_to_end(id(model))
        return graph
    lineage = _lineage(model)
    structure = _structure(model) if lineage is not None else None
    found = _TRACES.get(lineage[0]) if lineage is not None else None
    if found is not None and found[0]() is lineage[1] and found[1] == structure:  # type: ignore[index]
        return _remember(model, key, _from_fx(model, found[2]))
    if example is None and input_shape is not None:
        first = next(model.parameters(), None)
        example = torch.zeros((1, *input_shape), dtype=first.dtype if first is not None else torch.float32,
                              device=first.device if first is not None else "cpu")  # fmt: skip
    try:
        with _TRACING:  # torch.fx patches module globals while it traces: one trace at a time per process
            fx_graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 - any tracing failure may fall back to module order
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if example is None:
            raise UnsupportedLayerError(
                f"{type(model).__name__} cannot be traced with torch.fx ({why}); without an example input its "
                "modules' order cannot be checked against its forward pass"
            ) from None
        return _module_order(model, example, why)
    if lineage is not None and all(_resolves(lineage[1], str(n.target)) for n in fx_graph.nodes if n.op == "get_attr"):
        with _TRACING:  # (a constant the tracer stored on the traced copy is not on the next one)
            _TRACES[lineage[0]] = (weakref.ref(lineage[1]), structure, fx_graph)  # type: ignore[assignment]
            while len(_TRACES) > 2:
                _TRACES.popitem(last=False)
    return _remember(model, key, _from_fx(model, fx_graph))


def _remember(model: nn.Module, key: tuple, graph: Graph) -> Graph:
    # a graph holds its model: the graph of an analysis' own copy is held only while the analysis holds it, so
    # that the copy (its parameters, in float64) is freed with it
    held: Callable[[], Graph | None] = weakref.ref(graph) if model in _COPIES else lambda: graph
    with _TRACING:
        for gone in [k for k, entry in _WALKED.items() if entry[2]() is None]:
            del _WALKED[gone]
        _WALKED[id(model)] = (weakref.ref(model), key, held)
        while len(_WALKED) > 2:
            _WALKED.popitem(last=False)
    return graph


def copied(original: nn.Module, copy: nn.Module) -> nn.Module:
    """Record that ``copy`` was just made from ``original`` (a deep copy, possibly moved, cast, put in eval mode
    and adjusted), and return it. :func:`walk` then reuses the trace of an earlier copy of ``original`` made the
    same way, while ``original``'s modules, forward methods and training flags and the layer-rule registry are
    unchanged: analyses that copy the model at every call trace it once, not at every call.
    """
    if "forward" not in vars(original) and "forward" not in vars(copy):  # an instance's own forward: trace each
        _COPIES[copy] = (weakref.ref(original), _signature(original))
    return copy


# the last traced graphs (several analyses of one model walk it once); a graph is walked again when the model's
# modules, their forward methods or training flags, or the layer-rule registry have changed since
_WALKED: OrderedDict[int, tuple[weakref.ref, tuple, Callable[[], Graph | None]]] = OrderedDict()


def _signature(model: nn.Module) -> tuple:
    own = vars(model).get("forward")  # a forward set on the instance (its function: a bound method holds the model)
    return (generation(), type(model).forward, getattr(own, "__func__", own),
            tuple((name, id(m), type(m), m.training) for name, m in model.named_modules()))


# copies made by the analyses (:func:`copied`) -> (their original, the original's signature when copied), and
# the traces of such copies by (id of the original, that signature): the copy's modules' names, types and
# training flags must also match, since the copies may differ in how they were adjusted (eval mode)
_COPIES: weakref.WeakKeyDictionary[nn.Module, tuple[weakref.ref, tuple]] = weakref.WeakKeyDictionary()
_TRACES: OrderedDict[tuple, tuple[weakref.ref, tuple, torch.fx.Graph]] = OrderedDict()


def _lineage(model: nn.Module) -> tuple[tuple, nn.Module] | None:
    """``((id of the original, its signature when copied), original)`` for a recorded copy whose original is
    alive and unchanged since; else None."""
    entry = _COPIES.get(model)
    original = entry[0]() if entry is not None else None
    if original is None or _signature(original) != entry[1]:  # type: ignore[index]
        return None
    return (id(original), entry[1]), original  # type: ignore[index]


def _structure(model: nn.Module) -> tuple:
    return tuple((name, type(m), m.training) for name, m in model.named_modules())
