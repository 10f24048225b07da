"""relugeom: the geometry of trained ReLU networks.

The public API is re-exported here; see DESIGN.md for the definitions and the papers behind them.
"""

from .checkpoints import Checkpoint, checkpoint_series, load_checkpoint, save_checkpoint
from .errors import RelugeomError, RelugeomWarning
from .experiments.models import build_model, model_from_state_dict
from .experiments.reinit import critical_vs_bias, reinit_accuracy, reinit_run
from .geometry.preimage import Polyhedron, dual_basis, nesting, preimage, preimage_cone, preimage_through
from .layers import AffineLayer, find_layers, layer_table
from .regions.exact import (
    Partition2D,
    SegmentRegions,
    arrangement_regions,
    layer_regions,
    partition_2d,
    regions_on_segment,
)
from .regions.formulas import cnn_max_regions, cnn_region_bounds, fc_region_bounds, general_position_regions
from .regions.training import region_counts, regions_over_training
from .stats.cones import cone_params, cone_states, state_distribution
from .stats.projection import filter_cosines, layer_summary, projection_stats, summary_over_runs

__version__ = "0.1.0"

__all__ = [
    "AffineLayer",
    "Checkpoint",
    "Partition2D",
    "Polyhedron",
    "SegmentRegions",
    "arrangement_regions",
    "cnn_max_regions",
    "cnn_region_bounds",
    "fc_region_bounds",
    "general_position_regions",
    "layer_regions",
    "partition_2d",
    "region_counts",
    "regions_on_segment",
    "regions_over_training",
    "RelugeomError",
    "RelugeomWarning",
    "build_model",
    "checkpoint_series",
    "cone_params",
    "cone_states",
    "critical_vs_bias",
    "dual_basis",
    "filter_cosines",
    "find_layers",
    "layer_summary",
    "layer_table",
    "load_checkpoint",
    "model_from_state_dict",
    "nesting",
    "preimage",
    "preimage_cone",
    "preimage_through",
    "projection_stats",
    "reinit_accuracy",
    "reinit_run",
    "save_checkpoint",
    "state_distribution",
    "summary_over_runs",
]
