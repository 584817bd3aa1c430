"""HW1-3 flatness, part 1: loss and accuracy along the line between two trained models."""

from __future__ import annotations

from numbers import Real

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import StrOptions

from ..parameters import count_params
from ..seeding import as_seed, spawn_seeds
from ._base import Study, prepare_data, shortcut_settings, train_run
from ._collect import (CONTROL_CONSTRAINTS, TEST_SIZE, aggregate_seeds,
                       check_controls, completed, control_outcome, control_settings,
                       controlled_estimator, data_sizes, is_positive_int, model_settings,
                       run_seeds, stack)
from ._defaults import default_flatness_classifier

__all__ = ["InterpolationStudy", "PAIR_KINDS"]

#: The estimator parameter the two end points of a pair differ in, naming the pair.
PAIR_KINDS = ("batch_size", "lr")

_KEYS = ["control", "pair", "seed"]
_COLUMNS = [*_KEYS, "alpha", "split", "loss", "accuracy"]
_MEASURES = ["loss_1", "loss_2", "accuracy_1", "accuracy_2", "loss_barrier"]


def _train_endpoint(estimator, X, y, seed):
    """Train ``estimator`` (the pair's setting set) with ``seed`` (a sweep task)."""
    return train_run(estimator, X, y, seed=seed)


