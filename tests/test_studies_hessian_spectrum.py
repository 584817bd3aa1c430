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
    assert list(res.columns) == ["checkpoint", "epoch", "train_loss", "trace",
                                 "top_ritz_value", "bulk_edge", "n_outliers", "n_params"]
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


def _fake(n_outliers, tops, n_classes=10):
    res = pd.DataFrame({"checkpoint": ["init", "mid", "end"], "epoch": [0, 1, 2],
                        "train_loss": [2.3, 0.5, 0.3], "top_ritz_value": tops,
                        "bulk_edge": [0.1, 0.1, 0.1], "n_outliers": n_outliers})

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
    empty = _fake([0, 0, 0], [1.0, 1.0, 1.0])
    empty.results_ = empty.results_.iloc[:0]
    assert {f.verdict for f in hessian_spectrum_findings(empty)} == {INCONCLUSIVE}


def test_plot_spectral_density(fitted):
    from hw1sk.plotting.spectrum import plot_spectral_density

    fig = plot_spectral_density(fitted[1])
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) == 6
    import matplotlib.pyplot as plt

    plt.close("all")
