"""relugeom: the geometry of trained ReLU networks.

The public API is re-exported here; the definitions and the papers behind them are in the README's references
and docs/*.md.
Names are imported on first use (PEP 562), so that ``import relugeom`` and the ``relugeom`` command
start without loading torch, and Ctrl-C during start-up is a clean "interrupted". To export a new name,
add it to ``_EXPORTS`` (module -> names) and to ``__all__`` (a test checks that they agree).
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__  # noqa: F401

_EXPORTS: dict[str, tuple[str, ...]] = {
    ".architectures": ("get_architecture", "infer_architecture", "register_architecture"),
    ".checkpoints": ("Checkpoint", "Run", "checkpoint_series", "load_checkpoint", "save_checkpoint"),
    ".errors": ("RelugeomError", "RelugeomWarning"),
    ".experiments.models": ("build_model", "model_from_state_dict"),
    ".experiments.reinit": ("critical_vs_bias", "reinit_accuracy", "reinit_run"),
    ".geometry.preimage": (
        "Polyhedron", "channel_nesting", "complete_nesting", "dual_basis", "face_nesting", "nesting", "preimage",
        "preimage_cone", "preimage_through",
    ),
    ".layers": ("AffineLayer", "find_layers", "layer_table"),
    ".measures": (
        "KFAC", "complexity_table", "conv_singular_values", "conv_spectral_norm", "epsilon_sharpness",
        "expected_sharpness", "fisher_rao_norm", "fold_batchnorm", "hessian_trace", "kfac", "measure_model",
        "norm_measures", "path_norm", "tangent_sensitivity",
    ),
    ".regions.arrangement": ("arrangement_regions", "layer_regions"),
    ".regions.formulas": ("cnn_max_regions", "cnn_region_bounds", "fc_region_bounds", "general_position_regions"),
    ".regions.segment": ("SegmentRegions", "regions_on_segment"),
    ".regions.slice": ("Partition2D", "partition_2d"),
    ".regions.training": ("region_counts", "regions_over_training"),
    ".stats.cones": ("cone_params", "cone_states", "cone_tables", "state_distribution"),
    ".stats.projection": ("filter_cosines", "layer_summary", "projection_stats", "summary_over_runs"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = [
    "AffineLayer",
    "arrangement_regions",
    "build_model",
    "channel_nesting",
    "Checkpoint",
    "checkpoint_series",
    "cnn_max_regions",
    "cnn_region_bounds",
    "complete_nesting",
    "complexity_table",
    "cone_params",
    "cone_states",
    "cone_tables",
    "conv_singular_values",
    "conv_spectral_norm",
    "critical_vs_bias",
    "dual_basis",
    "epsilon_sharpness",
    "expected_sharpness",
    "face_nesting",
    "fc_region_bounds",
    "filter_cosines",
    "find_layers",
    "fisher_rao_norm",
    "fold_batchnorm",
    "general_position_regions",
    "get_architecture",
    "hessian_trace",
    "infer_architecture",
    "kfac",
    "KFAC",
    "layer_regions",
    "layer_summary",
    "layer_table",
    "load_checkpoint",
    "measure_model",
    "model_from_state_dict",
    "nesting",
    "norm_measures",
    "Partition2D",
    "partition_2d",
    "path_norm",
    "Polyhedron",
    "preimage",
    "preimage_cone",
    "preimage_through",
    "projection_stats",
    "region_counts",
    "register_architecture",
    "regions_on_segment",
    "regions_over_training",
    "reinit_accuracy",
    "reinit_run",
    "RelugeomError",
    "RelugeomWarning",
    "Run",
    "save_checkpoint",
    "SegmentRegions",
    "state_distribution",
    "summary_over_runs",
    "tangent_sensitivity",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'relugeom' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
