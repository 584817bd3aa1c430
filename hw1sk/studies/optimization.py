"""HW1-2, optimization: weight trajectories of repeated runs and the gradient norm.

:class:`OptimizationStudy` trains one estimator ``n_runs`` times, each run
with its own seed, records the weights every ``every`` epochs
(:class:`~hw1sk.callbacks.WeightTrace`) and the global gradient norm at every
optimizer step (:class:`~hw1sk.callbacks.GradNormTrace`), then fits one
:class:`~hw1sk.transformers.TrajectoryPCA` jointly on the snapshots of all
runs, once for the whole model and once for a single layer, and projects
every run's trajectory to two dimensions.

The traced run (:func:`trace_run`), the snapshot scoring
(:func:`score_snapshots`) and the default estimator
(:func:`default_trajectory_estimator`) are public: the error-surface study
(:mod:`hw1sk.studies.error_surface`) uses them too.
"""

from __future__ import annotations

import copy
import warnings
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import Interval

from ..evaluation import encode_targets, evaluate_module
from ..parameters import assign_flat_parameters, flatten_parameters, layer_slices
from ..seeding import as_seed, spawn_seeds
from ._base import (
    SHORTCUT_CONSTRAINTS,
    Study,
    apply_shortcuts,
    describe_value,
    prepare_data,
    shortcut_settings,
    train_run,
    with_callbacks,
)
from ._defaults import default_trajectory_estimator, describe_module

__all__ = ["OptimizationStudy", "default_trajectory_estimator", "trace_run", "score_snapshots"]

#: Names of the tracing callbacks the study appends to every run.
_WEIGHT_TRACE = "weight_trace"
_GRAD_TRACE = "grad_norm_trace"

_GRAD_COLUMNS = ["run", "seed", "iteration", "epoch", "grad_norm", "loss"]


# -------------------------------------------------------------------------- one run
def _evaluation_target(y):
    """Targets as the criterion takes them: 1-D real targets become a column."""
    y = np.asarray(y)
    return y.reshape(-1, 1) if y.dtype.kind == "f" and y.ndim == 1 else y


def score_snapshots(module, criterion, snapshots, X, y):
    """Loss and accuracy of ``module`` with each row of ``snapshots`` as its parameters.

    The module is copied (never modified) and evaluated in eval mode with its
    own buffers (e.g. BatchNorm statistics of the final model).

    Parameters
    ----------
    module : torch.nn.Module
    criterion : callable
        Mean-reduced, ``criterion(output, y)``.
    snapshots : ndarray of shape (n_snapshots, n_params)
        Flat parameters in the layout of :func:`hw1sk.parameters.flatten_parameters`.
    X, y : array-like
        The data (class labels ``0..k-1`` or real targets).

    Returns
    -------
    losses, accuracies : ndarray of shape (n_snapshots,)
        Accuracies are NaN for real targets.
    """
    work = copy.deepcopy(module)
    y = _evaluation_target(y)
    scores = []
    for theta in np.asarray(snapshots):
        assign_flat_parameters(work, torch.as_tensor(theta))
        scores.append(evaluate_module(work, criterion, X, y))
    return (np.array([s["loss"] for s in scores], dtype=float),
            np.array([s["accuracy"] for s in scores], dtype=float))


def _on_cpu(obj):
    """``obj`` when it is no module or already on the CPU, else a CPU copy of it.

    A copy, so that the fitted estimator keeps its module on its own device.
    """
    if not isinstance(obj, torch.nn.Module):
        return obj
    if all(t.device.type == "cpu" for t in [*obj.parameters(), *obj.buffers()]):
        return obj
    return copy.deepcopy(obj).cpu()


