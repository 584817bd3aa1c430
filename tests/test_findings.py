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
def _random_labels(train, test, n_test=1000, n_seeds=3, spread=0.005):
    """A summary_ as RandomLabelStudy builds it, over seeds jittered by ``spread``."""
    from hw1sk.studies._collect import aggregate_seeds

    jitter = spread * (np.arange(n_seeds) - (n_seeds - 1) / 2)
    finals = pd.DataFrame({"n_test": n_test, "n_epochs": 40, "chance_accuracy": 0.1,
                           "train_accuracy": train + jitter, "test_accuracy": test + jitter})
    return SimpleNamespace(summary_=aggregate_seeds(
        finals, ["n_test", "n_epochs", "chance_accuracy"], ["train_accuracy", "test_accuracy"]))


@pytest.mark.parametrize("train, test, n_test, verdict, reason", [
    (0.98, 0.11, 1000, REPRODUCED, "both thresholds"),
    (0.5, 0.11, 1000, NOT_REPRODUCED, "train accuracy < 0.9"),
    (0.98, 0.3, 1000, NOT_REPRODUCED, "test accuracy > chance"),
    (0.98, 0.11, 50, INCONCLUSIVE, "standard errors"),
])
def test_random_label_verdicts(train, test, n_test, verdict, reason):
    (finding,) = F.random_label_findings(_random_labels(train, test, n_test))
    assert finding.verdict == verdict and reason in finding.reason
    assert "3 seed(s)" in finding.claim and "[" in finding.claim  # the t-intervals


def test_random_label_verdicts_rest_on_three_seeds_and_separated_intervals():
    few = F.random_label_findings(_random_labels(0.98, 0.11, n_seeds=2))[0]
    assert few.verdict == INCONCLUSIVE and "at least 3" in few.reason
    # mean train accuracy 0.91 >= 0.9, but its interval reaches below: not decided
    wide = F.random_label_findings(_random_labels(0.91, 0.11, spread=0.05))[0]
    assert wide.verdict == INCONCLUSIVE and "overlaps its threshold" in wide.reason
    assert "contains chance" in F.random_label_findings(_random_labels(0.98, 0.1))[0].evidence


def test_a_diverged_random_label_run_is_inconclusive():
    study = SimpleNamespace(summary_=pd.DataFrame(columns=["train_accuracy"]))
    assert [f.verdict for f in F.random_label_findings(study)] == [INCONCLUSIVE]


def _param_count(n, direction=1, n_seeds=3, spread=0.01):
    """Per (model, seed) rows: the train loss falls and the gap grows (``direction`` 1)."""
    n_params = np.geomspace(100, 100000, n).astype(int)
    train = np.linspace(1.0, 0.1, n)[::direction]
    test = train + np.linspace(0.05, 0.5, n)[::direction]
    rows = [{"name": f"w={i}", "n_params": n_params[i], "seed": s,
             "train_loss": train[i] + spread * s, "test_loss": test[i] + 2 * spread * s}
            for i in range(n) for s in range(n_seeds)]
    res = pd.DataFrame(rows)
    return SimpleNamespace(results_=res.assign(train_accuracy=1 - res["train_loss"] / 2,
                                               test_accuracy=1 - res["test_loss"] / 2))


@pytest.mark.parametrize("n, direction, verdict", [
    (8, 1, REPRODUCED), (8, -1, NOT_REPRODUCED), (4, 1, INCONCLUSIVE)])
def test_param_count_verdicts(n, direction, verdict):
    found = F.param_count_findings(_param_count(n, direction))
    assert _verdicts(found)[:2] == [verdict] * 2  # the trends, on the means over seeds
    # the smallest vs the largest model: 95% intervals apart
    assert _verdicts(found)[2:] == [REPRODUCED if direction > 0 else NOT_REPRODUCED] * 2
    assert "rho per seed" in found[0].evidence and "over 3 seed(s)" in found[2].evidence


def _interpolation(barrier, acc_small, acc_large, batch_sizes=(64, 1024), n_seeds=3,
                   control="epochs", reached=None, noise=0.002):
    """Per-seed end-point rows; accuracies jittered by ``noise`` around the given values."""
    rows = [{"control": control, "pair": pair, "seed": s, "split": split, "loss_1": 0.2,
             "loss_2": 0.4, "accuracy_1": acc_small + noise * (s - 1),
             "accuracy_2": acc_large - noise * (s - 1) ** 2, "loss_barrier": barrier,
             "target_reached": reached}
            for pair in ("batch_size", "lr") for split in ("train", "test")
            for s in range(n_seeds)]
    return SimpleNamespace(seed_summary_=pd.DataFrame(rows), batch_sizes=batch_sizes)


