"""Tests for hw1sk.callbacks: WeightTrace and GradNormTrace against independent computations."""

import math
import pickle

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback
from torch import nn

from hw1sk.callbacks import GradNormTrace, WeightTrace, global_grad_norm
from hw1sk.estimators import NeuralClassifier, NeuralRegressor
from hw1sk.models import MLP
from hw1sk.parameters import (
    assign_flat_parameters,
    flatten_parameters,
    functional_loss,
    layer_slices,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny nets: extra threads only add start-up and contention costs
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def curve():
    X = np.linspace(-1, 1, 40, dtype=np.float32)[:, None]
    return X, (X[:, 0] ** 2).astype(np.float32)


@pytest.fixture
def two_classes():
    rng = np.random.RandomState(1)
    X = rng.randn(50, 3).astype(np.float32)
    return X, (X[:, 0] - X[:, 1] > 0).astype(np.int64)


def regressor(**kwargs):
    params = dict(module__hidden=(5,), batch_size=-1, lr=1e-2, random_state=0)
    params.update(kwargs)
    return NeuralRegressor(**params)


def mse_at(module, flat, X, y):
    """Full-batch MSE of ``module`` with parameters ``flat`` (independent of the callbacks)."""
    probe = MLP(module.n_in, module.hidden, module.n_out)
    assign_flat_parameters(probe, torch.as_tensor(flat))
    with torch.no_grad():
        out = probe(torch.from_numpy(X))
    return float(((out - torch.from_numpy(y).reshape(-1, 1)) ** 2).mean())


# ---------------------------------------------------------------- WeightTrace
@pytest.mark.parametrize("include_initial, expected", [(True, [0, 3, 6, 9]), (False, [3, 6, 9])])
def test_snapshot_epochs_follow_every(curve, include_initial, expected):
    X, y = curve
    trace = WeightTrace(every=3, include_initial=include_initial)
    reg = regressor(max_epochs=10, callbacks=[trace]).fit(X, y)
    assert trace.epochs_ == expected
    assert trace.to_array().shape == (len(expected), 16)
    assert all(s.dtype == np.float32 for s in trace.snapshots_)
    assert trace.to_frame()["epoch"].tolist() == expected
    # epoch 9 is the last snapshot; epoch 10's parameters are the module's
    assert not np.array_equal(trace.snapshots_[-1], flatten_parameters(reg.module_).numpy())


def test_last_and_initial_snapshots_are_the_module_parameters(curve):
    X, y = curve
    trace = WeightTrace(every=2)
    reg = regressor(max_epochs=4, callbacks=[trace]).fit(X, y)
    np.testing.assert_array_equal(trace.snapshots_[-1], flatten_parameters(reg.module_).numpy())
    untrained = regressor(module__n_in=X.shape[1], module__n_out=1).initialize()  # no step
    np.testing.assert_array_equal(trace.snapshots_[0],
                                  flatten_parameters(untrained.module_).numpy())
    # snapshots are copies, not views of the live parameters
    assert not np.array_equal(trace.snapshots_[0], trace.snapshots_[-1])


def test_layers_select_and_slice(curve):
    X, y = curve
    full, part = WeightTrace(), WeightTrace(layers=["net.3"])
    reg = regressor(max_epochs=2, callbacks=[("full", full), ("part", part)]).fit(X, y)
    slices = layer_slices(reg.module_)
    assert list(full.layer_slices_) == ["net.1", "net.3"]
    assert full.to_array(layer="net.1").shape == (3, 10)
    np.testing.assert_array_equal(full.to_array("net.1"), full.to_array()[:, slices["net.1"]])
    assert part.layer_slices_ == {"net.3": slice(0, 6)}
    np.testing.assert_array_equal(part.to_array(), full.to_array("net.3"))
    with pytest.raises(ValueError, match="Unknown layer 'net.7'"):
        full.to_array("net.7")
    with pytest.raises(ValueError, match=r"Unknown layers \['net.9'\]"):
        regressor(max_epochs=1, callbacks=[WeightTrace(layers="net.9")]).fit(X, y)


def test_snapshot_loss_is_the_full_batch_loss_before_the_last_step(curve):
    X, y = curve
    trace = WeightTrace()
    reg = regressor(max_epochs=5, callbacks=[trace]).fit(X, y)
    frame = trace.to_frame()
    # initial snapshot: the first batch (all data) at the initial parameters
    assert frame["train_loss"][0] == pytest.approx(mse_at(reg.module_, trace.snapshots_[0], X, y),
                                                   rel=1e-5)
    # epoch e: the history's loss, evaluated at the parameters of epoch e - 1
    for k in range(1, 6):
        assert frame["train_loss"][k] == reg.history[k - 1]["train_loss"]
        assert frame["train_loss"][k] == pytest.approx(
            mse_at(reg.module_, trace.snapshots_[k - 1], X, y), rel=1e-5)
    assert frame["train_accuracy"].isna().all()  # regressor


def test_snapshot_accuracy_for_a_classifier(two_classes):
    X, y = two_classes
    trace = WeightTrace()
    clf = NeuralClassifier(module__hidden=(4,), batch_size=-1, lr=5e-2, max_epochs=4,
                           random_state=0, callbacks=[trace]).fit(X, y)
    probe = MLP(3, (4,), 2)
    for k in range(5):
        # snapshot k's accuracy was measured with the parameters of snapshot k - 1 (k = 0: itself)
        assign_flat_parameters(probe, torch.as_tensor(trace.snapshots_[max(k - 1, 0)]))
        with torch.no_grad():
            acc = (probe(torch.from_numpy(X)).argmax(1).numpy() == y).mean()
        assert trace.train_accuracy_[k] == pytest.approx(acc)
    assert trace.train_accuracy_[1:] == clf.history_["train_acc"].tolist()


def test_snapshots_are_copies_and_follow_replaced_parameters(curve):
    from skorch.callbacks import Callback as SkorchCallback

    class Surgery(SkorchCallback):  # gives a parameter new storage, and a new dtype later
        def on_epoch_end(self, net, **kwargs):
            first = next(net.module_.parameters())
            epoch = net.history[-1]["epoch"]
            if epoch == 2:
                first.data = first.data.clone() + 1.0
            elif epoch == 4:
                net.module_.double()

    class Reference(SkorchCallback):  # flatten_parameters after every epoch
        def initialize(self):
            self.flat_ = []
            return self

        def on_epoch_end(self, net, **kwargs):
            self.flat_.append(flatten_parameters(net.module_).float().numpy())

    X, y = curve
    trace, reference = WeightTrace(), Reference()
    regressor(max_epochs=4, optimizer=torch.optim.SGD,
              callbacks=[Surgery(), trace, reference]).fit(X, y)
    assert len({s.ctypes.data for s in trace.snapshots_}) == 5  # each its own copy
    for mine, expected in zip(trace.snapshots_[1:], reference.flat_):
        assert mine.dtype == np.float32
        np.testing.assert_array_equal(mine, expected)


def test_weight_trace_requires_positive_every_and_records(curve):
    X, y = curve
    with pytest.raises(ValueError, match="every must be a positive integer"):
        regressor(max_epochs=1, callbacks=[WeightTrace(every=0)]).fit(X, y)
    with pytest.raises(NotFittedError, match="no snapshots"):
        WeightTrace().to_frame()


# --------------------------------------------------------------- GradNormTrace
def test_global_grad_norm_analytic():
    grads = [torch.tensor([3.0]), torch.tensor([[0.0, 4.0]]), torch.tensor(12.0)]
    assert float(global_grad_norm(grads)) == pytest.approx(13.0)
    assert float(global_grad_norm([])) == 0.0


def test_grad_norms_equal_the_gradient_at_the_recorded_parameters(curve):
    X, y = curve
    weights, grads = WeightTrace(), GradNormTrace()
    reg = regressor(max_epochs=6, callbacks=[weights, grads]).fit(X, y)
    loss_fn, _ = functional_loss(reg.module_, nn.MSELoss(), torch.from_numpy(X),
                                 torch.from_numpy(y).reshape(-1, 1))
    for i in range(6):
        # full batch: iteration i's gradient is taken at snapshot i (the params after i steps)
        theta = torch.as_tensor(weights.snapshots_[i])
        expected = torch.linalg.vector_norm(torch.func.grad(loss_fn)(theta))
        assert grads.grad_norms_[i] == pytest.approx(float(expected), rel=1e-5)
        assert grads.losses_[i] == pytest.approx(float(loss_fn(theta)), rel=1e-6)
    assert grads.iterations_ == list(range(6)) and grads.epochs_ == [1, 2, 3, 4, 5, 6]


def test_grad_trace_aligns_with_minibatch_history(two_classes):
    X, y = two_classes
    grads = GradNormTrace()
    clf = NeuralClassifier(module__hidden=(4,), batch_size=16, max_epochs=3, random_state=0,
                           callbacks=[grads]).fit(X, y)
    batch_losses = [b["train_loss"] for row in clf.history for b in row["batches"]]
    assert grads.losses_ == batch_losses
    assert grads.epochs_ == [1] * 4 + [2] * 4 + [3] * 4
    assert grads.iterations_ == list(range(12))
    frame = grads.to_frame()
    assert frame.columns.tolist() == ["iteration", "epoch", "grad_norm", "loss"]
    assert (frame["grad_norm"] > 0).all()


def test_grad_trace_on_a_plain_skorch_net(two_classes):
    from skorch import NeuralNetClassifier

    from hw1sk.models import MLP

    X, y = two_classes
    grads = GradNormTrace()
    net = NeuralNetClassifier(MLP, module__n_in=X.shape[1], module__hidden=(4,), module__n_out=2,
                              criterion=torch.nn.CrossEntropyLoss, batch_size=16, max_epochs=2,
                              train_split=None, verbose=0, callbacks=[grads])
    net.fit(X.astype(np.float32), y.astype(np.int64))
    assert grads.losses_ == [b["train_loss"] for row in net.history for b in row["batches"]]
    assert grads.epochs_ == [1] * 4 + [2] * 4 and len(grads.grad_norms_) == 8


def test_one_record_per_step_with_lbfgs(curve):
    X, y = curve
    grads = GradNormTrace()
    regressor(optimizer=torch.optim.LBFGS, optimizer__max_iter=4, lr=0.5, max_epochs=3,
              callbacks=[grads]).fit(X, y)
    assert grads.iterations_ == [0, 1, 2] and len(grads.losses_) == 3


def test_records_continue_on_partial_fit_and_reset_on_fit(curve):
    X, y = curve
    grads, weights = GradNormTrace(), WeightTrace()
    reg = regressor(max_epochs=2, batch_size=20, callbacks=[grads, weights])
    reg.partial_fit(X, y)
    reg.partial_fit(X, y)
    assert grads.iterations_ == list(range(8)) and grads.epochs_ == [1, 1, 2, 2, 3, 3, 4, 4]
    assert weights.epochs_ == [0, 1, 2, 3, 4]
    reg.fit(X, y)
    assert grads.iterations_ == list(range(4)) and weights.epochs_ == [0, 1, 2]


def test_records_survive_pickling(curve):
    X, y = curve
    reg = regressor(max_epochs=3, callbacks=[("w", WeightTrace()), ("g", GradNormTrace())])
    reg.fit(X, y)
    loaded = pickle.loads(pickle.dumps(reg))
    old, new = dict(reg.callbacks_), dict(loaded.callbacks_)
    assert new["g"].to_frame().equals(old["g"].to_frame())
    assert new["w"].to_frame().equals(old["w"].to_frame())
    np.testing.assert_array_equal(new["w"].to_array(), old["w"].to_array())
    # a pickled trace in the middle of its records flushes them first
    trace = GradNormTrace().initialize()
    trace._pending_norms_.append(torch.tensor(2.0))
    trace._pending_losses_.append(torch.tensor(0.5))
    trace._pending_epochs_.append(1)
    copy = pickle.loads(pickle.dumps(trace))
    assert copy.grad_norms_ == [2.0] and copy.losses_ == [0.5] and copy.iterations_ == [0]
    with pytest.raises(NotFittedError, match="no records"):
        GradNormTrace().initialize().to_frame()


class DeviceStyleGradNormTrace(GradNormTrace):
    """Takes the accelerator path on CPU: tensors kept, moved to the host in blocks of 3."""

    _BLOCK = 3

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self._on_cpu_ = False


def test_device_path_records_the_same_norms_and_losses(two_classes):
    X, y = two_classes
    host, device = GradNormTrace(), DeviceStyleGradNormTrace()
    NeuralClassifier(module__hidden=(4,), batch_size=16, max_epochs=2, random_state=0,
                     callbacks=[("host", host), ("device", device)]).fit(X, y)
    assert device.iterations_ == host.iterations_ == list(range(8))
    assert device.epochs_ == host.epochs_
    np.testing.assert_allclose(device.grad_norms_, host.grad_norms_, rtol=1e-6)
    assert device.losses_ == host.losses_


# --------------------------------------------------------------------------- #
# CurvatureTrace
# --------------------------------------------------------------------------- #
from hw1sk.callbacks import CurvatureTrace  # noqa: E402
from hw1sk.curvature import loss_hessian, top_hessian_eigenvalues  # noqa: E402
from hw1sk.stochastic_curvature import hessian_trace  # noqa: E402
import copy  # noqa: E402


class _ModuleSnapshot(Callback):
    """Deep copies of the module at the end of every epoch (after CurvatureTrace)."""

    def initialize(self):
        self.modules_ = {}
        return self

    def on_epoch_end(self, net, **kwargs):
        self.modules_[net.history[-1]["epoch"]] = copy.deepcopy(net.module_)


@pytest.mark.parametrize("schedule, every, expected", [
    ("linear", 1, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    ("linear", 3, [3, 6, 9]),
    ("log", 1, [1, 2, 4, 8]),
    ("log", 2, [2, 4, 8]),
])
def test_curvature_trace_schedules(curve, schedule, every, expected):
    X, y = curve
    trace = CurvatureTrace(every=every, schedule=schedule, quantities=("top",), max_iter=3,
                           random_state=0)
    NeuralRegressor(module__hidden=(3,), max_epochs=9, batch_size=-1, callbacks=[trace],
                    random_state=0).fit(X, y)
    assert trace.epochs_ == expected
    frame = trace.to_frame()
    assert frame["epoch"].tolist() == expected
    assert frame["trace"].isna().all() and frame["top_eigenvalue"].notna().all()


def test_curvature_trace_equals_direct_calls_at_each_epoch(two_classes):
    X, y = two_classes
    trace = CurvatureTrace(every=2, n_samples=30, n_matvecs=9, max_iter=10, random_state=3,
                           trace_method="hutch++")
    snap = _ModuleSnapshot()
    net = NeuralClassifier(module__hidden=(5,), max_epochs=6, batch_size=16,
                           callbacks=[trace, snap], random_state=0).fit(X, y)
    assert trace.epochs_ == [2, 4, 6]
    assert len(trace.indices_) == 30 and len(np.unique(trace.indices_)) == 30
    Xs, ys = X[trace.indices_], y[trace.indices_]
    crit = nn.CrossEntropyLoss()
    for i, epoch in enumerate(trace.epochs_):
        module, seed = snap.modules_[epoch], trace.seeds_[i]
        top = top_hessian_eigenvalues(module, crit, Xs, ys, k=1, max_iter=10,
                                      random_state=seed)[-1]
        est = hessian_trace(module, crit, Xs, ys, method="hutch++", n_matvecs=9,
                            random_state=seed)
        assert trace.top_[i] == pytest.approx(top, rel=1e-5)
        assert trace.trace_[i] == pytest.approx(est.value, rel=1e-5)
        assert trace.trace_std_error_[i] == pytest.approx(est.std_error, rel=1e-5)
    assert np.isfinite(trace.trace_std_error_).all()
    assert net.module_.training  # the mode is restored


def test_curvature_trace_does_not_change_training(two_classes):
    X, y = two_classes

    def fit(callbacks):
        torch.manual_seed(123)
        net = NeuralClassifier(module__hidden=(5,), max_epochs=5, batch_size=16,
                               callbacks=callbacks, random_state=0).fit(X, y)
        grads = [p.grad.clone() for p in net.module_.parameters()]
        return flatten_parameters(net.module_).detach().clone(), grads, torch.get_rng_state()

    plain, plain_grads, plain_rng = fit([])
    trace = CurvatureTrace(n_samples=20, n_matvecs=6, max_iter=4)
    traced, traced_grads, traced_rng = fit([trace])
    assert trace.epochs_ == [1, 2, 3, 4, 5]
    assert torch.equal(plain, traced)
    assert all(torch.equal(a, b) for a, b in zip(plain_grads, traced_grads))
    assert torch.equal(plain_rng, traced_rng)  # torch's global generator untouched


def test_curvature_trace_uses_given_data_and_rejects_bad_params(curve):
    X, y = curve
    Xg, yg = X[:10] * 2, y[:10]
    trace = CurvatureTrace(X=Xg, y=yg, n_samples=100, quantities="top", max_iter=3,
                           random_state=0)
    NeuralRegressor(module__hidden=(3,), max_epochs=2, batch_size=-1, callbacks=[trace],
                    random_state=0).fit(X, y)
    np.testing.assert_array_equal(trace.indices_, np.arange(10))
    np.testing.assert_array_equal(trace._subset_[0], Xg)
    for bad in [dict(every=0), dict(schedule="cubic"), dict(quantities=("top", "x")),
                dict(X=X)]:
        with pytest.raises(ValueError):
            NeuralRegressor(module__hidden=(3,), max_epochs=1, callbacks=[CurvatureTrace(**bad)],
                            random_state=0).fit(X, y)
    with pytest.raises(NotFittedError):
        CurvatureTrace().to_frame()


class _NormedNet(nn.Module):
    """Linear - BatchNorm1d - tanh - Linear: a net whose curvature depends on bn_mode."""

    def __init__(self, n_in=3, n_out=2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, 6), nn.BatchNorm1d(6), nn.Tanh(),
                                 nn.Linear(6, n_out))

    def forward(self, X):
        return self.net(X)


def test_curvature_trace_bn_mode_and_timings(two_classes):
    X, y = two_classes
    records = {}
    for mode in ("eval", "train-batch"):
        trace = CurvatureTrace(every=3, n_samples=40, max_iter=8, trace_method="exact",
                               random_state=0, bn_mode=mode)
        snap = _ModuleSnapshot()
        net = NeuralClassifier(module=_NormedNet, max_epochs=3, batch_size=16,
                               callbacks=[trace, snap], random_state=0).fit(X, y)
        module = snap.modules_[3]
        Xs, ys = X[trace.indices_], y[trace.indices_]
        est = hessian_trace(module, nn.CrossEntropyLoss(), Xs, ys, method="exact",
                            bn_mode=mode)
        assert trace.trace_[0] == pytest.approx(est.value, rel=1e-5)
        assert trace.trace_std_error_ == [0.0]
        frame = trace.to_frame()
        assert list(frame.columns) == ["epoch", "top_eigenvalue", "trace", "trace_std_error",
                                       "seconds"]
        assert len(trace.seconds_) == 1 and 0 < frame["seconds"].iloc[0] < 60
        records[mode] = trace.trace_[0]
        # the running statistics are those training left: the callback changed nothing
        assert torch.equal(net.module_.net[1].running_mean, module.net[1].running_mean)
    assert records["eval"] != pytest.approx(records["train-batch"], rel=1e-3)
    with pytest.raises(ValueError, match="bn_mode must be one of"):
        NeuralClassifier(module=_NormedNet, max_epochs=1,
                         callbacks=[CurvatureTrace(bn_mode="batch")], random_state=0).fit(X, y)


def test_curvature_trace_auto_is_the_exact_trace_of_a_small_mlp(two_classes):
    X, y = two_classes
    trace = CurvatureTrace(every=2, n_samples=30, max_iter=12, random_state=4)
    snap = _ModuleSnapshot()
    NeuralClassifier(module__hidden=(5,), max_epochs=4, batch_size=16,
                     callbacks=[trace, snap], random_state=0).fit(X, y)
    Xs, ys = X[trace.indices_], y[trace.indices_]
    for i, epoch in enumerate(trace.epochs_):
        module = copy.deepcopy(snap.modules_[epoch]).double()
        H = loss_hessian(module, nn.CrossEntropyLoss(), torch.from_numpy(Xs).double(),
                         torch.from_numpy(ys))
        assert trace.trace_[i] == pytest.approx(float(torch.trace(H)), rel=1e-5)
        assert trace.trace_std_error_[i] == 0.0


def test_curvature_trace_auto_is_exact_on_large_mlps(two_classes):
    """A chain of Linear layers and activations: the closed-form trace, whatever its size."""
    X, y = two_classes
    from hw1sk.stochastic_curvature import hessian_top_eigenvalue_and_trace

    trace = CurvatureTrace(every=2, n_samples=30, max_iter=12, random_state=4)
    snap = _ModuleSnapshot()
    NeuralClassifier(module__hidden=(50, 40), max_epochs=4, batch_size=16,
                     callbacks=[trace, snap], random_state=0).fit(X, y)
    assert sum(p.numel() for p in snap.modules_[2].parameters()) > 2000
    Xs, ys = X[trace.indices_], y[trace.indices_]
    crit = nn.CrossEntropyLoss()
    for i, epoch in enumerate(trace.epochs_):
        module = snap.modules_[epoch]
        exact = hessian_trace(module, crit, Xs, ys, method="exact")
        H = loss_hessian(copy.deepcopy(module).double(), crit, torch.from_numpy(Xs).double(),
                         torch.from_numpy(ys))
        assert trace.trace_[i] == pytest.approx(exact.value, rel=1e-6)
        assert trace.trace_[i] == pytest.approx(float(torch.trace(H)), rel=1e-4)
        assert trace.trace_std_error_[i] == 0.0
        # the top eigenvalue: the Lanczos run the shared estimate would have made
        top, est = hessian_top_eigenvalue_and_trace(module, crit, Xs, ys, n_iter=12,
                                                    n_probes=10, random_state=trace.seeds_[i])
        assert est.method == "krylov" and est.std_error > 0
        assert trace.top_[i] == pytest.approx(top, rel=1e-5)
        assert trace.top_[i] <= float(torch.linalg.eigvalsh(H)[-1]) * (1 + 1e-4)


class _WideNormedNet(nn.Module):
    """Linear - BatchNorm1d - tanh - Linear - tanh - Linear, 2,422 parameters: not a chain."""

    def __init__(self, n_in=3, n_out=2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, 50), nn.BatchNorm1d(50), nn.Tanh(),
                                 nn.Linear(50, 40), nn.Tanh(), nn.Linear(40, n_out))

    def forward(self, X):
        return self.net(X)


