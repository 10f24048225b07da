"""Complexity measures of Daróczy 2020: Fisher-Rao norm, K-FAC, norms and path norms, spectral norms,
sharpness, tangent sensitivity, and the table of all of them over a run."""

from .fisher_rao import FisherRaoNorm, fisher_rao_norm
from .kfac import KFAC, KFACBlock, kfac
from .norms import NormMeasures, fold_batchnorm, margins, norm_measures, path_norm
from .rescale import alpha_scale
from .sharpness import EpsilonSharpness, Estimate, epsilon_sharpness, expected_sharpness, hessian_trace
from .spectral import SpectralNorm, conv_singular_values, conv_spectral_norm
from .table import MEASURES, complexity_table, measure_model
from .tangent import TangentSensitivity, tangent_sensitivity
from .tangent_bound import TangentBound, tangent_sensitivity_bound

__all__ = [
    "KFAC", "MEASURES", "EpsilonSharpness", "Estimate", "FisherRaoNorm", "KFACBlock", "NormMeasures", "SpectralNorm",
    "TangentBound", "TangentSensitivity", "alpha_scale",
    "complexity_table", "conv_singular_values", "conv_spectral_norm", "epsilon_sharpness",
    "expected_sharpness", "fisher_rao_norm", "fold_batchnorm", "hessian_trace", "kfac", "margins", "measure_model",
    "norm_measures", "path_norm", "tangent_sensitivity", "tangent_sensitivity_bound",
]  # fmt: skip
