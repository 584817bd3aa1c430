"""Figures of HW1-3, flatness versus generalization: interpolation, sensitivity, sharpness.

Each function takes a fitted study (:class:`~hw1sk.studies.interpolation.InterpolationStudy`,
:class:`~hw1sk.studies.sensitivity.SensitivityStudy`, or a fitted
:class:`~hw1sk.transformers.ParameterInterpolator`) or the ``results_``
DataFrame it stores, and returns a :class:`matplotlib.figure.Figure`.  With
several seeds per condition the figures draw the mean over the seeds with its
spread (error bars of ±1 standard deviation, or a min-max band along the
interpolation line); ``control`` selects the training control drawn
(``"epochs"`` or ``"train_loss"``, the first in the results by default).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._frames import study_frame

__all__ = ["plot_interpolation", "plot_sensitivity", "plot_sharpness"]

_SPLIT_STYLE = {"train": "-", "test": "--"}
_LOSS_COLOR = "tab:blue"
_ACC_COLOR = "tab:orange"
_MEASURE_COLOR = "tab:red"
_MEASURE_LABELS = {
    "sensitivity": r"sensitivity $\|\partial f/\partial x\|_F$",
    "loss_input_gradient_norm": r"$\|\partial L/\partial x\|_2$",
    "sharpness": "ε-sharpness",
    "top_hessian_eigenvalue": "top Hessian eigenvalue",
}


def _diverged_note(obj, columns):
    """A one-line note listing the diverged runs of a fitted study, or None."""
    diverged = getattr(obj, "diverged_", None)
    if not isinstance(diverged, pd.DataFrame) or diverged.empty:
        return None
    shown = [c for c in columns if c in diverged.columns]
    runs = "; ".join(", ".join(f"{c}={row[c]}" for c in shown) for _, row in diverged.iterrows())
    return f"diverged, not shown: {runs}"


_CONTROL_TITLES = {"epochs": "equal epochs", "train_loss": "equal train loss"}


def _of_control(frame, control):
    """The rows of ``control`` (the first present when None), the control and a title suffix.

    The suffix names the control (`` (equal train loss)``), empty when the
    results hold "epochs" alone (the figures of a study without controls);
    a frame without a ``control`` column is returned whole (control None).
    """
    if "control" not in frame.columns:
        if control is not None:
            raise ValueError("control given, but the results have no 'control' column.")
        return frame, None, ""
    available = list(pd.unique(frame["control"]))
    control = available[0] if control is None and available else control
    if control not in available:
        raise ValueError(f"control {control!r} not in the results; choose from {available}.")
    suffix = ("" if available == ["epochs"] else
              f" ({_CONTROL_TITLES.get(control, control)})")
    return frame[frame["control"] == control], control, suffix


def _seed_spread(frame, by, columns):
    """Mean, standard deviation, min and max of ``columns`` over the rows of each ``by``."""
    grouped = frame.groupby(by, sort=True)[columns]
    return {name: getattr(grouped, name)().reset_index()
            for name in ("mean", "std", "min", "max")}


def _with_error_bars(ax, x, mean, std, style, **kwargs):
    """``ax.plot`` of ``mean``, with ±``std`` error bars where it is known (several seeds)."""
    std = np.asarray(std, dtype=float)
    if np.isfinite(std).any():
        return ax.errorbar(x, mean, yerr=np.nan_to_num(std), fmt=style, capsize=3, **kwargs)
    return ax.plot(x, mean, style, **kwargs)


def _unreached_note(frame):
    """A note naming the batch sizes whose models missed the target train loss, or None."""
    if "target_reached" not in frame.columns or frame["target_reached"].isna().all():
        return None
    missed = frame[frame["target_reached"].eq(False)]
    if missed.empty:
        return None
    counts = missed.groupby("batch_size").size()
    total = frame.groupby("batch_size").size()
    return "target train loss not reached within the cap: " + ", ".join(
        f"batch {int(b)} ({n}/{total[b]} seeds)" for b, n in counts.items())


def _suptitle(fig, *notes):
    notes = [n for n in notes if n]
    if notes:
        fig.suptitle("\n".join(notes), fontsize=8, color="tab:red")


def _subplots(n, width=5.5, height=4.0):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False,
                             layout="constrained")
    return fig, list(axes[0])


def plot_interpolation(study, pair=None, control=None):
    """Loss (log scale, left) and accuracy (right) along θ(α) = (1 − α) θ₁ + α θ₂.

    One axis per pair of models, with a twin axis for the accuracy; train
    solid, test dashed; dotted vertical lines mark the two trained models
    (α = 0 and α = 1).  With several seeds: the mean line and a min-max band.

    Parameters
    ----------
    study : fitted InterpolationStudy, fitted ParameterInterpolator, or a DataFrame
        The DataFrame needs columns ``alpha``, ``split``, ``loss``,
        ``accuracy``, and ``pair`` when it holds several pairs (``seed``,
        ``control`` when it holds several).
    pair : str or list of str, optional
        Pairs to draw (``"batch_size"``, ``"lr"``); all when None.
    control : {"epochs", "train_loss"}, optional
        The training control drawn; the first in the results when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        ``2 * n_pairs`` axes: each pair's loss axis followed by its accuracy twin.

    See Also
    --------
    hw1sk.studies.interpolation.InterpolationStudy
    """
    frame = study_frame(study, "results_", ["alpha", "split", "loss", "accuracy"])
    frame, control, suffix = _of_control(frame, control)
    if "pair" not in frame.columns:
        frame = frame.assign(pair="")
    available = list(pd.unique(frame["pair"]))
    if pair is None:
        pairs = available
    else:
        pairs = [pair] if isinstance(pair, str) else list(pair)
        unknown = [p for p in pairs if p not in available]
        if unknown:
            raise ValueError(f"pair {unknown} not in the results; choose from {available}.")
    settings = getattr(study, "settings_", {}) if not isinstance(study, pd.DataFrame) else {}

    fig, axes = _subplots(len(pairs))
    for ax, name in zip(axes, pairs):
        _interpolation_axis(ax, frame[frame["pair"] == name])
        title = (f"interpolation: models differing in {name}" if name
                 else "interpolation") + suffix
        ends = [settings.get(f"{name} pair, model {k}") for k in (1, 2)]
        if all(ends):
            first, second = (e.split(", seed")[0] for e in ends)
            title += f"\nθ₁: {first} | θ₂: {second}"
        ax.set_title(title, fontsize=10)
    _suptitle(fig, _diverged_note(study, ["control", "pair", "endpoint", "batch_size", "lr"]),
              _missed_pairs_note(study, control))
    return fig


def _interpolation_axis(ax, rows):
    """One pair's loss and accuracy curves (means over the seeds, min-max bands)."""
    acc_ax = ax.twinx()
    n_seeds = rows["seed"].nunique() if "seed" in rows.columns else 1
    for split in pd.unique(rows["split"]):
        spread = _seed_spread(rows[rows["split"] == split], "alpha", ["loss", "accuracy"])
        style = _SPLIT_STYLE.get(split, ":")
        for a, column, color in ((ax, "loss", _LOSS_COLOR), (acc_ax, "accuracy", _ACC_COLOR)):
            mean = spread["mean"]
            label = f"{split} {column}" + (f" (mean of {n_seeds} seeds)" if n_seeds > 1 else "")
            a.plot(mean["alpha"], mean[column], style, color=color, label=label)
            if n_seeds > 1:
                a.fill_between(mean["alpha"], spread["min"][column], spread["max"][column],
                               color=color, alpha=0.15, linewidth=0)
    for end in (0.0, 1.0):
        ax.axvline(end, color="0.6", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("α   (θ = (1 − α) θ₁ + α θ₂)")
    ax.set_ylabel("loss (log scale)", color=_LOSS_COLOR)
    acc_ax.set_ylabel("accuracy", color=_ACC_COLOR)
    handles = ax.get_legend_handles_labels()
    twin_handles = acc_ax.get_legend_handles_labels()
    ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=8,
              loc="best")


