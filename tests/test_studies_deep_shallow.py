"""Tests of hw1sk.studies.deep_shallow (tiny networks and data: a few seconds each)."""

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback
from torch import nn

from hw1sk.datasets import make_function_dataset
from hw1sk.estimators import NeuralRegressor
from hw1sk.models import CNN, MLP, count_params
from hw1sk.seeding import spawn_seeds
from hw1sk.studies.deep_shallow import (
    DeepShallowStudy,
    PlateauStopping,
    cnn_for_budget_flat,
    default_models,
)

torch.set_num_threads(1)

TINY = dict(n_params=200, depths=(1, 3), max_epochs=25, n_restarts=2, plateau_patience=None,
            backend="sequential")


def _timeless(frame):
    """``results_`` without the epoch durations (the only column that is not reproducible)."""
    return frame.drop(columns="dur")


def _mse(module, X, y):
    with torch.no_grad():
        out = module(torch.as_tensor(X, dtype=torch.float32)).numpy().ravel()
    return float(np.mean((out.astype(np.float64) - np.ravel(y)) ** 2))


@pytest.fixture(scope="module")
def function_study():
    return DeepShallowStudy(**TINY).fit_functions(("sinc", "sign"), n_samples=40, n_grid=60)


@pytest.fixture(scope="module")
def image_data():
    rng = np.random.RandomState(0)
    X = rng.rand(90, 1, 8, 8).astype(np.float32)
    # labels that depend on the image: which half is brighter, as strings
    y = np.where(X[:, 0, :4].mean((1, 2)) > X[:, 0, 4:].mean((1, 2)), "top", "bottom")
    return X[:60], y[:60], X[60:], y[60:]


@pytest.fixture(scope="module")
def image_study(image_data):
    X, y, X_test, y_test = image_data
    return DeepShallowStudy(n_params=320, depths=(1, 2), max_epochs=3, batch_size=20,
                            backend="sequential").fit(X, y, X_test, y_test, name="halves")


# ------------------------------------------------------------------- results


def test_function_study_tables(function_study):
    s = function_study
    assert s.task_ == "regression"
    n_runs = 2 * 2 * 2  # functions x models x restarts
    assert len(s.summary_) == n_runs
    assert set(s.summary_["function"]) == {"sinc", "sign"}
    assert set(s.summary_["model"]) == {"MLP-1", "MLP-3"}
    assert list(s.results_.columns[:7]) == ["function", "model", "restart", "seed", "n_params",
                                            "best", "epoch"]
    assert "train_loss" in s.results_.columns
    # no plateau stop: every run trains max_epochs epochs, numbered 1..25
    assert len(s.results_) == n_runs * 25
    assert (s.summary_["epochs"] == 25).all() and not s.summary_["stopped_on_plateau"].any()
    assert s.results_.groupby(["function", "model", "restart"])["epoch"].apply(
        lambda e: list(e) == list(range(1, 26))).all()
    assert len(s.predictions_) == n_runs * 60
    assert list(s.predictions_.columns) == ["function", "model", "restart", "best", "x",
                                            "y_pred", "y_true"]
    assert s.n_params_ == {"MLP-1": 199, "MLP-3": 199}
    assert set(s.settings_) >= {"task", "models", "optimizer", "lr", "max_epochs", "batch_size",
                                "n_restarts", "seeds", "data"}
    assert s.settings_["data"]["sinc"] == {"n_train": 40, "n_test": 60, "input_shape": (1,)}
    assert s.diverged_.empty


def test_best_is_lowest_final_loss_per_function_and_model(function_study):
    s = function_study
    for _, group in s.summary_.groupby(["function", "model"]):
        assert group["best"].sum() == 1
        assert group.loc[group["best"], "train_loss"].item() == group["train_loss"].min()
    # results_ and predictions_ carry the same flag
    flags = s.summary_.set_index(["function", "model", "restart"])["best"]
    for frame in (s.results_, s.predictions_):
        got = frame.groupby(["function", "model", "restart"])["best"].first()
        pd.testing.assert_series_equal(got.sort_index(), flags.sort_index(), check_names=False)


