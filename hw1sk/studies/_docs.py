"""The docstring texts the studies share, composed into each study's (pandas' ``_shared_docs``).

A study's class docstring names a shared text by a placeholder in braces: a
whole parameter or attribute entry on its own line (``{test_size}``), or a
phrase.  The fields of the shared texts (``{runs}``) come from the study's
``_doc_values``.  :func:`compose`, called for every study by
:class:`~hw1sk.studies._base.Study`, substitutes them and appends
:data:`EXECUTION` and :data:`OUTCOME` where the docstring does not list them.
"""

from __future__ import annotations

import inspect
import re

#: The parameters of :class:`~hw1sk.studies._base.Study` that say how the runs are
#: executed, appended to every study's Parameters section.
EXECUTION = {
    "n_jobs": """n_jobs : int, default=1
    Runs trained side by side (worker processes; -1: one per core), each on
    one torch thread, see :func:`hw1sk.sweep.run_sweep`.""",
    "backend": """backend : {"loky", "threading", "sequential", "dask"}, default="loky"
    joblib worker processes, threads, a plain loop, or dask.distributed.""",
    "scheduler": """scheduler : str, distributed.Client or cluster, default=None
    The dask scheduler (an address, a client or a cluster) of ``backend="dask"``.""",
    "cache_dir": """cache_dir : str, path-like or None, default=None
    Per-run cache: each finished run is written there and read back by a
    later fit instead of being rerun (a killed study resumes).""",
    "progress": """progress : bool, default=False
    Show a progress bar of the runs.""",
    "device": """device : str or None, default=None
    Where every run trains (recorded in ``settings_``); None keeps the estimator's.""",
    "vectorize": """vectorize : "auto" or bool, default="auto"
    Train runs that differ only in their seed together, with
    :class:`hw1sk.ensemble.SeedEnsemble` (one vectorized pass per group
    and one cache file per group; the numbers agree with separate fits
    to floating-point rounding, and do not depend on ``n_jobs``).
    ``"auto"``: groups of at least
    :data:`~hw1sk.studies._base.AUTO_MIN_SEEDS` runs, cut into pieces of
    at most :data:`~hw1sk.studies._base.AUTO_MAX_SEEDS` (run side by side
    by ``n_jobs``), falling back to separate fits silently where the
    ensemble cannot vectorize the estimator, and keeping apart the runs
    of an estimator with a plateau or target stop (each seed stops at its
    own epoch, so a group costs its slowest seed; measured with
    ``benchmarks/bench_grouped_restarts.py``: 1.5x faster grouped for the
    1-D function fits, 0.6x for the MNIST CNNs and MLPs); True: every
    group of two or more, stops replayed per seed, with a warning on a
    fallback; False: every run on its own.""",
}

#: ``settings_`` and ``diverged_``, appended to every study's Attributes section.
OUTCOME = {
    "settings_": """settings_ : dict
    Every training setting of the template estimator
    (:func:`~hw1sk.studies._base.describe_estimator`), then what the study
    set and varied, its data sizes and seeds.""",
    "diverged_": """diverged_ : pandas.DataFrame
    Diverged runs ({run_labels}, message), left out of the rest.""",
}

#: Shared entries and phrases, by placeholder name.
SHARED = {
    **EXECUTION, **OUTCOME,
    "test_size": """test_size : float or int, default=0.2
    Held-out part of ``(X, y)`` when ``fit`` gets no ``X_test``.""",
    "n_train_n_test": """n_train, n_test : int or None, default={n_train_n_test_defaults}
    Samples drawn from ``X`` and ``X_test`` (split off ``X`` when not given,
    20% for None); None: all.""",
    "n_seeds": """n_seeds : int, default=1
    {runs}; the first seed is the one a single run uses.""",
    "controls": """controls : tuple of {"epochs", "train_loss"}, default=("epochs",)
    Equal epochs, and/or equal train loss (training stops at ``target_loss``).
target_loss : float or None, default=None
    The train loss of the ``"train_loss"`` control (required by it).
max_epochs_cap : int or None, default=None
    Most epochs under ``"train_loss"``; None: 10 x the estimator's ``max_epochs``.""",
    "shortcuts": """{shortcut_names} : {shortcut_types} or None, default=None
    When set, every run's {shortcut_what}{shortcut_batch}; None keeps {shortcut_keeps}.""",
    "run_labels": "their labels",
    "shortcut_keeps": "the estimator's",
    "seed_spread": "with ``_std``, ``_ci_low``, ``_ci_high`` (95% t-interval over the seeds)",
    "control_means": "n_seeds, the mean n_epochs, n_reached, target_reached (all seeds)",
}

_SECTION = re.compile(r"^(\S.*)\n-+$", re.M)


def _append(doc, section, entries):
    """``doc`` with the ``entries`` its ``section`` does not list appended to that section."""
    heads = list(_SECTION.finditer(doc))
    for head, after in zip(heads, [*heads[1:], None]):
        if head.group(1) == section:
            end = after.start() if after is not None else len(doc)
            body = doc[head.end():end].rstrip()
            listed = {name.strip() for line in body.splitlines() if line[:1].strip()
                      for name in line.split(" : ")[0].split(",")}
            missing = "".join("\n" + text for name, text in entries.items() if name not in listed)
            return doc[:head.end()] + body + missing + ("\n\n" + doc[end:] if after else "")
    return doc


def compose(doc, values=None):
    """``doc`` (cleaned, as ``inspect.getdoc`` gives it) with the shared texts in; None: None.

    :data:`EXECUTION` and :data:`OUTCOME` entries are appended where missing, then
    each placeholder (``{name}``, a key of :data:`SHARED` or ``values``) is replaced.
    """
    if not doc:
        return doc
    texts = {**SHARED, **(values or {})}
    doc = _append(_append(inspect.cleandoc(doc), "Parameters", EXECUTION), "Attributes", OUTCOME)
    for _ in range(2):  # shared texts hold fields of their own
        doc = re.sub(r"\{(\w+)\}", lambda m: texts.get(m.group(1), m.group(0)), doc)
    return doc


def shortcut_values(names):
    """The fields of the ``{shortcuts}`` entry of a study with the shortcut parameters ``names``."""
    what = {"hidden": "``module__hidden``"}
    types = {"hidden": "tuple of int", "lr": "float", "max_epochs": "int", "batch_size": "int"}
    return {"shortcut_names": ", ".join(names),
            "shortcut_types": ", ".join(types[n] for n in names) + (", each" if names[1:] else ""),
            "shortcut_what": ", ".join(what.get(n, n) for n in names),
            "shortcut_batch": " (batch_size=-1: full batch)" if "batch_size" in names else ""}
