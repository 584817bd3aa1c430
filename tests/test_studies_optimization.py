"""Tests of the HW1-2 studies: OptimizationStudy and ErrorSurfaceStudy."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import hw1sk.studies.optimization as optimization
from hw1sk.estimators import NeuralClassifier, NeuralRegressor
from hw1sk.evaluation import evaluate_module
from hw1sk.parameters import assign_flat_parameters, flatten_parameters, layer_slices
from hw1sk.seeding import spawn_seeds
from hw1sk.studies.error_surface import ErrorSurfaceStudy
from hw1sk.studies.optimization import OptimizationStudy, score_snapshots
from hw1sk.sweep import RunDiverged

RESULT_COLUMNS = ["scope", "run", "seed", "epoch", "component_1", "component_2", "loss",
                  "accuracy"]


@pytest.fixture(scope="module")
def data():
    """Three classes in 6-D: 120 training and 40 held-out samples."""
    rng = np.random.RandomState(0)
    X = rng.randn(160, 6).astype(np.float32)
    y = (X @ rng.randn(6, 3)).argmax(1).astype(np.int64)
    return X[:120], y[:120], X[120:], y[120:]


def _study(**params):
    kwargs = dict(hidden=(5,), n_runs=3, every=2, max_epochs=5, batch_size=32, lr=1e-2,
                  backend="sequential")
    kwargs.update(params)
    return OptimizationStudy(**kwargs)


@pytest.fixture(scope="module")
def study(data):
    X, y, X_test, y_test = data
    return _study().fit(X, y, X_test, y_test)


def _initial_module(study, X, y, seed):
    """The module a run starts from: the same estimator and seed, initialized, no step."""
    est = NeuralClassifier(module__hidden=study.hidden, module__n_in=X.shape[1],
                           module__n_out=len(np.unique(y)), random_state=seed)
    return est.initialize()


# ------------------------------------------------------------------------ OptimizationStudy
def test_results_layout(study):
    res = study.results_
    assert list(res.columns) == RESULT_COLUMNS
    # epochs 0, 2, 4 by the period and 5, the final weights, for 3 runs and 2 scopes
    assert len(res) == 2 * 3 * 4
    assert sorted(set(res["epoch"])) == [0, 2, 4, 5]
    assert list(pd.unique(res["scope"])) == ["model", "layer"]
    assert res["accuracy"].between(0, 1).all() and (res["loss"] > 0).all()
    assert study.layer_ == "net.1"
    assert set(study.explained_variance_ratio_) == {"model", "layer"}
    assert study.diverged_.empty
    assert list(study.summary_["run"]) == [0, 1, 2]
    assert {"test_loss", "test_accuracy", "final_grad_norm", "displacement",
            "path_length"} <= set(study.summary_.columns)
    assert {"test_loss", "test_acc"} <= set(study.history_.columns)
    assert study.settings_["n_runs"] == 3 and study.settings_["n_params"] == 6 * 5 + 5 + 5 * 3 + 3


def test_components_match_an_independent_pca(study):
    runs = sorted(study.trajectories_)
    for scope in ("model", "layer"):
        arrays = [study.trajectories_[r].astype(np.float64) for r in runs]
        if scope == "layer":
            arrays = [a[:, study.layer_slices_[study.layer_]] for a in arrays]
        stacked = np.vstack(arrays)
        centered = stacked - stacked.mean(axis=0)
        _, s, vt = np.linalg.svd(centered, full_matrices=False)
        expected = centered @ vt[:2].T
        part = study.results_[study.results_["scope"] == scope].sort_values(["run", "epoch"])
        got = part[["component_1", "component_2"]].to_numpy()
        # components are defined up to sign
        signs = np.sign(np.sum(got * expected, axis=0))
        np.testing.assert_allclose(got, expected * signs, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(study.explained_variance_ratio_[scope],
                                   s[:2] ** 2 / np.sum(s ** 2), rtol=1e-4)


def test_snapshot_scores_are_exact_losses(study, data):
    X, y, _, _ = data
    model = study.results_[study.results_["scope"] == "model"]
    for run, seed in zip(study.summary_["run"], study.summary_["seed"]):
        rows = model[model["run"] == run].set_index("epoch")
        init = _initial_module(study, X, y, seed)
        start = evaluate_module(init.module_, init.criterion_, X, y)
        assert rows.loc[0, "loss"] == pytest.approx(start["loss"], rel=1e-5)
        assert rows.loc[0, "accuracy"] == pytest.approx(start["accuracy"])
        np.testing.assert_allclose(study.trajectories_[run][0],
                                   flatten_parameters(init.module_).numpy())
        summary = study.summary_.set_index("run").loc[run]
        assert rows.loc[5, "loss"] == pytest.approx(summary["train_loss"], rel=1e-5)
        assert rows.loc[5, "accuracy"] == pytest.approx(summary["train_accuracy"])
        np.testing.assert_allclose(study.trajectories_[run][-1],
                                   flatten_parameters(study.modules_[run]).numpy())


def test_summary_distances(study):
    for run, row in study.summary_.set_index("run").iterrows():
        traj = study.trajectories_[run].astype(np.float64)
        assert row["displacement"] == pytest.approx(np.linalg.norm(traj[-1] - traj[0]))
        steps = sum(np.linalg.norm(b - a) for a, b in zip(traj[:-1], traj[1:]))
        assert row["path_length"] == pytest.approx(steps)
        assert row["path_length"] >= row["displacement"]


def test_grad_norms_per_iteration(study):
    g = study.grad_norms_
    assert list(g.columns) == ["run", "seed", "iteration", "epoch", "grad_norm", "loss"]
    # 120 samples in batches of 32: 4 steps per epoch, 5 epochs
    assert g.groupby("run").size().tolist() == [20, 20, 20]
    assert g.groupby("run")["iteration"].apply(list).iloc[0] == list(range(20))
    assert (g["grad_norm"] > 0).all()
    # the mean batch loss of an epoch is the history's train_loss (equal batches but the last)
    first = g[(g["run"] == 0) & (g["epoch"] == 1)]
    weights = np.array([32, 32, 32, 24]) / 120
    hist = study.history_[study.history_["run"] == 0].set_index("epoch")
    assert np.dot(first["loss"], weights) == pytest.approx(hist.loc[1, "train_loss"], rel=1e-5)


def test_full_batch_grad_norm_is_the_gradient_of_the_loss(data):
    X, y, _, _ = data
    study = _study(n_runs=1, batch_size=-1, max_epochs=2, every=1).fit(X, y)
    seed = int(study.summary_["seed"].iloc[0])
    init = _initial_module(study, X, y, seed).module_
    loss = torch.nn.functional.cross_entropy(init(torch.as_tensor(X)), torch.as_tensor(y))
    grads = torch.autograd.grad(loss, list(init.parameters()))
    expected = float(torch.sqrt(sum((g ** 2).sum() for g in grads)))
    first = study.grad_norms_.iloc[0]
    assert first["iteration"] == 0
    assert first["grad_norm"] == pytest.approx(expected, rel=1e-5)
    assert first["loss"] == pytest.approx(float(loss), rel=1e-6)


def test_named_layer_and_regression(data):
    X, _, _, _ = data
    y = (X[:, 0] - X[:, 1] ** 2).astype(np.float32)
    study = _study(n_runs=2, layer="net.3", max_epochs=3, every=3).fit(X, y)
    assert isinstance(study.modules_[0], torch.nn.Module)
    assert study.layer_ == "net.3"
    assert study.settings_["estimator"] == "NeuralRegressor"
    assert study.results_["accuracy"].isna().all()
    layer = study.results_[study.results_["scope"] == "layer"]
    assert sorted(set(layer["epoch"])) == [0, 3]
    sl = layer_slices(study.modules_[0])["net.3"]
    assert sl.stop - sl.start == 5 + 1
    # the exact loss at the final weights is the module's loss on the data
    mse = evaluate_module(study.modules_[1], torch.nn.MSELoss(), X, y[:, None])["loss"]
    final = layer[(layer["run"] == 1) & (layer["epoch"] == 3)]["loss"].iloc[0]
    assert final == pytest.approx(mse, rel=1e-5)


def test_n_train_and_custom_estimator(data):
    X, y, _, _ = data
    est = NeuralClassifier(module__hidden=(3,), optimizer=torch.optim.SGD, lr=0.1,
                           max_epochs=2, batch_size=16)
    study = OptimizationStudy(est, n_runs=1, every=1, n_train=48,
                              backend="sequential").fit(X, y)
    assert study.settings_["n_train"] == 48
    assert study.settings_["optimizer"] == "SGD" and study.settings_["batch_size"] == 16
    assert study.history_["epoch"].tolist() == [1, 2]
    assert len(study.grad_norms_) == 2 * 3  # 48 samples in batches of 16
    assert study.trajectories_[0].shape == (3, 6 * 3 + 3 + 3 * 3 + 3)
    assert est.max_epochs == 2 and not hasattr(est, "module_")  # template untouched


def test_same_random_state_same_numbers_whatever_n_jobs(data):
    X, y, _, _ = data
    params = dict(n_runs=2, max_epochs=2, every=1)
    first = _study(**params).fit(X, y)
    again = _study(**params, n_jobs=2, backend="loky").fit(X, y)
    pd.testing.assert_frame_equal(first.results_, again.results_)
    pd.testing.assert_frame_equal(first.grad_norms_, again.grad_norms_)
    other = _study(**params, random_state=1).fit(X, y)
    assert not np.allclose(first.results_["component_1"], other.results_["component_1"])


def test_diverged_runs_are_recorded_and_excluded(data, monkeypatch):
    X, y, _, _ = data
    bad_seed = spawn_seeds(0, 3)[1]
    real = optimization.trace_run

    def flaky(**task):
        if task["seed"] == bad_seed:
            raise RunDiverged("training loss became non-finite at epoch 1")
        return real(**task)

    monkeypatch.setattr(OptimizationStudy, "_run_function", staticmethod(flaky))
    study = _study(max_epochs=2)
    with pytest.warns(RuntimeWarning, match="1 of 3 runs diverged"):
        study.fit(X, y)
    assert study.diverged_[["run", "seed"]].values.tolist() == [[1, bad_seed]]
    assert set(study.results_["run"]) == {0, 2}
    assert set(study.grad_norms_["run"]) == {0, 2} and set(study.trajectories_) == {0, 2}
    assert set(study.estimators_) == {0, 2}


def test_all_runs_diverged(data):
    X, _, _, _ = data
    y = X[:, 0].astype(np.float32)
    est = NeuralRegressor(module__hidden=(5,), optimizer=torch.optim.SGD, lr=1e30)
    study = OptimizationStudy(est, n_runs=2, max_epochs=3, backend="sequential")
    with pytest.warns(RuntimeWarning, match="2 of 2 runs diverged"):
        with pytest.raises(RuntimeError, match="every run diverged"):
            study.fit(X, y)
    assert study.diverged_["run"].tolist() == [0, 1]


def test_get_params_and_clone():
    study = _study(layer="net.3", n_train=10)
    params = study.get_params()
    assert params["layer"] == "net.3" and params["n_runs"] == 3 and params["n_train"] == 10
    copy = clone(study)
    assert copy.get_params() == params and copy is not study
    with pytest.raises(NotFittedError):
        copy._check_fitted()


@pytest.mark.parametrize("params, match", [
    ({"n_runs": 0}, "'n_runs' parameter of OptimizationStudy"),
    ({"every": 0}, "'every' parameter of OptimizationStudy"),
    ({"max_epochs": 1.5}, "'max_epochs' parameter of OptimizationStudy"),
    ({"lr": -1.0}, "'lr' parameter of OptimizationStudy"),
    ({"batch_size": 0}, "'batch_size' parameter of OptimizationStudy"),
    ({"hidden": "wide"}, "'hidden' parameter of OptimizationStudy"),
    ({"hidden": (5, 0)}, "hidden must be a sequence of positive integers"),
    ({"n_train": 0}, "'n_train' parameter of OptimizationStudy"),
    ({"n_train": 500}, "n_train=500 is larger than the 120 samples"),
    ({"test_every": 0}, "'test_every' parameter of OptimizationStudy"),
    ({"estimator": "mlp"}, "'estimator' parameter of OptimizationStudy"),
    ({"layer": 3}, "'layer' parameter of OptimizationStudy"),
    ({"n_jobs": 0}, "'n_jobs' parameter of OptimizationStudy"),
    ({"backend": "spark"}, "'backend' parameter of OptimizationStudy"),
    ({"layer": "net.9"}, r"layer 'net.9' is not a layer of the model; choose one of "
                         r"\['net.1', 'net.3'\]"),
])
def test_bad_parameters(data, params, match):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=match):
        _study(**params).fit(X, y)


def test_bad_data(data):
    X, y, X_test, y_test = data
    with pytest.raises(ValueError, match="Pass both X_test and y_test, or neither"):
        _study().fit(X, y, X_test)
    with pytest.raises(ValueError, match=r"y contains labels \[5, 6, 7\] that are not in"):
        _study().fit(X, y, X_test, y_test + 5)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        _study().fit(X, y[:-1])
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        OptimizationStudy(NeuralClassifier(), backend="sequential").fit(X, X[:, 0])


def test_score_snapshots_leaves_the_module_alone(study, data):
    X, y, _, _ = data
    module = study.modules_[0]
    before = flatten_parameters(module)
    losses, accuracies = score_snapshots(module, torch.nn.CrossEntropyLoss(),
                                         study.trajectories_[0], X, y)
    assert torch.equal(flatten_parameters(module), before)
    assert losses.shape == accuracies.shape == (4,)


# ------------------------------------------------------------------------ ErrorSurfaceStudy
def _surface(**params):
    kwargs = dict(hidden=(5,), max_epochs=4, batch_size=32, lr=1e-2, n_eval=None,
                  line_points=5, surface_points=3, backend="sequential")
    kwargs.update(params)
    return ErrorSurfaceStudy(**kwargs)


@pytest.fixture(scope="module")
def pca_surface(data):
    X, y, _, _ = data
    return _surface().fit(X, y)


def _loss_at(study, X, y, theta):
    module = assign_flat_parameters(_clone_module(study.module_), torch.as_tensor(theta))
    return evaluate_module(module, torch.nn.CrossEntropyLoss(), X, y)["loss"]


def _clone_module(module):
    import copy

    return copy.deepcopy(module)


def test_surface_layout(pca_surface):
    s = pca_surface
    alphas, betas, losses = s.surface_
    assert alphas.shape == betas.shape == (3,) and losses.shape == (3, 3)
    assert list(s.results_.columns) == ["alpha", "beta", "loss"] and len(s.results_) == 9
    assert list(s.line_.columns) == ["alpha", "loss", "accuracy"] and len(s.line_) == 5
    assert list(s.trajectory_coords_.columns) == ["epoch", "alpha", "beta", "loss", "off_plane"]
    assert s.trajectory_coords_["epoch"].tolist() == [0, 1, 2, 3, 4]
    assert s.directions_.shape == (2, s.origin_.size)
    assert s.history_["epoch"].tolist() == [1, 2, 3, 4]
    assert s.summary_["directions"].iloc[0] == "pca"
    assert s.settings_["n_eval"] == 120


def test_surface_values_are_losses_at_the_grid_points(pca_surface, data):
    X, y, _, _ = data
    s = pca_surface
    alphas, betas, losses = s.surface_
    d1, d2 = s.directions_
    for i, j in [(0, 0), (1, 1), (2, 0), (0, 2)]:
        theta = s.origin_ + alphas[i] * d1 + betas[j] * d2
        assert losses[i, j] == pytest.approx(_loss_at(s, X, y, theta), rel=1e-4)
    center = _loss_at(s, X, y, s.origin_)
    line = s.line_.set_index("alpha")
    assert line.loc[0.0, "loss"] == pytest.approx(center, rel=1e-5)
    assert s.summary_["center_loss"].iloc[0] == pytest.approx(center, rel=1e-5)
    assert s.trajectory_coords_["loss"].iloc[-1] == pytest.approx(center, rel=1e-5)
    theta = s.origin_ + line.index[0] * d1
    assert line["loss"].iloc[0] == pytest.approx(_loss_at(s, X, y, theta), rel=1e-4)


def test_pca_plane_holds_the_trajectory(pca_surface):
    s = pca_surface
    d = s.directions_
    np.testing.assert_allclose(d @ d.T, np.eye(2), atol=1e-8)
    np.testing.assert_allclose(s.origin_, flatten_parameters(s.module_).numpy(), atol=0)
    path = s.trajectory_coords_
    assert path[["alpha", "beta"]].iloc[-1].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    assert path["off_plane"].iloc[-1] == 0.0 and path["off_plane"].between(0, 1).all()
    # the extent covers the path with a 20% margin
    coords = path[["alpha", "beta"]].to_numpy()
    np.testing.assert_allclose(s.extent_, 1.2 * np.abs(coords).max(axis=0))
    assert s.surface_[0][[0, -1]].tolist() == pytest.approx([-s.extent_[0], s.extent_[0]])
    ratio = s.explained_variance_ratio_
    assert ratio.shape == (2,) and 0 < ratio[1] <= ratio[0] <= 1


def test_random_directions_are_filter_normalized(data):
    X, y, _, _ = data
    s = _surface(directions="random", extent=(0.5, 2.0)).fit(X, y)
    assert s.explained_variance_ratio_ is None and s.extent_ == (0.5, 2.0)
    assert s.surface_[1][[0, -1]].tolist() == [-2.0, 2.0]
    w = s.module_.net[1].weight.detach().double().numpy()
    d = s.directions_[0][:w.size].reshape(w.shape)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), np.linalg.norm(w, axis=1), rtol=1e-5)
    bias = slice(w.size, w.size + w.shape[0])
    assert np.all(s.directions_[:, bias] == 0)
    # least-squares projection: the residual is orthogonal to both directions
    coords = s.trajectory_coords_[["alpha", "beta"]].to_numpy()
    offsets = s.trajectory_ - s.origin_
    residual = offsets - coords @ s.directions_
    np.testing.assert_allclose(residual @ s.directions_.T, 0, atol=1e-8)
    norms = np.linalg.norm(offsets, axis=1)
    np.testing.assert_allclose(s.trajectory_coords_["off_plane"].iloc[:-1],
                               np.linalg.norm(residual, axis=1)[:-1] / norms[:-1])
    again = _surface(directions="random", extent=(0.5, 2.0)).fit(X, y)
    np.testing.assert_array_equal(s.directions_, again.directions_)
    other = _surface(directions="random", extent=(0.5, 2.0), random_state=3).fit(X, y)
    assert not np.allclose(s.directions_, other.directions_)


@pytest.mark.parametrize("params, match", [
    ({"directions": "hessian"}, "'directions' parameter of ErrorSurfaceStudy"),
    ({"line_points": 1}, "'line_points' parameter of ErrorSurfaceStudy"),
    ({"surface_points": 2.5}, "'surface_points' parameter of ErrorSurfaceStudy"),
    ({"extent": -1.0}, "'extent' parameter of ErrorSurfaceStudy"),
    ({"extent": (1.0, 2.0, 3.0)}, "extent must be a positive number"),
    ({"extent": (1.0, -2.0)}, "extent must be a positive number"),
    ({"n_eval": 0}, "'n_eval' parameter of ErrorSurfaceStudy"),
    ({"every": 0}, "'every' parameter of ErrorSurfaceStudy"),
    ({"hidden": (0,)}, "hidden must be a sequence of positive integers"),
    ({"filter_normalize": 1}, "'filter_normalize' parameter of ErrorSurfaceStudy"),
    ({"max_epochs": 1}, "directions='pca' needs at least 3 weight snapshots"),
])
def test_surface_bad_parameters(data, params, match):
    X, y, _, _ = data
    with pytest.raises(ValueError, match=match):
        _surface(**params).fit(X, y)


def test_surface_diverged_run(data):
    X, _, _, _ = data
    y = X[:, 0].astype(np.float32)
    est = NeuralRegressor(module__hidden=(5,), optimizer=torch.optim.SGD, lr=1e30)
    study = ErrorSurfaceStudy(est, max_epochs=3, backend="sequential")
    with pytest.warns(RuntimeWarning, match="1 of 1 runs diverged"):
        with pytest.raises(RuntimeError, match="training run diverged"):
            study.fit(X, y)
    assert len(study.diverged_) == 1


def test_surface_get_params_and_clone():
    study = _surface(directions="random", extent=0.3)
    copy = clone(study)
    assert copy.get_params() == study.get_params()
    assert copy.get_params()["directions"] == "random"
    with pytest.raises(NotFittedError):
        copy._check_fitted()


# ------------------------------------------- the estimator is the source of truth
class _Tiny(torch.nn.Module):
    def __init__(self, n_in=6, n_out=3):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, n_out))

    def forward(self, X):
        return self.net(X)


_SEEN = {"optimizer": "SGD", "lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9,
         "max_epochs": 2, "batch_size": 7, "module": "_Tiny"}


def _distinct_estimator(record_training):
    """An estimator with settings no study default has, a recorder and a scoring callback."""
    from skorch.callbacks import EpochScoring

    return NeuralClassifier(
        module=_Tiny, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
        optimizer__weight_decay=1e-3, lr=0.05, max_epochs=2, batch_size=7,
        callbacks=[("record", record_training),
                   ("my_score", EpochScoring("accuracy", on_train=True, name="my_train_score",
                                             lower_is_better=False))])


def _assert_described(settings, **expected):
    assert settings["optimizer"] == "SGD" and settings["optimizer__weight_decay"] == 1e-3
    assert settings["optimizer__momentum"] == 0.9 and settings["module"] == "_Tiny"
    for key, value in {"lr": 0.05, "max_epochs": 2, "batch_size": 7, **expected}.items():
        assert settings[key] == value, key


def test_optimization_trains_with_the_estimators_settings(data, record_training):
    X, y, _, _ = data
    est = _distinct_estimator(record_training)
    study = OptimizationStudy(est, n_runs=2, every=1, backend="sequential").fit(X, y)
    assert sorted(study.estimators_) == [0, 1]
    for run, net in study.estimators_.items():
        callbacks = dict(net.callbacks_)
        assert callbacks["record"].seen_ == _SEEN and callbacks["record"].epochs_ == 2
        assert {"weight_trace", "grad_norm_trace"} <= set(callbacks)  # what the study adds
        assert net.module_ is study.modules_[run]
    _assert_described(study.settings_, **{"lr (set by the study)": None,
                                          "batch_size (set by the study)": None})
    # every column a callback of the estimator records survives in history_
    assert "my_train_score" in study.history_.columns
    assert study.history_["my_train_score"].between(0, 1).all()
    assert len(study.grad_norms_) == 2 * 2 * 18  # 120 samples in batches of 7: 18 steps
    assert est.lr == 0.05 and not hasattr(est, "module_")  # the template is untouched


def test_optimization_shortcuts_apply_only_when_set(data, record_training):
    X, y, _, _ = data
    est = _distinct_estimator(record_training)
    study = OptimizationStudy(est, n_runs=1, every=1, lr=0.01, batch_size=16, max_epochs=3,
                              backend="sequential").fit(X, y)
    seen = dict(study.estimators_[0].callbacks_)["record"].seen_
    assert seen == {**_SEEN, "lr": 0.01, "batch_size": 16, "max_epochs": 3}
    _assert_described(study.settings_, lr=0.01, batch_size=16, max_epochs=3,
                      **{"lr (set by the study)": 0.01, "batch_size (set by the study)": 16,
                         "max_epochs (set by the study)": 3,
                         "hidden (set by the study)": None})
    widened = OptimizationStudy(NeuralClassifier(module__hidden=(3,), max_epochs=1),
                                hidden=(7,), n_runs=1, backend="sequential").fit(X, y)
    assert widened.estimators_[0].module_.hidden == (7,)
    assert widened.settings_["module__hidden"] == "(7,)"
    assert widened.settings_["hidden (set by the study)"] == "(7,)"


def test_optimization_default_estimator(data):
    X, y, _, _ = data
    study = OptimizationStudy(n_runs=1, max_epochs=1, backend="sequential").fit(X, y)
    settings = study.settings_
    assert settings["estimator"] == "NeuralClassifier" and settings["optimizer"] == "Adam"
    assert settings["module__hidden"] == "(64, 32)" and settings["lr"] == 1e-3
    assert settings["batch_size"] == 128 and settings["max_epochs"] == 1
    assert settings["max_epochs (set by the study)"] == 1 and settings["model"] == "MLP 6-64-32-3"


def test_error_surface_trains_with_the_estimators_settings(data, record_training):
    X, y, X_test, y_test = data
    est = _distinct_estimator(record_training)
    study = _surface(estimator=est, hidden=None, max_epochs=None, batch_size=None, lr=None,
                     n_eval=30).fit(X, y, X_test, y_test)
    assert dict(study.estimator_.callbacks_)["record"].seen_ == _SEEN
    assert study.module_ is study.estimator_.module_
    _assert_described(study.settings_, **{"max_epochs (set by the study)": None})
    assert {"my_train_score", "test_loss", "test_acc"} <= set(study.history_.columns)
    assert study.trajectory_coords_["epoch"].tolist() == [0, 1, 2]
    study = _surface(estimator=est, hidden=None, max_epochs=3, batch_size=None, lr=None,
                     n_eval=30).fit(X, y)
    seen = dict(study.estimator_.callbacks_)["record"].seen_
    assert seen == {**_SEEN, "max_epochs": 3}
    _assert_described(study.settings_, max_epochs=3, **{"max_epochs (set by the study)": 3})
