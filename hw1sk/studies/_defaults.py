"""The default estimators of the studies, and the short model names of their settings.

A study uses its default estimator only when it is given none; a given
estimator's settings are used as they are.  Every default trains with Adam.

>>> from hw1sk.studies._defaults import (default_deep_shallow_estimator,
...     default_flatness_classifier, default_minimal_ratio_regressor,
...     default_random_label_classifier, default_trajectory_estimator)
>>> default_flatness_classifier().get_params()["module__hidden"]
(128,)
>>> est = default_random_label_classifier()
>>> est.module__hidden, est.lr, est.batch_size, est.max_epochs
((512, 512), 0.001, 128, 60)
>>> default_minimal_ratio_regressor().get_params()["batch_size"]
-1
>>> est = default_trajectory_estimator()
>>> est.module__hidden, est.max_epochs, est.batch_size
((64, 32), 30, 128)
>>> est = default_deep_shallow_estimator("regression")
>>> est.batch_size, est.max_epochs, est.lr
(-1, 20000, 0.001)
"""

from __future__ import annotations

__all__ = ["default_flatness_classifier", "default_random_label_classifier",
           "default_param_count_classifier", "default_minimal_ratio_regressor",
           "default_trajectory_estimator", "default_deep_shallow_estimator", "describe_module"]

#: The minimal-ratio network: 1-20-20-1 tanh (481 parameters on 1-D data).
MINIMAL_RATIO_HIDDEN, MINIMAL_RATIO_ACTIVATION = (20, 20), "tanh"


def _classifier(**params):
    from ..estimators import NeuralClassifier

    return NeuralClassifier(module="mlp", lr=1e-3, **params)


def default_flatness_classifier(max_epochs=5):
    """HW1-3 flatness studies: MLP 784-128-10 (ReLU, 101,770 parameters), lr 1e-3, batch 64."""
    return _classifier(module__hidden=(128,), batch_size=64, max_epochs=max_epochs)


def default_random_label_classifier(max_epochs=60):
    """Random labels: MLP 784-512-512-10 (669,706 parameters, >100 per image at 5,000), batch 128.

    It memorizes 5,000 random MNIST labels in about 50 epochs.
    """
    return _classifier(module__hidden=(512, 512), batch_size=128, max_epochs=max_epochs)


def default_param_count_classifier(max_epochs=20):
    """Parameter count: lr 1e-3, batch 128; the study sets the module (family and widths)."""
    return _classifier(batch_size=128, max_epochs=max_epochs)


def default_minimal_ratio_regressor(hidden=MINIMAL_RATIO_HIDDEN,
                                    activation=MINIMAL_RATIO_ACTIVATION, max_epochs=1000,
                                    lr=1e-2):
    """Minimal ratio: MLP 1-20-20-1 tanh (481 parameters), full-batch, lr 1e-2, 1000 epochs, MSE."""
    from ..estimators import NeuralRegressor

    return NeuralRegressor(module="mlp", module__hidden=tuple(hidden),
                           module__activation=activation, batch_size=-1,
                           max_epochs=max_epochs, lr=lr)


def default_trajectory_estimator(regression=False, hidden=(64, 32)):
    """HW1-2 runs: MLP 784-64-32-10 (52,650 parameters), lr 1e-3, batch 128, 30 epochs.

    Eight such runs take ten minutes on two CPU cores
    (``benchmarks/bench_trajectory_study.py``); ``regression=True`` gives a
    :class:`~hw1sk.estimators.NeuralRegressor` (mean squared error).
    """
    from ..estimators import NeuralClassifier, NeuralRegressor

    cls = NeuralRegressor if regression else NeuralClassifier
    return cls(module="mlp", module__hidden=tuple(hidden), lr=1e-3, batch_size=128,
               max_epochs=30)


def default_deep_shallow_estimator(task):
    """Deep vs shallow: regression full batch, 20,000 epochs; classification batch 128, 10 epochs."""
    from ..estimators import NeuralClassifier, NeuralRegressor

    if task == "regression":
        return NeuralRegressor(max_epochs=20000, lr=1e-3, batch_size=-1)
    return NeuralClassifier(max_epochs=10, lr=1e-3, batch_size=128)


def describe_module(module):
    """A short name of a module for settings tables, e.g. ``"MLP 784-128-10"``."""
    hidden = getattr(module, "hidden", None)
    if hidden is not None and hasattr(module, "n_in") and hasattr(module, "n_out"):
        return f"{type(module).__name__} " + "-".join(
            str(w) for w in (module.n_in, *hidden, module.n_out))
    return type(module).__name__
