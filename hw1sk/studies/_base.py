"""What every study shares: the Study contract, data preparation, one training run.

A study is a scikit-learn meta-estimator whose :meth:`Study.fit` (owned by
the base) validates its parameters, prepares the data
(:func:`prepare_data`), clones the given estimator, lists one task per run,
runs them through :func:`hw1sk.sweep.run_sweep` and collects the results;
see :class:`Study` for the hooks a study implements.
"""

from __future__ import annotations

import inspect
import numbers
import os
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, Options, StrOptions
from sklearn.utils.validation import check_is_fitted, check_X_y

from ..evaluation import evaluate_estimator
from ..parameters import count_params
from ..seeding import spawn_seeds
from ._docs import compose, shortcut_values
from ._seed_groups import replays_callbacks, run_seed_group, seed_groups, stops_early


def describe_value(value):
    """A short, table-friendly description of a task setting (arrays are summarised)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"array{tuple(value.shape)}"
    if isinstance(value, BaseEstimator):
        return type(value).__name__
    if isinstance(value, (str, numbers.Number, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list)) and all(isinstance(v, (numbers.Number, str)) for v in value):
        return str(tuple(value))
    return type(value).__name__


#: Estimator parameters recorded by :func:`describe_estimator`, besides every routed
#: ``module__``, ``criterion__``, ``optimizer__`` and ``iterator_train__`` argument.
_TRAINING_PARAMS = ("module", "criterion", "optimizer", "lr", "max_epochs", "batch_size",
                    "iterator_train", "train_split", "warm_start", "device",
                    "divergence_factor", "classes")
_ROUTED = ("module__", "criterion__", "optimizer__", "iterator_train__")


def _name_of(value):
    """A class, function or partial by its name; anything else as :func:`describe_value`."""
    if isinstance(value, type) or callable(value) and hasattr(value, "__qualname__"):
        return getattr(value, "__qualname__", getattr(value, "__name__", str(value)))
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    return describe_value(value)


def describe_estimator(estimator):
    """Every training setting of an estimator, as a flat dict of plain values.

    Its class; module, criterion and optimizer by name, with every argument
    routed to them (``module__hidden``, ``optimizer__weight_decay``, ...);
    lr, epochs, batch size, device and the names of its callbacks.

    Examples
    --------
    >>> import torch
    >>> from hw1sk.estimators import NeuralClassifier
    >>> from hw1sk.studies._base import describe_estimator
    >>> d = describe_estimator(NeuralClassifier(optimizer=torch.optim.SGD,
    ...                                         optimizer__momentum=0.9, lr=0.1))
    >>> d["optimizer"], d["optimizer__momentum"], d["lr"]
    ('SGD', 0.9, 0.1)
    """
    params = estimator.get_params(deep=False)
    out = {"estimator": type(estimator).__name__}
    for key in sorted(params):
        if key in _TRAINING_PARAMS or key.startswith(_ROUTED):
            value = params[key]
            out[key] = (_name_of(value) if key in ("module", "criterion", "optimizer",
                                                   "iterator_train", "train_split")
                        else describe_value(value))
    callbacks = params.get("callbacks") or []
    out["callbacks"] = ([c[0] if isinstance(c, tuple) else type(c).__name__ for c in callbacks]
                        or None)
    return out


#: Constraints of the training shortcuts a study may offer: study parameters that,
#: when set (not None), replace the estimator's setting of the same name (``hidden``:
#: its ``module__hidden``); None keeps the estimator's.
SHORTCUT_CONSTRAINTS = {
    "hidden": ["array-like", None],
    "lr": [Interval(Real, 0, None, closed="neither"), None],
    "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
    "batch_size": [Interval(Integral, 1, None, closed="left"), Options(Integral, {-1}), None],
}


def _check_hidden(hidden):
    if hidden is not None and (
            isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__")
            or not all(isinstance(w, Integral) and not isinstance(w, bool) and w >= 1
                       for w in hidden)):
        raise ValueError(f"hidden must be a sequence of positive integers or None, got "
                         f"{hidden!r}.")
    return None if hidden is None else tuple(int(w) for w in hidden)


def apply_shortcuts(estimator, study, names=("hidden", "lr", "max_epochs", "batch_size")):
    """``estimator`` (changed in place) with the shortcuts among ``names`` that ``study`` sets.

    A shortcut set (not None) replaces the estimator's setting of that name
    (``hidden``: ``module__hidden``); None keeps the estimator's own.
    """
    values = {name: getattr(study, name) for name in names}
    if "hidden" in values:
        values["module__hidden"] = _check_hidden(values.pop("hidden"))
    return estimator.set_params(**{k: v for k, v in values.items() if v is not None})


def shortcut_settings(study, names=("hidden", "lr", "max_epochs", "batch_size")):
    """The shortcuts of ``study`` for its ``settings_``: ``{"lr (set by the study)": ...}``.

    None for a shortcut the study leaves to the estimator.
    """
    return {f"{name} (set by the study)": describe_value(getattr(study, name))
            for name in names}


@dataclass
class StudyData:
    """The checked data of a study: training and held-out arrays (labels as given)."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


