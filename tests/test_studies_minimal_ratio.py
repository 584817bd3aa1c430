"""Tests of the HW1-2 minimal-ratio study: runs, results_, checks against direct computations."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

import hw1sk.studies.minimal_ratio as mr
from hw1sk.datasets import make_function_dataset
from hw1sk.estimators import NeuralRegressor
from hw1sk.parameters import functional_loss
from hw1sk.studies.minimal_ratio import RESULT_COLUMNS, MinimalRatioStudy, minimal_ratio_run
from hw1sk.sweep import RunDiverged

# a few seconds in all: 61 parameters, 60 points
TINY = dict(n_samples=60, hidden=(6, 6), train_epochs=150, lr=2e-2, max_grad_steps=30,
            backend="sequential")


@pytest.fixture(scope="module")
def study():
    # every run fitted on its own: the direct computations below retrain one run bit for bit
    return MinimalRatioStudy(n_runs=3, vectorize=False, **TINY).fit()


def test_seeds_trained_together_agree_with_separate_runs(study):
    """vectorize=True trains the runs' seeds in one SeedEnsemble pass: the same numbers."""
    together = MinimalRatioStudy(n_runs=3, vectorize=True, **TINY).fit()
    a, b = study.results_, together.results_
    assert a["seed"].tolist() == b["seed"].tolist()
    np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-4)
    assert (b["grad_norm_after"] < 1e-3).tolist() == (a["grad_norm_after"] < 1e-3).tolist()
    for run in a["run"]:
        scale = np.abs(study.spectra_[run]).max()
        np.testing.assert_allclose(together.spectra_[run], study.spectra_[run], rtol=0,
                                   atol=1e-3 * scale)


def _direct_hessian(module, X, y):
    """Hessian of the float64 MSE by torch.autograd.functional.hessian (not hw1sk.curvature)."""
    X, y = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    loss_fn, theta = functional_loss(module, torch.nn.MSELoss(), X, y)
    theta = theta.detach().requires_grad_(True)
    loss = loss_fn(theta)
    (grad,) = torch.autograd.grad(loss, theta)
    H = torch.autograd.functional.hessian(loss_fn, theta.detach())
    return float(loss.detach()), float(grad.norm()), H.numpy()


def test_results_layout(study):
    res = study.results_
    assert list(res.columns) == list(RESULT_COLUMNS)
    assert res["run"].tolist() == [0, 1, 2] and res["seed"].nunique() == 3
    assert (res["n_params"] == 61).all()  # (1+1)*6 + (6+1)*6 + (6+1)*1
    total = res["n_positive"] + res["n_negative"] + res["n_zero"]
    assert (total == res["n_params"]).all()
    np.testing.assert_allclose(res["minimal_ratio"], res["n_positive"] / res["n_params"])
    assert (res["converged"] == (res["grad_norm_after"] < study.grad_tol)).all()
    assert (res["grad_norm_after"] <= res["grad_norm_before"]).all()
    assert set(study.spectra_) == {0, 1, 2}
    for run, lam in study.spectra_.items():
        row = res.set_index("run").loc[run]
        assert lam.shape == (61,) and np.all(np.diff(lam) >= 0)
        assert (lam[0], lam[-1]) == (row["min_eigenvalue"], row["max_eigenvalue"])
        assert int(np.sum(lam > row["eigen_tol_used"])) == row["n_positive"]
        assert int(np.sum(lam < -row["eigen_tol_used"])) == row["n_negative"]
    assert study.diverged_.empty and list(study.diverged_.columns) == ["run", "seed", "message"]
    assert study.settings_["n_params"] == 61 and study.settings_["n_runs"] == 3


def test_data_are_generated_once_from_random_state(study):
    X, y = make_function_dataset("sinc", n_samples=60, random_state=0)
    np.testing.assert_array_equal(study.X_, X)
    np.testing.assert_array_equal(study.y_, y)


