"""HW1-2 bonus, the error surface: the loss around a trained model, with its trajectory.

:class:`ErrorSurfaceStudy` trains one model while recording its weights
(:class:`~hw1sk.callbacks.WeightTrace`, through the traced run
:func:`~hw1sk.studies.optimization.trace_run` of the optimization study),
then evaluates the loss on a line and on a plane through the trained weights,
along two filter-normalized random directions (Li et al., 2018) or the two
principal directions of the trajectory, and projects the trajectory onto
that plane.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import is_classifier
from sklearn.utils._param_validation import Interval, StrOptions

from ..landscape import (
    loss_along_line,
    loss_surface,
    pca_directions,
    project_onto_plane,
    random_direction,
)
from ..seeding import as_seed, spawn_seeds
from ._base import (
    SHORTCUT_CONSTRAINTS,
    Study,
    apply_shortcuts,
    describe_value,
    prepare_data,
    shortcut_settings,
    subset_indices,
)
from ._defaults import default_trajectory_estimator, describe_module
from .optimization import score_snapshots, trace_run

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
    if extent is None:
        return
    values = np.atleast_1d(np.asarray(extent, dtype=object))
    if (values.ndim != 1 or len(values) not in (1, 2)
            or not all(isinstance(v, Real) and not isinstance(v, bool)
                       and np.isfinite(v) and v > 0 for v in values)):
        raise ValueError("extent must be a positive number, a pair of positive numbers or "
                         f"None, got {extent!r}.")


class ErrorSurfaceStudy(Study):
    """HW1-2 bonus: the error surface around a trained model, and the path to it.

    Trains one model (recording its weights every ``every`` epochs) with the
    given estimator's settings exactly, then
    evaluates the full-data loss at :math:`\\theta^* + \\alpha d_1` (a line)
    and at :math:`\\theta^* + \\alpha d_1 + \\beta d_2` (a plane) around the
    trained weights :math:`\\theta^*`, where :math:`d_1, d_2` are either

    * ``"pca"``: the two principal directions of the weight trajectory
      (:func:`hw1sk.landscape.pca_directions`, unit vectors; Li et al., 2018,
      Section 7): the plane that holds most of the path, so the projected
      trajectory is faithful; or
    * ``"random"``: two Gaussian directions, filter-normalized
      (:func:`hw1sk.landscape.random_direction`, Li et al., 2018, Section 4):
      the standard picture of the minimum's shape, where the trajectory
      projects to almost nothing (random directions in a high-dimensional
      space are nearly orthogonal to it; ``off_plane`` says how much).

    Every snapshot of the trajectory is projected onto the plane by least
    squares (:func:`hw1sk.landscape.project_onto_plane`).

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor or None, default=None
        Template of the run, cloned and never modified.  The run trains with
        its settings exactly, except the seed, the tracing callbacks the
        study appends, and the shortcuts below when they are set.  None:
        :func:`~hw1sk.studies.optimization.default_trajectory_estimator`
        (MLP 64-32, Adam, lr 1e-3, batches of 128, 30 epochs), a classifier
        for label targets and a regressor for float targets.
    hidden : sequence of int or None, default=None
        Hidden widths (the estimator's ``module__hidden``), when set; None
        keeps the estimator's.
    directions : {"pca", "random"}, default="pca"
    every : int, default=1
        Snapshot period in epochs (initial and final weights always kept).
    max_epochs, lr, batch_size : int, float, int or None, default=None
        Epochs, learning rate and batch size (``-1``: full batch) of the run,
        when set (recorded in ``settings_``); None keeps the estimator's.
    n_train : int or None, default=None
        Train on this many random samples of ``X``; None: all.
    n_eval : int or None, default=10000
        The landscape is evaluated on this many random training samples (the
        same for every point); None: all training samples.
    line_points : int, default=41
        Points of the 1-D line.
    surface_points : int, default=21
        Points per axis of the 2-D grid.
    extent : float, pair of float or None, default=None
        Half-width of the grids along :math:`d_1` (and :math:`d_2`), in units
        of the directions.  None: 1 for random directions (the ``[-1, 1]`` of
        Li et al.), and 1.2 times the trajectory's largest coordinate on each
        axis for PCA directions.
    filter_normalize : bool, default=True
        Filter-normalize the random directions.
    n_points_per_call : int, default=16
        Grid points evaluated together (:func:`torch.func.vmap`).
    n_jobs, backend, scheduler, cache_dir, progress
        How the training run is executed (:func:`hw1sk.sweep.run_sweep`;
        ``cache_dir`` lets a repeated study skip the training).
    device : str or None, default=None
        Where the model trains and the landscape is evaluated; None keeps
        the estimator's.
    random_state : int, RandomState or None, default=0
        Master seed of the run, the random directions and the data subsets.

    Attributes
    ----------
    results_ : pandas.DataFrame
        The surface as a tidy table, one row per grid point: ``alpha``,
        ``beta``, ``loss``.
    surface_ : tuple of (ndarray, ndarray, ndarray)
        ``(alphas, betas, losses)`` with ``losses[i, j]`` the loss at
        ``alphas[i], betas[j]`` (as :func:`hw1sk.landscape.loss_surface`).
    line_ : pandas.DataFrame
        ``alpha``, ``loss`` and, for classifiers, ``accuracy`` along :math:`d_1`.
    trajectory_coords_ : pandas.DataFrame
        One row per snapshot: ``epoch``, ``alpha``, ``beta`` (its projection),
        ``loss`` (at the snapshot's weights, on the evaluation samples) and
        ``off_plane`` (the norm of the part of :math:`\\theta - \\theta^*` off
        the plane, relative to the norm of :math:`\\theta - \\theta^*`; 0 at
        the trained weights).
    directions_ : ndarray of shape (2, n_params)
    trajectory_ : ndarray of shape (n_snapshots, n_params)
        The weight snapshots (float64), the last one the trained weights.
    origin_ : ndarray of shape (n_params,)
        The trained weights :math:`\\theta^*`.
    explained_variance_ratio_ : ndarray of shape (2,) or None
        Of the PCA directions; None for random directions.
    extent_ : tuple of float
        Half-widths of the grid along the two directions.
    estimator_ : NeuralClassifier or NeuralRegressor
        The fitted estimator of the run.
    module_ : torch.nn.Module
        The trained module (on the CPU).
    history_ : pandas.DataFrame
        Training history of the run: every column the estimator's callbacks
        recorded (``test_loss``, ``test_acc`` with held-out data).
    summary_ : pandas.DataFrame
        One row: ``directions``, ``train_loss`` (final, all training data),
        ``center_loss`` (surface at the origin, evaluation samples),
        ``surface_min``, ``surface_max``, ``line_min``, ``line_max``,
        ``median_off_plane``.
    settings_ : dict
        Every training setting of the template estimator
        (:func:`~hw1sk.studies._base.describe_estimator`), the shortcuts the
        study set, the directions, grids, seed and data sizes.
    diverged_ : pandas.DataFrame
        The run, if its loss became non-finite (then ``fit`` raises).

    See Also
    --------
    hw1sk.landscape.loss_surface, hw1sk.landscape.loss_along_line
    hw1sk.plotting.optimization.plot_error_surface

    References
    ----------
    .. [1] Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape
       of Neural Nets", NeurIPS 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.studies.error_surface import ErrorSurfaceStudy
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(60, 4).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> study = ErrorSurfaceStudy(hidden=(8,), max_epochs=4, line_points=5,
    ...                           surface_points=3, backend="sequential").fit(X, y)
    >>> study.surface_[2].shape, list(study.trajectory_coords_["epoch"])
    ((3, 3), [0, 1, 2, 3, 4])
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        **SHORTCUT_CONSTRAINTS,
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

    def __init__(self, estimator=None, *, hidden=None, directions="pca", every=1,
                 max_epochs=None, lr=None, batch_size=None, n_train=None, n_eval=10000,
                 line_points=41, surface_points=21, extent=None, filter_normalize=True,
                 n_points_per_call=16, n_jobs=1, backend="loky", scheduler=None,
                 cache_dir=None, progress=False, device=None, random_state=0):
        super().__init__(estimator=estimator, n_jobs=n_jobs, backend=backend,
                         scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                         device=device, random_state=random_state)
        self.hidden = hidden
        self.directions = directions
        self.every = every
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.n_train = n_train
        self.n_eval = n_eval
        self.line_points = line_points
        self.surface_points = surface_points
        self.extent = extent
        self.filter_normalize = filter_normalize
        self.n_points_per_call = n_points_per_call

    # ------------------------------------------------------------------ hooks
    def _prepare_data(self, X, y, X_test, y_test):
        _check_extent(self.extent)
        master = as_seed(self.random_state)  # the n_train subset, then four seeds:
        self._seeds = spawn_seeds(master, 4)  # the run, the n_eval subset, d_1 and d_2
        return prepare_data(X, y, X_test, y_test, n_train=self.n_train,
                            seeds=(None, master, None))

    def _default_estimator(self, data):
        return default_trajectory_estimator(regression=data.y.dtype.kind in "fc")

    def _template_estimator(self, data):
        return apply_shortcuts(super()._template_estimator(data), self)

    def _tasks(self, data, template):
        epochs, every = template.max_epochs, int(self.every)
        n_snapshots = epochs // every + 1 + bool(epochs % every)
        if self.directions == "pca" and n_snapshots < 3:
            raise ValueError(
                f"directions='pca' needs at least 3 weight snapshots; max_epochs={epochs} "
                f"with every={every} gives {n_snapshots}.")
        seed = self._seeds[0]
        return [({"seed": seed}, {"estimator": template, "X": data.X, "y": data.y,
                                  "X_test": data.X_test, "y_test": data.y_test, "seed": seed,
                                  "every": every, "score": False})]

    def _collect(self, data, template, labels, runs):
        run = runs[0]
        if run is None:
            raise RuntimeError("ErrorSurfaceStudy: the training run diverged; see diverged_ "
                               "(lower lr).")
        module, criterion = run["module"], run["criterion"]
        snapshots = run["snapshots"].astype(np.float64)
        origin = snapshots[-1]
        d1, d2 = self._plane(module, snapshots)
        coords = project_onto_plane(snapshots, origin, d1, d2)
        extent = self._extent(coords)
        # the landscape takes the module and its criterion: labels encoded by the fitted net
        n_eval = None if self.n_eval is None else min(int(self.n_eval), len(data.X))
        subset = subset_indices(len(data.X), n_eval, self._seeds[1], "n_eval")
        X_eval, y_eval = data.X[subset], run["targets"][subset]
        common = {"n_points_per_call": int(self.n_points_per_call), "device": template.device}
        line = loss_along_line(module, criterion, X_eval, y_eval, d1,
                               _grid(extent[0], int(self.line_points)),
                               accuracy=is_classifier(run["estimator"]),
                               **common)
        alphas, betas, losses = loss_surface(
            module, criterion, X_eval, y_eval, d1, d2,
            _grid(extent[0], int(self.surface_points)),
            _grid(extent[1], int(self.surface_points)), **common)
        off_plane = _off_plane(snapshots, origin, coords, np.stack([d1, d2]))
        snapshot_loss, _ = score_snapshots(module, criterion, snapshots, X_eval, y_eval)
        self.trajectory_coords_ = pd.DataFrame({
            "epoch": run["epochs"], "alpha": coords[:, 0], "beta": coords[:, 1],
            "loss": snapshot_loss, "off_plane": off_plane})
        self.line_, self.surface_ = line, (alphas, betas, losses)
        grid_a, grid_b = np.meshgrid(alphas, betas, indexing="ij")
        self.results_ = pd.DataFrame({"alpha": grid_a.ravel(), "beta": grid_b.ravel(),
                                      "loss": losses.ravel()})
        self.directions_, self.origin_, self.trajectory_ = np.stack([d1, d2]), origin, snapshots
        self.extent_ = extent
        self.estimator_, self.module_, self.history_ = run["estimator"], module, run["history"]
        self._summarize(run, line, grid_a, grid_b, losses, off_plane)
        self._run_facts = (describe_module(module), run["n_params"], len(X_eval))

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

    def _summarize(self, run, line, grid_a, grid_b, losses, off_plane):
        center = np.unravel_index(np.argmin(np.abs(grid_a) + np.abs(grid_b)), losses.shape)
        self.summary_ = pd.DataFrame([{
            "directions": self.directions,
            "train_loss": run["train"]["loss"],
            "center_loss": float(losses[center]),
            "surface_min": float(losses.min()), "surface_max": float(losses.max()),
            "line_min": float(line["loss"].min()), "line_max": float(line["loss"].max()),
            "median_off_plane": float(np.median(off_plane[:-1])) if len(off_plane) > 1
            else 0.0,
        }])

    def _settings(self, data, template):
        ratio, extent = self.explained_variance_ratio_, self.extent_
        model, n_params, n_eval = self._run_facts
        return {
            "model": model,
            "n_params": n_params,
            **shortcut_settings(self),
            "directions": ("PCA of the trajectory (explained variance "
                           f"{ratio[0]:.1%}, {ratio[1]:.1%})" if ratio is not None else
                           "random Gaussian, "
                           + ("filter-normalized" if self.filter_normalize else "raw")),
            "snapshots": f"every {self.every} epochs ({len(self.trajectory_)} in all)",
            "line": f"{self.line_points} points in ±{extent[0]:.3g}",
            "surface": f"{self.surface_points}×{self.surface_points} grid, "
                       f"±{extent[0]:.3g} × ±{extent[1]:.3g}",
            "n_train": int(data.X.shape[0]),
            "n_eval": int(n_eval),
            "random_state": describe_value(self.random_state),
            "seed": int(self._seeds[0]),
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
    residual = offsets - coords @ directions
    norms = np.linalg.norm(offsets, axis=1)
    return np.divide(np.linalg.norm(residual, axis=1), norms, out=np.zeros_like(norms),
                     where=norms > 0)
