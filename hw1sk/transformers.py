"""Transformers over parameter space: trajectory PCA and interpolation between fitted nets."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin, is_classifier
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_consistent_length, check_is_fitted

from .evaluation import check_predict_X, encode_targets, estimator_loss, evaluate_module
from .parameters import assign_flat_parameters, flatten_parameters

__all__ = ["TrajectoryPCA", "ParameterInterpolator", "trajectory_array"]


def _find_weight_trace(estimator):
    from .callbacks import WeightTrace

    for _, cb in getattr(estimator, "callbacks_", []):
        if isinstance(cb, WeightTrace):
            return cb
    raise ValueError(
        f"{type(estimator).__name__} has no fitted WeightTrace callback; "
        "fit it with callbacks=[WeightTrace(...)] to record its trajectory."
    )


def trajectory_array(trajectory, layer=None) -> np.ndarray:
    """The weight snapshots of one run as an array ``(n_snapshots, n_params)``.

    Parameters
    ----------
    trajectory : ndarray, WeightTrace or fitted estimator with a WeightTrace
        A 2-D array is taken as is (``layer`` must then be None).
    layer : str, optional
        Name of one layer (see :func:`hw1sk.parameters.layer_slices`), to
        keep only its parameters.

    Returns
    -------
    snapshots : ndarray of shape (n_snapshots, n_params)
    """
    from .callbacks import WeightTrace

    if isinstance(trajectory, WeightTrace):
        arr = trajectory.to_array(layer=layer)
    elif hasattr(trajectory, "callbacks_"):
        arr = _find_weight_trace(trajectory).to_array(layer=layer)
    else:
        if layer is not None:
            raise ValueError(
                "layer can only be used with WeightTrace callbacks or fitted estimators, "
                "not with plain arrays."
            )
        arr = np.asarray(trajectory)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(
            f"A trajectory must be a non-empty 2-D array (n_snapshots, n_params); got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError("Trajectory contains NaN or inf (did the run diverge?).")
    return arr


class TrajectoryPCA(TransformerMixin, BaseEstimator):
    """One PCA fitted jointly on the weight snapshots of several training runs.

    HW1-2 asks for the trajectories of several runs in *one* 2-D picture:
    the snapshots of all runs are stacked, one :class:`sklearn.decomposition.PCA`
    is fitted on them, and each run's trajectory is projected with it.

    Parameters
    ----------
    n_components : int, default=2
        Number of principal components.
    layer : str, optional
        Use only this layer's parameters (e.g. ``"net.1"``); needs WeightTrace
        callbacks or fitted estimators as input.

    Attributes
    ----------
    pca_ : sklearn.decomposition.PCA
        The PCA fitted on the stacked snapshots.
    components_ : ndarray of shape (n_components, n_params)
    explained_variance_ratio_ : ndarray of shape (n_components,)
    n_trajectories_ : int
    trajectory_lengths_ : list of int
    n_features_in_ : int

    See Also
    --------
    hw1sk.callbacks.WeightTrace : records the snapshots.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.transformers import TrajectoryPCA
    >>> rng = np.random.RandomState(0)
    >>> runs = [rng.randn(5, 20).cumsum(0) for _ in range(3)]
    >>> coords = TrajectoryPCA().fit_transform(runs)
    >>> [c.shape for c in coords]
    [(5, 2), (5, 2), (5, 2)]
    """

    def __init__(self, n_components=2, layer=None):
        self.n_components = n_components
        self.layer = layer

    def _arrays(self, trajectories):
        if isinstance(trajectories, np.ndarray) and trajectories.ndim == 2:
            trajectories = [trajectories]
        if not isinstance(trajectories, (list, tuple)) or len(trajectories) == 0:
            raise ValueError("TrajectoryPCA expects a non-empty list of trajectories.")
        arrays = [trajectory_array(t, self.layer) for t in trajectories]
        widths = {a.shape[1] for a in arrays}
        if len(widths) != 1:
            raise ValueError(
                f"All trajectories must have the same number of parameters; got {sorted(widths)}."
            )
        return arrays

    def fit(self, trajectories, y=None):
        """Fit the PCA on the stacked snapshots of all trajectories.

        Parameters
        ----------
        trajectories : list of (ndarray, WeightTrace or fitted estimator)
        y : ignored

        Returns
        -------
        self : TrajectoryPCA
        """
        arrays = self._arrays(trajectories)
        stacked = np.vstack(arrays)
        if not isinstance(self.n_components, (int, np.integer)) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}.")
        if self.n_components > min(stacked.shape):
            raise ValueError(
                f"n_components={self.n_components} must be <= min(n_snapshots, n_params)="
                f"{min(stacked.shape)}."
            )
        self.pca_ = PCA(n_components=self.n_components, svd_solver="full").fit(stacked)
        self.components_ = self.pca_.components_
        self.explained_variance_ratio_ = self.pca_.explained_variance_ratio_
        self.n_trajectories_ = len(arrays)
        self.trajectory_lengths_ = [a.shape[0] for a in arrays]
        self.n_features_in_ = stacked.shape[1]
        return self

    def transform(self, trajectories):
        """Project trajectories on the fitted components.

        Parameters
        ----------
        trajectories : list of trajectories, or one 2-D array

        Returns
        -------
        coords : list of ndarray of shape (n_snapshots, n_components)
            One array per trajectory (a single array for a single 2-D array input).
        """
        check_is_fitted(self, "pca_")
        single = isinstance(trajectories, np.ndarray) and trajectories.ndim == 2
        arrays = self._arrays(trajectories)
        if arrays[0].shape[1] != self.n_features_in_:
            raise ValueError(
                f"Trajectories have {arrays[0].shape[1]} parameters, but TrajectoryPCA was "
                f"fitted on {self.n_features_in_}."
            )
        coords = [self.pca_.transform(a) for a in arrays]
        return coords[0] if single else coords

    def fit_transform(self, trajectories, y=None):
        """Fit on all trajectories and return each one's coordinates."""
        return self.fit(trajectories).transform(trajectories)


