"""Tests of hw1sk.plotting.flatness: interpolation, sensitivity and sharpness figures."""

import matplotlib

matplotlib.use("Agg")  # tests only: no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

from hw1sk.estimators import NeuralClassifier  # noqa: E402
from hw1sk.plotting.flatness import (  # noqa: E402
    plot_interpolation,
    plot_sensitivity,
    plot_sharpness,
)
from hw1sk.studies.interpolation import InterpolationStudy  # noqa: E402
from hw1sk.studies.sensitivity import SensitivityStudy  # noqa: E402
from hw1sk.transformers import ParameterInterpolator  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _interpolation_frame(pairs=("batch_size", "lr"), alphas=np.linspace(-1, 2, 7)):
    rows = []
    for pair in pairs:
        for a in alphas:
            for split, shift in (("train", 0.0), ("test", 0.1)):
                rows.append({"pair": pair, "alpha": a, "split": split,
                             "loss": 0.1 + (a - 0.5) ** 2 + shift,
                             "accuracy": 0.9 - 0.1 * abs(a - 0.5) - shift})
    return pd.DataFrame(rows)


def _sensitivity_frame(sharp=True, hessian=True):
    b = np.array([16, 64, 256, 1024, 4096])
    return pd.DataFrame({
        "batch_size": b, "train_loss": 0.1 + 0.1 * np.log2(b), "test_loss": 0.2 + 0.1 * np.log2(b),
        "train_accuracy": 0.99 - 0.01 * np.log2(b), "test_accuracy": 0.97 - 0.01 * np.log2(b),
        "sensitivity": 1.0 / np.log2(b), "loss_input_gradient_norm": 2.0 / np.log2(b),
        "sharpness": np.log2(b) if sharp else np.nan,
        "top_hessian_eigenvalue": 3.0 * np.log2(b) if hessian else np.nan,
    })


def test_plot_interpolation_from_a_frame():
    frame = _interpolation_frame()
    fig = plot_interpolation(frame)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # (loss, accuracy twin) per pair
    loss_ax, acc_ax = fig.axes[0], fig.axes[2]
    assert loss_ax.get_yscale() == "log" and acc_ax.get_yscale() == "linear"
    assert "loss" in loss_ax.get_ylabel() and acc_ax.get_ylabel() == "accuracy"
    # two splits per quantity, plus dotted markers at alpha = 0 and 1
    assert len(loss_ax.get_lines()) == 4 and len(acc_ax.get_lines()) == 2
    styles = {line.get_label(): line.get_linestyle() for line in loss_ax.get_lines()}
    assert styles["train loss"] == "-" and styles["test loss"] == "--"
    train = [line for line in loss_ax.get_lines() if line.get_label() == "train loss"][0]
    expected = frame[(frame.pair == "batch_size") & (frame.split == "train")]
    np.testing.assert_allclose(train.get_ydata(), expected["loss"])
    assert "batch_size" in loss_ax.get_title()


def test_plot_interpolation_one_pair_and_errors():
    frame = _interpolation_frame()
    assert len(plot_interpolation(frame, pair="lr").axes) == 2
    with pytest.raises(ValueError, match="pair \\['depth'\\] not in the results"):
        plot_interpolation(frame, pair="depth")
    with pytest.raises(ValueError, match="columns \\['accuracy'\\]"):
        plot_interpolation(frame.drop(columns="accuracy"))
    with pytest.raises(ValueError, match="results are empty"):
        plot_interpolation(frame.iloc[:0])
    with pytest.raises(NotFittedError):
        plot_interpolation(InterpolationStudy())


def test_plot_interpolation_from_fitted_objects():
    rng = np.random.RandomState(0)
    X = rng.randn(60, 3).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = NeuralClassifier(module__hidden=(3,), max_epochs=1, batch_size=30)
    study = InterpolationStudy(estimator=net, pairs="lr", alphas=[0.0, 0.5, 1.0], max_epochs=1,
                               batch_sizes=(10, 30), backend="sequential").fit(X, y)
    fig = plot_interpolation(study)
    assert len(fig.axes) == 2
    assert "batch size 30, lr 0.01" in fig.axes[0].get_title()  # the end points' settings
    interp = ParameterInterpolator(study.estimators_[("lr", 1)], study.estimators_[("lr", 2)],
                                   alphas=[0.0, 1.0]).fit()
    interp.evaluate(X, y)
    fig = plot_interpolation(interp)  # no pair column: one axis
    assert len(fig.axes) == 2 and len(fig.axes[0].get_lines()) == 3


def test_plot_interpolation_notes_diverged_runs():
    study = InterpolationStudy()
    study.results_ = _interpolation_frame(pairs=("batch_size",))
    study.diverged_ = pd.DataFrame([{"pair": "lr", "endpoint": 2, "batch_size": 64,
                                     "lr": 10.0, "message": "nan"}])
    fig = plot_interpolation(study)
    assert "diverged" in fig._suptitle.get_text() and "lr=10.0" in fig._suptitle.get_text()


