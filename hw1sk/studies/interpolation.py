"""HW1-3 flatness, part 1: loss and accuracy along the line between two trained models."""

from __future__ import annotations

from numbers import Real

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils._param_validation import StrOptions

from ..parameters import count_params
from ..seeding import as_seed, spawn_seeds
from ._base import Study, prepare_data, train_run
from ._collect import (OPTIONAL_COUNT, TEST_SIZE, completed, data_sizes, is_positive_int,
                       model_settings, stack)
from ._defaults import default_flatness_classifier

__all__ = ["InterpolationStudy", "PAIR_KINDS"]

#: The estimator parameter the two end points of a pair differ in, naming the pair.
PAIR_KINDS = ("batch_size", "lr")

_COLUMNS = ["pair", "alpha", "split", "loss", "accuracy"]
_SUMMARY_COLUMNS = ["pair", "split", "loss_1", "loss_2", "accuracy_1", "accuracy_2",
                    "loss_barrier"]


def _train_endpoint(estimator, X, y, seed, pair, value):
    """Train ``estimator`` with its setting ``pair`` set to ``value`` (a sweep task)."""
    return train_run(clone(estimator).set_params(**{pair: value}), X, y, seed=seed)


def _evaluate_pair(estimator1, estimator2, alphas, recompute_batchnorm, X, y, X_test, y_test,
                   pair):
    """Evaluate the line between two trained end points (a sweep task)."""
    from ..transformers import ParameterInterpolator

    interp = ParameterInterpolator(estimator1, estimator2, alphas=alphas,
                                   recompute_batchnorm=recompute_batchnorm).fit()
    return {"frame": interp.evaluate(X, y, X_test, y_test).assign(pair=pair),
            "interpolator": interp}


def _pair_of(values, name, kind, valid, cast):
    """``values`` as a tuple of two valid values cast, or a ValueError naming ``name``."""
    values = tuple(np.asarray(values, dtype=object).ravel()) if np.ndim(values) else None
    if values is None or len(values) != 2 or not all(valid(v) for v in values):
        raise ValueError(f"{name} must be a pair of positive {kind}, got {values!r}.")
    return tuple(cast(v) for v in values)