def _architecture(module):
    """What must agree for two modules to share one parameter space and one function.

    The class and name of every submodule (so that e.g. a ReLU and a tanh
    network with equal shapes are told apart), then each parameter's name and
    shape.
    """
    modules = [(name, type(m).__qualname__) for name, m in module.named_modules()]
    params = [(name, tuple(p.shape)) for name, p in module.named_parameters()]
    return modules, params


def _first_difference(a1, a2):
    """A readable description of the first place where two ``_architecture`` lists differ."""
    for x, z in zip(a1, a2):
        if x != z:
            return f"{x[0] or '<root>'} {x[1]} vs {z[0] or '<root>'} {z[1]}"
    return f"{len(a1)} vs {len(a2)} entries"


def _check_alphas(alphas):
    """Interpolation coefficients as a 1-D float array (default: 31 points in [-1, 2]).

    Parameters
    ----------
    alphas : array-like or None

    Returns
    -------
    alphas : ndarray of shape (n_alphas,)

    Raises
    ------
    ValueError
        If ``alphas`` is not a non-empty 1-D array of finite numbers.
    """
    if alphas is None:
        return np.linspace(-1.0, 2.0, 31)
    try:
        values = np.array(alphas, dtype=float)  # a copy: snapped below
    except (TypeError, ValueError):
        values = None
    if values is None or values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError(
            f"alphas must be a non-empty 1-D array of finite numbers, got {alphas!r}."
        )
    # grids built by arithmetic (0.1 * 10) may miss the end points by an ulp or so;
    # snapping keeps the end points exact (they are evaluated as the models themselves)
    for end in (0.0, 1.0):
        values[np.abs(values - end) < 1e-12] = end
    return values