def test_scores_match_an_independent_computation(function_study):
    s = function_study
    X, y = make_function_dataset("sinc", n_samples=40, random_state=0)
    X_grid, y_grid = make_function_dataset("sinc", n_samples=60, grid=True)
    for row in s.summary_[s.summary_["function"] == "sinc"].itertuples():
        module = s.modules_[("sinc", row.model, row.restart)]
        assert count_params(module) == row.n_params
        assert row.train_loss == pytest.approx(_mse(module, X, y), rel=1e-5)
        assert row.test_loss == pytest.approx(_mse(module, X_grid, y_grid), rel=1e-5)
        pred = s.predictions_[(s.predictions_["function"] == "sinc")
                              & (s.predictions_["model"] == row.model)
                              & (s.predictions_["restart"] == row.restart)]
        np.testing.assert_allclose(pred["x"], X_grid[:, 0])
        np.testing.assert_allclose(pred["y_true"], y_grid[:, 0])
        with torch.no_grad():
            expected = module(torch.as_tensor(X_grid)).numpy().ravel()
        np.testing.assert_allclose(pred["y_pred"], expected, rtol=1e-6)


def test_seeds_follow_spawn_seeds_per_model_and_restart(function_study):
    s = function_study
    seeds = spawn_seeds(0, 4)
    for row in s.summary_.itertuples():
        i = ["MLP-1", "MLP-3"].index(row.model)
        assert row.seed == seeds[i * 2 + row.restart]
    # the same (model, restart) starts from the same weights for both functions
    assert s.summary_.groupby(["model", "restart"])["seed"].nunique().eq(1).all()


def test_fit_equals_fit_functions_for_one_function(function_study):
    X, y = make_function_dataset("sinc", n_samples=40, random_state=0)
    X_grid, y_grid = make_function_dataset("sinc", n_samples=60, grid=True)
    single = DeepShallowStudy(**TINY).fit(X, y, X_grid, y_grid, name="sinc")
    both = function_study.results_
    sinc = both[both["function"] == "sinc"].reset_index(drop=True)
    pd.testing.assert_frame_equal(_timeless(single.results_), _timeless(sinc))


def test_same_random_state_same_numbers_whatever_n_jobs(image_data, image_study):
    X, y = make_function_dataset("sinc", n_samples=30, random_state=1)
    params = dict(TINY, max_epochs=10)
    a = DeepShallowStudy(**params).fit(X, y)
    b = DeepShallowStudy(**{**params, "backend": "loky"}, n_jobs=2).fit(X, y)
    pd.testing.assert_frame_equal(_timeless(a.results_), _timeless(b.results_))
    pd.testing.assert_frame_equal(a.summary_, b.summary_)
    c = DeepShallowStudy(**{**params, "random_state": 1}).fit(X, y)
    assert not np.allclose(a.results_["train_loss"], c.results_["train_loss"])
    # convolutions too (their kernels depend on the thread count, pinned to one per run)
    parallel = clone(image_study).set_params(backend="loky", n_jobs=2).fit(*image_data,
                                                                           name="halves")
    pd.testing.assert_frame_equal(_timeless(parallel.results_), _timeless(image_study.results_))


def test_classification_study(image_study, image_data):
    s = image_study
    X, y, X_test, y_test = image_data
    assert s.task_ == "classification"
    assert set(s.summary_["model"]) == {"CNN-1", "CNN-2", "MLP-1", "MLP-2"}
    assert {"dataset", "train_acc", "test_loss", "test_acc"} <= set(s.results_.columns)
    assert len(s.results_) == 4 * 3
    assert not hasattr(s, "predictions_")
    classes = np.unique(y)  # labels are encoded in sorted order, as the classifier does
    y_test_enc = np.searchsorted(classes, y_test)
    for row in s.summary_.itertuples():
        module = s.modules_[("halves", row.model, 0)]
        with torch.no_grad():
            logits = module(torch.as_tensor(X_test))
        loss = nn.functional.cross_entropy(logits, torch.as_tensor(y_test_enc)).item()
        assert row.test_acc == pytest.approx((logits.argmax(1).numpy() == y_test_enc).mean())
        assert row.test_loss == pytest.approx(loss, rel=1e-5)
        # the per-epoch test score of the last epoch is the final model's
        last = s.results_[(s.results_["model"] == row.model)].iloc[-1]
        assert last["test_acc"] == pytest.approx(row.test_acc)
        assert row.n_params == count_params(module)
    assert s.n_params_ == {"CNN-1": 338, "CNN-2": 322, "MLP-1": 337, "MLP-2": 318}


