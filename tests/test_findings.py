"""Tests for hw1sk.findings: every findings function flips to each verdict on hand-made results."""

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hw1sk import findings as F
from hw1sk.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Finding


def _verdicts(found):
    assert found and all(isinstance(f, Finding) for f in found)
    for f in found:  # computed from the numbers: each finding carries some
        assert re.search(r"\d", f.evidence) and f.reason and f.expectation
    return [f.verdict for f in found]


# --------------------------------------------------------------------------- 1-1
def _deep_shallow(deep, shallow, key="function", metric="train_loss"):
    rows = [{key: "sinc", "model": m, "restart": r, "n_layers": layers, metric: v}
            for m, layers, values in (("MLP-1", 2, shallow), ("MLP-7", 8, deep))
            for r, v in enumerate(values)]
    return SimpleNamespace(summary_=pd.DataFrame(rows))


@pytest.mark.parametrize("deep, shallow, verdict, reason", [
    ([0.01, 0.02, 0.03], [0.1, 0.2, 0.3], REPRODUCED, "do not overlap"),
    ([0.1, 0.2, 0.3], [0.01, 0.02, 0.03], NOT_REPRODUCED, "do not overlap"),
    ([0.01, 0.2, 0.3], [0.1, 0.2, 0.3], INCONCLUSIVE, "overlap"),
    ([0.01, 0.02], [0.1, 0.2], INCONCLUSIVE, "only 2 restart(s)"),
])
def test_deep_shallow_regression_verdicts(deep, shallow, verdict, reason):
    (finding,) = F.deep_shallow_findings(_deep_shallow(deep, shallow), item="1-1-functions")
    assert finding.verdict == verdict and reason in finding.reason
    assert finding.item == "1-1-functions" and "MLP-7" in finding.claim
    if verdict == REPRODUCED:
        assert "lower best train_loss" in finding.claim and "(10x)" in finding.claim


def test_deep_shallow_classification_compares_accuracy_per_family():
    mlp = _deep_shallow([0.97, 0.96, 0.95], [0.90, 0.91, 0.92], "dataset", "test_acc").summary_
    cnn = mlp.assign(model=mlp["model"].str.replace("MLP", "CNN"),
                     test_acc=mlp["test_acc"][::-1].to_numpy() - 0.5)
    cnn.loc[cnn["model"] == "CNN-7", "test_acc"] = [0.1, 0.1, 0.1]
    found = F.deep_shallow_findings(SimpleNamespace(summary_=pd.concat([mlp, cnn])))
    assert _verdicts(found) == [REPRODUCED, NOT_REPRODUCED]
    assert "higher best test_acc" in found[0].claim and "lower best test_acc" in found[1].claim


def test_a_single_depth_gives_no_deep_shallow_finding():
    study = _deep_shallow([0.1], [0.2])
    study.summary_["n_layers"] = 3
    assert F.deep_shallow_findings(study) == []


# --------------------------------------------------------------------------- 1-2
def _grad_norms(values):
    return SimpleNamespace(grad_norms_=pd.DataFrame({
        "run": 0, "iteration": np.arange(len(values)), "grad_norm": values,
        "loss": np.linspace(1, 0.1, len(values))}))


@pytest.mark.parametrize("values, verdict", [
    (np.geomspace(1, 0.01, 100), REPRODUCED),
    (np.geomspace(0.01, 1, 100), NOT_REPRODUCED),
    (np.ones(100), INCONCLUSIVE),
    (np.geomspace(1, 0.01, 10), INCONCLUSIVE),  # too few iterations for the edges
])
def test_gradient_norm_verdicts(values, verdict):
    assert _verdicts(F.gradient_norm_findings(_grad_norms(values))) == [verdict]


def _trajectory(ends, explained=0.8):
    rows = [{"scope": scope, "run": i, "epoch": epoch, "component_1": x, "component_2": y}
            for scope in ("model", "layer") for i, end in enumerate(ends)
            for epoch, (x, y) in ((0, (0.0, 0.0)), (10, end))]
    return SimpleNamespace(results_=pd.DataFrame(rows),
                           explained_variance_ratio_={"model": np.array([explained, 0.0])})


TOGETHER = [(10.0, 0.0), (10.01, 0.0), (10.0, 0.01), (10.01, 0.01)]