def test_run_matches_direct_computation(study):
    """Retrain run 1 by hand; loss, gradient norm and spectrum agree with autograd + numpy."""
    from hw1sk.critical_points import minimize_gradient_norm

    seed = int(study.results_.loc[1, "seed"])
    est = NeuralRegressor(module="mlp", module__hidden=(6, 6), module__activation="tanh",
                          batch_size=-1, max_epochs=150, lr=2e-2, random_state=seed)
    est.fit(study.X_, study.y_)
    module = est.module_.double()
    X, y = study.X_.astype(np.float64), study.y_.astype(np.float64)
    minimize_gradient_norm(module, torch.nn.MSELoss(), X, y, tol=1e-3, max_steps=30)
    loss, grad_norm, H = _direct_hessian(module, X, y)
    lam = np.linalg.eigvalsh((H + H.T) / 2)
    row = study.results_.loc[1]
    assert row["loss"] == pytest.approx(loss, rel=1e-12)
    assert row["grad_norm_after"] == pytest.approx(grad_norm, rel=1e-8)
    scale = np.abs(lam).max()
    np.testing.assert_allclose(study.spectra_[1], lam, rtol=0, atol=1e-10 * scale)
    t = lam.size * np.finfo(np.float64).eps * scale  # the documented default zero band
    assert row["n_positive"] == int(np.sum(lam > t))
    assert row["n_negative"] == int(np.sum(lam < -t))


def test_linear_model_is_a_minimum():
    """No hidden layer: the MSE is a convex quadratic with Hessian 2/n A^T A, A = [x, 1]."""
    X, y = make_function_dataset("sin", n_samples=40, random_state=3)
    study = MinimalRatioStudy(n_runs=1, hidden=(), train_epochs=5, grad_tol=1e-10,
                              backend="sequential").fit(X, y)
    row = study.results_.iloc[0]
    A = np.hstack([X, np.ones_like(X)]).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, y.astype(np.float64), rcond=None)
    best = float(np.mean((A @ coef - y) ** 2))
    assert row["converged"] and row["loss"] == pytest.approx(best, rel=1e-9)
    np.testing.assert_allclose(study.spectra_[0], np.linalg.eigvalsh(2 / len(X) * A.T @ A),
                               rtol=1e-10)
    assert (row["minimal_ratio"], row["n_positive"], row["n_negative"], row["n_zero"]) == \
        (1.0, 2, 0, 0)


def test_given_data_with_1d_target_and_two_features():
    rng = np.random.RandomState(0)
    X = rng.uniform(-1, 1, (30, 2))
    y = X[:, 0] * X[:, 1]
    study = MinimalRatioStudy(n_runs=1, hidden=(3,), train_epochs=20,
                              backend="sequential").fit(X, y)
    assert study.results_["n_params"].iloc[0] == (2 + 1) * 3 + (3 + 1) * 1
    np.testing.assert_array_equal(study.y_, y)  # as given; the estimator shapes it
    assert study.settings_["data"].startswith("30 given samples")


def test_reproducible_and_independent_of_n_jobs(study):
    again = MinimalRatioStudy(n_runs=3, vectorize=False, **TINY).fit()
    pd.testing.assert_frame_equal(study.results_, again.results_)
    parallel = MinimalRatioStudy(n_runs=3, vectorize=False, **{**TINY, "backend": "loky"},
                                 n_jobs=2).fit()
    pd.testing.assert_frame_equal(study.results_, parallel.results_, check_exact=True)
    for run in study.spectra_:
        np.testing.assert_array_equal(study.spectra_[run], parallel.spectra_[run])


def test_vectorized_runs_are_independent_of_n_jobs():
    """n_jobs=2 cuts the seed group in two pieces: each seed's numbers stay the same."""
    one = MinimalRatioStudy(n_runs=6, vectorize="auto", **TINY).fit()
    two = MinimalRatioStudy(n_runs=6, vectorize="auto", **{**TINY, "backend": "loky"},
                            n_jobs=2).fit()
    pd.testing.assert_frame_equal(one.results_, two.results_, check_exact=True)
    for run in one.spectra_:
        np.testing.assert_array_equal(one.spectra_[run], two.spectra_[run])