def test_task_is_inferred_from_dtype_and_can_be_forced():
    X = np.linspace(-1, 1, 20)[:, None]
    y_sign = np.sign(np.sin(5 * np.pi * X[:, 0]))  # float ±1: still a regression target
    kw = dict(models={"lin": {"module": "mlp", "module__hidden": ()}}, max_epochs=2,
              backend="sequential")
    assert DeepShallowStudy(**kw).fit(X, y_sign).task_ == "regression"
    y_int = (X[:, 0] > 0).astype(int)
    assert DeepShallowStudy(**kw).fit(X, y_int).task_ == "classification"
    assert DeepShallowStudy(**kw, task="regression").fit(X, y_int).task_ == "regression"
    with pytest.raises(ValueError, match="needs class labels"):
        DeepShallowStudy(**kw, task="classification").fit(X, X[:, 0] * 0.3)


# ----------------------------------------------------------- restarts, dead nets


class Constant(nn.Module):
    """A model with one parameter: the output is a constant."""

    def __init__(self, n_in=1, n_out=1):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, X):
        return self.bias.expand(X.shape[0], -1)


def test_constant_model_is_flagged_and_reaches_the_variance():
    X, y = make_function_dataset("sinc", n_samples=50, random_state=0)
    study = DeepShallowStudy(models={"constant": Constant}, max_epochs=400, lr=0.05,
                             plateau_patience=None, backend="sequential").fit(X, y)
    row = study.summary_.iloc[0]
    assert bool(row["constant_output"])
    # the best constant predictor's MSE is the variance of the targets
    assert row["train_loss"] == pytest.approx(float(np.var(y.astype(np.float64))), rel=1e-3)
    preds = study.predictions_
    np.testing.assert_allclose(preds["y_pred"], np.mean(y), rtol=1e-3)


