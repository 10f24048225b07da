"""relugeom: the geometry of trained ReLU networks.

The public API is re-exported here; see DESIGN.md for the definitions and the papers behind them.
"""

from .checkpoints import Checkpoint, checkpoint_series, load_checkpoint, save_checkpoint
from .errors import RelugeomError, RelugeomWarning
from .experiments.models import build_model, model_from_state_dict
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
from .stats.projection import filter_cosines, layer_summary, projection_stats

__version__ = "0.1.0"

__all__ = [
    "tangent_sensitivity",
    "path_norm",
    "norm_measures",
    "measure_model",
    "kfac",
    "hessian_trace",
    "fold_batchnorm",
    "fisher_rao_norm",
    "expected_sharpness",
    "epsilon_sharpness",
    "conv_spectral_norm",
    "conv_singular_values",
    "complexity_table",
    "AffineLayer",
    "KFAC",
    "Checkpoint",
    "RelugeomError",
    "RelugeomWarning",
    "build_model",
    "checkpoint_series",
    "filter_cosines",
    "find_layers",
    "layer_summary",
    "layer_table",
    "load_checkpoint",
    "model_from_state_dict",
    "projection_stats",
    "save_checkpoint",
]