def test_unconverged_runs_are_kept_and_flagged():
    study = MinimalRatioStudy(n_runs=2, max_grad_steps=0, grad_tol=1e-12, keep_spectrum=False,
                              **{k: v for k, v in TINY.items() if k != "max_grad_steps"}).fit()
    res = study.results_
    assert len(res) == 2 and not res["converged"].any() and (res["n_steps"] == 0).all()
    np.testing.assert_array_equal(res["grad_norm_before"], res["grad_norm_after"])
    assert study.spectra_ == {}
    summary = study.summary_.set_index("group")
    assert summary.loc["not converged", "n_runs"] == 2
    assert summary.loc["converged", "n_runs"] == 0
    assert summary.loc["finished", "mean_minimal_ratio"] == pytest.approx(
        res["minimal_ratio"].mean())


def test_summary_counts(study):
    summary = study.summary_.set_index("group")
    res = study.results_
    n_conv = int(res["converged"].sum())
    assert summary.loc["converged", "n_runs"] == n_conv
    assert summary.loc["not converged", "n_runs"] == 3 - n_conv
    assert summary.loc["diverged", "n_runs"] == 0
    assert summary.loc["converged", "fraction"] == pytest.approx(n_conv / 3)
    assert summary.loc["finished", "max_minimal_ratio"] == res["minimal_ratio"].max()


def test_diverged_runs_are_recorded_and_excluded(monkeypatch):
    original = mr._run
    seeds = {}

    def flaky(estimator, X, y, seed, *args):
        if seed == seeds["bad"]:
            raise RunDiverged("loss is nan at epoch 3")
        return original(estimator, X, y, seed, *args)

    from hw1sk.seeding import spawn_seeds

    seeds["bad"] = spawn_seeds(0, 3)[1]
    monkeypatch.setattr(mr, "_run", flaky)
    with pytest.warns(RuntimeWarning, match="1 of 3 runs diverged"):
        study = MinimalRatioStudy(n_runs=3, **{**TINY, "train_epochs": 10}).fit()
    assert study.results_["run"].tolist() == [0, 2]
    assert study.diverged_.to_dict("records") == [
        {"run": 1, "seed": seeds["bad"], "message": "loss is nan at epoch 3"}]
    assert set(study.spectra_) == {0, 2}
    assert study.summary_.set_index("group").loc["diverged", "n_runs"] == 1


def test_every_run_diverged_raises():
    study = MinimalRatioStudy(n_runs=2, n_samples=20, hidden=(3,), train_epochs=5, lr=1e30,
                              backend="sequential")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="every run diverged"):
            study.fit()
    assert len(study.diverged_) == 2


def test_run_restores_thread_count():
    X, y = make_function_dataset("sinc", n_samples=20, random_state=0)
    est = NeuralRegressor(module__hidden=(3,), module__activation="tanh", batch_size=-1,
                          max_epochs=5)
    before = torch.get_num_threads()
    run = minimal_ratio_run(est, X, y, seed=0, n_threads=1, keep_spectrum=False)
    assert torch.get_num_threads() == before and run["eigenvalues"] is None


def test_params_and_clone():
    study = MinimalRatioStudy(n_runs=7, hidden=(5,), eigen_tol=1e-9)
    params = study.get_params()
    assert params["n_runs"] == 7 and params["hidden"] == (5,) and params["eigen_tol"] == 1e-9
    assert params["n_jobs"] == 1 and params["backend"] == "loky" and params["random_state"] == 0
    twin = clone(study)
    assert twin.get_params() == params and not hasattr(twin, "results_")
    assert twin.set_params(lr=0.5).lr == 0.5


