"""HW1-1, deep versus shallow: models of one parameter budget, trained side by side.

:class:`DeepShallowStudy` trains equally sized models of different depth on
one data set, or on several target functions at once (``fit_functions``).
"""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import column_or_1d
from torch import nn

from ..evaluation import evaluate_estimator
from ..models import cnn_for_budget_flat
from ..seeding import spawn_seeds
from ..training_callbacks import PlateauStopping
from ._defaults import default_deep_shallow_estimator
from ._base import (Study, describe_estimator, describe_value, prepare_data, train_run,
                    with_callbacks)

__all__ = ["DeepShallowStudy", "PlateauStopping", "cnn_for_budget_flat", "default_models"]

#: Budget and depths of the default models of each task.
_DEFAULT_MODELS = {"regression": {"n_params": 571, "depths": (1, 4, 7)},
                   "classification": {"n_params": 8000, "depths": (1, 2, 4)}}

# largest relative spread of the models' parameter counts before a warning
_PARAM_SPREAD = {"regression": 0.01, "classification": 0.1}


def _reinitialized_copy(module):
    """A deep copy of ``module`` whose layers are re-initialised (under the caller's seed)."""
    fresh = copy.deepcopy(module)
    for sub in fresh.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return fresh


def default_models(task, n_params=None, depths=None):
    """The study's default models: parameter-matched MLPs (and CNNs for classification).

    ``task`` is ``"regression"`` or ``"classification"``; the budget
    ``n_params`` is 571 (regression) or 8000 (classification) when None, the
    ``depths`` (hidden layers or convolutions) ``(1, 4, 7)`` or ``(1, 2, 4)``.
    Returns name -> estimator parameters: ``"MLP-<depth>"`` built by
    :func:`hw1sk.models.mlp_for_budget`, and for classification also
    ``"CNN-<depth>"`` built by :func:`cnn_for_budget_flat` (input size and
    number of classes come from the data).

    Examples
    --------
    >>> from hw1sk.studies.deep_shallow import default_models
    >>> sorted(default_models("regression"))
    ['MLP-1', 'MLP-4', 'MLP-7']
    """
    if task not in _DEFAULT_MODELS:
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
    n_params = _DEFAULT_MODELS[task]["n_params"] if n_params is None else n_params
    depths = tuple(_DEFAULT_MODELS[task]["depths"] if depths is None else depths)
    if not isinstance(n_params, Integral) or isinstance(n_params, bool) or n_params < 1:
        raise ValueError(f"n_params must be a positive integer, got {n_params!r}.")
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
    """One (data set, model, restart) run: train, score, predict (a module-level sweep task).

    Returns :func:`~hw1sk.studies._base.train_run`'s dict (``estimator``
    included) plus ``n_layers``, ``stopped_on_plateau``, ``module`` (the
    trained module on CPU) and, for regression, ``y_pred`` on the test data
    (the training data without any).
    """
    scored = classify and X_test is not None
    run = train_run(estimator, X, y, X_test if scored else None, y_test if scored else None,
                    seed=seed, test_every=test_every, keep_estimator=True)
    est = run["estimator"]
    plateau = dict(est.callbacks_).get("plateau_stopping")
    module = est.module_
    if any(p.device.type != "cpu" for p in module.parameters()):
        module = copy.deepcopy(module).cpu()  # the fitted estimator stays on its device
    run.update(n_layers=_n_weight_layers(module), module=module,
               stopped_on_plateau=bool(plateau is not None and plateau.stopped_epoch_ is not None))
    if not classify:
        X_eval, y_eval = (X, y) if X_test is None else (X_test, y_test)
        run["y_pred"] = np.asarray(est.predict(X_eval), dtype=np.float64)
        if X_test is not None:
            run["test"] = evaluate_estimator(est, X_test, y_test)
    return run


def _share_held_out_data(est, X_test, y_test):
    """Point ``est``'s held-out scorer (added by ``train_run``) at the study's test arrays.

    A run back from a worker process brings its own copy of them; one shared
    array keeps a pickled study to one copy.
    """
    for name, callback in est.callbacks_:
        if name == "test_score":
            callback.X, callback.y = X_test, y_test
    return est