def test_curvature_trace_shares_one_lanczos_run_on_large_non_chain_nets(two_classes):
    X, y = two_classes
    from hw1sk.stochastic_curvature import hessian_top_eigenvalue_and_trace

    trace = CurvatureTrace(every=2, n_samples=30, max_iter=12, random_state=4)
    snap = _ModuleSnapshot()
    NeuralClassifier(module=_WideNormedNet, max_epochs=4, batch_size=16,
                     callbacks=[trace, snap], random_state=0).fit(X, y)
    assert sum(p.numel() for p in snap.modules_[2].parameters()) > 2000
    Xs, ys = X[trace.indices_], y[trace.indices_]
    for i, epoch in enumerate(trace.epochs_):
        top, est = hessian_top_eigenvalue_and_trace(snap.modules_[epoch], nn.CrossEntropyLoss(),
                                                    Xs, ys, n_iter=12, n_probes=10,
                                                    random_state=trace.seeds_[i], method="auto")
        assert est.method == "krylov"  # BatchNorm: no closed form, the shared estimate
        assert trace.top_[i] == pytest.approx(top, rel=1e-5)
        assert trace.trace_[i] == pytest.approx(est.value, rel=1e-5)
        assert trace.trace_std_error_[i] == pytest.approx(est.std_error, rel=1e-5)
        assert 0 < est.std_error < np.inf


class _Float64GradNorms(Callback):
    """Every gradient norm, computed independently in float64."""

    def initialize(self):
        self.norms_ = []
        return self

    def on_grad_computed(self, net, named_parameters, training=False, **kwargs):
        self.norms_.append(math.sqrt(sum(float((p.grad.double() ** 2).sum())
                                         for _, p in named_parameters if p.grad is not None)))


def test_minibatch_grad_norms_match_a_float64_computation_with_validation(two_classes):
    from skorch.dataset import ValidSplit

    X, y = two_classes
    grads, reference = GradNormTrace(), _Float64GradNorms()
    clf = NeuralClassifier(module__hidden=(8,), batch_size=16, max_epochs=3, random_state=0,
                           train_split=ValidSplit(4), callbacks=[grads, reference]).fit(X, y)
    n_steps = sum(row["train_batch_count"] for row in clf.history)
    # one record per training step; validation batches (no gradient) record nothing
    assert len(grads.grad_norms_) == len(reference.norms_) == n_steps
    np.testing.assert_allclose(grads.grad_norms_, reference.norms_, rtol=1e-6)
    assert grads.losses_ == [b["train_loss"] for row in clf.history for b in row["batches"]
                             if "train_loss" in b]