def test_module_instance_class_factory_and_estimator_specs():
    X, y = make_function_dataset("sinc", n_samples=30, random_state=0)
    instance = MLP(1, (6,), 1)
    before = [p.detach().clone() for p in instance.parameters()]
    study = DeepShallowStudy(
        models={"instance": instance,
                "class": MLP,
                "factory": lambda n_in, n_out: MLP(n_in, (6,), n_out),
                "estimator": NeuralRegressor(module=MLP, module__hidden=(6,), lr=0.01)},
        max_epochs=3, n_restarts=2, plateau_patience=None, backend="sequential",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the class default is larger
        study.fit(X, y)
    # the instance itself is never trained; each restart trains a re-initialised copy
    for p, q in zip(before, instance.parameters()):
        assert torch.equal(p, q)
    w0 = next(study.modules_[("data", "instance", 0)].parameters())
    w1 = next(study.modules_[("data", "instance", 1)].parameters())
    assert not torch.allclose(w0, w1)
    assert study.n_params_["instance"] == study.n_params_["factory"] == 6 * 3 + 1
    assert study.n_params_["class"] == count_params(MLP())
    assert study.settings_["model settings"]["estimator"]["lr"] == 0.01


def test_unequal_parameter_counts_warn():
    X, y = make_function_dataset("sinc", n_samples=20, random_state=0)
    models = {"small": {"module": "mlp", "module__hidden": (2,)},
              "large": {"module": "mlp", "module__hidden": (20,)}}
    with pytest.warns(UserWarning, match="parameter counts differ"):
        DeepShallowStudy(models=models, max_epochs=1, backend="sequential").fit(X, y)


def test_diverged_runs_are_recorded_and_left_out():
    X, y = make_function_dataset("sinc", n_samples=20, random_state=0)
    models = {"ok": {"module": "mlp", "module__hidden": (4,)},
              # gradient descent on a linear model with a step far above 2 / curvature
              "exploding": {"module": "mlp", "module__hidden": (), "lr": 1e3,
                            "optimizer": torch.optim.SGD}}
    study = DeepShallowStudy(models=models, max_epochs=30, plateau_patience=None,
                             backend="sequential")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        study.fit(X, y)
    assert study.diverged_[["model", "restart"]].values.tolist() == [["exploding", 0]]
    assert "starting loss" in study.diverged_["message"].iloc[0]
    for frame in (study.results_, study.summary_, study.predictions_):
        assert set(frame["model"]) == {"ok"}


# ------------------------------------------------------------- plateau stop


class _FakeNet:
    verbose = 0

    def __init__(self):
        self.history = []


def test_plateau_stopping_stops_after_patience_epochs_without_relative_progress():
    cb = PlateauStopping(patience=2, threshold=0.1)
    net = _FakeNet()
    cb.on_train_begin(net)
    # improvements: 1.0 (ref 0.9), 0.85 (ref 0.765); 0.8, 0.78 are not 10% lower -> stop at 4
    losses = [1.0, 0.85, 0.8, 0.78, 0.1]
    stopped = None
    for epoch, loss in enumerate(losses, start=1):
        net.history.append({"epoch": epoch, "train_loss": loss})
        try:
            cb.on_epoch_end(net)
        except KeyboardInterrupt:
            stopped = epoch
            break
    assert stopped == 4 and cb.stopped_epoch_ == 4 and cb.best_epoch_ == 2


def test_plateau_stop_ends_a_converged_fit_early():
    X, y = make_function_dataset("sinc", n_samples=30, random_state=0)
    study = DeepShallowStudy(models={"constant": Constant}, max_epochs=3000, lr=0.1,
                             plateau_patience=20, plateau_tol=1e-3, backend="sequential").fit(X, y)
    row = study.summary_.iloc[0]
    assert row["stopped_on_plateau"] and row["epochs"] < 3000
    # replay the rule on the recorded curve: it must first fire at the last epoch
    level, misses, stop = np.inf, 0, None
    for epoch, loss in enumerate(study.results_["train_loss"], start=1):
        if loss < level:
            level, misses = loss * (1 - 1e-3), 0
        else:
            misses += 1
        if misses == 20:
            stop = epoch
            break
    assert stop == row["epochs"]


# ------------------------------------------------------------------ helpers


def test_default_models_and_flat_cnn_budget():
    models = default_models("regression")
    assert list(models) == ["MLP-1", "MLP-4", "MLP-7"]
    assert models["MLP-4"] == {"module": "mlp_budget", "module__n_params": 571,
                               "module__depth": 4}
    cls_models = default_models("classification", n_params=5000, depths=(1, 3))
    assert list(cls_models) == ["CNN-1", "CNN-3", "MLP-1", "MLP-3"]
    for depth in (1, 2, 4):
        net = cnn_for_budget_flat(5000, depth, in_channels=3, image_size=32)
        n_conv = sum(isinstance(m, nn.Conv2d) for m in net.modules())
        assert n_conv == depth
        c = net.features[0].out_channels
        # the count is nearest the budget among the channel counts c - 1, c, c + 1
        counts = {k: count_params(CNN(in_channels=3, image_size=32, channels=(k,) * depth,
                                      global_pool=False))
                  for k in (c - 1, c, c + 1)}
        assert counts[c] == count_params(net)
        assert min(counts, key=lambda k: abs(counts[k] - 5000)) == c
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="task must be"):
        default_models("ranking")
    with pytest.raises(ValueError, match="depths must be"):
        default_models("regression", depths=(0,))


# ------------------------------------------------------ estimator contract


def test_get_params_clone_and_not_fitted():
    study = DeepShallowStudy(n_restarts=3, lr=0.01)
    params = study.get_params()
    assert params["n_restarts"] == 3 and params["lr"] == 0.01 and params["random_state"] == 0
    cloned = clone(study)
    assert cloned.get_params() == params and cloned is not study
    with pytest.raises(NotFittedError):
        study._check_fitted()


