"""The :class:`Rule`: what relugeom's analyses need to know of one module type or functional operation.

A rule is asked, never re-decided: an analysis walks a network's graph (:mod:`relugeom.graph`), and at every
node it asks the node's rule for its part (BackPACK's shape, Dangel et al. 2020: what is computed lives in the
analysis, how each layer contributes lives here, so a new layer type is one file). Every method receives the
graph :class:`~relugeom.graph.Node` (its module, or its function and arguments), so one rule serves
``nn.ReLU()``, ``F.relu(x)``, ``torch.relu(x)`` and ``x.relu()`` alike.

What a rule states, by analysis:

* **role** (``ROLES``), what kind of map the node is:

  - ``"layer"``: an affine layer with weights (Linear, Conv): the layers the papers analyse;
  - ``"norm"``: a per-channel affine map with weights, foldable into the layer before it (eval batch norm);
  - ``"linear"``: a map without parameters that is linear (affine where a constant is added) in its tensor
    inputs: pooling by averages, reshapes, identity/dropout in eval mode, additions, concatenations;
  - ``"activation"``: a piecewise-linear activation that splits a piece of input space by the sign of every
    input feature (ReLU, leaky ReLU, PReLU), with slope 1 on the positive side and :meth:`Rule.negative_slope`
    on the other;
  - ``"max"``: max-pooling, which splits a piece by the arg-max of every window (:meth:`Rule.windows`);
  - ``"shape"``: shape queries (``x.size(0)``, ``x.shape``) whose values are not tensors.

* **exact regions** (float64): on a piece of input space, every node's value is an affine map of the piece's
  coordinates; ``layer``/``norm``/``linear`` nodes map it by :meth:`Rule.forward` (the affine offset removed from
  the linear part unless ``bias_free``), ``activation`` and ``max`` nodes split the piece.
* **unrolled operator**: :meth:`Rule.unroll`, the exact sparse matrix of an affine node on a given input shape.
* **cones**: :meth:`Rule.cone_role`, the node's role between two conv layers: ``"pass"``, ``"relu"``,
  ``"fold-bn"``, ``"pool"`` or ``"break"``, with a reason in words.
* **resolution** (the ``stage`` column): :meth:`Rule.shrinks`, whether the node downsamples, read from its
  hyper-parameters (None where only the sizes can tell, as for an adaptive pooling).
* **measures**: the facts :attr:`Rule.homogeneous`, :attr:`Rule.piecewise_linear`, :attr:`Rule.parametrized`,
  and the extension points :meth:`Rule.kfac_patches`, :meth:`Rule.theta_tangent` and
  :meth:`Rule.pl_sq_norm`, which return ``NotImplemented`` until a rule fills them in.

A rule that cannot treat one configuration of its module exactly (a max-pool returning indices, a batch norm
without running statistics) says why in :meth:`Rule.check`; the analyses turn that into
:class:`~relugeom.errors.UnsupportedLayerError` naming the module.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

if TYPE_CHECKING:
    from ..graph import Node

ROLES = ("layer", "norm", "linear", "activation", "max", "shape")
CONE_ROLES = ("pass", "relu", "fold-bn", "pool", "break")


class Rule:
    """How one module type or functional operation takes part in relugeom's analyses (see the module docstring).

    Subclass it for a new layer type and register an instance with :func:`relugeom.modules.register_rule`.
    Class attributes describe the rule; methods receive the graph node.

    Example
    -------
    >>> import torch
    >>> from torch import nn
    >>> from relugeom.modules import Rule, register_rule
    >>> class Double(nn.Module):
    ...     def forward(self, x):
    ...         return 2 * x
    >>> class DoubleRule(Rule):
    ...     family, role, bias_free = "examples", "linear", True
    ...     description = "multiplies by 2"
    >>> register_rule(Double, DoubleRule())
    >>> from relugeom.regions.segment import regions_on_segment
    >>> net = nn.Sequential(nn.Linear(1, 2), Double(), nn.ReLU(), nn.Linear(2, 1))
    >>> regions_on_segment(net, [-5.0], [5.0]).n_activation_regions <= 3
    True
    >>> from relugeom.modules import unregister_rule
    >>> unregister_rule(Double)
    """

    family: ClassVar[str] = "other"
    """The module family (one file of :mod:`relugeom.modules`): a row group of the supported-modules table."""
    role: ClassVar[str] = "linear"
    """One of :data:`ROLES`."""
    description: ClassVar[str] = ""
    """One line for the supported-modules table."""
    cone: ClassVar[str] = "break"
    """The role between two conv layers (one of :data:`CONE_ROLES`); :meth:`cone_role` adds the words."""
    shrinks_when: ClassVar[str] = ""
    """When the node shrinks the spatial size, in words (for the supported-modules table)."""
    bias_free: ClassVar[bool] = False
    """True when the map is linear (no offset): its value on zero inputs is zero, so exact regions skip the
    offset correction."""

    # ------------------------------------------------------------------ facts for the measures

    @property
    def piecewise_linear(self) -> bool:
        """The node's output is a piecewise-linear function of its inputs (every role but ``"shape"``)."""
        return self.role != "shape"

    @property
    def homogeneous(self) -> bool:
        """Positively 1-homogeneous in its input, ``f(a x) = a f(x)`` for ``a > 0``, without parameters of its own:
        the activations and parameter-free maps for which the identities of Liang et al. 2019 hold."""
        return self.role in ("activation", "max") or (self.role == "linear" and self.bias_free)

    @property
    def parametrized(self) -> bool:
        """The node has trained parameters (weights of a layer or a norm, a learned slope)."""
        return self.role in ("layer", "norm")

    # ------------------------------------------------------------------ every analysis

    def check(self, node: Node) -> str | None:
        """Why this node's configuration cannot be treated exactly (None when it can)."""
        return None

    def forward(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """The node's output for the given argument values, out of place (in-place ops must not write into
        values that other nodes still read). The default calls the module or function as the model does."""
        return node.call(args, kwargs)

    # ------------------------------------------------------------------ exact regions

    def negative_slope(self, node: Node, shape: Sequence[int]) -> float | np.ndarray:
        """Role ``"activation"``: the slope on the negative side, a number or one per feature of an input of
        ``shape`` (without the batch axis), flattened."""
        raise NotImplementedError(f"{type(self).__name__} is not an activation")

    def windows(self, node: Node, shape: Sequence[int]) -> np.ndarray:
        """Role ``"max"``: ``(n_out, window)`` flat input indices of every output's window for an input of
        ``shape`` (without the batch axis), -1 where the window covers padding."""
        raise NotImplementedError(f"{type(self).__name__} is not a max-pool")

    # ------------------------------------------------------------------ unrolled operator

    def unroll(self, node: Node, shape: Sequence[int]) -> Any:
        """The exact operator ``(A, b)`` of an affine node on inputs of ``shape`` (without the batch axis):
        ``A`` a scipy sparse matrix on the flattened input, ``b`` the flattened offset, float64.

        The default, for single-input affine nodes, evaluates the node on the unit vectors (exact: every
        column is one evaluation of the map; the cost is one forward pass per input entry). Layers override
        it with :func:`relugeom.geometry.unroll.unroll`. Returns ``NotImplemented`` for the other roles.
        """
        if self.role not in ("layer", "norm", "linear") or len(node.inputs) != 1:
            return NotImplemented
        import scipy.sparse as sp

        def apply(x: torch.Tensor) -> torch.Tensor:
            return self.forward(node, *node.bind({node.inputs[0]: x}))

        n = math.prod(shape)
        with torch.no_grad():
            b = apply(torch.zeros((1, *shape), dtype=torch.float64)).reshape(-1)
            cols = []
            for start in range(0, n, 4096):
                m = min(4096, n - start)
                eye = torch.zeros((m, n), dtype=torch.float64)
                eye[torch.arange(m), start + torch.arange(m)] = 1.0
                eye = eye.reshape(m, *shape)
                cols.append(sp.csr_array((apply(eye).reshape(eye.shape[0], -1) - b).numpy()))
        return sp.vstack(cols).T.tocsr(), b.numpy()

    # ------------------------------------------------------------------ cones

    def cone_role(self, node: Node) -> tuple[str, str]:
        """The node's role on the path between two conv layers (seeds 000, 002): one of :data:`CONE_ROLES`
        and its description in words (the reason a pair is skipped, for ``"pool"`` and ``"break"``)."""
        return self.cone, f"{node.label} between the pair"

    # ------------------------------------------------------------------ resolution (stage)

    def shrinks(self, node: Node) -> bool | None:
        """Whether the node downsamples (shrinks the spatial size by a stride or a pooling), read from its
        hyper-parameters; None when only the sizes can tell (an adaptive pooling). Used for ``stage``."""
        return False

    # ------------------------------------------------------------------ extension points (measures)

    def kfac_patches(self, node: Node, x: torch.Tensor) -> Any:
        """K-FAC (Martens and Grosse 2015; convolutions: Grosse and Martens 2016): the layer's input ``x`` as
        ``(B, T, in)`` rows, one per output position ``t``, so that the factor ``A = E[(1/T) sum_t a_t a_t^T]``
        and the gradient ``grad_W l = sum_t g_t a_t^T``. ``NotImplemented`` until a rule provides it."""
        return NotImplemented

    def theta_tangent(self, node: Node, inp: torch.Tensor, out: torch.Tensor, t: torch.Tensor | None) -> Any:
        """The tangent ``J_theta f . theta`` carried through the node: given the tangent ``t`` of its input
        (None: zero), the tangent of ``out`` (``J_x o . t + o`` for a layer linear in its own parameters, ``t``
        mapped like the input for parameter-free modules). ``NotImplemented`` until a rule provides it."""
        return NotImplemented

    def pl_sq_norm(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor) -> Any:
        """Piecewise-linear tangent sensitivity (Daróczy 2020, Lemma 3.1): per sample, the squared norm of the
        node's parameter block of ``S(x) z`` from the input tangent ``J a z`` and the back-propagated
        ``signal``. ``NotImplemented`` until a rule provides it."""
        return NotImplemented

    # ------------------------------------------------------------------ helpers for subclasses

    @staticmethod
    def arg(node: Node, index: int, name: str, default: Any = None) -> Any:
        """A functional node's argument by position or keyword (the module's attribute for a module node)."""
        if node.module is not None:
            return getattr(node.module, name, default)
        if len(node.args) > index:
            return node.args[index]
        return node.kwargs.get(name, default)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(family={self.family!r}, role={self.role!r})"


def implements(rule: Rule, method: str) -> bool:
    """Whether ``rule`` overrides ``method`` of :class:`Rule` (for the supported-modules table)."""
    return getattr(type(rule), method) is not getattr(Rule, method)