@pytest.mark.parametrize("barrier, acc_small, acc_large, verdicts", [
    (0.2, 0.97, 0.93, [REPRODUCED, REPRODUCED, REPRODUCED]),
    (0.0, 0.93, 0.97, [NOT_REPRODUCED, NOT_REPRODUCED, NOT_REPRODUCED]),
    (0.01, 0.965, 0.96, [INCONCLUSIVE, INCONCLUSIVE, INCONCLUSIVE]),
    (np.nan, 0.97, 0.93, [INCONCLUSIVE, INCONCLUSIVE, REPRODUCED]),
])
def test_interpolation_verdicts(barrier, acc_small, acc_large, verdicts):
    found = F.interpolation_findings(_interpolation(barrier, acc_small, acc_large))
    assert _verdicts(found) == verdicts
    assert "batch size 64" in found[-1].claim and "t-interval" in found[-1].claim
    assert all(f.claim.startswith("At equal epochs:") for f in found)


def test_interpolation_finds_the_small_batch_end_point_whatever_the_order():
    found = F.interpolation_findings(_interpolation(0.2, 0.93, 0.97, batch_sizes=(1024, 64)))
    assert found[-1].verdict == REPRODUCED and "batch size 64 0.96" in found[-1].evidence


def test_interpolation_paired_test_needs_three_seeds_and_an_interval_off_zero():
    few = F.interpolation_findings(_interpolation(0.2, 0.97, 0.93, n_seeds=2))
    assert few[-1].verdict == INCONCLUSIVE and "at least 3" in few[-1].reason
    noisy = F.interpolation_findings(_interpolation(0.2, 0.97, 0.93, noise=0.2))
    assert noisy[-1].verdict == INCONCLUSIVE and "contains 0" in noisy[-1].reason


def test_interpolation_under_the_train_loss_control_flags_missed_targets():
    reached = F.interpolation_findings(_interpolation(0.2, 0.97, 0.93, control="train_loss",
                                                      reached=True))
    assert reached[-1].verdict == REPRODUCED
    assert reached[-1].claim.startswith("At equal train loss:")
    missed = F.interpolation_findings(_interpolation(0.2, 0.97, 0.93, control="train_loss",
                                                     reached=False))
    assert missed[-1].verdict == INCONCLUSIVE and "did not reach the target" in missed[-1].claim


def test_interpolation_reads_a_one_seed_summary():
    rows = [{"pair": pair, "split": split, "loss_1": 0.2, "loss_2": 0.4, "accuracy_1": 0.97,
             "accuracy_2": 0.93, "loss_barrier": 0.2}
            for pair in ("batch_size", "lr") for split in ("train", "test")]
    found = F.interpolation_findings(SimpleNamespace(summary_=pd.DataFrame(rows),
                                                     batch_sizes=(64, 1024)))
    assert _verdicts(found) == [REPRODUCED, REPRODUCED, INCONCLUSIVE]


def _sensitivity(n, direction=1, sharpness=None, n_seeds=3, controls=("epochs",),
                 reached=None, noise=0.01):
    """Per-seed rows: the gap rises with the batch size, sensitivity and sharpness rise
    (``direction`` 1) or fall (-1)."""
    rows = []
    for control in controls:
        for s in range(n_seeds):
            jitter = noise * (s - 1)
            gap = np.linspace(0.01, 0.3, n) + jitter
            rows += [{"control": control, "seed": s, "batch_size": 16 * 4 ** i,
                      "train_loss": 0.1, "test_loss": 0.1 + gap[i], "train_accuracy": 1.0,
                      "test_accuracy": 1.0 - gap[i] / 3,
                      "sensitivity": np.linspace(1, 5, n)[::direction][i] + jitter,
                      "sharpness": (np.linspace(0.1, 2, n)[::direction][i] + jitter
                                    if sharpness is None else sharpness[i]),
                      "target_reached": None if control == "epochs" else reached(i)
                      if callable(reached) else reached}
                     for i in range(n)]
    return SimpleNamespace(results_=pd.DataFrame(rows))


@pytest.mark.parametrize("n, direction, verdict", [
    (6, 1, REPRODUCED), (6, -1, NOT_REPRODUCED), (4, 1, INCONCLUSIVE)])
def test_sensitivity_verdicts(n, direction, verdict):
    found = F.sensitivity_findings(_sensitivity(n, direction))
    assert _verdicts(found)[:2] == [verdict] * 2
    # the paired comparisons need only two batch sizes: the sign decides (the gap rises)
    assert _verdicts(found)[2:] == [REPRODUCED if direction > 0 else NOT_REPRODUCED,
                                    REPRODUCED]
    assert "t-interval" in found[2].claim and "batch size" in found[2].claim


def test_sensitivity_paired_comparison_needs_three_seeds_and_an_interval_off_zero():
    few = F.sensitivity_findings(_sensitivity(6, n_seeds=2))
    assert [f.verdict for f in few[2:]] == [INCONCLUSIVE] * 2
    assert "at least 3" in few[2].reason
    sharp = np.array([1.0, 1.1, 0.9, 1.0, 1.2, 1.0])
    noisy = F.sensitivity_findings(_sensitivity(6, sharpness=sharp))
    assert noisy[2].verdict == INCONCLUSIVE and "contains 0" in noisy[2].reason


