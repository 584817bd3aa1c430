"""Tests of per-seed early stopping in SeedEnsemble's vectorized pass (hw1sk.ensemble_stops)."""

from __future__ import annotations

import numpy as np
import pytest

from hw1sk.callbacks import WeightTrace
from hw1sk.ensemble import SeedEnsemble, fit_seeds
from hw1sk.ensemble_stops import SeedStops, epoch_rows, stop_obstacle
from hw1sk.estimators import NeuralClassifier, NeuralRegressor
from hw1sk.evaluation import HeldOutScore
from hw1sk.models import MLP
from hw1sk.training_callbacks import PlateauStopping, TargetLossStopping
from test_ensemble import blobs, function_data, loop_fits  # noqa: F401 (fixtures)


def tanh_mlp(n_in=1, n_out=1):
    return MLP(n_in=n_in, hidden=(16,), n_out=n_out, activation="tanh")


def _callback(net, name):
    return dict(net.callbacks_)[name]


def test_plateau_stops_each_seed_where_its_own_fit_stops(function_data):
    X, y = function_data
    stop = PlateauStopping(patience=5, threshold=2e-2, sink=lambda *a, **k: None)
    est = NeuralRegressor(module=tanh_mlp, batch_size=-1, max_epochs=400, lr=2e-2,
                          callbacks=[("plateau", stop)])
    seeds = [0, 1, 2, 3]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    assert ens.vectorized_ and ens.pass_ == "batched"
    lengths = []
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        mine, theirs = _callback(fitted, "plateau"), _callback(ref, "plateau")
        assert len(fitted.history_) == len(ref.history_) < 400  # it stopped early
        assert mine.stopped_epoch_ == theirs.stopped_epoch_ == len(ref.history_)
        assert (mine.best_epoch_, mine.misses_) == (theirs.best_epoch_, theirs.misses_)
        np.testing.assert_allclose(fitted.history_["train_loss"], ref.history_["train_loss"],
                                   rtol=1e-4)
        np.testing.assert_allclose(fitted.predict(X), ref.predict(X), rtol=1e-3, atol=1e-5)
        assert not fitted.diverged_
        lengths.append(len(ref.history_))
    assert len(set(lengths)) > 1  # the seeds stopped at different epochs: per seed


def test_target_loss_stops_each_seed_of_a_mini_batch_classifier(blobs):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(8,), batch_size=16, max_epochs=30, lr=2e-2,
                           callbacks=[("target", TargetLossStopping(0.3)),
                                      ("test", HeldOutScore(X[:40], y[:40]))])
    seeds = [0, 1, 2, 5]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    assert ens.pass_ == "batched"
    reached = []
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        a, b = fitted.history_, ref.history_
        assert _callback(fitted, "target").reached_epoch_ == \
            _callback(ref, "target").reached_epoch_ == len(b)
        assert list(a.columns) == list(b.columns)
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
        np.testing.assert_array_equal(a["train_acc"], b["train_acc"])
        # the held-out scorer comes after the stop: neither sees the last epoch
        assert a["test_loss"].isna().tolist() == b["test_loss"].isna().tolist()
        assert np.isnan(b["test_loss"].iloc[-1])
        reached.append(len(b))
    assert len(set(reached)) > 1


@pytest.mark.parametrize("trace_first", [True, False])
def test_callbacks_after_the_stop_miss_the_last_epoch_as_in_a_fit(function_data, trace_first):
    X, y = function_data
    stop = ("target", TargetLossStopping(0.05))
    trace = ("weights", WeightTrace(every=1))
    est = NeuralRegressor(module=tanh_mlp, batch_size=-1, max_epochs=300, lr=2e-2,
                          callbacks=[trace, stop] if trace_first else [stop, trace])
    seeds = [0, 1, 2]
    for fitted, ref in zip(fit_seeds(est, X, y, seeds), loop_fits(est, seeds, X, y)):
        mine, theirs = _callback(fitted, "weights"), _callback(ref, "weights")
        assert mine.epochs_ == theirs.epochs_
        assert len(mine.epochs_) == len(ref.history_) + (1 if trace_first else 0)
        np.testing.assert_allclose(mine.snapshots_[-1], theirs.snapshots_[-1], rtol=1e-4,
                                   atol=1e-6)


def test_a_seed_that_never_stops_runs_to_max_epochs(function_data):
    X, y = function_data
    est = NeuralRegressor(module=tanh_mlp, batch_size=-1, max_epochs=20, lr=1e-2,
                          callbacks=[("target", TargetLossStopping(-1.0))])
    for fitted in fit_seeds(est, X, y, [0, 1]):
        assert len(fitted.history_) == 20 and _callback(fitted, "target").reached_epoch_ is None


def test_what_cannot_be_replayed_falls_back_to_the_loop(function_data):
    X, y = function_data
    est = NeuralRegressor(module__hidden=(4,), batch_size=-1, max_epochs=3,
                          callbacks=[("plateau", PlateauStopping(load_best=True))])
    with pytest.warns(UserWarning, match="load_best=True"):
        ens = SeedEnsemble(est, seeds=[0, 1]).fit(X, y)
    assert not ens.vectorized_


def test_stop_obstacle_names_the_callback():
    net = NeuralRegressor(module__hidden=(4,), callbacks=[
        ("plateau", PlateauStopping(monitor="test_loss"))]).initialize()
    assert "'plateau' monitors 'test_loss'" in stop_obstacle(net, held_out_names=())
    assert stop_obstacle(net, held_out_names=("test_loss",)) is None


def test_epoch_rows_sum_the_batches_in_order():
    rows = epoch_rows(3, losses=[[0.5, 1.0], [0.25, 2.0]], sizes=[10, 5],
                      correct=[[7, 1], [5, 0]], is_classifier=True,
                      held_out={"test_loss": [0.1, 0.2]})
    assert rows[0] == {"epoch": 3, "train_loss": (0.5 * 10 + 0.25 * 5) / 15,
                       "train_acc": 12 / 15, "test_loss": 0.1}
    assert rows[1]["train_loss"] == (1.0 * 10 + 2.0 * 5) / 15 and rows[1]["train_acc"] == 1 / 15


def test_seed_stops_reports_the_stopping_seed_and_restores_the_history():
    nets = [NeuralRegressor(module__hidden=(4,), callbacks=[
        ("target", TargetLossStopping(0.5))]).initialize() for _ in range(2)]
    before = [net.history for net in nets]
    stops = SeedStops(nets)
    stops.begin()
    rows = [{"epoch": 1, "train_loss": 0.4}, {"epoch": 1, "train_loss": 0.6}]
    assert stops.epoch_end(1, rows, running=[True, True]) == [0]
    assert stops.stopped_epoch == [1, None]
    assert [net.history for net in nets] == before
    assert not stops.sees_last_epoch(0, position=len(nets[0].callbacks_))
    assert stops.sees_last_epoch(1, position=len(nets[1].callbacks_))
