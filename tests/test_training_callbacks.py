"""Tests for hw1sk.training_callbacks: epoch scores and the divergence check."""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from skorch.dataset import ValidSplit

from hw1sk.estimators import DivergenceWarning, NeuralClassifier, NeuralRegressor


class BatchLog(Callback):
    def initialize(self):
        self.seen_ = []
        self.epochs_ = 0
        return self

    def on_batch_end(self, net, training=None, **kwargs):
        if training:
            self.seen_.append(net.history[-1]["batches"][-1]["train_loss"])

    def on_epoch_end(self, net, **kwargs):
        self.epochs_ += 1


@pytest.fixture
def blobs():
    rng = np.random.RandomState(0)
    X = rng.randn(90, 4).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


def test_epoch_loss_is_the_sample_weighted_mean_of_batch_losses(blobs):
    X, y = blobs
    clf = NeuralClassifier(module__hidden=(8,), batch_size=32, max_epochs=3,
                           random_state=0).fit(X, y)
    for row in clf.history:
        losses = [b["train_loss"] for b in row["batches"]]
        sizes = [b["train_batch_size"] for b in row["batches"]]
        assert sizes == [32, 32, 26]
        assert row["train_loss"] == pytest.approx(np.dot(losses, sizes) / sum(sizes))
        assert row["train_batch_count"] == 3
    best = clf.history_["train_loss_best"].tolist()
    losses = clf.history_["train_loss"].tolist()
    assert best == [losses[i] < min(losses[:i], default=np.inf) for i in range(len(losses))]


def test_running_accuracy_counts_the_batches_as_trained(blobs):
    X, y = blobs

    class Correct(Callback):  # recount by hand from each batch's predictions
        def initialize(self):
            self.counts_ = []
            return self

        def on_epoch_begin(self, net, **kwargs):
            self.counts_.append(0)

        def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
            if training:
                self.counts_[-1] += int((y_pred.argmax(1) == batch[1]).sum())

    counter = Correct()
    clf = NeuralClassifier(module__hidden=(8,), batch_size=16, max_epochs=2, random_state=0,
                           callbacks=[counter]).fit(X, y)
    np.testing.assert_allclose(clf.history_["train_acc"], np.array(counter.counts_) / len(y))


def test_running_accuracy_is_the_same_when_counted_in_several_blocks(blobs, monkeypatch):
    from hw1sk.training_callbacks import EpochScores

    X, y = blobs
    params = dict(module__hidden=(8,), batch_size=16, max_epochs=2, random_state=0)
    whole = NeuralClassifier(**params).fit(X, y)
    monkeypatch.setattr(EpochScores, "_PENDING_SCORES", 40)  # a count every two batches
    blocks = NeuralClassifier(**params).fit(X, y)
    assert blocks.history_["train_acc"].tolist() == whole.history_["train_acc"].tolist()
    assert all(isinstance(a, float) for a in blocks.history_["train_acc"])


def test_valid_scores_with_a_train_split(blobs):
    X, y = blobs
    clf = NeuralClassifier(module__hidden=(8,), max_epochs=2, random_state=0,
                           train_split=ValidSplit(3, stratified=True)).fit(X, y)
    frame = clf.history_
    assert {"valid_loss", "valid_loss_best", "valid_acc", "valid_batch_count"} <= set(frame)
    assert np.isfinite(frame["valid_loss"]).all()


def test_divergence_mid_epoch_stops_at_the_next_batch_and_closes_the_epoch():
    X = np.linspace(-2, 2, 64, dtype=np.float32)[:, None]
    y = 1e3 * np.sin(2 * X[:, 0])
    log = BatchLog()
    reg = NeuralRegressor(module__hidden=(16,), optimizer=torch.optim.SGD, lr=1.0,
                          batch_size=8, max_epochs=20, random_state=0, callbacks=[log])
    with pytest.warns(DivergenceWarning):
        reg.fit(X, y)
    row = reg.history[-1]
    assert reg.diverged_ and row["diverged"]
    assert len(row["batches"]) < 8  # mid-epoch: the rest of the epoch was not trained
    # every callback saw the diverged batch, and nothing ran after it
    assert log.seen_[-1] == row["batches"][-1]["train_loss"]
    assert not (np.isfinite(log.seen_[-1]) and log.seen_[-1] <= 1e4 * reg.initial_loss_)
    assert log.epochs_ == len(reg.history)  # the cut-short epoch was closed
    assert row["train_batch_count"] == len(row["batches"])
    assert "train_loss" in row
    # a new fit starts afresh
    reg.set_params(lr=1e-3, callbacks=[]).fit(X, y / 1e3)
    assert not reg.diverged_ and reg.divergence_reason_ is None


def test_target_loss_stopping_ends_at_the_first_epoch_at_or_below_the_target(blobs):
    from hw1sk.training_callbacks import TargetLossStopping

    X, y = blobs
    params = dict(module__hidden=(8,), batch_size=16, max_epochs=30, random_state=0)
    full = NeuralClassifier(**params).fit(X, y)
    losses = full.history_["train_loss"].to_numpy()
    target = float(losses[4])  # reached at the end of epoch 5 at the latest
    first = int(np.argmax(losses <= target)) + 1
    stop = TargetLossStopping(target)
    clf = NeuralClassifier(**params, callbacks=[("target", stop)]).fit(X, y)
    assert stop.reached_epoch_ == first == len(clf.history_)
    np.testing.assert_array_equal(clf.history_["train_loss"], losses[:first])
    # never reached: max_epochs is the cap
    never = TargetLossStopping(0.0)
    clf = NeuralClassifier(**params, callbacks=[never]).fit(X, y)
    assert never.reached_epoch_ is None and len(clf.history_) == 30
    # another monitored key, and a refit starts afresh
    stop = TargetLossStopping(10.0, monitor="train_loss")
    clf = NeuralClassifier(**params, callbacks=[stop]).fit(X, y)
    assert stop.reached_epoch_ == 1 and len(clf.history_) == 1
    clf.set_params(callbacks__TargetLossStopping__target=0.0).fit(X, y)
    assert dict(clf.callbacks_)["TargetLossStopping"].reached_epoch_ is None


def test_target_loss_stopping_on_a_plain_skorch_net(blobs):
    from skorch import NeuralNetClassifier

    from hw1sk.training_callbacks import TargetLossStopping

    X, y = blobs
    module = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 2), torch.nn.Softmax(dim=-1))
    stop = TargetLossStopping(10.0)
    net = NeuralNetClassifier(module, max_epochs=5, train_split=None, verbose=0,
                              callbacks=[stop]).fit(X, y.astype(np.int64))
    assert stop.reached_epoch_ == 1 and len(net.history) == 1
