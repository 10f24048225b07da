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
* **measures** (:mod:`relugeom.measures`): the facts :attr:`Rule.homogeneous`, :attr:`Rule.piecewise_linear`,
  :attr:`Rule.parametrized`, and one method per measure that needs the node's own part:

  - :meth:`Rule.kfac_patches`, :meth:`Rule.kfac_grads`: K-FAC's input and output-gradient rows of a layer
    (Martens and Grosse 2015; Grosse and Martens 2016);
  - :meth:`Rule.theta_tangent`: the Fisher-Rao norm's tangent ``J_theta f . theta`` carried through the node;
  - :meth:`Rule.pl_sq_norm`, :meth:`Rule.pl_batch_sum`: the node's share of the piecewise-linear tangent
    sensitivity (Daróczy 2020): per-sample squared norms, and the batch sum behind ``E_x S(x)``;
  - :meth:`Rule.param_degree`: the degree of positive homogeneity in the parameters the node adds (the
    Fisher-Rao identity of Liang et al. 2019);
  - :meth:`Rule.path_map`: the node's map with its coefficients raised to the power ``p`` (path norms,
    Neyshabur et al. 2015).

  Each returns ``NotImplemented`` where the rule cannot give it: the measure then takes its generic route or
  says which node stopped it (never a silently wrong number).

A rule that cannot treat one configuration of its module exactly (a max-pool returning indices, a batch norm
without running statistics) says why in :meth:`Rule.check`; the analyses turn that into
:class:`~relugeom.errors.UnsupportedLayerError` naming the module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
        """The node's role on the path between two conv layers (Gamba et al. 2019; Carlsson 2019): one of
        :data:`CONE_ROLES` and its description in words (the reason a pair is skipped, for ``"pool"`` and
        ``"break"``)."""
        return self.cone, f"{node.label} between the pair"

    # ------------------------------------------------------------------ resolution (stage)

    def shrinks(self, node: Node) -> bool | None:
        """Whether the node downsamples (shrinks the spatial size by a stride or a pooling), read from its
        hyper-parameters; None when only the sizes can tell (an adaptive pooling). Used for ``stage``."""
        return False

    # ------------------------------------------------------------------ measures

    def kfac_patches(self, node: Node, x: torch.Tensor) -> Any:
        """K-FAC (Martens and Grosse 2015; convolutions: Grosse and Martens 2016): a layer's input ``x`` as rows
        ``(B, T, G, K)``, one per output position ``t`` and group ``g`` (groups of a convolution have their own
        inputs and outputs), so that group ``g``'s output at ``t`` is ``W_g a_{t,g} + b_g`` with ``W_g`` its
        ``(out/G, K)`` block of ``weight.reshape(out, -1)``. The factor ``A_g = E[(1/T) sum_t a a^T]``.
        ``NotImplemented`` for nodes that are not such layers."""
        return NotImplemented

    def kfac_grads(self, node: Node, g: torch.Tensor) -> Any:
        """K-FAC's other factor: the gradient ``g`` with respect to the layer's output as rows ``(B, T, G, out/G)``
        in the positions and groups of :meth:`kfac_patches`, so that ``G_g = E[sum_t g g^T]``."""
        return NotImplemented

    def theta_tangent(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any], out: Any) -> Any:
        """The tangent ``J_theta f . theta`` (the direction is the parameters themselves) carried through the node.

        ``values`` holds the value of every input node, ``tangents`` their tangents (None: zero), ``out`` is the
        node's output. Returns the output's tangent (None: zero), or ``NotImplemented``. A node linear in its own
        parameters (Linear, Conv, batch norm) returns ``J_x o . t + o``; a parameter-free node maps the tangent
        by its Jacobian. The default serves the parameter-free linear maps without offset (``bias_free``): the
        node's own map applied to the tangents.
        """
        if self.role != "linear" or not self.bias_free or self.parametrized:
            return NotImplemented
        return self._map_tangents(node, values, tangents)

    def pl_sq_norm(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor) -> Any:
        """Piecewise-linear tangent sensitivity (Daróczy 2020, Lemma 3.1): per sample ``(B,)``, the squared norm
        of the node's parameter block of ``S(x) z``, from the tangent ``J a z`` of the node's input along ``z``
        and the back-propagated ``signal = d f / d out`` (constant on an activation region). ``NotImplemented``
        for nodes without parameters or without a rule for theirs."""
        return NotImplemented

    def pl_batch_sum(self, node: Node, tangent: torch.Tensor, signal: torch.Tensor, blocks: int = 1) -> Any:
        """Piecewise-linear tangent sensitivity, the defined quantity ``E_x S(x)`` (Daróczy 2020, Definition 3.1):
        the batch sum of the node's parameter blocks of ``S(x) z``, from the same ``tangent`` and ``signal`` as
        :meth:`pl_sq_norm`, over each of ``blocks`` equal consecutive parts of the batch (one per direction ``z``
        when several are stacked), as ``{parameter attribute name: (blocks, *parameter shape)}`` (a parameter left
        out is zero, as a layer's bias: it does not move inside an activation region). ``NotImplemented`` for
        nodes without parameters or without a rule for theirs."""
        return NotImplemented

    def param_degree(self, node: Node) -> int | str:
        """Fisher-Rao identity (Liang et al. 2019, Theorem 3.1): the degree of positive homogeneity in the
        parameters that the node adds to its inputs' (1 for a bias-free layer, 0 for a homogeneous map without
        parameters), or, as a string, why the node is not positively homogeneous in the parameters (the measure
        names the node)."""
        if self.homogeneous and not self.parametrized:
            return 0
        return "not positively homogeneous"

    def path_map(self, node: Node, args: Sequence[Any], kwargs: dict[str, Any], p: int) -> Any:
        """Path norms (Neyshabur et al. 2015): the node's output on non-negative inputs when every coefficient
        ``c`` of its (parameter-free, piecewise-linear) map is replaced by ``|c|^p`` (max-pools keep the maximum,
        as in Jiang et al. 2020's code); ``NotImplemented`` where the rule does not say. The default serves the
        activations (the identity on non-negative inputs) and max-pools."""
        if self.role in ("activation", "max") and not self.parametrized:
            return self.forward(node, args, kwargs)
        return NotImplemented

    def _map_tangents(self, node: Node, values: Mapping[Node, Any], tangents: Mapping[Node, Any]) -> Any:
        """The node's own map applied to its inputs' tangents (zeros where None; sizes and other non-tensor values
        as they are); None when every tangent is zero."""
        subst: dict[Node, Any] = {}
        moving = False
        for i in node.inputs:
            v = values[i]
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                t = tangents.get(i)
                moving = moving or t is not None
                subst[i] = torch.zeros_like(v) if t is None else t.reshape(v.shape)
            else:
                subst[i] = v
        if not moving:
            return None
        return self.forward(node, *node.bind(subst))

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
