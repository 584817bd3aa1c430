"""The registry of the report's items: what an item is, and its two profiles.

:mod:`hw1sk.hw1_items` registers the HW1 items here; :mod:`hw1sk.experiments`
runs them.  Neither imports the other's internals, and this module imports
neither, so there is no import cycle between the items and their runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["EXPERIMENTS", "PROFILES", "Experiment", "ExperimentSkipped", "register"]


class ExperimentSkipped(RuntimeError):
    """Raised by an experiment's build when its data is not there (e.g. CIFAR-10).

    :func:`run_experiment` turns it into a result with the message as its
    only note, so the rest of the report still runs.
    """


@dataclass(frozen=True)
class Experiment:
    """A registered HW1 item."""

    id: str
    title: str
    needs_mnist: bool
    build: Callable  # (settings: dict, context: dict) -> (study, fit_kwargs)
    render: Callable  # (study) -> (figures: dict, tables: dict)
    fit_method: str = "fit"  # the study's method that runs the experiment
    #: (study, item=id) -> list of hw1sk.findings.Finding; None: the item has no findings
    findings: Callable | None = None


EXPERIMENTS: dict = {}

#: Study parameters per profile and experiment id. "full" = the assignment's sizes.
PROFILES: dict = {"quick": {}, "full": {}}


def register(exp: Experiment, quick: dict, full: dict):
    """Add an experiment and its two profiles to the registry."""
    EXPERIMENTS[exp.id] = exp
    PROFILES["quick"][exp.id] = dict(quick)
    PROFILES["full"][exp.id] = dict(full)
    return exp