def test_sensitivity_without_sharpness_is_inconclusive():
    found = F.sensitivity_findings(_sensitivity(6, sharpness=np.full(6, np.nan)))
    assert found[1].verdict == INCONCLUSIVE and "only 0 points" in found[1].reason
    assert found[2].verdict == INCONCLUSIVE


def test_sensitivity_findings_per_control_name_the_control_and_flag_missed_targets():
    study = _sensitivity(6, controls=("epochs", "train_loss"), reached=lambda i: i < 5)
    found = F.sensitivity_findings(study)
    assert len(found) == 8
    assert all(f.claim.startswith("At equal epochs:") for f in found[:4])
    assert all(f.claim.startswith("At equal train loss:") for f in found[4:])
    assert _verdicts(found)[:4] == [REPRODUCED] * 4
    assert _verdicts(found)[4:] == [INCONCLUSIVE] * 4
    assert "3 of 18 models (batch sizes 16384) did not reach" in found[4].claim
    reached = F.sensitivity_findings(_sensitivity(6, controls=("train_loss",), reached=True))
    assert _verdicts(reached) == [REPRODUCED] * 4


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


# ----------------------------------------------- seeds with spread (1-3 param count, 1-2 spectrum)
def test_param_count_ends_need_three_seeds_and_intervals_apart():
    few = F.param_count_findings(_param_count(8, n_seeds=2))
    assert _verdicts(few)[:2] == [REPRODUCED] * 2  # the trend does not rest on the spread
    assert _verdicts(few)[2:] == [INCONCLUSIVE] * 2 and "at least 3" in few[2].reason
    wide = F.param_count_findings(_param_count(8, spread=1.0))
    assert wide[2].verdict == INCONCLUSIVE and "overlap" in wide[2].reason


def test_param_count_reads_one_row_per_model():
    one = _param_count(8, n_seeds=1).results_.drop(columns=["name", "seed"])
    found = F.param_count_findings(SimpleNamespace(results_=one))
    assert _verdicts(found) == [REPRODUCED, REPRODUCED, INCONCLUSIVE, INCONCLUSIVE]


def _spectrum(outliers, tops, n_classes=10):
    """Per (seed, checkpoint) rows: ``outliers[s]`` at the end, ``tops[s]`` at init, mid, end."""
    rows = [{"seed": s, "checkpoint": c, "epoch": e, "train_loss": 2.3 / (1 + e),
             "top_ritz_value": top[k], "bulk_edge": 0.1, "n_outliers": n if c == "end" else 2}
            for s, (n, top) in enumerate(zip(outliers, tops))
            for k, (c, e) in enumerate((("init", 0), ("mid", 1), ("end", 2)))]
    return SimpleNamespace(results_=pd.DataFrame(rows), n_classes_=n_classes,
                           diverged_=pd.DataFrame())


@pytest.mark.parametrize("outliers, tops, verdicts", [
    ([9, 8, 10], [(1, 4, 8), (1.2, 5, 9), (0.9, 4, 7)], [REPRODUCED, REPRODUCED]),
    ([20, 25, 30], [(8, 4, 1), (9, 5, 1.2), (7, 4, 0.9)], [NOT_REPRODUCED, NOT_REPRODUCED]),
    ([9, 20, 9], [(1, 1, 1.01), (1, 1, 0.99), (1, 1, 1.0)], [INCONCLUSIVE, INCONCLUSIVE]),
    ([9, 9], [(1, 4, 8), (1, 4, 8)], [INCONCLUSIVE, INCONCLUSIVE]),
])
def test_hessian_spectrum_verdicts_over_seeds(outliers, tops, verdicts):
    found = F.hessian_spectrum_findings(_spectrum(outliers, tops))
    assert _verdicts(found) == verdicts
    assert f"over {len(outliers)} seed(s)" in found[0].claim
    if len(outliers) < 3:
        assert all("at least 3" in f.reason for f in found)


def test_hessian_spectrum_rise_needs_an_interval_off_the_threshold():
    # the top eigenvalue rises on two seeds and falls on one: the interval reaches into ±5%
    found = F.hessian_spectrum_findings(_spectrum([9, 9, 9], [(1, 2, 3), (1, 2, 3), (3, 2, 1)]))
    assert found[1].verdict == INCONCLUSIVE and "reaches into" in found[1].reason
    assert "%" in found[1].claim and "[" in found[1].claim


def test_one_seed_paired_comparison_says_there_is_no_interval():
    found = F.sensitivity_findings(_sensitivity(6, n_seeds=1))
    assert found[2].verdict == INCONCLUSIVE
    assert "no interval from 1 seed(s)" in found[2].claim and "nan" not in found[2].claim
