"""Tests of the HW1-3 generalization figures: plot_random_labels and plot_param_count."""

import matplotlib

matplotlib.use("Agg")  # tests only: the library never picks a backend

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from hw1sk.estimators import NeuralClassifier  # noqa: E402
from hw1sk.plotting.generalization import plot_param_count, plot_random_labels  # noqa: E402
from hw1sk.studies.param_count import ParamCountStudy  # noqa: E402
from hw1sk.studies.random_labels import RandomLabelStudy  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    rng = np.random.RandomState(0)
    X = rng.randn(120, 5).astype(np.float32)
    y = (X[:, :3] @ rng.randn(3, 3)).argmax(1).astype(np.int64)
    return X[:90], y[:90], X[90:], y[90:]


def _random_frame(n_epochs=4):
    epochs = np.repeat(np.arange(1, n_epochs + 1), 2)
    return pd.DataFrame({"epoch": epochs, "split": ["test", "train"] * n_epochs,
                         "loss": np.linspace(2.3, 0.1, 2 * n_epochs),
                         "accuracy": np.linspace(0.1, 1.0, 2 * n_epochs)})


def _param_frame():
    n_params = np.array([100, 300, 1000, 3000, 10000])
    return pd.DataFrame({"family": "mlp", "depth": 1, "width": [1, 3, 10, 30, 100],
                         "n_params": n_params, "train_loss": 1 / np.log(n_params),
                         "test_loss": 1.2 / np.log(n_params), "train_accuracy": 0.9,
                         "test_accuracy": 0.8})


def test_plot_random_labels_from_a_frame():
    frame = _random_frame()
    fig = plot_random_labels(frame)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    loss_ax, acc_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(acc_ax.lines) == 2  # no chance line without a study
    train = frame[frame["split"] == "train"]
    line = next(ln for ln in loss_ax.lines if "train" in ln.get_label())
    np.testing.assert_array_equal(line.get_xdata(), train["epoch"])
    np.testing.assert_array_equal(line.get_ydata(), train["loss"])
    assert loss_ax.get_xlabel() == "epoch" and acc_ax.get_ylabel() == "accuracy"
    fig = plot_random_labels(frame, chance=0.1)
    assert len(fig.axes[1].lines) == 3
    np.testing.assert_array_equal(fig.axes[1].lines[-1].get_ydata(), [0.1, 0.1])


def test_plot_random_labels_from_a_study(data):
    X, y, X_test, y_test = data
    study = RandomLabelStudy(NeuralClassifier(module__hidden=(8,)), n_train=None, n_test=None,
                             max_epochs=2, batch_size=30, backend="sequential")
    with pytest.raises(NotFittedError):
        plot_random_labels(study)
    study.fit(X, y, X_test, y_test)
    fig = plot_random_labels(study)
    assert len(fig.axes) == 2
    assert len(fig.axes[0].lines) == 2
    chance = fig.axes[1].lines[-1]  # the chance line comes from settings_
    np.testing.assert_allclose(chance.get_ydata(), [1 / 3, 1 / 3])
    assert "MLP 5-8-3" in fig.get_suptitle()


def test_plot_param_count_from_a_frame():
    frame = _param_frame()
    for metric in ("loss", "accuracy"):
        fig = plot_param_count(frame, metric=metric)
        (ax,) = fig.axes
        assert ax.get_xscale() == "log" and len(ax.lines) == 2
        test = next(ln for ln in ax.lines if ln.get_label().startswith("test"))
        np.testing.assert_array_equal(test.get_xdata(), frame["n_params"])
        np.testing.assert_array_equal(test.get_ydata(), frame[f"test_{metric}"])
        assert metric in ax.get_title()


def test_plot_param_count_one_pair_of_lines_per_family():
    frame = pd.concat([_param_frame(), _param_frame().assign(family="cnn", depth=2)],
                      ignore_index=True)
    (ax,) = plot_param_count(frame).axes
    assert len(ax.lines) == 4
    assert {ln.get_label() for ln in ax.lines} == {
        "train loss (family=mlp depth=1)", "test loss (family=mlp depth=1)",
        "train loss (family=cnn depth=2)", "test loss (family=cnn depth=2)"}


def test_plot_param_count_from_a_study_and_errors(data):
    X, y, X_test, y_test = data
    study = ParamCountStudy(widths=(2, 6), max_epochs=1, n_train=None, backend="sequential")
    with pytest.raises(NotFittedError):
        plot_param_count(study)
    study.fit(X, y, X_test, y_test)
    (ax,) = plot_param_count(study, metric="accuracy").axes
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), study.results_["n_params"])
    assert "MLP, 1 hidden layer" in ax.get_title()
    with pytest.raises(ValueError, match="metric must be 'loss' or 'accuracy'"):
        plot_param_count(study, metric="error")
    with pytest.raises(ValueError, match="need columns"):
        plot_param_count(_param_frame().drop(columns="test_loss"))
    with pytest.raises(ValueError, match="results are empty"):
        plot_param_count(_param_frame().iloc[:0])


