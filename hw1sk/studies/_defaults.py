"""The default estimators of the studies and the short model names of their settings.

A study uses its default estimator only when it is given none; every
setting of a given estimator is then used as it is.
"""

from __future__ import annotations

__all__ = ["default_flatness_classifier", "default_random_label_classifier",
           "default_param_count_classifier", "default_minimal_ratio_regressor",
           "default_trajectory_estimator", "default_deep_shallow_estimator", "describe_module"]

# the default network of the random-label study: 784-512-512-10 (669,706 parameters)
# memorizes 5,000 random MNIST labels in ~50 epochs of Adam
_RANDOM_LABEL_HIDDEN = (512, 512)

# the default network of the minimal-ratio study: 1-20-20-1 tanh (481 parameters on 1-D data)
MINIMAL_RATIO_HIDDEN, MINIMAL_RATIO_ACTIVATION = (20, 20), "tanh"
_EPOCHS, _LR = 1000, 1e-2

# the MNIST network of the flatness studies: 784-128-10, ReLU (101,770 parameters)
_FLATNESS_HIDDEN = (128,)


def default_flatness_classifier(max_epochs=5):
    """The default network of the HW1-3 flatness studies.

    A :class:`~hw1sk.estimators.NeuralClassifier` MLP with one hidden layer of
    128 ReLU units (784-128-10 on MNIST, 101,770 parameters), Adam, lr 1e-3,
    batch size 64.

    Parameters
    ----------
    max_epochs : int, default=5

    Returns
    -------
    estimator : NeuralClassifier (unfitted)

    Examples
    --------
    >>> from hw1sk.studies._defaults import default_flatness_classifier
    >>> default_flatness_classifier().get_params()["module__hidden"]
    (128,)
    """
    from ..estimators import NeuralClassifier

    return NeuralClassifier(module="mlp", module__hidden=_FLATNESS_HIDDEN, lr=1e-3,
                            batch_size=64, max_epochs=max_epochs)


def describe_module(module):
    """A short name of a module for settings tables, e.g. ``"MLP 784-128-10"``."""
    hidden = getattr(module, "hidden", None)
    if hidden is not None and hasattr(module, "n_in") and hasattr(module, "n_out"):
        return f"{type(module).__name__} " + "-".join(
            str(w) for w in (module.n_in, *hidden, module.n_out))
    return type(module).__name__


def default_random_label_classifier(max_epochs=60):
    """The default network of the random-label study.

    A :class:`~hw1sk.estimators.NeuralClassifier` MLP with two hidden layers
    of 512 ReLU units (784-512-512-10 on MNIST, 669,706 parameters, over 100
    per training image at the default 5,000 images), Adam, lr 1e-3, batch
    size 128.

    Parameters
    ----------
    max_epochs : int, default=60

    Returns
    -------
    estimator : NeuralClassifier (unfitted)

    Examples
    --------
    >>> from hw1sk.studies._defaults import default_random_label_classifier
    >>> est = default_random_label_classifier()
    >>> est.module__hidden, est.lr, est.batch_size, est.max_epochs
    ((512, 512), 0.001, 128, 60)
    """
    from ..estimators import NeuralClassifier

    return NeuralClassifier(module="mlp", module__hidden=_RANDOM_LABEL_HIDDEN, lr=1e-3,
                            batch_size=128, max_epochs=max_epochs)


def default_param_count_classifier(max_epochs=20):
    """The default training setup of the parameter-count study.

    A :class:`~hw1sk.estimators.NeuralClassifier` with Adam, lr 1e-3, batch
    size 128; the study sets its module (family and widths).

    Parameters
    ----------
    max_epochs : int, default=20

    Returns
    -------
    estimator : NeuralClassifier (unfitted)
    """
    from ..estimators import NeuralClassifier

    return NeuralClassifier(module="mlp", lr=1e-3, batch_size=128, max_epochs=max_epochs)


def default_minimal_ratio_regressor(hidden=MINIMAL_RATIO_HIDDEN,
                                    activation=MINIMAL_RATIO_ACTIVATION, max_epochs=_EPOCHS,
                                    lr=_LR):
    """The default network of the HW1-2 minimal-ratio study.

    A :class:`~hw1sk.estimators.NeuralRegressor` MLP (two hidden layers of
    20 tanh units: 481 parameters on 1-D data), full-batch Adam, lr 1e-2,
    1000 epochs, MSE.

    Parameters
    ----------
    hidden : sequence of int, default=(20, 20)
    activation : str, default="tanh"
    max_epochs : int, default=1000
    lr : float, default=1e-2

    Returns
    -------
    estimator : NeuralRegressor (unfitted)

    Examples
    --------
    >>> from hw1sk.studies._defaults import default_minimal_ratio_regressor
    >>> default_minimal_ratio_regressor().get_params()["batch_size"]
    -1
    """
    from ..estimators import NeuralRegressor

    return NeuralRegressor(module="mlp", module__hidden=tuple(hidden),
                           module__activation=activation, batch_size=-1,
                           max_epochs=max_epochs, lr=lr)


def default_trajectory_estimator(regression=False, hidden=(64, 32)):
    """The estimator of the HW1-2 runs when the study is given none.

    An :class:`~hw1sk.models.MLP` (784-64-32-10 on MNIST: 52,650 parameters)
    trained with Adam (lr 1e-3), batches of 128, for 30 epochs: eight such
    runs fit in ten minutes on two CPU cores
    (``benchmarks/bench_trajectory_study.py``).

    Parameters
    ----------
    regression : bool, default=False
        A :class:`~hw1sk.estimators.NeuralRegressor` (mean squared error)
        instead of a :class:`~hw1sk.estimators.NeuralClassifier`.
    hidden : sequence of int, default=(64, 32)
        Hidden layer widths.

    Returns
    -------
    estimator : NeuralClassifier or NeuralRegressor (unfitted)

    Examples
    --------
    >>> from hw1sk.studies._defaults import default_trajectory_estimator
    >>> est = default_trajectory_estimator()
    >>> est.module__hidden, est.max_epochs, est.batch_size
    ((64, 32), 30, 128)
    """
    from ..estimators import NeuralClassifier, NeuralRegressor

    cls = NeuralRegressor if regression else NeuralClassifier
    return cls(module="mlp", module__hidden=tuple(hidden), lr=1e-3, batch_size=128,
               max_epochs=30)


def default_deep_shallow_estimator(task):
    """The estimator of :class:`~hw1sk.studies.deep_shallow.DeepShallowStudy` when it is given none, for ``task``.

    Regression: a :class:`~hw1sk.estimators.NeuralRegressor`, full batch,
    20,000 epochs; classification: a :class:`~hw1sk.estimators.NeuralClassifier`,
    batches of 128, 10 epochs; both Adam with lr 1e-3.

    >>> from hw1sk.studies._defaults import default_deep_shallow_estimator
    >>> est = default_deep_shallow_estimator("regression")
    >>> est.batch_size, est.max_epochs, est.lr
    (-1, 20000, 0.001)
    """
    from ..estimators import NeuralClassifier, NeuralRegressor

    if task == "regression":
        return NeuralRegressor(max_epochs=20000, lr=1e-3, batch_size=-1)
    return NeuralClassifier(max_epochs=10, lr=1e-3, batch_size=128)
