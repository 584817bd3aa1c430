"""Tests of the HW1-2 curvature figures: minimal ratio vs loss, Hessian spectrum."""

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.exceptions import NotFittedError

from hw1sk.plotting.curvature import plot_hessian_spectrum, plot_minimal_ratio
from hw1sk.studies.minimal_ratio import MinimalRatioStudy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def study():
    # a step cap of 3 leaves some runs unconverged, so both marker styles appear
    return MinimalRatioStudy(n_runs=4, n_samples=60, hidden=(6, 6), train_epochs=150,
                             lr=2e-2, max_grad_steps=3, backend="sequential").fit()


def _frame(converged):
    return pd.DataFrame({"minimal_ratio": [0.5, 0.6, 0.7][:len(converged)],
                         "loss": [1e-3, 2e-3, 5e-2][:len(converged)],
                         "converged": converged})


def test_minimal_ratio_scatter_separates_unconverged_runs():
    fig = plot_minimal_ratio(_frame([True, False, True]))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    filled, hollow = ax.collections
    np.testing.assert_array_equal(filled.get_offsets(), [[0.5, 1e-3], [0.7, 5e-2]])
    np.testing.assert_array_equal(hollow.get_offsets(), [[0.6, 2e-3]])
    assert filled.get_facecolors()[0][3] > 0 and hollow.get_facecolors().size == 0
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0].startswith("converged: 2 run(s)")
    assert labels[1].startswith("not converged (step cap): 1 run(s)")
    assert "minimal ratio" in ax.get_xlabel() and "loss" in ax.get_ylabel()


def test_minimal_ratio_from_study(study):
    fig = plot_minimal_ratio(study)
    ax = fig.axes[0]
    res = study.results_
    n_groups = res["converged"].nunique()
    assert len(ax.collections) == n_groups
    assert sum(len(c.get_offsets()) for c in ax.collections) == len(res)
    assert "‖∇L‖ < 0.001" in ax.get_title()


def test_minimal_ratio_counts_diverged_runs_in_title(study):
    import copy

    broken = copy.copy(study)
    broken.diverged_ = pd.DataFrame([{"run": 9, "seed": 1, "message": "nan"}])
    assert "1 diverged run(s) not shown" in plot_minimal_ratio(broken).axes[0].get_title()


def test_minimal_ratio_linear_scale_and_errors():
    ax = plot_minimal_ratio(_frame([True, True]), log_loss=False).axes[0]
    assert ax.get_yscale() == "linear" and len(ax.collections) == 1
    with pytest.raises(ValueError, match="columns"):
        plot_minimal_ratio(pd.DataFrame({"loss": [1.0]}))
    with pytest.raises(ValueError, match="empty"):
        plot_minimal_ratio(_frame([]))
    with pytest.raises(NotFittedError):
        plot_minimal_ratio(MinimalRatioStudy())


def test_spectrum_of_an_array():
    lam = np.array([3.0, -2.0, 0.0, 1e-20, 5.0, -1e-3])
    fig = plot_hessian_spectrum(lam)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    ax_sorted, ax_hist = fig.axes
    np.testing.assert_array_equal(ax_sorted.lines[0].get_ydata(), np.sort(lam))
    assert ax_sorted.get_yscale() == "symlog" and ax_hist.get_xscale() == "symlog"
    heights = [p.get_height() for p in ax_hist.patches]
    assert sum(heights) == lam.size
    # 2 positive, 2 negative, 2 within 6 * eps * 5 of zero
    assert "minimal ratio 0.333: 2 positive, 2 negative, 2 zero" in fig._suptitle.get_text()


def test_spectrum_tolerance_moves_the_zero_band():
    lam = np.array([-1e-3, 1e-4, 1.0])
    text = plot_hessian_spectrum(lam, tol=1e-2)._suptitle.get_text()
    assert "1 positive, 0 negative, 2 zero" in text


def test_spectrum_of_a_study_run(study):
    fig = plot_hessian_spectrum(study, run=2)
    row = study.results_.set_index("run").loc[2]
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), study.spectra_[2])
    text = fig._suptitle.get_text()
    assert text.startswith("run 2") and (f"{row['n_positive']} positive, "
                                         f"{row['n_negative']} negative") in text
    assert sum(p.get_height() for p in fig.axes[1].patches) == row["n_params"]


def test_spectrum_counts_are_read_from_results(study):
    """The study's census is drawn as results_ holds it, not recounted from the spectrum."""
    import copy

    edited = copy.copy(study)
    edited.results_ = study.results_.copy()
    mask = edited.results_["run"] == 1
    edited.results_.loc[mask, ["n_positive", "n_negative", "n_zero"]] = [11, 22, 33]
    edited.results_.loc[mask, "minimal_ratio"] = 0.125
    text = plot_hessian_spectrum(edited, run=1)._suptitle.get_text()
    assert "minimal ratio 0.125: 11 positive, 22 negative, 33 zero" in text
    # another tolerance asks for a recount
    lam = study.spectra_[1]
    recount = plot_hessian_spectrum(edited, run=1, tol=0.5)._suptitle.get_text()
    assert f"{int(np.sum(lam > 0.5 * np.abs(lam).max()))} positive" in recount


def test_spectrum_errors(study):
    with pytest.raises(ValueError, match="run 99 has no spectrum"):
        plot_hessian_spectrum(study, run=99)
    with pytest.raises(ValueError, match="1-D"):
        plot_hessian_spectrum(np.ones((2, 2)))
    with pytest.raises(ValueError, match="bins"):
        plot_hessian_spectrum(np.ones(3), bins=1)
    with pytest.raises(NotFittedError):
        plot_hessian_spectrum(MinimalRatioStudy())
    no_spectra = MinimalRatioStudy(n_runs=1, n_samples=20, hidden=(2,), train_epochs=5,
                                   keep_spectrum=False, backend="sequential").fit()
    with pytest.raises(ValueError, match="keep_spectrum=True"):
        plot_hessian_spectrum(no_spectra)
