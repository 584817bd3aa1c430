"""Tests for hw1sk.experiments and hw1sk.hw1_items: the registry, profiles and every item."""

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from hw1sk.experiments import (
    EXPERIMENTS,
    PROFILES,
    experiment_settings,
    fit_experiment_study,
    run_experiment,
    select_experiments,
)
from hw1sk.findings import INCONCLUSIVE, Finding

# Every HW1 item of the brief, by the id it has in the report.
HW1_ITEMS = ["1-1-functions", "1-1-mnist", "1-1-cifar10", "1-2-trajectory",
             "1-2-gradient-norm", "1-2-minimal-ratio", "1-2-error-surface",
             "1-2-hessian-spectrum", "1-3-random-labels", "1-3-param-count",
             "1-3-interpolation", "1-3-sensitivity"]

# Sizes far below the quick profile, so that every item runs in a few seconds.
TINY = {
    "1-1-functions": {"depths": (1, 3), "n_params": 100, "max_epochs": 30,
                      "data_n_samples": 40, "data_n_grid": 30},
    "1-1-mnist": {"depths": (1, 2), "n_params": 2000, "max_epochs": 1, "data_n_train": 200,
                  "data_n_test": 100},
    "1-2-trajectory": {"n_runs": 2, "max_epochs": 3, "hidden": (8,), "data_n_train": 200},
    "1-2-gradient-norm": {"max_epochs": 40, "every": 10, "data_n_samples": 40},
    "1-2-minimal-ratio": {"n_runs": 2, "hidden": (5,), "n_samples": 50, "train_epochs": 30},
    "1-2-error-surface": {"hidden": (8,), "max_epochs": 2, "n_eval": 100, "surface_points": 5,
                          "line_points": 5, "data_n_train": 200},
    "1-2-hessian-spectrum": {"estimator": {"module__hidden": (8,), "max_epochs": 2},
                             "n_hessian": 100, "n_probes": 2, "n_iter": 10,
                             "data_n_train": 200},
    "1-3-random-labels": {"n_train": 200, "n_test": 100, "max_epochs": 2},
    "1-3-param-count": {"widths": (2, 4), "max_epochs": 1, "n_train": 200, "n_test": 100},
    "1-3-interpolation": {"max_epochs": 1, "alphas": [-1.0, 0.0, 0.5, 1.0, 2.0],
                          "data_n_train": 300, "data_n_test": 100},
    "1-3-sensitivity": {"batch_sizes": (32, 64), "max_epochs": 1, "n_eval": 50,
                        "sharpness_steps": 2, "sharpness_restarts": 1, "hessian_max_iter": 5,
                        "data_n_train": 300, "data_n_test": 100},
}


def test_every_hw1_item_is_registered_in_report_order():
    assert select_experiments(None) == HW1_ITEMS
    assert set(PROFILES["quick"]) == set(PROFILES["full"]) == set(EXPERIMENTS)


def test_selection_by_prefix_and_errors():
    assert select_experiments(["1-2"]) == [i for i in HW1_ITEMS if i.startswith("1-2-")]
    # the report order wins over the order of the selectors, and repeats are dropped
    assert select_experiments(["1-3-sensitivity", "1-1-functions", "1-1"]) == [
        "1-1-functions", "1-1-mnist", "1-1-cifar10", "1-3-sensitivity"]
    with pytest.raises(ValueError, match="unknown item '1-9'"):
        select_experiments(["1-9"])
    with pytest.raises(ValueError, match="unknown item"):
        experiment_settings("nope")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        experiment_settings("1-1-functions", "huge")


