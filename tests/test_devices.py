"""The ``device`` paths, each run on every device this machine has, against the CPU.

Every test takes a ``device``: ``"cpu"`` always (so the tests themselves are
checked on every machine), and ``"cuda"`` where a GPU is there (skipped
otherwise).  Each one trains or measures on that device and compares with
the same computation on the CPU: parameters stay on the device, results come
back as CPU arrays, and the numbers agree to the rounding of the device's
kernels.  On a GPU machine, ``bash benchmarks/device_check.sh run`` runs them
with the functional optimizers' tests and a SeedEnsemble benchmark on cuda.
"""

import copy
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hw1sk import SeedEnsemble
from hw1sk.curvature import loss_hessian, top_hessian_eigenvalues
from hw1sk.estimators import NeuralClassifier, NeuralRegressor
from hw1sk.generalization import input_jacobian_norm, loss_input_gradient_norm
from hw1sk.models import MLP
from hw1sk.stochastic_curvature import hessian_trace
from hw1sk.studies.minimal_ratio import MinimalRatioStudy
from hw1sk.studies.optimization import OptimizationStudy

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine"))]


@pytest.fixture(autouse=True)
def one_thread_no_tf32():
    # CPU references on one thread; float32 products in full precision on the GPU too
    threads, tf32 = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32
    torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.set_num_threads(threads)
    torch.backends.cuda.matmul.allow_tf32 = tf32


@pytest.fixture(scope="module")
def wave():
    X = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    return X, np.sin(3 * X[:, 0]).astype(np.float32)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.RandomState(0)
    X = rng.randn(120, 4).astype(np.float32)
    return X, (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)


