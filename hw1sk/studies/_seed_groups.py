"""Runs of a study that differ only in their seed, trained together by a SeedEnsemble.

:meth:`Study._run_tasks <hw1sk.studies._base.Study._run_tasks>` groups the
tasks whose every argument but ``seed`` is the same object or value
(:func:`seed_groups`) and runs each group as one sweep task (one cache
file) with :func:`run_seed_group`: the group's estimator is fitted once per
seed by :class:`hw1sk.ensemble.SeedEnsemble`, in one vectorized pass where
it can (it falls back to a loop of ordinary fits where it cannot), then each
run executes as it would alone, except that its
:func:`~hw1sk.studies._base.train_run` takes the copy fitted for its seed
(:func:`take_prefitted`) instead of fitting one.  A run that trains anything
else (another estimator, other data, other held-out data) fits as usual, so
grouping changes speed, never what is computed.

A run function may also batch what follows training: its attribute
``seed_group_phase(tasks, fitted)`` (``fitted``: seed -> fitted copy) is
called once per group after the fit and returns seed -> that seed's result
of the phase (seeds it leaves out do the phase in their run, as alone); each
run takes its own with :func:`take_group_phase`.
"""

from __future__ import annotations

import contextvars
import warnings
from dataclasses import dataclass

__all__ = ["seed_groups", "run_seed_group", "take_prefitted", "take_group_phase",
           "replays_callbacks", "stops_early"]


@dataclass
class _Prefitted:
    estimator: object  # the group's template, as the tasks hold it
    X: object
    y: object
    X_test: object  # held-out data the copies were scored on during training, or None
    fitted: dict  # seed -> fitted copy
    phase: dict  # seed -> the run function's seed_group_phase result


_PREFITTED = contextvars.ContextVar("hw1sk_prefitted_seeds", default=None)


def _key_part(value):
    try:
        hash(value)
    except TypeError:  # arrays and containers of them: the same object
        return ("id", id(value))
    return ("value", type(value).__name__, value)


def seed_groups(tasks):
    """Index lists of the tasks that differ only in ``seed`` (in order of first appearance).

    A task without an ``estimator`` or a ``seed`` is a group of its own;
    arrays and other unhashable arguments match only when they are the same
    object (a study's tasks share them).

    Examples
    --------
    >>> from hw1sk.studies._seed_groups import seed_groups
    >>> X = [1.0, 2.0]
    >>> tasks = [{"estimator": "e", "X": X, "seed": s, "lr": lr}
    ...          for lr in (0.1, 0.01) for s in (0, 1)]
    >>> seed_groups(tasks)
    [[0, 1], [2, 3]]
    """
    groups = {}
    for i, task in enumerate(tasks):
        if "seed" not in task or "estimator" not in task:
            key = ("single", i)
        else:
            key = tuple(sorted((k, _key_part(v)) for k, v in task.items() if k != "seed"))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def replays_callbacks(estimator):
    """Whether the vectorized pass of SeedEnsemble replays every callback of ``estimator``.

    The replayed ones are the tracing callbacks, HeldOutScore, and the plateau
    and target stops (per seed, :mod:`hw1sk.ensemble_stops`).  A seed group
    whose estimator has another callback would be fitted seed by seed inside
    one task, losing ``n_jobs``.
    """
    from ..ensemble import REPLAYED_CALLBACKS
    from ..ensemble_stops import STOPPING_CALLBACKS
    from ..evaluation import HeldOutScore

    callbacks = [entry[1] if isinstance(entry, tuple) else entry
                 for entry in getattr(estimator, "callbacks", None) or []]
    # what the pass records every epoch, for the stops to monitor
    known = {"train_loss", "train_acc"} | {f"{cb.name}_{key}" for cb in callbacks
                                           if isinstance(cb, HeldOutScore) and cb.every == 1
                                           for key in ("loss", "acc")}
    for callback in callbacks:
        if not isinstance(callback, REPLAYED_CALLBACKS):
            return False
        if isinstance(callback, STOPPING_CALLBACKS) and (
                getattr(callback, "load_best", False) or callback.monitor not in known):
            return False
    return True