def test_full_profile_has_the_assignments_sizes():
    full = PROFILES["full"]
    assert full["1-2-trajectory"]["n_runs"] == 8 and full["1-2-trajectory"]["every"] == 3
    assert full["1-2-trajectory"]["estimator"]["max_epochs"] == 30
    assert full["1-2-trajectory"]["data_n_train"] is None  # full MNIST
    assert full["1-2-minimal-ratio"]["n_runs"] == 100
    assert len(full["1-1-functions"]["depths"]) >= 3
    assert full["1-1-functions"]["estimator"]["max_epochs"] == 20000
    # >= 10 models for parameter count, >= 5 batch sizes for sensitivity (study defaults)
    from hw1sk.studies.param_count import DEFAULT_WIDTHS
    from hw1sk.studies.sensitivity import SensitivityStudy

    assert full["1-3-param-count"]["widths"] is None and len(DEFAULT_WIDTHS["mlp"]) >= 10
    assert "batch_sizes" not in full["1-3-sensitivity"]
    assert len(SensitivityStudy().batch_sizes) >= 5


def test_overrides_go_on_top_of_the_profile():
    settings = experiment_settings("1-2-minimal-ratio", "quick", {"n_runs": 3})
    assert settings["n_runs"] == 3
    assert settings["estimator"] == PROFILES["quick"]["1-2-minimal-ratio"]["estimator"]
    # an estimator override changes the settings it names, and only those
    changed = experiment_settings("1-2-minimal-ratio", "quick", {"estimator": {"lr": 0.5}})
    assert changed["estimator"] == {**settings["estimator"], "lr": 0.5}
    replaced = experiment_settings("1-2-minimal-ratio", "quick",
                                   {"estimator": {"kind": "regressor", "lr": 0.5}})
    assert replaced["estimator"] == {"kind": "regressor", "lr": 0.5}


def test_every_profile_names_its_items_training_settings():
    # the one place an item's training settings stand: model, optimizer, lr, epochs, batch
    for profile in PROFILES.values():
        for exp_id, settings in profile.items():
            spec = settings["estimator"]
            assert {"kind", "optimizer", "lr", "max_epochs", "batch_size"} <= set(spec), exp_id
            assert not {"lr", "max_epochs", "batch_size", "hidden"} & set(settings), exp_id


def test_the_profiles_estimator_is_the_one_the_study_trains(mnist_data_home):
    from hw1sk.experiments import build_experiment_study

    study, _ = build_experiment_study("1-3-sensitivity", "quick", data_home=mnist_data_home)
    est = study.estimator
    spec = PROFILES["quick"]["1-3-sensitivity"]["estimator"]
    assert type(est).__name__ == "NeuralClassifier" and est.optimizer is torch.optim.Adam
    assert (est.lr, est.max_epochs, est.batch_size) == (spec["lr"], spec["max_epochs"],
                                                        spec["batch_size"])


def test_context_reaches_the_study(mnist_data_home):
    study = fit_experiment_study("1-2-minimal-ratio", "quick", data_home=mnist_data_home,
                                 seed=7, backend="sequential",
                                 overrides=TINY["1-2-minimal-ratio"])
    assert study.random_state == 7 and study.backend == "sequential"
    assert study.n_runs == 2 and len(study.results_) == 2


@pytest.mark.parametrize("exp_id", [i for i in HW1_ITEMS if i != "1-1-cifar10"])
def test_every_item_renders_figures_tables_settings(exp_id, mnist_data_home):
    result = run_experiment(exp_id, "quick", data_home=mnist_data_home, seed=0,
                            backend="sequential", overrides=TINY[exp_id])
    assert not result.skipped and result.id == exp_id
    assert result.figures and all(isinstance(f, Figure) for f in result.figures.values())
    assert "results" in result.tables
    for name, table in result.tables.items():
        assert isinstance(table, pd.DataFrame) and len(table), name
    assert result.settings["profile"] == "quick" and result.settings["report seed"] == 0
    for key, value in TINY[exp_id].items():
        # the study's own description of a setting wins over the profile's raw value
        own = getattr(result.study, "settings_", {})
        assert result.settings[key] == (own[key] if key in own else value)
    assert isinstance(result.numbers, pd.DataFrame) and len(result.numbers)
    assert result.wall_time > 0
    # findings computed from the fitted study, never its fallback for a findings error
    assert result.findings and all(isinstance(f, Finding) for f in result.findings)
    assert all(f.item == exp_id and "could not be computed" not in f.claim
               for f in result.findings), [f.reason for f in result.findings]
    import matplotlib.pyplot as plt

    plt.close("all")


