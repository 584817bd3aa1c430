"""What every study shares: the sweep call, divergence bookkeeping, one training run."""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from ..evaluation import evaluate_estimator
from ..parameters import count_params


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


def with_callbacks(estimator, *named_callbacks):
    """``estimator`` with extra ``(name, callback)`` pairs appended to its callbacks."""
    existing = list(estimator.callbacks or [])
    return estimator.set_params(callbacks=existing + list(named_callbacks))


def train_run(estimator, X, y, X_test=None, y_test=None, seed=0, test_every=1,
              keep_estimator=True):
    """Fit a clone of ``estimator`` with ``random_state=seed``, report what it learned.

    A module-level function so that it pickles into joblib and dask workers.

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor (unfitted template)
    X, y : array-like
        Training data.
    X_test, y_test : array-like, optional
        Held-out data, scored every ``test_every`` epochs into the history
        (columns ``test_loss``, ``test_acc``, like skorch's ``train_acc``).
    seed : int, default=0
    test_every : int, default=1
    keep_estimator : bool, default=True
        Return the fitted estimator too (needed for traces and parameters).

    Returns
    -------
    run : dict
        ``history`` (DataFrame), ``train`` and ``test`` scores (dicts of loss
        and accuracy), ``n_params``, and ``estimator`` when kept.

    Raises
    ------
    hw1sk.sweep.RunDiverged
        When the training loss became NaN or infinite.
    """
    from ..evaluation import HeldOutScore
    from ..sweep import RunDiverged

    est = clone(estimator).set_params(random_state=int(seed))
    if X_test is not None:
        with_callbacks(est, ("test_score", HeldOutScore(X_test, y_test, name="test", every=test_every)))
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


class Study(BaseEstimator):
    """Base class of the HW1 studies (not for direct use).

    Subclasses take plain constructor parameters (including ``n_jobs``,
    ``backend``, ``scheduler``, ``cache_dir``, ``progress`` and
    ``random_state``), build a list of tasks in ``fit`` and run them through
    :meth:`_run_tasks`, which goes through :func:`hw1sk.sweep.run_sweep`
    with :data:`THREADS_PER_RUN` threads per run, so that the same
    ``random_state`` gives the same numbers whatever ``n_jobs`` and backend.
    """

    def _run_tasks(self, func, tasks, desc=None):
        """Run ``func(**task)`` for every task; record diverged runs in ``diverged_``.

        Returns the results in task order, with ``None`` for diverged runs.
        """
        from ..sweep import DivergedRun, run_sweep

        results = run_sweep(
            func, tasks,
            n_jobs=getattr(self, "n_jobs", 1),
            backend=getattr(self, "backend", "loky"),
            scheduler=getattr(self, "scheduler", None),
            cache_dir=getattr(self, "cache_dir", None),
            progress=getattr(self, "progress", False),
            desc=desc or type(self).__name__,
            threads_per_worker=THREADS_PER_RUN,
        )
        diverged, out = [], []
        for task, result in zip(tasks, results):
            if isinstance(result, DivergedRun):
                diverged.append({**{k: describe_value(v) for k, v in task.items()},
                                 "message": result.message})
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

    def _check_fitted(self):
        check_is_fitted(self, "results_")