def on_device(module, device):
    return all(p.device.type == device for p in module.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_estimator_trains_on_the_device(device, wave, blobs):
    X, y = wave
    kwargs = dict(module__hidden=(16,), batch_size=-1, max_epochs=50, lr=1e-2, random_state=3)
    net = NeuralRegressor(device=device, **kwargs).fit(X, y)
    ref = NeuralRegressor(device="cpu", **kwargs).fit(X, y)
    assert on_device(net.module_, device)
    np.testing.assert_allclose(net.history_["train_loss"], ref.history_["train_loss"],
                               rtol=1e-4)
    pred = net.predict(X)
    assert isinstance(pred, np.ndarray)
    np.testing.assert_allclose(pred, ref.predict(X), rtol=1e-3, atol=1e-4)
    again = pickle.loads(pickle.dumps(net))  # a fitted net pickles with its device
    np.testing.assert_array_equal(again.predict(X), pred)
    # mini-batches: the same batches in the same order on every device
    Xc, yc = blobs
    kwargs = dict(module__hidden=(8,), batch_size=16, max_epochs=3, lr=1e-2, random_state=0)
    clf = NeuralClassifier(device=device, **kwargs).fit(Xc, yc)
    ref = NeuralClassifier(device="cpu", **kwargs).fit(Xc, yc)
    np.testing.assert_allclose(clf.history_["train_loss"], ref.history_["train_loss"],
                               rtol=1e-4)
    # a sample at a near-tie of two classes may go either way
    assert np.mean(clf.predict(Xc) == ref.predict(Xc)) >= 0.97
    assert clf.predict_proba(Xc).shape == (len(Xc), 3)


@pytest.mark.parametrize("device", DEVICES)
def test_seed_ensemble_trains_on_the_device(device, wave, blobs):
    X, y = wave
    est = NeuralRegressor(module__hidden=(16,), batch_size=-1, max_epochs=50, lr=1e-2,
                          device=device)
    ens = SeedEnsemble(est, seeds=[0, 1, 2]).fit(X, y)
    ref = SeedEnsemble(est.set_params(device="cpu"), seeds=[0, 1, 2]).fit(X, y)
    assert ens.vectorized_ and ens.pass_ == ref.pass_ == "batched"
    for fitted, cpu in zip(ens.estimators_, ref.estimators_):
        assert on_device(fitted.module_, device) and fitted.device == device
        np.testing.assert_allclose(fitted.history_["train_loss"], cpu.history_["train_loss"],
                                   rtol=1e-4)
        np.testing.assert_allclose(fitted.predict(X), cpu.predict(X), rtol=1e-3, atol=1e-4)
    # mini-batches, each seed its own order: as on the CPU
    Xc, yc = blobs
    est = NeuralClassifier(module__hidden=(8,), batch_size=16, max_epochs=3, lr=1e-2,
                           device=device)
    ens = SeedEnsemble(est, seeds=[4, 5]).fit(Xc, yc)
    ref = SeedEnsemble(est.set_params(device="cpu"), seeds=[4, 5]).fit(Xc, yc)
    for fitted, cpu in zip(ens.estimators_, ref.estimators_):
        np.testing.assert_allclose(fitted.history_["train_loss"], cpu.history_["train_loss"],
                                   rtol=1e-4)
        np.testing.assert_array_equal(fitted.history_["train_batch_count"],
                                      cpu.history_["train_batch_count"])


@pytest.mark.parametrize("device", DEVICES)
def test_a_study_trains_every_run_on_the_device(device, blobs):
    X, y = blobs
    kwargs = dict(hidden=(8,), n_runs=3, max_epochs=4, every=2, backend="sequential")
    study = OptimizationStudy(device=device, **kwargs).fit(X, y)
    ref = OptimizationStudy(device="cpu", **kwargs).fit(X, y)
    assert study.settings_["device"] == device
    assert all(on_device(est.module_, device) for est in study.estimators_.values())
    # the trajectories come back as CPU arrays, equal to the CPU study's to rounding
    for run, snapshots in study.trajectories_.items():
        assert isinstance(snapshots, np.ndarray)
        np.testing.assert_allclose(snapshots, ref.trajectories_[run], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(study.summary_["train_loss"], ref.summary_["train_loss"],
                               rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_minimal_ratio_study_on_the_device(device):
    kwargs = dict(n_runs=3, n_samples=60, hidden=(4,), train_epochs=60, backend="sequential")
    study = MinimalRatioStudy(device=device, **kwargs).fit()
    ref = MinimalRatioStudy(device="cpu", **kwargs).fit()
    res, cpu = study.results_, ref.results_
    assert len(res) == len(cpu) == 3
    np.testing.assert_allclose(res["train_loss"], cpu["train_loss"], rtol=1e-4)
    np.testing.assert_allclose(res["loss"], cpu["loss"], rtol=1e-3, atol=1e-7)
    # one eigenvalue more or less on either side of the zero tolerance at most
    n_params = int(res["n_params"].iloc[0])
    np.testing.assert_allclose(res["minimal_ratio"], cpu["minimal_ratio"],
                               atol=1 / n_params + 1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_curvature_and_sensitivity_of_a_module_on_the_device(device, blobs):
    X, y = blobs
    torch.manual_seed(0)
    cpu = MLP(4, (8,), 3, activation="tanh")
    module = copy.deepcopy(cpu).to(device)
    crit = nn.CrossEntropyLoss()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        H = loss_hessian(module, crit, X, y)
        H_cpu = loss_hessian(cpu, crit, X, y)
    torch.testing.assert_close(torch.as_tensor(H).cpu(), torch.as_tensor(H_cpu),
                               rtol=1e-9, atol=1e-12)
    trace, trace_cpu = (hessian_trace(m, crit, X, y, method="exact") for m in (module, cpu))
    np.testing.assert_allclose(trace.value, trace_cpu.value, rtol=1e-5)
    np.testing.assert_allclose(trace.value, np.trace(np.asarray(H_cpu)), rtol=1e-5)
    top, top_cpu = (top_hessian_eigenvalues(m, crit, X, y, k=1, max_iter=60, tol=1e-7,
                                            random_state=0, dtype=torch.float64)
                    for m in (module, cpu))
    np.testing.assert_allclose(np.asarray(top), np.asarray(top_cpu), rtol=1e-6)
    for measure in (lambda m: input_jacobian_norm(m, X),
                    lambda m: loss_input_gradient_norm(m, crit, X, y)):
        np.testing.assert_allclose(measure(module), measure(cpu), rtol=1e-5)
    assert on_device(module, device)  # the measures leave the module where it was
