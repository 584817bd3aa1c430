"""Tests of hw1sk.plotting.deep_shallow (figures of tiny fitted studies)."""

import matplotlib

matplotlib.use("Agg")  # tests only; library code never picks a backend

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.exceptions import NotFittedError

from hw1sk.plotting.deep_shallow import plot_loss_curves, plot_predictions, plot_training_curves
from hw1sk.studies.deep_shallow import DeepShallowStudy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def function_study():
    return DeepShallowStudy(n_params=200, depths=(1, 3), max_epochs=12, n_restarts=2,
                            plateau_patience=None, backend="sequential").fit_functions(
        ("sinc", "sign"), n_samples=30, n_grid=50)


@pytest.fixture(scope="module")
def image_study():
    rng = np.random.RandomState(0)
    X = rng.rand(80, 1, 8, 8).astype(np.float32)
    y = (X[:, 0, :4].mean((1, 2)) > X[:, 0, 4:].mean((1, 2))).astype(int)
    return DeepShallowStudy(n_params=320, depths=(1, 2), max_epochs=3, batch_size=20,
                            backend="sequential").fit(X[:50], y[:50], X[50:], y[50:])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_loss_curves_one_axis_per_function_best_restart(function_study):
    fig = plot_loss_curves(function_study)
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == 2
    best = function_study.results_[function_study.results_["best"]]
    for ax, name in zip(axes, ["sinc", "sign"]):
        assert ax.get_yscale() == "log"
        assert name in ax.get_title()
        assert len(ax.get_lines()) == 2  # one per model
        line = ax.get_lines()[0]
        rows = best[(best["function"] == name) & (best["model"] == "MLP-1")]
        np.testing.assert_allclose(line.get_xdata(), rows["epoch"])
        np.testing.assert_allclose(line.get_ydata(), rows["train_loss"])
        assert [t.get_text() for t in ax.get_legend().get_texts()] == [
            "MLP-1 (199 params)", "MLP-3 (199 params)"]


def test_loss_curves_all_restarts_and_one_function(function_study):
    fig = plot_loss_curves(function_study, function="sign", restarts="all")
    (ax,) = fig.get_axes()
    assert len(ax.get_lines()) == 4  # 2 models x 2 restarts
    # also from the results_ DataFrame alone
    fig = plot_loss_curves(function_study.results_, function=["sinc"])
    assert len(fig.get_axes()) == 1


def test_predictions_against_ground_truth(function_study):
    fig = plot_predictions(function_study)
    axes = fig.get_axes()
    assert len(axes) == 2
    preds = function_study.predictions_
    for ax, name in zip(axes, ["sinc", "sign"]):
        lines = ax.get_lines()
        assert len(lines) == 1 + 2  # ground truth + one per model
        truth = preds[(preds["function"] == name) & (preds["model"] == "MLP-1")
                      & (preds["restart"] == 0)]
        np.testing.assert_allclose(lines[0].get_ydata(), truth["y_true"])
        best = preds[(preds["function"] == name) & (preds["model"] == "MLP-3") & preds["best"]]
        np.testing.assert_allclose(lines[2].get_ydata(), best["y_pred"])
    fig = plot_predictions(function_study.predictions_, function="sinc", restarts="all")
    assert len(fig.get_axes()[0].get_lines()) == 1 + 4


def test_training_curves_two_panels(image_study):
    fig = plot_training_curves(image_study)
    ax_loss, ax_acc = fig.get_axes()
    assert ax_loss.get_yscale() == "log"
    assert len(ax_loss.get_lines()) == 4  # models
    assert len(ax_acc.get_lines()) == 8  # train and test accuracy per model
    labels = [t.get_text() for t in ax_acc.get_legend().get_texts()]
    final = image_study.summary_.set_index("model")["test_acc"]
    assert labels == [f"{m}: test {final[m]:.1%}" for m in ["CNN-1", "CNN-2", "MLP-1", "MLP-2"]]
    test_line = ax_acc.get_lines()[1]
    rows = image_study.results_[image_study.results_["model"] == "CNN-1"]
    np.testing.assert_allclose(test_line.get_ydata(), rows["test_acc"])


def test_errors(function_study, image_study):
    with pytest.raises(NotFittedError):
        plot_loss_curves(DeepShallowStudy())
    with pytest.raises(ValueError, match=r"function \['cosine'\] not in the results"):
        plot_loss_curves(function_study, function="cosine")
    with pytest.raises(ValueError, match="restarts must be"):
        plot_predictions(function_study, restarts="worst")
    with pytest.raises(ValueError, match="regression studies only"):
        plot_predictions(image_study)
    with pytest.raises(ValueError, match="needs classification results"):
        plot_training_curves(function_study)
    # the loss curves of a classification study work too, one axis for its data set
    assert len(plot_loss_curves(image_study).get_axes()) == 1
