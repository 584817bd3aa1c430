import copy
import functools

import numpy as np
import pytest
import torch
from torch import nn

from hw1sk.generalization import (
    SharpnessResult,
    input_jacobian_norm,
    loss_input_gradient_norm,
    sharpness,
)
from hw1sk.models import CNN, MLP, RowRNN


def _snapshot(module):
    return (copy.deepcopy(module.state_dict()), [m.training for m in module.modules()],
            [p.grad for p in module.parameters()])


def _assert_unchanged(module, snapshot):
    state, flags, grads = snapshot
    after = module.state_dict()
    assert state.keys() == after.keys()
    for k in state:
        assert torch.equal(state[k], after[k]), k
    assert [m.training for m in module.modules()] == flags
    assert all(g is None for g in grads) and all(p.grad is None for p in module.parameters())


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return MLP(6, (7, 5), 4, activation="tanh")


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(9, 6, generator=g), torch.randint(0, 4, (9,), generator=g)


def _reference_norms(module, X, output):
    """Per-sample Jacobian norms with torch.autograd.functional.jacobian, one sample at a time."""
    module = copy.deepcopy(module).eval()
    norms = []
    for x in X:
        def f(x_):
            out = module(x_.unsqueeze(0)).squeeze(0)
            return torch.softmax(out, -1) if output == "softmax" else out
        norms.append(torch.autograd.functional.jacobian(f, x).norm())
    return torch.stack(norms).numpy()


# --------------------------------------------------------------------------- #
# input_jacobian_norm
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["auto", "jacrev", "jacfwd", "batched"])
def test_linear_map_sensitivity_is_frobenius_norm_of_weight(method):
    torch.manual_seed(0)
    layer = nn.Linear(5, 3)
    X = torch.randn(7, 5)
    norms = input_jacobian_norm(layer, X, output="logits", reduction="none", method=method)
    np.testing.assert_allclose(norms, np.full(7, layer.weight.detach().norm().item()),
                               rtol=1e-6)


@pytest.mark.parametrize("output", ["softmax", "logits"])
@pytest.mark.parametrize("method", ["auto", "gram", "jacrev", "jacfwd", "batched"])
def test_matches_autograd_jacobian_per_sample(mlp, data, output, method):
    X, _ = data
    snap = _snapshot(mlp)
    norms = input_jacobian_norm(mlp, X, output=output, reduction="none", method=method)
    np.testing.assert_allclose(norms, _reference_norms(mlp, X, output), rtol=1e-5, atol=1e-7)
    assert norms.shape == (9,)
    mean = input_jacobian_norm(mlp, X, output=output, method=method)
    assert isinstance(mean, float) and mean == pytest.approx(norms.mean(), rel=1e-6)
    _assert_unchanged(mlp, snap)


def test_gram_on_images_and_linear_model():
    # MLP flattens images; hidden=() is a linear model (empty tail after the Linear)
    torch.manual_seed(0)
    X = torch.rand(4, 1, 4, 4)
    for net in (MLP(16, (3,), 5), MLP(16, (), 5)):
        got = input_jacobian_norm(net, X, reduction="none", method="gram")
        np.testing.assert_allclose(got, _reference_norms(net, X, "softmax"), rtol=1e-5)
    linear = MLP(16, (), 5)
    got = input_jacobian_norm(linear, X, output="logits", reduction="none", method="gram")
    np.testing.assert_allclose(got, linear.net[1].weight.detach().norm().item(), rtol=1e-5)


def test_cnn_matches_autograd():
    torch.manual_seed(0)
    net = CNN(in_channels=1, image_size=6, channels=(2,), n_out=3)
    X = torch.rand(3, 1, 6, 6)
    got = input_jacobian_norm(net, X, reduction="none")
    np.testing.assert_allclose(got, _reference_norms(net, X, "softmax"), rtol=1e-5, atol=1e-8)


