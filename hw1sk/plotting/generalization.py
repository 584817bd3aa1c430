"""Figures of HW1-3, generalization: random labels and number of parameters.

Each function takes a fitted study (:class:`~hw1sk.studies.random_labels.RandomLabelStudy`,
:class:`~hw1sk.studies.param_count.ParamCountStudy`) or the ``results_``
DataFrame it stores, and returns a :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

import pandas as pd

from ._frames import study_frame
from .flatness import _diverged_note, _subplots

__all__ = ["plot_random_labels", "plot_param_count"]

_SPLIT_STYLE = {"train": "-", "test": "--"}
_SPLIT_COLOR = {"train": "tab:blue", "test": "tab:red"}
_SPLIT_LABEL = {"train": "train (random labels)", "test": "test (true labels)"}
_METHOD_WORDS = {"shuffle": "shuffled", "uniform": "uniformly drawn"}


def _seed_mean(frame, by, columns):
    """Mean and standard deviation (over its rows: the seeds) of ``columns`` per value of ``by``.

    Also the largest number of rows of one value, the seed count (1: the rows as they are).
    """
    grouped = frame.groupby(by, sort=True)[columns]
    return grouped.mean(), grouped.std(ddof=1), int(grouped.size().max()) if len(frame) else 1


def _seeds_words(n_seeds):
    """How a title names the spread over seeds (nothing for one seed)."""
    return f"mean ± sd over {n_seeds} seeds" if n_seeds > 1 else ""


def _draw_split(part, split, loss_ax, acc_ax):
    """One split's loss and accuracy against epoch: the mean over seeds, a ± sd band; seeds."""
    mean, std, n_seeds = _seed_mean(part, "epoch", ["loss", "accuracy"])
    style = dict(linestyle=_SPLIT_STYLE.get(split, ":"), color=_SPLIT_COLOR.get(split),
                 label=_SPLIT_LABEL.get(split, split))
    for ax, column in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.plot(mean.index, mean[column], **style)
        if n_seeds > 1:
            ax.fill_between(mean.index, mean[column] - std[column], mean[column] + std[column],
                            color=style["color"], alpha=0.2, linewidth=0)
    return n_seeds


def plot_random_labels(study, chance=None):
    """Train and test loss (left) and accuracy (right) against epoch, on random labels.

    Train solid (the running means over each epoch's mini-batches, on the
    random labels), test dashed (held-out images with their true labels,
    scored at the end of each epoch); a dotted line marks chance accuracy.
    With several seeds, the lines are their means and bands ± one standard
    deviation.

    Parameters
    ----------
    study : fitted RandomLabelStudy or its ``results_`` DataFrame
        Columns ``epoch``, ``split``, ``loss``, ``accuracy`` (and ``seed``).
    chance : float, optional
        Chance accuracy to mark; default: the study's ``1 / n_classes``, no
        line for a DataFrame.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Two axes (loss, accuracy), each with one line per split (plus the
        chance line on the accuracy axis) and, with several seeds, a band.

    See Also
    --------
    hw1sk.studies.random_labels.RandomLabelStudy
    """
    frame = study_frame(study, "results_", ["epoch", "split", "loss", "accuracy"])
    settings = {} if isinstance(study, pd.DataFrame) else getattr(study, "settings_", {})
    if chance is None:
        chance = settings.get("chance_accuracy")
    fig, (loss_ax, acc_ax) = _subplots(2, width=5.0)
    present = list(pd.unique(frame["split"]))
    # train before test in the legends, whatever the row order
    splits = [s for s in ("train", "test") if s in present] + \
        [s for s in present if s not in ("train", "test")]
    n_seeds = max([_draw_split(frame[frame["split"] == split], split, loss_ax, acc_ax)
                   for split in splits] or [1])
    if chance is not None:
        acc_ax.axhline(chance, color="0.5", linestyle=":", linewidth=1,
                       label=f"chance ({chance:.0%})")
    loss_ax.set_ylabel("cross-entropy loss")
    acc_ax.set_ylabel("accuracy")
    acc_ax.set_ylim(-0.02, 1.02)
    for ax, what in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(f"random labels: {what} vs epoch" + f" ({_seeds_words(n_seeds)})" * (
            n_seeds > 1), fontsize=10)
        ax.legend(fontsize=8, loc="best")
    if settings.get("model"):
        fig.suptitle(f"{settings['model']} ({settings.get('n_params', 0):,} parameters), "
                     f"{settings.get('n_train', '?')} training images with "
                     f"{_METHOD_WORDS.get(settings.get('label_method'), 'random')} labels",
                     fontsize=10)
    note = _diverged_note(study, ["seed", "lr", "batch_size"])
    if note:
        fig.suptitle(note, fontsize=8, color="tab:red")
    return fig