def _batchnorm_layers(module):
    return [m for m in module.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _reset_batchnorm(module, X, batch_size=1024):
    """Recompute the BatchNorm running statistics of ``module`` on the inputs ``X``.

    As :func:`torch.optim.swa_utils.update_bn`: the statistics are reset and
    re-estimated by forward passes in train mode with ``momentum=None``
    (PyTorch's cumulative average of the chunk statistics).  ``X`` is cut
    into ``ceil(n / batch_size)`` chunks of nearly equal size (they differ by
    at most one sample), so the average weighs all samples almost equally and
    no chunk holds a single sample (which BatchNorm refuses in train mode).
    """
    bns = _batchnorm_layers(module)
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    p = next(module.parameters())
    flags = [(m, m.training) for m in module.modules()]
    module.train()
    try:
        with torch.no_grad():
            X = torch.as_tensor(np.asarray(X), dtype=p.dtype, device=p.device)
            n_chunks = max(1, -(-X.shape[0] // batch_size))
            for chunk in torch.tensor_split(X, n_chunks):
                module(chunk)
    finally:
        for m, training in flags:
            m.training = training
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum


class ParameterInterpolator(BaseEstimator):
    """Models on the line θ(α) = (1 − α) θ₁ + α θ₂ between two fitted estimators.

    The "flatness" experiment of HW1-3 (after Goodfellow et al., 2015, and
    Keskar et al., 2017): interpolate between two solutions of the same
    architecture and evaluate loss and accuracy along the line.

    Parameters
    ----------
    estimator1, estimator2 : fitted estimators of the same architecture
        Anything with ``module_`` and ``criterion_`` (hw1sk / skorch nets).
        They are never modified.
    alphas : array-like, optional
        Interpolation coefficients; default ``np.linspace(-1, 2, 31)``.
    recompute_batchnorm : bool, default=True
        Models with BatchNorm: the running statistics of θ(α) are not the
        interpolation of the end points' statistics, so for every α other
        than 0 and 1 they are recomputed on the training inputs passed to
        :meth:`evaluate` (as :func:`torch.optim.swa_utils.update_bn` does).
        At α = 0 and α = 1 the end points are used exactly as they are, own
        running statistics included, so that they reproduce their own loss
        and accuracy.  No effect on models without BatchNorm.  With False,
        every θ(α) keeps ``estimator1``'s running statistics.

    Attributes
    ----------
    theta1_, theta2_ : ndarray of shape (n_params,)
        The flat parameters (float64) of the two end points, in the layout of
        :func:`hw1sk.parameters.flatten_parameters`.
    alphas_ : ndarray of shape (n_alphas,)
    n_params_ : int
    results_ : pandas.DataFrame
        After :meth:`evaluate`: one row per (alpha, split) with loss and accuracy.

    See Also
    --------
    hw1sk.studies.interpolation.InterpolationStudy : trains the two end points and
        runs this interpolation.

    References
    ----------
    Goodfellow, Vinyals, Saxe, "Qualitatively characterizing neural network
    optimization problems", ICLR 2015.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralClassifier
    >>> from hw1sk.transformers import ParameterInterpolator
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(80, 4).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> nets = [NeuralClassifier(module__hidden=(8,), max_epochs=3, batch_size=bs,
    ...                          random_state=0).fit(X, y) for bs in (8, 80)]
    >>> frame = ParameterInterpolator(*nets, alphas=[0, 0.5, 1]).fit().evaluate(X, y)
    >>> frame.shape, list(frame.columns)
    ((3, 4), ['alpha', 'split', 'loss', 'accuracy'])
    """

    def __init__(self, estimator1, estimator2, alphas=None, recompute_batchnorm=True):
        self.estimator1 = estimator1
        self.estimator2 = estimator2
        self.alphas = alphas
        self.recompute_batchnorm = recompute_batchnorm

    def fit(self, X=None, y=None):
        """Check the two estimators and store their parameters.

        Parameters
        ----------
        X, y : ignored

        Returns
        -------
        self : ParameterInterpolator

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If either estimator is not fitted.
        ValueError
            If the two modules differ in structure or parameter shapes, two
            classifiers have different ``classes_`` (their output columns
            would stand for different classes), or ``alphas`` is not a
            non-empty 1-D array of finite numbers.
        """
        for name in ("estimator1", "estimator2"):
            check_is_fitted(getattr(self, name))
        for which in (0, 1):
            a1 = _architecture(self.estimator1.module_)[which]
            a2 = _architecture(self.estimator2.module_)[which]
            if a1 != a2:
                raise ValueError(
                    "estimator1 and estimator2 have different architectures "
                    f"({'parameter shapes' if which else 'modules'} differ: "
                    f"{_first_difference(a1, a2)}); interpolation needs two models "
                    "of the same architecture."
                )
        _check_same_classes(self.estimator1, self.estimator2)
        alphas = _check_alphas(self.alphas)
        self.theta1_ = flatten_parameters(self.estimator1.module_).detach().double().cpu().numpy()
        self.theta2_ = flatten_parameters(self.estimator2.module_).detach().double().cpu().numpy()
        self.alphas_ = alphas
        self.n_params_ = self.theta1_.size
        return self

    def path(self, alphas=None) -> np.ndarray:
        """Flat parameters θ(α) for each α.

        Parameters
        ----------
        alphas : array-like, optional
            Default: ``alphas_``.

        Returns
        -------
        thetas : ndarray of shape (n_alphas, n_params)
        """
        check_is_fitted(self, "theta1_")
        alphas = self.alphas_ if alphas is None else np.atleast_1d(np.asarray(alphas, float))
        return (1.0 - alphas)[:, None] * self.theta1_ + alphas[:, None] * self.theta2_

    def _set_alpha(self, module, alpha, X):
        """Write θ(α) into ``module`` (a copy of estimator1's) and refresh its BatchNorm."""
        assign_flat_parameters(module, torch.from_numpy(self.path([alpha])[0]))
        if self.recompute_batchnorm and X is not None:
            _reset_batchnorm(module, X)
        return module

    def interpolate(self, alpha, X=None):
        """A fitted copy of ``estimator1`` whose parameters are θ(α).

        Parameters
        ----------
        alpha : float
        X : array-like, optional
            Training inputs, used to recompute BatchNorm statistics (for
            α other than 0 and 1, see ``recompute_batchnorm``).

        Returns
        -------
        estimator : a deep copy of estimator1 (α = 1: of estimator2) with θ(α)
        """
        check_is_fitted(self, "theta1_")
        if float(alpha) == 0.0:
            return copy.deepcopy(self.estimator1)  # bit-exact end point, buffers included
        if float(alpha) == 1.0:
            return copy.deepcopy(self.estimator2)
        est = copy.deepcopy(self.estimator1)
        self._set_alpha(est.module_, alpha, X)
        return est

    def evaluate(self, X, y, X_test=None, y_test=None, batch_size=4096) -> pd.DataFrame:
        """Loss and accuracy of θ(α) for every α, on train (and test) data.

        The loss is the estimators' own training loss (their ``get_loss``, see
        :func:`hw1sk.evaluation.estimator_loss`), evaluated in eval mode, as :func:`hw1sk.evaluation.evaluate_estimator`; at α = 0 and
        α = 1 the numbers are exactly those of the two estimators.  The inputs
        are checked as ``estimator1.predict`` checks them and the labels are
        encoded through its ``classes_``
        (:func:`hw1sk.evaluation.encode_targets`), so any labels the models
        were trained on (``{3, 7}``, strings) are accepted.

        Parameters
        ----------
        X, y : array-like
            Training data (also used for BatchNorm statistics).
        X_test, y_test : array-like, optional
            Held-out data; both or neither.
        batch_size : int, default=4096
            Samples per forward pass (does not change the numbers' meaning).

        Returns
        -------
        results : pandas.DataFrame
            Columns ``alpha``, ``split`` ("train"/"test"), ``loss``, ``accuracy``;
            also stored as ``results_``.

        Raises
        ------
        ValueError
            If an input has a sample shape the estimators were not fitted on
            ("X has 5 features, but NeuralClassifier is expecting 784 features
            as input."), holds NaN or infinity ("Input X contains NaN."), has
            a different length than its labels, or a label is not in
            ``classes_``.
        """
        check_is_fitted(self, "theta1_")
        if (X_test is None) != (y_test is None):
            raise ValueError("Pass both X_test and y_test, or neither.")
        splits = [("train", *self._checked_data(X, y, "X"))]
        if X_test is not None:
            splits.append(("test", *self._checked_data(X_test, y_test, "X_test")))
        X = splits[0][1]
        work = copy.deepcopy(self.estimator1.module_)  # the one module that is overwritten
        rows = []
        for alpha in self.alphas_:
            if float(alpha) == 0.0:
                module, criterion = self.estimator1.module_, estimator_loss(self.estimator1)
            elif float(alpha) == 1.0:
                module, criterion = self.estimator2.module_, estimator_loss(self.estimator2)
            else:
                module, criterion = (self._set_alpha(work, alpha, X),
                                     estimator_loss(self.estimator1))
            for split, Xs, ys in splits:
                scores = evaluate_module(module, criterion, Xs, ys, batch_size=batch_size)
                rows.append({"alpha": float(alpha), "split": split, **scores})
        self.results_ = pd.DataFrame(rows, columns=["alpha", "split", "loss", "accuracy"])
        return self.results_

    def _checked_data(self, X, y, name):
        """``(X, y)`` as :func:`hw1sk.evaluation.evaluate_estimator` passes them on."""
        X = check_predict_X(self.estimator1, X, input_name=name)
        y = encode_targets(self.estimator1, y)
        check_consistent_length(X, y)
        return X, y


def _check_same_classes(estimator1, estimator2):
    """ValueError when two classifiers' output columns stand for different classes."""
    if not (is_classifier(estimator1) and is_classifier(estimator2)):
        return
    try:
        classes1, classes2 = np.asarray(estimator1.classes_), np.asarray(estimator2.classes_)
    except AttributeError:
        return  # a skorch net trained without y: nothing to compare
    if classes1.shape != classes2.shape or not np.array_equal(classes1, classes2):
        raise ValueError(
            f"estimator1 and estimator2 have different classes_ ({classes1.tolist()} vs "
            f"{classes2.tolist()}); interpolation needs two classifiers whose outputs "
            "stand for the same classes in the same order."
        )