def subset_indices(n_available, n_wanted, random_state, name="n_samples"):
    """Sorted indices of ``n_wanted`` of ``n_available`` samples, drawn without replacement.

    All of them when ``n_wanted`` is None; a ``ValueError`` naming ``name``
    when more are wanted than there are.
    """
    if n_wanted is None:
        return np.arange(n_available)
    if n_wanted > n_available:
        raise ValueError(f"{name}={n_wanted} is larger than the {n_available} samples available.")
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n_available, size=n_wanted, replace=False))


def prepare_data(X, y, X_test=None, y_test=None, *, test_size=None, n_train=None, n_test=None,
                 random_state=0, seeds=None):
    """The one data preparation of the studies: check, split, subsample; a :class:`StudyData`.

    ``X, y`` are checked by ``check_X_y`` (any sample shape); labels stay as
    given (each classifier encodes them through its ``classes_``).  Without
    ``X_test``, a held-out part of ``test_size`` (else ``n_test``) samples is
    split off by ``train_test_split`` when either is set.  Then ``n_train``
    training and ``n_test`` held-out samples are drawn without replacement
    (all when None), in the order of the data.  ``random_state`` seeds the
    split and the two subsets (three spawned seeds), unless ``seeds`` gives
    those three seeds.
    """
    X, y = check_X_y(X, y, allow_nd=True, y_numeric=False)
    if (X_test is None) != (y_test is None):
        raise ValueError("Pass both X_test and y_test, or neither.")
    split_seed, train_seed, test_seed = (seeds if seeds is not None
                                         else spawn_seeds(random_state, 3))
    if X_test is None:
        size = test_size if test_size is not None else n_test
        if size is not None:
            if isinstance(size, Integral) and size >= len(X):
                raise ValueError(f"a held-out part of {size} samples leaves no training data: "
                                 f"X has {len(X)} samples.")
            X, X_test, y, y_test = train_test_split(X, y, test_size=size,
                                                    random_state=split_seed)
            n_test = None if test_size is None else n_test  # the split has the size asked
    else:
        X_test, y_test = check_X_y(X_test, y_test, allow_nd=True)
        if X_test.shape[1:] != X.shape[1:]:
            raise ValueError(f"X_test has samples of shape {X_test.shape[1:]}, but X has "
                             f"{X.shape[1:]}.")
    train = subset_indices(len(X), n_train, train_seed, "n_train")
    X, y = X[train], y[train]
    if X_test is not None:
        test = subset_indices(len(X_test), n_test, test_seed, "n_test")
        X_test, y_test = X_test[test], y_test[test]
    return StudyData(X, y, X_test, y_test)


def with_callbacks(estimator, *named_callbacks):
    """``estimator`` with extra ``(name, callback)`` pairs appended to its callbacks."""
    existing = list(estimator.callbacks or [])
    return estimator.set_params(callbacks=existing + list(named_callbacks))


def with_held_out_score(estimator, X_test, y_test, every=1):
    """``estimator`` scoring ``(X_test, y_test)`` every ``every`` epochs (``test_loss``, ``test_acc``)."""
    from ..evaluation import HeldOutScore

    return with_callbacks(estimator, ("test_score", HeldOutScore(X_test, y_test, name="test",
                                                                 every=every)))


