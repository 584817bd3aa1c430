"""Tests of the HW1-3 flatness studies: InterpolationStudy and SensitivityStudy."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback
from torch import nn
from torch.func import functional_call

from hw1sk.estimators import NeuralClassifier
from hw1sk.evaluation import evaluate_estimator
from hw1sk.generalization import sharpness
from hw1sk.studies._base import train_run
from hw1sk.studies._defaults import default_flatness_classifier
from hw1sk.studies.interpolation import InterpolationStudy
from hw1sk.studies.sensitivity import SensitivityStudy

RESULT_COLUMNS = ["control", "batch_size", "lr", "max_epochs", "n_steps", "seed", "n_params",
                  "train_loss", "test_loss", "train_accuracy", "test_accuracy", "sensitivity",
                  "loss_input_gradient_norm", "sharpness", "top_hessian_eigenvalue",
                  "n_epochs", "target_reached", "reached_epoch"]
SUMMARY_MEASURES = ["train_loss", "test_loss", "test_accuracy", "loss_gap", "accuracy_gap",
                    "sensitivity", "sharpness", "top_hessian_eigenvalue"]


@pytest.fixture(scope="module")
def data():
    """Three classes in 6-D: 160 training and 40 held-out samples."""
    rng = np.random.RandomState(0)
    X = rng.randn(200, 6).astype(np.float32)
    y = (X @ rng.randn(6, 3)).argmax(1).astype(np.int64)
    return X[:160], y[:160], X[160:], y[160:]


def _net(**params):
    kwargs = dict(module__hidden=(4,), max_epochs=2)
    kwargs.update(params)
    return NeuralClassifier(**kwargs)


def _interpolation(**params):
    kwargs = dict(estimator=_net(batch_size=16), batch_sizes=(8, 64), lrs=(1e-3, 1e-2),
                  alphas=np.linspace(-1, 2, 7), backend="sequential")
    kwargs.update(params)
    return InterpolationStudy(**kwargs)


def _sensitivity(**params):
    kwargs = dict(estimator=_net(), batch_sizes=(4, 16, 160), max_epochs=2, n_eval=30,
                  sharpness_steps=3, sharpness_restarts=2, hessian_max_iter=43,
                  backend="sequential")
    kwargs.update(params)
    return SensitivityStudy(**kwargs)


@pytest.fixture(scope="module")
def interp_study(data):
    X, y, X_test, y_test = data
    return _interpolation().fit(X, y, X_test, y_test)


@pytest.fixture(scope="module")
def sens_study(data):
    X, y, X_test, y_test = data
    return _sensitivity().fit(X, y, X_test, y_test)


# --------------------------------------------------------------------------- interpolation
def test_interpolation_results_layout(interp_study):
    res = interp_study.results_
    assert list(res.columns) == ["control", "pair", "seed", "alpha", "split", "loss",
                                 "accuracy"]
    assert set(res["control"]) == {"epochs"} and res.groupby("pair")["seed"].nunique().eq(1).all()
    assert len(res) == 2 * 7 * 2
    assert list(pd.unique(res["pair"])) == ["batch_size", "lr"]
    assert set(res["split"]) == {"train", "test"}
    assert np.allclose(sorted(set(res["alpha"])), np.linspace(-1, 2, 7))
    assert (res["loss"] > 0).all() and res["accuracy"].between(0, 1).all()
    assert interp_study.diverged_.empty
    assert list(interp_study.summary_["pair"]) == ["batch_size", "batch_size", "lr", "lr"]
    assert set(interp_study.interpolators_) == {"batch_size", "lr"}
    assert set(interp_study.histories_["endpoint"]) == {1, 2}
    s = interp_study.settings_
    assert s["n_train"] == 160 and s["n_test"] == 40 and s["max_epochs"] == 2
    assert s["n_params"] == 6 * 4 + 4 + 4 * 3 + 3 and s["model"] == "MLP 6-4-3"


def test_interpolation_end_point_settings_and_exact_end_points(interp_study, data):
    X, y, X_test, y_test = data
    est = interp_study.estimators_
    # batch pair: batch_sizes at the estimator's lr; lr pair: lrs at its batch size (16)
    assert [(est[("batch_size", k)].batch_size, est[("batch_size", k)].lr) for k in (1, 2)] == \
        [(8, 1e-3), (64, 1e-3)]
    assert [(est[("lr", k)].batch_size, est[("lr", k)].lr) for k in (1, 2)] == \
        [(16, 1e-3), (16, 1e-2)]
    assert interp_study.settings_["lr pair, model 2"].startswith("batch size 16, lr 0.01, seed")
    res = interp_study.results_.set_index(["pair", "alpha", "split"])
    summary = interp_study.summary_.set_index(["pair", "split"])
    for pair in ("batch_size", "lr"):
        for alpha, k in ((0.0, 1), (1.0, 2)):
            for split, Xs, ys in (("train", X, y), ("test", X_test, y_test)):
                own = evaluate_estimator(est[(pair, k)], Xs, ys)
                assert res.loc[(pair, alpha, split), "loss"] == own["loss"]
                assert res.loc[(pair, alpha, split), "accuracy"] == own["accuracy"]
                assert summary.loc[(pair, split), f"loss_{k}"] == own["loss"]
        # barrier: the largest loss on [0, 1] above the worse end point
        rows = interp_study.results_
        part = rows[(rows["pair"] == pair) & (rows["split"] == "train")
                    & rows["alpha"].between(0, 1)]
        ends = part[part["alpha"].isin([0.0, 1.0])]["loss"]
        assert summary.loc[(pair, "train"), "loss_barrier"] == pytest.approx(
            part["loss"].max() - ends.max())


def test_interpolation_same_init_and_equal_settings_give_a_flat_line(data):
    X, y, X_test, y_test = data
    same = _interpolation(pairs="lr", lrs=(1e-3, 1e-3), same_init=True,
                          alphas=[-1.0, 0.5, 2.0]).fit(X, y, X_test, y_test)
    # one seed and equal settings: the two runs are identical, so theta(alpha) does not move
    assert (same.results_.groupby("split")["loss"].nunique() == 1).all()
    seeds = {same.settings_[f"lr pair, model {k}"].split("seed ")[1] for k in (1, 2)}
    assert len(seeds) == 1
    other = _interpolation(pairs="lr", lrs=(1e-3, 1e-3), same_init=False,
                           alphas=[-1.0, 0.5, 2.0]).fit(X, y, X_test, y_test)
    assert (other.results_.groupby("split")["loss"].nunique() == 3).all()


def test_interpolation_splits_off_a_test_set_reproducibly(data):
    X, y, _, _ = data
    first = _interpolation(pairs="batch_size", test_size=0.25, alphas=[0.0, 1.0]).fit(X, y)
    assert first.settings_["n_train"] == 120 and first.settings_["n_test"] == 40
    again = _interpolation(pairs="batch_size", test_size=0.25, alphas=[0.0, 1.0]).fit(X, y)
    pd.testing.assert_frame_equal(first.results_, again.results_)
    other = _interpolation(pairs="batch_size", test_size=0.25, alphas=[0.0, 1.0],
                           random_state=1).fit(X, y)
    assert not first.results_["loss"].equals(other.results_["loss"])


def test_interpolation_records_and_excludes_diverged_pairs(data):
    X, y, X_test, y_test = data
    study = _interpolation(lrs=(1e-3, 1e30), alphas=[0.0, 1.0])
    with pytest.warns(RuntimeWarning, match="1 of 4 runs diverged"):
        study.fit(X, y, X_test, y_test)
    assert len(study.diverged_) == 1
    row = study.diverged_.iloc[0]
    assert (row["pair"], row["endpoint"], row["lr"]) == ("lr", 2, 1e30)
    assert set(study.results_["pair"]) == {"batch_size"}
    assert ("lr", 1) in study.estimators_ and ("lr", 2) not in study.estimators_


def test_interpolation_get_params_and_clone():
    study = _interpolation(pairs=("lr",), same_init=True)
    params = study.get_params()
    assert params["pairs"] == ("lr",) and params["same_init"] is True
    assert params["estimator__module__hidden"] == (4,)
    copy = clone(study)
    assert copy.get_params()["lrs"] == (1e-3, 1e-2) and copy is not study
    assert not hasattr(copy, "results_")
    with pytest.raises(NotFittedError):
        copy._check_fitted()


@pytest.mark.parametrize("params, match", [
    ({"pairs": "depth"}, "'pairs' parameter of InterpolationStudy"),
    ({"pairs": ("lr", "lr")}, "pairs must be"),
    ({"pairs": ("lr", "depth")}, "pairs must be"),
    ({"pairs": ()}, "pairs must be"),
    ({"batch_sizes": (64,)}, "batch_sizes must be a pair"),
    ({"batch_sizes": (64, 0)}, "batch_sizes must be a pair of positive integers"),
    ({"batch_sizes": (64, 2.5)}, "batch_sizes must be a pair of positive integers"),
    ({"batch_sizes": 64}, "'batch_sizes' parameter of InterpolationStudy"),
    ({"lrs": (1e-3, -1.0)}, "lrs must be a pair of positive numbers"),
    ({"lrs": (1e-3, float("nan"))}, "lrs must be a pair of positive numbers"),
    ({"lrs": 0.1}, "'lrs' parameter of InterpolationStudy"),
    ({"same_init": "yes"}, "'same_init' parameter of InterpolationStudy"),
    ({"max_epochs": 0}, "'max_epochs' parameter of InterpolationStudy"),
    ({"test_size": 1.5}, "'test_size' parameter of InterpolationStudy"),
    ({"recompute_batchnorm": 1}, "'recompute_batchnorm' parameter of InterpolationStudy"),
    ({"n_jobs": 0}, "'n_jobs' parameter of InterpolationStudy"),
    ({"backend": "spark"}, "'backend' parameter of InterpolationStudy"),
    ({"alphas": [[0.0]]}, "alphas must be a non-empty 1-D array"),
])
def test_interpolation_bad_parameters(data, params, match):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=match):
        _interpolation(**params).fit(X, y)


def test_bad_data(data):
    X, y, X_test, y_test = data
    with pytest.raises(ValueError, match="both X_test and y_test"):
        _interpolation().fit(X, y, X_test)
    with pytest.raises(ValueError, match="X_test has samples of shape"):
        _sensitivity().fit(X, y, X_test[:, :5], y_test)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        _sensitivity().fit(X, y[:10])


def test_default_estimator_is_the_documented_mlp():
    est = default_flatness_classifier()
    assert (est.module, est.module__hidden, est.lr, est.batch_size, est.max_epochs) == \
        ("mlp", (128,), 1e-3, 64, 5)
    assert InterpolationStudy().get_params()["estimator"] is None


# --------------------------------------------------------------------------- sensitivity
def test_sensitivity_results_layout(sens_study):
    res = sens_study.results_
    assert list(res.columns) == RESULT_COLUMNS
    assert res["batch_size"].tolist() == [4, 16, 160]
    # equal epochs: the number of optimizer steps scales as 1 / batch size
    assert res["n_steps"].tolist() == [2 * 40, 2 * 10, 2 * 1]
    assert res["n_params"].eq(6 * 4 + 4 + 4 * 3 + 3).all()
    assert res["seed"].nunique() == 1  # one seed: the same initial weights for all
    assert res[["sensitivity", "loss_input_gradient_norm", "sharpness"]].ge(0).all().all()
    assert list(sens_study.summary_.columns) == [
        "control", "batch_size",
        *(f"{m}{s}" for m in SUMMARY_MEASURES for s in ("", "_std", "_ci_low", "_ci_high")),
        "n_seeds", "n_epochs", "reached_epoch", "n_reached", "target_reached"]
    np.testing.assert_allclose(sens_study.summary_["loss_gap"],
                               res["test_loss"] - res["train_loss"])
    assert sens_study.summary_["n_seeds"].eq(1).all()
    assert sens_study.summary_["loss_gap_std"].isna().all()  # one seed: no spread
    assert res["control"].eq("epochs").all() and res["target_reached"].isna().all()
    assert set(sens_study.histories_["batch_size"]) == {4, 16, 160}
    assert {"test_loss", "test_acc"} <= set(sens_study.histories_.columns)
    assert [len(i) for i in sens_study.eval_indices_.values()] == [30, 30]
    assert sens_study.settings_["n_train"] == 160 and "30 test samples" in \
        sens_study.settings_["sensitivity"]


def _jacobian_norms(module, X, softmax=True):
    """Per-sample Frobenius norms of d output / d input, one autograd Jacobian per sample."""
    module = module.eval()
    norms = []
    for x in torch.from_numpy(X):
        def f(inp):
            out = module(inp.unsqueeze(0))[0]
            return torch.softmax(out, 0) if softmax else out
        norms.append(torch.autograd.functional.jacobian(f, x).norm().item())
    return np.array(norms)


def _loss_input_gradient_norms(module, X, y):
    norms = []
    for x, t in zip(torch.from_numpy(X), torch.from_numpy(y)):
        x = x.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(module.eval()(x.unsqueeze(0)), t.unsqueeze(0))
        (g,) = torch.autograd.grad(loss, x)
        norms.append(g.norm().item())
    return np.array(norms)


def _top_hessian_eigenvalue(module, X, y):
    """Largest eigenvalue of the full (float64) Hessian of the mean cross-entropy."""
    module = module.double().eval()
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in module.parameters()])
    Xt, yt = torch.from_numpy(X).double(), torch.from_numpy(y)

    def loss(flat):
        params, start = {}, 0
        for n, s in zip(names, shapes):
            params[n] = flat[start:start + s.numel()].reshape(s)
            start += s.numel()
        return nn.functional.cross_entropy(functional_call(module, params, (Xt,)), yt)

    H = torch.autograd.functional.hessian(loss, theta)
    return torch.linalg.eigvalsh(H)[-1].item()


def test_sensitivity_measures_match_independent_computations(sens_study, data):
    X, y, X_test, y_test = data
    sens_idx = sens_study.eval_indices_["sensitivity"]
    curv_idx = sens_study.eval_indices_["curvature"]
    for _, row in sens_study.results_.iterrows():
        template = _net(batch_size=int(row["batch_size"]), lr=row["lr"])
        # the same seed retrains the very same model
        net = train_run(template, X, y, seed=int(row["seed"]))["estimator"]
        module, criterion = net.module_, net.criterion_
        assert row["train_loss"] == pytest.approx(evaluate_estimator(net, X, y)["loss"], rel=1e-6)
        assert row["test_accuracy"] == pytest.approx(
            evaluate_estimator(net, X_test, y_test)["accuracy"])
        assert row["sensitivity"] == pytest.approx(
            _jacobian_norms(module, X_test[sens_idx]).mean(), rel=1e-4)
        assert row["loss_input_gradient_norm"] == pytest.approx(
            _loss_input_gradient_norms(module, X_test[sens_idx], y_test[sens_idx]).mean(),
            rel=1e-4)
        assert row["sharpness"] == pytest.approx(sharpness(
            module, criterion, X[curv_idx], y[curv_idx], epsilon=1e-3, n_steps=3,
            n_restarts=2, random_state=int(row["seed"])), rel=1e-4, abs=1e-6)
        assert row["top_hessian_eigenvalue"] == pytest.approx(
            _top_hessian_eigenvalue(module, X[curv_idx], y[curv_idx]), rel=1e-3)


def test_sensitivity_options_logits_train_split_and_switches(data):
    X, y, X_test, y_test = data
    study = _sensitivity(batch_sizes=(160,), output="logits", sensitivity_on="train",
                         n_eval=None, sharpness=False, hessian_top=False)
    study.fit(X, y, X_test, y_test)
    row = study.results_.iloc[0]
    assert math.isnan(row["sharpness"]) and math.isnan(row["top_hessian_eigenvalue"])
    np.testing.assert_array_equal(study.eval_indices_["sensitivity"], np.arange(160))
    net = train_run(_net(batch_size=160), X, y, seed=int(row["seed"]))["estimator"]
    assert row["sensitivity"] == pytest.approx(
        _jacobian_norms(net.module_, X, softmax=False).mean(), rel=1e-4)
    assert study.settings_["sharpness"] == "off"


def test_sensitivity_reproducible_and_independent_of_n_jobs(sens_study, data):
    X, y, X_test, y_test = data
    again = _sensitivity().fit(X, y, X_test, y_test)
    pd.testing.assert_frame_equal(sens_study.results_, again.results_)
    parallel = _sensitivity(n_jobs=2, backend="loky").fit(X, y, X_test, y_test)
    pd.testing.assert_frame_equal(sens_study.results_, parallel.results_, check_exact=True)


def test_sensitivity_all_diverged(data):
    X, y, X_test, y_test = data
    study = _sensitivity(batch_sizes=(16, 160), lr=1e30)
    with pytest.warns(RuntimeWarning, match="2 of 2 runs diverged"):
        study.fit(X, y, X_test, y_test)
    assert study.results_.empty and list(study.results_.columns) == RESULT_COLUMNS
    assert study.diverged_["batch_size"].tolist() == [16, 160]


@pytest.mark.parametrize("params, match", [
    ({"batch_sizes": ()}, "batch_sizes must be a non-empty sequence of distinct"),
    ({"batch_sizes": (16, 16)}, "batch_sizes must be a non-empty sequence of distinct"),
    ({"batch_sizes": (16, -1)}, "batch_sizes must be a non-empty sequence of distinct"),
    ({"batch_sizes": (16, 2.5)}, "batch_sizes must be a non-empty sequence of distinct"),
    ({"lr": 0}, "'lr' parameter of SensitivityStudy"),
    ({"max_epochs": 1.5}, "'max_epochs' parameter of SensitivityStudy"),
    ({"output": "probs"}, "'output' parameter of SensitivityStudy"),
    ({"sensitivity_on": "valid"}, "'sensitivity_on' parameter of SensitivityStudy"),
    ({"n_eval": 0}, "'n_eval' parameter of SensitivityStudy"),
    ({"sharpness": 1}, "'sharpness' parameter of SensitivityStudy"),
    ({"hessian_top": None}, "'hessian_top' parameter of SensitivityStudy"),
    ({"sharpness_epsilon": -1e-3}, "'sharpness_epsilon' parameter of SensitivityStudy"),
    ({"sharpness_steps": 0}, "'sharpness_steps' parameter of SensitivityStudy"),
    ({"sharpness_restarts": 0}, "'sharpness_restarts' parameter of SensitivityStudy"),
    ({"hessian_max_iter": 0}, "'hessian_max_iter' parameter of SensitivityStudy"),
    ({"n_jobs": 0}, "'n_jobs' parameter of SensitivityStudy"),
    ({"backend": "spark"}, "'backend' parameter of SensitivityStudy"),
])
def test_sensitivity_bad_parameters(data, params, match):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=match):
        _sensitivity(**params).fit(X, y)


def test_sensitivity_get_params_and_clone():
    study = _sensitivity(sharpness_epsilon=1e-2)
    copy = clone(study)
    assert copy.get_params()["sharpness_epsilon"] == 1e-2
    assert copy.get_params()["batch_sizes"] == (4, 16, 160)
    assert SensitivityStudy().get_params()["batch_sizes"] == (16, 64, 256, 1024, 4096)
    with pytest.raises(NotFittedError):
        copy._check_fitted()


# ------------------------------------------- the estimator is the source of truth
class _Tiny(torch.nn.Module):
    def __init__(self, n_in=20, n_out=2):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, n_out))

    def forward(self, X):
        return self.net(X)


def test_sensitivity_trains_with_the_estimators_settings_except_the_batch_size(record_training):
    from hw1sk.estimators import NeuralClassifier

    rng = np.random.RandomState(0)
    X = rng.randn(120, 20).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    est = NeuralClassifier(module=_Tiny, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                           optimizer__weight_decay=1e-3, lr=0.05, max_epochs=2, batch_size=7,
                           callbacks=[("record", record_training)])
    study = SensitivityStudy(estimator=est, batch_sizes=(8, 32), n_eval=10, sharpness=False,
                             hessian_top=False, backend="sequential").fit(X, y)
    for batch_size, net in study.estimators_.items():
        seen = dict(net.callbacks_)["record"].seen_
        assert seen == {"optimizer": "SGD", "lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9,
                        "max_epochs": 2, "batch_size": batch_size, "module": "_Tiny"}
    assert study.settings_["optimizer"] == "SGD"
    assert study.settings_["optimizer__weight_decay"] == 1e-3
    assert study.settings_["lr"] == 0.05 and study.settings_["max_epochs"] == 2
    # the study's own shortcuts apply only when set, and are recorded
    study = SensitivityStudy(estimator=est, batch_sizes=(8,), lr=0.01, n_eval=10,
                             sharpness=False, hessian_top=False, backend="sequential").fit(X, y)
    assert dict(study.estimators_[8].callbacks_)["record"].seen_["lr"] == 0.01
    assert study.settings_["lr"] == 0.01 and study.settings_["lr (set by the study)"] == 0.01


class _RecordEpochNumber(Callback):
    """A user callback writing its own history column."""

    def on_epoch_end(self, net, **kwargs):
        net.history.record("my_column", float(len(net.history)))


def test_interpolation_trains_with_the_estimators_settings_except_the_pairs_setting(
        record_training):
    rng = np.random.RandomState(0)
    X = rng.randn(120, 20).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    est = NeuralClassifier(module=_Tiny, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                           optimizer__weight_decay=1e-3, lr=0.05, max_epochs=2, batch_size=7,
                           callbacks=[("record", record_training), ("mine", _RecordEpochNumber())])
    study = InterpolationStudy(estimator=est, batch_sizes=(8, 32), lrs=(0.01, 0.02),
                               alphas=[0.0, 1.0], backend="sequential").fit(X, y)
    expected = {("batch_size", 1): (0.05, 8), ("batch_size", 2): (0.05, 32),
                ("lr", 1): (0.01, 7), ("lr", 2): (0.02, 7)}
    assert set(study.estimators_) == set(expected)
    for key, net in study.estimators_.items():
        lr, batch_size = expected[key]
        assert dict(net.callbacks_)["record"].seen_ == {
            "optimizer": "SGD", "lr": lr, "weight_decay": 1e-3, "momentum": 0.9,
            "max_epochs": 2, "batch_size": batch_size, "module": "_Tiny"}
        assert dict(net.callbacks_)["record"].epochs_ == 2
    assert study.histories_["my_column"].tolist() == [1.0, 2.0] * 4
    s = study.settings_
    assert (s["optimizer"], s["optimizer__weight_decay"], s["optimizer__momentum"]) == \
        ("SGD", 1e-3, 0.9)
    assert (s["lr"], s["max_epochs"], s["batch_size"], s["module"]) == (0.05, 2, 7, "_Tiny")
    assert s["lr pair, model 1"].startswith("batch size 7, lr 0.01, seed")
    assert s["batch_size pair, model 2"].startswith("batch size 32, lr 0.05, seed")
    assert s["max_epochs (set by the study)"] is None
    # the study's own max_epochs applies only when set, and is recorded
    study = InterpolationStudy(estimator=est, pairs="lr", max_epochs=3, lrs=(0.01, 0.02),
                               alphas=[0.0, 1.0], backend="sequential").fit(X, y)
    for net in study.estimators_.values():
        seen = dict(net.callbacks_)["record"].seen_
        assert (seen["max_epochs"], seen["batch_size"], seen["optimizer"]) == (3, 7, "SGD")
    assert study.settings_["max_epochs"] == 3
    assert study.settings_["max_epochs (set by the study)"] == 3


# ------------------------------------------- seeds with spread, equal train loss (issue 11)
def test_sensitivity_n_seeds_keeps_the_first_seed_and_aggregates(sens_study, data):
    X, y, X_test, y_test = data
    study = _sensitivity(n_seeds=3).fit(X, y, X_test, y_test)
    res = study.results_
    assert len(res) == 3 * 3 and res.groupby("batch_size")["seed"].nunique().eq(3).all()
    # the first seed of each batch size is the one-seed study's run, exactly
    first = res[res["seed"] == sens_study.results_["seed"].iloc[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, sens_study.results_)
    summary = study.summary_.set_index("batch_size")
    assert summary["n_seeds"].eq(3).all()
    for b, rows in res.groupby("batch_size"):
        mean, std = rows["sharpness"].mean(), rows["sharpness"].std(ddof=1)
        assert summary.loc[b, "sharpness"] == pytest.approx(mean)
        assert summary.loc[b, "sharpness_std"] == pytest.approx(std)
        half = 4.302652729911275 * std / np.sqrt(3)  # t(0.975, 2 degrees of freedom)
        assert summary.loc[b, "sharpness_ci_low"] == pytest.approx(mean - half)
        assert summary.loc[b, "sharpness_ci_high"] == pytest.approx(mean + half)
    assert len(study.all_estimators_) == 9 and set(study.estimators_) == {4, 16, 160}
    assert study.settings_["n_seeds"] == 3


def test_sensitivity_seeds_of_a_condition_are_trained_together(data):
    X, y, X_test, y_test = data
    kwargs = dict(batch_sizes=(16, 160), n_seeds=2, sharpness=False, hessian_top=False)
    from hw1sk.studies._seed_groups import seed_groups

    together = _sensitivity(vectorize=True, **kwargs)
    prepared = together._prepare_data(X, y, X_test, y_test)
    tasks = together._tasks(prepared, together._template_estimator(prepared))
    # one estimator object and the same data per batch size: its two seeds form a group
    assert seed_groups([task for _, task in tasks]) == [[0, 1], [2, 3]]
    together.fit(X, y, X_test, y_test)
    alone = _sensitivity(vectorize=False, **kwargs).fit(X, y, X_test, y_test)
    cols = ["train_loss", "test_loss", "sensitivity"]
    np.testing.assert_allclose(together.results_[cols], alone.results_[cols], rtol=1e-4)


def test_sensitivity_train_loss_control(data):
    X, y, X_test, y_test = data
    study = _sensitivity(controls=("epochs", "train_loss"), target_loss=0.95, max_epochs_cap=30,
                         n_seeds=2, sharpness=False, hessian_top=False).fit(X, y, X_test, y_test)
    res = study.results_
    assert list(pd.unique(res["control"])) == ["epochs", "train_loss"]
    epochs, loss = res[res["control"] == "epochs"], res[res["control"] == "train_loss"]
    assert epochs["n_epochs"].eq(2).all() and epochs["target_reached"].isna().all()
    assert loss["max_epochs"].eq(30).all() and loss["n_epochs"].le(30).all()
    reached = loss[loss["target_reached"].astype(bool)]
    assert len(reached) and (reached["reached_epoch"] == reached["n_epochs"]).all()
    missed = loss[~loss["target_reached"].astype(bool)]
    assert missed["n_epochs"].eq(30).all() and missed["reached_epoch"].isna().all()
    hist = study.histories_
    for (control, b, s), rows in hist.groupby(["control", "batch_size", "seed"]):
        row = res[(res["control"] == control) & (res["batch_size"] == b) & (res["seed"] == s)]
        if control == "train_loss" and bool(row["target_reached"].iloc[0]):
            assert rows["train_loss"].iloc[-1] <= 0.95 < rows["train_loss"].iloc[:-1].min()
    summary = study.summary_.set_index(["control", "batch_size"])
    assert summary.loc[("train_loss", 4), "n_reached"] == \
        loss[loss["batch_size"] == 4]["target_reached"].sum()
    assert "train loss <= 0.95, at most 30 epochs" in study.settings_["train_loss control"]
    # the default cap: 10 x the estimator's epochs
    default = _sensitivity(controls="train_loss", target_loss=1e-6, batch_sizes=(160,),
                           sharpness=False, hessian_top=False).fit(X, y, X_test, y_test)
    assert default.results_["n_epochs"].tolist() == [20]
    assert default.results_["target_reached"].tolist() == [False]


@pytest.mark.parametrize("params, match", [
    ({"controls": ("train_loss",)}, "target_loss must be set"),
    ({"controls": ("epochs", "steps")}, "controls must be a non-empty selection"),
    ({"controls": ()}, "controls must be a non-empty selection"),
    ({"controls": ("epochs", "epochs")}, "controls must be a non-empty selection"),
    ({"n_seeds": 0}, "'n_seeds' parameter of"),
    ({"target_loss": -1.0}, "'target_loss' parameter of"),
    ({"max_epochs_cap": 0}, "'max_epochs_cap' parameter of"),
])
@pytest.mark.parametrize("make", [_sensitivity, _interpolation])
def test_seed_and_control_parameters_are_checked(data, make, params, match):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=match):
        make(**params).fit(X, y)


def test_interpolation_n_seeds_and_train_loss_control(interp_study, data):
    X, y, X_test, y_test = data
    study = _interpolation(n_seeds=2, controls=("epochs", "train_loss"), target_loss=1.0,
                           max_epochs_cap=15, alphas=[0.0, 0.5, 1.0]).fit(X, y, X_test, y_test)
    res = study.results_
    assert len(res) == 2 * 2 * 2 * 3 * 2  # controls x pairs x seeds x alphas x splits
    assert res.groupby(["control", "pair"])["seed"].nunique().eq(2).all()
    seeds = study.seed_summary_
    assert len(seeds) == 2 * 2 * 2 * 2 and seeds["loss_barrier"].ge(0).all()
    summary = study.summary_.set_index(["control", "pair", "split"])
    assert summary["n_seeds"].eq(2).all()
    part = seeds[(seeds["control"] == "train_loss") & (seeds["pair"] == "lr")
                 & (seeds["split"] == "train")]
    assert summary.loc[("train_loss", "lr", "train"), "loss_1"] == \
        pytest.approx(part["loss_1"].mean())
    assert seeds.loc[seeds["control"] == "epochs", "target_reached"].isna().all()
    assert seeds.loc[seeds["control"] == "train_loss", "n_epochs_1"].le(15).all()
    # the first replicate under "epochs" is the one-seed study's
    first = res[(res["control"] == "epochs") & (res["alpha"] == 0.0)].drop_duplicates(
        ["pair", "split"], keep="first").set_index(["pair", "split"])["loss"]
    base = interp_study.results_.set_index(["pair", "alpha", "split"])["loss"]
    for (pair, split), loss in first.items():
        assert loss == base.loc[(pair, 0.0, split)]
    assert len(study.all_estimators_) == 2 * 2 * 2 * 2
    assert set(study.estimators_) == {("batch_size", 1), ("batch_size", 2), ("lr", 1),
                                      ("lr", 2)}
    assert study.settings_["lr pair, model 1"].count(",") == 3  # "..., seeds a, b"


def test_train_loss_control_with_seed_groups_matches_separate_fits(data):
    X, y, X_test, y_test = data
    kwargs = dict(batch_sizes=(16, 160), n_seeds=2, controls=("train_loss",), target_loss=1.0,
                  max_epochs_cap=12, sharpness=False, hessian_top=False)
    # the ensemble replays each seed's target stop (hw1sk.ensemble_stops): no fallback
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        together = _sensitivity(vectorize=True, **kwargs).fit(X, y, X_test, y_test)
    alone = _sensitivity(vectorize=False, **kwargs).fit(X, y, X_test, y_test)
    cols = ["n_epochs", "target_reached", "reached_epoch"]
    pd.testing.assert_frame_equal(together.results_[cols], alone.results_[cols])
    np.testing.assert_allclose(together.results_["train_loss"], alone.results_["train_loss"],
                               rtol=1e-4)
