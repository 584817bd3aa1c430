"""HW1-1, deep versus shallow: models of one parameter budget, trained side by side."""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import column_or_1d
from torch import nn

from ..evaluation import evaluate_estimator
from ..models import cnn_for_budget_flat, holds_images, n_weight_layers, reinitialized_copy
from ..models import parameter_matched_models as default_models
from ..seeding import spawn_seeds
from ..training_callbacks import PlateauStopping
from ._collect import completed, data_sizes, final_scores, stack
from ._defaults import default_deep_shallow_estimator
from ._base import (Study, describe_estimator, describe_value, prepare_data, shortcut_settings,
                    train_run, with_callbacks)

__all__ = ["DeepShallowStudy", "PlateauStopping", "cnn_for_budget_flat", "default_models"]

# largest relative spread of the models' parameter counts before a warning
_PARAM_SPREAD = {"regression": 0.01, "classification": 0.1}


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
        return est.set_params(module=functools.partial(reinitialized_copy, spec))
    if isinstance(spec, str) or callable(spec):
        return est.set_params(module=spec)
    raise ValueError(
        f"models[{name!r}] must be an nn.Module (instance, class or factory), a zoo name, a dict "
        f"of estimator parameters or an estimator; got {type(spec).__name__}.")


def _fit_one(estimator, X, y, X_test, y_test, seed, classify, test_every):
    """One (data set, model, restart) run: :func:`train_run`'s dict, ``n_layers``,
    ``stopped_on_plateau``, ``module`` (on CPU) and, for regression, ``y_pred``."""
    scored = classify and X_test is not None
    run = train_run(estimator, X, y, X_test if scored else None, y_test if scored else None,
                    seed=seed, test_every=test_every, keep_estimator=True)
    est = run["estimator"]
    plateau, module = dict(est.callbacks_).get("plateau_stopping"), est.module_
    if any(p.device.type != "cpu" for p in module.parameters()):
        module = copy.deepcopy(module).cpu()  # the fitted estimator stays on its device
    run.update(n_layers=n_weight_layers(module), module=module,
               stopped_on_plateau=bool(plateau is not None and plateau.stopped_epoch_ is not None))
    if not classify:
        X_eval, y_eval = (X, y) if X_test is None else (X_test, y_test)
        run["y_pred"] = np.asarray(est.predict(X_eval), dtype=np.float64)
        if X_test is not None:
            run["test"] = evaluate_estimator(est, X_test, y_test)
    return run


def _share_held_out_data(est, X_test, y_test):
    """Point ``est``'s held-out scorer at the study's test arrays (one copy when pickled)."""
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


def _summary_row(label, run, classify):
    """One row of ``summary_``: the run's labels, size, epochs and final scores (``*_acc``)."""
    return {**label, "n_params": run["n_params"], "n_layers": run["n_layers"],
            "epochs": len(run["history"]), "stopped_on_plateau": run["stopped_on_plateau"],
            **{k.replace("accuracy", "acc"): v for k, v in final_scores(run).items()
               if classify or not k.endswith("accuracy")}}


def _mark_best(frame, summary, ids):
    """``frame`` with the ``best`` column of ``summary`` (on the run's ``ids``)."""
    return frame.merge(summary[ids + ["best"]], on=ids, how="left")


