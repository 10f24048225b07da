"""relugeom: the geometry of trained ReLU networks.

The public API is re-exported here; see DESIGN.md for the definitions and the papers behind them.
"""

from ._version import __version__  # noqa: F401
from .architectures import get_architecture, infer_architecture, register_architecture
from .checkpoints import Checkpoint, Run, checkpoint_series, load_checkpoint, save_checkpoint
from .errors import RelugeomError, RelugeomWarning
from .experiments.models import build_model, model_from_state_dict
from .experiments.reinit import critical_vs_bias, reinit_accuracy, reinit_run
from .geometry.preimage import Polyhedron, dual_basis, nesting, preimage, preimage_cone, preimage_through
from .layers import AffineLayer, find_layers, layer_table
from .measures import (
    KFAC,
    complexity_table,
    conv_singular_values,
    conv_spectral_norm,
    epsilon_sharpness,
    expected_sharpness,
    fisher_rao_norm,
    fold_batchnorm,
    hessian_trace,
    kfac,
    measure_model,
    norm_measures,
    path_norm,
    tangent_sensitivity,
)
from .regions.arrangement import arrangement_regions, layer_regions
from .regions.formulas import cnn_max_regions, cnn_region_bounds, fc_region_bounds, general_position_regions
from .regions.segment import SegmentRegions, regions_on_segment
from .regions.slice import Partition2D, partition_2d
from .regions.training import region_counts, regions_over_training
from .stats.cones import cone_params, cone_states, cone_tables, state_distribution
from .stats.projection import filter_cosines, layer_summary, projection_stats, summary_over_runs

__all__ = [
    "AffineLayer",
    "arrangement_regions",
    "build_model",
    "Checkpoint",
    "checkpoint_series",
    "cnn_max_regions",
    "cnn_region_bounds",
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
