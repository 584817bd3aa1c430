"""Figures of HW1-1, deep versus shallow: loss curves, fitted functions, training curves.

Each function takes a fitted :class:`~hw1sk.studies.deep_shallow.DeepShallowStudy`
(or the DataFrame it stores) and returns a :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["plot_loss_curves", "plot_predictions", "plot_training_curves"]

_DATA_COLUMNS = ("function", "dataset")


def _frame(obj, attribute):
    """``obj.<attribute>`` of a fitted study, or ``obj`` itself when it is a DataFrame."""
    if isinstance(obj, pd.DataFrame):
        return obj
    if hasattr(obj, "_check_fitted"):
        obj._check_fitted()
    frame = getattr(obj, attribute, None)
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"{type(obj).__name__} has no {attribute} DataFrame"
                         + (" (predictions are kept for regression studies only)."
                            if attribute == "predictions_" else "."))
    return frame


def _data_column(frame):
    for column in _DATA_COLUMNS:
        if column in frame.columns:
            return column
    raise ValueError(f"the DataFrame needs a 'function' or 'dataset' column; it has "
                     f"{list(frame.columns)}.")


def _select(frame, column, names, what):
    """Rows of the chosen data sets (all when ``names`` is None), and their names in order."""
    available = list(pd.unique(frame[column]))
    if names is None:
        return frame, available
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"{what} {unknown} not in the results; choose from {available}.")
    return frame[frame[column].isin(names)], names


def _keep_restarts(frame, restarts):
    if restarts == "best":
        return frame[frame["best"]] if "best" in frame.columns else frame
    if restarts == "all":
        return frame
    raise ValueError(f"restarts must be 'best' or 'all', got {restarts!r}.")


def _model_label(model, rows):
    if "n_params" in rows.columns:
        return f"{model} ({int(rows['n_params'].iloc[0])} params)"
    return str(model)


def _axes_row(n, width=5.5, height=3.8):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False,
                             layout="constrained")
    return fig, list(axes[0])


def plot_loss_curves(study, function=None, restarts="best"):
    """Training loss against epoch (log y), all models in one chart per function or data set.

    Parameters
    ----------
    study : fitted DeepShallowStudy or its ``results_`` DataFrame
    function : str or list of str, optional
        The functions (or data sets) to draw, one axis each; all when None.
    restarts : {"best", "all"}, default="best"
        Draw each model's best restart, or every restart (the best one
        solid, the others thin and faint).

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axis per function, one line per model (per restart with
        ``restarts="all"``).

    Raises
    ------
    ValueError
        For an unknown ``function`` or ``restarts``.
    """
    results = _frame(study, "results_")
    column = _data_column(results)
    results, names = _select(results, column, function, column)
    results = _keep_restarts(results, restarts)
    fig, axes = _axes_row(len(names))
    colors = {m: f"C{i}" for i, m in enumerate(pd.unique(results["model"]))}
    for ax, name in zip(axes, names):
        part = results[results[column] == name]
        for model, rows in part.groupby("model", sort=False):
            for restart, run in rows.groupby("restart", sort=True):
                best = bool(run["best"].iloc[0]) if "best" in run.columns else True
                label = _model_label(model, run) if best else None
                ax.plot(run["epoch"], run["train_loss"], color=colors[model], label=label,
                        lw=1.6 if best else 0.8, alpha=1.0 if best else 0.4)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_title(f"{column} {name!s}: training loss")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def plot_predictions(study, function=None, restarts="best"):
    """Each model's prediction against the ground truth, one axis per function.

    Parameters
    ----------
    study : fitted DeepShallowStudy (regression) or its ``predictions_`` DataFrame
    function : str or list of str, optional
        The functions to draw; all when None.
    restarts : {"best", "all"}, default="best"
        Each model's best restart, or every restart (others faint).

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axis per function: the ground truth (black) and one line per
        model (per restart with ``restarts="all"``).

    Raises
    ------
    ValueError
        For a classification study (no predictions), an unknown ``function``
        or ``restarts``.
    """
    predictions = _frame(study, "predictions_")
    column = _data_column(predictions)
    predictions, names = _select(predictions, column, function, column)
    predictions = _keep_restarts(predictions, restarts)
    fig, axes = _axes_row(len(names))
    colors = {m: f"C{i}" for i, m in enumerate(pd.unique(predictions["model"]))}
    for ax, name in zip(axes, names):
        part = predictions[predictions[column] == name]
        truth = part[(part["model"] == part["model"].iloc[0])
                     & (part["restart"] == part["restart"].iloc[0])]
        ax.plot(truth["x"], truth["y_true"], color="black", lw=2.2, label="ground truth")
        for model, rows in part.groupby("model", sort=False):
            for restart, run in rows.groupby("restart", sort=True):
                best = bool(run["best"].iloc[0]) if "best" in run.columns else True
                ax.plot(run["x"], run["y_pred"], color=colors[model],
                        label=str(model) if best else None,
                        lw=1.4 if best else 0.8, alpha=1.0 if best else 0.4)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.set_title(f"{column} {name!s}: prediction vs ground truth")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    return fig


def plot_training_curves(study, dataset=None):
    """Training loss and accuracy per epoch (two panels), with the test accuracy.

    Parameters
    ----------
    study : fitted DeepShallowStudy (classification) or its ``results_`` DataFrame
    dataset : str, optional
        The data set to draw when the results hold several; the only one otherwise.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Left: training loss (log y); right: training accuracy (solid) and,
        when recorded, test accuracy (dashed, final value in the legend).
        One color per model (its best restart).

    Raises
    ------
    ValueError
        For results without ``train_acc`` (a regression study), or an
        ambiguous or unknown ``dataset``.
    """
    results = _frame(study, "results_")
    if "train_acc" not in results.columns:
        raise ValueError("plot_training_curves needs classification results (a train_acc "
                         "column); use plot_loss_curves for function fits.")
    column = _data_column(results)
    results, names = _select(results, column, dataset, column)
    if len(names) != 1:
        raise ValueError(f"the results hold several data sets {names}; choose one with dataset=.")
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    results = _keep_restarts(results, "best")
    fig, (ax_loss, ax_acc) = _axes_row(2)
    has_test = "test_acc" in results.columns
    for i, (model, run) in enumerate(results.groupby("model", sort=False)):
        color = f"C{i}"
        ax_loss.plot(run["epoch"], run["train_loss"], color=color,
                     marker="o", ms=3, label=_model_label(model, run))
        test = run.dropna(subset=["test_acc"]) if has_test else run.iloc[:0]
        # one legend entry per model: the final test accuracy when there is one
        ax_acc.plot(run["epoch"], run["train_acc"], color=color, marker="o", ms=3,
                    label=None if len(test) else f"{model}: train")
        if len(test):
            ax_acc.plot(test["epoch"], test["test_acc"], color=color, ls="--", marker="s",
                        ms=3, label=f"{model}: test {test['test_acc'].iloc[-1]:.1%}")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title(f"{names[0]}: training loss")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title(f"{names[0]}: accuracy" + (" (solid: train, dashed: test)"
                                                if has_test else " (train)"))
    ax_acc.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    ax_loss.legend(fontsize="small")
    ax_acc.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    return fig
