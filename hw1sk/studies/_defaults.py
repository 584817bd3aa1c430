"""The default estimators of the studies and the short model names of their settings.

A study uses its default estimator only when it is given none; every
setting of a given estimator is then used as it is.
"""

from __future__ import annotations

__all__ = ["default_flatness_classifier", "describe_module"]

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