@pytest.mark.parametrize("params, match", [
    ({"n_runs": 0}, "'n_runs' parameter of MinimalRatioStudy"),
    ({"hidden": "20"}, "'hidden' parameter of MinimalRatioStudy"),
    ({"hidden": (4, 0)}, "hidden must be a sequence of positive integers"),
    ({"activation": "nope"}, "'activation' parameter of MinimalRatioStudy"),
    ({"train_epochs": 0}, "'train_epochs' parameter of MinimalRatioStudy"),
    ({"lr": 0.0}, "'lr' parameter of MinimalRatioStudy"),
    ({"grad_tol": -1e-3}, "'grad_tol' parameter of MinimalRatioStudy"),
    ({"max_grad_steps": -1}, "'max_grad_steps' parameter of MinimalRatioStudy"),
    ({"grad_optimizer": "sgd"}, "'grad_optimizer' parameter of MinimalRatioStudy"),
    ({"eigen_tol": -1.0}, "'eigen_tol' parameter of MinimalRatioStudy"),
    ({"keep_spectrum": "yes"}, "'keep_spectrum' parameter of MinimalRatioStudy"),
    ({"n_samples": 0}, "'n_samples' parameter of MinimalRatioStudy"),
    ({"estimator": "mlp"}, "'estimator' parameter of MinimalRatioStudy"),
    ({"backend": "spark"}, "'backend' parameter of MinimalRatioStudy"),
    ({"function": "cosine"}, "Unknown function"),
    ({"hidden": (3, 0)}, "hidden must be a sequence of positive integers"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        MinimalRatioStudy(**{"n_runs": 1, "n_samples": 10, **params}).fit()


def test_x_without_y():
    with pytest.raises(ValueError, match="X and y must be given together"):
        MinimalRatioStudy(n_runs=1).fit(np.zeros((5, 1)))


# ------------------------------------------- the estimator is the source of truth
class _TinyCNN(torch.nn.Module):
    """A convolution, tanh and a linear head on 1x5x5 images: 20 + 19 parameters."""

    def __init__(self, n_out=1):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.head = torch.nn.Linear(2 * 3 * 3, n_out)

    def forward(self, X):
        return self.head(torch.tanh(self.conv(X)).flatten(1))


def _census_is_complete(study):
    res = study.results_
    assert (res["n_positive"] + res["n_negative"] + res["n_zero"] == res["n_params"]).all()
    for run, lam in study.spectra_.items():
        assert lam.shape == (res.set_index("run").loc[run, "n_params"],)
        assert np.all(np.isfinite(lam))


def test_trains_with_the_estimators_settings(record_training):
    X = np.random.RandomState(0).randn(30, 1, 5, 5).astype(np.float32)
    y = X[:, 0, 2, 2] - X[:, 0, 1, 3]
    est = NeuralRegressor(module=_TinyCNN, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                          optimizer__weight_decay=1e-3, lr=0.05, max_epochs=2, batch_size=7,
                          callbacks=[("record", record_training)])
    study = MinimalRatioStudy(n_runs=2, estimator=est, max_grad_steps=3,
                              backend="sequential").fit(X, y)
    assert set(study.estimators_) == {0, 1} and (study.results_["n_params"] == 39).all()
    for net in study.estimators_.values():
        assert dict(net.callbacks_)["record"].seen_ == {
            "optimizer": "SGD", "lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9,
            "max_epochs": 2, "batch_size": 7, "module": "_TinyCNN"}
        assert net.module_.conv.weight.dtype == torch.float32  # kept as trained
    _census_is_complete(study)
    settings = study.settings_
    assert (settings["optimizer"], settings["optimizer__weight_decay"], settings["lr"],
            settings["max_epochs"], settings["batch_size"]) == ("SGD", 1e-3, 0.05, 2, 7)
    assert settings["module"] == "_TinyCNN" and settings["n_params"] == 39
    # the study's own shortcuts apply only when set, and are recorded
    study = MinimalRatioStudy(n_runs=1, estimator=est, train_epochs=3, lr=0.01,
                              max_grad_steps=0, backend="sequential").fit(X, y)
    seen = dict(study.estimators_[0].callbacks_)["record"].seen_
    assert (seen["lr"], seen["max_epochs"], seen["batch_size"]) == (0.01, 3, 7)
    assert study.settings_["lr"] == 0.01 and study.settings_["lr (set by the study)"] == 0.01
    assert study.settings_["max_epochs"] == 3
    assert study.settings_["train_epochs (set by the study)"] == 3


def _cross_entropy(logits, y, classes):
    """Mean softmax cross-entropy by numpy, labels mapped to positions by list.index."""
    idx = np.array([list(classes).index(label) for label in y])
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), idx].mean())