class InterpolationStudy(Study):
    """Train two models that differ in one setting, evaluate the line between them.

    Pair ``"batch_size"`` trains the estimator with the two ``batch_sizes``, pair
    ``"lr"`` with the two ``lrs``; θ(α) = (1 − α) θ₁ + α θ₂ is then evaluated for
    every α in ``alphas`` on the training and held-out data.

    Parameters
    ----------
    estimator : NeuralClassifier, NeuralRegressor or None, default=None
        Trained as given but for the pair's setting, the seed and ``max_epochs``;
        None: :func:`~hw1sk.studies._defaults.default_flatness_classifier`.
    pairs : str or sequence of {"batch_size", "lr"}, default=("batch_size", "lr")
    batch_sizes, lrs : pair of int, pair of float, default=(64, 1024), (1e-3, 1e-2)
    same_init : bool, default=False
        Train both models of a pair with one seed (initial weights, shuffling).
    alphas : array-like, optional
        Default: 31 points evenly spaced in [-1, 2].
    max_epochs : int or None, default=None
        Epochs of every model, when set (equal epochs: fewer steps for big batches).
    test_size : float or int, default=0.2
        Held-out part of ``(X, y)`` when ``fit`` gets no ``X_test``.
    recompute_batchnorm : bool, default=True
        Recompute the interpolated models' BatchNorm statistics on the training data.
    random_state : int, RandomState or None, default=0
        Seeds the split and the runs.
    n_jobs, backend, scheduler, cache_dir, progress, device : see :class:`~hw1sk.studies._base.Study`.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (pair, alpha, split): pair, alpha, split, loss, accuracy
        (:class:`~hw1sk.transformers.ParameterInterpolator`).
    summary_ : pandas.DataFrame
        Per (pair, split): loss_1, loss_2, accuracy_1, accuracy_2 (end points) and
        loss_barrier (highest loss for α in [0, 1] minus the higher end point's);
        NaN unless α = 0 and 1 are on the grid.
    estimators_ : dict
        ``(pair, endpoint) -> fitted estimator``, endpoint 1 or 2.
    interpolators_ : dict
        ``pair -> fitted ParameterInterpolator``.
    histories_ : pandas.DataFrame
        Training histories, with ``pair`` and ``endpoint`` columns.
    settings_ : dict
    diverged_ : pandas.DataFrame
        Diverged runs; their pairs are left out of the results.

    See Also
    --------
    hw1sk.transformers.ParameterInterpolator
    hw1sk.plotting.flatness.plot_interpolation

    References
    ----------
    .. [1] Goodfellow, Vinyals, Saxe, "Qualitatively characterizing neural
       network optimization problems", ICLR 2015.
    .. [2] Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, "On Large-Batch
       Training for Deep Learning: Generalization Gap and Sharp Minima", ICLR 2017.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> from hw1sk.studies.interpolation import InterpolationStudy
    >>> X, y = make_blobs(200, n_features=5, centers=2, random_state=0)
    >>> study = InterpolationStudy(pairs="lr", max_epochs=2, alphas=[0, 0.5, 1],
    ...                            test_size=0.25).fit(X, y)
    >>> study.results_.shape, list(study.results_.columns)
    ((6, 5), ['pair', 'alpha', 'split', 'loss', 'accuracy'])
    >>> [(net.batch_size, net.lr) for net in study.estimators_.values()]
    [(64, 0.001), (64, 0.01)]
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        "pairs": [StrOptions(set(PAIR_KINDS)), "array-like"],
        **dict.fromkeys(("batch_sizes", "lrs"), ["array-like"]),
        "same_init": ["boolean"],
        "alphas": ["array-like", None],
        "max_epochs": OPTIONAL_COUNT,
        "test_size": TEST_SIZE,
        "recompute_batchnorm": ["boolean"],
    }
    _run_function = staticmethod(_train_endpoint)

    def __init__(self, estimator=None, pairs=PAIR_KINDS, batch_sizes=(64, 1024),
                 lrs=(1e-3, 1e-2), same_init=False, alphas=None, max_epochs=None,
                 test_size=0.2, recompute_batchnorm=True, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _prepare_data(self, X, y, X_test, y_test):
        # the split seed, then two run seeds per pair kind (whichever pairs run)
        self._seeds = spawn_seeds(as_seed(self.random_state), 1 + 2 * len(PAIR_KINDS))
        return prepare_data(X, y, X_test, y_test, test_size=self.test_size,
                            seeds=(self._seeds[0], None, None))

    def _default_estimator(self, data):
        return default_flatness_classifier()

    def _template_estimator(self, data):
        template = super()._template_estimator(data)
        if self.max_epochs is not None:
            template.set_params(max_epochs=self.max_epochs)
        return template

    def _checked_pairs(self):
        """``{pair: (value of end point 1, value of end point 2)}``, in the order of ``pairs``."""
        pairs = (self.pairs,) if isinstance(self.pairs, str) else tuple(
            np.asarray(self.pairs, dtype=object).ravel())
        if not pairs or any(p not in PAIR_KINDS for p in pairs) or len(set(pairs)) != len(pairs):
            raise ValueError(f"pairs must be a non-empty selection of {PAIR_KINDS} without "
                             f"repeats, got {self.pairs!r}.")
        values = {"batch_size": _pair_of(self.batch_sizes, "batch_sizes", "integers",
                                         is_positive_int, int),
                  "lr": _pair_of(self.lrs, "lrs", "numbers", lambda v: isinstance(v, Real)
                                 and not isinstance(v, bool) and np.isfinite(v) and v > 0, float)}
        return {pair: values[pair] for pair in pairs}

    def _tasks(self, data, template):
        from ..transformers import _check_alphas

        pairs = self._checked_pairs()
        self._alphas = _check_alphas(self.alphas)
        tasks = []
        for pair, values in pairs.items():
            k = 1 + 2 * PAIR_KINDS.index(pair)  # seeds by pair kind, whichever pairs run
            for end, value in enumerate(values):
                seed = self._seeds[k if self.same_init else k + end]
                label = {"pair": pair, "endpoint": end + 1, "batch_size": template.batch_size,
                         "lr": template.lr, pair: value, "seed": seed}
                tasks.append((label, {"estimator": template, "X": data.X, "y": data.y,
                                      "seed": seed, "pair": pair, "value": value}))
        return tasks

    def _collect(self, data, template, labels, runs):
        done = completed(labels, runs)
        self.estimators_ = {(lab["pair"], lab["endpoint"]): run["estimator"] for lab, run in done}
        self.histories_ = stack([({"pair": lab["pair"], "endpoint": lab["endpoint"]},
                                  run["history"]) for lab, run in done])
        ends = {pair: [self.estimators_.get((pair, end)) for end in (1, 2)]
                for pair in dict.fromkeys(label["pair"] for label in labels)}
        # one task per pair with both end points (a diverged one is in diverged_)
        eval_tasks = [{"estimator1": e1, "estimator2": e2, "alphas": self._alphas,
                       "recompute_batchnorm": self.recompute_batchnorm, "X": data.X, "y": data.y,
                       "X_test": data.X_test, "y_test": data.y_test, "pair": pair}
                      for pair, (e1, e2) in ends.items() if e1 is not None and e2 is not None]
        diverged = self.diverged_  # _run_tasks resets it; evaluations cannot diverge
        evaluated = self._run_tasks(_evaluate_pair, eval_tasks, desc="InterpolationStudy eval")
        self.diverged_ = diverged
        self.interpolators_ = {t["pair"]: e["interpolator"] for t, e in zip(eval_tasks, evaluated)}
        frames = [e["frame"] for e in evaluated]
        self.results_ = (pd.concat(frames, ignore_index=True)[_COLUMNS] if frames
                         else pd.DataFrame(columns=_COLUMNS))
        self.summary_ = pd.DataFrame([_summary_row(pair, split, g) for (pair, split), g in
                                      self.results_.groupby(["pair", "split"], sort=False)],
                                     columns=_SUMMARY_COLUMNS)
        self._endpoints = labels

    def _settings(self, data, template):
        fitted = next(iter(self.estimators_.values()), None)
        model = {} if fitted is None else model_settings(
            fitted.module_, count_params(fitted.module_, trainable_only=False))
        ends = {f"{e['pair']} pair, model {e['endpoint']}":
                f"batch size {e['batch_size']}, lr {e['lr']:g}, seed {e['seed']}"
                for e in self._endpoints}
        alphas = self._alphas
        return {**model, "varied": ", ".join(dict.fromkeys(e["pair"] for e in self._endpoints)),
                **ends, "same_init": bool(self.same_init),
                "max_epochs (set by the study)": self.max_epochs, **data_sizes(data),
                "alphas": f"{alphas.size} points in [{alphas.min():g}, {alphas.max():g}]",
                "random_state": self.random_state}


def _summary_row(pair, split, g):
    """End-point scores and the loss barrier between them, of one (pair, split)."""
    at = g.set_index("alpha")
    if not (0.0 in at.index and 1.0 in at.index):
        return {"pair": pair, "split": split, **dict.fromkeys(_SUMMARY_COLUMNS[2:], np.nan)}
    l1, l2 = float(at.loc[0.0, "loss"]), float(at.loc[1.0, "loss"])
    between = g[(g["alpha"] >= 0) & (g["alpha"] <= 1)]["loss"]
    return {"pair": pair, "split": split, "loss_1": l1, "loss_2": l2,
            "accuracy_1": float(at.loc[0.0, "accuracy"]),
            "accuracy_2": float(at.loc[1.0, "accuracy"]),
            "loss_barrier": float(between.max() - max(l1, l2))}
