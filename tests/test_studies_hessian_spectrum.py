"""Tests for hw1sk.studies.hessian_spectrum, its figure and its findings."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from hw1sk.estimators import NeuralClassifier
from hw1sk.findings import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, hessian_spectrum_findings
from hw1sk.stochastic_curvature import SpectralDensity, exact_spectral_density
from hw1sk.studies.hessian_spectrum import HessianSpectrumStudy, count_outliers


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.RandomState(0)
    X = rng.randn(240, 10).astype("float32")
    y = rng.randint(0, 4, 240)
    X[np.arange(240), y] += 3
    est = NeuralClassifier(module="mlp", module__hidden=(8,), max_epochs=4, lr=1e-2,
                           batch_size=32)
    return est, HessianSpectrumStudy(est, n_hessian=100, n_probes=3, n_iter=20,
                                     backend="sequential").fit(X, y)


def test_results_one_row_per_checkpoint(fitted):
    _, study = fitted
    res = study.results_
    assert list(res.columns) == ["seed", "checkpoint", "epoch", "train_loss", "trace",
                                 "top_ritz_value", "bulk_edge", "n_outliers", "n_params"]
    assert res["seed"].nunique() == 1 and study.summary_["n_seeds"].tolist() == [1, 1, 1]
    assert res["checkpoint"].tolist() == ["init", "mid", "end"]
    assert res["epoch"].tolist() == [0, 2, 4]
    assert res["train_loss"].iloc[-1] < res["train_loss"].iloc[0]
    assert (res["n_params"] == 10 * 8 + 8 + 8 * 4 + 4).all()
    assert len(study.hessian_indices_) == 100 and study.n_classes_ == 4
    assert set(study.estimators_) == {"model"}


def test_densities_integrate_to_one(fitted):
    _, study = fitted
    assert set(study.densities_) == {"init", "mid", "end"}
    for d in study.densities_.values():
        assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-3)


def test_settings_record_the_given_estimator(fitted):
    est, study = fitted
    s = study.settings_
    assert s["module__hidden"] == "(8,)" and s["lr"] == 1e-2 and s["max_epochs"] == 4
    assert s["batch_size"] == 32 and s["optimizer"] == "Adam"
    assert s["checkpoints"] == "init (epoch 0), mid (epoch 2), end (epoch 4)"
    assert est.callbacks is None  # the template was never modified


def test_integer_checkpoints_and_errors():
    rng = np.random.RandomState(1)
    X = rng.randn(60, 4).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    est = NeuralClassifier(module="mlp", module__hidden=(3,), max_epochs=3)
    study = HessianSpectrumStudy(est, checkpoints=(1, 3), n_hessian=30, n_probes=1,
                                 n_iter=5, backend="sequential").fit(X, y)
    assert study.results_["checkpoint"].tolist() == ["epoch 1", "epoch 3"]
    with pytest.raises(ValueError, match="checkpoints must be among"):
        HessianSpectrumStudy(est, checkpoints=(5,), backend="sequential").fit(X, y)


def test_count_outliers_on_a_known_spectrum():
    lam = np.r_[np.linspace(0, 0.1, 991), np.arange(1.0, 10.0)]  # 9 outliers
    grid = np.linspace(-0.5, 10.5, 4000)
    nodes = np.r_[0.02, 0.08, np.arange(1.0, 10.0)][None]
    d = SpectralDensity(grid, exact_spectral_density(lam, grid, 0.05), nodes,
                        np.full(nodes.shape, 1 / nodes.size), 0.05)
    edge, n = count_outliers(d, 1000)
    assert 0.1 < edge < 1.0 and n == 9


def _fake(n_outliers, tops, n_classes=10, n_seeds=3):
    """The same per-checkpoint numbers for ``n_seeds`` seeds, the tops jittered by 1%."""
    res = pd.concat([pd.DataFrame({
        "seed": s, "checkpoint": ["init", "mid", "end"], "epoch": [0, 1, 2],
        "train_loss": [2.3, 0.5, 0.3], "top_ritz_value": np.multiply(tops, 1 + 0.01 * s),
        "bulk_edge": [0.1, 0.1, 0.1], "n_outliers": n_outliers}) for s in range(n_seeds)],
        ignore_index=True)

    class Fake:
        results_, n_classes_, diverged_ = res, n_classes, pd.DataFrame()
    return Fake()


def test_findings_flip_with_the_results():
    got = hessian_spectrum_findings(_fake([3, 8, 9], [1.0, 5.0, 8.0]))
    assert [f.verdict for f in got] == [REPRODUCED, REPRODUCED]
    got = hessian_spectrum_findings(_fake([3, 8, 20], [8.0, 5.0, 1.0]))
    assert [f.verdict for f in got] == [NOT_REPRODUCED, NOT_REPRODUCED]
    got = hessian_spectrum_findings(_fake([3, 8, 6], [1.0, 1.0, 1.02]))
    assert [f.verdict for f in got] == [NOT_REPRODUCED, INCONCLUSIVE]
    one = hessian_spectrum_findings(_fake([3, 8, 9], [1.0, 5.0, 8.0], n_seeds=1))
    assert [f.verdict for f in one] == [INCONCLUSIVE] * 2  # one seed: no spread to judge
    empty = _fake([0, 0, 0], [1.0, 1.0, 1.0])
    empty.results_ = empty.results_.iloc[:0]
    assert {f.verdict for f in hessian_spectrum_findings(empty)} == {INCONCLUSIVE}


@pytest.fixture(scope="module")
def two_seeds(fitted):
    est, one = fitted
    rng = np.random.RandomState(0)
    X = rng.randn(240, 10).astype("float32")
    y = rng.randint(0, 4, 240)
    X[np.arange(240), y] += 3
    return one, HessianSpectrumStudy(est, n_hessian=100, n_probes=3, n_iter=20, n_seeds=2,
                                     backend="sequential").fit(X, y)


def test_seeds_repeat_the_run_the_first_as_with_one_seed(two_seeds):
    one, two = two_seeds
    res = two.results_
    assert len(res) == 6 and res["seed"].nunique() == 2 and len(two.seed_densities_) == 2
    first = res[res["seed"] == one.results_["seed"].iloc[0]].reset_index(drop=True)
    pd.testing.assert_frame_equal(first, one.results_)  # the same seed, the same numbers
    np.testing.assert_array_equal(two.hessian_indices_, one.hessian_indices_)
    s = two.summary_
    assert s["n_seeds"].tolist() == [2, 2, 2] and "top_ritz_value_ci_low" in s.columns
    means = res.groupby("checkpoint", sort=False)["top_ritz_value"].mean()
    np.testing.assert_allclose(s["top_ritz_value"], means)
    assert two.settings_["n_seeds"] == 2


def test_plot_spectral_density_of_several_seeds(two_seeds):
    from hw1sk.plotting.spectrum import plot_spectral_density

    ax = plot_spectral_density(two_seeds[1]).axes[0]
    # per checkpoint: two faint seeds, their mean and the bulk edge
    assert len(ax.get_lines()) == 3 * 4 and "2 seeds" in ax.get_ylabel()
    import matplotlib.pyplot as plt

    plt.close("all")


def test_plot_spectral_density(fitted):
    from hw1sk.plotting.spectrum import plot_spectral_density

    fig = plot_spectral_density(fitted[1])
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) == 6
    import matplotlib.pyplot as plt

    plt.close("all")
