"""Runs that differ only in their seed, trained together (Study ``vectorize``)."""

import warnings
from numbers import Integral

import numpy as np
import pandas as pd
import pytest
from sklearn.utils._param_validation import Interval
from skorch.callbacks import Callback

import hw1sk.ensemble
from hw1sk.estimators import NeuralClassifier, NeuralRegressor
from hw1sk.studies._base import AUTO_MAX_SEEDS, AUTO_MIN_SEEDS, Study, train_run
from hw1sk.studies._seed_groups import seed_groups


def _seed_run(estimator, X, y, seed, X_test=None, y_test=None):
    run = train_run(estimator, X, y, X_test, y_test, seed=seed)
    return {"seed": seed, "loss": run["train"]["loss"], "history": run["history"]}


class _SeedStudy(Study):
    """The smallest study with seed groups: one run per seed of one estimator."""

    _parameter_constraints = {**Study._parameter_constraints,
                              "n_seeds": [Interval(Integral, 1, None, closed="left")]}
    _run_function = staticmethod(_seed_run)

    def __init__(self, estimator=None, *, n_seeds=4, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _default_estimator(self, data):
        return NeuralRegressor(module__hidden=(8,), batch_size=-1, max_epochs=60, lr=1e-2)

    def _tasks(self, data, template):
        held_out = {"X_test": data.X_test, "y_test": data.y_test} if self._held_out_in_training else {}
        return [({"seed": s}, {"estimator": template, "X": data.X, "y": data.y, "seed": s,
                               **held_out}) for s in range(self.n_seeds)]

    def _collect(self, data, template, labels, runs):
        done = [r for r in runs if r is not None]
        self.results_ = pd.DataFrame([{"seed": r["seed"], "loss": r["loss"]} for r in done])
        self.histories_ = {r["seed"]: r["history"] for r in done}


class _HeldOutSeedStudy(_SeedStudy):
    _held_out_in_training = True

    def _default_estimator(self, data):
        return NeuralClassifier(module__hidden=(8,), batch_size=-1, max_epochs=30, lr=1e-2)


@pytest.fixture
def regression_data():
    X = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    return X, np.sin(3 * X[:, 0]).astype(np.float32)


@pytest.fixture
def ensemble_fits(monkeypatch):
    """The number of seeds of every SeedEnsemble fit (in this process)."""
    calls = []
    original = hw1sk.ensemble.SeedEnsemble.fit

    def counting_fit(self, X, y):
        calls.append(len(self.seeds))
        return original(self, X, y)

    monkeypatch.setattr(hw1sk.ensemble.SeedEnsemble, "fit", counting_fit)
    return calls


def test_seed_groups_match_only_the_same_objects():
    X1, X2 = np.zeros(3), np.zeros(3)
    tasks = [{"estimator": "e", "X": X1, "seed": 0}, {"estimator": "e", "X": X1, "seed": 1},
             {"estimator": "e", "X": X2, "seed": 2}, {"X": X1, "seed": 3}]
    assert seed_groups(tasks) == [[0, 1], [2], [3]]


@pytest.mark.parametrize("vectorize", [True, "auto"])
def test_vectorized_seeds_agree_with_separate_fits(regression_data, ensemble_fits, vectorize):
    X, y = regression_data
    alone = _SeedStudy(n_seeds=4, vectorize=False, backend="sequential").fit(X, y)
    assert ensemble_fits == []
    together = _SeedStudy(n_seeds=4, vectorize=vectorize, backend="sequential").fit(X, y)
    assert ensemble_fits == [4]
    np.testing.assert_allclose(together.results_["loss"], alone.results_["loss"], rtol=1e-4)
    for seed, hist in alone.histories_.items():
        np.testing.assert_allclose(together.histories_[seed]["train_loss"], hist["train_loss"],
                                   rtol=1e-4)


def test_auto_needs_enough_seeds_and_cuts_large_groups(regression_data, ensemble_fits):
    X, y = regression_data
    _SeedStudy(n_seeds=AUTO_MIN_SEEDS - 1, backend="sequential").fit(X, y)
    assert ensemble_fits == []
    # the pieces do not depend on n_jobs (the numbers must not)
    _SeedStudy(n_seeds=2 * AUTO_MIN_SEEDS, n_jobs=2, backend="sequential").fit(X, y)
    assert ensemble_fits == [2 * AUTO_MIN_SEEDS]
    ensemble_fits.clear()
    _SeedStudy(n_seeds=AUTO_MAX_SEEDS + 2, backend="sequential").fit(X, y)
    assert ensemble_fits == [AUTO_MAX_SEEDS // 2 + 1] * 2
    ensemble_fits.clear()
    _SeedStudy(n_seeds=2, vectorize=True, backend="sequential").fit(X, y)
    assert ensemble_fits == [2]


def test_held_out_scores_are_recorded_per_epoch_in_both_modes(ensemble_fits):
    rng = np.random.RandomState(0)
    X = rng.randn(120, 4).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    kw = dict(n_seeds=4, backend="sequential", random_state=0)
    alone = _HeldOutSeedStudy(vectorize=False, **kw).fit(X, y, X[:40], y[:40])
    together = _HeldOutSeedStudy(vectorize=True, **kw).fit(X, y, X[:40], y[:40])
    assert ensemble_fits == [4]
    for seed, hist in alone.histories_.items():
        assert {"test_loss", "test_acc"} <= set(hist.columns)
        np.testing.assert_allclose(together.histories_[seed]["test_loss"], hist["test_loss"],
                                   rtol=1e-4)


def test_a_group_is_one_cache_file_and_resumes(regression_data, ensemble_fits, tmp_path):
    X, y = regression_data
    first = _SeedStudy(n_seeds=4, vectorize=True, backend="sequential",
                       cache_dir=tmp_path).fit(X, y)
    files = list(tmp_path.rglob("*.pkl"))
    assert len(files) == 1 and "run_seed_group" in str(files[0])
    again = _SeedStudy(n_seeds=4, vectorize=True, backend="sequential",
                       cache_dir=tmp_path).fit(X, y)
    assert ensemble_fits == [4]  # the second fit read the cache
    pd.testing.assert_frame_equal(again.results_, first.results_)


def test_diverged_seeds_of_a_group_are_reported(regression_data):
    X, y = regression_data
    est = NeuralRegressor(module__hidden=(8,), batch_size=-1, max_epochs=20, lr=1e8)
    with pytest.warns(RuntimeWarning, match="4 of 4 runs diverged"):
        study = _SeedStudy(est, n_seeds=4, vectorize=True, backend="sequential").fit(X, y)
    assert study.diverged_["seed"].tolist() == [0, 1, 2, 3]
    assert study.results_.empty


def test_vectorize_is_validated(regression_data):
    with pytest.raises(ValueError, match="'vectorize' parameter"):
        _SeedStudy(vectorize="always").fit(*regression_data)


class _Unreplayed(Callback):
    """A callback of the user's own: the vectorized pass cannot know what it does."""


def test_auto_keeps_runs_apart_when_a_callback_is_not_replayed(regression_data, ensemble_fits):
    X, y = regression_data
    est = NeuralRegressor(module__hidden=(8,), batch_size=-1, max_epochs=20, lr=1e-2,
                          callbacks=[("mine", _Unreplayed())])
    _SeedStudy(est, n_seeds=4, backend="sequential").fit(X, y)
    assert ensemble_fits == []  # auto: the runs stay separate sweep tasks (n_jobs)
    _SeedStudy(est, n_seeds=4, vectorize=True, backend="sequential").fit(X, y)
    assert ensemble_fits == [4]  # True: grouped (the ensemble warns and loops)


def test_a_plateau_stop_groups_with_true_and_stays_apart_with_auto(regression_data,
                                                                    ensemble_fits):
    from hw1sk.training_callbacks import PlateauStopping

    X, y = regression_data
    est = NeuralRegressor(module__hidden=(8,), batch_size=-1, max_epochs=20, lr=1e-2,
                          callbacks=[("plateau", PlateauStopping(patience=5))])
    _SeedStudy(est, n_seeds=4, backend="sequential").fit(X, y)
    assert ensemble_fits == []  # auto: a group would wait for its slowest seed
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to a loop
        _SeedStudy(est, n_seeds=4, vectorize=True, backend="sequential").fit(X, y)
    assert ensemble_fits == [4]  # replayed per seed (hw1sk.ensemble_stops)


def _phased_run(estimator, X, y, seed):
    from hw1sk.studies._seed_groups import take_group_phase

    run = train_run(estimator, X, y, seed=seed)
    return {"seed": seed, "phase": take_group_phase(estimator, X, y, seed),
            "other data": take_group_phase(estimator, X.copy(), y, seed),
            "loss": run["train"]["loss"]}


def _phase(tasks, fitted):
    """seed -> (number of seeds, the fitted copy's epochs): every seed but the first."""
    return {t["seed"]: (len(fitted), len(fitted[t["seed"]].history_)) for t in tasks[1:]}


_phased_run.seed_group_phase = _phase


def test_a_run_function_gets_its_group_phase(regression_data):
    from hw1sk.studies._seed_groups import run_seed_group, take_group_phase

    X, y = regression_data
    est = NeuralRegressor(module__hidden=(4,), batch_size=-1, max_epochs=5, lr=1e-2)
    tasks = [{"estimator": est, "X": X, "y": y, "seed": s} for s in (3, 1, 2)]
    results = run_seed_group(_phased_run, tasks)
    assert results[0]["phase"] is None  # left out by the phase: the run does it alone
    for r in results[1:]:
        assert r["phase"] == (3, 5)
    assert all(r["other data"] is None for r in results)  # only the group's own data
    assert take_group_phase(est, X, y, 1) is None  # and only inside the group


def test_replays_callbacks_knows_which_stops_the_pass_can_replay():
    from hw1sk.evaluation import HeldOutScore
    from hw1sk.studies._seed_groups import replays_callbacks
    from hw1sk.training_callbacks import PlateauStopping, TargetLossStopping

    X = np.zeros((4, 1))

    def est(*callbacks):
        return NeuralRegressor(module__hidden=(4,), callbacks=list(callbacks))

    assert replays_callbacks(est(PlateauStopping(), TargetLossStopping(0.1)))
    assert not replays_callbacks(est(PlateauStopping(load_best=True)))
    assert not replays_callbacks(est(PlateauStopping(monitor="test_loss")))
    assert replays_callbacks(est(HeldOutScore(X, X[:, 0]), PlateauStopping(monitor="test_loss")))
    assert not replays_callbacks(est(HeldOutScore(X, X[:, 0], every=2),
                                     PlateauStopping(monitor="test_loss")))
