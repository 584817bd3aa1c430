"""HW1-2, optimization: weight trajectories of repeated runs and the gradient norm.

:class:`OptimizationStudy` trains one architecture ``n_runs`` times, each run
with its own seed, records the weights every ``every`` epochs
(:class:`~hw1sk.callbacks.WeightTrace`) and the global gradient norm at every
optimizer step (:class:`~hw1sk.callbacks.GradNormTrace`), then fits one
:class:`~hw1sk.transformers.TrajectoryPCA` jointly on the snapshots of all
runs, once for the whole model and once for a single layer, and projects
every run's trajectory to two dimensions.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone, is_classifier, is_regressor
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_consistent_length, column_or_1d

from ..evaluation import encode_targets, evaluate_module
from ..parameters import (
    assign_flat_parameters,
    count_params,
    flatten_parameters,
    layer_slices,
)
from ..seeding import as_seed, spawn_seeds
from ._base import Study, describe_value, train_run, with_callbacks

__all__ = ["OptimizationStudy", "default_trajectory_estimator"]

#: Training settings used when the study gets no estimator (or leaves them to None).
_DEFAULTS = {"max_epochs": 30, "lr": 1e-3, "batch_size": 128}

#: Names of the tracing callbacks the study appends to every run.
_WEIGHT_TRACE = "weight_trace"
_GRAD_TRACE = "grad_norm_trace"

_HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "dur")


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
    >>> from hw1sk.studies.optimization import default_trajectory_estimator
    >>> est = default_trajectory_estimator()
    >>> est.module__hidden, est.max_epochs, est.batch_size
    ((64, 32), 30, 128)
    """
    from ..estimators import NeuralClassifier, NeuralRegressor

    cls = NeuralRegressor if regression else NeuralClassifier
    return cls(module="mlp", module__hidden=tuple(hidden), **_DEFAULTS)


# --------------------------------------------------------------------------- checks
def _positive_int(value, name, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, "
                         f"got {value!r}.")
    return int(value)


def _check_training_params(study):
    """Validate the training settings shared by the HW1-2 studies."""
    _positive_int(study.max_epochs, "max_epochs", allow_none=True)
    if study.batch_size is not None and study.batch_size != -1:
        _positive_int(study.batch_size, "batch_size")
    if study.lr is not None and (not isinstance(study.lr, Real) or isinstance(study.lr, bool)
                                 or not study.lr > 0):
        raise ValueError(f"lr must be a positive number or None, got {study.lr!r}.")
    _positive_int(study.every, "every")
    _positive_int(study.n_train, "n_train", allow_none=True)
    hidden = study.hidden
    if (isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__")
            or not all(isinstance(w, Integral) and not isinstance(w, bool) and w >= 1
                       for w in hidden)):
        raise ValueError(f"hidden must be a sequence of positive integers, got {hidden!r}.")
    est = study.estimator
    if est is not None and not (isinstance(est, BaseEstimator)
                                and (is_classifier(est) or is_regressor(est))):
        raise ValueError("estimator must be an unfitted NeuralClassifier/NeuralRegressor "
                         f"(a classifier or regressor) or None, got {type(est).__name__}.")


def _check_data(X, y, X_test=None, y_test=None, classify=None):
    """Inputs as float32 arrays; class labels checked and kept, real targets float32.

    Class labels keep their values (``{3, 7}``, strings): the estimator
    encodes them through its ``classes_`` when it trains, and the study
    encodes them the same way wherever it scores the module with its
    criterion (:func:`hw1sk.evaluation.encode_targets`).  ``y_test`` may only
    hold labels of ``y``.  ``classify=None`` decides from ``y``: float
    targets are regression.

    Returns
    -------
    X, y, X_test, y_test, classify
    """
    X = check_array(X, dtype=np.float32, allow_nd=True, input_name="X")
    y = column_or_1d(np.asarray(y), warn=False)
    check_consistent_length(X, y)
    if (X_test is None) != (y_test is None):
        raise ValueError("X_test and y_test must be given together.")
    if X_test is not None:
        X_test = check_array(X_test, dtype=np.float32, allow_nd=True, input_name="X_test")
        y_test = column_or_1d(np.asarray(y_test), warn=False)
        check_consistent_length(X_test, y_test)
        if X_test.shape[1:] != X.shape[1:]:
            raise ValueError(f"X_test has samples of shape {X_test.shape[1:]}, but X has "
                             f"{X.shape[1:]}.")
    if classify is None:
        classify = y.dtype.kind not in "fc"
    if not classify:
        if y.dtype.kind not in "fiub":
            raise ValueError(f"a regressor needs numeric y, got dtype {y.dtype}.")
        y = y.astype(np.float32)
        y_test = None if y_test is None else y_test.astype(np.float32)
        return X, y, X_test, y_test, False
    if type_of_target(y) not in ("binary", "multiclass"):
        raise ValueError(f"a classifier needs class labels, but y is {type_of_target(y)!r}.")
    if y_test is not None:
        unknown = ~np.isin(y_test, np.unique(y))
        if np.any(unknown):
            raise ValueError(f"y_test holds labels {np.unique(y_test[unknown]).tolist()} that "
                             "are not among the training labels.")
    return X, y, X_test, y_test, True