def train_run(estimator, X, y, X_test=None, y_test=None, seed=0, test_every=1,
              keep_estimator=True):
    """Fit a clone of ``estimator`` with ``random_state=seed`` and score it (one study run).

    Held-out data, when given, are scored every ``test_every`` epochs into
    the history (``test_loss``, ``test_acc``).  Returns a dict: ``history``
    (DataFrame), ``train`` and ``test`` scores (dicts of loss and accuracy),
    ``n_params``, and the fitted ``estimator`` when ``keep_estimator``.
    Raises :class:`hw1sk.sweep.RunDiverged` when the fit diverged.
    """
    from ..sweep import RunDiverged
    from ._seed_groups import take_prefitted

    est = take_prefitted(estimator, X, y, X_test, seed)  # trained with its seed group
    if est is None:
        est = clone(estimator).set_params(random_state=int(seed))
        if X_test is not None:
            with_held_out_score(est, X_test, y_test, test_every)
        est.fit(X, y)
    history = est.history_
    if getattr(est, "diverged_", False):
        raise RunDiverged(
            getattr(est, "divergence_reason_", None)
            or f"training loss became non-finite at epoch {len(history)}",
            info={"history": history},
        )
    run = {
        "history": history,
        "train": evaluate_estimator(est, X, y),
        "test": evaluate_estimator(est, X_test, y_test) if X_test is not None else None,
        "n_params": count_params(est.module_),
    }
    if keep_estimator:
        run["estimator"] = est
    return run


#: Torch/BLAS threads of every training run of a study, whatever ``n_jobs``.  Matrix
#: products of large layers round differently on 1 and 2 threads, and over tens of epochs
#: the runs drift apart (the random-label losses by up to 100%), so a fixed count keeps
#: a study's numbers independent of ``n_jobs``; the cores are used by running runs in
#: parallel (``n_jobs``) instead.
THREADS_PER_RUN = 1

#: Smallest group of runs differing only in their seed that ``vectorize="auto"``
#: trains together.
AUTO_MIN_SEEDS = 3
#: Largest group it trains together: a killed sweep loses at most this many runs.
AUTO_MAX_SEEDS = 32


