"""hw1sk: scikit-learn-style estimators and studies for the Deep Learning HW1 experiments.

Public names are imported lazily, so ``import hw1sk`` stays fast and a user
who only needs the data loaders never pays for matplotlib.
"""

from ._lazy import attach

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # models
    "MLP": "models",
    "CNN": "models",
    "RowRNN": "models",
    "mlp_for_budget": "models",
    "cnn_for_budget": "models",
    "make_module": "models",
    # parameters and seeding
    "count_params": "parameters",
    "flatten_parameters": "parameters",
    "assign_flat_parameters": "parameters",
    "spawn_seeds": "seeding",
    # evaluation and transformers
    "evaluate_estimator": "evaluation",
    "TrajectoryPCA": "transformers",
    "ParameterInterpolator": "transformers",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
