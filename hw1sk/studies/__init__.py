"""The HW1 experiments as scikit-learn-style meta-estimators, one module per part."""

from .._lazy import attach

# public name -> module of this package that defines it
_EXPORTS = {
    "DeepShallowStudy": "deep_shallow",
    "OptimizationStudy": "optimization",
    "MinimalRatioStudy": "minimal_ratio",
    "ErrorSurfaceStudy": "error_surface",
    "RandomLabelStudy": "random_labels",
    "ParamCountStudy": "param_count",
    "InterpolationStudy": "interpolation",
    "SensitivityStudy": "sensitivity",
    "HessianSpectrumStudy": "hessian_spectrum",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