@pytest.mark.parametrize("params, match", [
    ({"n_restarts": 0}, "'n_restarts' parameter of DeepShallowStudy"),
    ({"task": "ranking"}, "'task' parameter of DeepShallowStudy"),
    ({"lr": -1.0}, "'lr' parameter of DeepShallowStudy"),
    ({"max_epochs": 0}, "'max_epochs' parameter of DeepShallowStudy"),
    ({"batch_size": 0}, "'batch_size' parameter of DeepShallowStudy"),
    ({"plateau_tol": 1.5}, "'plateau_tol' parameter of DeepShallowStudy"),
    ({"plateau_patience": -3}, "'plateau_patience' parameter of DeepShallowStudy"),
    ({"test_every": 0}, "'test_every' parameter of DeepShallowStudy"),
    ({"n_params": 0}, "'n_params' parameter of DeepShallowStudy"),
    ({"models": ["mlp"]}, "'models' parameter of DeepShallowStudy"),
    ({"models": {}}, "models must be a non-empty dict"),
    ({"models": {"bad": 3}}, r"models\['bad'\] must be"),
    ({"models": {"bad": {"lr": 0.1}}}, "without a 'module' key"),
    ({"estimator": "adam"}, "'estimator' parameter of DeepShallowStudy"),
    ({"backend": "spark"}, "'backend' parameter of DeepShallowStudy"),
])
def test_bad_parameters_raise(params, match):
    X = np.linspace(-1, 1, 10)[:, None]
    with pytest.raises(ValueError, match=match):
        DeepShallowStudy(**{"max_epochs": 1, "backend": "sequential", **params}).fit(X, X[:, 0])


def test_bad_data_raise():
    X = np.linspace(-1, 1, 10)[:, None]
    study = DeepShallowStudy(max_epochs=1, backend="sequential")
    with pytest.raises(ValueError, match="Pass both X_test and y_test"):
        study.fit(X, X[:, 0], X_test=X)
    with pytest.raises(ValueError, match="y should be a 1d array"):
        study.fit(X, np.zeros((10, 2)))
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        study.fit(X, X[:5, 0])
    with pytest.raises(ValueError, match="X_test has samples of shape"):
        study.fit(X, X[:, 0], np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="not among the training labels"):
        study.fit(X, (X[:, 0] > 0).astype(int), X, np.full(10, 7))
    with pytest.raises(ValueError, match="n_grid must be"):
        study.fit_functions(n_grid=1)


# ------------------------------------------------------ non-image classification
def test_default_models_on_non_image_data_are_the_mlps_with_a_warning():
    rng = np.random.RandomState(0)
    X = rng.randn(80, 10).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    study = DeepShallowStudy(n_params=300, depths=(1, 2), max_epochs=2, backend="sequential",
                             random_state=0)
    with pytest.warns(UserWarning, match="not images"):
        study.fit(X, y)
    assert set(study.summary_["model"]) == {"MLP-1", "MLP-2"}


def test_a_cnn_on_non_image_data_says_what_to_change():
    from hw1sk.estimators import NeuralClassifier

    rng = np.random.RandomState(0)
    X, y = rng.randn(20, 10).astype(np.float32), rng.randint(0, 2, 20)
    with pytest.raises(ValueError, match="takes images of"):
        NeuralClassifier(module="cnn", max_epochs=1).fit(X, y)


# ------------------------------------------- the estimator is the source of truth
class _Tiny(nn.Module):
    """A custom module: one linear layer on the flattened input."""

    def __init__(self, n_in=1, n_out=1):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(n_in, n_out))

    def forward(self, X):
        return self.net(X)


DISTINCT = dict(module=_Tiny, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                optimizer__weight_decay=1e-3, lr=0.05, max_epochs=2, batch_size=7)
SEEN = {"optimizer": "SGD", "lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9,
        "max_epochs": 2, "batch_size": 7, "module": "_Tiny"}


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_trains_with_the_estimators_settings_exactly(task, record_training):
    from hw1sk.estimators import NeuralClassifier

    rng = np.random.RandomState(0)
    X = rng.randn(40, 3).astype(np.float32)
    if task == "regression":
        y, est = X[:, 0] * 0.5, NeuralRegressor(**DISTINCT)
    else:
        y, est = (X[:, 0] > 0).astype(int), NeuralClassifier(**DISTINCT)
    est.set_params(callbacks=[("record", record_training)])
    # a given estimator keeps its settings: no full batch, no 20,000 epochs for regression
    study = DeepShallowStudy(models={"a": _Tiny, "b": {"module": _Tiny}}, estimator=est,
                             n_restarts=2, backend="sequential").fit(X, y, X[:10], y[:10])
    assert sorted(study.estimators_) == [("data", m, r) for m in "ab" for r in (0, 1)]
    for key, net in study.estimators_.items():
        assert dict(net.callbacks_)["record"].seen_ == SEEN
        assert net.module_ is study.modules_[key]
    assert len(study.results_) == 4 * 2
    for setting, value in [("optimizer", "SGD"), ("optimizer__momentum", 0.9),
                           ("optimizer__weight_decay", 1e-3), ("lr", 0.05), ("max_epochs", 2),
                           ("batch_size", 7), ("module", "_Tiny")]:
        assert study.settings_[setting] == value
    assert est.get_params()["lr"] == 0.05 and not hasattr(est, "module_")  # never modified


