"""Tests of hw1sk.ensemble.SeedEnsemble: the vectorized pass gives what a loop of fits gives."""

from __future__ import annotations

import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

import hw1sk.ensemble as ensemble_module
from hw1sk.callbacks import GradNormTrace, WeightTrace
from hw1sk.ensemble import SeedEnsemble
from hw1sk.estimators import DivergenceWarning, NeuralClassifier, NeuralRegressor
from hw1sk.models import MLP
from hw1sk.seeding import spawn_seeds


# -------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def function_data():
    X = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    return X, np.sin(3 * X[:, 0]).astype(np.float32)


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.RandomState(0)
    X = rng.randn(90, 3).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


def loop_fits(est, seeds, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        return [clone(est).set_params(random_state=s).fit(X, y) for s in seeds]


def params_of(est):
    return torch.cat([p.detach().reshape(-1) for p in est.module_.parameters()])


# ------------------------------------------------------------ module factories
_NAN_INIT_SEED = spawn_seeds(1, 2)[0]  # the init seed of random_state=1


def nan_for_seed_1(n_in=1, n_out=1):
    """An MLP whose weights are NaN when built under random_state=1's init seed."""
    module = MLP(n_in=n_in, hidden=(8,), n_out=n_out)
    if torch.initial_seed() == _NAN_INIT_SEED:
        with torch.no_grad():
            next(m for m in module.modules() if isinstance(m, nn.Linear)).weight.fill_(math.nan)
    return module


def float64_mlp(n_in=1, n_out=1):
    return MLP(n_in=n_in, hidden=(16,), n_out=n_out, activation="tanh").double()


def float64_relu_mlp(n_in=1, n_out=1):
    """One ReLU layer of one input: the batched pass runs it from the ReLU's mask."""
    return MLP(n_in=n_in, hidden=(16,), n_out=n_out).double()


def float64_depth4_mlp(n_in=1, n_out=1):
    """The widths of ``mlp_for_budget(571, depth=4)`` (a one-input first layer)."""
    return MLP(n_in=n_in, hidden=(12, 13, 13, 13), n_out=n_out).double()


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: vmap refuses it."""

    def __init__(self, n_in=1, n_out=1):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)

    def forward(self, X):
        out = self.lin(X)
        return out if out.mean() > 0 else -out


def batchnorm_mlp(n_in=1, n_out=1):
    return nn.Sequential(nn.Linear(n_in, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, n_out))


# ------------------------------------------------------------ equality with loop
@pytest.mark.parametrize("optimizer,kwargs", [
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.SGD, {"lr": 5e-2, "optimizer__momentum": 0.9}),
])
def test_full_batch_float32_matches_loop(function_data, optimizer, kwargs):
    X, y = function_data
    est = NeuralRegressor(module__hidden=(16,), batch_size=-1, max_epochs=200,
                          optimizer=optimizer, callbacks=[("weights", WeightTrace(every=100))],
                          **kwargs)
    seeds = [0, 1, 2]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    assert ens.vectorized_ and ens.pass_ == "batched" and ens.diverged_seeds_ == []
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        mine, theirs = dict(fitted.callbacks_)["weights"], dict(ref.callbacks_)["weights"]
        # bit-identical initial weights, then the same trajectory up to rounding
        np.testing.assert_array_equal(mine.snapshots_[0], theirs.snapshots_[0])
        assert mine.epochs_ == theirs.epochs_ == [0, 100, 200]
        a, b = fitted.history_["train_loss"].to_numpy(), ref.history_["train_loss"].to_numpy()
        assert len(a) == len(b) == 200
        np.testing.assert_allclose(a, b, rtol=1e-4)
        assert b[-1] < 0.5 * b[0]  # it did train
        np.testing.assert_allclose(fitted.predict(X), ref.predict(X), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("optimizer,kwargs", [
    (torch.optim.Adam, {"lr": 1e-2}),
    (torch.optim.SGD, {"lr": 5e-2, "momentum": 0.9}),
])
@pytest.mark.parametrize("factory", [float64_mlp, float64_relu_mlp, float64_depth4_mlp])
def test_full_batch_float64_matches_torch_loop(function_data, optimizer, kwargs, factory):
    X, y = function_data
    est = NeuralRegressor(module=factory, batch_size=-1, max_epochs=200, optimizer=optimizer,
                          lr=kwargs["lr"],
                          **{f"optimizer__{k}": v for k, v in kwargs.items() if k != "lr"})
    seeds = [3, 4]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    X64 = torch.from_numpy(X.astype(np.float64))
    y64 = torch.from_numpy(y.astype(np.float64))[:, None]
    for seed, fitted in zip(seeds, ens.estimators_):
        # the loop a user would write, from the estimator's own initial weights
        net = clone(est).set_params(random_state=seed)
        net._validate_training_data(X, y, reset=True)
        net.initialize()
        module = net.module_
        opt = optimizer(module.parameters(), **kwargs)
        losses = []
        for _ in range(200):
            opt.zero_grad()
            loss = nn.functional.mse_loss(module(X64), y64)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        np.testing.assert_allclose(fitted.history_["train_loss"], losses, rtol=1e-9)
        assert next(fitted.module_.parameters()).dtype == torch.float64
        torch.testing.assert_close(params_of(fitted), params_of(net), rtol=1e-9, atol=1e-12)


def test_mini_batch_classifier_matches_loop(blobs):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(8,), batch_size=16, max_epochs=4, lr=1e-2)
    seeds = [0, 5, 9]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        a, b = fitted.history_, ref.history_
        assert list(a.columns) == list(b.columns)
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
        np.testing.assert_array_equal(a["train_acc"], b["train_acc"])
        np.testing.assert_array_equal(a["train_batch_count"], b["train_batch_count"])
        np.testing.assert_allclose(fitted.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    # the seeds saw different batches: their histories differ
    assert ens.estimators_[0].history_["train_loss"].iloc[-1] != \
        ens.estimators_[1].history_["train_loss"].iloc[-1]


# ------------------------------------------------------------ fitted estimators
@pytest.mark.parametrize("fused", [None, False])
def test_adam_runs_the_fused_kernel_unless_told_not_to(blobs, fused, monkeypatch):
    # the estimator's optimizer__fused reaches the functional Adam (and torch's, in
    # the loop); the kernel changes a step's values by an ulp at most, so the seeds
    # still agree with the loop at the tolerance of the other tests
    calls = []
    kernel = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_",
                        lambda *a, **k: calls.append(1) or kernel(*a, **k))
    X, y = blobs
    est = NeuralClassifier(module__hidden=(8,), batch_size=16, max_epochs=3, lr=1e-2,
                           optimizer__fused=fused)
    seeds = [0, 5]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    n_steps = 3 * math.ceil(len(X) / 16)
    assert len(calls) == (n_steps if fused is None else 0)
    calls.clear()
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        np.testing.assert_allclose(fitted.history_["train_loss"], ref.history_["train_loss"],
                                   rtol=1e-5)
        torch.testing.assert_close(params_of(fitted), params_of(ref), rtol=1e-5, atol=1e-6)
    assert calls == []  # torch's default Adam in the loop: not fused


def test_estimators_are_ordinary_fitted_estimators(blobs):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(8,), batch_size=32, max_epochs=3, lr=1e-2)
    ens = SeedEnsemble(est, n_seeds=3).fit(X, y)
    assert ens.seeds_ == [0, 1, 2] and len(ens.estimators_) == 3
    assert est.__dict__.get("module_") is None  # the template was not touched
    for seed, fitted in zip(ens.seeds_, ens.estimators_):
        assert isinstance(fitted, NeuralClassifier) and fitted.random_state == seed
        assert fitted.predict(X).shape == (90,)
        assert 0 <= fitted.score(X, y) <= 1
        restored = pickle.loads(pickle.dumps(fitted))
        np.testing.assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
        hist = fitted.history_
        assert list(hist["epoch"]) == [1, 2, 3]
        assert {"train_loss", "train_acc", "train_loss_best", "diverged"} <= set(hist.columns)
    frame = ens.history_
    assert list(frame.columns[:3]) == ["seed", "epoch", "train_loss"]
    assert frame.groupby("seed").size().to_dict() == {0: 3, 1: 3, 2: 3}
    # clone works: __init__ only stores
    assert clone(ens).get_params()["n_seeds"] == 3


def test_traces_are_recorded_per_seed(function_data):
    X, y = function_data
    est = NeuralRegressor(module__hidden=(6,), batch_size=16, max_epochs=6, lr=1e-2,
                          callbacks=[("w", WeightTrace(every=2)), ("g", GradNormTrace())])
    seeds = [2, 7]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        mine, theirs = dict(fitted.callbacks_)["w"], dict(ref.callbacks_)["w"]
        assert mine.epochs_ == theirs.epochs_ == [0, 2, 4, 6]
        np.testing.assert_allclose(mine.to_array(), theirs.to_array(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(mine.train_loss_, theirs.train_loss_, rtol=1e-5)
        assert mine.layer_slices_ == theirs.layer_slices_
        g_mine, g_theirs = dict(fitted.callbacks_)["g"], dict(ref.callbacks_)["g"]
        assert g_mine.iterations_ == g_theirs.iterations_ == list(range(24))
        assert g_mine.epochs_ == g_theirs.epochs_
        np.testing.assert_allclose(g_mine.grad_norms_, g_theirs.grad_norms_, rtol=1e-4)
        np.testing.assert_allclose(g_mine.losses_, g_theirs.losses_, rtol=1e-5)


# ------------------------------------------------------------ divergence
def test_a_diverged_seed_is_masked_while_the_others_go_on(function_data):
    X, y = function_data
    est = NeuralRegressor(module=nan_for_seed_1, batch_size=16, max_epochs=3, lr=1e-2)
    seeds = [0, 1, 2]
    with pytest.warns(DivergenceWarning, match="seed 1"):
        ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    assert ens.diverged_seeds_ == [1]
    refs = loop_fits(est, seeds, X, y)
    for fitted, ref in zip(ens.estimators_, refs):
        assert fitted.diverged_ == ref.diverged_
        assert fitted.divergence_reason_ == ref.divergence_reason_
        assert len(fitted.history_) == len(ref.history_)
        np.testing.assert_array_equal(fitted.history_["diverged"], ref.history_["diverged"])
    assert ens.estimators_[1].divergence_reason_.startswith("the training loss became nan")
    np.testing.assert_allclose(ens.estimators_[2].history_["train_loss"],
                               refs[2].history_["train_loss"], rtol=1e-5)


def test_divergence_factor_rule_matches_loop(function_data):
    X, y = function_data
    # a learning rate far too large: each seed blows up after its own number of steps
    est = NeuralRegressor(module__hidden=(8,), batch_size=16, max_epochs=5, lr=3.0,
                          optimizer=torch.optim.SGD, divergence_factor=50)
    seeds = [0, 1, 2, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)
        ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    refs = loop_fits(est, seeds, X, y)
    assert ens.diverged_seeds_ == [s for s, r in zip(seeds, refs) if r.diverged_]
    assert ens.diverged_seeds_  # the case is a real one
    for fitted, ref in zip(ens.estimators_, refs):
        assert len(fitted.history) == len(ref.history)
        assert [len(r["batches"]) for r in fitted.history] == \
            [len(r["batches"]) for r in ref.history]
        assert fitted.initial_loss_ == pytest.approx(ref.initial_loss_, rel=1e-6)


# ------------------------------------------------------------ chunking
def test_chunks_give_the_same_results_as_one_chunk(blobs, monkeypatch):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(8,), batch_size=32, max_epochs=3, lr=1e-2,
                           callbacks=[("w", WeightTrace())])
    one = SeedEnsemble(est, n_seeds=4).fit(X, y)
    assert one.chunk_size_ == 4
    chunked = SeedEnsemble(est, n_seeds=4, chunk_size=3).fit(X, y)
    assert chunked.chunk_size_ == 3
    monkeypatch.setattr(ensemble_module, "AUTO_CHUNK_BUDGET", 1)
    auto = SeedEnsemble(est, n_seeds=4).fit(X, y)
    assert auto.chunk_size_ == 1
    # up to rounding: MKL's batched products can round a seed's block differently
    # at a different offset in memory (another chunk size puts it elsewhere)
    for other in (chunked, auto):
        for a, b in zip(one.estimators_, other.estimators_):
            torch.testing.assert_close(params_of(a), params_of(b), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(a.history_["train_loss"], b.history_["train_loss"],
                                       rtol=1e-6)
            np.testing.assert_allclose(dict(a.callbacks_)["w"].to_array(),
                                       dict(b.callbacks_)["w"].to_array(), rtol=1e-5,
                                       atol=1e-6)


# ------------------------------------------------------------ fallback
def test_batchnorm_falls_back_to_the_loop_with_a_warning(function_data):
    X, y = function_data
    est = NeuralRegressor(module=batchnorm_mlp, batch_size=16, max_epochs=2)
    with pytest.warns(UserWarning, match="BatchNorm1d"):
        ens = SeedEnsemble(est, seeds=[0, 1]).fit(X, y)
    assert not ens.vectorized_ and "BatchNorm1d" in ens.fallback_reason_
    for fitted, ref in zip(ens.estimators_, loop_fits(est, [0, 1], X, y)):
        np.testing.assert_array_equal(fitted.predict(X), ref.predict(X))


def test_vectorize_false_loops_without_warning(function_data):
    X, y = function_data
    est = NeuralRegressor(module__hidden=(4,), batch_size=-1, max_epochs=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ens = SeedEnsemble(est, n_seeds=2, vectorize=False).fit(X, y)
    assert not ens.vectorized_ and ens.fallback_reason_ == "vectorize=False"
    assert len(ens.history_) == 6


def test_an_option_the_functional_optimizer_lacks_falls_back(function_data):
    X, y = function_data
    est = NeuralRegressor(module__hidden=(4,), batch_size=-1, max_epochs=2,
                          optimizer__amsgrad=True)
    with pytest.warns(UserWarning, match="functional optimizer"):
        ens = SeedEnsemble(est, n_seeds=2).fit(X, y)
    assert not ens.vectorized_


def test_a_module_vmap_rejects_falls_back(function_data):
    X, y = function_data

    est = NeuralRegressor(module=DataDependent, batch_size=-1, max_epochs=2)
    with pytest.warns(UserWarning, match="torch.func could not vectorize"):
        ens = SeedEnsemble(est, n_seeds=2).fit(X, y)
    assert not ens.vectorized_ and len(ens.estimators_) == 2


# ------------------------------------------------------------ parameters
def test_parameters_are_checked_in_fit(function_data):
    X, y = function_data
    est = NeuralRegressor(module__hidden=(4,), max_epochs=1)
    SeedEnsemble(est, chunk_size=0)  # __init__ only stores
    with pytest.raises(InvalidParameterError, match="chunk_size"):
        SeedEnsemble(est, chunk_size=0).fit(X, y)
    with pytest.raises(InvalidParameterError, match="estimator"):
        SeedEnsemble("not an estimator").fit(X, y)
    with pytest.raises(ValueError, match="distinct"):
        SeedEnsemble(est, seeds=[1, 1]).fit(X, y)
    with pytest.raises(ValueError, match="random_state must be in"):
        SeedEnsemble(est, seeds=[-1]).fit(X, y)
    assert len(SeedEnsemble(est).fit(X, y).estimators_) == 5


# ------------------------------------------------------------ the batched pass
def small_cnn(n_in=None, n_out=3, in_channels=1, image_size=8, **_):
    from hw1sk.models import CNN

    return CNN(in_channels=1, image_size=8, channels=(3,), n_out=n_out, global_pool=False)


class Residual(nn.Module):
    """A forward the batched pass does not know (a skip connection); vmap runs it."""

    def __init__(self, n_in=1, n_out=1):
        super().__init__()
        self.inner = nn.Linear(n_in, n_in)
        self.out = nn.Linear(n_in, n_out)

    def forward(self, X):
        return self.out(X + torch.tanh(self.inner(X)))


@pytest.mark.parametrize("factory", ["mlp", "cnn", "sequential"])
def test_batched_network_outputs_are_each_copys_outputs(factory):
    from hw1sk.batched_modules import BatchedNetwork

    torch.manual_seed(0)
    if factory == "mlp":
        copies = [MLP(3, (5, 4), 2, activation="sigmoid") for _ in range(3)]
        X = torch.randn(7, 3)
    elif factory == "cnn":
        copies = [small_cnn() for _ in range(3)]
        X = torch.randn(7, 1, 8, 8)
    else:
        copies = [nn.Sequential(nn.Linear(3, 6), nn.GELU(), nn.Linear(6, 6, bias=False),
                                nn.LeakyReLU(), nn.Linear(6, 2)) for _ in range(3)]
        X = torch.randn(7, 3)
    net = BatchedNetwork(copies[0])
    flat = net.stack_parameters(copies)
    shared = net.forward(flat, X, shared=True)
    idx = torch.stack([torch.randperm(7)[:5] for _ in copies])
    gathered = net.forward(flat, net.gather(X, idx), shared=False)
    with torch.no_grad():
        for s, module in enumerate(copies):
            torch.testing.assert_close(shared[s], module(X), rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(gathered[s], module(X[idx[s]]), rtol=1e-5, atol=1e-6)


def test_batched_network_names_what_it_does_not_run():
    from hw1sk.batched_modules import BatchedNetwork, UnsupportedModule

    with pytest.raises(UnsupportedModule, match="Residual"):
        BatchedNetwork(Residual())
    with pytest.raises(UnsupportedModule, match="BatchNorm1d"):
        BatchedNetwork(batchnorm_mlp())


def test_cnn_mini_batch_matches_loop():
    rng = np.random.RandomState(0)
    X = rng.rand(60, 1, 8, 8).astype(np.float32)
    y = rng.randint(0, 3, 60)
    est = NeuralClassifier(module=small_cnn, batch_size=16, max_epochs=3, lr=1e-2)
    seeds = [0, 4]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    assert ens.pass_ == "batched"
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        np.testing.assert_allclose(fitted.history_["train_loss"], ref.history_["train_loss"],
                                   rtol=1e-5)
        np.testing.assert_allclose(fitted.predict_proba(X), ref.predict_proba(X), atol=1e-5)


def assert_bitwise_the_loop(ens, est, seeds, X, y):
    """Each seed's history and weights are those of its own fit, bit for bit."""
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        for column in ("train_loss", "train_acc"):
            if column in ref.history_.columns:
                np.testing.assert_array_equal(fitted.history_[column], ref.history_[column])
        for p, q in zip(fitted.module_.parameters(), ref.module_.parameters()):
            assert torch.equal(p, q)


def test_loop_rounding_is_each_seeds_own_fit_bit_for_bit_full_batch():
    # the 571-parameter depth-4 function fit, where the batched pass's rounding grows
    # to ~1e-3 at epoch 200 on some seeds (benchmarks/bench_seed_ensemble.py)
    X = np.linspace(-1, 1, 1000, dtype=np.float32)[:, None]
    y = np.sinc(5 * X[:, 0]).astype(np.float32)
    est = NeuralRegressor(module="mlp_budget", module__n_params=571, module__depth=4,
                          batch_size=-1, max_epochs=200)
    seeds = [0, 5, 11]
    ens = SeedEnsemble(est, seeds=seeds, rounding="loop").fit(X, y)
    assert ens.vectorized_ and ens.pass_ == "per-seed"
    assert_bitwise_the_loop(ens, est, seeds, X, y)


@pytest.mark.parametrize("optimizer, kwargs", [
    (torch.optim.SGD, {"lr": 0.05, "optimizer__momentum": 0.9, "optimizer__nesterov": True}),
    (torch.optim.Adam, {"optimizer__weight_decay": 1e-3}),
    (torch.optim.RMSprop, {"lr": 1e-3}),
])
def test_loop_rounding_is_each_seeds_own_fit_bit_for_bit_mini_batches(blobs, optimizer,
                                                                         kwargs):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(16, 8), batch_size=16, max_epochs=8,
                           optimizer=optimizer, **kwargs)
    ens = SeedEnsemble(est, seeds=[0, 3, 7], rounding="loop", chunk_size=2).fit(X, y)
    assert ens.pass_ == "per-seed" and ens.chunk_size_ == 2
    assert_bitwise_the_loop(ens, est, [0, 3, 7], X, y)