@pytest.mark.parametrize("ends, explained, verdict", [
    ([(10.0, 0.0), (0.0, 10.0), (-10.0, 0.0), (0.0, -10.0)], 0.8, REPRODUCED),
    (TOGETHER, 0.95, NOT_REPRODUCED),
    (TOGETHER, 0.5, INCONCLUSIVE),  # close in a plane that hides most of the variance
    ([(10.0, 0.0), (0.0, 10.0)], 0.95, INCONCLUSIVE),  # two runs only
])
def test_trajectory_verdicts(ends, explained, verdict):
    assert _verdicts(F.trajectory_findings(_trajectory(ends, explained))) == [verdict]


def _minimal_ratio(loss, ratio, converged=True, n_zero=2):
    n = len(loss)
    return SimpleNamespace(results_=pd.DataFrame({
        "loss": loss, "minimal_ratio": ratio, "converged": converged, "n_zero": n_zero,
        "n_params": 100}, index=range(n)))


@pytest.mark.parametrize("ratio, n, verdict, reason", [
    (np.linspace(0.9, 0.5, 12), 12, REPRODUCED, "expected sign"),
    (np.linspace(0.5, 0.9, 12), 12, NOT_REPRODUCED, "opposite sign"),
    (np.array([0.5, 0.9, 0.6, 0.8, 0.7, 0.55, 0.85, 0.65, 0.75, 0.6, 0.8, 0.7]), 12,
     INCONCLUSIVE, "not significant"),
    (np.linspace(0.9, 0.5, 6), 6, INCONCLUSIVE, "at least 10"),
])
def test_minimal_ratio_verdicts(ratio, n, verdict, reason):
    (finding,) = F.minimal_ratio_findings(_minimal_ratio(np.linspace(0.01, 0.1, n), ratio))
    assert finding.verdict == verdict and reason in finding.reason
    assert "zero eigenvalues" in finding.evidence and f"{n} of {n} runs converged" in finding.evidence


def test_minimal_ratio_uses_only_converged_runs():
    study = _minimal_ratio(np.linspace(0.01, 0.1, 12), np.linspace(0.9, 0.5, 12),
                           converged=[True] * 6 + [False] * 6)
    (finding,) = F.minimal_ratio_findings(study)
    assert finding.verdict == INCONCLUSIVE and "6 of 12 runs converged" in finding.evidence


def _surface(center, low=0.1, high=1.1):
    summary = pd.DataFrame([{"center_loss": center, "surface_min": low, "surface_max": high,
                             "line_min": low, "line_max": high}])
    results = pd.DataFrame({"alpha": [-1.0, 0.0, 1.0], "beta": [0.0, 0.0, 0.0],
                            "loss": [high, center, low]})
    return SimpleNamespace(summary_=summary, results_=results)


@pytest.mark.parametrize("center, high, verdict", [
    (0.1, 1.1, REPRODUCED), (0.6, 1.1, NOT_REPRODUCED), (0.13, 1.1, INCONCLUSIVE),
    (0.1, 0.1, INCONCLUSIVE),  # a flat surface
])
def test_error_surface_verdicts(center, high, verdict):
    assert _verdicts(F.error_surface_findings(_surface(center, high=high))) == [verdict]


# --------------------------------------------------------------------------- 1-3
def _random_labels(train, test, n_test=1000):
    return SimpleNamespace(summary_=pd.DataFrame([{
        "n_test": n_test, "n_epochs": 40, "train_accuracy": train, "test_accuracy": test,
        "chance_accuracy": 0.1}]))


@pytest.mark.parametrize("train, test, n_test, verdict, reason", [
    (0.99, 0.11, 1000, REPRODUCED, "both thresholds"),
    (0.5, 0.11, 1000, NOT_REPRODUCED, "train accuracy < 0.9"),
    (0.99, 0.3, 1000, NOT_REPRODUCED, "test accuracy > chance"),
    (0.99, 0.11, 50, INCONCLUSIVE, "standard errors"),
])
def test_random_label_verdicts(train, test, n_test, verdict, reason):
    (finding,) = F.random_label_findings(_random_labels(train, test, n_test))
    assert finding.verdict == verdict and reason in finding.reason


def test_a_diverged_random_label_run_is_inconclusive():
    study = SimpleNamespace(summary_=pd.DataFrame(columns=["train_accuracy"]))
    assert [f.verdict for f in F.random_label_findings(study)] == [INCONCLUSIVE]