def _subsample(X, y, n, random_state):
    """``n`` rows of ``(X, y)`` drawn without replacement (all rows when ``n`` is None)."""
    if n is None or n >= len(X):
        return X, y
    rng = np.random.RandomState(random_state)
    idx = np.sort(rng.choice(len(X), size=n, replace=False))
    return X[idx], y[idx]


def _template(study, classify):
    """The unfitted estimator of every run: the study's (or the default), its settings applied."""
    if study.estimator is None:
        est = default_trajectory_estimator(regression=not classify, hidden=study.hidden)
    else:
        est = clone(study.estimator)
    overrides = {"max_epochs": study.max_epochs, "lr": study.lr, "batch_size": study.batch_size}
    return est.set_params(**{k: v for k, v in overrides.items() if v is not None},
                          device=study.device)


def _probe_module(template, X, y):
    """The module the template builds on ``X`` (one full-batch step on a few samples).

    Only its structure is used (layer names, parameter count); the step's
    outcome, a divergence included, does not matter.
    """
    import warnings

    probe = clone(template).set_params(max_epochs=1, batch_size=-1, device="cpu",
                                       callbacks=None)
    n = min(len(X), 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return probe.fit(X[:n], y[:n]).module_


# below this many (samples per step x parameters) a training step is too small for torch's
# intra-op threads: on the loaded 2-core machine, a 784-64-32-10 MLP at batch 128 trained
# 6x faster per epoch with one thread than with two
_SMALL_STEP = 2**24


def _threads_for(template, module, n_samples):
    """1 for runs whose steps are too small to gain from threads, else None (the default)."""
    batch = n_samples if template.batch_size in (-1, None) else min(template.batch_size,
                                                                     n_samples)
    small = batch * count_params(module) < _SMALL_STEP and template.device == "cpu"
    return 1 if small else None


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


def trace_run(estimator, X, y, X_test=None, y_test=None, seed=0, every=3, test_every=1,
              score=True, n_threads=None):
    """One traced training run: weight snapshots, gradient norms, history (a sweep task).

    A module-level function so that it pickles into joblib and dask workers.
    Appends :class:`~hw1sk.callbacks.WeightTrace` and
    :class:`~hw1sk.callbacks.GradNormTrace` to a clone of ``estimator``,
    trains it with :func:`~hw1sk.studies._base.train_run` and, when the last
    epoch is not a multiple of ``every``, adds the final parameters as a last
    snapshot, so that every trajectory ends at the trained model.

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor (unfitted template)
    X, y : ndarray
        Training data (class labels of any kind, or float targets).
    X_test, y_test : ndarray, optional
        Held-out data, scored every ``test_every`` epochs.
    seed : int, default=0
    every : int, default=3
        Snapshot period in epochs (epoch 0, the initial weights, included).
    test_every : int, default=1
    score : bool, default=True
        Score every snapshot on ``(X, y)`` (exact full-data loss and accuracy
        at the snapshot's parameters, eval mode); otherwise the snapshots get
        the epoch's running training loss recorded by the WeightTrace.
    n_threads : int or None, default=None
        Torch intra-op threads during the run (restored afterwards); None
        keeps the worker's setting.

    Returns
    -------
    run : dict
        ``snapshots`` (float32, ``(n_snapshots, n_params)``), ``epochs``,
        ``loss``, ``accuracy`` (per snapshot), ``grad_norms`` (DataFrame of
        :meth:`GradNormTrace.to_frame`), ``history`` (DataFrame), ``train``,
        ``test`` (final scores), ``n_params``, ``layer_slices``,
        ``module`` and ``criterion`` (the trained ones, on the CPU) and
        ``targets`` (``y`` as the criterion takes it: class indices through
        the fitted ``classes_``, or float columns).

    Raises
    ------
    hw1sk.sweep.RunDiverged
        When the training loss became non-finite.
    """
    from ..callbacks import GradNormTrace, WeightTrace

    est = with_callbacks(clone(estimator), (_WEIGHT_TRACE, WeightTrace(every=int(every))),
                         (_GRAD_TRACE, GradNormTrace()))
    threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(int(n_threads))
    try:
        run = _traced_fit(est, X, y, X_test, y_test, seed, test_every, score)
    finally:
        torch.set_num_threads(threads)
    return run


def _traced_fit(est, X, y, X_test, y_test, seed, test_every, score):
    """The body of :func:`trace_run`: train, collect the traces, score the snapshots."""
    run = train_run(est, X, y, X_test, y_test, seed=seed, test_every=test_every,
                    keep_estimator=True)
    fitted = run.pop("estimator")
    callbacks = dict(fitted.callbacks_)
    weights, grads = callbacks[_WEIGHT_TRACE], callbacks[_GRAD_TRACE]
    snapshots = weights.to_array()
    epochs = list(weights.epochs_)
    losses, accuracies = list(weights.train_loss_), list(weights.train_accuracy_)
    n_epochs = len(run["history"])
    if epochs[-1] != n_epochs:
        final = flatten_parameters(fitted.module_).to(device="cpu", dtype=torch.float32)
        snapshots = np.vstack([snapshots, final.numpy()[None]])
        epochs.append(n_epochs)
        history = run["history"]
        losses.append(float(history["train_loss"].iloc[-1]))
        accuracies.append(float(history["train_acc"].iloc[-1])
                          if "train_acc" in history.columns else np.nan)
    module = fitted.module_.cpu()
    criterion = fitted.criterion_.cpu() if isinstance(fitted.criterion_, torch.nn.Module) \
        else fitted.criterion_
    targets = encode_targets(fitted, y)
    if score:
        losses, accuracies = score_snapshots(module, criterion, snapshots, X, targets)
    history = run["history"]
    return {
        "snapshots": snapshots,
        "epochs": np.asarray(epochs, dtype=int),
        "loss": np.asarray(losses, dtype=float),
        "accuracy": np.asarray(accuracies, dtype=float),
        "grad_norms": grads.to_frame(),
        "history": history[[c for c in _HISTORY_COLUMNS if c in history.columns]],
        "train": run["train"],
        "test": run["test"],
        "n_params": run["n_params"],
        "layer_slices": dict(layer_slices(module)),
        "module": module,
        "criterion": criterion,
        "targets": targets,
    }


def _describe_template(template, module=None):
    from ._defaults import describe_module

    model = describe_module(module) if module is not None else describe_value(template.module)
    optimizer = getattr(template.optimizer, "__name__", str(template.optimizer))
    return {
        "model": model,
        "estimator": type(template).__name__,
        "optimizer": optimizer,
        "lr": template.lr,
        "max_epochs": template.max_epochs,
        "batch_size": "full batch" if template.batch_size == -1 else template.batch_size,
    }


class OptimizationStudy(Study):
    """HW1-2: where do repeated training runs go in weight space, and how?

    Trains the same architecture ``n_runs`` times, each run with its own seed
    (its own initial weights and batch order), snapshots the weights every
    ``every`` epochs, and fits one :class:`~hw1sk.transformers.TrajectoryPCA`
    on the snapshots of all runs together: once on all parameters (scope
    ``"model"``) and once on one layer's (scope ``"layer"``).  Every snapshot
    is scored on the training data, so each point of the 2-D trajectories can
    be annotated with its loss or accuracy.  The global L2 norm of the
    gradient and the batch loss are recorded at every iteration
    (``grad_norms_``), for the "gradient norm during training" figure.

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor or None, default=None
        Template of the runs, cloned for each.  None:
        :func:`default_trajectory_estimator` (MLP with ``hidden`` layers, Adam),
        a classifier for label targets and a regressor for float targets.
    hidden : sequence of int, default=(64, 32)
        Hidden widths of the default MLP (ignored with an ``estimator``).
    n_runs : int, default=8
        Independent training runs.
    every : int, default=3
        Snapshot period in epochs; the initial weights (epoch 0) and the
        final ones are always kept.
    layer : str or None, default=None
        The layer of the ``"layer"`` scope, a name from
        :func:`hw1sk.parameters.layer_slices` (``"net.1"`` is the first layer
        of an MLP); None takes the first layer.
    max_epochs : int or None, default=None
        None: the estimator's value, or 30 without an estimator.
    lr : float or None, default=None
        None: the estimator's value, or 1e-3 without an estimator.
    batch_size : int or None, default=None
        ``-1`` is full batch; None: the estimator's, or 128 without one.
    n_train : int or None, default=None
        Train on this many samples of ``X`` drawn at random (the same for
        every run); None uses all.
    test_every : int, default=1
        With test data: score it every ``test_every`` epochs (in ``history_``).
    n_jobs : int, default=1
        Runs in parallel (:func:`hw1sk.sweep.run_sweep`).
    backend : {"loky", "threading", "sequential", "dask"}, default="loky"
    scheduler : str or distributed.Client, optional
        Dask scheduler, with ``backend="dask"``.
    cache_dir : str, optional
        Cache of finished runs (a killed study resumes).
    progress : bool, default=False
    device : str, default="cpu"
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
        Per-epoch training history of every run: ``run``, ``seed``, ``epoch``,
        ``train_loss``, ``train_acc`` (classifiers), ``test_loss``,
        ``test_acc`` (with test data), ``dur``.
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
    modules_ : dict
        Run -> trained ``nn.Module`` (on the CPU).
    settings_ : dict
        Human-readable settings for the report.
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

    def __init__(self, estimator=None, *, hidden=(64, 32), n_runs=8, every=3, layer=None,
                 max_epochs=None, lr=None, batch_size=None, n_train=None, test_every=1,
                 n_jobs=1, backend="loky", scheduler=None, cache_dir=None, progress=False,
                 device="cpu", random_state=0):
        self.estimator = estimator
        self.hidden = hidden
        self.n_runs = n_runs
        self.every = every
        self.layer = layer
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.n_train = n_train
        self.test_every = test_every
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.cache_dir = cache_dir
        self.progress = progress
        self.device = device
        self.random_state = random_state

    def fit(self, X, y, X_test=None, y_test=None):
        """Train ``n_runs`` traced runs and project their trajectories.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Training inputs (images may keep their shape).
        y : array-like of shape (n_samples,)
            Class labels, or float targets for a regressor.
        X_test, y_test : array-like, optional
            Held-out data, scored during training (``history_``, ``summary_``).

        Returns
        -------
        self : OptimizationStudy

        Raises
        ------
        ValueError
            For invalid parameters or data, or an unknown ``layer``.
        RuntimeError
            When every run diverged.
        """
        from ..transformers import TrajectoryPCA

        _check_training_params(self)
        n_runs = _positive_int(self.n_runs, "n_runs")
        _positive_int(self.test_every, "test_every")
        if self.layer is not None and not isinstance(self.layer, str):
            raise ValueError(f"layer must be a layer name (str) or None, got {self.layer!r}.")
        classify = None if self.estimator is None else is_classifier(self.estimator)
        X, y, X_test, y_test, classify = _check_data(X, y, X_test, y_test, classify)
        master = as_seed(self.random_state)
        X, y = _subsample(X, y, self.n_train, master)
        template = _template(self, classify)
        probe = _probe_module(template, X, y)
        names = list(layer_slices(probe))
        if self.layer is None:
            layer = names[0]
        elif self.layer in names:
            layer = self.layer
        else:
            raise ValueError(f"layer {self.layer!r} is not a layer of the model; choose one "
                             f"of {names}.")

        seeds = spawn_seeds(master, n_runs)
        tasks = [{"estimator": template, "X": X, "y": y, "X_test": X_test, "y_test": y_test,
                  "seed": seed, "every": int(self.every), "test_every": int(self.test_every),
                  "n_threads": _threads_for(template, probe, len(X))}
                 for seed in seeds]
        runs = self._run_tasks(trace_run, tasks, desc="OptimizationStudy")
        if len(self.diverged_):
            # name diverged runs by their index and seed rather than by their arrays
            failed = [(i, seed) for i, (seed, run) in enumerate(zip(seeds, runs)) if run is None]
            self.diverged_ = pd.DataFrame(
                [{"run": i, "seed": seed, "message": msg}
                 for (i, seed), msg in zip(failed, self.diverged_["message"])])
        done = {i: run for i, run in enumerate(runs) if run is not None}
        if not done:
            raise RuntimeError("OptimizationStudy: every run diverged; see diverged_ "
                               "(lower lr).")

        slices = next(iter(done.values()))["layer_slices"]
        arrays = {"model": [run["snapshots"] for run in done.values()],
                  "layer": [run["snapshots"][:, slices[layer]] for run in done.values()]}
        pcas, frames = {}, []
        for scope, trajectories in arrays.items():
            pca = TrajectoryPCA(n_components=2).fit(trajectories)
            pcas[scope] = pca
            for (i, run), coords in zip(done.items(), pca.transform(trajectories)):
                frames.append(pd.DataFrame({
                    "scope": scope, "run": i, "seed": seeds[i], "epoch": run["epochs"],
                    "component_1": coords[:, 0].astype(float),
                    "component_2": coords[:, 1].astype(float),
                    "loss": run["loss"], "accuracy": run["accuracy"]}))

        self.results_ = pd.concat(frames, ignore_index=True)
        self.grad_norms_ = pd.concat(
            [run["grad_norms"].assign(run=i, seed=seeds[i]) for i, run in done.items()],
            ignore_index=True)[["run", "seed", "iteration", "epoch", "grad_norm", "loss"]]
        histories = []
        for i, run in done.items():
            hist = run["history"].copy()
            hist.insert(0, "seed", seeds[i])
            hist.insert(0, "run", i)
            histories.append(hist)
        self.history_ = pd.concat(histories, ignore_index=True)
        self.summary_ = pd.DataFrame([self._summary_row(i, seeds[i], run)
                                      for i, run in done.items()])
        self.pcas_ = pcas
        self.explained_variance_ratio_ = {s: p.explained_variance_ratio_ for s, p in pcas.items()}
        self.trajectories_ = {i: run["snapshots"] for i, run in done.items()}
        self.modules_ = {i: run["module"] for i, run in done.items()}
        self.layer_ = layer
        self.layer_slices_ = slices
        self.settings_ = self._settings(template, done, seeds, X, X_test)
        return self

    @staticmethod
    def _summary_row(i, seed, run):
        snaps = run["snapshots"].astype(np.float64)
        grads = run["grad_norms"]
        last = grads[grads["epoch"] == grads["epoch"].max()]
        row = {"run": i, "seed": seed, "n_params": run["n_params"],
               "epochs": len(run["history"]),
               "train_loss": run["train"]["loss"], "train_accuracy": run["train"]["accuracy"]}
        if run["test"] is not None:
            row.update(test_loss=run["test"]["loss"], test_accuracy=run["test"]["accuracy"])
        row.update(final_grad_norm=float(last["grad_norm"].mean()),
                   displacement=float(np.linalg.norm(snaps[-1] - snaps[0])),
                   path_length=float(np.linalg.norm(np.diff(snaps, axis=0), axis=1).sum()))
        return row

    def _settings(self, template, done, seeds, X, X_test):
        first = next(iter(done.values()))
        slices = first["layer_slices"]
        settings = _describe_template(template, first["module"])
        settings.update({
            "n_params": first["n_params"],
            "layers": {name: sl.stop - sl.start for name, sl in slices.items()},
            "n_runs": int(self.n_runs),
            "snapshots": f"every {self.every} epochs, initial and final weights included",
            "layer": f"{self.layer_} ({slices[self.layer_].stop - slices[self.layer_].start} "
                     "parameters)",
            "random_state": describe_value(self.random_state),
            "seeds": list(seeds),
            "n_train": int(X.shape[0]),
            "n_test": None if X_test is None else int(X_test.shape[0]),
            "input_shape": tuple(X.shape[1:]),
        })
        return settings