def test_plot_param_count_notes_diverged_runs(data):
    X, y, X_test, y_test = data
    study = ParamCountStudy(widths=(2, 6), max_epochs=1, n_train=None, backend="sequential")
    study.fit(X, y, X_test, y_test)
    # one diverged run recorded next to the finished ones (as _run_tasks records it)
    study.diverged_ = pd.DataFrame([{"family": "mlp", "width": 50, "depth": 1,
                                     "message": "training loss became non-finite"}])
    fig = plot_param_count(study)
    assert "diverged, not shown: family=mlp, width=50, depth=1" in fig.get_suptitle()


def test_plot_param_count_draws_hand_written_models():
    # ParamCountStudy(models=...) rows: family "custom", no depth: one pair of lines
    frame = _param_frame().assign(family="custom", depth=None)
    (ax,) = plot_param_count(frame).axes
    assert len(ax.lines) == 2
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), frame["n_params"])
    mixed = pd.concat([_param_frame(), frame], ignore_index=True)
    (ax,) = plot_param_count(mixed).axes
    assert {ln.get_label() for ln in ax.lines} == {
        "train loss (family=mlp depth=1)", "test loss (family=mlp depth=1)",
        "train loss (family=custom)", "test loss (family=custom)"}


def test_plot_param_count_from_a_study_of_models(data):
    X, y, X_test, y_test = data
    study = ParamCountStudy(models={"narrow": NeuralClassifier(module__hidden=(2,)),
                                    "wide": NeuralClassifier(module__hidden=(9,))},
                            max_epochs=1, n_train=None, backend="sequential")
    study.fit(X, y, X_test, y_test)
    (ax,) = plot_param_count(study).axes
    np.testing.assert_array_equal(ax.lines[0].get_xdata(), study.results_["n_params"])
    assert "custom models" in ax.get_title()


# ------------------------------------------------------------------ seeds with spread
def _seeded(frame, n_seeds, column):
    """``frame`` repeated for ``n_seeds`` seeds, ``column`` shifted by 0.1 per seed."""
    return pd.concat([frame.assign(seed=s, **{column: frame[column] + 0.1 * s})
                      for s in range(n_seeds)], ignore_index=True)


def test_plot_random_labels_of_several_seeds_draws_means_and_bands():
    frame = _seeded(_random_frame(), 3, "loss")
    loss_ax, acc_ax = plot_random_labels(frame).axes
    assert len(loss_ax.lines) == 2 and len(loss_ax.collections) == 2  # a band per split
    train = _random_frame().query("split == 'train'")
    line = next(ln for ln in loss_ax.lines if "train" in ln.get_label())
    np.testing.assert_allclose(line.get_ydata(), train["loss"] + 0.1)  # the mean of 3 seeds
    assert "3 seeds" in loss_ax.get_title()
    one = plot_random_labels(_seeded(_random_frame(), 1, "loss")).axes[0]
    assert not one.collections and "seeds" not in one.get_title()  # one seed: as before


def test_plot_param_count_of_several_seeds_draws_error_bars():
    frame = _seeded(_param_frame(), 3, "test_loss")
    (ax,) = plot_param_count(frame).axes
    assert len(ax.lines) == 2 and len(ax.containers) == 2  # an error bar per split
    test = next(c for c in ax.containers if c.get_label().startswith("test")).lines[0]
    np.testing.assert_allclose(np.asarray(test.get_ydata(), dtype=float),
                               _param_frame()["test_loss"] + 0.1)
    np.testing.assert_array_equal(np.asarray(test.get_xdata(), dtype=float),
                                  _param_frame()["n_params"])
    assert "3 seeds" in ax.get_title()
    (one,) = plot_param_count(_param_frame()).axes
    assert not one.containers and "seeds" not in one.get_title()


def test_plot_random_labels_of_a_study_with_seeds(data):
    X, y, X_test, y_test = data
    study = RandomLabelStudy(NeuralClassifier(module__hidden=(8,)), n_train=None, n_test=None,
                             max_epochs=2, n_seeds=2, backend="sequential")
    loss_ax, _ = plot_random_labels(study.fit(X, y, X_test, y_test)).axes
    assert len(loss_ax.collections) == 2 and "2 seeds" in loss_ax.get_title()