def _prediction_frame(label, key, y_pred, X_eval, y_eval):
    """``(constant_output, predictions)`` of one regression run, sorted by ``x``."""
    spread = float(np.ptp(y_eval)) if len(y_eval) else 0.0
    constant = bool(np.ptp(y_pred) <= 1e-4 * max(spread, 1e-12))
    x = X_eval.reshape(len(X_eval), -1)
    x = x[:, 0] if x.shape[1] == 1 else np.arange(len(X_eval))
    order = np.argsort(x, kind="stable")
    frame = pd.DataFrame({**{k: label[k] for k in (key, "model", "restart")},
                          "x": x[order].astype(np.float64), "y_pred": y_pred[order],
                          "y_true": np.asarray(y_eval, dtype=np.float64)[order]})
    return constant, frame


class DeepShallowStudy(Study):
    """HW1-1: do deeper models of the same parameter count fit or learn better?

    Trains each model of ``models`` ``n_restarts`` times (each restart with
    its own seed) on the same data and records the loss curves, final losses
    and accuracies.  Float targets are regression (function simulation, mean
    squared error), integer or string labels classification (MNIST,
    CIFAR-10, cross-entropy); :meth:`fit_functions` fits several target
    functions in one study.  Narrow deep ReLU nets sometimes die (constant
    output, the loss stays at the variance of the target): every restart is
    kept, flagged ``constant_output``, and the lowest final training loss per
    (data set, model) is marked ``best``.  A ``UserWarning`` says when the
    models' parameter counts differ by more than 1% (regression) or 10%
    (classification).

    Parameters
    ----------
    models : dict or None, default=None
        Name -> model: an ``nn.Module`` class or factory (sizes from the
        data), a zoo name, an ``nn.Module`` instance (each run trains a
        re-initialised copy), a dict of estimator parameters with a
        ``"module"`` key (``{"module": "mlp_budget", "module__depth": 4,
        "lr": 1e-2}``), or a whole unfitted estimator (trained as it is: the
        shortcuts and plateau stop do not apply).  None:
        :func:`default_models` of the task, with ``n_params`` and ``depths``.
    estimator : NeuralRegressor, NeuralClassifier or None, default=None
        Template of the runs, cloned per model; a model replaces its
        ``module`` (and what its dict sets).  Every other setting (optimizer
        and its arguments, lr, epochs, batch size, callbacks, device) is used
        as given, except the seed and the shortcuts when set.  None:
        :func:`default_deep_shallow_estimator` (regression: full batch,
        20,000 epochs; classification: batches of 128, 10 epochs; Adam, lr 1e-3).
    task : {"auto", "regression", "classification"}, default="auto"
        ``"auto"``: regression for float ``y``, classification otherwise.
    n_params, depths : int and sequence of int, or None, default=None
        Budget and depths of the default models: 571 and ``(1, 4, 7)``
        (regression), 8000 and ``(1, 2, 4)`` (classification).
    max_epochs, lr, batch_size : int, float, int or None, default=None
        Shortcuts: when set, the epochs, learning rate and batch size
        (``-1``: full batch) of every model, recorded in ``settings_``; None
        keeps the estimator's.
    n_restarts : int, default=1
        Runs per model, each with its own seed.
    plateau_patience : int or None, default=1000
        Stop a run once its training loss has not dropped by a relative
        ``plateau_tol`` in this many epochs (:class:`PlateauStopping`, added
        to the callbacks); None: no plateau stop.
    plateau_tol : float, default=1e-3
    test_every : int, default=1
        Classification: score the test data every ``test_every`` epochs.
        Function fits score the test grid once, at the end.
    n_jobs, backend, scheduler, cache_dir, progress
        How the runs are executed, see :func:`hw1sk.sweep.run_sweep` (one
        torch thread per run, so the numbers do not depend on ``n_jobs``).
    device : str or None, default=None
        Where every model trains; None keeps the estimator's.
    random_state : int, RandomState or None, default=0
        Run ``(model i, restart r)`` gets seed ``i * n_restarts + r`` of
        :func:`hw1sk.seeding.spawn_seeds`, for every data set.

    Attributes
    ----------
    task_ : {"regression", "classification"}
    results_ : pandas.DataFrame
        One row per epoch of every run: ``function`` (regression) or
        ``dataset``, ``model``, ``restart``, ``seed``, ``n_params``,
        ``best``, then every column of the run's history (``epoch``,
        ``train_loss``, ``dur``, ..., ``train_acc``, and with test data
        ``test_loss``, ``test_acc``; what the estimator's callbacks record).
    summary_ : pandas.DataFrame
        One row per run: the identifying columns, ``n_layers`` (linear and
        convolutional layers), ``epochs``, ``stopped_on_plateau``, final
        ``train_loss``, ``test_loss``, classification: ``train_acc``,
        ``test_acc``; regression: ``constant_output``; and ``best``.
    predictions_ : pandas.DataFrame
        Regression only: ``function``, ``model``, ``restart``, ``best``,
        ``x`` (the input of one-feature data, else the sample index),
        ``y_pred``, ``y_true`` on the test grid (the training data without).
    estimators_ : dict
        ``(data set, model, restart)`` -> the fitted estimator (its held-out
        scorer shares the study's test arrays: one copy when pickled).
    modules_ : dict
        ``(data set, model, restart)`` -> trained ``nn.Module`` on CPU.
    n_params_ : dict
        Model name -> parameter count.
    settings_ : dict
        The template estimator's settings
        (:func:`~hw1sk.studies._base.describe_estimator`), what each model
        changes (``"model settings"``), the shortcuts set, models, seeds, data.
    diverged_ : pandas.DataFrame
        Runs that diverged (non-finite loss, or far above the starting loss:
        see the estimator's ``divergence_factor``), left out of the rest.

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

    _parameter_constraints = {
        **Study._parameter_constraints,
        "models": [Mapping, None],
        "task": [StrOptions({"auto", "regression", "classification"})],
        "n_params": [Interval(Integral, 1, None, closed="left"), None],
        "depths": ["array-like", None],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left"), Options(Integral, {-1}), None],
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
        "plateau_patience": [Interval(Integral, 1, None, closed="left"), None],
        "plateau_tol": [Interval(Real, 0, 1, closed="left")],
        "test_every": [Interval(Integral, 1, None, closed="left")],
    }
    _run_function = staticmethod(_fit_one)

    def __init__(self, models=None, estimator=None, *, task="auto", n_params=None, depths=None,
                 max_epochs=None, lr=None, batch_size=None, n_restarts=1,
                 plateau_patience=1000, plateau_tol=1e-3, test_every=1, n_jobs=1,
                 backend="loky", scheduler=None, cache_dir=None, progress=False,
                 device=None, random_state=0):
        super().__init__(estimator=estimator, n_jobs=n_jobs, backend=backend,
                         scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                         device=device, random_state=random_state)
        self.models = models
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

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, X_test=None, y_test=None, *, name=None):
        """Train every model ``n_restarts`` times on ``(X, y)``.

        Parameters
        ----------
        X, y : array-like of shape (n_samples, ...) and (n_samples,)
            Inputs (images may keep their shape); float targets or class labels.
        X_test, y_test : array-like, optional
            Held-out data: per-epoch test scores (classification), or the grid
            of ``predictions_`` with its noise-free targets (regression).
        name : str, optional
            The data set's name in ``results_`` (``"data"`` when None).

        Returns
        -------
        self : DeepShallowStudy
        """
        self._validate_params()
        data = self._prepare_data(X, y, X_test, y_test)
        return self._fit_datasets({"data" if name is None else str(name): data})

    def fit_functions(self, functions=("sinc", "sign"), n_samples=None, n_grid=1000,
                      domain=None, noise=0.0):
        """Function simulation: fit every target function, all runs in one sweep.

        Parameters
        ----------
        functions : sequence of str or callable, default=("sinc", "sign")
            Names known to :func:`hw1sk.datasets.make_function_dataset`
            (``"sinc"``: sin(5πx)/(5πx), ``"sign"``: sign(sin(5πx))) or
            callables of a 1-D array.
        n_samples, domain : int and tuple of float, optional
            Training points per function and input interval (the dataset's
            defaults when None).
        n_grid : int, default=1000
            Evenly spaced points on which the predictions are taken, against
            the noise-free function.
        noise : float, default=0.0
            Standard deviation of Gaussian noise on the training targets.

        Returns
        -------
        self : DeepShallowStudy
        """
        from ..datasets import make_function_dataset

        self._validate_params()
        functions = ((functions,) if isinstance(functions, str) or callable(functions)
                     else tuple(functions))
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
            datasets[label] = self._prepare_data(X, y, X_grid, y_grid)
        return self._fit_datasets(datasets)

    def _fit_datasets(self, datasets):
        """The base's :meth:`Study.fit` over several data sets (name -> StudyData)."""
        self._task = self._resolve_task(datasets)
        template = self._template_estimator(datasets)
        pairs = self._tasks(datasets, template)
        labels, tasks = [label for label, _ in pairs], [task for _, task in pairs]
        runs = self._run_tasks(type(self)._run_function, tasks, labels=labels)
        self._collect(datasets, template, labels, runs)
        self.settings_ = {**describe_estimator(template), **self._settings(datasets, template)}
        if self.device is not None:
            self.settings_["device"] = self.device
        return self

    # ------------------------------------------------------------------ hooks
    def _prepare_data(self, X, y, X_test, y_test):
        """:func:`prepare_data` (no split, no subsets), float32 inputs, 1-D targets."""
        y_test = None if y_test is None else column_or_1d(y_test)  # a column is raveled
        data = prepare_data(X, column_or_1d(y), X_test, y_test)
        data.X = data.X.astype(np.float32, copy=False)
        if data.X_test is not None:
            data.X_test = data.X_test.astype(np.float32, copy=False)
        return data

    def _resolve_task(self, datasets):
        """The task of the data; regression targets become float32, test labels are checked."""
        task = self.task
        if task == "auto":  # float targets are values even when they look discrete (±1)
            floats = all(d.y.dtype.kind == "f" for d in datasets.values())
            task = "regression" if floats else "classification"
        for d in datasets.values():
            kind = type_of_target(d.y)
            if task == "regression" and d.y.dtype.kind not in "fiub":
                raise ValueError(f"task='regression' needs numeric y, got dtype {d.y.dtype}.")
            if task == "classification" and kind not in ("binary", "multiclass"):
                raise ValueError(f"task='classification' needs class labels, but y is {kind!r}.")
            if task == "regression":
                d.y, d.y_test = (None if v is None else v.astype(np.float32, copy=False)
                                 for v in (d.y, d.y_test))
            elif d.y_test is not None and np.setdiff1d(d.y_test, d.y).size:
                # labels stay as given: each classifier encodes them through its classes_
                raise ValueError(f"y_test holds labels {np.setdiff1d(d.y_test, d.y).tolist()} "
                                 "that are not among the training labels.")
        return task

    def _default_estimator(self, data):
        return default_deep_shallow_estimator(self._task)

    def _template_estimator(self, data):
        template = super()._template_estimator(data)
        shortcuts = {"max_epochs": self.max_epochs, "lr": self.lr, "batch_size": self.batch_size}
        template.set_params(**{k: v for k, v in shortcuts.items() if v is not None})
        if self.plateau_patience is not None:
            with_callbacks(template, ("plateau_stopping", PlateauStopping(
                monitor="train_loss", patience=self.plateau_patience,
                threshold=self.plateau_tol)))
        return template

    def _tasks(self, datasets, template):
        if self.models is not None and not self.models:
            raise ValueError("models must be a non-empty dict of name -> model, or None.")
        models = self._default_models(datasets) if self.models is None else dict(self.models)
        self._estimators = {str(name): _model_estimator(template, spec, name)
                            for name, spec in models.items()}
        n_restarts, key = int(self.n_restarts), self._key()
        self._seeds = spawn_seeds(self.random_state, len(self._estimators) * n_restarts)
        common = {"classify": self._task == "classification", "test_every": int(self.test_every)}
        pairs = []
        for data_name, d in datasets.items():
            for i, (model, est) in enumerate(self._estimators.items()):
                for r in range(n_restarts):
                    seed = self._seeds[i * n_restarts + r]
                    pairs.append(({key: data_name, "model": model, "restart": r, "seed": seed},
                                  {"estimator": est, "X": d.X, "y": d.y, "X_test": d.X_test,
                                   "y_test": d.y_test, "seed": seed, **common}))
        return pairs

    def _key(self):
        return "dataset" if self._task == "classification" else "function"

    def _default_models(self, datasets):
        """:func:`default_models`, less the CNNs when the inputs are not images."""
        models = default_models(self._task, self.n_params, self.depths)
        flat = [name for name, d in datasets.items() if not _holds_images(d.X)]
        if self._task == "classification" and flat:
            models = {k: v for k, v in models.items() if not k.startswith("CNN")}
            warnings.warn(
                f"DeepShallowStudy: the inputs of {flat} are not images (samples of shape "
                f"{tuple(datasets[flat[0]].X.shape[1:])}), so the default models are the "
                "MLPs only; pass models= to compare other families.", UserWarning,
                stacklevel=5)
        return models

    def _collect(self, datasets, template, labels, runs):
        key, classify = self._key(), self._task == "classification"
        rows, curves, predictions, self.modules_, self.estimators_ = [], [], [], {}, {}
        for lab, run in zip(labels, runs):
            if run is None:
                continue
            d, ident = datasets[lab[key]], (lab[key], lab["model"], lab["restart"])
            rows.append(self._summary_row(lab, run, classify))
            if not classify:
                X_eval, y_eval = (d.X, d.y) if d.X_test is None else (d.X_test, d.y_test)
                rows[-1]["constant_output"], frame = _prediction_frame(
                    lab, key, run["y_pred"], X_eval, y_eval)
                predictions.append(frame)
            hist = run["history"].copy()  # every column, the user's callbacks' included
            for col, value in reversed(list({**lab, "n_params": run["n_params"]}.items())):
                hist.insert(0, col, value)
            curves.append(hist)
            self.modules_[ident] = run["module"]
            self.estimators_[ident] = _share_held_out_data(run["estimator"], d.X_test, d.y_test)
        if not rows:
            raise RuntimeError("DeepShallowStudy: every run diverged; see diverged_ "
                               "(lower lr or rescale the targets).")
        summary = pd.DataFrame(rows)
        # best restart per (data set, model): lowest final training loss
        best_idx = summary.groupby([key, "model"], sort=False)["train_loss"].idxmin()
        summary["best"] = False
        summary.loc[best_idx.values, "best"] = True
        ids = [key, "model", "restart"]
        results = pd.concat(curves, ignore_index=True).merge(summary[ids + ["best"]], on=ids,
                                                             how="left")
        front = ids + ["seed", "n_params", "best"]
        self.task_, self.summary_ = self._task, summary
        self.results_ = results[front + [c for c in results.columns if c not in front]]
        self.n_params_ = {model: int(n) for model, n in
                          summary.groupby("model", sort=False)["n_params"].first().items()}
        self._check_parameter_counts()
        self.__dict__.pop("predictions_", None)
        if not classify:
            self.predictions_ = pd.concat(predictions, ignore_index=True).merge(
                summary[ids + ["best"]], on=ids, how="left")[ids + ["best", "x", "y_pred",
                                                                   "y_true"]]

    @staticmethod
    def _summary_row(label, run, classify):
        row = {**label, "n_params": run["n_params"], "n_layers": run["n_layers"],
               "epochs": len(run["history"]), "stopped_on_plateau": run["stopped_on_plateau"],
               "train_loss": run["train"]["loss"]}
        if classify:
            row["train_acc"] = run["train"]["accuracy"]
        if run["test"] is not None:
            row["test_loss"] = run["test"]["loss"]
            if classify:
                row["test_acc"] = run["test"]["accuracy"]
        return row

    def _check_parameter_counts(self):
        counts = np.array(list(self.n_params_.values()), dtype=float)
        spread = (counts.max() - counts.min()) / counts.min()
        limit = _PARAM_SPREAD[self._task]
        if spread > limit:
            warnings.warn(
                f"DeepShallowStudy: the models' parameter counts differ by {spread:.1%} "
                f"(more than {limit:.0%}): {self.n_params_}.", UserWarning, stacklevel=5)

    def _settings(self, datasets, template):
        archs = self.summary_.drop_duplicates("model").set_index("model")
        base = describe_estimator(template)
        per_model = {m: {k: v for k, v in describe_estimator(est).items() if base.get(k) != v}
                     for m, est in self._estimators.items()}
        return {
            "task": self._task,
            "models": {m: f"{int(archs.loc[m, 'n_params'])} parameters, "
                          f"{int(archs.loc[m, 'n_layers'])} weight layers"
                       for m in archs.index},
            "model settings": {m: s for m, s in per_model.items() if s},
            "max_epochs (set by the study)": self.max_epochs,
            "lr (set by the study)": self.lr,
            "batch_size (set by the study)": self.batch_size,
            "n_restarts": self.n_restarts,
            "plateau stop": (None if self.plateau_patience is None else
                             f"train_loss not {self.plateau_tol:g} (relative) lower in "
                             f"{self.plateau_patience} epochs"),
            "random_state": describe_value(self.random_state),
            "seeds": self._seeds,
            "data": {name: {"n_train": len(d.X), "n_test": None if d.X_test is None
                            else len(d.X_test), "input_shape": tuple(d.X.shape[1:])}
                     for name, d in datasets.items()},
        }
