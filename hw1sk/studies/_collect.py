"""What the studies share besides the base: collecting runs (scores, stacked frames,
settings), checks, and the traced run of the trajectory studies (:func:`trace_run`)."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import Interval

from ..evaluation import encode_targets, evaluate_module
from ..parameters import assign_flat_parameters, flatten_parameters, layer_slices
from ..seeding import spawn_seeds
from ._base import describe_estimator, describe_value, prepare_data, train_run, with_callbacks
from ._defaults import describe_module

#: Parameter constraints: a count (an int >= 1); a count or None; a held-out part
#: (a fraction in (0, 1) or a number of samples).
COUNT = [Interval(Integral, 1, None, closed="left")]
OPTIONAL_COUNT = [*COUNT, None]
TEST_SIZE = [Interval(Real, 0, 1, closed="neither"), *COUNT]


def completed(labels, runs):
    """``(label, run)`` of every run that did not diverge (diverged runs are None)."""
    return [(label, run) for label, run in zip(labels, runs) if run is not None]


def final_scores(run):
    """Final ``train_loss``, ``train_accuracy`` and, when scored, ``test_loss``, ``test_accuracy``.

    ``run`` is a result of :func:`~hw1sk.studies._base.train_run`.
    """
    scores = {"train_loss": run["train"]["loss"], "train_accuracy": run["train"]["accuracy"]}
    if run["test"] is not None:
        scores.update(test_loss=run["test"]["loss"], test_accuracy=run["test"]["accuracy"])
    return scores


def stack(pairs, first=False):
    """The frames of ``(labels, frame)`` pairs, each with its labels as columns, stacked.

    The label columns come after the frame's own (before them with
    ``first``); an empty DataFrame when there are no pairs.
    """
    frames = [pd.concat([pd.DataFrame(labels, index=frame.index), frame], axis=1) if first
              else frame.assign(**labels) for labels, frame in pairs]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def model_settings(module, n_params):
    """``{"model": "MLP 784-128-10", "n_params": n_params}`` for a study's ``settings_``."""
    return {"model": describe_module(module), "n_params": int(n_params)}


def data_sizes(data):
    """``n_train`` and ``n_test`` (None without held-out data) of a study's data."""
    return {"n_train": int(data.X.shape[0]),
            "n_test": None if data.X_test is None else int(data.X_test.shape[0])}


def sample_data(X, y, X_test, y_test, n_train, n_test, seed):
    """:func:`~hw1sk.studies._base.prepare_data` with ``n_train`` and ``n_test`` subsets.

    Without ``X_test``, ``n_test`` samples (20% when None) are split off
    ``(X, y)``; the three seeds are spawned from ``seed``.
    """
    return prepare_data(X, y, X_test, y_test, test_size=None if n_test is not None else 0.2,
                        n_train=n_train, n_test=n_test, seeds=spawn_seeds(seed, 3))


def is_positive_int(value):
    """An integer >= 1 (not a bool)."""
    return isinstance(value, Integral) and not isinstance(value, bool) and value >= 1


def score_snapshots(module, criterion, snapshots, X, y):
    """Loss and accuracy of ``module`` with each row of ``snapshots`` as its parameters.

    A copy of the module is evaluated (eval mode, its own buffers); ``snapshots``
    are flat parameters (:func:`hw1sk.parameters.flatten_parameters`), ``y``
    labels ``0..k-1`` or real targets.  Returns ``losses, accuracies``, arrays
    of shape (n_snapshots,); accuracies are NaN for real targets.
    """
    work = copy.deepcopy(module)
    y = np.asarray(y)
    y = y.reshape(-1, 1) if y.dtype.kind == "f" and y.ndim == 1 else y  # as the criterion wants
    scores = []
    for theta in np.asarray(snapshots):
        assign_flat_parameters(work, torch.as_tensor(theta))
        scores.append(evaluate_module(work, criterion, X, y))
    return (np.array([s["loss"] for s in scores], dtype=float),
            np.array([s["accuracy"] for s in scores], dtype=float))


def _on_cpu(obj):
    """``obj`` if it is no module or is on the CPU, else a CPU copy (the fit keeps its own)."""
    if not isinstance(obj, torch.nn.Module) or all(
            t.device.type == "cpu" for t in [*obj.parameters(), *obj.buffers()]):
        return obj
    return copy.deepcopy(obj).cpu()


def with_trace_callbacks(estimator, every=3):
    """``estimator`` with a :class:`~hw1sk.callbacks.WeightTrace` (every ``every`` epochs) and a
    :class:`~hw1sk.callbacks.GradNormTrace` appended: what :func:`trace_run` trains.

    A study adds them to its template, so that runs differing only in their
    seed can be trained together (``vectorize``).
    """
    from ..callbacks import GradNormTrace, WeightTrace

    return with_callbacks(estimator, ("weight_trace", WeightTrace(every=int(every))),
                          ("grad_norm_trace", GradNormTrace()))