def test_plot_sensitivity():
    frame = _sensitivity_frame()
    fig = plot_sensitivity(frame.sample(frac=1, random_state=0))  # order does not matter
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    loss_ax, acc_ax, loss_twin, acc_twin = fig.axes[0], fig.axes[1], fig.axes[2], fig.axes[3]
    for ax in (loss_ax, acc_ax):
        assert ax.get_xscale() == "log"
        assert len(ax.get_lines()) == 2
    assert loss_ax.get_ylabel() == "loss" and acc_ax.get_ylabel() == "accuracy"
    for twin in (loss_twin, acc_twin):
        (line,) = twin.get_lines()
        np.testing.assert_array_equal(line.get_xdata(), frame["batch_size"])
        np.testing.assert_allclose(line.get_ydata(), frame["sensitivity"])
    fig = plot_sensitivity(frame, measure="loss_input_gradient_norm")
    np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_ydata(),
                               frame["loss_input_gradient_norm"])
    with pytest.raises(ValueError, match="measure must be"):
        plot_sensitivity(frame, measure="sharpness")
    with pytest.raises(ValueError, match="columns \\['sensitivity'\\]"):
        plot_sensitivity(frame.drop(columns="sensitivity"))
    with pytest.raises(NotFittedError):
        plot_sensitivity(SensitivityStudy())


def test_plot_sharpness():
    fig = plot_sharpness(_sensitivity_frame())
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    np.testing.assert_allclose(fig.axes[0].get_lines()[0].get_ydata(),
                               np.log2([16, 64, 256, 1024, 4096]))
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(),
                               3 * np.log2([16, 64, 256, 1024, 4096]))
    only = plot_sharpness(_sensitivity_frame(sharp=False))
    assert len(only.axes) == 1 and "eigenvalue" in only.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="neither sharpness nor top_hessian_eigenvalue"):
        plot_sharpness(_sensitivity_frame(sharp=False, hessian=False))


# ------------------------------------------- several seeds and controls (issue 11)
def _seeded(frame, n_seeds=3, controls=("epochs",), reached=None):
    """``frame`` repeated per control and seed, the numbers shifted a little per seed."""
    numeric = [c for c in frame.columns if c not in ("pair", "split", "alpha", "batch_size")]
    parts = []
    for control in controls:
        for s in range(n_seeds):
            part = frame.copy()
            part[numeric] = part[numeric] * (1 + 0.05 * (s - 1))
            parts.append(part.assign(control=control, seed=s,
                                     target_reached=None if control == "epochs" else reached))
    return pd.concat(parts, ignore_index=True)


def test_plot_sensitivity_and_sharpness_draw_means_with_error_bars():
    frame = _seeded(_sensitivity_frame())
    fig = plot_sensitivity(frame)
    loss_ax = fig.axes[0]
    assert len(loss_ax.containers) == 2  # train and test loss: error bars
    line = loss_ax.containers[0].lines[0]
    means = frame.groupby("batch_size")["train_loss"].mean().to_numpy()
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), means)
    sharp = plot_sharpness(frame)
    assert len(sharp.axes[0].containers) == 1
    # one seed: plain lines, as before
    plain = plot_sensitivity(_seeded(_sensitivity_frame(), n_seeds=1))
    assert not plain.axes[0].containers and len(plain.axes[0].get_lines()) == 2
    assert "equal" not in plain.axes[0].get_title()


def test_plot_sensitivity_per_control_names_it_and_flags_missed_targets():
    frame = _seeded(_sensitivity_frame(), controls=("epochs", "train_loss"), reached=True)
    frame.loc[(frame["control"] == "train_loss") & (frame["batch_size"] == 4096)
              & (frame["seed"] == 0), "target_reached"] = False
    first = plot_sensitivity(frame)
    assert "(equal epochs)" in first.axes[0].get_title()
    fig = plot_sensitivity(frame, control="train_loss")
    assert "(equal train loss)" in fig.axes[0].get_title()
    assert "batch 4096 (1/3 seeds)" in fig._suptitle.get_text()
    assert "(equal train loss)" in plot_sharpness(frame, control="train_loss").axes[0].get_title()
    with pytest.raises(ValueError, match="control 'steps' not in the results"):
        plot_sensitivity(frame, control="steps")


def test_plot_interpolation_draws_the_seed_mean_and_a_band():
    frame = _seeded(_interpolation_frame(), controls=("epochs", "train_loss"))
    fig = plot_interpolation(frame, pair="lr", control="train_loss")
    loss_ax = fig.axes[0]
    assert "(equal train loss)" in loss_ax.get_title()
    assert len(loss_ax.collections) == 2  # min-max bands of train and test
    rows = frame[(frame["control"] == "train_loss") & (frame["pair"] == "lr")
                 & (frame["split"] == "train")]
    np.testing.assert_allclose(loss_ax.get_lines()[0].get_ydata(),
                               rows.groupby("alpha")["loss"].mean().to_numpy())
    single = plot_interpolation(_interpolation_frame(), pair="lr")
    assert not single.axes[0].collections
