"""Tests of hw1sk.evaluation: labels encoded through classes_, inputs checked as predict does."""

import numpy as np
import pytest
import torch
from skorch import NeuralNetClassifier
from torch import nn

from hw1sk.estimators import NeuralClassifier, NeuralRegressor
from hw1sk.evaluation import (
    HeldOutScore,
    check_predict_X,
    encode_targets,
    evaluate_estimator,
    evaluate_module,
)
from hand_scoring import hand_scores


@pytest.fixture(scope="module")
def two_class():
    """60 samples in 4-D and a 0/1 rule."""
    rng = np.random.RandomState(0)
    X = rng.randn(60, 4).astype(np.float32)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)


def _net(**params):
    kwargs = dict(module__hidden=(8,), max_epochs=5, batch_size=16, random_state=0)
    kwargs.update(params)
    return NeuralClassifier(**kwargs)


@pytest.mark.parametrize("values, classes", [
    ((3, 7), None),
    (("three", "seven"), None),
    ((0, 1), [1, 0]),
    ((3, 7), [7, 3]),
], ids=["3-7", "strings", "classes-1-0", "classes-7-3"])
def test_evaluate_estimator_encodes_labels_through_classes(two_class, values, classes):
    X, rule = two_class
    y = np.asarray(values)[rule]
    net = _net(classes=classes).fit(X, y)
    scores = evaluate_estimator(net, X, y)
    hand_loss, hand_accuracy = hand_scores(net.module_, net.classes_, X, y)
    assert scores["loss"] == pytest.approx(hand_loss, rel=1e-5)
    assert scores["accuracy"] == pytest.approx(hand_accuracy)
    assert scores["accuracy"] == pytest.approx(net.score(X, y))
    # the loss of training: the last epoch's running loss is of the same order
    assert abs(scores["loss"] - net.history_["train_loss"].iloc[-1]) < 0.2


def test_mnist_three_versus_seven(mnist_small):
    keep = np.isin(mnist_small.y_train, [3, 7])
    X, y = mnist_small.X_train[keep], mnist_small.y_train[keep]
    net = _net(max_epochs=1, batch_size=64).fit(X, y)
    scores = evaluate_estimator(net, X, y)
    assert scores["accuracy"] == pytest.approx(net.score(X, y)) and scores["accuracy"] > 0.8
    assert scores["loss"] == pytest.approx(hand_scores(net.module_, [3, 7], X, y)[0], rel=1e-5)


def test_unknown_labels_are_named(two_class):
    X, rule = two_class
    y = np.array([3, 7])[rule]
    net = _net(max_epochs=1).fit(X, y)
    bad = y.copy()
    bad[:2] = 5
    with pytest.raises(ValueError, match=r"y contains labels \[5\] that are not in classes_"):
        evaluate_estimator(net, X, bad)
    with pytest.raises(ValueError, match=r"\[5\]"):
        encode_targets(net, bad)


def test_encode_targets(two_class):
    X, rule = two_class
    y = np.array(["three", "seven"])[rule]
    net = _net(max_epochs=1, classes=["three", "seven"]).fit(X, y)
    assert encode_targets(net, ["seven", "three", "three"]).tolist() == [1, 0, 0]
    reg = NeuralRegressor(module__hidden=(4,), max_epochs=1).fit(X, X[:, 0])
    targets = encode_targets(reg, X[:, 0].astype(np.float64))
    assert targets.shape == (60, 1) and targets.dtype == np.float32


def test_held_out_score_encodes_labels(two_class):
    X, rule = two_class
    y = np.array(["three", "seven"])[rule]
    net = _net(callbacks=[("test", HeldOutScore(X[40:], y[40:]))]).fit(X[:40], y[:40])
    hand_loss, hand_accuracy = hand_scores(net.module_, net.classes_, X[40:], y[40:])
    assert net.history_["test_loss"].iloc[-1] == pytest.approx(hand_loss, rel=1e-5)
    assert net.history_["test_acc"].iloc[-1] == pytest.approx(net.score(X[40:], y[40:]))
    assert net.history_["test_acc"].iloc[-1] == pytest.approx(hand_accuracy)