class DeepShallowStudy(Study):
    """HW1-1: do deeper models of the same parameter count fit or learn better?

    Trains each model ``n_restarts`` times, each with its own seed.  Float
    targets are regression (MSE), labels classification (cross-entropy);
    :meth:`fit_functions` fits several target functions in one study.  Narrow
    deep ReLU nets sometimes die (constant output): every restart is kept,
    flagged ``constant_output``; the lowest final training loss per (data set,
    model) is ``best``.  A ``UserWarning`` says when the parameter counts differ
    by more than 1% (regression) or 10% (classification).

    Parameters
    ----------
    models : dict or None, default=None
        Name -> ``nn.Module`` class, factory, zoo name or instance (each run
        re-initialises a copy), dict of estimator parameters with a ``"module"``
        key, or estimator (trained as it is: no shortcuts, no plateau stop).
        None: :func:`default_models` of the task (the CNNs only on images).
    estimator : NeuralRegressor, NeuralClassifier or None, default=None
        Template, cloned per model.  None: :func:`default_deep_shallow_estimator`
        (Adam, lr 1e-3; regression: full batch, 20,000 epochs; else batches of 128, 10 epochs).
    task : {"auto", "regression", "classification"}, default="auto"
        ``"auto"``: regression for float ``y``, classification otherwise.
    n_params, depths : int and sequence of int, or None, default=None
        Budget and depths of the default models.
    {shortcuts}
    n_restarts, test_every : int, default=1
        Runs per model; classification: score the test data every ``test_every`` epochs.
    plateau_patience, plateau_tol : int or None, float, default=1000, 1e-3
        Stop a run once its training loss has not dropped by a relative
        ``plateau_tol`` in ``plateau_patience`` epochs (None: never).
    random_state : int, RandomState or None, default=0
        Run ``(model i, restart r)`` gets seed ``i * n_restarts + r`` of
        :func:`hw1sk.seeding.spawn_seeds`, for every data set.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per epoch of every run: ``function`` (regression) or ``dataset``,
        ``model``, ``restart``, ``seed``, ``n_params``, ``best``, then the history.
    summary_ : pandas.DataFrame
        One row per run: those columns, ``n_layers`` (weight layers), ``epochs``,
        ``stopped_on_plateau``, final ``train_loss``, ``test_loss``, ``train_acc``
        and ``test_acc`` (classification) or ``constant_output`` (regression).
    predictions_ : pandas.DataFrame
        Regression: ``function``, ``model``, ``restart``, ``best``, ``x`` (the
        input, or the sample index), ``y_pred``, ``y_true`` on the test grid.
    estimators_, modules_ : dict
        ``(data set, model, restart)`` -> the fitted estimator; its module on CPU.
    task_, n_params_, settings_
        The task; model -> parameter count; the settings (``"model settings"``:
        what each model changes).

    See Also
    --------
    hw1sk.models.mlp_for_budget, cnn_for_budget_flat, hw1sk.plotting.deep_shallow

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
        "n_restarts": [Interval(Integral, 1, None, closed="left")],
        "plateau_patience": [Interval(Integral, 1, None, closed="left"), None],
        "plateau_tol": [Interval(Real, 0, 1, closed="left")],
        "test_every": [Interval(Integral, 1, None, closed="left")],
    }
    _run_function = staticmethod(_fit_one)
    _shortcuts = ("max_epochs", "lr", "batch_size")
    _doc_values = {"run_labels": "function or dataset, model, restart, seed"}

    def __init__(self, models=None, estimator=None, *, task="auto", n_params=None, depths=None,
                 max_epochs=None, lr=None, batch_size=None, n_restarts=1,
                 plateau_patience=1000, plateau_tol=1e-3, test_every=1, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def fit(self, X, y, X_test=None, y_test=None, *, name=None):
        """Train every model ``n_restarts`` times on ``(X, y)`` (images may keep their shape).

        ``X_test, y_test``: per-epoch test scores (classification), or the
        grid of ``predictions_`` with its noise-free targets (regression).
        ``name``: the data set's name in ``results_`` (``"data"`` when None).
        """
        self._data_sets = {"data" if name is None else str(name): (X, y, X_test, y_test)}
        return super().fit(X, y, X_test, y_test)

    def fit_functions(self, functions=("sinc", "sign"), n_samples=None, n_grid=1000,
                      domain=None, noise=0.0):
        """Function simulation: fit every target function, all runs in one sweep.

        ``functions``: names of :func:`hw1sk.datasets.make_function_dataset`
        (``"sinc"``: sin(5πx)/(5πx), ``"sign"``: sign(sin(5πx))) or callables
        of a 1-D array; ``n_samples`` training points on ``domain`` (the
        dataset's defaults when None) with Gaussian ``noise`` on the targets;
        the predictions are taken on ``n_grid`` evenly spaced points.
        """
        from ..datasets import make_function_dataset

        self._validate_params()  # before random_state draws the data
        functions = ((functions,) if isinstance(functions, str) or callable(functions)
                     else tuple(functions))
        if not functions:
            raise ValueError("functions must name at least one target function.")
        if not isinstance(n_grid, Integral) or isinstance(n_grid, bool) or n_grid < 2:
            raise ValueError(f"n_grid must be an integer >= 2, got {n_grid!r}.")
        common, arrays = {} if domain is None else {"domain": domain}, {}
        for function in functions:
            label = function if isinstance(function, str) else getattr(function, "__name__", "f")
            if label in arrays:
                raise ValueError(f"functions lists {label!r} twice.")
            arrays[label] = (*make_function_dataset(
                function, noise=noise, random_state=self.random_state, **common,
                **({} if n_samples is None else {"n_samples": n_samples})),
                *make_function_dataset(function, n_samples=n_grid, grid=True, noise=0.0, **common))
        self._data_sets = arrays
        return super().fit(None, None)

    def _prepare_data(self, X, y, X_test, y_test):  # name -> StudyData
        datasets = {name: self._one_data_set(*arrays)
                    for name, arrays in self.__dict__.pop("_data_sets").items()}
        self._task = self._resolve_task(datasets)
        self._key = "dataset" if self._task == "classification" else "function"
        return datasets

    @staticmethod
    def _one_data_set(X, y, X_test, y_test):
        """:func:`prepare_data` (no split, no subsets), float32 inputs, 1-D targets."""
        y_test = None if y_test is None else column_or_1d(y_test)  # a column is raveled
        data = prepare_data(X, column_or_1d(y), X_test, y_test)
        data.X, data.X_test = (None if v is None else v.astype(np.float32, copy=False)
                               for v in (data.X, data.X_test))
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
        if self.plateau_patience is not None:
            with_callbacks(template, ("plateau_stopping", PlateauStopping(
                monitor="train_loss", patience=self.plateau_patience, threshold=self.plateau_tol)))
        return template

    def _tasks(self, datasets, template):
        if self.models is not None and not self.models:
            raise ValueError("models must be a non-empty dict of name -> model, or None.")
        models = self._default_models(datasets) if self.models is None else dict(self.models)
        self._estimators = {str(name): _model_estimator(template, spec, name)
                            for name, spec in models.items()}
        n_restarts = int(self.n_restarts)
        self._seeds = spawn_seeds(self.random_state, len(self._estimators) * n_restarts)
        common = {"classify": self._task == "classification", "test_every": int(self.test_every)}
        return [({self._key: data_name, "model": model, "restart": r, "seed": seed},
                 {"estimator": est, "X": d.X, "y": d.y, "X_test": d.X_test, "y_test": d.y_test,
                  "seed": seed, **common})
                for data_name, d in datasets.items()
                for i, (model, est) in enumerate(self._estimators.items())
                for r, seed in enumerate(self._seeds[i * n_restarts:(i + 1) * n_restarts])]

    def _default_models(self, datasets):  # the CNNs only when the inputs are images
        models = default_models(self._task, self.n_params, self.depths)
        flat = [name for name, d in datasets.items() if not holds_images(d.X)]
        if self._task == "classification" and flat:
            models = {k: v for k, v in models.items() if not k.startswith("CNN")}
            warnings.warn(
                f"DeepShallowStudy: the inputs of {flat} are not images (samples of shape "
                f"{tuple(datasets[flat[0]].X.shape[1:])}), so the default models are the "
                "MLPs only; pass models= to compare other families.", UserWarning,
                stacklevel=5)
        return models

    def _collect(self, datasets, template, labels, runs):
        key, classify = self._key, self._task == "classification"
        rows, curves, predictions, self.modules_, self.estimators_ = [], [], [], {}, {}
        for lab, run in completed(labels, runs):
            d, ident = datasets[lab[key]], (lab[key], lab["model"], lab["restart"])
            rows.append(_summary_row(lab, run, classify))
            if not classify:
                X_eval, y_eval = (d.X, d.y) if d.X_test is None else (d.X_test, d.y_test)
                rows[-1]["constant_output"], frame = _prediction_frame(
                    lab, key, run["y_pred"], X_eval, y_eval)
                predictions.append(frame)
            curves.append(({**lab, "n_params": run["n_params"]}, run["history"]))  # every column
            self.modules_[ident] = run["module"]
            self.estimators_[ident] = _share_held_out_data(run["estimator"], d.X_test, d.y_test)
        if not rows:
            raise RuntimeError("DeepShallowStudy: every run diverged; see diverged_ "
                               "(lower lr or rescale the targets).")
        self._summarize(pd.DataFrame(rows), curves, predictions, [key, "model", "restart"])

    def _summarize(self, summary, curves, predictions, ids):
        # best restart per (data set, model): lowest final training loss
        best_idx = summary.groupby(ids[:2], sort=False)["train_loss"].idxmin()
        summary["best"] = False
        summary.loc[best_idx.values, "best"] = True
        results = _mark_best(stack(curves, first=True), summary, ids)
        front = ids + ["seed", "n_params", "best"]
        self.task_, self.summary_ = self._task, summary
        self.results_ = results[front + [c for c in results.columns if c not in front]]
        self.n_params_ = {model: int(n) for model, n in
                          summary.groupby("model", sort=False)["n_params"].first().items()}
        counts = np.array(list(self.n_params_.values()), dtype=float)
        spread, limit = (counts.max() - counts.min()) / counts.min(), _PARAM_SPREAD[self._task]
        if spread > limit:
            warnings.warn(
                f"DeepShallowStudy: the models' parameter counts differ by {spread:.1%} "
                f"(more than {limit:.0%}): {self.n_params_}.", UserWarning, stacklevel=5)
        self.__dict__.pop("predictions_", None)
        if predictions:
            self.predictions_ = _mark_best(pd.concat(predictions, ignore_index=True), summary,
                                           ids)[ids + ["best", "x", "y_pred", "y_true"]]

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
            **shortcut_settings(self, self._shortcuts),
            "n_restarts": self.n_restarts,
            "plateau stop": (None if self.plateau_patience is None else
                             f"train_loss not {self.plateau_tol:g} (relative) lower in "
                             f"{self.plateau_patience} epochs"),
            "random_state": describe_value(self.random_state),
            "seeds": self._seeds,
            "data": {name: {**data_sizes(d), "input_shape": tuple(d.X.shape[1:])}
                     for name, d in datasets.items()},
        }
