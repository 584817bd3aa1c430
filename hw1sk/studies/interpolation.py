"""HW1-3 flatness, part 1: loss and accuracy along the line between two trained models."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, StrOptions

from ..seeding import as_seed, spawn_seeds
from ._base import Study, prepare_data, train_run
from ._defaults import default_flatness_classifier, describe_module

__all__ = ["InterpolationStudy", "PAIR_KINDS"]

#: The two ways the end points of an interpolation may differ: each pair is named after
#: the one estimator parameter its two end points differ in.
PAIR_KINDS = ("batch_size", "lr")

_COLUMNS = ["pair", "alpha", "split", "loss", "accuracy"]


def _train_endpoint(estimator, X, y, seed, pair, value):
    """Train one end point: ``estimator`` with its setting ``pair`` set to ``value``.

    A module-level sweep task; every other setting of ``estimator`` is used as given.
    """
    return train_run(clone(estimator).set_params(**{pair: value}), X, y, seed=seed,
                     keep_estimator=True)


def _evaluate_pair(estimator1, estimator2, alphas, recompute_batchnorm, X, y, X_test, y_test,
                   pair):
    """Evaluate the line between two trained end points (a module-level sweep task)."""
    from ..transformers import ParameterInterpolator

    interp = ParameterInterpolator(estimator1, estimator2, alphas=alphas,
                                   recompute_batchnorm=recompute_batchnorm).fit()
    frame = interp.evaluate(X, y, X_test, y_test).assign(pair=pair)
    return {"frame": frame, "interpolator": interp}


def _pair_of(values, name, kind, valid):
    """``values`` as a tuple of two ``kind`` values, or a ValueError naming ``name``."""
    values = tuple(np.asarray(values, dtype=object).ravel()) if np.ndim(values) else None
    if values is None or len(values) != 2 or not all(valid(v) for v in values):
        raise ValueError(f"{name} must be a pair of positive {kind}, got {values!r}.")
    return values


def _is_positive_int(value):
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


def _is_positive_real(value):
    return (isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)
            and value > 0)


class InterpolationStudy(Study):
    """Train two models that differ in one setting, evaluate the line between them.

    Each pair in ``pairs`` is named after the one estimator setting its two
    models differ in: pair ``"batch_size"`` trains the estimator with batch
    sizes ``batch_sizes[0]`` and ``batch_sizes[1]``, pair ``"lr"`` with
    learning rates ``lrs[0]`` and ``lrs[1]``; everything else (optimizer and
    its arguments, the other of the two settings, epochs, module, callbacks)
    is the estimator's.  Then
    :class:`~hw1sk.transformers.ParameterInterpolator` evaluates the models
    θ(α) = (1 − α) θ₁ + α θ₂ for every α in ``alphas`` on the training and the
    held-out data (HW1-3 "flatness vs generalization", after Goodfellow et al.,
    2015 and Keskar et al., 2017).

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor, optional
        Unfitted template; cloned, never modified.  Every model trains with
        its settings exactly, except the setting its pair varies, the seed,
        and ``max_epochs`` when that is set here.  Default:
        :func:`~hw1sk.studies._defaults.default_flatness_classifier` (MLP
        784-128-10, Adam, lr 1e-3, batch size 64, 5 epochs).
    pairs : str or sequence of {"batch_size", "lr"}, default=("batch_size", "lr")
        Which pairs to train (distinct).
    batch_sizes : pair of int, default=(64, 1024)
        The batch sizes of the two models of pair ``"batch_size"``.
    lrs : pair of float, default=(1e-3, 1e-2)
        The learning rates of the two models of pair ``"lr"``.
    same_init : bool, default=False
        If True, the two models of a pair are trained with the same seed: the
        same initial weights *and* the same shuffling seed (each epoch's
        permutation of the data is the same; with different batch sizes it is
        cut into different batches).  If False, each model has its own seed.
    alphas : array-like, optional
        Interpolation coefficients; default 31 points evenly spaced in [-1, 2].
    max_epochs : int or None, default=None
        Epochs of every model, when set (recorded in ``settings_``); None
        keeps the estimator's.  Both models of a pair see the data the same
        number of times, so the large-batch model takes fewer steps.
    test_size : float or int, default=0.2
        Held-out part of ``(X, y)`` when ``fit`` gets no ``X_test`` (split with
        :func:`sklearn.model_selection.train_test_split`, seeded by
        ``random_state``).
    recompute_batchnorm : bool, default=True
        Passed to :class:`~hw1sk.transformers.ParameterInterpolator`: BatchNorm
        statistics of the interpolated models are recomputed on the training data.
    n_jobs, backend, scheduler, cache_dir, progress
        How the training runs are executed, see :func:`hw1sk.sweep.run_sweep`.
    random_state : int, RandomState or None, default=0
        Master seed of the split and of the training runs; the same value gives
        the same numbers on CPU, whatever ``n_jobs``.
    device : str or None, default=None
        Where the models are trained and evaluated; None keeps the estimator's.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (pair, alpha, split): columns ``pair``, ``alpha``,
        ``split`` ("train"/"test"), ``loss``, ``accuracy``.  Pairs with a
        diverged end point are left out (see ``diverged_``).
    summary_ : pandas.DataFrame
        One row per (pair, split): the end points' ``loss_1``, ``loss_2``,
        ``accuracy_1``, ``accuracy_2`` and ``loss_barrier``, the largest loss on
        the grid between them minus the larger end-point loss (0 when the
        loss is never above the end points; NaN unless α = 0 and α = 1 are on
        the grid).
    settings_ : dict
        Every training setting of the estimator
        (:func:`~hw1sk.studies._base.describe_estimator`), then the model,
        parameter count, the two end points of each pair (batch size, lr,
        seed), what the study set, data sizes and alphas.
    estimators_ : dict
        ``(pair, endpoint) -> fitted estimator``, endpoint 1 or 2.
    interpolators_ : dict
        ``pair -> fitted ParameterInterpolator``.
    histories_ : pandas.DataFrame
        Training histories of the end points (every column the estimator
        records), with columns ``pair`` and ``endpoint`` added.
    diverged_ : pandas.DataFrame
        Runs that diverged: ``pair``, ``endpoint``, ``batch_size``, ``lr``,
        ``seed`` and the message.

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
    >>> import numpy as np
    >>> from hw1sk.studies.interpolation import InterpolationStudy
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(200, 5).astype("float32"); y = (X[:, 0] > 0).astype(int)
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
        "batch_sizes": ["array-like"],
        "lrs": ["array-like"],
        "same_init": ["boolean"],
        "alphas": ["array-like", None],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "test_size": [Interval(Real, 0, 1, closed="neither"),
                      Interval(Integral, 1, None, closed="left")],
        "recompute_batchnorm": ["boolean"],
    }
    _run_function = staticmethod(_train_endpoint)

    def __init__(self, estimator=None, pairs=PAIR_KINDS, batch_sizes=(64, 1024),
                 lrs=(1e-3, 1e-2), same_init=False, alphas=None, max_epochs=None,
                 test_size=0.2, recompute_batchnorm=True, n_jobs=1, backend="loky",
                 scheduler=None, cache_dir=None, progress=False, random_state=0,
                 device=None):
        super().__init__(estimator=estimator, n_jobs=n_jobs, backend=backend,
                         scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                         device=device, random_state=random_state)
        self.pairs = pairs
        self.batch_sizes = batch_sizes
        self.lrs = lrs
        self.same_init = same_init
        self.alphas = alphas
        self.max_epochs = max_epochs
        self.test_size = test_size
        self.recompute_batchnorm = recompute_batchnorm

    # ------------------------------------------------------------------ hooks
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
        values = {
            "batch_size": tuple(int(b) for b in _pair_of(
                self.batch_sizes, "batch_sizes", "integers", _is_positive_int)),
            "lr": tuple(float(v) for v in _pair_of(
                self.lrs, "lrs", "numbers", _is_positive_real)),
        }
        return {pair: values[pair] for pair in pairs}

    def _tasks(self, data, template):
        from ..transformers import _check_alphas

        pairs = self._checked_pairs()
        self._alphas = _check_alphas(self.alphas)
        run_seeds = self._seeds[1:]
        tasks = []
        for pair, values in pairs.items():
            k = PAIR_KINDS.index(pair)  # seeds by pair kind: independent of which pairs run
            for end, value in enumerate(values):
                seed = run_seeds[2 * k] if self.same_init else run_seeds[2 * k + end]
                setting = {"batch_size": template.batch_size, "lr": template.lr, pair: value}
                label = {"pair": pair, "endpoint": end + 1, **setting, "seed": seed}
                tasks.append((label, {"estimator": template, "X": data.X, "y": data.y,
                                      "seed": seed, "pair": pair, "value": value}))
        return tasks

    def _collect(self, data, template, labels, runs):
        self.estimators_, histories, eval_tasks = {}, [], []
        for label, run in zip(labels, runs):
            if run is not None:
                key = (label["pair"], label["endpoint"])
                self.estimators_[key] = run["estimator"]
                histories.append(run["history"].assign(pair=key[0], endpoint=key[1]))
        for pair in dict.fromkeys(label["pair"] for label in labels):
            ends = [self.estimators_.get((pair, end)) for end in (1, 2)]
            if None in ends:
                continue  # a diverged end point: no line to evaluate (listed in diverged_)
            eval_tasks.append({
                "estimator1": ends[0], "estimator2": ends[1], "alphas": self._alphas,
                "recompute_batchnorm": self.recompute_batchnorm, "X": data.X, "y": data.y,
                "X_test": data.X_test, "y_test": data.y_test, "pair": pair,
            })
        diverged = self.diverged_  # _run_tasks resets it; evaluations cannot diverge
        # one task per pair: the forward passes over the data run in parallel too
        evaluated = self._run_tasks(_evaluate_pair, eval_tasks, desc="InterpolationStudy eval")
        self.diverged_ = diverged
        self.interpolators_ = {t["pair"]: e["interpolator"] for t, e in zip(eval_tasks, evaluated)}
        frames = [e["frame"] for e in evaluated]
        self.results_ = (pd.concat(frames, ignore_index=True)[_COLUMNS] if frames
                         else pd.DataFrame(columns=_COLUMNS))
        self.histories_ = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
        self.summary_ = _summary(self.results_)
        self._endpoints = labels

    def _settings(self, data, template):
        settings = {}
        fitted = next(iter(self.estimators_.values()), None)
        if fitted is not None:
            settings["model"] = describe_module(fitted.module_)
            settings["n_params"] = int(sum(p.numel() for p in fitted.module_.parameters()))
        settings["varied"] = ", ".join(dict.fromkeys(e["pair"] for e in self._endpoints))
        for e in self._endpoints:
            settings[f"{e['pair']} pair, model {e['endpoint']}"] = (
                f"batch size {e['batch_size']}, lr {e['lr']:g}, seed {e['seed']}")
        alphas = self._alphas
        settings.update({
            "same_init": bool(self.same_init),
            "max_epochs (set by the study)": self.max_epochs,
            "n_train": int(data.X.shape[0]),
            "n_test": int(data.X_test.shape[0]),
            "alphas": f"{alphas.size} points in [{alphas.min():g}, {alphas.max():g}]",
            "random_state": self.random_state,
        })
        return settings


def _summary(results):
    """End-point numbers and the loss barrier between them, per (pair, split)."""
    rows = []
    for (pair, split), g in results.groupby(["pair", "split"], sort=False):
        at = g.set_index("alpha")
        row = {"pair": pair, "split": split}
        if 0.0 in at.index and 1.0 in at.index:
            l1, l2 = float(at.loc[0.0, "loss"]), float(at.loc[1.0, "loss"])
            between = g[(g["alpha"] >= 0) & (g["alpha"] <= 1)]["loss"]
            row.update(loss_1=l1, loss_2=l2,
                       accuracy_1=float(at.loc[0.0, "accuracy"]),
                       accuracy_2=float(at.loc[1.0, "accuracy"]),
                       loss_barrier=float(between.max() - max(l1, l2)))
        else:
            row.update(loss_1=np.nan, loss_2=np.nan, accuracy_1=np.nan, accuracy_2=np.nan,
                       loss_barrier=np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=["pair", "split", "loss_1", "loss_2", "accuracy_1",
                                       "accuracy_2", "loss_barrier"])
