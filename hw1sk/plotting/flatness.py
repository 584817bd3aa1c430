"""Figures of HW1-3, flatness versus generalization: interpolation, sensitivity, sharpness.

Each function takes a fitted study (:class:`~hw1sk.studies.interpolation.InterpolationStudy`,
:class:`~hw1sk.studies.sensitivity.SensitivityStudy`, or a fitted
:class:`~hw1sk.transformers.ParameterInterpolator`) or the ``results_``
DataFrame it stores, and returns a :class:`matplotlib.figure.Figure`.
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


def _subplots(n, width=5.5, height=4.0):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False,
                             layout="constrained")
    return fig, list(axes[0])


def plot_interpolation(study, pair=None):
    """Loss (log scale, left) and accuracy (right) along θ(α) = (1 − α) θ₁ + α θ₂.

    One axis per pair of models, with a twin axis for the accuracy; train
    solid, test dashed; dotted vertical lines mark the two trained models
    (α = 0 and α = 1).

    Parameters
    ----------
    study : fitted InterpolationStudy, fitted ParameterInterpolator, or a DataFrame
        The DataFrame needs columns ``alpha``, ``split``, ``loss``,
        ``accuracy``, and ``pair`` when it holds several pairs.
    pair : str or list of str, optional
        Pairs to draw (``"batch_size"``, ``"lr"``); all when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        ``2 * n_pairs`` axes: each pair's loss axis followed by its accuracy twin.

    See Also
    --------
    hw1sk.studies.interpolation.InterpolationStudy
    """
    frame = study_frame(study, "results_", ["alpha", "split", "loss", "accuracy"])
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
        rows = frame[frame["pair"] == name]
        acc_ax = ax.twinx()
        for split in pd.unique(rows["split"]):
            part = rows[rows["split"] == split].sort_values("alpha")
            style = _SPLIT_STYLE.get(split, ":")
            ax.plot(part["alpha"], part["loss"], style, color=_LOSS_COLOR,
                    label=f"{split} loss")
            acc_ax.plot(part["alpha"], part["accuracy"], style, color=_ACC_COLOR,
                        label=f"{split} accuracy")
        for end in (0.0, 1.0):
            ax.axvline(end, color="0.6", linestyle=":", linewidth=1)
        ax.set_yscale("log")
        ax.set_xlabel("α   (θ = (1 − α) θ₁ + α θ₂)")
        ax.set_ylabel("loss (log scale)", color=_LOSS_COLOR)
        acc_ax.set_ylabel("accuracy", color=_ACC_COLOR)
        title = f"interpolation: models differing in {name}" if name else "interpolation"
        ends = [settings.get(f"{name} pair, model {k}") for k in (1, 2)]
        if all(ends):
            first, second = (e.split(", seed")[0] for e in ends)
            title += f"\nθ₁: {first} | θ₂: {second}"
        ax.set_title(title, fontsize=10)
        handles = ax.get_legend_handles_labels()
        twin_handles = acc_ax.get_legend_handles_labels()
        ax.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=8,
                  loc="best")
    note = _diverged_note(study, ["pair", "endpoint", "batch_size", "lr"])
    if note:
        fig.suptitle(note, fontsize=8, color="tab:red")
    return fig


def _batch_size_frame(study, measures):
    return study_frame(study, "results_", ["batch_size", *measures]).sort_values("batch_size")


def _batch_size_axis(ax, batch_sizes):
    """Log-2 x axis ticked at the batch sizes themselves, written as plain numbers."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.set_xticks(list(batch_sizes), [str(int(b)) for b in batch_sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("batch size (log scale)")


def plot_sensitivity(study, measure="sensitivity"):
    """Loss and accuracy against batch size (log x), with the sensitivity on a twin axis.

    Two panels: train/test loss (left) and train/test accuracy (right), each
    with ``measure`` on its right-hand twin axis; train solid, test dashed.

    Parameters
    ----------
    study : fitted SensitivityStudy or its ``results_`` DataFrame
        Columns ``batch_size``, ``train_loss``, ``test_loss``,
        ``train_accuracy``, ``test_accuracy`` and ``measure``.
    measure : {"sensitivity", "loss_input_gradient_norm"}, default="sensitivity"
        The input sensitivity to draw.

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
    frame = _batch_size_frame(study, ["train_loss", "test_loss", "train_accuracy",
                                      "test_accuracy", measure])
    fig, axes = _subplots(2)
    for ax, quantity in zip(axes, ("loss", "accuracy")):
        color = _LOSS_COLOR if quantity == "loss" else _ACC_COLOR
        for split in ("train", "test"):
            ax.plot(frame["batch_size"], frame[f"{split}_{quantity}"], _SPLIT_STYLE[split],
                    marker="o", color=color, label=f"{split} {quantity}")
        _batch_size_axis(ax, frame["batch_size"])
        ax.set_ylabel(quantity, color=color)
        twin = ax.twinx()
        twin.plot(frame["batch_size"], frame[measure], "-", marker="s", color=_MEASURE_COLOR,
                  label=_MEASURE_LABELS[measure])
        twin.set_ylabel(_MEASURE_LABELS[measure], color=_MEASURE_COLOR)
        ax.set_title(f"{quantity} and {_MEASURE_LABELS[measure]} vs batch size", fontsize=10)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="best")
    note = _diverged_note(study, ["batch_size", "lr"])
    if note:
        fig.suptitle(note, fontsize=8, color="tab:red")
    return fig


def plot_sharpness(study):
    """ε-sharpness (left) and the top Hessian eigenvalue (right twin) against batch size.

    Parameters
    ----------
    study : fitted SensitivityStudy or its ``results_`` DataFrame
        Columns ``batch_size``, ``sharpness``, ``top_hessian_eigenvalue``; a
        column that is all NaN (measure switched off) is not drawn.

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
    frame = _batch_size_frame(study, ["sharpness", "top_hessian_eigenvalue"])
    present = [m for m in ("sharpness", "top_hessian_eigenvalue")
               if np.isfinite(frame[m].to_numpy(dtype=float)).any()]
    if not present:
        raise ValueError("neither sharpness nor top_hessian_eigenvalue was computed "
                         "(fit the study with sharpness=True or hessian_top=True).")
    fig, (ax,) = _subplots(1, width=6.0)
    axes = [ax] if len(present) == 1 else [ax, ax.twinx()]
    colors = {"sharpness": "tab:purple", "top_hessian_eigenvalue": "tab:green"}
    for a, m, style in zip(axes, present, ("-", "--")):
        a.plot(frame["batch_size"], frame[m], style, marker="o", color=colors[m],
               label=_MEASURE_LABELS[m])
        a.set_ylabel(_MEASURE_LABELS[m], color=colors[m])
    _batch_size_axis(ax, frame["batch_size"])
    settings = getattr(study, "settings_", {}) if not isinstance(study, pd.DataFrame) else {}
    subtitle = settings.get("sharpness") if "sharpness" in present else None
    ax.set_title("sharpness vs batch size" + (f"\n({subtitle})" if subtitle else ""),
                 fontsize=10)
    handles, labels = [], []
    for a in axes:
        h, lab = a.get_legend_handles_labels()
        handles += h
        labels += lab
    ax.legend(handles, labels, fontsize=8, loc="best")
    note = _diverged_note(study, ["batch_size", "lr"])
    if note:
        fig.suptitle(note, fontsize=8, color="tab:red")
    return fig