def trace_run(estimator, X, y, X_test=None, y_test=None, seed=0, every=3, test_every=1,
              score=True):
    """One training run with weight snapshots and gradient norms (a sweep task).

    Trains a clone of ``estimator`` with :class:`~hw1sk.callbacks.WeightTrace`
    (every ``every`` epochs; initial and final weights included) and
    :class:`~hw1sk.callbacks.GradNormTrace` by :func:`~hw1sk.studies._base.train_run`,
    whose dict it returns with ``snapshots`` (n_snapshots, n_params), ``epochs``,
    ``loss``, ``accuracy`` (each snapshot scored on ``(X, y)`` with ``score``, else
    the epoch's running training scores), ``grad_norms`` (DataFrame),
    ``layer_slices``, the trained ``module`` and ``criterion`` (on the CPU) and
    ``targets`` (``y`` as the criterion takes it).
    """
    traced = {name for name, _ in (estimator.callbacks or []) if isinstance(name, str)}
    est = (estimator if {"weight_trace", "grad_norm_trace"} <= traced  # a study's template
           else with_trace_callbacks(clone(estimator), every))
    run = train_run(est, X, y, X_test, y_test, seed=seed, test_every=test_every)
    fitted = run["estimator"]
    snapshots, epochs, losses, accuracies = _trajectory(fitted, run["history"])
    module, criterion = _on_cpu(fitted.module_), _on_cpu(fitted.criterion_)
    targets = encode_targets(fitted, y)
    if score:
        losses, accuracies = score_snapshots(module, criterion, snapshots, X, targets)
    return {
        **run, "snapshots": snapshots, "epochs": np.asarray(epochs, dtype=int),
        "loss": np.asarray(losses, dtype=float), "accuracy": np.asarray(accuracies, dtype=float),
        "grad_norms": dict(fitted.callbacks_)["grad_norm_trace"].to_frame(),
        "layer_slices": dict(layer_slices(module)), "module": module, "criterion": criterion,
        "targets": targets,
    }


def _trajectory(fitted, history):
    """The WeightTrace's snapshots, epochs and running scores, the final weights appended."""
    weights = dict(fitted.callbacks_)["weight_trace"]
    snapshots, epochs = weights.to_array(), list(weights.epochs_)
    losses, accuracies = list(weights.train_loss_), list(weights.train_accuracy_)
    if epochs[-1] != len(history):
        final = flatten_parameters(fitted.module_).to(device="cpu", dtype=torch.float32)
        snapshots = np.vstack([snapshots, final.numpy()[None]])
        epochs.append(len(history))
        losses.append(float(history["train_loss"].iloc[-1]))
        accuracies.append(float(history["train_acc"].iloc[-1])
                          if "train_acc" in history.columns else np.nan)
    return snapshots, epochs, losses, accuracies


def varying_settings(estimators, per_model):
    """Training settings of named estimators: one value where all agree, else "varies by model".

    With ``per_model``, ``"per model"`` gives each estimator's differing settings.
    """
    described = {name: describe_estimator(est) for name, est in estimators.items()}
    out, varying = {}, []
    for key in dict.fromkeys(k for d in described.values() for k in d):
        if len({str(d.get(key)) for d in described.values()}) == 1:
            out[key] = next(iter(described.values())).get(key)
        else:
            out[key], varying = "varies by model", [*varying, key]
    if per_model and varying:
        out["per model"] = {name: {k: describe_value(d.get(k)) for k in varying}
                            for name, d in described.items()}
    return out


# ------------------------------------------------- seeds and training controls (HW1-3 flatness)
#: Parameter constraints of the studies that train each condition with several seeds,
#: under the "epochs" and/or "train_loss" control (:func:`check_controls`).
CONTROL_CONSTRAINTS = {
    "n_seeds": COUNT,
    "controls": ["array-like", str],
    "target_loss": [Interval(Real, 0, None, closed="neither"), None],
    "max_epochs_cap": OPTIONAL_COUNT,
}
CONTROLS = ("epochs", "train_loss")
#: The cap of the "train_loss" control when ``max_epochs_cap`` is None: this many times
#: the estimator's ``max_epochs``.
CAP_FACTOR = 10


def check_controls(study):
    """``study.controls`` as a tuple, checked against ``target_loss``; a ValueError otherwise."""
    controls = ((study.controls,) if isinstance(study.controls, str)
                else tuple(np.asarray(study.controls, dtype=object).ravel()))
    if (not controls or any(c not in CONTROLS for c in controls)
            or len(set(controls)) != len(controls)):
        raise ValueError(f"controls must be a non-empty selection of {CONTROLS} without "
                         f"repeats, got {study.controls!r}.")
    if "train_loss" in controls and study.target_loss is None:
        raise ValueError("target_loss must be set (a positive float) when controls include "
                         "'train_loss'.")
    return controls


