"""One function per figure: a fitted study or a DataFrame in, a matplotlib Figure out.

Plotting never trains and never writes files.
"""

from .._lazy import attach

# public name -> module of this package that defines it
_EXPORTS = {
    "plot_loss_curves": "deep_shallow",
    "plot_predictions": "deep_shallow",
    "plot_training_curves": "deep_shallow",
    "plot_trajectories": "optimization",
    "plot_gradient_norm": "optimization",
    "plot_error_surface": "optimization",
    "plot_minimal_ratio": "curvature",
    "plot_hessian_spectrum": "curvature",
    "plot_spectral_density": "spectrum",
    "plot_random_labels": "generalization",
    "plot_param_count": "generalization",
    "plot_interpolation": "flatness",
    "plot_sensitivity": "flatness",
    "plot_sharpness": "flatness",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
