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
    # data
    "load_mnist": "datasets",
    "load_cifar10": "datasets",
    "make_function_dataset": "datasets",
    "random_labels": "datasets",
    "add_label_noise": "datasets",
    # estimators and tracing callbacks
    "NeuralClassifier": "estimators",
    "NeuralRegressor": "estimators",
    "WeightTrace": "callbacks",
    "GradNormTrace": "callbacks",
    "CurvatureTrace": "callbacks",
    "StopTraining": "interrupts",
    "SeedEnsemble": "ensemble",
    "fit_seeds": "ensemble",
    "PlateauStopping": "training_callbacks",
    "TargetLossStopping": "training_callbacks",
    # curvature and generalization measures
    "loss_hessian": "curvature",
    "hessian_eigenvalues": "curvature",
    "minimal_ratio": "curvature",
    "hessian_minimal_ratio": "curvature",
    "minimal_ratio_tolerance_sweep": "curvature",
    "top_hessian_eigenvalues": "curvature",
    "hessian_batch_spread": "curvature",
    "minimize_gradient_norm": "critical_points",
    "minimize_gradient_norms": "batched_critical_points",
    "hessian_trace": "stochastic_curvature",
    "hessian_spectral_density": "stochastic_curvature",
    "hessian_top_eigenvalue_and_trace": "stochastic_curvature",
    "exact_spectral_density": "stochastic_curvature",
    "input_jacobian_norm": "generalization",
    "loss_input_gradient_norm": "generalization",
    "sharpness": "generalization",
    # evaluation and transformers
    "evaluate_estimator": "evaluation",
    "TrajectoryPCA": "transformers",
    "ParameterInterpolator": "transformers",
    # studies
    "DeepShallowStudy": "studies.deep_shallow",
    "OptimizationStudy": "studies.optimization",
    "MinimalRatioStudy": "studies.minimal_ratio",
    "ErrorSurfaceStudy": "studies.error_surface",
    "HessianSpectrumStudy": "studies.hessian_spectrum",
    "RandomLabelStudy": "studies.random_labels",
    "ParamCountStudy": "studies.param_count",
    "InterpolationStudy": "studies.interpolation",
    "SensitivityStudy": "studies.sensitivity",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
