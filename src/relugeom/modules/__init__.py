"""The layer-rule registry: what every analysis needs to know of each module type, in one place.

One file per module family (:mod:`.linear`, :mod:`.conv`, :mod:`.relu`, :mod:`.maxpool`, :mod:`.avgpool`,
:mod:`.batchnorm`, :mod:`.reshape`, :mod:`.identity`, :mod:`.add`, :mod:`.concat`, :mod:`.shape`), each holding
the :class:`Rule` of its modules and functional operations; one lookup (:func:`rule_for_module`, and by graph node
in :mod:`relugeom.graph`); one policy for what has no rule (:func:`~.registry.require`: a clear
:class:`~relugeom.errors.UnsupportedLayerError` naming the module and its dotted name, or one warning naming what
was left out where an analysis can honestly do without it). :func:`register_rule` adds a rule for a user's own
module. ``docs/modules.md`` is generated from the registry (:func:`~.table.modules_markdown`).
"""

# the families register their rules on import
from . import add, avgpool, batchnorm, concat, conv, identity, linear, maxpool, relu, reshape, shape  # noqa: E402, F401, I001
from .registry import (
    is_leaf,
    register_rule,
    registered,
    rule_for_function,
    rule_for_method,
    rule_for_module,
    unregister_rule,
)
from .rule import CONE_ROLES, ROLES, Rule

__all__ = [
    "CONE_ROLES",
    "ROLES",
    "Rule",
    "is_leaf",
    "register_rule",
    "registered",
    "rule_for_function",
    "rule_for_method",
    "rule_for_module",
    "unregister_rule",
]
