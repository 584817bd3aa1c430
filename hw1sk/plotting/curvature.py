"""Figures of HW1-2, curvature: minimal ratio vs loss, and the Hessian spectrum.

Each function takes a fitted
:class:`~hw1sk.studies.minimal_ratio.MinimalRatioStudy` or the data it
stores, and returns a :class:`matplotlib.figure.Figure`.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_array, check_is_fitted

from ._frames import study_frame

__all__ = ["plot_minimal_ratio", "plot_hessian_spectrum"]

_RATIO_COLUMNS = ("minimal_ratio", "loss", "converged")


def plot_minimal_ratio(study, log_loss=True):
    """Scatter of the minimal ratio (x) against the loss (y), one point per run.

    As in HW1: each point is a run stopped where ``||grad L||`` is almost
    zero.  Runs whose gradient phase reached its step cap before the
    tolerance (``converged`` False) are drawn as hollow markers, apart from
    the converged ones (filled), so they are never mistaken for critical
    points.

    Parameters
    ----------
    study : fitted MinimalRatioStudy or its ``results_`` DataFrame
        Columns ``minimal_ratio``, ``loss`` and ``converged`` are used
        (``grad_norm_after`` too, when present, for the legend).
    log_loss : bool, default=True
        Log scale for the loss axis (when every loss is positive).

    Returns
    -------
    fig : matplotlib.figure.Figure
        One axis with one scatter per group present (converged: filled,
        not converged: hollow); diverged runs of a study are counted in the
        title.

    Raises
    ------
    ValueError
        When the DataFrame lacks a column or is empty.
    sklearn.exceptions.NotFittedError
        For an unfitted study.

    Examples
    --------
    >>> fig = plot_minimal_ratio(study)  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    frame = study_frame(study, "results_", _RATIO_COLUMNS)
    converged = frame["converged"].astype(bool).to_numpy()
    fig, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")
    groups = (
        (converged, "converged", dict(color="tab:blue", edgecolors="tab:blue")),
        (~converged, "not converged (step cap)",
         dict(facecolors="none", edgecolors="tab:red", linewidths=1.2)),
    )
    for mask, name, style in groups:
        if not mask.any():
            continue
        part = frame[mask]
        label = f"{name}: {int(mask.sum())} run(s)"
        if "grad_norm_after" in part.columns:
            label += f", ‖∇L‖ ≤ {part['grad_norm_after'].max():.1e}"
        ax.scatter(part["minimal_ratio"], part["loss"], s=28, label=label, **style)
    if log_loss and bool((frame["loss"] > 0).all()):
        ax.set_yscale("log")
    ax.set_xlabel("minimal ratio (fraction of positive Hessian eigenvalues)")
    ax.set_ylabel("training loss")
    tol = None if isinstance(study, pd.DataFrame) else getattr(study, "grad_tol", None)
    title = "Minimal ratio vs loss at near-zero gradient"
    if tol is not None:
        title += f" (‖∇L‖ < {tol:g})"
    diverged = getattr(study, "diverged_", None)
    if isinstance(diverged, pd.DataFrame) and len(diverged):
        title += f"\n{len(diverged)} diverged run(s) not shown"
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _spectrum(source, run, tol):
    """``(eigenvalues, sign census, label)`` from an array or a fitted study.

    A study's census is its own (the counts of ``results_``), unless another
    ``tol`` is asked for.
    """
    from ..curvature import MinimalRatio, minimal_ratio

    if isinstance(source, (np.ndarray, list, tuple)) or hasattr(source, "__array__"):
        lam = check_array(source, ensure_2d=False, dtype=np.float64, input_name="eigenvalues")
        if lam.ndim != 1:
            raise ValueError(f"eigenvalues must be 1-D, got shape {lam.shape}.")
        label = None
    else:
        check_is_fitted(source, "results_")
        spectra = getattr(source, "spectra_", {})
        if not spectra:
            raise ValueError("the study kept no spectra; fit it with keep_spectrum=True.")
        if not isinstance(run, Integral) or isinstance(run, bool) or run not in spectra:
            raise ValueError(f"run {run!r} has no spectrum; choose one of {sorted(spectra)}.")
        lam = np.sort(np.asarray(spectra[run], dtype=np.float64))
        row = source.results_.set_index("run").loc[run]
        label = f"run {run}, loss {row['loss']:.3g}, ‖∇L‖ {row['grad_norm_after']:.1e}"
        if tol is None:  # the study's own census, so the figure agrees with results_
            return lam, MinimalRatio(
                ratio=float(row["minimal_ratio"]), n_positive=int(row["n_positive"]),
                n_negative=int(row["n_negative"]), n_zero=int(row["n_zero"]),
                tol_used=float(row["eigen_tol_used"])), label
    return np.sort(lam), minimal_ratio(lam, tol=tol), label