def test_cifar10_is_skipped_with_a_note_when_missing(tmp_path):
    result = run_experiment("1-1-cifar10", "quick", data_home=str(tmp_path), seed=0)
    assert result.skipped and not result.figures and result.study is None
    assert "CIFAR-10 is not under" in result.notes[0] and str(tmp_path) in result.notes[0]


def test_cifar10_item_runs_when_the_data_is_there(tmp_path, write_tiny_cifar10):
    write_tiny_cifar10(tmp_path, n_per_batch=40, n_test=40)
    result = run_experiment("1-1-cifar10", "quick", data_home=str(tmp_path), seed=0,
                            backend="sequential",
                            overrides={"depths": (1, 2), "n_params": 10000, "max_epochs": 1,
                                       "data_n_train": 100, "data_n_test": 40})
    assert not result.skipped
    summary = result.numbers
    assert set(summary["dataset"]) == {"CIFAR-10"}
    assert np.all(summary["n_params"] > 9000)
    import matplotlib.pyplot as plt

    plt.close("all")


def test_same_seed_same_numbers(mnist_data_home):
    kwargs = dict(data_home=mnist_data_home, backend="sequential",
                  overrides=TINY["1-2-minimal-ratio"])
    a = fit_experiment_study("1-2-minimal-ratio", "quick", seed=3, **kwargs).results_
    b = fit_experiment_study("1-2-minimal-ratio", "quick", seed=3, **kwargs).results_
    pd.testing.assert_frame_equal(a, b)


def test_numbers_do_not_depend_on_n_jobs(mnist_data_home):
    # a 784-512-512-10 MLP: its products round differently on 1 and 2 threads, so this
    # holds only because every run gets the same number of threads whatever n_jobs
    kwargs = dict(data_home=mnist_data_home, seed=0,
                  overrides={"n_train": 2000, "n_test": 200, "max_epochs": 5})
    one = fit_experiment_study("1-3-random-labels", "quick", n_jobs=1, **kwargs)
    two = fit_experiment_study("1-3-random-labels", "quick", n_jobs=2, **kwargs)
    pd.testing.assert_frame_equal(one.results_, two.results_)


@pytest.mark.parametrize("selector", ["", " "])
def test_an_empty_selector_is_an_error_not_every_item(selector):
    with pytest.raises(ValueError, match="empty item"):
        select_experiments([selector])
    with pytest.raises(ValueError, match="empty item"):
        select_experiments(["1-2", selector])


def test_a_findings_function_that_raises_never_loses_the_item(monkeypatch):
    import dataclasses

    def broken(study, item):
        raise KeyError("no_such_column")

    from hw1sk.experiments import _load_registry

    _load_registry()  # the items, also when this test runs first
    exp_id = "1-2-minimal-ratio"
    monkeypatch.setitem(EXPERIMENTS, exp_id,
                        dataclasses.replace(EXPERIMENTS[exp_id], findings=broken))
    result = run_experiment(exp_id, "quick", seed=0, backend="sequential",
                            overrides=TINY[exp_id])
    assert result.error is None and result.figures
    (finding,) = result.findings
    assert finding.verdict == INCONCLUSIVE and finding.item == exp_id
    assert "KeyError" in finding.reason and "no_such_column" in finding.reason
    import matplotlib.pyplot as plt

    plt.close("all")


def test_a_skipped_item_has_no_findings(tmp_path):
    result = run_experiment("1-1-cifar10", "quick", data_home=str(tmp_path), seed=0)
    assert result.skipped and result.findings == []