def _param_count(n, direction=1):
    n_params = np.geomspace(100, 100000, n).astype(int)
    train = np.linspace(1.0, 0.1, n)[::direction]
    test = train + np.linspace(0.05, 0.5, n)[::direction]
    return SimpleNamespace(results_=pd.DataFrame({
        "n_params": n_params, "train_loss": train, "test_loss": test,
        "train_accuracy": 1 - train / 2, "test_accuracy": 1 - test / 2}))


@pytest.mark.parametrize("n, direction, verdict", [
    (8, 1, REPRODUCED), (8, -1, NOT_REPRODUCED), (4, 1, INCONCLUSIVE)])
def test_param_count_verdicts(n, direction, verdict):
    assert _verdicts(F.param_count_findings(_param_count(n, direction))) == [verdict] * 2


def _interpolation(barrier, acc_small, acc_large, batch_sizes=(64, 1024)):
    rows = [{"pair": pair, "split": split, "loss_1": 0.2, "loss_2": 0.4,
             "accuracy_1": acc_small, "accuracy_2": acc_large, "loss_barrier": barrier}
            for pair in ("batch_size", "lr") for split in ("train", "test")]
    return SimpleNamespace(summary_=pd.DataFrame(rows), batch_sizes=batch_sizes)


@pytest.mark.parametrize("barrier, acc_small, acc_large, verdicts", [
    (0.2, 0.97, 0.93, [REPRODUCED, REPRODUCED, REPRODUCED]),
    (0.0, 0.93, 0.97, [NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED]),
    (0.01, 0.965, 0.96, [INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE]),
    (np.nan, 0.97, 0.93, [INCONCLUSIVE, INCONCLUSIVE, REPRODUCED]),
])
def test_interpolation_verdicts(barrier, acc_small, acc_large, verdicts):
    found = F.interpolation_findings(_interpolation(barrier, acc_small, acc_large))
    assert _verdicts(found) == verdicts
    assert "batch size 64" in found[-1].claim


def test_interpolation_finds_the_small_batch_end_point_whatever_the_order():
    found = F.interpolation_findings(_interpolation(0.2, 0.93, 0.97, batch_sizes=(1024, 64)))
    assert found[-1].verdict == REPRODUCED and "batch size 64 0.97" in found[-1].evidence


def _sensitivity(n, direction=1, sharpness=None):
    gap = np.linspace(0.01, 0.3, n)
    return SimpleNamespace(summary_=pd.DataFrame({
        "batch_size": 16 * 4 ** np.arange(n), "loss_gap": gap, "accuracy_gap": gap / 3,
        "sensitivity": np.linspace(1, 5, n)[::direction],
        "sharpness": np.linspace(0.1, 2, n)[::direction] if sharpness is None else sharpness}))


@pytest.mark.parametrize("n, direction, verdict", [
    (6, 1, REPRODUCED), (6, -1, NOT_REPRODUCED), (4, 1, INCONCLUSIVE)])
def test_sensitivity_verdicts(n, direction, verdict):
    assert _verdicts(F.sensitivity_findings(_sensitivity(n, direction))) == [verdict] * 2


def test_sensitivity_without_sharpness_is_inconclusive():
    found = F.sensitivity_findings(_sensitivity(6, sharpness=np.full(6, np.nan)))
    assert found[1].verdict == INCONCLUSIVE and "only 0 points" in found[1].reason


# --------------------------------------------------------------------------- wiring
def test_a_findings_function_that_raises_gives_one_inconclusive_finding():
    (finding,) = F.safe_findings(F.minimal_ratio_findings, SimpleNamespace(), "1-2-x")
    assert finding.item == "1-2-x" and finding.verdict == INCONCLUSIVE
    assert "could not be computed" in finding.claim and "AttributeError" in finding.reason


def test_a_finding_has_one_of_three_verdicts():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Finding("1-x", "claim", "e", "r", "maybe", "1", "why")
    frame = F.findings_frame([Finding("1-x", "c", "e", "r", REPRODUCED, "1", "why")])
    assert frame.columns[:4].tolist() == ["item", "claim", "verdict", "evidence"]


def test_every_registered_item_has_a_findings_function():
    from hw1sk.experiments import EXPERIMENTS, select_experiments

    assert all(callable(EXPERIMENTS[i].findings) for i in select_experiments(None))
