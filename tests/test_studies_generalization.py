"""Tests of the HW1-3 generalization studies: RandomLabelStudy and ParamCountStudy."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare
from skorch.callbacks import Callback
from sklearn.base import clone

from hw1sk.estimators import NeuralClassifier
from hw1sk.evaluation import evaluate_estimator
from hw1sk.models import CNN, MLP, count_params
from hw1sk.seeding import spawn_seeds
from hw1sk.studies._base import prepare_data, train_run
from hw1sk.studies.param_count import DEFAULT_WIDTHS, ParamCountStudy
from hw1sk.studies.random_labels import RandomLabelStudy

RANDOM_COLUMNS = ["seed", "epoch", "split", "loss", "accuracy"]
_SCORES = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
SUMMARY_COLUMNS = ["n_train", "n_test", "n_epochs", "n_seeds", *_SCORES, "chance_accuracy",
                   "fit_time", *[f"{c}_{s}" for c in _SCORES for s in ("std", "ci_low", "ci_high")]]
PARAM_COLUMNS = ["name", "family", "depth", "width", "n_params", "seed", "train_loss", "test_loss",
                 "train_accuracy", "test_accuracy"]


@pytest.fixture(scope="module")
def data():
    """Four classes in 8-D: 240 training and 60 held-out samples."""
    rng = np.random.RandomState(0)
    X = rng.randn(300, 8).astype(np.float32)
    y = (X @ rng.randn(8, 4)).argmax(1).astype(np.int64)
    return X[:240], y[:240], X[240:], y[240:]


def _random_label_study(**params):
    kwargs = dict(estimator=NeuralClassifier(module__hidden=(16,)), n_train=None, n_test=None,
                  max_epochs=3, batch_size=32, backend="sequential")
    kwargs.update(params)
    return RandomLabelStudy(**kwargs)


def _param_study(**params):
    kwargs = dict(widths=(2, 4, 8), max_epochs=2, batch_size=32, n_train=None,
                  backend="sequential")
    kwargs.update(params)
    return ParamCountStudy(**kwargs)


@pytest.fixture(scope="module")
def random_study(data):
    X, y, X_test, y_test = data
    return _random_label_study().fit(X, y, X_test, y_test)


@pytest.fixture(scope="module")
def param_study(data):
    X, y, X_test, y_test = data
    return _param_study().fit(X, y, X_test, y_test)


# ----------------------------------------------------------------- RandomLabelStudy
def test_random_label_results_follow_the_history(random_study):
    res, hist = random_study.results_, random_study.history_
    assert list(res.columns) == RANDOM_COLUMNS
    assert len(res) == 2 * 3
    assert res["epoch"].tolist() == [1, 1, 2, 2, 3, 3]
    assert res["split"].tolist() == ["test", "train"] * 3
    train, test = res[res["split"] == "train"], res[res["split"] == "test"]
    np.testing.assert_array_equal(train["loss"], hist["train_loss"])
    np.testing.assert_array_equal(train["accuracy"], hist["train_acc"])
    np.testing.assert_array_equal(test["loss"], hist["test_loss"])
    np.testing.assert_array_equal(test["accuracy"], hist["test_acc"])


def test_random_label_summary_is_an_independent_evaluation(random_study, data):
    X, _, X_test, y_test = data
    s = random_study.summary_
    assert list(s.columns) == SUMMARY_COLUMNS and len(s) == 1
    row = s.iloc[0]
    assert (row["n_train"], row["n_test"], row["n_epochs"]) == (240, 60, 3)
    assert row["chance_accuracy"] == 0.25 and row["fit_time"] > 0
    # n_train=None with X_test given: the training set is X itself, in order
    train = evaluate_estimator(random_study.estimator_, X, random_study.random_labels_)
    test = evaluate_estimator(random_study.estimator_, X_test, y_test)
    assert row["train_loss"] == pytest.approx(train["loss"], rel=1e-6)
    assert row["train_accuracy"] == train["accuracy"]
    assert row["test_loss"] == pytest.approx(test["loss"], rel=1e-6)
    assert row["test_accuracy"] == test["accuracy"]
    # the end-of-training held-out score in the history is the same evaluation
    last_test = random_study.results_.query("split == 'test'").iloc[-1]
    assert last_test["loss"] == pytest.approx(test["loss"], rel=1e-5)
    assert last_test["accuracy"] == test["accuracy"]
    settings = random_study.settings_
    assert settings["n_params"] == count_params(random_study.estimator_.module_) == \
        (8 + 1) * 16 + (16 + 1) * 4
    assert settings["n_train"] == 240 and settings["label_method"] == "shuffle"


def test_shuffled_labels_are_a_reproducible_permutation(random_study, data):
    X, y, X_test, y_test = data
    np.testing.assert_array_equal(random_study.y_train_, y)
    labels = random_study.random_labels_
    # a permutation: the label histogram is exactly the true one
    np.testing.assert_array_equal(np.bincount(labels, minlength=4), np.bincount(y, minlength=4))
    # no relation to the inputs: about 1 / k of the labels stay (binomial, 240 draws)
    assert abs(np.mean(labels == y) - np.sum(np.bincount(y) ** 2) / len(y) ** 2) < 0.1
    again = _random_label_study().fit(X, y, X_test, y_test)
    np.testing.assert_array_equal(again.random_labels_, labels)
    pd.testing.assert_frame_equal(again.results_, random_study.results_)
    other = _random_label_study(random_state=1).fit(X, y, X_test, y_test)
    assert not np.array_equal(other.random_labels_, labels)


def test_uniform_labels_have_a_uniform_histogram():
    rng = np.random.RandomState(0)
    X = rng.randn(3000, 2).astype(np.float32)
    y = np.zeros(3000, dtype=np.int64)  # all one class: a permutation would stay all zeros
    y[:10] = np.arange(10)  # declare 10 classes
    study = _random_label_study(label_method="uniform", max_epochs=1, batch_size=3000,
                                n_test=100).fit(X, y)
    counts = np.bincount(study.random_labels_, minlength=10)
    assert counts.sum() == len(study.y_train_) == 2900
    assert chisquare(counts).pvalue > 1e-3  # uniform over the 10 classes
    assert study.settings_["n_classes"] == 10


def test_random_labels_are_memorized_on_mnist(mnist_small):
    # 200 images, 203,530 parameters: memorized in 20 epochs (train acc 0.98-1.0, seeds 0, 1)
    study = RandomLabelStudy(NeuralClassifier(module__hidden=(256,)), n_train=200,
                             n_test=500, max_epochs=20, batch_size=50, lr=2e-3,
                             backend="sequential")
    study.fit(mnist_small.X_train, mnist_small.y_train, mnist_small.X_test, mnist_small.y_test)
    s = study.summary_.iloc[0]
    assert s["train_accuracy"] >= 0.9  # memorized
    assert s["test_accuracy"] <= 0.2  # chance is 0.1 (500 test images: sd 0.013)
    assert study.results_.query("split == 'train'")["loss"].iloc[-1] < 0.5


def test_random_label_study_splits_off_a_test_set(data):
    X, y, _, _ = data
    study = _random_label_study(n_train=100, n_test=50, max_epochs=1).fit(X, y)
    s = study.summary_.iloc[0]
    assert (s["n_train"], s["n_test"]) == (100, 50)
    assert len(study.y_train_) == len(study.random_labels_) == 100


def test_random_label_subsets_are_disjoint_and_reproducible(data):
    X, y, _, _ = data
    ids = np.arange(len(X))
    Xi = np.column_stack([X, ids]).astype(np.float32)  # carry each row's id
    # the study's subsets: prepare_data with the seeds derived from random_state
    seeds = spawn_seeds(spawn_seeds(3, 3)[0], 3)
    split = dict(test_size=None, n_train=100, n_test=50, seeds=seeds)
    a, b = prepare_data(Xi, y, **split), prepare_data(Xi, y, **split)
    Xa, ya, Xta, yta = a.X, a.y, a.X_test, a.y_test
    np.testing.assert_array_equal(Xa, b.X)
    np.testing.assert_array_equal(Xta, b.X_test)
    train_ids, test_ids = Xa[:, -1].astype(int), Xta[:, -1].astype(int)
    assert len(set(train_ids)) == 100 and len(set(test_ids)) == 50
    assert not set(train_ids) & set(test_ids)
    np.testing.assert_array_equal(ya, y[train_ids])
    np.testing.assert_array_equal(yta, y[test_ids])
    study = _random_label_study(n_train=100, n_test=50, max_epochs=1, random_state=3).fit(Xi, y)
    np.testing.assert_array_equal(study.y_train_, ya)


def test_random_label_get_params_and_clone():
    study = _random_label_study(n_train=7, label_method="uniform")
    params = study.get_params()
    assert params["n_train"] == 7 and params["label_method"] == "uniform"
    assert clone(study).get_params()["n_train"] == 7
    assert not hasattr(study, "results_")


@pytest.mark.parametrize("params, match", [
    ({"label_method": "flip"}, "'label_method' parameter of RandomLabelStudy"),
    ({"n_train": 0}, "'n_train' parameter of RandomLabelStudy"),
    ({"n_train": 1000}, r"n_train=1000 is larger than the 240 samples"),
    ({"n_test": 61}, r"n_test=61 is larger than the 60 samples"),
    ({"lr": -1.0}, "'lr' parameter of RandomLabelStudy"),
    ({"max_epochs": 1.5}, "'max_epochs' parameter of RandomLabelStudy"),
    ({"batch_size": 0}, "'batch_size' parameter of RandomLabelStudy"),
    ({"backend": "spark"}, "'backend' parameter of RandomLabelStudy"),
])
def test_random_label_bad_parameters(data, params, match):
    X, y, X_test, y_test = data
    with pytest.raises(ValueError, match=match):
        _random_label_study(**params).fit(X, y, X_test, y_test)


def test_random_label_bad_data(data):
    X, y, X_test, y_test = data
    with pytest.raises(ValueError, match="Pass both X_test and y_test"):
        _random_label_study().fit(X, y, X_test)
    with pytest.raises(ValueError, match="y must hold integer class labels"):
        _random_label_study().fit(X, y.astype(float), X_test, y_test)
    with pytest.raises(ValueError, match="X_test has samples of shape"):
        _random_label_study().fit(X, y, X_test[:, :3], y_test)
    with pytest.raises(ValueError, match="a held-out part of 240 samples leaves no training"):
        _random_label_study(n_test=240).fit(X, y)


def test_random_label_classes_are_the_data_labels_or_the_declared_ones(data):
    X, y, X_test, y_test = data
    # labels {10, 20, 30, 40}: four classes (not 41), drawn from those values only
    names = np.array([10, 20, 30, 40])
    study = _random_label_study(label_method="uniform", max_epochs=1).fit(
        X, names[y], X_test, names[y_test])
    assert set(study.random_labels_.tolist()) == set(names.tolist())
    assert study.summary_["chance_accuracy"].iloc[0] == 0.25
    assert list(study.estimator_.classes_) == names.tolist()
    # declared classes may hold more than the data: chance is over all of them
    declared = NeuralClassifier(module__hidden=(16,), classes=list(range(5)))
    study = _random_label_study(estimator=declared, max_epochs=1).fit(X, y, X_test, y_test)
    assert study.settings_["n_classes"] == 5 and study.summary_["chance_accuracy"].iloc[0] == 0.2
    too_few = NeuralClassifier(module__hidden=(16,), classes=[0, 1])
    with pytest.raises(ValueError, match=r"labels \[2, 3\] that are not in the estimator's"):
        _random_label_study(estimator=too_few).fit(X, y, X_test, y_test)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_random_label_diverged_run_is_recorded(data):
    X, y, X_test, y_test = data
    with pytest.warns(RuntimeWarning, match="1 of 1 runs diverged"):
        study = _random_label_study(lr=1e30).fit(X, y, X_test, y_test)
    message = study.diverged_["message"].iloc[0]
    assert len(study.diverged_) == 1 and ("non-finite" in message or "nan" in message)
    assert study.results_.empty and list(study.results_.columns) == RANDOM_COLUMNS
    assert study.summary_.empty and study.estimator_ is None


# ----------------------------------------------------------------- ParamCountStudy
def test_param_count_results(param_study, data):
    res = param_study.results_
    assert list(res.columns) == PARAM_COLUMNS
    assert res["width"].tolist() == [2, 4, 8]
    assert res["family"].tolist() == ["mlp"] * 3 and res["depth"].tolist() == [1] * 3
    # 8 -> w -> 4, one hidden layer
    assert res["n_params"].tolist() == [(8 + 1) * w + (w + 1) * 4 for w in (2, 4, 8)]
    assert res["seed"].tolist() == spawn_seeds(0, 4)[1:]
    assert param_study.diverged_.empty
    assert set(param_study.histories_["width"]) == {2, 4, 8}


def test_param_count_scores_match_a_run_by_hand(param_study, data):
    X, y, X_test, y_test = data
    row = param_study.results_.iloc[1]
    est = NeuralClassifier(module="mlp", module__hidden=(4,), lr=1e-3, batch_size=32,
                           max_epochs=2)
    run = train_run(est, X, y, seed=int(row["seed"]))
    assert row["train_loss"] == pytest.approx(run["train"]["loss"], rel=1e-6)
    assert row["train_accuracy"] == run["train"]["accuracy"]
    test = evaluate_estimator(run["estimator"], X_test, y_test)
    assert row["test_loss"] == pytest.approx(test["loss"], rel=1e-6)
    assert row["test_accuracy"] == test["accuracy"]


def test_param_count_summary_and_settings(param_study):
    s = param_study.summary_
    res = param_study.results_
    assert s["name"].tolist() == ["w=2", "w=4", "w=8"] and s["n_seeds"].tolist() == [1] * 3
    # one seed: the means are the runs' numbers, no spread
    np.testing.assert_array_equal(s["test_accuracy"], res["test_accuracy"])
    assert s["test_accuracy_ci_low"].isna().all() and s["width"].tolist() == [2, 4, 8]
    settings = param_study.settings_
    assert settings["n_models"] == 3 and settings["n_train"] == 240
    assert f"w=8: {(8 + 1) * 8 + (8 + 1) * 4}" in settings["models"]


def test_param_count_deeper_mlp_and_cnn():
    rng = np.random.RandomState(0)
    images = rng.rand(60, 1, 8, 8).astype(np.float32)
    y = rng.randint(0, 3, 60)
    mlp = _param_study(widths=(3, 5), depth=2, max_epochs=1, n_test=20).fit(images, y)
    assert mlp.results_["n_params"].tolist() == [
        (64 + 1) * w + (w + 1) * w + (w + 1) * 3 for w in (3, 5)]
    cnn = _param_study(family="cnn", widths=(2, 3), depth=1, max_epochs=1, n_test=20).fit(images, y)
    assert cnn.results_["n_params"].tolist() == [
        count_params(CNN(1, 8, (w,), n_out=3)) for w in (2, 3)]
    assert cnn.results_["family"].tolist() == ["cnn", "cnn"]
    assert len(DEFAULT_WIDTHS["mlp"]) >= 10 and len(DEFAULT_WIDTHS["cnn"]) >= 10


def test_param_count_reproducible_whatever_n_jobs(data, param_study):
    X, y, X_test, y_test = data
    again = _param_study().fit(X, y, X_test, y_test)
    pd.testing.assert_frame_equal(again.results_, param_study.results_)
    parallel = _param_study(widths=(2, 8), n_jobs=2, backend="loky").fit(X, y, X_test, y_test)
    sequential = _param_study(widths=(2, 8)).fit(X, y, X_test, y_test)
    pd.testing.assert_frame_equal(parallel.results_, sequential.results_)


def test_param_count_get_params_and_clone():
    study = ParamCountStudy(widths=(1, 2), family="cnn", depth=3)
    assert clone(study).get_params()["widths"] == (1, 2)
    assert study.get_params()["family"] == "cnn" and study.get_params()["depth"] == 3


@pytest.mark.parametrize("params, match", [
    ({"family": "rnn"}, "'family' parameter of ParamCountStudy"),
    ({"widths": (4,)}, "at least two different widths"),
    ({"widths": (4, 4)}, "at least two different widths"),
    ({"widths": [(4, 2), (4, 2)]}, "at least two different widths"),
    ({"widths": (4, -1)}, "widths must hold positive integers"),
    ({"widths": [(4, 2), 8]}, "widths must hold positive integers"),
    ({"widths": [(4, 0), (8,)]}, "widths must hold positive integers"),
    ({"widths": 4}, "'widths' parameter of ParamCountStudy"),
    ({"widths": [(4, 2), (8, 4)], "depth": 2}, "depth applies to integer widths only"),
    ({"depth": 0}, "'depth' parameter of ParamCountStudy"),
    ({"models": [MLP], "widths": None}, "models must hold at least two models"),
    ({"models": [MLP, 3], "widths": None}, "each of models must be"),
    ({"models": "mlp"}, "'models' parameter of ParamCountStudy"),
    ({"models": [MLP, CNN], "widths": (2, 4)}, "Pass widths .* or models, not both"),
    ({"lr": 0}, "'lr' parameter of ParamCountStudy"),
    ({"family": "cnn"}, "family='cnn' needs images"),
    ({"n_train": 500}, "n_train=500 is larger"),
])
def test_param_count_bad_parameters(data, params, match):
    X, y, X_test, y_test = data
    with pytest.raises(ValueError, match=match):
        _param_study(**params).fit(X, y, X_test, y_test)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_param_count_diverged_runs_are_excluded(data):
    X, y, X_test, y_test = data
    with pytest.warns(RuntimeWarning, match="2 of 2 runs diverged"):
        study = _param_study(widths=(2, 4), lr=1e30).fit(X, y, X_test, y_test)
    assert study.diverged_["width"].tolist() == [2, 4]
    assert study.results_.empty and list(study.results_.columns) == PARAM_COLUMNS
    assert study.summary_.empty
    assert "w=2: diverged" in study.settings_["models"]


# ------------------------------------------- the estimator is the source of truth
class _Tiny(torch.nn.Module):
    """A hand-written model: one linear layer (n_in + 1) * n_out parameters."""

    def __init__(self, n_in=8, n_out=4):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(n_in, n_out))

    def forward(self, X):
        return self.net(X)


class _TwoLayer(torch.nn.Module):
    """A hand-written model: n_in -> 5 -> n_out."""

    def __init__(self, n_in=8, n_out=4):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n_in, 5), torch.nn.Tanh(),
                                       torch.nn.Linear(5, n_out))

    def forward(self, X):
        return self.net(X)


class _RecordColumn(Callback):
    """Writes a column of its own into the history: the studies must keep it."""

    def on_epoch_end(self, net, **kwargs):
        net.history.record("my_column", 7.0)


SEEN = {"optimizer": "SGD", "lr": 0.05, "weight_decay": 1e-3, "momentum": 0.9,
        "max_epochs": 2, "batch_size": 7}


def _distinctive(record_training, **params):
    kwargs = dict(module=_Tiny, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                  optimizer__weight_decay=1e-3, lr=0.05, max_epochs=2, batch_size=7,
                  callbacks=[("record", record_training), ("column", _RecordColumn())])
    kwargs.update(params)
    return NeuralClassifier(**kwargs)


def _assert_described(settings):
    assert settings["optimizer"] == "SGD" and settings["optimizer__weight_decay"] == 1e-3
    assert settings["optimizer__momentum"] == 0.9
    assert settings["lr"] == 0.05 and settings["max_epochs"] == 2 and settings["batch_size"] == 7


def test_random_labels_train_with_the_estimators_settings(data, record_training):
    X, y, X_test, y_test = data
    study = RandomLabelStudy(_distinctive(record_training), n_train=None, n_test=None,
                             backend="sequential").fit(X, y, X_test, y_test)
    seen = dict(study.estimator_.callbacks_)["record"].seen_
    assert seen == {**SEEN, "module": "_Tiny"}
    assert study.summary_["n_epochs"].iloc[0] == 2
    assert (study.history_["my_column"] == 7.0).all()  # the callback's column is kept
    _assert_described(study.settings_)
    assert study.settings_["n_params"] == (8 + 1) * 4
    # the study's own shortcuts apply only when set, and are recorded
    study = RandomLabelStudy(_distinctive(record_training), n_train=None, n_test=None,
                             lr=0.01, batch_size=16, backend="sequential").fit(X, y, X_test,
                                                                               y_test)
    seen = dict(study.estimator_.callbacks_)["record"].seen_
    assert seen == {**SEEN, "lr": 0.01, "batch_size": 16, "module": "_Tiny"}
    assert study.settings_["lr"] == 0.01 and study.settings_["lr (set by the study)"] == 0.01
    assert study.settings_["batch_size (set by the study)"] == 16
    assert study.settings_["max_epochs (set by the study)"] is None


def test_param_count_trains_with_the_estimators_settings_except_the_module(data,
                                                                            record_training):
    X, y, X_test, y_test = data
    est = _distinctive(record_training, module="cnn", module__hidden=(3,))
    study = ParamCountStudy(est, widths=(4, 2), n_train=None,
                            backend="sequential").fit(X, y, X_test, y_test)
    assert list(study.estimators_) == ["w=2", "w=4"]  # by parameter count
    for name, net in study.estimators_.items():
        assert dict(net.callbacks_)["record"].seen_ == {**SEEN, "module": "MLP"}
        assert net.module__hidden == (int(name[2:]),)
        assert count_params(net.module_) == \
            study.results_.set_index("name").loc[name, "n_params"]
    assert set(study.histories_["my_column"]) == {7.0}
    _assert_described(study.settings_)
    assert study.settings_["module__hidden"] == "varies by model"
    # the shortcuts apply to every model, only when set
    study = ParamCountStudy(est, widths=(2, 4), max_epochs=1, n_train=None,
                            backend="sequential").fit(X, y, X_test, y_test)
    for net in study.estimators_.values():
        assert dict(net.callbacks_)["record"].seen_ == {**SEEN, "max_epochs": 1,
                                                        "module": "MLP"}
    assert study.settings_["max_epochs"] == 1
    assert study.settings_["max_epochs (set by the study)"] == 1


def test_param_count_per_layer_layouts(data):
    X, y, X_test, y_test = data
    layouts = [(12, 6), (6, 3), (6, 3, 2)]
    study = _param_study(widths=layouts).fit(X, y, X_test, y_test)
    res = study.results_
    by_hand = {t: count_params(MLP(8, t, 4)) for t in layouts}
    assert by_hand[(6, 3)] == (8 + 1) * 6 + (6 + 1) * 3 + (3 + 1) * 4
    # ordered by the parameter count; each model keeps the seed of its place as given
    order = sorted(layouts, key=by_hand.get)
    assert res["width"].tolist() == order
    assert res["n_params"].tolist() == [by_hand[t] for t in order]
    seeds = dict(zip(layouts, spawn_seeds(0, 4)[1:]))
    assert res["seed"].tolist() == [seeds[t] for t in order]
    assert res["name"].tolist() == [f"w={t}" for t in order]
    assert res["depth"].isna().all()  # layouts of several depths
    for t in layouts:
        assert study.estimators_[f"w={t}"].module_.hidden == t
    assert study.settings_["family"] == "MLP, per-layer widths"
    same_depth = _param_study(widths=[(4, 2), (8, 4)], max_epochs=1).fit(X, y, X_test, y_test)
    assert same_depth.results_["depth"].tolist() == [2, 2]


def test_param_count_custom_module_classes(data, record_training):
    X, y, X_test, y_test = data
    est = _distinctive(record_training, module="mlp", module__hidden=(64,))
    study = ParamCountStudy(est, models=[_TwoLayer, _Tiny], n_train=None,
                            backend="sequential").fit(X, y, X_test, y_test)
    res = study.results_
    assert res["name"].tolist() == ["_Tiny", "_TwoLayer"]  # by parameter count
    assert res["n_params"].tolist() == [count_params(_Tiny()), count_params(_TwoLayer())]
    assert res["family"].tolist() == ["custom"] * 2 and res["width"].isna().all()
    for name, net in study.estimators_.items():
        # the module replaced (its module__ arguments with it); every other setting as given
        assert dict(net.callbacks_)["record"].seen_ == {**SEEN, "module": name}
    assert study.settings_["family"] == "custom models"
    _assert_described(study.settings_)
    named = ParamCountStudy(est, models={"small": _Tiny(), "two layers": _TwoLayer},
                            n_train=None, backend="sequential").fit(X, y, X_test, y_test)
    assert list(named.estimators_) == ["small", "two layers"]


def test_param_count_estimators_are_trained_with_their_own_settings(data, record_training):
    X, y, X_test, y_test = data
    sgd = _distinctive(record_training, module="mlp", module__hidden=(16,))
    adam = NeuralClassifier(module=_Tiny, optimizer=torch.optim.Adam, lr=0.02, max_epochs=3,
                            batch_size=11, callbacks=[("record", record_training)])
    study = ParamCountStudy(models=[sgd, adam], n_train=None,
                            backend="sequential").fit(X, y, X_test, y_test)
    assert study.results_["name"].tolist() == ["_Tiny (Adam)", "mlp (SGD)"]
    seen = {name: dict(net.callbacks_)["record"].seen_
            for name, net in study.estimators_.items()}
    assert seen["mlp (SGD)"] == {**SEEN, "module": "MLP"}
    assert seen["_Tiny (Adam)"] == {"optimizer": "Adam", "lr": 0.02, "weight_decay": 0,
                                    "momentum": None, "max_epochs": 3, "batch_size": 11,
                                    "module": "_Tiny"}
    assert study.results_["n_params"].tolist() == [(8 + 1) * 4, (8 + 1) * 16 + (16 + 1) * 4]
    settings = study.settings_
    assert settings["optimizer"] == settings["lr"] == "varies by model"
    assert settings["per model"]["mlp (SGD)"]["lr"] == 0.05
    assert settings["per model"]["_Tiny (Adam)"]["optimizer"] == "Adam"


# ------------------------------------------------------------------ seeds with spread
def test_random_label_seeds_share_the_labels_and_keep_the_first_run(random_study, data):
    X, y, X_test, y_test = data
    study = _random_label_study(n_seeds=3).fit(X, y, X_test, y_test)
    np.testing.assert_array_equal(study.random_labels_, random_study.random_labels_)
    res = study.results_
    seeds = list(dict.fromkeys(res["seed"]))
    assert len(seeds) == 3 and seeds[0] == random_study.results_["seed"].iloc[0]
    pd.testing.assert_frame_equal(res[res["seed"] == seeds[0]].reset_index(drop=True),
                                  random_study.results_)  # n_seeds=1's run, unchanged
    s = study.summary_.iloc[0]
    assert s["n_seeds"] == 3 and len(study.estimators_) == 3
    finals = [evaluate_estimator(est, X_test, y_test)["accuracy"]
              for est in study.estimators_.values()]
    assert s["test_accuracy"] == pytest.approx(np.mean(finals))
    assert s["test_accuracy_ci_low"] <= s["test_accuracy"] <= s["test_accuracy_ci_high"]
    assert set(study.histories_["seed"]) == set(seeds)


def test_param_count_seeds_per_model(param_study, data):
    X, y, X_test, y_test = data
    study = _param_study(n_seeds=3).fit(X, y, X_test, y_test)
    res = study.results_
    assert len(res) == 9 and res.groupby("name")["seed"].nunique().tolist() == [3] * 3
    # each model's first seed is the one of n_seeds=1: the same numbers
    first = res.groupby("name", sort=False).head(1).reset_index(drop=True)
    pd.testing.assert_frame_equal(first, param_study.results_)
    s = study.summary_
    assert s["n_seeds"].tolist() == [3] * 3 and s["name"].tolist() == ["w=2", "w=4", "w=8"]
    np.testing.assert_allclose(s["train_loss"],
                               res.groupby("name", sort=False)["train_loss"].mean())
    assert (s["train_loss_ci_low"] <= s["train_loss"]).all()
    assert study.settings_["n_seeds"] == 3 and list(study.estimators_) == ["w=2", "w=4", "w=8"]


def test_seeds_of_one_condition_are_trained_together_when_vectorized(data):
    X, y, X_test, y_test = data
    alone = _param_study(widths=(2, 4), n_seeds=2, vectorize=False).fit(X, y, X_test, y_test)
    together = _param_study(widths=(2, 4), n_seeds=2, vectorize=True).fit(X, y, X_test, y_test)
    pd.testing.assert_frame_equal(together.results_, alone.results_, rtol=1e-4)