def _missed_pairs_note(study, control):
    """A note naming the pairs whose end points missed the target train loss, or None."""
    summary = getattr(study, "summary_", None)
    if control != "train_loss" or not isinstance(summary, pd.DataFrame) \
            or "target_reached" not in summary.columns:
        return None
    rows = summary[(summary["control"] == control) & summary["target_reached"].eq(False)]
    pairs = list(pd.unique(rows["pair"]))
    return (f"target train loss not reached within the cap by some end point of: "
            f"{', '.join(pairs)}" if pairs else None)


def _batch_size_frame(study, measures, control):
    """The rows of ``control``, their mean and std of ``measures`` per batch size, the control."""
    frame = study_frame(study, "results_", ["batch_size", *measures])
    frame, control, suffix = _of_control(frame, control)
    spread = _seed_spread(frame, "batch_size", list(measures))
    return frame, spread["mean"], spread["std"], suffix


def _batch_size_axis(ax, batch_sizes):
    """Log-2 x axis ticked at the batch sizes themselves, written as plain numbers."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batch_sizes), [str(int(b)) for b in batch_sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size (log scale)")


def plot_sensitivity(study, measure="sensitivity", control=None):
    """Loss and accuracy against batch size (log x), with the sensitivity on a twin axis.

    Two panels: train/test loss (left) and train/test accuracy (right), each
    with ``measure`` on its right-hand twin axis; train solid, test dashed.
    With several seeds per batch size: their mean with ±1 std error bars.

    Parameters
    ----------
    study : fitted SensitivityStudy or its ``results_`` DataFrame
        Columns ``batch_size``, ``train_loss``, ``test_loss``,
        ``train_accuracy``, ``test_accuracy`` and ``measure``.
    measure : {"sensitivity", "loss_input_gradient_norm"}, default="sensitivity"
        The input sensitivity to draw.
    control : {"epochs", "train_loss"}, optional
        The training control drawn; the first in the results when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Four axes: loss, its twin, accuracy, its twin.

    See Also
    --------
    hw1sk.studies.sensitivity.SensitivityStudy
    plot_sharpness
    """
    if measure not in ("sensitivity", "loss_input_gradient_norm"):
        raise ValueError(f"measure must be 'sensitivity' or 'loss_input_gradient_norm', got "
                         f"{measure!r}.")
    frame, mean, std, suffix = _batch_size_frame(
        study, ["train_loss", "test_loss", "train_accuracy", "test_accuracy", measure], control)
    fig, axes = _subplots(2)
    for ax, quantity in zip(axes, ("loss", "accuracy")):
        color = _LOSS_COLOR if quantity == "loss" else _ACC_COLOR
        for split in ("train", "test"):
            column = f"{split}_{quantity}"
            _with_error_bars(ax, mean["batch_size"], mean[column], std[column],
                             _SPLIT_STYLE[split], marker="o", color=color,
                             label=f"{split} {quantity}")
        _batch_size_axis(ax, mean["batch_size"])
        ax.set_ylabel(quantity, color=color)
        twin = ax.twinx()
        _with_error_bars(twin, mean["batch_size"], mean[measure], std[measure], "-",
                         marker="s", color=_MEASURE_COLOR, label=_MEASURE_LABELS[measure])
        twin.set_ylabel(_MEASURE_LABELS[measure], color=_MEASURE_COLOR)
        ax.set_title(f"{quantity} and {_MEASURE_LABELS[measure]} vs batch size{suffix}",
                     fontsize=10)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="best")
    _suptitle(fig, _diverged_note(study, ["control", "batch_size", "seed", "lr"]),
              _unreached_note(frame))
    return fig


def plot_sharpness(study, control=None):
    """ε-sharpness (left) and the top Hessian eigenvalue (right twin) against batch size.

    With several seeds per batch size: their mean with ±1 std error bars.

    Parameters
    ----------
    study : fitted SensitivityStudy or its ``results_`` DataFrame
        Columns ``batch_size``, ``sharpness``, ``top_hessian_eigenvalue``; a
        column that is all NaN (measure switched off) is not drawn.
    control : {"epochs", "train_loss"}, optional
        The training control drawn; the first in the results when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axis per measure present: sharpness, then the eigenvalue on a twin
        (or alone on the only axis).

    Raises
    ------
    ValueError
        When neither measure was computed.
    """
    frame, mean, std, suffix = _batch_size_frame(
        study, ["sharpness", "top_hessian_eigenvalue"], control)
    present = [m for m in ("sharpness", "top_hessian_eigenvalue")
               if np.isfinite(frame[m].to_numpy(dtype=float)).any()]
    if not present:
        raise ValueError("neither sharpness nor top_hessian_eigenvalue was computed "
                         "(fit the study with sharpness=True or hessian_top=True).")
    fig, (ax,) = _subplots(1, width=6.0)
    axes = [ax] if len(present) == 1 else [ax, ax.twinx()]
    colors = {"sharpness": "tab:purple", "top_hessian_eigenvalue": "tab:green"}
    for a, m, style in zip(axes, present, ("-", "--")):
        _with_error_bars(a, mean["batch_size"], mean[m], std[m], style, marker="o",
                         color=colors[m], label=_MEASURE_LABELS[m])
        a.set_ylabel(_MEASURE_LABELS[m], color=colors[m])
    _batch_size_axis(ax, mean["batch_size"])
    settings = getattr(study, "settings_", {}) if not isinstance(study, pd.DataFrame) else {}
    subtitle = settings.get("sharpness") if "sharpness" in present else None
    ax.set_title(f"sharpness vs batch size{suffix}" + (f"\n({subtitle})" if subtitle else ""),
                 fontsize=10)
    handles, labels = [], []
    for a in axes:
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    ax.legend(handles, labels, fontsize=8, loc="best")
    _suptitle(fig, _diverged_note(study, ["control", "batch_size", "seed", "lr"]),
              _unreached_note(frame))
    return fig
