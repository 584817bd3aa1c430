"""Figure of HW1-2, curvature: the Hessian spectral density over training (SLQ)."""

from __future__ import annotations

import numpy as np
from sklearn.utils.validation import check_is_fitted

__all__ = ["plot_spectral_density"]


def plot_spectral_density(study, floor=1e-12):
    """The Hessian eigenvalue density at each checkpoint, on a log density scale.

    Parameters
    ----------
    study : fitted HessianSpectrumStudy
        Its ``densities_`` (one curve per checkpoint) and ``results_``
        (bulk edge and outlier count, in the legend and as dotted lines).
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
    rows = study.results_.set_index("checkpoint")
    fig, ax = plt.subplots(figsize=(7.2, 4.6), layout="constrained")
    for i, (label, d) in enumerate(study.densities_.items()):
        color = f"C{i}"
        row = rows.loc[label]
        ax.plot(d.grid, np.maximum(d.density, floor), color=color, lw=1.2,
                label=f"{label} (epoch {int(row['epoch'])}): {int(row['n_outliers'])} outlier(s), "
                      f"top {row['top_ritz_value']:.3g}")
        ax.axvline(row["bulk_edge"], color=color, ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density (Gaussian-broadened)")
    n_classes = getattr(study, "n_classes_", None)
    ax.set_title("Hessian spectral density (SLQ); dotted: bulk edges"
                 + (f"; C - 1 = {n_classes - 1}" if n_classes else ""), fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig
