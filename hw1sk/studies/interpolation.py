"""HW1-3 flatness, part 1: loss and accuracy along the line between two trained models."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_X_y

from ..seeding import as_seed, spawn_seeds
from ._base import Study, train_run
from ._defaults import default_flatness_classifier, describe_module

__all__ = ["InterpolationStudy", "PAIR_KINDS"]

#: The two ways the end points of an interpolation may differ.
PAIR_KINDS = ("batch_size", "lr")

def _check_positive_int(value, name, allow_none=False):
    if allow_none and value is None:
        return None
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, "
                         f"got {value!r}.")
    return int(value)


def _check_positive_real(value, name, allow_none=False):
    if allow_none and value is None:
        return None
    if (not isinstance(value, Real) or isinstance(value, bool) or not np.isfinite(value)
            or value <= 0):
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, "
                         f"got {value!r}.")
    return float(value)


def study_data(X, y, X_test, y_test, test_size, random_state):
    """Validated training and held-out data of a flatness study.

    Parameters
    ----------
    X, y : array-like
        Training data (any sample shape, e.g. ``(n, 1, 28, 28)`` images).
    X_test, y_test : array-like or None
        Held-out data; when both are None, ``test_size`` of ``(X, y)`` is split
        off with :func:`sklearn.model_selection.train_test_split`.
    test_size : float or int
    random_state : int
        Seed of the split.

    Returns
    -------
    X, y, X_test, y_test : ndarray
    """
    X, y = check_X_y(X, y, allow_nd=True)
    if (X_test is None) != (y_test is None):
        raise ValueError("Pass both X_test and y_test, or neither.")
    if X_test is None:
        X, X_test, y, y_test = train_test_split(X, y, test_size=test_size,
                                                random_state=random_state)
    else:
        X_test, y_test = check_X_y(X_test, y_test, allow_nd=True)
        if X_test.shape[1:] != X.shape[1:]:
            raise ValueError(f"X_test has samples of shape {X_test.shape[1:]}, but X has "
                             f"{X.shape[1:]}.")
    return X, y, X_test, y_test


def _train_endpoint(estimator, X, y, seed, pair, endpoint, batch_size, lr):
    """Train one end point of an interpolation pair (a module-level sweep task).

    ``pair`` and ``endpoint`` only label the task (they show up in ``diverged_``).
    """
    est = clone(estimator).set_params(batch_size=int(batch_size), lr=float(lr))
    return train_run(est, X, y, seed=seed, keep_estimator=True)


def _evaluate_pair(estimator1, estimator2, alphas, recompute_batchnorm, X, y, X_test, y_test,
                   pair):
    """Evaluate the line between two trained end points (a module-level sweep task)."""
    from ..transformers import ParameterInterpolator

    interp = ParameterInterpolator(estimator1, estimator2, alphas=alphas,
                                   recompute_batchnorm=recompute_batchnorm).fit()
    frame = interp.evaluate(X, y, X_test, y_test).assign(pair=pair)
    return {"frame": frame, "interpolator": interp}


class InterpolationStudy(Study):
    """Train two models that differ in one setting, evaluate the line between them.

    For each kind of pair in ``pairs`` two models of the same architecture are
    trained on ``(X, y)``: with batch sizes ``batch_sizes[0]`` and
    ``batch_sizes[1]`` (pair ``"batch_size"``, both with learning rate
    ``lrs[0]``), or with learning rates ``lrs[0]`` and ``lrs[1]`` (pair
    ``"lr"``, both with batch size ``batch_sizes[0]``).  Then
    :class:`~hw1sk.transformers.ParameterInterpolator` evaluates the models
    θ(α) = (1 − α) θ₁ + α θ₂ for every α in ``alphas`` on the training and the
    held-out data (HW1-3 "flatness vs generalization", after Goodfellow et al.,
    2015 and Keskar et al., 2017).

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor, optional
        Unfitted template; cloned, never modified.  Its ``batch_size`` and
        ``lr`` are replaced by the pair's settings.  Default:
        :func:`default_flatness_classifier` (MLP 784-128-10, Adam).
    pairs : str or sequence of {"batch_size", "lr"}, default=("batch_size", "lr")
        Which pairs to train.
    batch_sizes : pair of int, default=(64, 1024)
    lrs : pair of float, default=(1e-3, 1e-2)
    same_init : bool, default=False
        If True, the two models of a pair are trained with the same seed: the
        same initial weights *and* the same shuffling seed (each epoch's
        permutation of the data is the same; with different batch sizes it is
        cut into different batches).  If False, each model has its own seed.
    alphas : array-like, optional
        Interpolation coefficients; default 31 points evenly spaced in [-1, 2].
    max_epochs : int or None, default=5
        Epochs of every model (None keeps the estimator's).  Both models of a
        pair see the data the same number of times, so the large-batch model
        takes fewer steps.
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
    device : str, default="cpu"
        Where the models are trained and evaluated.

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
        Human-readable settings: model, parameter count, optimizer, epochs,
        the two end points of each pair, seeds, data sizes, alphas.
    estimators_ : dict
        ``(pair, endpoint) -> fitted estimator``, endpoint 1 or 2.
    interpolators_ : dict
        ``pair -> fitted ParameterInterpolator``.
    histories_ : pandas.DataFrame
        Training histories of the end points, with columns ``pair`` and
        ``endpoint`` added.
    diverged_ : pandas.DataFrame
        Runs whose training loss became non-finite (one row per run).

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
    """

    def __init__(self, estimator=None, pairs=PAIR_KINDS, batch_sizes=(64, 1024),
                 lrs=(1e-3, 1e-2), same_init=False, alphas=None, max_epochs=5,
                 test_size=0.2, recompute_batchnorm=True, n_jobs=1, backend="loky",
                 scheduler=None, cache_dir=None, progress=False, random_state=0,
                 device="cpu"):
        self.estimator = estimator
        self.pairs = pairs
        self.batch_sizes = batch_sizes
        self.lrs = lrs
        self.same_init = same_init
        self.alphas = alphas
        self.max_epochs = max_epochs
        self.test_size = test_size
        self.recompute_batchnorm = recompute_batchnorm
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.cache_dir = cache_dir
        self.progress = progress
        self.random_state = random_state
        self.device = device

    # ----------------------------------------------------------- validation
    def _check_params(self):
        from ..transformers import _check_alphas

        pairs = (self.pairs,) if isinstance(self.pairs, str) else self.pairs
        try:
            pairs = tuple(pairs)
        except TypeError:
            pairs = None
        if (not pairs or any(p not in PAIR_KINDS for p in pairs)
                or len(set(pairs)) != len(pairs)):
            raise ValueError(f"pairs must be a non-empty selection of {PAIR_KINDS} without "
                             f"repeats, got {self.pairs!r}.")
        if not isinstance(self.batch_sizes, (tuple, list)) or len(self.batch_sizes) != 2:
            raise ValueError(f"batch_sizes must be a pair of positive integers, got "
                             f"{self.batch_sizes!r}.")
        batch_sizes = tuple(_check_positive_int(b, "batch_sizes[i]") for b in self.batch_sizes)
        if not isinstance(self.lrs, (tuple, list)) or len(self.lrs) != 2:
            raise ValueError(f"lrs must be a pair of positive numbers, got {self.lrs!r}.")
        lrs = tuple(_check_positive_real(lr, "lrs[i]") for lr in self.lrs)
        if not isinstance(self.same_init, (bool, np.bool_)):
            raise ValueError(f"same_init must be True or False, got {self.same_init!r}.")
        max_epochs = _check_positive_int(self.max_epochs, "max_epochs", allow_none=True)
        return pairs, batch_sizes, lrs, _check_alphas(self.alphas), max_epochs

    def _template(self, max_epochs):
        template = clone(self.estimator if self.estimator is not None
                         else default_flatness_classifier())
        template.set_params(device=self.device)
        if max_epochs is not None:
            template.set_params(max_epochs=max_epochs)
        return template

    # ------------------------------------------------------------------ fit
    def fit(self, X, y, X_test=None, y_test=None):
        """Train the pairs and evaluate the interpolated models.

        Parameters
        ----------
        X, y : array-like of shape (n_samples, ...) and (n_samples,)
            Training data (e.g. MNIST images and labels).
        X_test, y_test : array-like, optional
            Held-out data; default: ``test_size`` of ``(X, y)``.

        Returns
        -------
        self : InterpolationStudy
        """
        pairs, batch_sizes, lrs, alphas, max_epochs = self._check_params()
        master = as_seed(self.random_state)
        split_seed, *run_seeds = spawn_seeds(master, 1 + 2 * len(PAIR_KINDS))
        X, y, X_test, y_test = study_data(X, y, X_test, y_test, self.test_size, split_seed)
        template = self._template(max_epochs)

        tasks = []
        for pair in pairs:
            k = PAIR_KINDS.index(pair)  # seeds by pair kind: independent of which pairs run
            for end in (0, 1):
                settings = {
                    "batch_size": batch_sizes[end] if pair == "batch_size" else batch_sizes[0],
                    "lr": lrs[end] if pair == "lr" else lrs[0],
                }
                seed = run_seeds[2 * k] if self.same_init else run_seeds[2 * k + end]
                tasks.append({"estimator": template, "X": X, "y": y, "seed": seed,
                              "pair": pair, "endpoint": end + 1, **settings})
        runs = self._run_tasks(_train_endpoint, tasks, desc="InterpolationStudy")

        histories, eval_tasks = [], []
        self.estimators_ = {}
        for i, pair in enumerate(pairs):
            first, second = runs[2 * i], runs[2 * i + 1]
            for end, run in ((1, first), (2, second)):
                if run is not None:
                    self.estimators_[(pair, end)] = run["estimator"]
                    histories.append(run["history"].assign(pair=pair, endpoint=end))
            if first is None or second is None:
                continue  # a diverged end point: no line to evaluate (listed in diverged_)
            eval_tasks.append({
                "estimator1": first["estimator"], "estimator2": second["estimator"],
                "alphas": alphas, "recompute_batchnorm": self.recompute_batchnorm,
                "X": X, "y": y, "X_test": X_test, "y_test": y_test, "pair": pair,
            })
        diverged = self.diverged_  # _run_tasks resets it; evaluations cannot diverge
        # one task per pair: the forward passes over the data run in parallel too
        evaluated = self._run_tasks(_evaluate_pair, eval_tasks, desc="InterpolationStudy eval")
        self.diverged_ = diverged
        frames = [e["frame"] for e in evaluated]
        self.interpolators_ = {t["pair"]: e["interpolator"] for t, e in zip(eval_tasks, evaluated)}

        columns = ["pair", "alpha", "split", "loss", "accuracy"]
        self.results_ = (pd.concat(frames, ignore_index=True)[columns] if frames
                         else pd.DataFrame(columns=columns))
        self.histories_ = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
        self.summary_ = _summary(self.results_)
        self.settings_ = self._settings(tasks, template, alphas, X, X_test)
        return self

    def _settings(self, tasks, template, alphas, X, X_test):
        fitted = next(iter(self.estimators_.values()), None)
        settings = {}
        if fitted is not None:
            settings["model"] = describe_module(fitted.module_)
            settings["n_params"] = int(sum(p.numel() for p in fitted.module_.parameters()))
        optimizer = template.optimizer
        settings["optimizer"] = getattr(optimizer, "__name__", type(optimizer).__name__)
        settings["max_epochs"] = int(template.max_epochs)
        for task in tasks:
            settings[f"{task['pair']} pair, model {task['endpoint']}"] = (
                f"batch size {task['batch_size']}, lr {task['lr']:g}, seed {task['seed']}")
        settings["same_init"] = bool(self.same_init)
        settings["n_train"] = int(X.shape[0])
        settings["n_test"] = int(X_test.shape[0])
        settings["alphas"] = (f"{alphas.size} points in [{alphas.min():g}, {alphas.max():g}]")
        settings["random_state"] = self.random_state
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