def plot_param_count(study, metric="loss"):
    """Final train and test ``metric`` against the number of parameters (log x).

    Parameters
    ----------
    study : fitted ParamCountStudy or its ``results_`` DataFrame
        Columns ``n_params``, ``train_<metric>``, ``test_<metric>`` (and
        ``family``/``depth`` when several families are in one frame: one pair
        of lines each; a missing depth, as of hand-written models, is a
        group of its own).  Several rows of one model (seeds) are drawn as
        their mean with error bars of ± one standard deviation.
    metric : {"loss", "accuracy"}, default="loss"

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axis with a train (solid) and a test (dashed) line per family.

    See Also
    --------
    hw1sk.studies.param_count.ParamCountStudy
    """
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy', got {metric!r}.")
    frame = study_frame(study, "results_", ["n_params", f"train_{metric}", f"test_{metric}"])
    keys = [c for c in ("family", "depth") if c in frame.columns]
    # dropna: hand-written models and layouts of several depths have no depth
    groups = list(frame.groupby(keys, sort=False, dropna=False)) if keys else [((), frame)]
    several = len(groups) > 1
    fig, (ax,) = _subplots(1, width=6.0)
    markers, most = "osD^v<>", 1
    for k, (key, part) in enumerate(groups):
        mean, std, n_seeds = _seed_mean(part, "n_params", [f"{s}_{metric}" for s in _SPLIT_STYLE])
        most = max(most, n_seeds)
        key = key if isinstance(key, tuple) else (key,)
        # a depth column with missing values is float: depth=2, not depth=2.0
        name = " ".join(f"{c}={int(v) if isinstance(v, float) and v.is_integer() else v}"
                        for c, v in zip(keys, key) if not pd.isna(v))
        for split in ("train", "test"):
            style = dict(linestyle=_SPLIT_STYLE[split], marker=markers[k % len(markers)],
                         color=_SPLIT_COLOR[split],
                         label=f"{split} {metric}" + (f" ({name})" if several else ""))
            column = f"{split}_{metric}"
            bars = dict(yerr=std[column].fillna(0), capsize=0) if n_seeds > 1 else None
            (ax.errorbar(mean.index, mean[column], **bars, **style) if bars
             else ax.plot(mean.index, mean[column], **style))
    ax.set_xscale("log")
    ax.set_xlabel("number of parameters (log scale)")
    ax.set_ylabel("cross-entropy loss" if metric == "loss" else "accuracy")
    title = f"final {metric} vs number of parameters" + (f" ({_seeds_words(most)})" * (most > 1))
    settings = {} if isinstance(study, pd.DataFrame) else getattr(study, "settings_", {})
    if settings.get("family"):
        title += f"\n{settings['family']}, {settings.get('max_epochs', '?')} epochs, " \
                 f"{settings.get('n_train', '?')} training images"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    note = _diverged_note(study, ["family", "width", "depth"])
    if note:
        fig.suptitle(note, fontsize=8, color="tab:red")
    return fig