def trace_run(estimator, X, y, X_test=None, y_test=None, seed=0, every=3, test_every=1,
              score=True):
    """One traced training run: weight snapshots, gradient norms, history (a sweep task).

    Appends :class:`~hw1sk.callbacks.WeightTrace` (every ``every`` epochs)
    and :class:`~hw1sk.callbacks.GradNormTrace` to a clone of ``estimator``
    and trains it with :func:`~hw1sk.studies._base.train_run` (seed
    ``seed``, every other setting as given); every trajectory ends at the
    trained model (a last snapshot is added when needed).

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor (unfitted template)
    X, y, X_test, y_test : ndarray
        Training data and (optional) held-out data, scored every ``test_every`` epochs.
    seed, test_every : int, default=0, 1
    every : int, default=3
        Snapshot period in epochs (epoch 0, the initial weights, included).
    score : bool, default=True
        Score every snapshot on ``(X, y)`` (exact full-data loss and accuracy
        at the snapshot's parameters, eval mode); otherwise the snapshots get
        the epoch's running training loss recorded by the WeightTrace.

    Returns
    -------
    run : dict
        What :func:`~hw1sk.studies._base.train_run` returns, plus
        ``snapshots`` (``(n_snapshots, n_params)``), their ``epochs``,
        ``loss`` and ``accuracy``, ``grad_norms`` (a DataFrame),
        ``layer_slices``, the trained ``module`` and ``criterion`` (on the
        CPU) and ``targets`` (``y`` as the criterion takes it).

    Raises
    ------
    hw1sk.sweep.RunDiverged
        When the training diverged.
    """
    from ..callbacks import GradNormTrace, WeightTrace

    est = with_callbacks(clone(estimator), (_WEIGHT_TRACE, WeightTrace(every=int(every))),
                         (_GRAD_TRACE, GradNormTrace()))
    run = train_run(est, X, y, X_test, y_test, seed=seed, test_every=test_every,
                    keep_estimator=True)
    fitted = run["estimator"]
    snapshots, epochs, losses, accuracies = _trajectory(fitted, run["history"])
    module, criterion = _on_cpu(fitted.module_), _on_cpu(fitted.criterion_)
    targets = encode_targets(fitted, y)
    if score:
        losses, accuracies = score_snapshots(module, criterion, snapshots, X, targets)
    return {
        **run, "snapshots": snapshots, "epochs": np.asarray(epochs, dtype=int),
        "loss": np.asarray(losses, dtype=float), "accuracy": np.asarray(accuracies, dtype=float),
        "grad_norms": dict(fitted.callbacks_)[_GRAD_TRACE].to_frame(),
        "layer_slices": dict(layer_slices(module)), "module": module, "criterion": criterion,
        "targets": targets,
    }


def _trajectory(fitted, history):
    """The WeightTrace's snapshots, epochs and running scores, the final weights appended."""
    weights = dict(fitted.callbacks_)[_WEIGHT_TRACE]
    snapshots = weights.to_array()
    epochs = list(weights.epochs_)
    losses, accuracies = list(weights.train_loss_), list(weights.train_accuracy_)
    if epochs[-1] != len(history):
        final = flatten_parameters(fitted.module_).to(device="cpu", dtype=torch.float32)
        snapshots = np.vstack([snapshots, final.numpy()[None]])
        epochs.append(len(history))
        losses.append(float(history["train_loss"].iloc[-1]))
        accuracies.append(float(history["train_acc"].iloc[-1])
                          if "train_acc" in history.columns else np.nan)
    return snapshots, epochs, losses, accuracies


