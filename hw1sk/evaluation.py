"""Loss and accuracy of a module or a fitted estimator on a data set."""

from __future__ import annotations

import math

import numpy as np
import torch
from skorch.callbacks import Callback


def _as_tensor(a, dtype=None, device="cpu"):
    from .estimators import _tensor_of  # read-only arrays (joblib's memory maps) included

    t = a if isinstance(a, torch.Tensor) else _tensor_of(np.asarray(a))
    t = torch.as_tensor(np.asarray(a)) if t is None else t
    if dtype is not None:
        t = t.to(dtype)
    return t.to(device)


def _module_device_dtype(module):
    p = next(module.parameters(), None)
    if p is None:
        return torch.device("cpu"), torch.get_default_dtype()
    return p.device, p.dtype


@torch.no_grad()
def evaluate_module(module, criterion, X, y, batch_size=4096):
    """Mean loss (and accuracy, for class labels) of ``module`` on ``(X, y)``.

    The module is evaluated in eval mode (restored afterwards), in chunks of
    ``batch_size`` samples; the chunk losses are weighted by chunk size, so
    the result equals the loss of one full-batch pass for mean-reduced
    criteria.

    Parameters
    ----------
    module : torch.nn.Module
    criterion : callable
        ``criterion(output, y)``, mean-reduced (``nn.CrossEntropyLoss()``,
        ``nn.MSELoss()``).
    X : array-like or Tensor of shape (n_samples, ...)
    y : array-like or Tensor of shape (n_samples,) or (n_samples, n_outputs)
    batch_size : int, default=4096

    Returns
    -------
    scores : dict
        ``{"loss": float, "accuracy": float}``; accuracy is NaN unless ``y``
        holds integer class labels and the output has one column per class.
    """
    device, dtype = _module_device_dtype(module)
    X = _as_tensor(X, dtype, device)
    y = _as_tensor(y, device=device)
    if y.is_floating_point():
        y = y.to(dtype)
    n = X.shape[0]
    if n == 0 or y.shape[0] != n:
        raise ValueError(f"X and y must hold the same, non-zero number of samples; got {n} and {y.shape[0]}.")
    was_training = module.training
    module.eval()
    try:
        total_loss, n_correct = 0.0, 0
        classify = not y.is_floating_point() and y.ndim == 1
        for start in range(0, n, batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            out = module(xb)
            total_loss += float(criterion(out, yb)) * xb.shape[0]
            if classify and out.ndim == 2 and out.shape[1] > 1:
                n_correct += int((out.argmax(1) == yb).sum())
            else:
                classify = False
    finally:
        module.train(was_training)
    return {"loss": total_loss / n, "accuracy": n_correct / n if classify else math.nan}


def evaluate_estimator(estimator, X, y, batch_size=4096):
    """Mean loss and accuracy of a fitted skorch-style estimator on ``(X, y)``.

    Uses the estimator's own module and criterion (``module_``,
    ``criterion_``), so the loss is the one it was trained on.

    Parameters
    ----------
    estimator : fitted NeuralClassifier, NeuralRegressor or skorch NeuralNet
    X, y : array-like
    batch_size : int, default=4096

    Returns
    -------
    scores : dict
        ``{"loss": float, "accuracy": float}`` (accuracy NaN for regression).
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator)
    y = np.asarray(y)
    if y.dtype.kind == "f" and y.ndim == 1 and not _is_classifier(estimator):
        y = y.reshape(-1, 1)
    return evaluate_module(estimator.module_, estimator.criterion_, X, y, batch_size)


def _is_classifier(estimator):
    from sklearn.base import is_classifier

    return is_classifier(estimator)





class HeldOutScore(Callback):
    """Score a held-out set at the end of every ``every``-th epoch.

    Records ``<name>_loss`` and ``<name>_acc`` (NaN for regression) in
    ``net.history``, computed with the net's own module and criterion in
    eval mode — the per-epoch test curves of HW1 without skorch's validation
    split.

    Parameters
    ----------
    X, y : array-like
        Held-out data.
    name : str, default="test"
        Prefix of the history columns.
    every : int, default=1
    batch_size : int, default=4096
    """

    def __init__(self, X, y, name="test", every=1, batch_size=4096):
        self.X = X
        self.y = y
        self.name = name
        self.every = every
        self.batch_size = batch_size

    def initialize(self):
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"every must be a positive integer, got {self.every!r}.")
        return self

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if epoch % self.every:
            return
        y = np.asarray(self.y)
        if y.dtype.kind == "f" and y.ndim == 1 and not _is_classifier(net):
            y = y.reshape(-1, 1)
        scores = evaluate_module(net.module_, net.criterion_, self.X, y, self.batch_size)
        net.history.record(f"{self.name}_loss", scores["loss"])
        net.history.record(f"{self.name}_acc", scores["accuracy"])