def _evaluate_pair(estimator1, estimator2, alphas, recompute_batchnorm, X, y, X_test, y_test,
                   labels):
    """Evaluate the line between two trained end points (a sweep task); ``labels`` as columns."""
    from ..transformers import ParameterInterpolator

    interp = ParameterInterpolator(estimator1, estimator2, alphas=alphas,
                                   recompute_batchnorm=recompute_batchnorm).fit()
    return {"frame": interp.evaluate(X, y, X_test, y_test).assign(**labels),
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
    every α in ``alphas`` on the training and held-out data.  Each pair is
    trained ``n_seeds`` times (replicate ``r`` pairs the ``r``-th seed of each
    end point), under each of ``controls``: ``"epochs"`` (the estimator's
    epochs: a large-batch end point takes fewer steps) and ``"train_loss"``
    (each end point trains until its train loss reaches ``target_loss``).

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
    {shortcuts}
    {test_size}
    recompute_batchnorm : bool, default=True
        Recompute the interpolated models' BatchNorm statistics on the training data.
    {n_seeds}
    {controls}
    random_state : int, RandomState or None, default=0
        Seeds the split and the runs.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (control, pair, replicate, alpha, split): control, pair, seed
        (model 1's), alpha, split, loss, accuracy
        (:class:`~hw1sk.transformers.ParameterInterpolator`).
    seed_summary_ : pandas.DataFrame
        Per (control, pair, seed, split): loss_1, loss_2, accuracy_1, accuracy_2
        (end points), loss_barrier (highest loss for α in [0, 1] minus the higher
        end point's; NaN unless α = 0 and 1 are on the grid); n_epochs_1/_2,
        reached_epoch_1/_2, target_reached (both; None under "epochs").
    summary_ : pandas.DataFrame
        Per (control, pair, split), over the seeds: the mean of each measure,
        {seed_spread}; {control_means}.
    estimators_ : dict
        ``(pair, endpoint) -> fitted estimator`` (endpoint 1 or 2) of the first
        control and replicate; ``all_estimators_``: ``(control, pair, endpoint, seed)``.
    interpolators_ : dict
        ``pair -> fitted ParameterInterpolator`` of the first control and replicate.
    histories_ : pandas.DataFrame
        Training histories, with ``control``, ``pair``, ``endpoint``, ``seed`` columns.
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
    ((6, 7), ['control', 'pair', 'seed', 'alpha', 'split', 'loss', 'accuracy'])
    >>> [(net.batch_size, net.lr) for net in study.estimators_.values()]
    [(64, 0.001), (64, 0.01)]
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        "pairs": [StrOptions(set(PAIR_KINDS)), "array-like"],
        **dict.fromkeys(("batch_sizes", "lrs"), ["array-like"]),
        "same_init": ["boolean"],
        "alphas": ["array-like", None],
        "test_size": TEST_SIZE,
        "recompute_batchnorm": ["boolean"],
        **CONTROL_CONSTRAINTS,
    }
    _run_function = staticmethod(_train_endpoint)
    _shortcuts = ("max_epochs",)
    _doc_values = {"runs": "Replicates of every pair"}

    def __init__(self, estimator=None, pairs=PAIR_KINDS, batch_sizes=(64, 1024),
                 lrs=(1e-3, 1e-2), same_init=False, alphas=None, max_epochs=None,
                 test_size=0.2, recompute_batchnorm=True, n_seeds=1, controls=("epochs",),
                 target_loss=None, max_epochs_cap=None, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _prepare_data(self, X, y, X_test, y_test):
        # the split seed, then two run seeds per pair kind (whichever pairs run)
        self._seeds = spawn_seeds(as_seed(self.random_state), 1 + 2 * len(PAIR_KINDS))
        return prepare_data(X, y, X_test, y_test, test_size=self.test_size,
                            seeds=(self._seeds[0], None, None))

    def _default_estimator(self, data):
        return default_flatness_classifier()

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
        for control in check_controls(self):
            for pair, values in pairs.items():
                k = 1 + 2 * PAIR_KINDS.index(pair)  # seeds by pair kind, whichever pairs run
                for end, value in enumerate(values):
                    # one estimator per end point: its seeds can train together
                    est = controlled_estimator(template, control, self, **{pair: value})
                    seeds = run_seeds(self._seeds[k if self.same_init else k + end],
                                      self.n_seeds)
                    tasks += [({"control": control, "pair": pair, "endpoint": end + 1,
                                "replicate": r, "batch_size": est.batch_size, "lr": est.lr,
                                "seed": seed}, {"estimator": est, "X": data.X, "y": data.y,
                                                "seed": seed})
                              for r, seed in enumerate(seeds)]
        return tasks

    def _collect(self, data, template, labels, runs):
        done = completed(labels, runs)
        fitted = {(lab["control"], lab["pair"], lab["endpoint"], lab["replicate"]): (lab, run)
                  for lab, run in done}
        self.all_estimators_ = {(c, p, e, lab["seed"]): run["estimator"]
                                for (c, p, e, _), (lab, run) in fitted.items()}
        first = labels[0]["control"] if labels else None
        self.estimators_ = {(p, e): run["estimator"] for (c, p, e, r), (_, run) in fitted.items()
                            if c == first and r == 0}
        self.histories_ = stack([({k: lab[k] for k in ("control", "pair", "endpoint", "seed")},
                                  run["history"]) for lab, run in done])
        evaluated, outcomes = self._evaluate(data, fitted)
        self.interpolators_ = {t["labels"]["pair"]: e["interpolator"] for t, e in evaluated
                               if t["labels"]["control"] == first and t["replicate"] == 0}
        frames = [e["frame"] for _, e in evaluated]
        self.results_ = (pd.concat(frames, ignore_index=True)[_COLUMNS] if frames
                         else pd.DataFrame(columns=_COLUMNS))
        rows = [{**dict(zip(_KEYS, key[:1] + key[1:2] + key[3:])), "split": key[2],
                 **_summary_row(g), **outcomes[key[:2] + key[3:]]}
                for key, g in self.results_.groupby(["control", "pair", "split", "seed"],
                                                    sort=False)]
        self.seed_summary_ = pd.DataFrame(rows, columns=[*_KEYS, "split", *_MEASURES,
                                                         *_OUTCOME_COLUMNS])
        self.summary_ = aggregate_seeds(self.seed_summary_, ["control", "pair", "split"],
                                        _MEASURES)
        self._endpoints = labels

    def _evaluate(self, data, fitted):
        """Evaluate the line of every (control, pair, replicate) with both end points trained.

        Returns the ``(task, evaluation)`` pairs and the end points' training
        outcomes by ``(control, pair, seed of model 1)``.
        """
        tasks, replicates, outcomes = [], [], {}
        for (c, p, e, r), (lab, run) in fitted.items():
            other = fitted.get((c, p, 2, r))
            if e != 1 or other is None:
                continue  # a diverged end point is in diverged_
            (o1, o2) = (control_outcome(x["estimator"], c) for x in (run, other[1]))
            outcomes[(c, p, lab["seed"])] = {
                "n_epochs_1": o1["n_epochs"], "n_epochs_2": o2["n_epochs"],
                "reached_epoch_1": o1["reached_epoch"], "reached_epoch_2": o2["reached_epoch"],
                "target_reached": (None if o1["target_reached"] is None else
                                   bool(o1["target_reached"] and o2["target_reached"]))}
            tasks.append({"estimator1": run["estimator"], "estimator2": other[1]["estimator"],
                          "alphas": self._alphas, "recompute_batchnorm": self.recompute_batchnorm,
                          "X": data.X, "y": data.y, "X_test": data.X_test, "y_test": data.y_test,
                          "labels": {"control": c, "pair": p, "seed": lab["seed"]}})
            replicates.append(r)
        diverged = self.diverged_  # _run_tasks resets it; evaluations cannot diverge
        evaluated = self._run_tasks(_evaluate_pair, tasks, desc="InterpolationStudy eval")
        self.diverged_ = diverged
        return ([({**t, "replicate": r}, ev) for t, r, ev in zip(tasks, replicates, evaluated)],
                outcomes)

    def _settings(self, data, template):
        fitted = next(iter(self.estimators_.values()), None)
        model = {} if fitted is None else model_settings(
            fitted.module_, count_params(fitted.module_, trainable_only=False))
        ends = {}
        for e in self._endpoints:
            if e["control"] == self._endpoints[0]["control"]:
                key = f"{e['pair']} pair, model {e['endpoint']}"
                seeds = ends.get(key, (None, []))[1] + [e["seed"]]
                ends[key] = (f"batch size {e['batch_size']}, lr {e['lr']:g}", seeds)
        ends = {k: f"{v}, seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}"
                for k, (v, s) in ends.items()}
        alphas = self._alphas
        return {**model, "varied": ", ".join(dict.fromkeys(e["pair"] for e in self._endpoints)),
                **ends, "same_init": bool(self.same_init),
                **shortcut_settings(self, self._shortcuts), **data_sizes(data),
                **control_settings(self, template),
                "alphas": f"{alphas.size} points in [{alphas.min():g}, {alphas.max():g}]",
                "random_state": self.random_state}


_OUTCOME_COLUMNS = ["n_epochs_1", "n_epochs_2", "reached_epoch_1", "reached_epoch_2",
                    "target_reached"]


def _summary_row(g):
    """End-point scores and the loss barrier between them, of one (control, pair, split, seed)."""
    at = g.set_index("alpha")
    if not (0.0 in at.index and 1.0 in at.index):
        return dict.fromkeys(_MEASURES, np.nan)
    l1, l2 = float(at.loc[0.0, "loss"]), float(at.loc[1.0, "loss"])
    between = g[(g["alpha"] >= 0) & (g["alpha"] <= 1)]["loss"]
    return {"loss_1": l1, "loss_2": l2, "accuracy_1": float(at.loc[0.0, "accuracy"]),
            "accuracy_2": float(at.loc[1.0, "accuracy"]),
            "loss_barrier": float(between.max() - max(l1, l2))}
