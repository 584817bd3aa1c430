"""Tests of the HW1-2 figures: trajectories, gradient norm, error surface."""

import copy

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.exceptions import NotFittedError

from hw1sk.plotting.optimization import (
    plot_error_surface,
    plot_gradient_norm,
    plot_trajectories,
)
from hw1sk.studies.error_surface import ErrorSurfaceStudy
from hw1sk.studies.optimization import OptimizationStudy

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(100, 5).astype(np.float32)
    y = (X @ rng.randn(5, 3)).argmax(1).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def study(data):
    X, y = data
    return OptimizationStudy(hidden=(4,), n_runs=2, every=2, max_epochs=4, batch_size=25,
                             lr=1e-2, backend="sequential").fit(X, y)


@pytest.fixture(scope="module")
def surface(data):
    X, y = data
    return ErrorSurfaceStudy(hidden=(4,), max_epochs=3, batch_size=25, lr=1e-2, n_eval=50,
                             line_points=7, surface_points=5, backend="sequential").fit(X, y)


def _texts(ax):
    return [t.get_text() for t in ax.texts]


# ---------------------------------------------------------------------------- trajectories
def test_trajectories_both_scopes(study):
    fig = plot_trajectories(study)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    n_snapshots = 3  # epochs 0, 2, 4
    for ax, scope in zip(fig.axes, ("model", "layer")):
        # per run: the path, its start square and its end star
        assert len(ax.lines) == 2 * 3
        rows = study.results_[study.results_["scope"] == scope].sort_values(["run", "epoch"])
        assert _texts(ax) == [f"{v:.3g}" for v in rows["loss"]]
        assert len(ax.texts) == 2 * n_snapshots
        path = ax.lines[0].get_xydata()
        first = rows[rows["run"] == 0]
        np.testing.assert_allclose(path, first[["component_1", "component_2"]].to_numpy())
        ratio = study.explained_variance_ratio_[scope][0]
        assert ax.get_xlabel() == f"PC 1 ({ratio:.1%} of variance)"
    assert "net.1" in fig.axes[1].get_title()


def test_trajectories_one_scope_accuracy_and_runs(study):
    fig = plot_trajectories(study, scope="layer", annotate="accuracy", runs=[1])
    (ax,) = fig.axes
    assert len(ax.lines) == 3
    rows = study.results_[(study.results_["scope"] == "layer") & (study.results_["run"] == 1)]
    assert _texts(ax) == [f"{v:.2f}" for v in rows.sort_values("epoch")["accuracy"]]
    fig = plot_trajectories(study.results_, scope="model", annotate=None)
    assert len(fig.axes[0].texts) == 0 and fig.axes[0].get_xlabel() == "PC 1"


def test_trajectories_bad_arguments(study):
    with pytest.raises(ValueError, match="scope must be one of"):
        plot_trajectories(study, scope="net")
    with pytest.raises(ValueError, match="annotate must be"):
        plot_trajectories(study, annotate="epoch")
    with pytest.raises(ValueError, match=r"runs \[7\] not in the results"):
        plot_trajectories(study, runs=[7])
    regression = study.results_.assign(accuracy=np.nan)
    with pytest.raises(ValueError, match="needs classification results"):
        plot_trajectories(regression, annotate="accuracy")
    with pytest.raises(ValueError, match="need columns"):
        plot_trajectories(study.results_.drop(columns="component_2"))
    with pytest.raises(NotFittedError):
        plot_trajectories(OptimizationStudy())


def test_trajectories_note_diverged_runs(study):
    partial = copy.copy(study)
    partial.diverged_ = pd.DataFrame({"run": [5], "seed": [1], "message": ["nan"]})
    fig = plot_trajectories(partial, scope="model")
    assert fig._suptitle.get_text() == "diverged, not shown: runs 5"


# --------------------------------------------------------------------------- gradient norm
def test_gradient_norm_two_panels(study):
    fig = plot_gradient_norm(study, run=1, smooth=None)
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    assert top.get_shared_x_axes().joined(top, bottom)
    g = study.grad_norms_[study.grad_norms_["run"] == 1]
    np.testing.assert_allclose(top.lines[0].get_ydata(), g["grad_norm"])
    np.testing.assert_allclose(bottom.lines[0].get_ydata(), g["loss"])
    assert top.get_yscale() == "log" and bottom.get_yscale() == "log"
    assert bottom.get_xlabel() == "iteration" and "(run 1)" in top.get_title()


def test_gradient_norm_running_mean_and_frames(study):
    one = study.grad_norms_[study.grad_norms_["run"] == 0].drop(columns=["run", "seed"])
    fig = plot_gradient_norm(one, smooth=4)
    top = fig.axes[0]
    assert len(top.lines) == 2
    expected = np.exp(np.log(one["grad_norm"]).rolling(4, min_periods=1).mean())
    np.testing.assert_allclose(top.lines[1].get_ydata(), expected)
    # a loss that reaches 0 stays on a linear axis, with an arithmetic running mean
    shifted = one.assign(loss=one["loss"] - one["loss"].min())
    bottom = plot_gradient_norm(shifted, smooth=4).axes[1]
    assert bottom.get_yscale() == "linear"
    np.testing.assert_allclose(bottom.lines[1].get_ydata(),
                               shifted["loss"].rolling(4, min_periods=1).mean())
    # 16 iterations: "auto" does not smooth below 200
    assert len(plot_gradient_norm(study, smooth="auto").axes[0].lines) == 1


def test_gradient_norm_bad_arguments(study):
    with pytest.raises(ValueError, match=r"run 3 is not in the results"):
        plot_gradient_norm(study, run=3)
    with pytest.raises(ValueError, match="smooth must be"):
        plot_gradient_norm(study, smooth=0)
    with pytest.raises(ValueError, match="need columns"):
        plot_gradient_norm(pd.DataFrame({"iteration": [0], "loss": [1.0]}))
    with pytest.raises(NotFittedError):
        plot_gradient_norm(OptimizationStudy())


# --------------------------------------------------------------------------- error surface
def test_error_surface_study(surface):
    fig = plot_error_surface(surface)
    # the contour, the 1-D line, the contour's colorbar
    assert len(fig.axes) == 3
    contour_ax, line_ax, colorbar_ax = fig.axes
    assert colorbar_ax.get_ylabel() == "loss"
    path = contour_ax.lines[0].get_xydata()
    np.testing.assert_allclose(path, surface.trajectory_coords_[["alpha", "beta"]].to_numpy())
    assert _texts(contour_ax) == ["epoch 0", "epoch 3"]
    np.testing.assert_allclose(line_ax.lines[0].get_ydata(), surface.line_["loss"])
    assert "PC 1" in contour_ax.get_xlabel()


def test_error_surface_from_frame(surface):
    fig = plot_error_surface(surface.results_, levels=5)
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="not a full grid"):
        plot_error_surface(surface.results_.iloc[1:])
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        plot_error_surface(surface, levels=1)
    with pytest.raises(NotFittedError):
        plot_error_surface(ErrorSurfaceStudy())
