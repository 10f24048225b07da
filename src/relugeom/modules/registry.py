"""The one registry of layer rules, its lookup, and the one policy for what it does not support.

Rules are registered under a module type (``nn.Conv2d``), a function (``torch.relu``, ``operator.add``) or a
tensor method's name (``"view"``), the three kinds of call a ``torch.fx`` graph holds. A module whose type has no
rule of its own takes the rule of its nearest registered base class only when it does not override ``forward``
(a subclass with its own forward computes something else).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from torch import nn

from ..errors import SkippedWarning, UnsupportedLayerError, warn
from .rule import Rule

if TYPE_CHECKING:
    from ..graph import Node

_BY_TYPE: dict[type, Rule] = {}
_BY_FUNCTION: dict[Callable[..., Any], Rule] = {}
_BY_METHOD: dict[str, Rule] = {}
_GENERATION = [0]  # bumped by every change of the tables (relugeom.graph re-walks cached graphs)

HOW_TO = ("docs/modules.md lists the supported modules; relugeom.modules.register_rule(ModuleType, rule) "
          "adds a rule for your own")  # fmt: skip


def register_rule(key: type | Callable[..., Any] | str, rule: Rule, *, replace: bool = False) -> None:
    """Register ``rule`` for a module type, a function (a ``torch.fx`` ``call_function`` target) or a tensor
    method's name (``"view"``).

    A module type with a rule is a leaf of the network walker (:func:`relugeom.graph.walk`): its forward is not
    traced through, so a module that ``torch.fx`` cannot trace becomes usable by registering a rule for it.
    Registering a key twice is an error unless ``replace=True`` (which also overrides relugeom's own rules).

    Example
    -------
    >>> from torch import nn
    >>> from relugeom.modules import Rule, register_rule, rule_for_module, unregister_rule
    >>> class Halve(nn.Module):
    ...     def forward(self, x):
    ...         return x / 2
    >>> class HalveRule(Rule):
    ...     family, role, bias_free, description = "examples", "linear", True, "divides by 2"
    >>> register_rule(Halve, HalveRule())
    >>> rule_for_module(Halve()).role
    'linear'
    >>> unregister_rule(Halve)
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a relugeom.modules.Rule instance, got {type(rule).__name__}")
    if isinstance(key, str):
        table: dict[Any, Rule] = _BY_METHOD
    elif isinstance(key, type):
        if not issubclass(key, nn.Module):
            raise TypeError(f"a module rule needs an nn.Module subclass, got {key.__name__}")
        table = _BY_TYPE
    elif callable(key):
        table = _BY_FUNCTION
    else:
        raise TypeError(f"register a rule under a module type, a function or a method name, not {key!r}")
    if key in table and not replace and table[key] is not rule:
        raise ValueError(f"{_key_name(key)} already has the rule {table[key]!r}; pass replace=True to override it")
    table[key] = rule
    _GENERATION[0] += 1


def generation() -> int:
    """How many times the registry has changed (graphs walked before a change are walked again)."""
    return _GENERATION[0]


def unregister_rule(key: type | Callable[..., Any] | str) -> None:
    """Remove the rule registered under ``key`` (a no-op when there is none)."""
    for table in (_BY_TYPE, _BY_FUNCTION, _BY_METHOD):
        table.pop(key, None)  # type: ignore[call-overload]
    _GENERATION[0] += 1


def rule_for_module(module: nn.Module) -> Rule | None:
    """The rule of a module, or None (see the module docstring for base classes)."""
    cls = type(module)
    rule = _BY_TYPE.get(cls)
    if rule is not None:
        return rule
    for base in cls.__mro__[1:]:
        if base in _BY_TYPE:
            return _BY_TYPE[base] if cls.forward is base.forward else None
    return None


def rule_for_function(fn: Callable[..., Any]) -> Rule | None:
    try:
        return _BY_FUNCTION.get(fn)
    except TypeError:  # unhashable target
        return None


def rule_for_method(name: str) -> Rule | None:
    return _BY_METHOD.get(name)


def is_leaf(module: nn.Module) -> bool:
    """A module the walker keeps whole (a registered type), rather than tracing through its forward."""
    return rule_for_module(module) is not None


def unsupported_error(node: Node, analysis: str, reason: str | None = None) -> UnsupportedLayerError:
    """The one message for a node an analysis cannot treat: what, where, and what to do."""
    if reason is None:
        return UnsupportedLayerError(f"{analysis}: {node.label} is not supported (no layer rule); {HOW_TO}")
    return UnsupportedLayerError(f"{analysis}: {node.label} is not supported: {reason}")


def require(node: Node, analysis: str) -> Rule:
    """The node's rule, or :class:`UnsupportedLayerError` naming the module (no rule, or a configuration the
    rule cannot treat exactly)."""
    rule = node.rule
    if rule is None:
        raise unsupported_error(node, analysis)
    reason = rule.check(node)
    if reason is not None:
        raise unsupported_error(node, analysis, reason)
    return rule


def skip_warning(what: list[str], analysis: str) -> None:
    """The other half of the policy: where an analysis can honestly do without some modules, one warning
    naming every one of them (never a silent drop)."""
    if what:
        warn(f"{analysis}: left out {', '.join(what)} (no layer rule); {HOW_TO}", SkippedWarning)


def _key_name(key: object) -> str:
    """How a registration key is written in messages and docs: nn.Conv2d, F.max_pool2d, operator.add, .view()."""
    import operator

    import torch
    import torch.nn.functional as F

    if isinstance(key, str):
        return f".{key}()"
    if isinstance(key, type):
        return f"nn.{key.__name__}" if key.__module__.startswith("torch.nn") else f"{key.__module__}.{key.__name__}"
    name = getattr(key, "__name__", repr(key))
    for prefix, namespace in (("F", F), ("torch", torch), ("operator", operator)):
        for candidate in (name, getattr(key, "_relugeom_name", None)):
            if candidate and getattr(namespace, candidate, None) is key:
                return f"{prefix}.{candidate}"
    if name == "fn":  # a torch.nn.functional boolean dispatch (F.max_pool2d and friends)
        found = next((n for n in dir(F) if getattr(F, n) is key), None)
        if found:
            return f"F.{found}"
    mod = getattr(key, "__module__", None) or ""
    return name if mod == "builtins" else f"{mod}.{name}"


def registered() -> Iterator[tuple[str, str, Rule]]:
    """Every registration as ``(kind, name, rule)``, kind one of "module", "function", "method"."""
    for cls, rule in _BY_TYPE.items():
        yield "module", _key_name(cls), rule
    for fn, rule in _BY_FUNCTION.items():
        yield "function", _key_name(fn), rule
    for name, rule in _BY_METHOD.items():
        yield "method", _key_name(name), rule
