"""Figures of HW1-2, optimization: weight trajectories, gradient norm, error surface.

Each function takes a fitted study
(:class:`~hw1sk.studies.optimization.OptimizationStudy` or
:class:`~hw1sk.studies.error_surface.ErrorSurfaceStudy`) or the DataFrame it
stores, and returns a :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd

from ._frames import study_frame

__all__ = ["plot_trajectories", "plot_gradient_norm", "plot_error_surface"]

_SCOPES = ("model", "layer", "both")
_ANNOTATIONS = ("loss", "accuracy", None)
_TRAJECTORY_COLUMNS = ("scope", "run", "epoch", "component_1", "component_2", "loss",
                       "accuracy")
_GRAD_COLUMNS = ("iteration", "grad_norm", "loss")
_SURFACE_COLUMNS = ("alpha", "beta", "loss")


def _diverged_note(obj):
    """A one-line note on the diverged runs of a fitted study, or None."""
    diverged = getattr(obj, "diverged_", None)
    if not isinstance(diverged, pd.DataFrame) or diverged.empty:
        return None
    if "run" in diverged.columns:
        return "diverged, not shown: runs " + ", ".join(str(r) for r in diverged["run"])
    return f"{len(diverged)} diverged run(s) not shown"


def _subplots(n, width=5.5, height=4.5, **kwargs):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False,
                             layout="constrained", **kwargs)
    return fig, list(axes[0])


def _format_value(value, annotate):
    if annotate == "accuracy":
        return f"{value:.2f}"
    return f"{value:.3g}"


def plot_trajectories(study, scope="both", annotate="loss", runs=None):
    """Weight trajectories of all runs in the plane of their joint PCA.

    Parameters
    ----------
    study : OptimizationStudy or pandas.DataFrame
        A fitted study or its ``results_``.
    scope : {"model", "layer", "both"}, default="both"
        The PCA of all parameters, of the study's layer, or both side by side.
    annotate : {"loss", "accuracy"} or None, default="loss"
        Write each snapshot's training loss (3 significant digits) or
        accuracy (2 decimals) next to its point; None writes nothing.
    runs : sequence of int, optional
        The runs to draw; all when None.

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axis per scope; in each, one line per run (its own color, a
        square at the initial weights, a star at the final ones).

    Raises
    ------
    ValueError
        For an unknown ``scope``, ``annotate`` or run, or ``annotate="accuracy"``
        on regression results (no accuracy).

    Examples
    --------
    >>> fig = plot_trajectories(study, scope="model", annotate="accuracy")  # doctest: +SKIP
    """
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {list(_SCOPES)}, got {scope!r}.")
    if annotate not in _ANNOTATIONS:
        raise ValueError(f"annotate must be 'loss', 'accuracy' or None, got {annotate!r}.")
    results = study_frame(study, "results_", _TRAJECTORY_COLUMNS)
    if annotate == "accuracy" and results["accuracy"].isna().all():
        raise ValueError("annotate='accuracy' needs classification results; these have no "
                         "accuracy (regression). Use annotate='loss'.")
    available = sorted(pd.unique(results["run"]))
    if runs is not None:
        runs = [runs] if isinstance(runs, Integral) else list(runs)
        unknown = [r for r in runs if r not in available]
        if unknown:
            raise ValueError(f"runs {unknown} not in the results; choose from {available}.")
        results = results[results["run"].isin(runs)]
    scopes = ["model", "layer"] if scope == "both" else [scope]
    ratios = getattr(study, "explained_variance_ratio_", {}) if not isinstance(
        study, pd.DataFrame) else {}
    layer = getattr(study, "layer_", None) if not isinstance(study, pd.DataFrame) else None
    fig, axes = _subplots(len(scopes))
    colors = {r: f"C{k % 10}" for k, r in enumerate(available)}
    for ax, name in zip(axes, scopes):
        part = results[results["scope"] == name]
        if part.empty:
            raise ValueError(f"the results hold no rows of scope {name!r}.")
        for run, rows in part.groupby("run", sort=True):
            rows = rows.sort_values("epoch")
            x, y = rows["component_1"].to_numpy(), rows["component_2"].to_numpy()
            color = colors[run]
            ax.plot(x, y, "o-", color=color, ms=3.5, lw=1.0, label=f"run {run}")
            ax.plot(x[:1], y[:1], "s", color=color, ms=7, mec="black", mew=0.6)
            ax.plot(x[-1:], y[-1:], "*", color=color, ms=11, mec="black", mew=0.6)
            if annotate is not None:
                for xi, yi, value in zip(x, y, rows[annotate]):
                    ax.annotate(_format_value(value, annotate), (xi, yi),
                                textcoords="offset points", xytext=(3, 3), fontsize=6,
                                color=color)
        ratio = ratios.get(name) if isinstance(ratios, dict) else None
        labels = ([f"PC {k + 1} ({ratio[k]:.1%} of variance)" for k in range(2)]
                  if ratio is not None else ["PC 1", "PC 2"])
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        what = "all parameters" if name == "model" else (f"layer {layer}" if layer
                                                         else "one layer")
        ax.set_title(f"Weight trajectories, PCA of {what}"
                     + (f"\n(annotated: training {annotate})" if annotate else ""))
        ax.grid(True, alpha=0.3)
    # one legend for all panels, outside the data
    axes[-1].legend(fontsize="x-small", title="■ start, ★ end", title_fontsize="x-small",
                    loc="upper left", bbox_to_anchor=(1.02, 1.0))
    note = _diverged_note(study)
    if note:
        fig.suptitle(note, fontsize="small", color="tab:red")
    return fig


def _smoothing_window(smooth, n):
    if smooth is None:
        return None
    if smooth == "auto":
        return n // 100 if n > 200 else None
    if not isinstance(smooth, Integral) or isinstance(smooth, bool) or smooth < 1:
        raise ValueError(f"smooth must be 'auto', None or a positive integer, got {smooth!r}.")
    return int(smooth) if smooth > 1 else None


def plot_gradient_norm(study, run=0, smooth="auto"):
    """Gradient norm and loss of one run at every iteration, two panels sharing x.

    Parameters
    ----------
    study : OptimizationStudy or pandas.DataFrame
        A fitted study, its ``grad_norms_``, or the frame of one run (columns
        ``iteration``, ``grad_norm``, ``loss``, as
        :meth:`hw1sk.callbacks.GradNormTrace.to_frame` gives).
    run : int, default=0
        The run to draw, when the frame has a ``run`` column.
    smooth : "auto", int or None, default="auto"
        Also draw the running mean over this many iterations (thick line over
        the faint raw values; the geometric mean for positive values, which
        are drawn on a log axis); ``"auto"`` uses 1% of the iterations when
        there are more than 200, None draws the raw values only.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Two axes: gradient norm (log y) above, loss (log y) below.

    Raises
    ------
    ValueError
        For an unknown ``run`` or an invalid ``smooth``.

    Examples
    --------
    >>> fig = plot_gradient_norm(study, run=0)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    frame = study_frame(study, "grad_norms_", _GRAD_COLUMNS)
    has_run = "run" in frame.columns
    if has_run:
        available = sorted(pd.unique(frame["run"]))
        if run not in available:
            raise ValueError(f"run {run!r} is not in the results; choose from {available}.")
        frame = frame[frame["run"] == run]
    frame = frame.sort_values("iteration")
    window = _smoothing_window(smooth, len(frame))
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(7, 5.5), layout="constrained")
    panels = (("grad_norm", "gradient norm ‖∇L‖₂", "tab:blue"), ("loss", "loss", "tab:red"))
    for ax, (column, label, color) in zip(axes, panels):
        it, values = frame["iteration"].to_numpy(), frame[column].to_numpy()
        positive = bool(np.all(values > 0))
        ax.plot(it, values, color=color, lw=0.6, alpha=0.35 if window else 1.0,
                label="per iteration")
        if window:
            # on a log axis the geometric mean is the line through the middle of the band
            series = pd.Series(np.log(values) if positive else values)
            mean = series.rolling(window, min_periods=1).mean().to_numpy()
            mean = np.exp(mean) if positive else mean
            kind = "geometric mean" if positive else "mean"
            ax.plot(it, mean, color=color, lw=1.6,
                    label=f"running {kind} ({window} iterations)")
            ax.legend(fontsize="x-small")
        if positive:
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].set_xlabel("iteration")
    axes[0].set_title("Gradient norm and loss during training" + (f" (run {run})" if has_run
                                                                  else ""))
    return fig