def _layer_names(template, X, y):
    """The layer names of the module ``template`` builds on ``X`` (one step on a few samples).

    Only the structure of the probe is used; the step's outcome, a divergence
    included, does not matter.
    """
    probe = clone(template).set_params(max_epochs=1, batch_size=-1, device="cpu",
                                       callbacks=None)
    n = min(len(X), 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(layer_slices(probe.fit(X[:n], y[:n]).module_))


class OptimizationStudy(Study):
    """HW1-2: where do repeated training runs go in weight space, and how?

    Trains the given estimator ``n_runs`` times, each run with its own seed
    (its own initial weights and batch order) and every other setting as
    given, snapshots the weights every ``every`` epochs, and fits one
    :class:`~hw1sk.transformers.TrajectoryPCA` on the snapshots of all runs
    together: once on all parameters (scope ``"model"``) and once on one
    layer's (scope ``"layer"``).  Every snapshot is scored on the training
    data, so each point of the 2-D trajectories can be annotated with its
    loss or accuracy.  The global L2 norm of the gradient and the batch loss
    are recorded at every iteration (``grad_norms_``), for the "gradient norm
    during training" figure.

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor or None, default=None
        Template of the runs, cloned for each and never modified.  Every run
        trains with its settings exactly, except the seed, the two tracing
        callbacks the study appends, and the shortcuts below when they are
        set.  None: :func:`default_trajectory_estimator` (MLP 64-32, Adam,
        lr 1e-3, batches of 128, 30 epochs), a classifier for label targets
        and a regressor for float targets.
    hidden : sequence of int or None, default=None
        Hidden widths (the estimator's ``module__hidden``), when set; None
        keeps the estimator's.
    n_runs : int, default=8
        Independent training runs.
    every : int, default=3
        Snapshot period in epochs; the initial weights (epoch 0) and the
        final ones are always kept.
    layer : str or None, default=None
        The layer of the ``"layer"`` scope, a name from
        :func:`hw1sk.parameters.layer_slices` (``"net.1"`` is the first layer
        of an MLP); None takes the first layer.
    max_epochs, lr : int or None, float or None, default=None
        Epochs and learning rate of every run, when set; None keeps the
        estimator's.
    batch_size : int or None, default=None
        Batch size of every run, when set (``-1`` is full batch); None keeps
        the estimator's.
    n_train : int or None, default=None
        Train on this many samples of ``X`` drawn at random (the same for
        every run); None uses all.
    test_every : int, default=1
        With test data: score it every ``test_every`` epochs (in ``history_``).
    n_jobs, backend, scheduler, cache_dir, progress
        How the runs are executed, see :func:`hw1sk.sweep.run_sweep`.
    device : str or None, default=None
        Where every run trains; None keeps the estimator's.
    random_state : int, RandomState or None, default=0
        Master seed: run ``i`` gets seed ``i`` of
        :func:`hw1sk.seeding.spawn_seeds`, whatever ``n_jobs``; the subset
        of ``n_train`` samples is drawn from it too.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (scope, run, snapshot): ``scope`` (``"model"`` or
        ``"layer"``), ``run``, ``seed``, ``epoch``, ``component_1``,
        ``component_2``, ``loss`` and ``accuracy`` (on the training data, at
        the snapshot's weights; accuracy NaN for regression).
    grad_norms_ : pandas.DataFrame
        One row per iteration of every run: ``run``, ``seed``, ``iteration``
        (0-based optimizer step), ``epoch``, ``grad_norm`` (global L2 norm of
        the gradient of the batch loss, before the step) and ``loss`` (that
        batch loss).
    history_ : pandas.DataFrame
        Per-epoch training history of every run: ``run``, ``seed`` and every
        column the estimator's callbacks recorded (``epoch``, ``train_loss``,
        ``train_acc`` for classifiers, ``test_loss``, ``test_acc`` with test
        data, ``dur``, and those of callbacks of the given estimator).
    summary_ : pandas.DataFrame
        One row per run: ``run``, ``seed``, ``n_params``, ``epochs``,
        ``train_loss``, ``train_accuracy`` (final, eval mode), ``test_loss``,
        ``test_accuracy`` (with test data), ``final_grad_norm`` (mean over
        the last epoch's iterations), ``displacement`` (distance between the
        initial and the final weights) and ``path_length`` (summed distance
        between consecutive snapshots).
    explained_variance_ratio_ : dict
        Scope -> variance ratios of the two components.
    pcas_ : dict
        Scope -> the fitted :class:`~hw1sk.transformers.TrajectoryPCA`.
    trajectories_ : dict
        Run -> snapshots, ndarray of shape (n_snapshots, n_params) (float32).
    layer_ : str
        The layer of the ``"layer"`` scope.
    layer_slices_ : dict
        Layer name -> slice of the flat parameter vector.
    estimators_ : dict
        Run -> the fitted estimator of that run (its callbacks, the two
        tracing ones included, in ``callbacks_``).
    modules_ : dict
        Run -> trained ``nn.Module`` (on the CPU).
    settings_ : dict
        Every training setting of the template estimator
        (:func:`~hw1sk.studies._base.describe_estimator`), the shortcuts the
        study set, the model, seeds and data sizes.
    diverged_ : pandas.DataFrame
        Runs whose loss became non-finite (``run``, ``seed``, ``message``);
        left out of everything else.

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
        **SHORTCUT_CONSTRAINTS,
        "n_runs": [Interval(Integral, 1, None, closed="left")],
        "every": [Interval(Integral, 1, None, closed="left")],
        "layer": [str, None],
        "n_train": [Interval(Integral, 1, None, closed="left"), None],
        "test_every": [Interval(Integral, 1, None, closed="left")],
    }
    _run_function = staticmethod(trace_run)

    def __init__(self, estimator=None, *, hidden=None, n_runs=8, every=3, layer=None,
                 max_epochs=None, lr=None, batch_size=None, n_train=None, test_every=1,
                 n_jobs=1, backend="loky", scheduler=None, cache_dir=None, progress=False,
                 device=None, random_state=0):
        super().__init__(estimator=estimator, n_jobs=n_jobs, backend=backend,
                         scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                         device=device, random_state=random_state)
        self.hidden = hidden
        self.n_runs = n_runs
        self.every = every
        self.layer = layer
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.n_train = n_train
        self.test_every = test_every

    # ------------------------------------------------------------------ hooks
    def _prepare_data(self, X, y, X_test, y_test):
        self._master = as_seed(self.random_state)  # the n_train subset and the run seeds
        return prepare_data(X, y, X_test, y_test, n_train=self.n_train,
                            seeds=(None, self._master, None))

    def _default_estimator(self, data):
        return default_trajectory_estimator(regression=data.y.dtype.kind in "fc")

    def _template_estimator(self, data):
        return apply_shortcuts(super()._template_estimator(data), self)

    def _tasks(self, data, template):
        if self.layer is not None:
            names = _layer_names(template, data.X, data.y)
            if self.layer not in names:
                raise ValueError(f"layer {self.layer!r} is not a layer of the model; choose "
                                 f"one of {names}.")
        common = {"estimator": template, "X": data.X, "y": data.y, "X_test": data.X_test,
                  "y_test": data.y_test, "every": int(self.every),
                  "test_every": int(self.test_every)}
        return [({"run": i, "seed": seed}, {**common, "seed": seed})
                for i, seed in enumerate(spawn_seeds(self._master, self.n_runs))]

    def _collect(self, data, template, labels, runs):
        done = {label["run"]: run for label, run in zip(labels, runs) if run is not None}
        if not done:
            raise RuntimeError("OptimizationStudy: every run diverged; see diverged_ "
                               "(lower lr).")
        seeds = {label["run"]: label["seed"] for label in labels}
        self.layer_slices_ = next(iter(done.values()))["layer_slices"]
        self.layer_ = self.layer if self.layer is not None else next(iter(self.layer_slices_))
        self._project(done, seeds)
        self.grad_norms_ = pd.concat(
            [run["grad_norms"].assign(run=i, seed=seeds[i]) for i, run in done.items()],
            ignore_index=True)[_GRAD_COLUMNS]
        self.history_ = pd.concat(
            [pd.concat([pd.DataFrame({"run": i, "seed": seeds[i]}, index=run["history"].index),
                        run["history"]], axis=1) for i, run in done.items()],
            ignore_index=True)
        self.summary_ = pd.DataFrame([_summary_row(i, seeds[i], run)
                                      for i, run in done.items()])
        self.trajectories_ = {i: run["snapshots"] for i, run in done.items()}
        self.estimators_ = {i: run["estimator"] for i, run in done.items()}
        self.modules_ = {i: run["module"] for i, run in done.items()}
        first = next(iter(done.values()))
        self._model = (describe_module(first["module"]), int(first["n_params"]))

    def _project(self, done, seeds):
        """Fit the joint PCA of each scope; set ``results_``, ``pcas_`` and their ratios."""
        from ..transformers import TrajectoryPCA

        layer = self.layer_slices_[self.layer_]
        arrays = {"model": [run["snapshots"] for run in done.values()],
                  "layer": [run["snapshots"][:, layer] for run in done.values()]}
        self.pcas_, frames = {}, []
        for scope, trajectories in arrays.items():
            pca = self.pcas_[scope] = TrajectoryPCA(n_components=2).fit(trajectories)
            for (i, run), coords in zip(done.items(), pca.transform(trajectories)):
                frames.append(pd.DataFrame({
                    "scope": scope, "run": i, "seed": seeds[i], "epoch": run["epochs"],
                    "component_1": coords[:, 0].astype(float),
                    "component_2": coords[:, 1].astype(float),
                    "loss": run["loss"], "accuracy": run["accuracy"]}))
        self.results_ = pd.concat(frames, ignore_index=True)
        self.explained_variance_ratio_ = {s: p.explained_variance_ratio_
                                          for s, p in self.pcas_.items()}

    def _settings(self, data, template):
        slices, layer = self.layer_slices_, self.layer_slices_[self.layer_]
        return {
            "model": self._model[0],
            "n_params": self._model[1],
            "layers": {name: sl.stop - sl.start for name, sl in slices.items()},
            "varied": "seed (random_state)",
            **shortcut_settings(self),
            "n_runs": int(self.n_runs),
            "snapshots": f"every {self.every} epochs, initial and final weights included",
            "layer": f"{self.layer_} ({layer.stop - layer.start} parameters)",
            "random_state": describe_value(self.random_state),
            "seeds": list(spawn_seeds(self._master, self.n_runs)),
            "n_train": int(data.X.shape[0]),
            "n_test": None if data.X_test is None else int(data.X_test.shape[0]),
            "input_shape": tuple(data.X.shape[1:]),
        }


def _summary_row(i, seed, run):
    """One row of ``summary_``: final scores, last gradient norm and the path's lengths."""
    snaps = run["snapshots"].astype(np.float64)
    grads = run["grad_norms"]
    last = grads[grads["epoch"] == grads["epoch"].max()]
    row = {"run": i, "seed": seed, "n_params": run["n_params"], "epochs": len(run["history"]),
           "train_loss": run["train"]["loss"], "train_accuracy": run["train"]["accuracy"]}
    if run["test"] is not None:
        row.update(test_loss=run["test"]["loss"], test_accuracy=run["test"]["accuracy"])
    row.update(final_grad_norm=float(last["grad_norm"].mean()),
               displacement=float(np.linalg.norm(snaps[-1] - snaps[0])),
               path_length=float(np.linalg.norm(np.diff(snaps, axis=0), axis=1).sum()))
    return row
