"""The HW1 items as named experiments: which study, on which data, with which settings.

One code path for the ``hw1sk report`` command and the sweep scripts in
``studies/``: each experiment loads its data, fits its study with the
settings of a *profile* (``"quick"`` or ``"full"``), and returns the figures
and tables of its item. Nothing here plots or trains by itself: it calls
studies and plotting functions.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

__all__ = ["EXPERIMENTS", "PROFILES", "ExperimentResult", "run_experiment",
           "select_experiments", "fit_experiment_study"]


@dataclass
class ExperimentResult:
    """What one experiment produced: figures, tables, settings and headline numbers."""

    id: str
    title: str
    study: object
    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    numbers: pd.DataFrame | None = None
    diverged: pd.DataFrame | None = None
    notes: list = field(default_factory=list)
    wall_time: float = 0.0


@dataclass(frozen=True)
class Experiment:
    """A registered HW1 item."""

    id: str
    title: str
    needs_mnist: bool
    build: Callable  # (settings: dict, context: dict) -> (study, fit_kwargs)
    render: Callable  # (study) -> (figures: dict, tables: dict)


EXPERIMENTS: dict = {}

#: Study parameters per profile and experiment id. "full" = the assignment's sizes.
PROFILES: dict = {"quick": {}, "full": {}}


def register(exp: Experiment, quick: dict, full: dict):
    """Add an experiment and its two profiles to the registry."""
    EXPERIMENTS[exp.id] = exp
    PROFILES["quick"][exp.id] = dict(quick)
    PROFILES["full"][exp.id] = dict(full)
    return exp


def select_experiments(only=None) -> list:
    """Experiment ids matching ``only`` (ids or prefixes such as ``"1-2"``), in report order.

    Raises
    ------
    ValueError
        When a selector matches no experiment.
    """
    _load_registry()
    ids = list(EXPERIMENTS)
    if not only:
        return ids
    chosen = []
    for sel in only:
        matched = [i for i in ids if i == sel or i.startswith(sel + "-") or i.startswith(sel)]
        if not matched:
            raise ValueError(f"unknown item {sel!r}; choose from: {', '.join(ids)}")
        chosen += [m for m in matched if m not in chosen]
    return [i for i in ids if i in chosen]


def fit_experiment_study(exp_id, profile="quick", *, data_home=None, n_jobs=1, device="cpu",
                         seed=0, backend="loky", scheduler=None, cache_dir=None,
                         progress=False, overrides=None):
    """Build and fit the study of one experiment; return it fitted.

    Parameters
    ----------
    exp_id : str
    profile : {"quick", "full"}
    data_home, n_jobs, device, seed, backend, scheduler, cache_dir, progress
        Run context, passed to the study.
    overrides : dict, optional
        Study parameters on top of the profile's.

    Returns
    -------
    study : fitted study
    """
    _load_registry()
    if exp_id not in EXPERIMENTS:
        raise ValueError(f"unknown item {exp_id!r}; choose from: {', '.join(EXPERIMENTS)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from: {', '.join(PROFILES)}")
    settings = {**PROFILES[profile][exp_id], **(overrides or {})}
    context = {"data_home": data_home, "n_jobs": n_jobs, "device": device, "random_state": seed,
               "backend": backend, "scheduler": scheduler, "cache_dir": cache_dir,
               "progress": progress}
    study, fit_kwargs = EXPERIMENTS[exp_id].build(settings, context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        study.fit(**fit_kwargs)
    return study


def run_experiment(exp_id, profile="quick", **kwargs) -> ExperimentResult:
    """Fit one experiment's study and render its figures and tables.

    Parameters
    ----------
    exp_id : str
    profile : {"quick", "full"}
    **kwargs
        As :func:`fit_experiment_study`.

    Returns
    -------
    result : ExperimentResult
    """
    start = time.perf_counter()
    study = fit_experiment_study(exp_id, profile, **kwargs)
    exp = EXPERIMENTS[exp_id]
    figures, tables = exp.render(study)
    return ExperimentResult(
        id=exp_id, title=exp.title, study=study, figures=figures, tables=tables,
        settings=dict(getattr(study, "settings_", {})),
        numbers=getattr(study, "summary_", None),
        diverged=getattr(study, "diverged_", None),
        wall_time=time.perf_counter() - start,
    )


def _load_registry():
    """Import the modules that register experiments (once)."""
    if not EXPERIMENTS:
        from . import hw1_items  # noqa: F401