def plot_error_surface(study, levels=20, annotate_epochs=True):
    """Contour of the loss on a plane with the projected trajectory, and the 1-D line.

    Parameters
    ----------
    study : ErrorSurfaceStudy or pandas.DataFrame
        A fitted study, or its ``results_`` (``alpha``, ``beta``, ``loss``;
        then only the contour is drawn).
    levels : int, default=20
        Contour levels, log-spaced when every loss is positive.
    annotate_epochs : bool, default=True
        Write the epoch of the first and last snapshot next to the path.

    Returns
    -------
    fig : matplotlib.figure.Figure
        For a study: the filled contour with the trajectory (start square,
        end star), its colorbar, and the loss along the first direction; for a
        DataFrame: the contour and its colorbar.

    Raises
    ------
    ValueError
        When the DataFrame is not a full grid of (alpha, beta), or ``levels``
        is not an integer >= 2.

    Examples
    --------
    >>> fig = plot_error_surface(study)  # doctest: +SKIP
    """
    from matplotlib.colors import LogNorm

    if not isinstance(levels, Integral) or isinstance(levels, bool) or levels < 2:
        raise ValueError(f"levels must be an integer >= 2, got {levels!r}.")
    frame = study_frame(study, "results_", _SURFACE_COLUMNS)
    is_study = not isinstance(study, pd.DataFrame)
    if is_study:
        alphas, betas, losses = study.surface_
    else:
        alphas, betas = np.unique(frame["alpha"]), np.unique(frame["beta"])
        if len(frame) != len(alphas) * len(betas):
            raise ValueError("the DataFrame is not a full grid of (alpha, beta) points.")
        losses = (frame.sort_values(["alpha", "beta"])["loss"].to_numpy()
                  .reshape(len(alphas), len(betas)))
    fig, axes = _subplots(2 if is_study else 1, width=5.5, height=4.6)
    ax = axes[0]
    low, high = float(np.min(losses)), float(np.max(losses))
    if low > 0 and high > low:
        bounds = np.geomspace(low, high, levels)
        filled = ax.contourf(alphas, betas, losses.T, levels=bounds, norm=LogNorm(low, high),
                             cmap="viridis")
    else:
        filled = ax.contourf(alphas, betas, losses.T, levels=levels, cmap="viridis")
    ax.contour(alphas, betas, losses.T, levels=filled.levels, colors="white",
               linewidths=0.4, alpha=0.6)
    fig.colorbar(filled, ax=ax, label="loss", format="%.3g",
                 ticks=filled.levels[::max(1, len(filled.levels) // 8)])
    labels = ("α", "β")
    if is_study:
        kind = study.directions
        if kind == "pca":
            ratio = study.explained_variance_ratio_
            labels = tuple(f"{s} (PC {k + 1}, {ratio[k]:.1%} of the path's variance)"
                           for k, s in enumerate(("α", "β")))
        else:
            labels = ("α (random direction 1)", "β (random direction 2)")
        path = study.trajectory_coords_
        ax.plot(path["alpha"], path["beta"], "o-", color="tab:red", ms=3, lw=1.2,
                label="trajectory (projected)")
        ax.plot(path["alpha"].iloc[:1], path["beta"].iloc[:1], "s", color="tab:red",
                mec="white", ms=8)
        ax.plot(path["alpha"].iloc[-1:], path["beta"].iloc[-1:], "*", color="tab:red",
                mec="white", ms=13)
        if annotate_epochs:
            middle = 0.5 * (alphas.min() + alphas.max())
            for k in (0, len(path) - 1):
                a, b = path["alpha"].iloc[k], path["beta"].iloc[k]
                right = a > middle  # write towards the centre so the label stays inside
                ax.annotate(f"epoch {int(path['epoch'].iloc[k])}", (a, b),
                            textcoords="offset points", xytext=(-6 if right else 6, 6),
                            ha="right" if right else "left", fontsize=7, color="white")
        ax.set_xlim(alphas.min(), alphas.max())
        ax.set_ylim(betas.min(), betas.max())
        ax.legend(fontsize="x-small", loc="lower right")
        plane = "trajectory PCA plane" if kind == "pca" else "random plane"
        ax.set_title(f"Error surface ({plane})")
        line = study.line_
        ax_line = axes[1]
        ax_line.plot(line["alpha"], line["loss"], "o-", ms=3, color="tab:blue")
        ax_line.axvline(0.0, color="gray", lw=0.8, ls=":")
        if np.all(line["loss"] > 0):
            ax_line.set_yscale("log")
        ax_line.set_xlabel(labels[0])
        ax_line.set_ylabel("loss")
        ax_line.set_title("Loss along the first direction (0: trained)")
        ax_line.grid(True, alpha=0.3)
    else:
        ax.set_title("Error surface")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    return fig