def test_loop_rounding_runs_other_modules_through_functional_call():
    # a CNN (it reshapes its inputs first) is not run as a chain of layer calls
    rng = np.random.RandomState(0)
    X = rng.rand(48, 1, 8, 8).astype(np.float32)
    y = rng.randint(0, 3, 48)
    est = NeuralClassifier(module=small_cnn, batch_size=16, max_epochs=3, lr=1e-2)
    ens = SeedEnsemble(est, seeds=[0, 4], rounding="loop").fit(X, y)
    assert ens.pass_ == "per-seed" and ensemble_module._layer_chain(ens.estimators_[0].module_) is None
    assert_bitwise_the_loop(ens, est, [0, 4], X, y)


def test_loop_rounding_is_checked(function_data):
    X, y = function_data
    with pytest.raises(InvalidParameterError, match="rounding"):
        SeedEnsemble(NeuralRegressor(max_epochs=1), rounding="exact").fit(X, y)


def test_a_module_the_batched_pass_lacks_uses_vmap(function_data):
    X, y = function_data
    est = NeuralRegressor(module=Residual, batch_size=16, max_epochs=3, lr=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: vmap runs it
        ens = SeedEnsemble(est, seeds=[0, 1]).fit(X, y)
    assert ens.vectorized_ and ens.pass_ == "vmap"
    for fitted, ref in zip(ens.estimators_, loop_fits(est, [0, 1], X, y)):
        np.testing.assert_allclose(fitted.history_["train_loss"], ref.history_["train_loss"],
                                   rtol=1e-5)


def test_held_out_scores_are_recorded_as_the_loop_records_them(blobs):
    from hw1sk.evaluation import HeldOutScore

    X, y = blobs
    est = NeuralClassifier(module__hidden=(8,), batch_size=32, max_epochs=4, lr=1e-2,
                           callbacks=[("test", HeldOutScore(X[:40], y[:40], every=2))])
    seeds = [1, 2, 3]
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    assert ens.pass_ == "batched"
    for fitted, ref in zip(ens.estimators_, loop_fits(est, seeds, X, y)):
        a, b = fitted.history_, ref.history_
        assert list(a.columns) == list(b.columns)
        assert a["test_loss"].isna().tolist() == b["test_loss"].isna().tolist() == \
            [True, False, True, False]
        np.testing.assert_allclose(a["test_loss"].dropna(), b["test_loss"].dropna(), rtol=1e-5)
        np.testing.assert_allclose(a["test_acc"].dropna(), b["test_acc"].dropna())
        assert pickle.loads(pickle.dumps(fitted)).score(X, y) == fitted.score(X, y)


def test_held_out_scores_of_a_regressor(function_data, monkeypatch):
    from hw1sk.evaluation import HeldOutScore

    X, y = function_data
    est = NeuralRegressor(module__hidden=(8,), batch_size=-1, max_epochs=3, lr=1e-2,
                          callbacks=[("test", HeldOutScore(X[::2], y[::2], name="heldout"))])
    monkeypatch.setattr(ensemble_module, "AUTO_CHUNK_BUDGET", 2000)  # small eval batches
    ens = SeedEnsemble(est, seeds=[0, 1], chunk_size=2).fit(X, y)
    for fitted, ref in zip(ens.estimators_, loop_fits(est, [0, 1], X, y)):
        np.testing.assert_allclose(fitted.history_["heldout_loss"],
                                   ref.history_["heldout_loss"], rtol=1e-5)
        assert fitted.history_["heldout_acc"].isna().all()


def test_fit_seeds_gives_fitted_estimators_and_divergence_flags(function_data):
    from hw1sk.ensemble import fit_seeds

    X, y = function_data
    est = NeuralRegressor(module=nan_for_seed_1, batch_size=16, max_epochs=2, lr=1e-2)
    with pytest.warns(DivergenceWarning, match="seed 1"):
        fitted = fit_seeds(est, X, y, seeds=[2, 1, 0])
    assert [f.random_state for f in fitted] == [2, 1, 0]
    assert [f.diverged_ for f in fitted] == [False, True, False]
    assert "nan" in fitted[1].divergence_reason_
    assert fitted[0].divergence_reason_ is None and len(fitted[0].history_) == 2
    assert fitted[2].predict(X).shape == (64,)


def test_auto_chunks_are_of_equal_size(function_data, monkeypatch):
    X, y = function_data
    est = NeuralRegressor(module__hidden=(16,), module__activation="tanh", batch_size=-1,
                          max_epochs=2)
    # one step of one seed: 64 samples x (1 + 16 + 16 + 1) values x 4 bytes
    monkeypatch.setattr(ensemble_module, "AUTO_CHUNK_CACHE", 64 * 34 * 4 * 3)
    ens = SeedEnsemble(est, n_seeds=5).fit(X, y)
    assert ens.chunk_size_ == 3  # at most 3 per chunk: chunks of 3 and 2
    # the one-input ReLU network streams its mask: no cache bound, only the memory budget
    relu = SeedEnsemble(clone(est).set_params(module__activation="relu"), n_seeds=5).fit(X, y)
    assert relu.chunk_size_ == 5
    per_seed = 6 * 4 * (16 + 16 + 16 + 1) + 64 * 4 * (3 * 34 + 1)  # the budget's count
    monkeypatch.setattr(ensemble_module, "AUTO_CHUNK_BUDGET", 2 * per_seed)
    relu = SeedEnsemble(clone(est).set_params(module__activation="relu"), n_seeds=5).fit(X, y)
    assert relu.chunk_size_ == 2  # at most 2 per chunk: chunks of 2, 2 and 1
