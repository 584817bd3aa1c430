"""HW1-2 bonus, the error surface: the loss around a trained model, with its trajectory."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.utils._param_validation import Interval, StrOptions

from ..landscape import (loss_along_line, loss_surface, pca_directions, project_onto_plane,
                         random_direction)
from ..seeding import as_seed, spawn_seeds
from ._base import Study, describe_value, prepare_data, shortcut_settings, subset_indices
from ._collect import model_settings, score_snapshots, trace_run
from ._defaults import default_trajectory_estimator

__all__ = ["ErrorSurfaceStudy"]

# half-width of the auto grid around the trajectory, as a multiple of its extent
_PCA_MARGIN = 1.2


def _grid(half_width, n):
    """``n`` evenly spaced points in ``[-half_width, half_width]``, the centre exactly 0."""
    values = np.linspace(-half_width, half_width, n)
    values[np.abs(values) < 1e-12 * half_width] = 0.0
    return values


def _check_extent(extent):
    """A positive number, a pair of them, or None."""
    values = np.atleast_1d(np.asarray(extent, dtype=object))
    if extent is not None and (values.ndim != 1 or len(values) not in (1, 2) or not all(
            isinstance(v, Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0
            for v in values)):
        raise ValueError("extent must be a positive number, a pair of positive numbers or "
                         f"None, got {extent!r}.")


class ErrorSurfaceStudy(Study):
    """HW1-2 bonus: the error surface around a trained model, and the path to it.

    Trains one model, recording its weights every ``every`` epochs; evaluates
    the loss on ``n_eval`` training samples at :math:`\\theta^* + \\alpha d_1`
    (a line) and :math:`\\theta^* + \\alpha d_1 + \\beta d_2` (a plane) around
    the trained weights; projects every snapshot onto the plane by least
    squares.  Directions ``"pca"``: the trajectory's two principal directions
    (:func:`hw1sk.landscape.pca_directions`, [1]_ Section 7), the plane that
    holds most of the path; ``"random"``: two filter-normalized Gaussian
    directions (:func:`hw1sk.landscape.random_direction`, [1]_ Section 4), the
    standard picture of the minimum, onto which the path projects to almost
    nothing (``off_plane`` says how much).

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor or None, default=None
        Trained as given but the seed, the tracing callbacks and the shortcuts.
        None: :func:`~hw1sk.studies._defaults.default_trajectory_estimator`
        (MLP 64-32, Adam, lr 1e-3, batches of 128, 30 epochs).
    {shortcuts}
    directions : {"pca", "random"}, default="pca"
    every : int, default=1
        Snapshot period in epochs (initial and final weights always kept).
    n_train, n_eval : int or None, default=None and 10000
        Random training samples trained on, and of the landscape (None: all).
    line_points, surface_points : int, default=41 and 21
        Points of the line; per axis of the plane's grid.
    extent : float, pair of float or None, default=None
        Half-width of the grids along :math:`d_1` (and :math:`d_2`).  None: 1 for
        random directions, 1.2 times the path's largest coordinate on each axis for PCA.
    filter_normalize : bool, default=True
    n_points_per_call : int, default=16
        Grid points evaluated together (:func:`torch.func.vmap`).
    random_state : int, RandomState or None, default=0
        Seeds the run, the random directions and the data subsets.

    Attributes
    ----------
    results_ : pandas.DataFrame
        The surface, one row per grid point: ``alpha``, ``beta``, ``loss``.
    surface_, line_ : (alphas, betas, losses[i, j]) and pandas.DataFrame
        The plane; ``alpha``, ``loss`` (and ``accuracy`` for classifiers) on the line.
    trajectory_coords_ : pandas.DataFrame
        Per snapshot ``epoch``, ``alpha``, ``beta``, ``loss`` and ``off_plane``: the
        norm of :math:`\\theta - \\theta^*` off the plane, relative to its norm.
    directions_, trajectory_, origin_ : ndarray
        The two directions, the snapshots (float64), the trained weights.
    explained_variance_ratio_, extent_ : ndarray or None, tuple of float
        Of the PCA directions (None for random ones); the grid's half-widths.
    summary_ : pandas.DataFrame
        ``directions``, ``train_loss``, ``center_loss`` (surface at the origin),
        ``surface_min``, ``surface_max``, ``line_min``, ``line_max``, ``median_off_plane``.
    estimator_, module_, history_
        The fitted estimator, its module (CPU) and history.

    See Also
    --------
    hw1sk.landscape.loss_surface, hw1sk.plotting.optimization.plot_error_surface

    References
    ----------
    .. [1] Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.studies.error_surface import ErrorSurfaceStudy
    >>> X = np.random.RandomState(0).randn(60, 4).astype("float32"); y = (X[:, 0] > 0) * 1
    >>> study = ErrorSurfaceStudy(hidden=(8,), max_epochs=4, line_points=5,
    ...                           surface_points=3, backend="sequential").fit(X, y)
    >>> study.surface_[2].shape, list(study.trajectory_coords_["epoch"])
    ((3, 3), [0, 1, 2, 3, 4])
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        "directions": [StrOptions({"pca", "random"})],
        "every": [Interval(Integral, 1, None, closed="left")],
        "n_train": [Interval(Integral, 1, None, closed="left"), None],
        "n_eval": [Interval(Integral, 1, None, closed="left"), None],
        "line_points": [Interval(Integral, 2, None, closed="left")],
        "surface_points": [Interval(Integral, 2, None, closed="left")],
        "extent": [Interval(Real, 0, None, closed="neither"), "array-like", None],
        "filter_normalize": ["boolean"],
        "n_points_per_call": [Interval(Integral, 1, None, closed="left")],
    }
    _run_function = staticmethod(trace_run)
    _shortcuts = ("hidden", "lr", "max_epochs", "batch_size")
    _doc_values = {"run_labels": "seed"}

    def __init__(self, estimator=None, *, hidden=None, directions="pca", every=1,
                 max_epochs=None, lr=None, batch_size=None, n_train=None, n_eval=10000,
                 line_points=41, surface_points=21, extent=None, filter_normalize=True,
                 n_points_per_call=16, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _prepare_data(self, X, y, X_test, y_test):
        _check_extent(self.extent)
        master = as_seed(self.random_state)  # the n_train subset, then four seeds:
        self._seeds = spawn_seeds(master, 4)  # the run, the n_eval subset, d_1 and d_2
        return prepare_data(X, y, X_test, y_test, n_train=self.n_train,
                            seeds=(None, master, None))

    def _default_estimator(self, data):
        return default_trajectory_estimator(regression=data.y.dtype.kind in "fc")

    def _tasks(self, data, template):
        epochs, every = template.max_epochs, int(self.every)
        n_snapshots = epochs // every + 1 + bool(epochs % every)
        if self.directions == "pca" and n_snapshots < 3:
            raise ValueError(
                f"directions='pca' needs at least 3 weight snapshots; max_epochs={epochs} "
                f"with every={every} gives {n_snapshots}.")
        seed = self._seeds[0]
        return [({"seed": seed}, dict(estimator=template, X=data.X, y=data.y, X_test=data.X_test,
                                      y_test=data.y_test, seed=seed, every=every, score=False))]

    def _collect(self, data, template, labels, runs):
        run = runs[0]
        if run is None:
            raise RuntimeError("ErrorSurfaceStudy: the training run diverged; see diverged_ "
                               "(lower lr).")
        module, criterion = run["module"], run["criterion"]
        snapshots = self.trajectory_ = run["snapshots"].astype(np.float64)
        origin = self.origin_ = snapshots[-1]
        d1, d2 = self._plane(module, snapshots)
        coords = project_onto_plane(snapshots, origin, d1, d2)
        extent = self.extent_ = self._extent(coords)
        # the landscape takes the module and its criterion: labels encoded by the fitted net
        n_eval = None if self.n_eval is None else min(int(self.n_eval), len(data.X))
        subset = subset_indices(len(data.X), n_eval, self._seeds[1], "n_eval")
        X_eval, y_eval = data.X[subset], run["targets"][subset]
        common = {"n_points_per_call": int(self.n_points_per_call), "device": template.device}
        line = self.line_ = loss_along_line(
            module, criterion, X_eval, y_eval, d1, _grid(extent[0], int(self.line_points)),
            accuracy=is_classifier(run["estimator"]), **common)
        alphas, betas, losses = self.surface_ = loss_surface(
            module, criterion, X_eval, y_eval, d1, d2,
            _grid(extent[0], int(self.surface_points)),
            _grid(extent[1], int(self.surface_points)), **common)
        self.directions_ = np.stack([d1, d2])
        off_plane = _off_plane(snapshots, origin, coords, self.directions_)
        snapshot_loss, _ = score_snapshots(module, criterion, snapshots, X_eval, y_eval)
        self.trajectory_coords_ = pd.DataFrame({
            "epoch": run["epochs"], "alpha": coords[:, 0], "beta": coords[:, 1],
            "loss": snapshot_loss, "off_plane": off_plane})
        grid_a, grid_b = np.meshgrid(alphas, betas, indexing="ij")
        self.results_ = pd.DataFrame({"alpha": grid_a.ravel(), "beta": grid_b.ravel(),
                                      "loss": losses.ravel()})
        self.estimator_, self.module_, self.history_ = run["estimator"], module, run["history"]
        center = np.unravel_index(np.argmin(np.abs(grid_a) + np.abs(grid_b)), losses.shape)
        self.summary_ = pd.DataFrame([{
            "directions": self.directions, "train_loss": run["train"]["loss"],
            "center_loss": float(losses[center]),
            "surface_min": float(losses.min()), "surface_max": float(losses.max()),
            "line_min": float(line["loss"].min()), "line_max": float(line["loss"].max()),
            "median_off_plane": float(np.median(off_plane[:-1])) if len(off_plane) > 1 else 0.0,
        }])
        self._run_facts = (module, run["n_params"], len(X_eval))

    def _plane(self, module, snapshots):
        """The two directions; sets ``explained_variance_ratio_`` (None for random ones)."""
        if self.directions == "pca":
            plane = pca_directions(snapshots, n_components=2)
            self.explained_variance_ratio_ = plane.explained_variance_ratio
            return plane.directions
        self.explained_variance_ratio_ = None
        return tuple(random_direction(module, filter_normalize=self.filter_normalize,
                                      random_state=seed).double().cpu().numpy()
                     for seed in self._seeds[2:])

    def _settings(self, data, template):
        ratio, extent = self.explained_variance_ratio_, self.extent_
        module, n_params, n_eval = self._run_facts
        return {
            **model_settings(module, n_params),
            **shortcut_settings(self, self._shortcuts),
            "directions": ("PCA of the trajectory (explained variance "
                           f"{ratio[0]:.1%}, {ratio[1]:.1%})" if ratio is not None else
                           "random Gaussian, "
                           + ("filter-normalized" if self.filter_normalize else "raw")),
            "snapshots": f"every {self.every} epochs ({len(self.trajectory_)} in all)",
            "line": f"{self.line_points} points in ±{extent[0]:.3g}",
            "surface": f"{self.surface_points}×{self.surface_points} grid, "
                       f"±{extent[0]:.3g} × ±{extent[1]:.3g}",
            "n_train": int(data.X.shape[0]), "n_eval": int(n_eval),
            "random_state": describe_value(self.random_state), "seed": int(self._seeds[0]),
        }

    def _extent(self, coords):
        if self.extent is not None:
            values = np.atleast_1d(np.asarray(self.extent, dtype=float))
            return (float(values[0]), float(values[-1]))
        if self.directions == "random":
            return (1.0, 1.0)
        spread = _PCA_MARGIN * np.abs(coords).max(axis=0)
        # a flat axis (a straight path) still gets a grid of the other axis' size
        spread = np.where(spread > 0, spread, max(spread.max(), 1e-3))
        return (float(spread[0]), float(spread[1]))


def _off_plane(snapshots, origin, coords, directions):
    """Norm of each snapshot's offset off the plane, relative to its offset (0 at the origin)."""
    offsets = snapshots - origin
    norms = np.linalg.norm(offsets, axis=1)
    return np.divide(np.linalg.norm(offsets - coords @ directions, axis=1), norms,
                     out=np.zeros_like(norms), where=norms > 0)