def test_held_out_score_checks_its_data(two_class):
    X, rule = two_class
    net = _net(max_epochs=1, callbacks=[("test", HeldOutScore(X[:, :3], rule))])
    with pytest.raises(ValueError, match="X has 3 features, but NeuralClassifier is expecting 4"):
        net.fit(X, rule)


class _Linear3(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(4, 3)

    def forward(self, X):
        return self.layer(X)


def test_plain_skorch_classifier_labels_are_column_indices(two_class):
    """skorch trains on the labels as they are and predicts argmax indices: no encoding."""
    X, rule = two_class
    y = rule * 2  # labels {0, 2} of a 3-output module; classes_ is [0, 2]
    net = NeuralNetClassifier(_Linear3, criterion=nn.CrossEntropyLoss, max_epochs=3, lr=0.1,
                              train_split=None).fit(X, y)
    scores = evaluate_estimator(net, X, y)
    assert scores["accuracy"] == pytest.approx(net.score(X, y))
    assert scores["loss"] == pytest.approx(hand_scores(net.module_, [0, 1, 2], X, y)[0],
                                           rel=1e-5)
    with pytest.raises(ValueError, match=r"labels \[3\] that are not column indices"):
        evaluate_estimator(net, X, np.where(rule, 3, 0))
    with pytest.raises(ValueError, match="integer class indices"):
        evaluate_estimator(net, X, np.array(["a", "b"])[rule])


def test_evaluate_module_refuses_labels_beyond_the_output(two_class):
    X, rule = two_class
    module = nn.Linear(4, 2)
    with pytest.raises(ValueError, match=r"labels \[7\] that are not column indices .*0\.\.1"):
        evaluate_module(module, nn.CrossEntropyLoss(), X, np.where(rule, 7, 0))


def test_inputs_are_checked_as_predict_checks_them(two_class):
    X, rule = two_class
    net = _net(max_epochs=1).fit(X, rule)
    with pytest.raises(ValueError, match="X has 3 features, but NeuralClassifier is expecting "
                                         "4 features as input."):
        evaluate_estimator(net, X[:, :3], rule)
    X_nan = X.copy()
    X_nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        evaluate_estimator(net, X_nan, rule)
    with pytest.raises(ValueError, match="Input X_test contains NaN"):
        check_predict_X(net, torch.as_tensor(X_nan), input_name="X_test")


def test_regressor_scores_are_the_mean_squared_error(two_class):
    X, _ = two_class
    y = X[:, 0] - X[:, 1]
    reg = NeuralRegressor(module__hidden=(4,), max_epochs=2, random_state=0).fit(X, y)
    scores = evaluate_estimator(reg, X, y)
    assert scores["loss"] == pytest.approx(np.mean((reg.predict(X) - y) ** 2), rel=1e-5)
    assert np.isnan(scores["accuracy"])


@pytest.mark.parametrize("last", ["log_softmax", "softmax"])
def test_nll_loss_is_evaluated_as_it_was_trained(last):
    rng = np.random.RandomState(0)
    X = rng.randn(60, 4).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)

    def module(n_in=4, n_out=2):
        end = torch.nn.LogSoftmax(dim=1) if last == "log_softmax" else torch.nn.Softmax(dim=1)
        return torch.nn.Sequential(torch.nn.Linear(n_in, n_out), end)

    clf = NeuralClassifier(module=module, criterion=torch.nn.NLLLoss, max_epochs=3,
                           batch_size=-1, random_state=0).fit(X, y)
    proba = clf.predict_proba(X)
    hand = -np.log(proba[np.arange(len(y)), y]).mean()
    assert evaluate_estimator(clf, X, y)["loss"] == pytest.approx(hand, rel=1e-4)