@pytest.mark.parametrize("classes", [None, [7, 3]])
def test_classifier_on_labels_3_and_7(classes):
    from hw1sk.estimators import NeuralClassifier

    rng = np.random.RandomState(1)
    X = rng.randn(40, 2).astype(np.float32)
    y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, 7, 3)
    clf = NeuralClassifier(module__hidden=(3,), module__activation="tanh", max_epochs=20,
                           lr=0.05, classes=classes, criterion=torch.nn.CrossEntropyLoss)
    # no gradient phase: the loss is the cross-entropy of the trained net
    study = MinimalRatioStudy(n_runs=2, estimator=clf, max_grad_steps=0,
                              backend="sequential").fit(X, y)
    assert (study.results_["n_params"] == (2 + 1) * 3 + (3 + 1) * 2).all()
    _census_is_complete(study)
    order = classes if classes is not None else [3, 7]
    for run, net in study.estimators_.items():
        logits = net.module_(torch.as_tensor(X)).detach().double().numpy()
        row = study.results_.set_index("run").loc[run]
        assert row["loss"] == pytest.approx(_cross_entropy(logits, y, order), rel=1e-5)
        assert row["train_loss"] == pytest.approx(row["loss"], rel=1e-5)
    # with the gradient phase: a critical point of the cross-entropy
    study = MinimalRatioStudy(n_runs=1, estimator=clf, max_grad_steps=20, grad_tol=1e-6,
                              backend="sequential").fit(X, y)
    row = study.results_.iloc[0]
    assert row["grad_norm_after"] < row["grad_norm_before"]
    _census_is_complete(study)


def test_classifier_ending_in_softmax_uses_the_nets_loss():
    """NLLLoss on a softmax output: the net takes the log first, and so does the study."""
    from hw1sk.estimators import NeuralClassifier

    rng = np.random.RandomState(2)
    X = rng.randn(30, 2).astype(np.float32)
    y = (X[:, 1] > 0).astype(int)
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Softmax(dim=1))
    clf = NeuralClassifier(module=module, criterion=torch.nn.NLLLoss, max_epochs=5)
    study = MinimalRatioStudy(n_runs=1, estimator=clf, max_grad_steps=0,
                              backend="sequential").fit(X, y)
    row = study.results_.iloc[0]
    assert row["loss"] > 0 and row["loss"] == pytest.approx(row["train_loss"], rel=1e-5)
    _census_is_complete(study)


def test_hidden_and_activation_shortcuts_set_the_estimators_module():
    from hw1sk.estimators import NeuralRegressor as Regressor

    est = Regressor(module="mlp", batch_size=-1, max_epochs=5)
    study = MinimalRatioStudy(estimator=est, hidden=(3,), activation="relu", n_runs=1,
                              n_samples=20, max_grad_steps=2, backend="sequential").fit()
    net = study.estimators_[0]
    assert net.module__hidden == (3,) and net.module__activation == "relu"
    assert study.settings_["module__hidden"] == "(3,)" or study.settings_["module__hidden"] == (3,)
    assert est.get_params()["module"] == "mlp" and "module__hidden" not in est.get_params()


