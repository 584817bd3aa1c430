"""Tests of hw1sk.transformers: TrajectoryPCA and ParameterInterpolator."""

import copy

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from torch import nn

from hw1sk.callbacks import WeightTrace
from hw1sk.estimators import NeuralClassifier, NeuralRegressor
from hw1sk.evaluation import evaluate_estimator
from hw1sk.parameters import assign_flat_parameters, flatten_parameters
from hw1sk.transformers import ParameterInterpolator, TrajectoryPCA, _reset_batchnorm


# --------------------------------------------------------------------------- data and nets
@pytest.fixture(scope="module")
def blobs():
    """Three linearly separable-ish classes in 5-D: 90 train, 30 test samples."""
    rng = np.random.RandomState(0)
    X = rng.randn(120, 5).astype(np.float32)
    y = (X @ rng.randn(5, 3)).argmax(1).astype(np.int64)
    return X[:90], y[:90], X[90:], y[90:]


def _classifier(**params):
    kwargs = dict(max_epochs=3, random_state=0)
    if "module" not in params:
        kwargs["module__hidden"] = (6,)
    kwargs.update(params)
    return NeuralClassifier(**kwargs)


@pytest.fixture(scope="module")
def pair(blobs):
    X, y, _, _ = blobs
    return (_classifier(batch_size=8).fit(X, y),
            _classifier(batch_size=90, lr=1e-2, random_state=1).fit(X, y))