def stops_early(estimator):
    """Whether ``estimator`` has a plateau or target stop (each seed stops at its own epoch)."""
    from ..ensemble_stops import STOPPING_CALLBACKS

    return any(isinstance(entry[1] if isinstance(entry, tuple) else entry, STOPPING_CALLBACKS)
               for entry in getattr(estimator, "callbacks", None) or [])


def take_prefitted(estimator, X, y, X_test, seed):
    """The copy of ``estimator`` that the running seed group fitted for ``seed``, or None.

    Only inside :func:`run_seed_group`, and only for the group's own
    estimator, data and held-out data (the same objects).
    """
    group = _running_group(estimator, X, y, X_test)
    return None if group is None else group.fitted.get(int(seed))


def take_group_phase(estimator, X, y, seed, X_test=None):
    """What the running seed group's ``seed_group_phase`` computed for ``seed``, or None.

    As :func:`take_prefitted`: only inside :func:`run_seed_group`, for the
    group's own estimator and data.
    """
    group = _running_group(estimator, X, y, X_test)
    return None if group is None else group.phase.get(int(seed))


def _running_group(estimator, X, y, X_test):
    group = _PREFITTED.get()
    if (group is None or estimator is not group.estimator or X is not group.X
            or y is not group.y or X_test is not group.X_test):
        return None
    return group


def run_seed_group(run_function, tasks, vectorize=True, held_out=False):
    """Run ``run_function(**task)`` for tasks that differ only in ``seed``, seeds trained together.

    Parameters
    ----------
    run_function : callable
        The study's run; its :func:`~hw1sk.studies._base.train_run` of
        ``task["estimator"]`` on ``task["X"], task["y"]`` takes the fitted
        copy.  Its ``seed_group_phase``, when it has one, runs once after the
        fit (see the module docstring).
    tasks : list of dict
        The group (see :func:`seed_groups`).
    vectorize : bool or "auto", default=True
        Passed on as the study's setting: ``True`` warns when the ensemble
        falls back to a loop, ``"auto"`` does so silently.
    held_out : bool, default=False
        The runs score ``task["X_test"], task["y_test"]`` every
        ``task["test_every"]`` epochs during training (as ``train_run``
        does), so the copies are trained with that scoring.

    Returns
    -------
    results : list
        One per task, a :class:`hw1sk.sweep.DivergedRun` for a diverged run.
    """
    from sklearn.base import clone

    from ..ensemble import SeedEnsemble
    from ..sweep import DivergedRun, RunDiverged
    from ._base import with_held_out_score

    first = tasks[0]
    X_test = first.get("X_test") if held_out else None
    trained = first["estimator"]
    if X_test is not None:
        trained = with_held_out_score(clone(trained), X_test, first["y_test"],
                                      first.get("test_every", 1))
    with warnings.catch_warnings():
        if vectorize == "auto":
            warnings.filterwarnings("ignore", "SeedEnsemble fits the seeds one by one",
                                    UserWarning)
        ensemble = SeedEnsemble(trained, seeds=[int(t["seed"]) for t in tasks]).fit(
            first["X"], first["y"])
    fitted = dict(zip(ensemble.seeds_, ensemble.estimators_))
    phase = getattr(run_function, "seed_group_phase", None)
    group = _Prefitted(first["estimator"], first["X"], first["y"], X_test, fitted,
                       phase(tasks, fitted) if phase is not None else {})
    results = []
    for task in tasks:
        token = _PREFITTED.set(group)
        try:
            results.append(run_function(**task))
        except RunDiverged as exc:
            results.append(DivergedRun(task=task, message=exc.message, info=exc.info))
        finally:
            _PREFITTED.reset(token)
    return results
