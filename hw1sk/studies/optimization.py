"""HW1-2, optimization: weight trajectories of repeated runs and the gradient norm.

:func:`trace_run` (one traced run), :func:`score_snapshots` and
:func:`default_trajectory_estimator` are public here too (they live in ``_collect``
and ``_defaults``, shared with the error-surface study).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..parameters import layer_slices
from ..seeding import as_seed, spawn_seeds
from ._base import Study, describe_value, prepare_data, shortcut_settings
from ._collect import (COUNT, OPTIONAL_COUNT, data_sizes, final_scores, model_settings,
                       score_snapshots, stack, trace_run, with_trace_callbacks)
from ._defaults import default_trajectory_estimator

__all__ = ["OptimizationStudy", "default_trajectory_estimator", "trace_run", "score_snapshots"]

_GRAD_COLUMNS = ["run", "seed", "iteration", "epoch", "grad_norm", "loss"]


def _layer_names(template, X, y):
    """The layer names of the module ``template`` builds on ``X`` (one step, outcome ignored)."""
    probe = clone(template).set_params(max_epochs=1, batch_size=-1, device="cpu",
                                       callbacks=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        n = min(len(X), 64)
        return list(layer_slices(probe.fit(X[:n], y[:n]).module_))


class OptimizationStudy(Study):
    """HW1-2: where repeated training runs go in weight space, and their gradient norm.

    Trains the estimator ``n_runs`` times, each with its own seed (initial
    weights and batch order), snapshots the weights every ``every`` epochs and
    fits one :class:`~hw1sk.transformers.TrajectoryPCA` on the snapshots of all
    runs together, on all parameters (scope ``"model"``) and on one layer's
    (``"layer"``).  Snapshots are scored on the training data; the gradient
    norm is recorded at every step.

    Parameters
    ----------
    estimator : NeuralClassifier, NeuralRegressor or None, default=None
        Trained as given but for the seed, two tracing callbacks and the
        shortcuts; None: :func:`default_trajectory_estimator`.
    {shortcuts}
    n_runs : int, default=8
    every : int, default=3
        Snapshot period in epochs; the initial and final weights are always kept.
    layer : str or None, default=None
        Layer of the ``"layer"`` scope (:func:`hw1sk.parameters.layer_slices`
        names; ``"net.1"`` is an MLP's first); None: the first layer.
    n_train : int or None, default=None
        Train every run on the same ``n_train`` random samples of ``X``.
    test_every : int, default=1
        Score the test data, when given, every ``test_every`` epochs.
    random_state : int, RandomState or None, default=0
        Run ``i`` gets seed ``i`` of ``spawn_seeds(random_state, n_runs)``; it
        draws the ``n_train`` subset too.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (scope, run, snapshot): scope, run, seed, epoch, component_1,
        component_2, loss, accuracy (training data at the snapshot; NaN accuracy
        for regression).
    grad_norms_ : pandas.DataFrame
        One row per step: run, seed, iteration (0-based), epoch, grad_norm (L2
        norm of the batch-loss gradient before the step), loss (that batch's).
    history_ : pandas.DataFrame
        Per-epoch histories of the runs, run and seed the first columns.
    summary_ : pandas.DataFrame
        One row per run: run, seed, n_params, epochs, final train_loss,
        train_accuracy (test_* with test data), final_grad_norm (mean over the
        last epoch), displacement (initial to final weights), path_length.
    explained_variance_ratio_, pcas_ : dict
        Scope -> the two components' variance ratios; -> the TrajectoryPCA.
    trajectories_, estimators_, modules_ : dict
        Run -> float32 snapshots (n_snapshots, n_params); fitted estimator;
        trained module (on the CPU).
    layer_ : str
    layer_slices_ : dict
        Layer name -> slice of the flat parameter vector.

    See Also
    --------
    hw1sk.transformers.TrajectoryPCA
    hw1sk.callbacks.WeightTrace, hw1sk.callbacks.GradNormTrace
    hw1sk.plotting.optimization.plot_trajectories
    hw1sk.plotting.optimization.plot_gradient_norm

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.studies.optimization import OptimizationStudy
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(60, 4).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> study = OptimizationStudy(hidden=(8,), n_runs=2, max_epochs=6,
    ...                           backend="sequential").fit(X, y)
    >>> study.results_.groupby("scope").size().to_dict()
    {'layer': 6, 'model': 6}
    >>> study.layer_
    'net.1'
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        **dict.fromkeys(("n_runs", "every", "test_every"), COUNT),
        "layer": [str, None],
        "n_train": OPTIONAL_COUNT,
    }
    _run_function = staticmethod(trace_run)
    _held_out_in_training = True
    _shortcuts = ("hidden", "lr", "max_epochs", "batch_size")
    _doc_values = {"run_labels": "run, seed"}

    def __init__(self, estimator=None, *, hidden=None, n_runs=8, every=3, layer=None,
                 max_epochs=None, lr=None, batch_size=None, n_train=None, test_every=1,
                 **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _prepare_data(self, X, y, X_test, y_test):
        self._master = as_seed(self.random_state)  # the n_train subset and the run seeds
        return prepare_data(X, y, X_test, y_test, n_train=self.n_train,
                            seeds=(None, self._master, None))

    def _default_estimator(self, data):
        return default_trajectory_estimator(regression=data.y.dtype.kind in "fc")

    def _template_estimator(self, data):
        # the tracing callbacks on the template: runs differing in seed train together
        return with_trace_callbacks(super()._template_estimator(data), self.every)

    def _tasks(self, data, template):
        names = _layer_names(template, data.X, data.y) if self.layer is not None else ()
        if self.layer is not None and self.layer not in names:
            raise ValueError(f"layer {self.layer!r} is not a layer of the model; choose one "
                             f"of {names}.")
        common = {"estimator": template, "X": data.X, "y": data.y, "X_test": data.X_test,
                  "y_test": data.y_test, "every": int(self.every),
                  "test_every": int(self.test_every)}
        return [({"run": i, "seed": seed}, {**common, "seed": seed})
                for i, seed in enumerate(spawn_seeds(self._master, self.n_runs))]

    def _collect(self, data, template, labels, runs):
        done = {label["run"]: (label, run) for label, run in zip(labels, runs) if run is not None}
        if not done:
            raise RuntimeError("OptimizationStudy: every run diverged; see diverged_ (lower lr).")
        first = next(iter(done.values()))[1]
        self.layer_slices_ = first["layer_slices"]
        self.layer_ = self.layer if self.layer is not None else next(iter(self.layer_slices_))
        self._project(done.values())
        self.grad_norms_ = stack([(lab, run["grad_norms"]) for lab, run in done.values()])
        self.grad_norms_ = self.grad_norms_[_GRAD_COLUMNS]
        self.history_ = stack([(lab, run["history"]) for lab, run in done.values()], first=True)
        self.summary_ = pd.DataFrame([_summary_row(lab, run) for lab, run in done.values()])
        self.trajectories_ = {i: run["snapshots"] for i, (_, run) in done.items()}
        self.estimators_ = {i: run["estimator"] for i, (_, run) in done.items()}
        self.modules_ = {i: run["module"] for i, (_, run) in done.items()}
        self._model = model_settings(first["module"], first["n_params"])

    def _project(self, done):
        """Fit the joint PCA of each scope; set ``results_``, ``pcas_`` and their ratios."""
        from ..transformers import TrajectoryPCA

        layer = self.layer_slices_[self.layer_]
        arrays = {"model": [run["snapshots"] for _, run in done],
                  "layer": [run["snapshots"][:, layer] for _, run in done]}
        self.pcas_, frames = {}, []
        for scope, trajectories in arrays.items():
            pca = self.pcas_[scope] = TrajectoryPCA(n_components=2).fit(trajectories)
            for (label, run), coords in zip(done, pca.transform(trajectories)):
                frames.append(pd.DataFrame({
                    "scope": scope, **label, "epoch": run["epochs"],
                    "component_1": coords[:, 0].astype(float),
                    "component_2": coords[:, 1].astype(float),
                    "loss": run["loss"], "accuracy": run["accuracy"]}))
        self.results_ = pd.concat(frames, ignore_index=True)
        self.explained_variance_ratio_ = {s: p.explained_variance_ratio_
                                          for s, p in self.pcas_.items()}

    def _settings(self, data, template):
        layer = self.layer_slices_[self.layer_]
        return {
            **self._model,
            "layers": {name: sl.stop - sl.start for name, sl in self.layer_slices_.items()},
            "varied": "seed (random_state)",
            **shortcut_settings(self, self._shortcuts),
            "n_runs": int(self.n_runs),
            "snapshots": f"every {self.every} epochs, initial and final weights included",
            "layer": f"{self.layer_} ({layer.stop - layer.start} parameters)",
            "random_state": describe_value(self.random_state),
            "seeds": list(spawn_seeds(self._master, self.n_runs)),
            **data_sizes(data),
            "input_shape": tuple(data.X.shape[1:]),
        }


def _summary_row(label, run):
    """One row of ``summary_``: final scores, last gradient norm and the path's lengths."""
    snaps = run["snapshots"].astype(np.float64)
    grads = run["grad_norms"]
    last = grads[grads["epoch"] == grads["epoch"].max()]
    return {**label, "n_params": run["n_params"], "epochs": len(run["history"]),
            **final_scores(run), "final_grad_norm": float(last["grad_norm"].mean()),
            "displacement": float(np.linalg.norm(snaps[-1] - snaps[0])),
            "path_length": float(np.linalg.norm(np.diff(snaps, axis=0), axis=1).sum())}