def test_shortcuts_and_model_dicts_apply_only_when_set(record_training):
    X = np.linspace(-1, 1, 30, dtype=np.float32)[:, None]
    est = NeuralRegressor(**DISTINCT, callbacks=[("record", record_training)])
    study = DeepShallowStudy(models={"a": _Tiny, "fast": {"module": _Tiny, "lr": 0.2}},
                             estimator=est, lr=0.01, max_epochs=3, batch_size=5,
                             backend="sequential").fit(X, X[:, 0])
    seen = {m: dict(study.estimators_[("data", m, 0)].callbacks_)["record"].seen_
            for m in ("a", "fast")}
    assert seen["a"] == {**SEEN, "lr": 0.01, "max_epochs": 3, "batch_size": 5}
    assert seen["fast"] == {**SEEN, "lr": 0.2, "max_epochs": 3, "batch_size": 5}
    s = study.settings_
    assert (s["lr"], s["max_epochs"], s["batch_size"]) == (0.01, 3, 5)
    assert (s["lr (set by the study)"], s["max_epochs (set by the study)"],
            s["batch_size (set by the study)"]) == (0.01, 3, 5)
    assert s["model settings"] == {"fast": {"lr": 0.2}}


def test_default_estimator_carries_the_task_defaults(record_training):
    X = np.linspace(-1, 1, 20, dtype=np.float32)[:, None]
    study = DeepShallowStudy(models={"lin": {"module": "mlp", "module__hidden": ()}},
                             plateau_patience=3, backend="sequential").fit(X, X[:, 0] ** 2)
    assert (study.settings_["batch_size"], study.settings_["max_epochs"],
            study.settings_["lr"]) == (-1, 20000, 1e-3)
    assert study.settings_["lr (set by the study)"] is None
    # the plateau stop ended it long before 20,000 epochs
    assert study.summary_["stopped_on_plateau"].all()


class RecordWeightNorm(Callback):
    """A user's callback that writes its own history column."""

    def on_epoch_end(self, net, **kwargs):
        norm = sum(float(p.detach().norm()) for p in net.module_.parameters())
        net.history.record("weight_norm", norm)


def test_results_keep_every_history_column_the_callbacks_record():
    X = np.linspace(-1, 1, 20, dtype=np.float32)[:, None]
    est = NeuralRegressor(batch_size=-1, max_epochs=4, callbacks=[("w", RecordWeightNorm())])
    study = DeepShallowStudy(models={"lin": {"module": "mlp", "module__hidden": ()}},
                             estimator=est, backend="sequential").fit(X, X[:, 0])
    assert {"weight_norm", "dur", "train_batch_count"} <= set(study.results_.columns)
    history = study.estimators_[("data", "lin", 0)].history_
    np.testing.assert_allclose(study.results_["weight_norm"], history["weight_norm"])


def test_a_pickled_study_holds_the_test_data_once(image_data, image_study):
    study = clone(image_study).set_params(backend="loky", n_jobs=2).fit(*image_data,
                                                                        name="halves")
    scorers = [dict(net.callbacks_)["test_score"] for net in study.estimators_.values()]
    assert len(scorers) == 4 and all(s.X is scorers[0].X and s.y is scorers[0].y
                                     for s in scorers)
    copy_ = pickle.loads(pickle.dumps(study))
    scorers = [dict(net.callbacks_)["test_score"] for net in copy_.estimators_.values()]
    assert all(s.X is scorers[0].X for s in scorers)
    X, y, X_test, y_test = image_data
    for key, net in copy_.estimators_.items():
        row = study.summary_.set_index(["dataset", "model", "restart"]).loc[key]
        assert net.score(X_test, y_test) == pytest.approx(row["test_acc"])
