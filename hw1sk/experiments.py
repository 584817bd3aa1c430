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

import pandas as pd

from .registry import EXPERIMENTS, PROFILES, Experiment, ExperimentSkipped, register

__all__ = ["EXPERIMENTS", "PROFILES", "Experiment", "ExperimentResult", "ExperimentSkipped",
           "run_experiment", "select_experiments", "experiment_settings", "build_experiment_study",
           "fit_experiment_study", "register"]


@dataclass
class ExperimentResult:
    """What one experiment produced: figures, tables, settings, headline numbers, findings.

    ``findings`` holds the item's :class:`hw1sk.findings.Finding` list: claims
    computed from its fitted study, each with its expectation and verdict
    (empty for a skipped or failed item, or one without a findings function).
    """

    id: str
    title: str
    study: object = None
    figures: dict = field(default_factory=dict)
    tables: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    numbers: pd.DataFrame | None = None
    diverged: pd.DataFrame | None = None
    notes: list = field(default_factory=list)
    wall_time: float = 0.0
    skipped: bool = False
    error: str | None = None  # set when the experiment raised: "<type>: <message>"
    findings: list = field(default_factory=list)


def select_experiments(only=None) -> list:
    """Experiment ids matching ``only`` (ids or prefixes such as ``"1-2"``), in report order.

    Parameters
    ----------
    only : list of str, optional
        Ids or prefixes; ``None`` (or an empty list) selects every experiment.

    Returns
    -------
    ids : list of str

    Raises
    ------
    ValueError
        When a selector is empty (``""`` would match every id) or matches no
        experiment.
    """
    _load_registry()
    ids = list(EXPERIMENTS)
    if not only:
        return ids
    chosen = []
    for sel in only:
        if not sel.strip():
            raise ValueError(f"empty item {sel!r}; choose from: {', '.join(ids)}")
        matched = [i for i in ids if i == sel or i.startswith(sel + "-") or i.startswith(sel)]
        if not matched:
            raise ValueError(f"unknown item {sel!r}; choose from: {', '.join(ids)}")
        chosen += [m for m in matched if m not in chosen]
    return [i for i in ids if i in chosen]


def experiment_settings(exp_id, profile="quick", overrides=None) -> dict:
    """The study parameters of one experiment under a profile, with ``overrides`` on top.

    Keys starting with ``data_`` size the data (or are passed to the fit);
    the others are study parameters.  ``"estimator"`` is a spec of the
    item's estimator (see :func:`hw1sk.hw1_items.estimator_from_spec`): the
    one place that names its model, optimizer with its arguments, lr,
    epochs and batch size.  An ``"estimator"`` override without ``"kind"``
    changes only the settings it names (``{"estimator": {"lr": 1e-2}}``);
    with ``"kind"`` it replaces the spec.

    Raises
    ------
    ValueError
        For an unknown experiment id or profile.
    """
    _load_registry()
    if exp_id not in EXPERIMENTS:
        raise ValueError(f"unknown item {exp_id!r}; choose from: {', '.join(EXPERIMENTS)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from: {', '.join(PROFILES)}")
    settings = dict(PROFILES[profile][exp_id])
    for key, value in (overrides or {}).items():
        base = settings.get(key)
        if (key == "estimator" and isinstance(value, dict) and isinstance(base, dict)
                and "kind" not in value):
            value = {**base, **value}  # change some of the profile's estimator settings
        settings[key] = value
    return settings


def build_experiment_study(exp_id, profile="quick", *, data_home=None, n_jobs=1,
                           device="cpu", seed=0, backend="loky", scheduler=None,
                           cache_dir=None, progress=False, overrides=None):
    """The unfitted study of one experiment and a function that fits it.

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
    study : unfitted study
    fit : callable
        ``fit()`` fits ``study`` on the experiment's data and returns it.

    Raises
    ------
    ExperimentSkipped
        When the experiment's data is not there.
    """
    settings = experiment_settings(exp_id, profile, overrides)
    context = {"data_home": data_home, "n_jobs": n_jobs, "device": device, "random_state": seed,
               "backend": backend, "scheduler": scheduler, "cache_dir": cache_dir,
               "progress": progress}
    exp = EXPERIMENTS[exp_id]
    study, fit_kwargs = exp.build(settings, context)

    def fit():
        with warnings.catch_warnings():
            # the report states parameter spreads and similar notes in its settings
            warnings.simplefilter("ignore", UserWarning)
            return getattr(study, exp.fit_method)(**fit_kwargs)

    return study, fit


def fit_experiment_study(exp_id, profile="quick", **kwargs):
    """Build and fit the study of one experiment; return it fitted.

    Parameters
    ----------
    exp_id : str
    profile : {"quick", "full"}
    **kwargs
        As :func:`build_experiment_study`.

    Returns
    -------
    study : fitted study
    """
    study, fit = build_experiment_study(exp_id, profile, **kwargs)
    fit()
    return study


def run_experiment(exp_id, profile="quick", **kwargs) -> ExperimentResult:
    """Fit one experiment's study, render its figures and tables, compute its findings.

    An experiment whose data is missing comes back ``skipped``; one that
    raises while it fits or renders comes back with ``error`` set (and the
    runs that diverged before, if any), so that a report still shows the
    other items.  A findings function that raises gives one
    ``"inconclusive"`` finding saying so (:func:`hw1sk.findings.safe_findings`).

    Parameters
    ----------
    exp_id : str
    profile : {"quick", "full"}
    **kwargs
        As :func:`build_experiment_study`.

    Returns
    -------
    result : ExperimentResult
    """
    start = time.perf_counter()
    settings = {"profile": profile, "report seed": kwargs.get("seed", 0),
                **experiment_settings(exp_id, profile, kwargs.get("overrides"))}
    exp = EXPERIMENTS[exp_id]
    result = ExperimentResult(id=exp_id, title=exp.title, settings=settings)
    study = None
    try:
        study, fit = build_experiment_study(exp_id, profile, **kwargs)
        fit()
        result.figures, result.tables = exp.render(study)
    except ExperimentSkipped as exc:
        result.skipped, result.notes = True, [str(exc)]
    except Exception as exc:  # one broken item must not lose the others' results
        result.error = f"{type(exc).__name__}: {exc}"
        result.notes = [f"This item failed and has no results: {result.error}"]
        result.figures, result.tables = {}, {}
    if study is not None:
        result.study = study
        result.settings.update(getattr(study, "settings_", {}))
        result.numbers = None if result.error else getattr(study, "summary_", None)
        result.diverged = getattr(study, "diverged_", None)
        if exp.findings is not None and not (result.error or result.skipped):
            from .findings import safe_findings

            result.findings = safe_findings(exp.findings, study, exp_id)
    result.wall_time = time.perf_counter() - start
    return result


def _load_registry():
    """Import the modules that register experiments (once)."""
    if not EXPERIMENTS:
        from . import hw1_items  # noqa: F401