class Study(BaseEstimator):
    """Base class of the HW1 studies: the shared parameters and ``fit`` (not for direct use).

    Modelled on scikit-learn's ``BaseSearchCV``: the base declares the
    parameters every study shares (``estimator``, ``n_jobs``, ``backend``,
    ``scheduler``, ``cache_dir``, ``progress``, ``device``,
    ``random_state``) with scikit-learn parameter constraints, and owns
    :meth:`fit`::

        validate -> prepare the data -> template estimator -> tasks
                 -> run_sweep -> collect -> settings_

    A study writes only its hooks:

    * ``_parameter_constraints``: the base's, plus its own parameters;
    * ``_default_estimator(data)``: the estimator used when ``estimator``
      is None;
    * ``_tasks(data, template)``: a list of ``(label, task)`` pairs, one
      per run; ``label`` is a dict of plain values naming the run (it
      labels ``diverged_``), ``task`` the keyword arguments of the run;
    * ``_run_function``: the module-level function that performs one run
      (it pickles into joblib and dask workers), as a ``staticmethod``;
    * ``_collect(data, template, labels, runs)``: sets ``results_`` and
      whatever else the study offers (``runs`` holds None for a diverged
      run);
    * ``_settings(data, template)``: what the study itself varied, for
      ``settings_`` (the template estimator is described in full by
      :func:`describe_estimator`);
    * ``_shortcuts``: the names of its training shortcuts (see
      :data:`SHORTCUT_CONSTRAINTS`), constrained, documented (the ``shortcuts``
      text of :mod:`hw1sk.studies._docs`) and applied by the base.

    ``_prepare_data(X, y, X_test, y_test)`` may be overridden; by default it
    is :func:`prepare_data` with the study's ``test_size`` (if it has one).

    A study's ``__init__`` takes its own parameters and ``**shared``::

        def __init__(self, estimator=None, *, batch_sizes=(16, 64), **shared):
            super().__init__(estimator, **shared)
            self._store(locals())

    and its signature is completed with the shared parameters below.  Its
    docstring is composed with the shared texts of :mod:`hw1sk.studies._docs`
    (a placeholder names each, such as ``test_size`` in braces; their fields
    are filled from ``_doc_values``).

    The estimator given is the single source of truth for training: a study
    changes only what it exists to vary, and the seed, and only as its own
    parameters say.  Every run trains on :data:`THREADS_PER_RUN` threads, so
    the same ``random_state`` gives the same numbers whatever ``n_jobs`` and
    backend.

    Parameters
    ----------
    estimator : skorch-style estimator or None, default=None
        Unfitted template of the runs, cloned and never modified; None: the
        study's default estimator.
    random_state : int, RandomState or None, default=0
        Master seed of everything random in the study (what it seeds is
        listed by each study).
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "get_params"]), None],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), Options(Integral, {-1})],
        "backend": [StrOptions({"loky", "threading", "sequential", "dask"})],
        "scheduler": "no_validation",  # an address, a client or a cluster
        "cache_dir": [str, os.PathLike, None],
        "progress": ["boolean"],
        "device": [str, None],
        "random_state": ["random_state"],
        "vectorize": ["boolean", StrOptions({"auto"})],
    }

    #: Whether the runs score their held-out data during training (``train_run``
    #: with ``X_test``), so that seed groups are trained with that scoring.
    _held_out_in_training = False

    _run_function = None
    _shortcuts = ()
    _doc_values = {}

    def __init_subclass__(cls, **kwargs):
        """Complete a study: its signature, its shortcuts' constraints, its docstring.

        scikit-learn reads an estimator's parameters from its ``__init__``
        signature; a study lists only its own parameters and passes the shared
        ones on as ``**shared``, so the signature (what ``get_params``,
        ``clone``, ``repr`` and ``help`` see) is completed here with the
        base's keyword-only parameters.  The docstring gets the shared texts
        (:func:`hw1sk.studies._docs.compose`).
        """
        super().__init_subclass__(**kwargs)
        cls.__doc__ = compose(cls.__dict__.get("__doc__"),
                              {**shortcut_values(cls._shortcuts), **cls._doc_values})
        if "_shortcuts" in cls.__dict__:
            cls._parameter_constraints = {
                **cls._parameter_constraints,
                **{name: SHORTCUT_CONSTRAINTS[name] for name in cls._shortcuts}}
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        own = inspect.signature(init)
        params = [p for p in own.parameters.values() if p.kind is not p.VAR_KEYWORD]
        if len(params) == len(own.parameters):
            return  # a complete signature of its own
        names = {p.name for p in params}
        shared = [p.replace(kind=p.KEYWORD_ONLY)
                  for p in inspect.signature(Study.__init__).parameters.values()
                  if p.name not in names]
        init.__signature__ = own.replace(parameters=params + shared)

    def _store(self, params):
        """Store a study's own ``__init__`` arguments (its ``locals()``) under their names."""
        for name, value in params.items():
            if name not in ("self", "shared", "__class__"):
                setattr(self, name, value)

    def __init__(self, estimator=None, *, n_jobs=1, backend="loky", scheduler=None,
                 cache_dir=None, progress=False, device=None, random_state=0,
                 vectorize="auto"):
        self.estimator = estimator
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.cache_dir = cache_dir
        self.progress = progress
        self.device = device
        self.random_state = random_state
        self.vectorize = vectorize

    def fit(self, X, y=None, X_test=None, y_test=None):
        """Run the study on ``(X, y)``; held-out data are split off unless given.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
        y : array-like of shape (n_samples,)
            Targets: any class labels (``{3, 7}``, strings), encoded by each
            fitted classifier through its ``classes_``, or float values.
        X_test, y_test : array-like, optional
            Held-out data.

        Returns
        -------
        self
        """
        self._validate_params()
        return self._fit_prepared(self._prepare_data(X, y, X_test, y_test))

    def _fit_prepared(self, data):
        """:meth:`fit` after validation and data preparation (``data`` from ``_prepare_data``)."""
        template = self._template_estimator(data)
        pairs = self._tasks(data, template)
        labels, tasks = [label for label, _ in pairs], [task for _, task in pairs]
        runs = self._run_tasks(type(self)._run_function, tasks, labels=labels)
        self._collect(data, template, labels, runs)
        self.settings_ = {**describe_estimator(template), **self._settings(data, template)}
        if self.device is not None:
            self.settings_["device"] = self.device
        return self

    # ------------------------------------------------------------------ hooks
    def _prepare_data(self, X, y, X_test, y_test):
        return prepare_data(X, y, X_test, y_test, test_size=getattr(self, "test_size", None),
                            random_state=self.random_state)

    def _default_estimator(self, data):
        raise NotImplementedError

    def _tasks(self, data, template):
        raise NotImplementedError

    def _collect(self, data, template, labels, runs):
        raise NotImplementedError

    def _settings(self, data, template):
        return {}

    # ---------------------------------------------------------------- helpers
    def _template_estimator(self, data):
        """A clone of ``estimator`` (or of the default one), on ``device`` when that is set,
        with the study's shortcuts (``_shortcuts``) applied."""
        est = clone(self.estimator) if self.estimator is not None else self._default_estimator(data)
        if self.device is not None:
            est.set_params(device=self.device)
        return apply_shortcuts(est, self, self._shortcuts)

    def _run_tasks(self, func, tasks, desc=None, labels=None):
        """Run ``func(**task)`` for every task; record diverged runs in ``diverged_``.

        ``labels`` (one dict per task) name the diverged runs; without them
        the task's own values do (arrays summarised).  Returns the results
        in task order, with ``None`` for diverged runs.
        """
        from ..sweep import DivergedRun

        results = [None] * len(tasks)
        groups = self._seed_groups(tasks) if func is type(self)._run_function else []
        singles = [i for i in range(len(tasks)) if not any(i in g for g in groups)]
        for i, result in zip(singles, self._sweep(func, [tasks[i] for i in singles], desc)):
            results[i] = result
        group_tasks = [{"run_function": func, "tasks": [tasks[i] for i in g],
                        "vectorize": self.vectorize, "held_out": self._held_out_in_training}
                       for g in groups]
        for g, group in zip(groups, self._sweep(run_seed_group, group_tasks, desc)):
            for i, result in zip(g, group):
                results[i] = result
        diverged, out = [], []
        names = labels if labels is not None else [
            {k: describe_value(v) for k, v in task.items()} for task in tasks]
        for name, result in zip(names, results):
            if isinstance(result, DivergedRun):
                diverged.append({**name, "message": result.message})
                out.append(None)
            else:
                out.append(result)
        self.diverged_ = pd.DataFrame(diverged)
        if diverged:
            warnings.warn(
                f"{type(self).__name__}: {len(diverged)} of {len(tasks)} runs diverged "
                "(non-finite loss, or far above the starting loss: see the estimator's "
                "divergence_factor); they are listed in diverged_ and left out of the results.",
                RuntimeWarning,
                stacklevel=3,
            )
        return out

    def _sweep(self, func, tasks, desc):
        from ..sweep import run_sweep

        if not tasks:
            return []
        return run_sweep(func, tasks, n_jobs=self.n_jobs, backend=self.backend,
                         scheduler=self.scheduler, cache_dir=self.cache_dir,
                         progress=self.progress, desc=desc or type(self).__name__,
                         threads_per_worker=THREADS_PER_RUN)

    def _seed_groups(self, tasks):
        """The groups of tasks trained together by :func:`run_seed_group` (``vectorize``).

        Tasks that differ only in their seed (:func:`seed_groups`), at least
        :data:`AUTO_MIN_SEEDS` of them with ``vectorize="auto"`` (two with
        True).  ``"auto"`` skips a group whose estimator has a callback the
        vectorized pass does not replay (:func:`replays_callbacks`: it would
        be fitted seed by seed in one task) or a plateau or target stop
        (:func:`stops_early`: the group would run as long as its slowest
        seed), and cuts each other one into the
        fewest contiguous pieces of at most :data:`AUTO_MAX_SEEDS` runs.  The pieces never depend on
        ``n_jobs``: batched products round differently for different numbers
        of seeds, and the same ``random_state`` must give the same numbers
        whatever ``n_jobs``.
        """
        if self.vectorize is False:
            return []
        least = AUTO_MIN_SEEDS if self.vectorize == "auto" else 2
        out = []
        for group in seed_groups(tasks):
            estimator = tasks[group[0]]["estimator"]
            if self.vectorize == "auto" and (not replays_callbacks(estimator)
                                             or stops_early(estimator)):
                continue  # seed by seed anyway, or held up by its slowest seed: n_jobs
            if len(group) >= least:
                pieces = -(-len(group) // AUTO_MAX_SEEDS) if self.vectorize == "auto" else 1
                out.extend([int(i) for i in p] for p in np.array_split(group, max(pieces, 1)))
        return out

    def _check_fitted(self):
        check_is_fitted(self, "results_")


Study.__doc__ = compose(Study.__doc__)