class _OwnGRU(nn.Module):
    """A user's recurrent module: an ``nn.GRU`` (time-major) read over 3 steps, then a head."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(input_size=2, hidden_size=5)
        self.head = nn.Linear(5, 3)

    def forward(self, X):
        steps = X.reshape(X.shape[0], 3, 2).transpose(0, 1)  # (time, batch, features)
        out, _ = self.rnn(steps)
        return self.head(out[-1])


@pytest.mark.parametrize("module", ["rnn", "gru", "lstm", "own_gru"])
@pytest.mark.parametrize("output", ["softmax", "logits"])
def test_recurrent_modules_match_autograd(module, output):
    torch.manual_seed(0)
    net = _OwnGRU() if module == "own_gru" else RowRNN(row_size=2, n_rows=3, hidden_size=5,
                                                       n_out=3, cell=module)
    X = torch.randn(5, 6)
    snap = _snapshot(net)
    got = input_jacobian_norm(net, X, output=output, reduction="none", batch_size=2)
    np.testing.assert_allclose(got, _reference_norms(net, X, output), rtol=1e-5, atol=1e-7)
    assert input_jacobian_norm(net, X, output=output) == pytest.approx(got.mean(), rel=1e-6)
    _assert_unchanged(net, snap)


@pytest.mark.parametrize("method", ["jacrev", "jacfwd"])
def test_vmap_methods_are_refused_for_recurrent_modules(method):
    net = RowRNN(row_size=2, n_rows=3, hidden_size=4, n_out=3, cell="gru")
    with pytest.raises(ValueError, match="cannot batch the recurrent layers .*GRU.*'batched'"):
        input_jacobian_norm(net, torch.randn(2, 6), method=method)


def test_invariant_to_dataset_size_and_chunking(mlp, data):
    X, _ = data
    full = input_jacobian_norm(mlp, X, reduction="none", batch_size=None)
    for batch_size in (1, 2, 4, 100):
        np.testing.assert_allclose(
            input_jacobian_norm(mlp, X, reduction="none", batch_size=batch_size), full,
            rtol=1e-6)
    doubled = torch.cat([X, X])
    assert input_jacobian_norm(mlp, doubled, batch_size=5) == pytest.approx(full.mean(),
                                                                              rel=1e-6)


def test_batchnorm_train_mode_gives_eval_result():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    net.train()(torch.randn(32, 4))  # non-trivial running statistics
    X = torch.randn(5, 4)
    snap = _snapshot(net)
    in_train = input_jacobian_norm(net, X, reduction="none", batch_size=2)
    _assert_unchanged(net, snap)
    assert net.training
    np.testing.assert_allclose(in_train, _reference_norms(net, X, "softmax"), rtol=1e-5)


def test_numpy_input_float64_module_and_errors(mlp, data):
    X, _ = data
    from_numpy = input_jacobian_norm(mlp, X.numpy().astype(np.float64), reduction="none")
    np.testing.assert_allclose(from_numpy, input_jacobian_norm(mlp, X, reduction="none"))
    double = copy.deepcopy(mlp).double()
    np.testing.assert_allclose(input_jacobian_norm(double, X, reduction="none"),
                               from_numpy, rtol=1e-5)
    with pytest.raises(ValueError, match="output must be"):
        input_jacobian_norm(mlp, X, output="probabilities")
    with pytest.raises(ValueError, match="reduction must be"):
        input_jacobian_norm(mlp, X, reduction="sum")
    with pytest.raises(ValueError, match="batch_size"):
        input_jacobian_norm(mlp, X, batch_size=0)
    with pytest.raises(ValueError, match="Expected"):
        input_jacobian_norm(mlp, X[0])
    with pytest.raises(ValueError, match="single output"):
        input_jacobian_norm(nn.Linear(6, 1), X)
    with pytest.raises(ValueError, match="method='gram'"):
        input_jacobian_norm(nn.Linear(6, 2), X, method="gram")
    with pytest.raises(ValueError, match="n_samples, n_classes"):
        input_jacobian_norm(nn.Unflatten(1, (2, 3)), X)
    np.testing.assert_allclose(
        input_jacobian_norm(mlp, X, reduction="none", device="cpu"),
        input_jacobian_norm(mlp, X, reduction="none"))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        input_jacobian_norm(lambda x: x, X)


# --------------------------------------------------------------------------- #
# loss_input_gradient_norm
# --------------------------------------------------------------------------- #
def _reference_loss_gradients(module, criterion, X, y):
    module = copy.deepcopy(module).eval()
    norms = []
    for x, t in zip(X, y):
        x = x.clone().unsqueeze(0).requires_grad_(True)
        criterion(module(x), t.unsqueeze(0)).backward()
        norms.append(x.grad.norm())
    return torch.stack(norms).numpy()


@pytest.mark.parametrize("criterion_kind",
                         ["ce", "mse", "mse_sum", "plain_function", "opaque_callable"])
def test_loss_gradient_matches_per_sample_loop(mlp, data, criterion_kind):
    X, labels = data
    if criterion_kind == "ce":
        criterion, y = nn.CrossEntropyLoss(), labels
    elif criterion_kind == "plain_function":
        criterion, y = nn.functional.cross_entropy, labels
    elif criterion_kind == "opaque_callable":
        criterion, y = (lambda out, t: nn.functional.cross_entropy(out, t)), labels
    else:
        reduction = "sum" if criterion_kind == "mse_sum" else "mean"
        criterion, y = nn.MSELoss(reduction=reduction), torch.randn(9, 4)
    snap = _snapshot(mlp)
    got = loss_input_gradient_norm(mlp, criterion, X, y, batch_size=4, reduction="none")
    np.testing.assert_allclose(got, _reference_loss_gradients(mlp, criterion, X, y),
                               rtol=1e-5, atol=1e-8)
    assert loss_input_gradient_norm(mlp, criterion, X, y) == pytest.approx(got.mean(),
                                                                            rel=1e-6)
    _assert_unchanged(mlp, snap)


CLASS_WEIGHT = torch.tensor([0.5, 1.0, 2.0, 4.0])


def _weighted_reference(module, X, y, weight):
    """Per-sample norms of d(w[y_i] * CE_i)/dx_i by autograd, one sample at a time."""
    module = copy.deepcopy(module).eval()
    norms = []
    for x, t in zip(X, y):
        x = x.clone().unsqueeze(0).requires_grad_(True)
        log_proba = torch.log_softmax(module(x), dim=1)
        (-weight[t] * log_proba[0, t]).backward()
        norms.append(x.grad.norm())
    return torch.stack(norms).numpy()


@pytest.mark.parametrize("path", ["module_mean", "module_sum", "module_none", "function",
                                  "function_sum", "opaque_sum"])
def test_class_weighted_loss_gradient_is_that_of_the_weighted_per_sample_loss(mlp, data, path):
    X, y = data
    w = CLASS_WEIGHT
    criterion = {
        "module_mean": nn.CrossEntropyLoss(weight=w),
        "module_sum": nn.CrossEntropyLoss(weight=w, reduction="sum"),
        "module_none": nn.CrossEntropyLoss(weight=w, reduction="none"),
        "function": functools.partial(nn.functional.cross_entropy, weight=w),
        "function_sum": functools.partial(nn.functional.cross_entropy, weight=w,
                                          reduction="sum"),
        # a callable without a reduction: one-sample batches of a sum keep the weight
        "opaque_sum": lambda out, t: nn.functional.cross_entropy(out, t, weight=w,
                                                                 reduction="sum"),
    }[path]
    got = loss_input_gradient_norm(mlp, criterion, X, y, batch_size=4, reduction="none")
    np.testing.assert_allclose(got, _weighted_reference(mlp, X, y, w), rtol=1e-5, atol=1e-8)


def test_weighted_mean_loss_in_an_opaque_callable_is_refused(mlp, data):
    X, y = data

    def criterion(out, t):  # on one sample the weight cancels: the unweighted loss
        return nn.functional.cross_entropy(out, t, weight=CLASS_WEIGHT)

    with pytest.raises(ValueError, match="neither the mean nor the sum .*class-weighted"):
        loss_input_gradient_norm(mlp, criterion, X, y)


@pytest.mark.parametrize("criterion", [nn.CrossEntropyLoss(),
                                       lambda out, t: nn.functional.cross_entropy(out, t)],
                         ids=["module", "opaque_callable"])
def test_loss_gradient_on_a_recurrent_module(criterion):
    torch.manual_seed(0)
    net = RowRNN(row_size=2, n_rows=3, hidden_size=5, n_out=3, cell="gru")
    X, y = torch.randn(5, 6), torch.tensor([0, 2, 1, 1, 0])
    got = loss_input_gradient_norm(net, criterion, X, y, batch_size=2, reduction="none")
    np.testing.assert_allclose(got, _reference_loss_gradients(net, nn.CrossEntropyLoss(), X, y),
                               rtol=1e-5, atol=1e-8)


def test_loss_gradient_input_checks(mlp, data):
    X, y = data
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        loss_input_gradient_norm(mlp, nn.CrossEntropyLoss(), X, y[:-1])
    with pytest.raises(TypeError, match="criterion must be callable"):
        loss_input_gradient_norm(mlp, "ce", X, y)
    # numpy labels become int64
    np_result = loss_input_gradient_norm(mlp, nn.CrossEntropyLoss(), X.numpy(), y.numpy())
    assert np_result == pytest.approx(loss_input_gradient_norm(mlp, nn.CrossEntropyLoss(), X, y))


# --------------------------------------------------------------------------- #
# sharpness
# --------------------------------------------------------------------------- #
class Quadratic(nn.Module):
    """Output ``0.5 * theta^T diag(a) theta`` for every sample (loss = output mean)."""

    def __init__(self, a, theta):
        super().__init__()
        self.register_buffer("a", torch.as_tensor(a, dtype=torch.float64))
        self.theta = nn.Parameter(torch.as_tensor(theta, dtype=torch.float64))

    def forward(self, X):
        value = 0.5 * (self.a * self.theta ** 2).sum()
        return value.expand(X.shape[0], 1)


def _mean_output(out, y):
    return out.mean()


def test_sharpness_quadratic_at_minimum_is_analytic():
    a = np.array([1.0, 3.0, 0.5, 2.0])
    net = Quadratic(a, np.zeros(4))
    X, y = torch.zeros(3, 1), torch.zeros(3, 1)
    values = []
    for eps in (1e-2, 2e-2):
        # box |y_j| <= eps, the convex maximum is at a vertex: 0.5 eps^2 sum(a)
        expected = 100 * 0.5 * eps ** 2 * a.sum()
        got = sharpness(net, _mean_output, X, y, epsilon=eps, random_state=0)
        assert got == pytest.approx(expected, rel=1e-9)
        values.append(got)
    assert values[1] == pytest.approx(4 * values[0], rel=1e-9)  # grows as eps^2


def test_sharpness_quadratic_away_from_minimum():
    a = np.array([1.0, 3.0, 0.5])
    theta = np.array([0.4, -1.0, 2.0])
    net = Quadratic(a, theta)
    eps = 0.05
    width = eps * (np.abs(theta) + 1)
    loss = 0.5 * (a * theta ** 2).sum()
    top = 0.5 * (a * (theta + np.sign(theta) * width) ** 2).sum()
    result = sharpness(net, _mean_output, torch.zeros(2, 1), torch.zeros(2, 1), epsilon=eps,
                       n_restarts=1, return_result=True)
    assert isinstance(result, SharpnessResult)
    assert result.loss == pytest.approx(loss)
    assert result.max_loss == pytest.approx(top)
    assert result.sharpness == pytest.approx(100 * (top - loss) / (1 + loss))
    np.testing.assert_allclose(result.perturbation.numpy(), np.sign(theta) * width)


def test_sharpness_constant_loss_is_zero():
    torch.manual_seed(0)
    net = MLP(3, (4,), 2)
    X, y = torch.randn(5, 3), torch.randint(0, 2, (5,))

    def constant(out, target):
        return 0 * out.sum() + 1.5

    assert sharpness(net, constant, X, y, random_state=0) == 0.0


def test_sharpness_nonnegative_reproducible_chunk_invariant_and_pure(mlp, data):
    X, y = data
    criterion = nn.CrossEntropyLoss()
    snap = _snapshot(mlp)
    kwargs = dict(epsilon=1e-2, n_steps=5, n_restarts=2, random_state=3)
    first = sharpness(mlp, criterion, X, y, **kwargs)
    assert first > 0
    assert sharpness(mlp, criterion, X, y, **kwargs) == first
    chunked = sharpness(mlp, criterion, X, y, batch_size=4, **kwargs)
    assert chunked == pytest.approx(first, rel=1e-4)
    result = sharpness(mlp, criterion, X, y, return_result=True, **kwargs)
    assert result.sharpness == first
    # the reported perturbation lies in the box and reaches the reported loss
    theta = torch.cat([p.detach().reshape(-1) for p in mlp.parameters()])
    assert torch.all(result.perturbation.abs() <= 1e-2 * (theta.abs() + 1) + 1e-7)
    perturbed = copy.deepcopy(mlp)
    torch.nn.utils.vector_to_parameters(theta + result.perturbation, perturbed.parameters())
    with torch.no_grad():
        assert criterion(perturbed(X), y).item() == pytest.approx(result.max_loss, rel=1e-5)
    _assert_unchanged(mlp, snap)


def test_sharpness_errors(mlp, data):
    X, y = data
    criterion = nn.CrossEntropyLoss()
    for kwargs, match in [({"epsilon": 0}, "epsilon"), ({"n_steps": 0}, "n_steps"),
                          ({"n_restarts": 1.5}, "n_restarts"), ({"step_size": -1}, "step_size")]:
        with pytest.raises(ValueError, match=match):
            sharpness(mlp, criterion, X, y, **kwargs)


# --------------------------------------------------------------------------- #
# through SensitivityStudy
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("cell", ["rnn", "gru"])
def test_sensitivity_study_measures_recurrent_models(cell):
    from sklearn.base import clone

    from hw1sk.estimators import NeuralClassifier
    from hw1sk.studies.sensitivity import SensitivityStudy

    rng = np.random.RandomState(0)
    X = rng.randn(60, 6).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    estimator = NeuralClassifier(module="rnn", module__cell=cell, module__row_size=2,
                                 module__n_rows=3, module__hidden_size=4)
    study = SensitivityStudy(estimator, batch_sizes=(16,), max_epochs=1, n_eval=10,
                             sharpness_steps=1, sharpness_restarts=1, hessian_max_iter=3,
                             backend="sequential").fit(X[:40], y[:40], X[40:], y[40:])
    row = study.results_.iloc[0]
    net = clone(estimator).set_params(batch_size=16, lr=1e-3, max_epochs=1,
                                      random_state=int(row["seed"])).fit(X[:40], y[:40])
    X_sens = torch.as_tensor(X[40:][study.eval_indices_["sensitivity"]])
    expected = _reference_norms(net.module_, X_sens, "softmax").mean()
    assert row["sensitivity"] == pytest.approx(expected, rel=1e-4)
    assert np.isfinite(row[["loss_input_gradient_norm", "sharpness",
                            "top_hessian_eigenvalue"]].to_numpy(float)).all()