class BNNet(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear."""

    def __init__(self, n_in=5, n_out=3, width=7):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, width), nn.BatchNorm1d(width), nn.ReLU(),
                                 nn.Linear(width, n_out))

    def forward(self, X):
        return self.net(X)


@pytest.fixture(scope="module")
def bn_pair(blobs):
    X, y, _, _ = blobs
    return (_classifier(module=BNNet, batch_size=16).fit(X, y),
            _classifier(module=BNNet, batch_size=32, random_state=3).fit(X, y))


def _state(est):
    return {k: v.clone() for k, v in est.module_.state_dict().items()}


# --------------------------------------------------------------------------- TrajectoryPCA
def test_trajectory_pca_equals_pca_on_stacked_snapshots():
    rng = np.random.RandomState(0)
    runs = [rng.randn(n, 12).cumsum(0) for n in (5, 7, 4)]
    tpca = TrajectoryPCA(n_components=3).fit(runs)
    reference = PCA(n_components=3, svd_solver="full").fit(np.vstack(runs))
    np.testing.assert_allclose(tpca.components_, reference.components_, atol=1e-10)
    np.testing.assert_allclose(tpca.explained_variance_ratio_,
                               reference.explained_variance_ratio_, rtol=1e-10)
    coords = tpca.transform(runs)
    assert [c.shape for c in coords] == [(5, 3), (7, 3), (4, 3)]
    for c, r in zip(coords, runs):
        np.testing.assert_allclose(c, reference.transform(r), atol=1e-10)
    assert tpca.n_trajectories_ == 3 and tpca.trajectory_lengths_ == [5, 7, 4]
    # one 2-D array in, one array out
    np.testing.assert_allclose(tpca.transform(runs[1]), coords[1], atol=1e-12)


def test_trajectory_pca_reads_weight_traces(blobs):
    X, y, _, _ = blobs
    nets = [_classifier(batch_size=30, random_state=s, callbacks=[("trace", WeightTrace())])
            .fit(X, y) for s in (0, 1)]
    traces = [dict(net.callbacks_)["trace"] for net in nets]
    snapshots = [t.to_array() for t in traces]
    assert [s.shape for s in snapshots] == [(4, 57)] * 2  # initial + 3 epochs; 5*6+6+6*3+3 = 57
    # a WeightTrace itself is accepted too
    np.testing.assert_allclose(TrajectoryPCA().fit_transform(traces)[1],
                               TrajectoryPCA().fit_transform(snapshots)[1], atol=1e-6)
    coords = TrajectoryPCA().fit_transform(nets)
    reference = PCA(n_components=2, svd_solver="full").fit(np.vstack(snapshots))
    for c, s in zip(coords, snapshots):
        np.testing.assert_allclose(c, reference.transform(s), rtol=1e-4, atol=1e-5)
    # the first snapshot of each run is its initial weights: different seeds, different starts
    assert not np.allclose(snapshots[0][0], snapshots[1][0])


def test_trajectory_pca_errors():
    rng = np.random.RandomState(0)
    with pytest.raises(NotFittedError):
        TrajectoryPCA().transform([rng.randn(3, 4)])
    with pytest.raises(ValueError, match="same number of parameters"):
        TrajectoryPCA().fit([rng.randn(3, 4), rng.randn(3, 5)])
    with pytest.raises(ValueError, match="n_components"):
        TrajectoryPCA(n_components=5).fit([rng.randn(3, 4)])
    with pytest.raises(ValueError, match="NaN"):
        TrajectoryPCA().fit([np.full((3, 4), np.nan)])
    with pytest.raises(ValueError, match="non-empty list"):
        TrajectoryPCA().fit([])
    fitted = TrajectoryPCA().fit([rng.randn(4, 6)])
    with pytest.raises(ValueError, match="fitted on 6"):
        fitted.transform([rng.randn(4, 5)])


# --------------------------------------------------------------------------- interpolation
def test_end_points_reproduce_each_model_exactly(pair, blobs):
    X, y, X_test, y_test = blobs
    est1, est2 = pair
    interp = ParameterInterpolator(est1, est2).fit()
    frame = interp.evaluate(X, y, X_test, y_test).set_index(["alpha", "split"])
    assert len(frame) == 31 * 2
    for alpha, est in ((0.0, est1), (1.0, est2)):
        for split, Xs, ys in (("train", X, y), ("test", X_test, y_test)):
            own = evaluate_estimator(est, Xs, ys)
            assert frame.loc[(alpha, split), "loss"] == own["loss"]
            assert frame.loc[(alpha, split), "accuracy"] == own["accuracy"]


def test_path_is_linear_and_interior_points_match_an_independent_forward(pair, blobs):
    X, y, _, _ = blobs
    est1, est2 = pair
    before = (_state(est1), _state(est2))
    interp = ParameterInterpolator(est1, est2, alphas=[-1.0, 0.25, 0.5, 2.0]).fit()
    theta1 = flatten_parameters(est1.module_).double().numpy()
    theta2 = flatten_parameters(est2.module_).double().numpy()
    path = interp.path()
    np.testing.assert_allclose(path[2], (theta1 + theta2) / 2, rtol=1e-12)
    np.testing.assert_allclose(path[0], 2 * theta1 - theta2, rtol=1e-12)
    np.testing.assert_allclose(path[3], 2 * theta2 - theta1, rtol=1e-12)
    # equal steps in alpha are equal steps in parameter space
    np.testing.assert_allclose(np.diff(interp.path([0.0, 0.5, 1.0]), axis=0)[0],
                               (theta2 - theta1) / 2, rtol=1e-10, atol=1e-12)

    frame = interp.evaluate(X, y).set_index("alpha")
    for alpha in (-1.0, 0.25, 2.0):
        module = assign_flat_parameters(copy.deepcopy(est1.module_).eval(),
                                        (1 - alpha) * theta1 + alpha * theta2)
        with torch.no_grad():
            out = module(torch.from_numpy(X))
        loss = nn.functional.cross_entropy(out, torch.from_numpy(y)).item()
        accuracy = (out.argmax(1).numpy() == y).mean()
        assert frame.loc[alpha, "loss"] == pytest.approx(loss, rel=1e-5)
        assert frame.loc[alpha, "accuracy"] == pytest.approx(accuracy)
    # the two fitted estimators are left untouched
    for est, state in zip(pair, before):
        for k, v in est.module_.state_dict().items():
            assert torch.equal(v, state[k])


def test_interpolate_returns_a_copy_with_the_path_parameters(pair):
    est1, est2 = pair
    interp = ParameterInterpolator(est1, est2).fit()
    mid = interp.interpolate(0.3)
    np.testing.assert_allclose(flatten_parameters(mid.module_).double().numpy(),
                               interp.path([0.3])[0], rtol=1e-6)
    assert mid is not est1 and mid.module_ is not est1.module_
    assert torch.equal(flatten_parameters(interp.interpolate(1.0).module_),
                       flatten_parameters(est2.module_))


def test_regressor_end_points_exact():
    rng = np.random.RandomState(0)
    X = rng.randn(40, 2).astype(np.float32)
    y = (X[:, 0] * X[:, 1]).astype(np.float32)
    nets = [NeuralRegressor(module__hidden=(5,), max_epochs=3, batch_size=b,
                            random_state=0).fit(X, y) for b in (4, 40)]
    frame = ParameterInterpolator(*nets, alphas=[0.0, 0.5, 1.0]).fit().evaluate(X, y)
    assert frame["loss"].iloc[0] == evaluate_estimator(nets[0], X, y)["loss"]
    assert frame["loss"].iloc[2] == evaluate_estimator(nets[1], X, y)["loss"]
    assert frame["accuracy"].isna().all()


def test_mismatched_architectures_are_refused(pair, blobs):
    X, y, _, _ = blobs
    wider = _classifier(module__hidden=(7,)).fit(X, y)
    with pytest.raises(ValueError, match=r"different architectures \(parameter shapes differ"):
        ParameterInterpolator(pair[0], wider).fit()
    tanh = _classifier(module__activation="tanh").fit(X, y)
    with pytest.raises(ValueError, match=r"different architectures \(modules differ: net.2"):
        ParameterInterpolator(pair[0], tanh).fit()


def test_unfitted_estimators_and_interpolator(pair):
    with pytest.raises(NotFittedError):
        ParameterInterpolator(pair[0], _classifier()).fit()
    interp = ParameterInterpolator(*pair)
    for call in (interp.path, lambda: interp.interpolate(0.5),
                 lambda: interp.evaluate(np.zeros((2, 5)), np.zeros(2))):
        with pytest.raises(NotFittedError):
            call()


@pytest.mark.parametrize("alphas", [[], [[0.0, 1.0]], [0.0, np.nan], "abc"])
def test_bad_alphas(pair, alphas):
    with pytest.raises(ValueError, match="alphas must be a non-empty 1-D array"):
        ParameterInterpolator(*pair, alphas=alphas).fit()


def test_alphas_near_the_end_points_are_snapped(pair):
    grid = np.array([0.1 * 3 - 0.3, 0.1 * 10 + 1e-15])
    interp = ParameterInterpolator(*pair, alphas=grid).fit()
    assert interp.alphas_.tolist() == [0.0, 1.0]
    assert grid[1] != 1.0  # the caller's array is not modified


def test_evaluate_needs_both_test_arrays(pair, blobs):
    X, y, X_test, _ = blobs
    with pytest.raises(ValueError, match="both X_test and y_test"):
        ParameterInterpolator(*pair).fit().evaluate(X, y, X_test)


@pytest.mark.parametrize("names, classes", [
    ((3, 7, 9), None),
    (("three", "seven", "nine"), None),
    ((0, 1, 2), [2, 0, 1]),
], ids=["3-7-9", "strings", "declared-order"])
def test_labels_are_encoded_through_classes(blobs, names, classes):
    X, codes, X_test, codes_test = blobs
    y, y_test = np.asarray(names)[codes], np.asarray(names)[codes_test]
    nets = [_classifier(batch_size=b, classes=classes, random_state=b).fit(X, y)
            for b in (8, 90)]
    interp = ParameterInterpolator(*nets, alphas=[0.0, 0.5, 1.0]).fit()
    frame = interp.evaluate(X, y, X_test, y_test).set_index(["alpha", "split"])
    order = list(nets[0].classes_)
    for alpha, est in ((0.0, nets[0]), (0.5, interp.interpolate(0.5)), (1.0, nets[1])):
        for split, Xs, ys in (("train", X, y), ("test", X_test, y_test)):
            with torch.no_grad():
                logits = est.module_.eval()(torch.from_numpy(Xs)).double().numpy()
            index = np.array([order.index(label) for label in ys])
            log_proba = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            hand_loss = -log_proba[np.arange(len(ys)), index].mean()
            assert frame.loc[(alpha, split), "loss"] == pytest.approx(hand_loss, rel=1e-5)
            assert frame.loc[(alpha, split), "accuracy"] == pytest.approx(est.score(Xs, ys))
    bad = y.copy()
    bad[0] = "zero" if y.dtype.kind == "U" else 99
    with pytest.raises(ValueError, match=r"y contains labels \['?(zero|99)'?\] that are not in"):
        interp.evaluate(X, bad)


def test_classifiers_with_different_classes_are_refused(blobs):
    X, y, _, _ = blobs
    a = _classifier(classes=[0, 1, 2]).fit(X, y)
    b = _classifier(classes=[2, 1, 0]).fit(X, y)
    with pytest.raises(ValueError, match=r"different classes_ \(\[0, 1, 2\] vs \[2, 1, 0\]\)"):
        ParameterInterpolator(a, b).fit()


@pytest.mark.parametrize("split", ["train", "test"])
def test_evaluate_checks_inputs_as_predict_does(pair, blobs, split):
    X, y, X_test, y_test = blobs
    interp = ParameterInterpolator(*pair, alphas=[0.0, 0.5]).fit()
    name = "X" if split == "train" else "X_test"

    def evaluate(Xs):
        if split == "train":
            return interp.evaluate(Xs, y[:len(Xs)])
        return interp.evaluate(X, y, Xs, y_test[:len(Xs)])

    with pytest.raises(ValueError, match="X has 4 features, but NeuralClassifier is expecting "
                                         "5 features as input."):
        evaluate((X if split == "train" else X_test)[:, :4])
    bad = (X if split == "train" else X_test).copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=f"Input {name} contains NaN"):
        evaluate(bad)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        interp.evaluate(X, y[:-1])


# --------------------------------------------------------------------------- BatchNorm
def test_batchnorm_statistics_are_recomputed_at_interior_points(bn_pair, blobs):
    X, y, X_test, y_test = blobs
    est1, est2 = bn_pair
    interp = ParameterInterpolator(est1, est2, alphas=[0.0, 0.5, 1.0]).fit()
    mid = interp.interpolate(0.5, X)
    bn = mid.module_.net[1]
    with torch.no_grad():
        h = mid.module_.net[0](torch.from_numpy(X)).double()
    # one chunk (90 <= 1024 samples): exactly the mean and unbiased variance of the data
    torch.testing.assert_close(bn.running_mean.double(), h.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var.double(), h.var(0, unbiased=True),
                               rtol=1e-5, atol=1e-6)
    assert bn.momentum == est1.module_.net[1].momentum  # restored after the recompute

    frame = interp.evaluate(X, y, X_test, y_test).set_index(["alpha", "split"])
    reference = copy.deepcopy(mid.module_).eval()
    with torch.no_grad():
        out = reference(torch.from_numpy(X_test))
    expected = nn.functional.cross_entropy(out, torch.from_numpy(y_test)).item()
    assert frame.loc[(0.5, "test"), "loss"] == pytest.approx(expected, rel=1e-6)
    # the end points keep their own statistics and numbers, exactly
    for alpha, est in ((0.0, est1), (1.0, est2)):
        assert frame.loc[(alpha, "test"), "loss"] == evaluate_estimator(est, X_test, y_test)["loss"]


def test_batchnorm_recompute_off_keeps_the_first_models_statistics(bn_pair, blobs):
    X, _, _, _ = blobs
    interp = ParameterInterpolator(*bn_pair, recompute_batchnorm=False).fit()
    mid = interp.interpolate(0.5, X)
    own = bn_pair[0].module_.net[1]
    assert torch.equal(mid.module_.net[1].running_mean, own.running_mean)
    assert torch.equal(mid.module_.net[1].running_var, own.running_var)


def test_reset_batchnorm_matches_torch_update_bn_over_the_same_chunks(bn_pair, blobs):
    X, _, _, _ = blobs
    ours = copy.deepcopy(bn_pair[0].module_)
    theirs = copy.deepcopy(bn_pair[0].module_)
    _reset_batchnorm(ours, X, batch_size=20)  # 90 samples -> 5 chunks of 18
    chunks = torch.tensor_split(torch.from_numpy(X), 5)
    assert [len(c) for c in chunks] == [18] * 5
    torch.optim.swa_utils.update_bn(chunks, theirs)
    for k in ("net.1.running_mean", "net.1.running_var"):
        torch.testing.assert_close(ours.state_dict()[k], theirs.state_dict()[k])
    # training flags are restored
    flags = [m.training for m in bn_pair[0].module_.modules()]
    assert [m.training for m in ours.modules()] == flags
    # a single leftover sample would crash BatchNorm in train mode; near-equal chunks avoid it
    _reset_batchnorm(copy.deepcopy(bn_pair[0].module_), X[:21], batch_size=20)