# --------------------------------------------------------------------------- #
# the gradient phase and Hessians of a seed group, all at once
# --------------------------------------------------------------------------- #
def _group_tasks(estimator, X, y, n, **params):
    common = dict(estimator=estimator, X=X, y=y, grad_tol=1e-6, max_grad_steps=30,
                  grad_optimizer="auto", eigen_tol=None, keep_spectrum=True)
    return [{**common, **params, "seed": seed} for seed in range(n)]


def _alone(**task):  # the same run function, without the batched group phase
    return minimal_ratio_run(**task)


def _classifier():
    from hw1sk.estimators import NeuralClassifier

    return NeuralClassifier(module__hidden=(4,), module__activation="tanh", max_epochs=40,
                            lr=0.05, criterion=torch.nn.CrossEntropyLoss)


@pytest.mark.parametrize("kind", ["regressor", "classifier"])
def test_group_phase_agrees_with_each_run_alone_on_the_same_fits(kind):
    """Same trained copies: steps, gradient norms (1e-8), eigenvalue counts as run by run."""
    from hw1sk.studies._seed_groups import run_seed_group

    if kind == "regressor":
        X, y = make_function_dataset("sinc", n_samples=60, random_state=0)
        est = mr.default_minimal_ratio_regressor(hidden=(6, 6), max_epochs=150, lr=2e-2)
    else:
        rng = np.random.RandomState(1)
        X = rng.randn(40, 2).astype(np.float32)
        y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, 7, 3)
        est = _classifier()
    tasks = _group_tasks(est, X, y, 4)
    together = run_seed_group(minimal_ratio_run, tasks)
    alone = run_seed_group(_alone, tasks)
    assert sum(r["n_steps"] for r in alone) > 0
    for a, b in zip(alone, together):
        assert (b["n_steps"], b["converged"]) == (a["n_steps"], a["converged"])
        assert b["grad_norm_after"] == pytest.approx(a["grad_norm_after"], rel=1e-6)
        assert b["grad_norm_before"] == pytest.approx(a["grad_norm_before"], rel=1e-8)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-10)
        assert [b[k] for k in ("n_positive", "n_negative", "n_zero", "minimal_ratio")] == \
            [a[k] for k in ("n_positive", "n_negative", "n_zero", "minimal_ratio")]
        scale = np.abs(a["eigenvalues"]).max()
        np.testing.assert_allclose(b["eigenvalues"], a["eigenvalues"], rtol=0,
                                   atol=1e-10 * scale)


def test_group_phase_is_batched_for_chains_and_falls_back_otherwise(monkeypatch):
    import hw1sk.critical_points as cp

    calls = []
    original = cp.minimize_gradient_norm

    def counted(*args, **kwargs):
        calls.append(kwargs.get("optimizer"))
        return original(*args, **kwargs)

    monkeypatch.setattr(cp, "minimize_gradient_norm", counted)
    MinimalRatioStudy(n_runs=3, vectorize=True, **TINY).fit()
    assert calls == []  # the group did the phase of its three runs at once
    MinimalRatioStudy(n_runs=3, vectorize=False, **TINY).fit()
    assert calls == ["auto"] * 3
    calls.clear()
    MinimalRatioStudy(n_runs=3, vectorize=True, grad_optimizer="lbfgs",
                      **{**TINY, "max_grad_steps": 5}).fit()
    assert calls == ["lbfgs"] * 3  # a first-order optimizer: run by run, as before
    calls.clear()
    # a module of its own class: not a chain the batched path takes
    est = NeuralRegressor(module=_Wrapped, batch_size=-1, max_epochs=20, lr=1e-2)
    X, y = make_function_dataset("sinc", n_samples=30, random_state=0)
    MinimalRatioStudy(n_runs=3, estimator=est, vectorize=True, max_grad_steps=3,
                      backend="sequential").fit(X, y)
    assert calls == ["auto"] * 3


class _Wrapped(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Tanh(),
                                       torch.nn.Linear(4, 1))

    def forward(self, X):
        return self.net(X)
