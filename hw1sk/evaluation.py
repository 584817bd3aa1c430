"""Loss and accuracy of a module or a fitted estimator on a data set."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import is_classifier
from sklearn.utils.validation import check_array, check_is_fitted
from skorch.callbacks import Callback

from ._inputs import as_input_tensor, as_target_tensor, eval_mode, module_device, module_dtype

__all__ = ["evaluate_module", "evaluate_estimator", "encode_targets", "check_predict_X",
           "HeldOutScore"]


def _check_label_range(y, n_columns):
    """ValueError naming the labels of ``y`` that are not column indices ``0..n_columns-1``."""
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_columns):
        labels = torch.unique(y).cpu().numpy()
        bad = labels[(labels < 0) | (labels >= n_columns)]
        raise ValueError(
            f"y contains labels {bad.tolist()} that are not column indices of the module's "
            f"output (0..{n_columns - 1}). Encode class labels through the fitted "
            "classifier's classes_ first (hw1sk.evaluation.encode_targets), or use "
            "evaluate_estimator."
        )


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
        Targets as the criterion takes them: class labels must already be
        column indices ``0..n_classes-1`` of the output (see
        :func:`encode_targets`; :func:`evaluate_estimator` encodes them).
    batch_size : int, default=4096

    Returns
    -------
    scores : dict
        ``{"loss": float, "accuracy": float}``; accuracy is NaN unless ``y``
        holds integer class labels and the output has one column per class.

    Raises
    ------
    ValueError
        If ``X`` and ``y`` differ in length, or integer labels are not
        column indices of a multi-column output.
    """
    device, dtype = module_device(module), module_dtype(module)
    X = as_input_tensor(X, dtype, device)
    y = as_target_tensor(y, dtype, device)
    n = X.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"X and y must hold the same number of samples; got {n} and "
                         f"{y.shape[0]}.")
    with eval_mode(module):
        total_loss, n_correct = 0.0, 0
        classify = not y.is_floating_point() and y.ndim == 1
        for start in range(0, n, batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            out = module(xb)
            columns = classify and out.ndim == 2 and out.shape[1] > 1
            if columns:
                _check_label_range(yb, out.shape[1])
            total_loss += float(criterion(out, yb)) * xb.shape[0]
            if columns:
                n_correct += int((out.argmax(1) == yb).sum())
            else:
                classify = False
    return {"loss": total_loss / n, "accuracy": n_correct / n if classify else math.nan}


def _skorch_class_indices(estimator, y):
    """Labels of a skorch classifier without label encoding: integer column indices.

    skorch's ``NeuralNetClassifier`` trains on the labels as they are and
    predicts ``argmax`` column indices, so its labels *are* the indices
    (whatever ``classes_`` holds); only their type is checked here, their
    range against the output in :func:`evaluate_module`.
    """
    if y.dtype.kind not in "iub":
        raise ValueError(
            f"y has labels of dtype {y.dtype}, but {type(estimator).__name__} trains on "
            "integer class indices 0..n_classes-1 (skorch classifiers do not encode "
            "labels); use hw1sk's NeuralClassifier for other labels."
        )
    return y.astype(np.int64, copy=False)


def encode_targets(estimator, y):
    """``y`` as the fitted estimator's criterion takes it.

    Class labels (any values: ``{3, 7}``, strings) become the column
    indices of the estimator's output: through ``classes_``, by the
    estimator's own encoding (``_validate_y(y, reset=False)`` of
    :class:`~hw1sk.estimators.NeuralClassifier`, which honours a given
    ``classes`` order such as ``classes=[1, 0]``).  Plain skorch classifiers
    train on the labels as they are, so their labels are used as they are.
    Regression targets become float columns ``(n_samples, n_outputs)``.

    Parameters
    ----------
    estimator : fitted NeuralClassifier, NeuralRegressor or skorch NeuralNet
    y : array-like or Tensor of shape (n_samples,) or (n_samples, n_outputs)

    Returns
    -------
    targets : ndarray
        int64 class indices of shape (n_samples,), or float targets of shape
        (n_samples, n_outputs).

    Raises
    ------
    ValueError
        If ``y`` holds labels that are not in the estimator's ``classes_``
        (the message names them).

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralClassifier
    >>> from hw1sk.evaluation import encode_targets
    >>> X = np.random.RandomState(0).randn(20, 3).astype("float32")
    >>> y = np.array(["three", "seven"] * 10)
    >>> net = NeuralClassifier(module__hidden=(4,), max_epochs=1).fit(X, y)
    >>> net.classes_.tolist(), encode_targets(net, ["seven", "three"]).tolist()
    (['seven', 'three'], [0, 1])
    """
    check_is_fitted(estimator)
    validate = getattr(estimator, "_validate_y", None)
    if validate is not None:  # hw1sk's estimators: their own encoding and checks
        return validate(y, reset=False)
    y = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if is_classifier(estimator):
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels, got an array of shape {y.shape}.")
        return _skorch_class_indices(estimator, y)
    if y.dtype.kind != "f":
        y = y.astype(np.float32)
    return y.reshape(-1, 1) if y.ndim == 1 else y


def check_predict_X(estimator, X, input_name="X"):
    """``X`` checked as the fitted estimator's ``predict`` checks it.

    Non-finite values are refused with scikit-learn's message (``"Input X
    contains NaN."``); then the estimator's own check
    (``_validate_predict_X`` of hw1sk's estimators) compares the sample
    shape with the one it was fitted on (``"X has 5 features, but
    NeuralClassifier is expecting 784 features as input."``).  Without one,
    ``n_features_in_`` is compared when the estimator has it.

    Parameters
    ----------
    estimator : fitted estimator
    X : array-like or Tensor of shape (n_samples, ...)
    input_name : str, default="X"
        Name of ``X`` in the messages.

    Returns
    -------
    X : ndarray or Tensor
        Validated (float32 for hw1sk's estimators).

    Raises
    ------
    ValueError
        For non-finite values or a sample shape the estimator was not fitted on.
    """
    if isinstance(X, torch.Tensor):
        if X.is_floating_point() and not bool(torch.isfinite(X.detach()).all()):
            raise ValueError(f"Input {input_name} contains NaN or infinity.")
    else:
        X = check_array(X, allow_nd=True, ensure_all_finite=True, input_name=input_name)
    validate = getattr(estimator, "_validate_predict_X", None)
    if validate is not None:
        return validate(X)
    n_features = getattr(estimator, "n_features_in_", None)
    if n_features is not None and X.ndim == 2 and X.shape[1] != n_features:
        raise ValueError(f"{input_name} has {X.shape[1]} features, but "
                         f"{type(estimator).__name__} is expecting {n_features} features "
                         "as input.")
    return X


def evaluate_estimator(estimator, X, y, batch_size=4096):
    """Mean loss and accuracy of a fitted skorch-style estimator on ``(X, y)``.

    Uses the estimator's own module and loss (``module_``, and
    :func:`estimator_loss`: its ``get_loss``), so the loss is the one it was
    trained on.  ``X`` is
    checked as ``predict`` checks it (:func:`check_predict_X`) and ``y`` is
    encoded through the estimator's ``classes_`` (:func:`encode_targets`), so
    any labels it was trained on (``{3, 7}``, strings, a given ``classes``
    order) give the loss of training and the accuracy of ``score``.

    Parameters
    ----------
    estimator : fitted NeuralClassifier, NeuralRegressor or skorch NeuralNet
    X, y : array-like
    batch_size : int, default=4096

    Returns
    -------
    scores : dict
        ``{"loss": float, "accuracy": float}`` (accuracy NaN for regression).

    Raises
    ------
    ValueError
        For a sample shape the estimator was not fitted on, non-finite
        inputs, or labels not in ``classes_``.
    """
    check_is_fitted(estimator)
    X = check_predict_X(estimator, X)
    y = encode_targets(estimator, y)
    return evaluate_module(estimator.module_, estimator_loss(estimator), X, y, batch_size)


def estimator_loss(estimator):
    """The loss ``estimator`` trains on, as a ``criterion(output, y)`` callable.

    It goes through the net's ``get_loss`` (eval mode), not ``criterion_``
    alone: skorch takes the log of a softmax output for ``NLLLoss``, and
    hw1sk's estimators pass log-probabilities as they are, so the evaluated
    loss is the training loss whatever the module ends in.
    """
    def loss(output, y):
        return estimator.get_loss(output, y, training=False)

    return loss


class HeldOutScore(Callback):
    """Score a held-out set at the end of every ``every``-th epoch.

    Records ``<name>_loss`` and ``<name>_acc`` (NaN for regression) in
    ``net.history``, computed with the net's own module and criterion in
    eval mode — the per-epoch test curves of HW1 without skorch's validation
    split.  The labels are encoded through the net's ``classes_``
    (:func:`encode_targets`), as :func:`evaluate_estimator` does.

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
        self.data_ = None
        return self

    def on_train_begin(self, net, **kwargs):
        self.data_ = None  # checked and encoded at the first scored epoch of this fit

    def on_train_end(self, net, **kwargs):
        self.data_ = None  # a fitted net pickles without a second copy of the data

    def _data(self, net):
        if getattr(self, "data_", None) is None:
            self.data_ = (check_predict_X(net, self.X), encode_targets(net, self.y))
        return self.data_

    def on_epoch_end(self, net, **kwargs):
        epoch = len(net.history)
        if epoch % self.every:
            return
        X, y = self._data(net)
        scores = evaluate_module(net.module_, estimator_loss(net), X, y, self.batch_size)
        net.history.record(f"{self.name}_loss", scores["loss"])
        net.history.record(f"{self.name}_acc", scores["accuracy"])
