"""Transformers over parameter space: trajectory PCA and interpolation between fitted nets."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted

from .evaluation import evaluate_estimator
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
    return [(name, tuple(p.shape)) for name, p in module.named_parameters()]


def _reset_batchnorm(module, X, batch_size=1024):
    """Recompute BatchNorm running statistics of ``module`` on ``X`` (cumulative average)."""
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: exact mean over all chunks
    p = next(module.parameters())
    was_training = module.training
    module.train()
    with torch.no_grad():
        X = torch.as_tensor(np.asarray(X), dtype=p.dtype, device=p.device)
        for start in range(0, X.shape[0], batch_size):
            module(X[start:start + batch_size])
    module.train(was_training)
    for m, momentum in saved:
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
        They are not modified.
    alphas : array-like, optional
        Interpolation coefficients; default ``np.linspace(-1, 2, 31)``.
    recompute_batchnorm : bool, default=True
        Models with BatchNorm: the running statistics of θ(α) are not the
        interpolation of the end points' statistics, so they are recomputed on
        the training data passed to :meth:`evaluate` (no effect without BatchNorm).

    Attributes
    ----------
    theta1_, theta2_ : ndarray of shape (n_params,)
        The flat parameters of the two end points.
    alphas_ : ndarray
    n_params_ : int
    results_ : pandas.DataFrame
        After :meth:`evaluate`: one row per (alpha, split) with loss and accuracy.

    References
    ----------
    Goodfellow, Vinyals, Saxe, "Qualitatively characterizing neural network
    optimization problems", ICLR 2015.
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
        """
        for name in ("estimator1", "estimator2"):
            check_is_fitted(getattr(self, name))
        a1 = _architecture(self.estimator1.module_)
        a2 = _architecture(self.estimator2.module_)
        if a1 != a2:
            diff = next(
                (f"{x[0]} {x[1]} vs {z[0]} {z[1]}" for x, z in zip(a1, a2) if x != z),
                f"{len(a1)} vs {len(a2)} parameter tensors",
            )
            raise ValueError(f"estimator1 and estimator2 have different architectures: {diff}.")
        alphas = np.linspace(-1.0, 2.0, 31) if self.alphas is None else np.asarray(self.alphas, float)
        if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)):
            raise ValueError("alphas must be a non-empty 1-D array of finite numbers.")
        self.theta1_ = flatten_parameters(self.estimator1.module_).double().cpu().numpy()
        self.theta2_ = flatten_parameters(self.estimator2.module_).double().cpu().numpy()
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

    def interpolate(self, alpha, X=None):
        """A fitted copy of ``estimator1`` whose parameters are θ(α).

        Parameters
        ----------
        alpha : float
        X : array-like, optional
            Training inputs, used to recompute BatchNorm statistics.

        Returns
        -------
        estimator : a deep copy of estimator1 with θ(α)
        """
        check_is_fitted(self, "theta1_")
        est = copy.deepcopy(self.estimator1)
        if float(alpha) == 0.0:
            return est  # bit-exact end point, buffers included
        if float(alpha) == 1.0:
            return copy.deepcopy(self.estimator2)
        assign_flat_parameters(est.module_, torch.from_numpy(self.path([alpha])[0]))
        if self.recompute_batchnorm and X is not None:
            _reset_batchnorm(est.module_, X)
        return est

    def evaluate(self, X, y, X_test=None, y_test=None, batch_size=4096) -> pd.DataFrame:
        """Loss and accuracy of θ(α) for every α, on train (and test) data.

        Parameters
        ----------
        X, y : array-like
            Training data (also used for BatchNorm statistics).
        X_test, y_test : array-like, optional
        batch_size : int, default=4096

        Returns
        -------
        results : pandas.DataFrame
            Columns ``alpha``, ``split`` ("train"/"test"), ``loss``, ``accuracy``;
            also stored as ``results_``.
        """
        check_is_fitted(self, "theta1_")
        splits = [("train", X, y)]
        if X_test is not None:
            splits.append(("test", X_test, y_test))
        rows = []
        for alpha in self.alphas_:
            est = self.interpolate(alpha, X)
            for split, Xs, ys in splits:
                scores = evaluate_estimator(est, Xs, ys, batch_size=batch_size)
                rows.append({"alpha": float(alpha), "split": split, **scores})
        self.results_ = pd.DataFrame(rows)
        return self.results_