def run_seeds(first_seed, n_seeds):
    """``first_seed`` and ``n_seeds - 1`` seeds spawned from it (one seed: today's runs)."""
    return [int(first_seed), *spawn_seeds(int(first_seed), int(n_seeds) - 1)] if n_seeds > 1 \
        else [int(first_seed)]


def controlled_estimator(template, control, study, **params):
    """A clone of ``template`` with ``params`` set, trained under ``control``.

    ``"epochs"``: as it is; ``"train_loss"``: until its train loss reaches
    ``study.target_loss`` (:class:`~hw1sk.training_callbacks.TargetLossStopping`),
    at most ``study.max_epochs_cap`` epochs (None: :data:`CAP_FACTOR` times its
    ``max_epochs``).  One such object is shared by a condition's seeds, so
    that they can be trained together.
    """
    from ..training_callbacks import TargetLossStopping

    est = clone(template).set_params(**params)
    if control == "train_loss":
        cap = study.max_epochs_cap or CAP_FACTOR * int(est.max_epochs)
        with_callbacks(est.set_params(max_epochs=int(cap)),
                       ("target_loss", TargetLossStopping(float(study.target_loss))))
    return est


def control_outcome(net, control):
    """``control``, ``n_epochs`` trained, ``target_reached`` and ``reached_epoch`` of a fit.

    ``target_reached`` is None and ``reached_epoch`` NaN under the "epochs"
    control; ``reached_epoch`` is NaN when the target was not reached.
    """
    stop = dict(net.callbacks_).get("target_loss") if control == "train_loss" else None
    epoch = None if stop is None else stop.reached_epoch_
    return {"control": control, "n_epochs": int(len(net.history_)),
            "target_reached": None if stop is None else epoch is not None,
            "reached_epoch": np.nan if epoch is None else float(epoch)}


def seed_interval(values, confidence=0.95):
    """Mean, standard deviation and ``confidence`` t-interval of ``values`` (NaNs dropped).

    Returns ``(mean, std, low, high, n)``; std and the interval are NaN for
    fewer than two values.
    """
    from scipy import stats

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return np.nan, np.nan, np.nan, np.nan, 0
    mean = float(v.mean())
    if n < 2:
        return mean, np.nan, np.nan, np.nan, n
    std = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / np.sqrt(n)
    return mean, std, mean - half, mean + half, n


def aggregate_seeds(frame, by, measures):
    """Per group of ``by``: each measure's mean (under its name), ``_std``, ``_ci_low``,
    ``_ci_high`` (95% t-interval over the seeds), and ``n_seeds`` (rows of the group)."""
    rows = []
    for key, group in frame.groupby(list(by), sort=False, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        for m in measures:
            mean, std, low, high, _ = seed_interval(group[m])
            row.update({m: mean, f"{m}_std": std, f"{m}_ci_low": low, f"{m}_ci_high": high})
        rows.append({**row, "n_seeds": int(len(group)), **_control_columns(group)})
    columns = [*by, *(f"{m}{s}" for m in measures for s in ("", "_std", "_ci_low", "_ci_high")),
               "n_seeds", *([*(c for c in frame if c.startswith(_EPOCH_COLUMNS)), "n_reached",
                             "target_reached"] if "target_reached" in frame else [])]
    return pd.DataFrame(rows, columns=columns)


def _control_columns(group):
    """A group's mean ``n_epochs*`` and ``reached_epoch*`` columns and, under "train_loss",
    how many seeds reached the target (``n_reached``) and whether all did."""
    if "target_reached" not in group:
        return {}
    out = {c: float(group[c].mean()) for c in group if c.startswith(_EPOCH_COLUMNS)}
    flags = group["target_reached"]
    known = bool(len(flags)) and flags.notna().all()
    return {**out, "n_reached": int(flags.astype(bool).sum()) if known else None,
            "target_reached": bool(flags.astype(bool).all()) if known else None}


_EPOCH_COLUMNS = ("n_epochs", "reached_epoch")


def control_settings(study, template, seeds=None):
    """The seeds (when given) and training controls of a study, for its ``settings_``."""
    controls = check_controls(study)
    out = {"n_seeds": int(study.n_seeds), "controls": ", ".join(controls)}
    if seeds is not None:
        out["seeds (every condition)"] = str(tuple(seeds))
    if "train_loss" in controls:
        cap = study.max_epochs_cap or CAP_FACTOR * int(template.max_epochs)
        out["train_loss control"] = (f"train until train loss <= {study.target_loss:g}, "
                                     f"at most {cap} epochs")
    return out


def seeded_tasks(label, task, seeds):
    """``(label, task)`` once per seed, ``seed`` set in both; every other value shared.

    The runs of one condition then differ only in ``seed`` (the same estimator
    and data objects), so that the base can train them together (``vectorize``).
    """
    return [({**label, "seed": int(s)}, {**task, "seed": s}) for s in seeds]

