"""Figure of HW1-2, curvature: the Hessian spectral density over training (SLQ)."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["plot_spectral_density"]


def _mean_density(densities):
    """The grid and the mean of several densities, interpolated onto one grid covering them all."""
    if len(densities) == 1:
        return densities[0].grid, densities[0].density
    lo, hi = min(d.grid[0] for d in densities), max(d.grid[-1] for d in densities)
    grid = np.linspace(lo, hi, max(len(d.grid) for d in densities))
    return grid, np.mean([np.interp(grid, d.grid, d.density, left=0.0, right=0.0)
                          for d in densities], axis=0)


def plot_spectral_density(study, floor=1e-12):
    """The Hessian eigenvalue density at each checkpoint, on a log density scale.

    With several seeds, each seed's density is drawn faint and their mean
    solid; the legend gives the mean outlier count and top eigenvalue with
    their range over seeds, and the bulk edge line is the seeds' mean.

    Parameters
    ----------
    study : fitted HessianSpectrumStudy
        Its ``seed_densities_`` (else ``densities_``: one curve per checkpoint)
        and ``results_`` (bulk edge and outlier count, in the legend and as
        dotted lines).
    floor : float, default=1e-12
        Densities below it are drawn at it (the log scale has no zero).

    Returns
    -------
    fig : matplotlib.figure.Figure

    Raises
    ------
    ValueError
        When the study has no density (its run diverged).
    sklearn.exceptions.NotFittedError
        For an unfitted study.
    """
    import matplotlib.pyplot as plt

    check_is_fitted(study, "densities_")
    if not study.densities_:
        raise ValueError("the study has no spectral density (did its run diverge? see "
                         "diverged_).")
    per_seed = list((getattr(study, "seed_densities_", None) or {0: study.densities_}).values())
    groups = study.results_.groupby("checkpoint", sort=False)
    fig, ax = plt.subplots(figsize=(7.2, 4.6), layout="constrained")
    for i, label in enumerate(study.densities_):
        color, rows = f"C{i}", groups.get_group(label)
        densities = [seed[label] for seed in per_seed if label in seed]
        for d in densities if len(densities) > 1 else []:
            ax.plot(d.grid, np.maximum(d.density, floor), color=color, lw=0.6, alpha=0.3)
        grid, mean = _mean_density(densities)
        ax.plot(grid, np.maximum(mean, floor), color=color, lw=1.2,
                label=f"{label} (epoch {int(rows['epoch'].iloc[0])}): "
                      f"{_spread(rows['n_outliers'], 'g')} outlier(s), "
                      f"top {_spread(rows['top_ritz_value'], '.3g')}")
        ax.axvline(rows["bulk_edge"].mean(), color=color, ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density (Gaussian-broadened)"
                  + (f"; mean of {len(per_seed)} seeds (faint: each)" if len(per_seed) > 1 else ""))
    n_classes = getattr(study, "n_classes_", None)
    ax.set_title("Hessian spectral density (SLQ); dotted: bulk edges"
                 + (f"; C - 1 = {n_classes - 1}" if n_classes else ""), fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _spread(values, fmt):
    """One value as it is; several as their mean and range, ``"8.33 (7-9)"``."""
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return format(int(values[0]) if fmt == "g" else values[0], fmt)
    return (f"{format(values.mean(), '.3g')} ({format(values.min(), fmt)}-"
            f"{format(values.max(), fmt)})")
