"""HW1-1, deep versus shallow: models of one parameter budget, trained side by side.

:class:`DeepShallowStudy` trains every model of a dict of equally sized
models (``n_restarts`` times each, with its own seed) on one data set, or on
several target functions at once (:meth:`DeepShallowStudy.fit_functions`),
and keeps the loss curves, the final losses and accuracies, and, for
function fitting, the predictions on a dense grid.
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_consistent_length
from skorch.callbacks import EarlyStopping
from torch import nn

from ..estimators import NeuralClassifier, NeuralRegressor
from ..interrupts import StopTraining
from ..parameters import count_params
from ..seeding import spawn_seeds
from ._base import Study, describe_value, train_run, with_callbacks

__all__ = ["DeepShallowStudy", "PlateauStopping", "cnn_for_budget_flat", "default_models"]

_TASKS = ("auto", "regression", "classification")

#: Per-task defaults of the training settings the study leaves to ``None``.
_TASK_DEFAULTS = {
    "regression": {"max_epochs": 20000, "lr": 1e-3, "batch_size": -1,
                   "n_params": 571, "depths": (1, 4, 7)},
    "classification": {"max_epochs": 10, "lr": 1e-3, "batch_size": 128,
                       "n_params": 8000, "depths": (1, 2, 4)},
}

# largest relative spread of the models' parameter counts before a warning
_PARAM_SPREAD = {"regression": 0.01, "classification": 0.1}

_HISTORY_COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc")


class PlateauStopping(EarlyStopping):
    """skorch's :class:`~skorch.callbacks.EarlyStopping`, cheap over thousands of epochs.

    Stops training when the monitored score has not improved on its last
    reference value by ``threshold`` (relative by default) for ``patience``
    epochs.  It reads the current epoch's row directly: skorch's
    ``history[-1, key]`` walks the whole history, which over 20,000 epochs
    of a 571-parameter network costs more than the training itself.

    Parameters
    ----------
    monitor : str, default="train_loss"
    patience : int, default=1000
    threshold : float, default=1e-3
    threshold_mode : {"rel", "abs"}, default="rel"
    lower_is_better : bool, default=True
    sink : callable, default=print
        Where the stop message goes when the net is verbose.
    load_best : bool, default=False
        Restore the weights of the best epoch at the end of training.

    Attributes
    ----------
    stopped_epoch_ : int or None
        The epoch after which training stopped; None if it ran to the end.
    """

    def __init__(self, monitor="train_loss", patience=1000, threshold=1e-3,
                 threshold_mode="rel", lower_is_better=True, sink=print, load_best=False):
        super().__init__(monitor=monitor, patience=patience, threshold=threshold,
                         threshold_mode=threshold_mode, lower_is_better=lower_is_better,
                         sink=sink, load_best=load_best)

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.stopped_epoch_ = None

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        if not isinstance(row, Mapping):  # a plain skorch History: its own indexing
            row = {self.monitor: net.history[-1, self.monitor],
                   "epoch": net.history[-1, "epoch"]}
        score = row[self.monitor]
        if self._is_score_improved(score):
            self.misses_ = 0
            self.dynamic_threshold_ = self._calc_new_threshold(score)
            self.best_epoch_ = row["epoch"]
            if self.load_best:
                self.best_model_weights_ = copy.deepcopy(net.module_.state_dict())
        else:
            self.misses_ += 1
        if self.misses_ == self.patience:
            self.stopped_epoch_ = row["epoch"]
            if net.verbose:
                self._sink(f"Stopping since {self.monitor} has not improved in the last "
                           f"{self.patience} epochs.", verbose=net.verbose)
            if isinstance(net, (NeuralClassifier, NeuralRegressor)):
                raise StopTraining  # ours: never mistaken for the user's Ctrl-C
            raise KeyboardInterrupt  # a plain skorch net knows no other way to stop early


def cnn_for_budget_flat(n_params=8000, depth=1, in_channels=1, image_size=28, n_out=10,
                        kernel_size=3, activation="relu"):
    """A :class:`~hw1sk.models.CNN` of ``depth`` equal-width convolutions and a flattening head.

    Unlike :func:`hw1sk.models.cnn_for_budget` (global average pooling, so a
    shallow net must spend its budget on very wide convolutions), the last
    feature map is flattened into the linear output layer: a one-convolution
    network stays narrow and cheap, and shallow and deep nets of one budget
    cost about the same to train.

    Parameters
    ----------
    n_params : int, default=8000
        Parameter budget.
    depth : int, default=1
        Number of convolutions.
    in_channels, image_size, n_out, kernel_size, activation
        As in :class:`~hw1sk.models.CNN`.

    Returns
    -------
    model : CNN
        The channel count whose parameter count is nearest ``n_params``.

    Examples
    --------
    >>> from hw1sk.studies.deep_shallow import cnn_for_budget_flat
    >>> from hw1sk.models import count_params
    >>> [count_params(cnn_for_budget_flat(8000, d)) for d in (1, 2, 4)]
    [7890, 8044, 7630]
    """
    from ..models import CNN

    if not isinstance(n_params, Integral) or isinstance(n_params, bool) or n_params < 1:
        raise ValueError(f"n_params must be a positive integer, got {n_params!r}.")
    if not isinstance(depth, Integral) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}.")
    kwargs = {"in_channels": in_channels, "image_size": image_size, "n_out": n_out,
              "kernel_size": kernel_size, "activation": activation, "global_pool": False}

    def count(c):
        # built on the meta device: shapes only, no memory, no initialisation
        with torch.device("meta"):
            return count_params(CNN(channels=(c,) * depth, **kwargs))

    lo, hi = 1, 1
    while count(hi) < n_params:  # the count grows with the channels: bracket, then bisect
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < n_params else (lo, mid)
    best = min((lo, hi), key=lambda c: (abs(count(c) - n_params), c))
    return CNN(channels=(best,) * depth, **kwargs)


def _reinitialized_copy(module):
    """A deep copy of ``module`` whose layers are re-initialised (under the caller's seed)."""
    fresh = copy.deepcopy(module)
    for sub in fresh.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return fresh


def default_models(task, n_params=None, depths=None):
    """The study's default models: parameter-matched MLPs (and CNNs for classification).

    Parameters
    ----------
    task : {"regression", "classification"}
    n_params : int, optional
        Parameter budget of every model; 571 for regression, 8000 for
        classification when None.
    depths : sequence of int, optional
        Hidden layers (MLP) or convolutions (CNN); ``(1, 4, 7)`` for
        regression, ``(1, 2, 4)`` for classification when None.

    Returns
    -------
    models : dict
        Name -> estimator parameters: ``"MLP-<depth>"`` built by
        :func:`hw1sk.models.mlp_for_budget`, and for classification also
        ``"CNN-<depth>"`` built by :func:`cnn_for_budget_flat`
        (input size and number of classes come from the data).

    Examples
    --------
    >>> from hw1sk.studies.deep_shallow import default_models
    >>> sorted(default_models("regression"))
    ['MLP-1', 'MLP-4', 'MLP-7']
    """
    if task not in _TASK_DEFAULTS:
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
    defaults = _TASK_DEFAULTS[task]
    n_params = defaults["n_params"] if n_params is None else n_params
    depths = defaults["depths"] if depths is None else depths
    if not isinstance(n_params, Integral) or isinstance(n_params, bool) or n_params < 1:
        raise ValueError(f"n_params must be a positive integer, got {n_params!r}.")
    depths = tuple(depths)
    if not depths or not all(isinstance(d, Integral) and not isinstance(d, bool) and d >= 1
                             for d in depths):
        raise ValueError(
            f"depths must be a non-empty sequence of positive integers, got {depths!r}.")
    families = {"MLP": "mlp_budget"}
    if task == "classification":
        families = {"CNN": cnn_for_budget_flat, **families}
    return {f"{family}-{d}": {"module": zoo, "module__n_params": int(n_params),
                              "module__depth": int(d)}
            for family, zoo in families.items() for d in depths}


def _holds_images(X):
    """Whether the samples of ``X`` are images the default CNNs take.

    ``(H, W)`` or ``(C, H, W)`` samples with square ``H == W``, or flat
    samples of ``H * H`` (grey) values, like flattened MNIST.
    """
    shape = X.shape[1:]
    if len(shape) == 1:
        side = int(round(np.sqrt(shape[0])))
        return shape[0] > 1 and side * side == shape[0]
    return len(shape) in (2, 3) and shape[-1] == shape[-2]


def _as_1d(y, name):
    """``y`` as a 1-D array; a single column is raveled."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one target or label per sample), got shape "
                         f"{y.shape}.")
    return y


def _check_test_labels(X, y, X_test, y_test):
    """The data as given, once every test label is known to be among the training labels.

    The labels stay as they are: each classifier encodes them through its own
    ``classes_`` (declared ones included), as ``fit`` and ``score`` do.
    """
    if y_test is not None:
        unknown = np.setdiff1d(y_test, np.unique(y))
        if unknown.size:
            raise ValueError(f"y_test holds labels {unknown.tolist()} that are not among the "
                             "training labels.")
    return X, y, X_test, y_test


def _n_weight_layers(module):
    """Number of linear and convolutional layers (the output layer included)."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return sum(isinstance(m, kinds) for m in module.modules())


def _model_estimator(template, spec, name):
    """The estimator of one model: ``template`` with its module, or the model's own estimator."""
    if isinstance(spec, BaseEstimator):
        return clone(spec)
    est = clone(template)
    if isinstance(spec, Mapping):
        if "module" not in spec:
            raise ValueError(f"models[{name!r}] is a dict of estimator parameters without a "
                             "'module' key.")
        return est.set_params(**spec)
    if isinstance(spec, nn.Module):
        # each run re-initialises a copy under its own seed, so restarts differ
        return est.set_params(module=functools.partial(_reinitialized_copy, spec))
    if isinstance(spec, str) or callable(spec):
        return est.set_params(module=spec)
    raise ValueError(
        f"models[{name!r}] must be an nn.Module (instance, class or factory), a zoo name, a dict "
        f"of estimator parameters or an estimator; got {type(spec).__name__}."
    )


def _fit_one(estimator, X, y, X_test, y_test, seed, classify, test_every):
    """One (data set, model, restart) run: train, score, predict (top level for joblib)."""
    scored = classify and X_test is not None
    n_threads = torch.get_num_threads()
    # one intra-op thread: convolution and matmul results depend on the thread count, so a
    # fixed count keeps the numbers independent of n_jobs (and small nets gain nothing from more)
    torch.set_num_threads(1)
    try:
        run = train_run(estimator, X, y, X_test if scored else None,
                        y_test if scored else None, seed=seed, test_every=test_every,
                        keep_estimator=True)
    finally:
        torch.set_num_threads(n_threads)
    est = run.pop("estimator")
    history = run["history"]
    plateau = dict(est.callbacks_).get("plateau_stopping")
    out = {
        "history": history[[c for c in _HISTORY_COLUMNS if c in history.columns]],
        "n_params": run["n_params"],
        "n_layers": _n_weight_layers(est.module_),
        "train": run["train"],
        "test": run["test"],
        "stopped_on_plateau": bool(plateau is not None and plateau.stopped_epoch_ is not None),
        "module": est.module_.cpu(),
    }
    if not classify:
        X_eval, y_eval = (X, y) if X_test is None else (X_test, y_test)
        out["y_pred"] = np.asarray(est.predict(X_eval), dtype=np.float64)
        if X_test is not None:
            from ..evaluation import evaluate_estimator
            out["test"] = evaluate_estimator(est, X_test, y_test)
    return out


class DeepShallowStudy(Study):
    """HW1-1: do deeper models of the same parameter count fit or learn better?

    Trains each model of ``models`` ``n_restarts`` times (each restart with
    its own seed and initialisation) on the same data and records the loss
    curves, final losses and accuracies.  The task follows ``y``: float
    targets are regression (function simulation, mean squared error,
    full-batch by default), integer or string labels are classification
    (MNIST / CIFAR-10, cross-entropy, mini-batches).  Several target
    functions go into one study with :meth:`fit_functions`.

    Narrow deep ReLU networks sometimes die (every unit of a layer inactive:
    the output is constant and the loss stays at the variance of the target,
    about 0.087 for sinc); every restart is therefore kept, flagged
    ``constant_output``, and the one with the lowest final training loss per
    (data set, model) is marked ``best``.  The models' parameter counts are
    compared after training: a ``UserWarning`` says when they differ by
    more than 1% (regression) or 10% (classification).

    Parameters
    ----------
    models : dict or None, default=None
        Name -> model.  A model is an ``nn.Module`` class or factory (its
        ``n_in``/``n_out``/image sizes come from the data), a zoo name, an
        ``nn.Module`` instance (each run trains a re-initialised copy), a dict
        of estimator parameters such as ``{"module": "mlp_budget",
        "module__depth": 4}`` (may also set ``lr`` etc. for that model), or a
        whole unfitted estimator (trained as it is: the study's training
        settings and plateau stop do not apply to it).  None:
        :func:`default_models` for the task with ``n_params`` and ``depths``.
    estimator : NeuralRegressor, NeuralClassifier or None, default=None
        Template of the training runs (optimizer, callbacks, ...), cloned for
        every run; its ``module`` is replaced by each model's.  None: a
        :class:`~hw1sk.estimators.NeuralRegressor` or
        :class:`~hw1sk.estimators.NeuralClassifier` with Adam.
    task : {"auto", "regression", "classification"}, default="auto"
        ``"auto"``: regression for float ``y``, classification otherwise.
    n_params : int or None, default=None
        Budget of the default models: 571 (regression), 8000 (classification).
    depths : sequence of int or None, default=None
        Depths of the default models: ``(1, 4, 7)`` (regression), ``(1, 2, 4)``
        CNNs and MLPs (classification).
    max_epochs : int or None, default=None
        Upper limit of the training epochs; None: the estimator's value, or
        20,000 (regression) / 10 (classification) without an estimator.
    lr : float or None, default=None
        Learning rate; None: the estimator's, or 1e-3.
    batch_size : int or None, default=None
        ``-1`` is full-batch; None: the estimator's, or -1 (regression) /
        128 (classification).
    n_restarts : int, default=1
        Independent runs per model, each with its own seed.
    plateau_patience : int or None, default=1000
        Stop a run once its training loss has not dropped by a relative
        ``plateau_tol`` for this many epochs (:class:`PlateauStopping`);
        None trains all ``max_epochs``.
    plateau_tol : float, default=1e-3
        Relative improvement that counts as progress.
    test_every : int, default=1
        Classification: score the test set every ``test_every`` epochs
        (``test_loss`` / ``test_acc`` in ``results_``).  Function fits score
        the test grid once, at the end.
    n_jobs : int, default=1
        Parallel runs (:func:`hw1sk.sweep.run_sweep`).  Each run uses one
        torch thread, so that its numbers do not depend on ``n_jobs``; use
        ``n_jobs`` (not threads) to occupy the cores.
    backend : {"loky", "threading", "sequential", "dask"}, default="loky"
    scheduler : str or distributed.Client, optional
        Dask scheduler, with ``backend="dask"``.
    cache_dir : str, optional
        Cache of finished runs (a killed study resumes).
    progress : bool, default=False
    device : str, default="cpu"
    random_state : int, RandomState or None, default=0
        Seeds the runs: run ``(model i, restart r)`` gets seed number
        ``i * n_restarts + r`` of :func:`hw1sk.seeding.spawn_seeds`, the same
        whatever ``n_jobs`` and for every data set.

    Attributes
    ----------
    task_ : {"regression", "classification"}
    results_ : pandas.DataFrame
        One row per epoch of every run: ``function`` (regression) or
        ``dataset`` (classification), ``model``, ``restart``, ``seed``,
        ``n_params``, ``best``, ``epoch``, ``train_loss``, and for
        classification ``train_acc`` (running accuracy over the epoch),
        ``test_loss``, ``test_acc`` (with test data).
    summary_ : pandas.DataFrame
        One row per run: the identifying columns, ``n_layers`` (linear and
        convolutional layers), ``epochs``, ``stopped_on_plateau``,
        ``train_loss``, ``test_loss`` (final, in eval mode), classification:
        ``train_acc``, ``test_acc``; regression: ``constant_output`` (a dead
        network), and ``best``.
    predictions_ : pandas.DataFrame
        Regression only: ``function``, ``model``, ``restart``, ``best``,
        ``x`` (the input, for one-feature data; else the sample index),
        ``y_pred``, ``y_true`` on the test grid (the training data without one).
    modules_ : dict
        ``(data set, model, restart)`` -> trained ``nn.Module`` (on CPU).
    n_params_ : dict
        Model name -> parameter count.
    settings_ : dict
        Human-readable settings for the report.
    diverged_ : pandas.DataFrame
        Runs that diverged (a non-finite loss, or one far above the starting loss:
        see the estimator's ``divergence_factor``), left out of everything else.

    See Also
    --------
    hw1sk.models.mlp_for_budget, cnn_for_budget_flat
    hw1sk.plotting.deep_shallow.plot_loss_curves
    hw1sk.plotting.deep_shallow.plot_predictions
    hw1sk.plotting.deep_shallow.plot_training_curves

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.studies.deep_shallow import DeepShallowStudy
    >>> X = np.linspace(-1, 1, 40)[:, None]; y = np.sin(3 * X[:, 0])
    >>> study = DeepShallowStudy(n_params=200, depths=(1, 3), max_epochs=30).fit(X, y)
    >>> study.summary_[["model", "n_params", "epochs"]].values.tolist()
    [['MLP-1', 199, 30], ['MLP-3', 199, 30]]
    """

    def __init__(self, models=None, estimator=None, *, task="auto", n_params=None, depths=None,
                 max_epochs=None, lr=None, batch_size=None, n_restarts=1,
                 plateau_patience=1000, plateau_tol=1e-3, test_every=1, n_jobs=1,
                 backend="loky", scheduler=None, cache_dir=None, progress=False,
                 device="cpu", random_state=0):
        self.models = models
        self.estimator = estimator
        self.task = task
        self.n_params = n_params
        self.depths = depths
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.n_restarts = n_restarts
        self.plateau_patience = plateau_patience
        self.plateau_tol = plateau_tol
        self.test_every = test_every
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.cache_dir = cache_dir
        self.progress = progress
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, X_test=None, y_test=None, *, name=None):
        """Train every model ``n_restarts`` times on ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples, ...)
            Inputs (images may keep their shape).
        y : array-like of shape (n_samples,)
            Float targets (regression) or class labels.
        X_test, y_test : array-like, optional
            Held-out data: per-epoch test scores for classification; for
            regression the dense grid on which ``predictions_`` are taken
            (with the noise-free targets as ``y_true``).
        name : str, optional
            Name of the data set in the ``function`` / ``dataset`` column;
            ``"data"`` when None.

        Returns
        -------
        self : DeepShallowStudy
        """
        data = self._check_data(X, y, X_test, y_test)
        return self._fit_datasets({"data" if name is None else str(name): data})

    def fit_functions(self, functions=("sinc", "sign"), n_samples=None, n_grid=1000,
                      domain=None, noise=0.0):
        """Function simulation: fit every target function, all runs in one sweep.

        The training inputs of each function come from
        :func:`hw1sk.datasets.make_function_dataset`; its predictions are
        taken on ``n_grid`` evenly spaced points of the same domain, against
        the noise-free function.

        Parameters
        ----------
        functions : sequence of str or callable, default=("sinc", "sign")
            Names known to :func:`~hw1sk.datasets.make_function_dataset`
            (``"sinc"`` is sin(5πx)/(5πx), ``"sign"`` is sign(sin(5πx))) or
            callables of a 1-D array.
        n_samples : int, optional
            Training points per function; the dataset's default when None.
        n_grid : int, default=1000
            Points of the dense prediction grid.
        domain : tuple of float, optional
            Input interval; the dataset's default when None.
        noise : float, default=0.0
            Standard deviation of Gaussian noise on the training targets.

        Returns
        -------
        self : DeepShallowStudy
        """
        from ..datasets import make_function_dataset

        if isinstance(functions, str) or callable(functions):
            functions = (functions,)
        functions = tuple(functions)
        if not functions:
            raise ValueError("functions must name at least one target function.")
        if not isinstance(n_grid, Integral) or isinstance(n_grid, bool) or n_grid < 2:
            raise ValueError(f"n_grid must be an integer >= 2, got {n_grid!r}.")
        common = {} if domain is None else {"domain": domain}
        datasets = {}
        for function in functions:
            label = function if isinstance(function, str) else getattr(function, "__name__", "f")
            if label in datasets:
                raise ValueError(f"functions lists {label!r} twice.")
            train_kw = dict(common, noise=noise, random_state=self.random_state)
            if n_samples is not None:
                train_kw["n_samples"] = n_samples
            X, y = make_function_dataset(function, **train_kw)
            X_grid, y_grid = make_function_dataset(function, n_samples=n_grid, grid=True,
                                                   noise=0.0, **common)
            datasets[label] = self._check_data(X, y, X_grid, y_grid)
        return self._fit_datasets(datasets)

    # ------------------------------------------------------------ internals
    def _check_data(self, X, y, X_test, y_test):
        X = check_array(X, dtype=np.float32, allow_nd=True, input_name="X")
        y = _as_1d(y, "y")
        check_consistent_length(X, y)
        if (X_test is None) != (y_test is None):
            raise ValueError("X_test and y_test must be given together.")
        if X_test is not None:
            X_test = check_array(X_test, dtype=np.float32, allow_nd=True, input_name="X_test")
            y_test = _as_1d(y_test, "y_test")
            check_consistent_length(X_test, y_test)
            if X_test.shape[1:] != X.shape[1:]:
                raise ValueError(f"X_test has samples of shape {X_test.shape[1:]}, but X has "
                                 f"{X.shape[1:]}.")
        return X, y, X_test, y_test

    def _resolve_task(self, ys):
        if self.task not in _TASKS:
            raise ValueError(f"task must be one of {list(_TASKS)}, got {self.task!r}.")
        if self.task != "auto":
            task = self.task
        elif all(y.dtype.kind == "f" for y in ys):
            # float targets are values even when they look discrete (sign(sin) is ±1)
            task = "regression"
        else:
            task = "classification"
        for y in ys:
            if task == "regression" and y.dtype.kind not in "fiub":
                raise ValueError(f"task='regression' needs numeric y, got dtype {y.dtype}.")
            if task == "classification" and type_of_target(y) not in ("binary", "multiclass"):
                raise ValueError(f"task='classification' needs class labels, but y is "
                                 f"{type_of_target(y)!r}.")
        return task

    def _check_params(self):
        def positive_int(value, name, allow_none=False):
            if value is None and allow_none:
                return
            if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer"
                                 f"{' or None' if allow_none else ''}, got {value!r}.")

        positive_int(self.n_restarts, "n_restarts")
        positive_int(self.max_epochs, "max_epochs", allow_none=True)
        positive_int(self.plateau_patience, "plateau_patience", allow_none=True)
        positive_int(self.test_every, "test_every")
        if self.batch_size is not None and self.batch_size != -1:
            positive_int(self.batch_size, "batch_size")
        if self.lr is not None and (not isinstance(self.lr, Real) or not self.lr > 0):
            raise ValueError(f"lr must be a positive number or None, got {self.lr!r}.")
        if not isinstance(self.plateau_tol, Real) or not 0 <= self.plateau_tol < 1:
            raise ValueError(f"plateau_tol must be a number in [0, 1), got {self.plateau_tol!r}.")
        if self.models is not None and (not isinstance(self.models, Mapping) or not self.models):
            raise ValueError("models must be a non-empty dict of name -> model, or None.")
        if self.estimator is not None and not isinstance(self.estimator, BaseEstimator):
            raise ValueError(f"estimator must be an unfitted NeuralRegressor/NeuralClassifier "
                             f"or None, got {type(self.estimator).__name__}.")

    def _template(self, task):
        defaults = _TASK_DEFAULTS[task]
        if self.estimator is None:
            cls = NeuralRegressor if task == "regression" else NeuralClassifier
            est = cls(max_epochs=defaults["max_epochs"], lr=defaults["lr"],
                      batch_size=defaults["batch_size"])
        else:
            est = clone(self.estimator)
        overrides = {"max_epochs": self.max_epochs, "lr": self.lr, "batch_size": self.batch_size}
        est.set_params(**{k: v for k, v in overrides.items() if v is not None},
                       device=self.device)
        if self.plateau_patience is not None:
            with_callbacks(est, ("plateau_stopping", PlateauStopping(
                monitor="train_loss", patience=self.plateau_patience,
                threshold=self.plateau_tol)))
        return est

    def _fit_datasets(self, datasets):
        self._check_params()
        task = self._resolve_task([d[1] for d in datasets.values()])
        classify = task == "classification"
        if classify:
            datasets = {name: _check_test_labels(*data) for name, data in datasets.items()}
        else:
            datasets = {name: tuple(None if a is None else a.astype(np.float32, copy=False)
                                    for a in data) for name, data in datasets.items()}
        models = (self._default_models(task, datasets)
                  if self.models is None else dict(self.models))
        template = self._template(task)
        estimators = {str(name): _model_estimator(template, spec, name)
                      for name, spec in models.items()}
        n_restarts = int(self.n_restarts)
        seeds = spawn_seeds(self.random_state, len(estimators) * n_restarts)
        key = "dataset" if classify else "function"
        tasks, labels = [], []
        for data_name, (X, y, X_test, y_test) in datasets.items():
            for i, (model, est) in enumerate(estimators.items()):
                for r in range(n_restarts):
                    seed = seeds[i * n_restarts + r]
                    tasks.append({"estimator": est, "X": X, "y": y, "X_test": X_test,
                                  "y_test": y_test, "seed": seed, "classify": classify,
                                  "test_every": int(self.test_every)})
                    labels.append({key: data_name, "model": model, "restart": r, "seed": seed})
        runs = self._run_tasks(_fit_one, tasks, desc="DeepShallowStudy")
        if len(self.diverged_):
            # name the diverged runs by data set, model and restart rather than by their arrays
            failed = [lab for lab, run in zip(labels, runs) if run is None]
            self.diverged_ = pd.DataFrame(
                [{**lab, "message": msg} for lab, msg in zip(failed, self.diverged_["message"])])

        summary, curves, predictions, modules = [], [], [], {}
        for lab, run, task_ in zip(labels, runs, tasks):
            if run is None:
                continue
            row = {**lab, "n_params": run["n_params"], "n_layers": run["n_layers"],
                   "epochs": len(run["history"]), "stopped_on_plateau": run["stopped_on_plateau"],
                   "train_loss": run["train"]["loss"]}
            if classify:
                row["train_acc"] = run["train"]["accuracy"]
            if run["test"] is not None:
                row["test_loss"] = run["test"]["loss"]
                if classify:
                    row["test_acc"] = run["test"]["accuracy"]
            if not classify:
                X_eval, y_eval = ((task_["X"], task_["y"]) if task_["X_test"] is None
                                  else (task_["X_test"], task_["y_test"]))
                y_pred = run["y_pred"]
                spread = float(np.ptp(y_eval)) if len(y_eval) else 0.0
                row["constant_output"] = bool(np.ptp(y_pred) <= 1e-4 * max(spread, 1e-12))
                x = X_eval.reshape(len(X_eval), -1)
                x = x[:, 0] if x.shape[1] == 1 else np.arange(len(X_eval))
                order = np.argsort(x, kind="stable")
                predictions.append(pd.DataFrame({
                    **{k: lab[k] for k in (key, "model", "restart")},
                    "x": x[order].astype(np.float64), "y_pred": y_pred[order],
                    "y_true": np.asarray(y_eval, dtype=np.float64)[order]}))
            summary.append(row)
            hist = run["history"].copy()
            for col, value in reversed(list({**lab, "n_params": run["n_params"]}.items())):
                hist.insert(0, col, value)
            curves.append(hist)
            modules[(lab[key], lab["model"], lab["restart"])] = run["module"]

        if not summary:
            raise RuntimeError("DeepShallowStudy: every run diverged; see diverged_ "
                               "(lower lr or rescale the targets).")
        summary = pd.DataFrame(summary)
        # best restart per (data set, model): lowest final training loss
        best_idx = summary.groupby([key, "model"], sort=False)["train_loss"].idxmin()
        summary["best"] = False
        summary.loc[best_idx.values, "best"] = True
        results = pd.concat(curves, ignore_index=True)
        results = results.merge(summary[[key, "model", "restart", "best"]],
                                on=[key, "model", "restart"], how="left")
        front = [key, "model", "restart", "seed", "n_params", "best"]
        results = results[front + [c for c in results.columns if c not in front]]

        self.task_ = task
        self.n_params_ = {model: int(n) for model, n in
                          summary.groupby("model", sort=False)["n_params"].first().items()}
        self._check_parameter_counts(task)
        self.summary_ = summary
        self.results_ = results
        self.modules_ = modules
        if classify:
            self.__dict__.pop("predictions_", None)
        else:
            predictions = pd.concat(predictions, ignore_index=True).merge(
                summary[[key, "model", "restart", "best"]], on=[key, "model", "restart"],
                how="left")
            cols = [key, "model", "restart", "best", "x", "y_pred", "y_true"]
            self.predictions_ = predictions[cols]
        self.settings_ = self._settings(task, template, estimators, datasets, summary, seeds)
        return self

    def _check_parameter_counts(self, task):
        counts = np.array(list(self.n_params_.values()), dtype=float)
        spread = (counts.max() - counts.min()) / counts.min()
        limit = _PARAM_SPREAD[task]
        if spread > limit:
            warnings.warn(
                f"DeepShallowStudy: the models' parameter counts differ by {spread:.1%} "
                f"(more than {limit:.0%}): {self.n_params_}.",
                UserWarning, stacklevel=3)

    def _default_models(self, task, datasets):
        """:func:`default_models`, less the CNNs when the inputs are not images."""
        models = default_models(task, self.n_params, self.depths)
        flat = [name for name, data in datasets.items() if not _holds_images(data[0])]
        if task == "classification" and flat:
            models = {k: v for k, v in models.items() if not k.startswith("CNN")}
            warnings.warn(
                f"DeepShallowStudy: the inputs of {flat} are not images (samples of shape "
                f"{tuple(datasets[flat[0]][0].shape[1:])}), so the default models are the "
                "MLPs only; pass models= to compare other families.", UserWarning,
                stacklevel=3)
        return models

    def _settings(self, task, template, estimators, datasets, summary, seeds):
        archs = summary.drop_duplicates("model").set_index("model")
        data = {name: {"n_train": len(d[0]), "n_test": None if d[2] is None else len(d[2]),
                       "input_shape": tuple(d[0].shape[1:])} for name, d in datasets.items()}
        return {
            "task": task,
            "models": {m: f"{int(archs.loc[m, 'n_params'])} parameters, "
                          f"{int(archs.loc[m, 'n_layers'])} weight layers"
                       for m in archs.index},
            "estimator": type(template).__name__,
            "optimizer": getattr(template.optimizer, "__name__", str(template.optimizer)),
            "criterion": getattr(template.criterion, "__name__", str(template.criterion)),
            "lr": {m: est.lr for m, est in estimators.items()} if len(
                {est.lr for est in estimators.values()}) > 1 else template.lr,
            "max_epochs": template.max_epochs,
            "batch_size": "full batch" if template.batch_size == -1 else template.batch_size,
            "n_restarts": self.n_restarts,
            "plateau stop": (None if self.plateau_patience is None else
                             f"train_loss not {self.plateau_tol:g} (relative) lower in "
                             f"{self.plateau_patience} epochs"),
            "random_state": describe_value(self.random_state),
            "seeds": seeds,
            "data": data,
        }
