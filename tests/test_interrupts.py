"""Tests for hw1sk.interrupts: Ctrl-C is never taken for an early stop, and never cached."""

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from skorch.callbacks import Callback, EarlyStopping

from hw1sk.estimators import NeuralClassifier, NeuralRegressor
from hw1sk.interrupts import InterruptWatch, StopTraining
from hw1sk.studies.deep_shallow import DeepShallowStudy, PlateauStopping
from hw1sk.sweep import run_sweep


class SigintAt(Callback):
    """Sends this process a real SIGINT at the end of epoch ``epoch`` (as Ctrl-C does)."""

    def __init__(self, epoch=2):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            os.kill(os.getpid(), signal.SIGINT)


class StopAt(Callback):
    """Ends training at epoch ``epoch`` the way skorch's callbacks do."""

    def __init__(self, epoch=2, exc=KeyboardInterrupt):
        self.epoch = epoch
        self.exc = exc

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise self.exc


class TrainEndRecorder(Callback):
    def on_train_end(self, net, **kwargs):
        net.train_ended_ = True


@pytest.fixture
def wave():
    X = np.linspace(-2, 2, 64)[:, None].astype(np.float32)
    return X, np.sin(2 * X[:, 0])


def _net(callbacks, max_epochs=10):
    return NeuralRegressor(module__hidden=(4,), batch_size=-1, max_epochs=max_epochs,
                           random_state=0, callbacks=callbacks)


def test_ctrl_c_during_fit_propagates_and_marks_the_net(wave):
    net = _net([SigintAt(epoch=2), TrainEndRecorder()])
    with pytest.raises(KeyboardInterrupt):
        net.fit(*wave)
    assert net.interrupted_ is True
    assert len(net.history) == 2  # the epochs it trained are kept
    assert not getattr(net, "train_ended_", False)  # not wrapped up as a finished fit
    # the handler that was there before is back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_keyboard_interrupt_from_a_callback_is_an_early_stop(wave):
    net = _net([StopAt(epoch=3), TrainEndRecorder()]).fit(*wave)
    assert net.interrupted_ is False and net.train_ended_
    assert len(net.history) == 3


def test_skorch_early_stopping_still_ends_fit_normally(wave):
    net = _net([EarlyStopping(monitor="train_loss", patience=1, threshold=10.0)],
               max_epochs=50).fit(*wave)
    assert net.interrupted_ is False and len(net.history) < 50


def test_stop_training_ends_fit_normally(wave):
    net = _net([StopAt(epoch=4, exc=StopTraining), TrainEndRecorder()]).fit(*wave)
    assert len(net.history) == 4 and net.train_ended_ and not net.interrupted_


def test_plateau_stopping_does_not_raise_keyboard_interrupt(wave):
    plateau = PlateauStopping(patience=2, threshold=10.0)

    class Net:  # PlateauStopping on a net of ours raises StopTraining
        history = [{"train_loss": 1.0, "epoch": 1}]
        verbose = 0

    plateau.on_train_begin(Net())
    with pytest.raises(KeyboardInterrupt):  # a plain object: skorch's convention
        for _ in range(3):
            plateau.on_epoch_end(Net())
    net = _net([PlateauStopping(patience=2, threshold=10.0)], max_epochs=50)
    net.fit(*wave)
    assert net.interrupted_ is False
    assert dict(net.callbacks_)["PlateauStopping"].stopped_epoch_ == 3


def test_interrupt_watch_outside_the_main_thread_installs_nothing():
    seen = {}

    def work():
        with InterruptWatch() as watch:
            seen["installed"] = watch._installed

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == {"installed": False}


def _interrupted_fit(X, y, seed):
    net = NeuralClassifier(module__hidden=(4,), max_epochs=5, batch_size=-1,
                           random_state=seed, callbacks=[SigintAt(epoch=1 + seed)])
    return net.fit(X, y).history_


def test_an_interrupted_run_is_never_cached(tmp_path):
    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 3).astype(np.float32), rng.randint(0, 2, 30)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_interrupted_fit, [{"X": X, "y": y, "seed": 0}], backend="sequential",
                  cache_dir=tmp_path)
    written = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert written == []


def test_a_study_stops_on_ctrl_c_and_keeps_nothing(tmp_path):
    X = np.linspace(-1, 1, 40)[:, None]
    y = np.sin(3 * X[:, 0])
    est = NeuralRegressor(batch_size=-1, max_epochs=20, callbacks=[SigintAt(epoch=3)])
    study = DeepShallowStudy(estimator=est, n_params=60, depths=(1, 2), backend="sequential",
                             cache_dir=tmp_path, random_state=0)
    with pytest.raises(KeyboardInterrupt):
        study.fit(X, y)
    assert not hasattr(study, "results_")
    assert [p for p in Path(tmp_path).rglob("*") if p.is_file()] == []