def _symlog_ticks(linthresh, top, max_per_side=4):
    """Ticks ``0, +-10^k`` with at most ``max_per_side`` decades per side (symlog crowds)."""
    low, high = int(np.floor(np.log10(linthresh))), int(np.ceil(np.log10(top)))
    stride = max(1, -(-(high - low) // max_per_side))
    decades = 10.0 ** np.arange(high, low - 1, -stride)
    return np.concatenate([-decades, [0.0], decades[::-1]])


def plot_hessian_spectrum(eigenvalues, run=0, tol=None, bins=60):
    """Sorted Hessian eigenvalues and their histogram, on symmetric log scales.

    Parameters
    ----------
    eigenvalues : array-like of shape (n_params,) or fitted MinimalRatioStudy
        The spectrum, or a study fitted with ``keep_spectrum=True``.
    run : int, default=0
        The run of the study to draw (ignored for an array).
    tol : float, optional
        Relative zero tolerance (as in :func:`hw1sk.curvature.minimal_ratio`);
        by default the study's (the counts in the title are then its
        ``results_`` columns ``n_positive``, ``n_negative``, ``n_zero``), or
        ``n * eps(float64)`` for an array.
    bins : int, default=60
        Histogram bins, log-spaced on each side of the zero band.

    Returns
    -------
    fig : matplotlib.figure.Figure
        Two axes: the eigenvalues in ascending order (symlog y) and their
        histogram (symlog x); the shaded band holds the eigenvalues counted
        as zero.

    Raises
    ------
    ValueError
        For a study without spectra, an unknown run, a non 1-D array or bad
        ``bins``.
    sklearn.exceptions.NotFittedError
        For an unfitted study.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.plotting.curvature import plot_hessian_spectrum
    >>> fig = plot_hessian_spectrum(np.array([-1.0, 0.0, 2.0, 5.0]))
    >>> len(fig.axes)
    2
    """
    import matplotlib.pyplot as plt

    if not isinstance(bins, Integral) or isinstance(bins, bool) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}.")
    lam, census, label = _spectrum(eigenvalues, run, tol)
    t = census.tol_used
    scale = float(np.max(np.abs(lam)))
    # the linear part of the symlog axes: the zero band, or a tiny fraction of the scale
    linthresh = t if t > 0 else max(scale * 1e-12, 1e-300)
    fig, (ax_sorted, ax_hist) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    index = np.arange(lam.size)
    colors = np.where(lam > t, "tab:blue", np.where(lam < -t, "tab:red", "tab:gray"))
    ax_sorted.plot(index, lam, color="0.6", lw=0.8, zorder=1)
    ax_sorted.scatter(index, lam, c=colors, s=8, zorder=2)
    ax_sorted.set_yscale("symlog", linthresh=linthresh)
    ticks = _symlog_ticks(linthresh, max(scale, linthresh * 10))
    ax_sorted.set_yticks(ticks)
    ax_sorted.axhspan(-t, t, color="tab:gray", alpha=0.2, lw=0)
    ax_sorted.set_xlabel("index (ascending)")
    ax_sorted.set_ylabel("eigenvalue λ")
    ax_sorted.set_title("Sorted Hessian eigenvalues")
    ax_sorted.grid(True, alpha=0.3)

    top = max(scale, linthresh * 10)
    n_side = max(1, (bins - 1) // 2)
    side = np.geomspace(linthresh, top * (1 + 1e-9), n_side + 1)
    edges = np.concatenate([-side[::-1], side])  # [-top .. -t] [-t, t] [t .. top]
    counts, _ = np.histogram(np.clip(lam, edges[0], edges[-1]), bins=edges)
    mids = np.arange(len(counts))
    bar_colors = ["tab:red" if i < n_side else "tab:gray" if i == n_side else "tab:blue"
                  for i in mids]
    ax_hist.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=bar_colors,
                edgecolor="white", linewidth=0.3)
    ax_hist.set_xscale("symlog", linthresh=linthresh)
    ax_hist.set_xticks(ticks)
    ax_hist.tick_params(axis="x", labelrotation=45)
    ax_hist.set_xlabel("eigenvalue λ")
    ax_hist.set_ylabel("count")
    ax_hist.set_title("Histogram (gray: |λ| ≤ zero tolerance)")
    ax_hist.grid(True, alpha=0.3)

    head = (f"minimal ratio {census.ratio:.3f}: {census.n_positive} positive, "
            f"{census.n_negative} negative, {census.n_zero} zero (|λ| ≤ {t:.1e})")
    fig.suptitle(head if label is None else f"{label}\n{head}", fontsize="medium")
    return fig
