import copy

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

from hw1sk.landscape import (
    PCADirections,
    loss_along_line,
    loss_surface,
    pca_directions,
    project_onto_plane,
    random_direction,
)
from hw1sk.models import CNN, MLP, RowRNN
from hw1sk.parameters import assign_flat_parameters, flatten_parameters, parameter_slices


def _snapshot(module):
    return copy.deepcopy(module.state_dict()), [m.training for m in module.modules()]


def _assert_unchanged(module, snapshot):
    state, flags = snapshot
    after = module.state_dict()
    for k in state:
        assert torch.equal(state[k], after[k]), k
    assert [m.training for m in module.modules()] == flags
    assert all(p.grad is None for p in module.parameters())


def _loss_at(module, criterion, X, y, theta):
    """Independent evaluation: copy the module, assign theta, forward in eval mode."""
    net = assign_flat_parameters(copy.deepcopy(module).eval(), theta)
    with torch.no_grad():
        out = net(X)
        return criterion(out, y).item(), (out.argmax(1) == y).float().mean().item()


@pytest.fixture
def problem():
    torch.manual_seed(0)
    net = MLP(5, (6,), 3)
    g = torch.Generator().manual_seed(1)
    return net, nn.CrossEntropyLoss(), torch.randn(11, 5, generator=g), torch.randint(
        0, 3, (11,), generator=g)


class Quadratic(nn.Module):
    """Output ``0.5 * (theta - c)^T A (theta - c)`` for every sample."""

    def __init__(self, A, c, theta):
        super().__init__()
        self.register_buffer("A", torch.as_tensor(A, dtype=torch.float64))
        self.register_buffer("c", torch.as_tensor(c, dtype=torch.float64))
        self.theta = nn.Parameter(torch.as_tensor(theta, dtype=torch.float64))

    def forward(self, X):
        d = self.theta - self.c
        return (0.5 * d @ self.A @ d).expand(X.shape[0], 1)


def _mean_output(out, y):
    return out.mean()


# --------------------------------------------------------------------------- #
# random_direction
# --------------------------------------------------------------------------- #
def test_filter_normalization_matches_filter_norms():
    torch.manual_seed(0)
    net = CNN(in_channels=1, image_size=6, channels=(3, 4), n_out=2)
    snap = _snapshot(net)
    d = random_direction(net, random_state=0)
    assert d.shape == flatten_parameters(net).shape
    params = dict(net.named_parameters())
    for name, sl in parameter_slices(net).items():
        p = params[name].detach()
        if p.ndim <= 1:
            assert torch.all(d[sl] == 0), name
        else:
            rows = d[sl].view(p.shape[0], -1).norm(dim=1)
            torch.testing.assert_close(rows, p.reshape(p.shape[0], -1).norm(dim=1))
    _assert_unchanged(net, snap)


def test_random_direction_options_and_reproducibility():
    torch.manual_seed(0)
    net = MLP(4, (3,), 2)
    torch.testing.assert_close(random_direction(net, random_state=5),
                               random_direction(net, random_state=5), rtol=0, atol=0)
    assert not torch.equal(random_direction(net, random_state=5),
                           random_direction(net, random_state=6))
    slices, params = parameter_slices(net), dict(net.named_parameters())
    keep = random_direction(net, random_state=5, ignore_bias_bn=False)
    torch.testing.assert_close(keep[slices["net.1.bias"]], params["net.1.bias"].detach())
    raw = random_direction(net, filter_normalize=False, random_state=5, ignore_bias_bn=False)
    gaussian = torch.randn(raw.shape, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(raw, gaussian, rtol=0, atol=0)


# --------------------------------------------------------------------------- #
# loss_along_line / loss_surface
# --------------------------------------------------------------------------- #
def test_line_center_and_points_match_direct_evaluation(problem):
    net, criterion, X, y = problem
    snap = _snapshot(net)
    d = random_direction(net, random_state=0)
    alphas = np.linspace(-1, 1, 5)
    line = loss_along_line(net, criterion, X, y, d, alphas, accuracy=True, batch_size=4,
                           n_points_per_call=3)
    assert isinstance(line, pd.DataFrame) and list(line.columns) == ["alpha", "loss", "accuracy"]
    theta = flatten_parameters(net)
    for alpha, loss, acc in line.itertuples(index=False):
        ref_loss, ref_acc = _loss_at(net, criterion, X, y, theta + alpha * d)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert acc == pytest.approx(ref_acc)
    with torch.no_grad():
        assert line.loss[2] == pytest.approx(criterion(net(X), y).item(), rel=1e-6)
    looped = loss_along_line(net, criterion, X, y, d.numpy(), alphas, n_points_per_call=1,
                             batch_size=None)
    np.testing.assert_allclose(looped.loss, line.loss, rtol=1e-5)
    _assert_unchanged(net, snap)


def test_line_on_quadratic_is_the_parabola():
    rng = np.random.default_rng(0)
    B = rng.normal(size=(4, 4))
    A = B @ B.T + np.eye(4)
    c, theta, d = rng.normal(size=4), rng.normal(size=4), rng.normal(size=4)
    net = Quadratic(A, c, theta)
    alphas = np.linspace(-2, 2, 9)
    line = loss_along_line(net, _mean_output, torch.zeros(3, 1), torch.zeros(3, 1),
                           torch.as_tensor(d), alphas)
    r = theta - c
    parabola = 0.5 * r @ A @ r + alphas * (d @ A @ r) + 0.5 * alphas ** 2 * (d @ A @ d)
    np.testing.assert_allclose(line.loss, parabola, rtol=1e-12)


def test_surface_shape_center_and_values(problem):
    net, criterion, X, y = problem
    snap = _snapshot(net)
    d1, d2 = random_direction(net, random_state=1), random_direction(net, random_state=2)
    alphas, betas = np.linspace(-1, 1, 3), np.array([-0.5, 0.0, 0.5, 1.0])
    a, b, losses = loss_surface(net, criterion, X, y, d1, d2, alphas, betas, batch_size=5,
                                n_points_per_call=5)
    assert losses.shape == (3, 4)
    np.testing.assert_array_equal(a, alphas)
    np.testing.assert_array_equal(b, betas)
    with torch.no_grad():
        assert losses[1, 1] == pytest.approx(criterion(net(X), y).item(), rel=1e-6)
    theta = flatten_parameters(net)
    for i, j in [(0, 0), (2, 3), (0, 2)]:
        ref, _ = _loss_at(net, criterion, X, y, theta + alphas[i] * d1 + betas[j] * d2)
        assert losses[i, j] == pytest.approx(ref, rel=1e-5)
    _assert_unchanged(net, snap)


def test_surface_on_quadratic_is_analytic():
    A = np.diag([1.0, 2.0, 3.0])
    net = Quadratic(A, np.zeros(3), np.zeros(3))
    e1, e2 = np.eye(3)[0], np.eye(3)[2]
    alphas, betas = np.linspace(-1, 1, 4), np.linspace(0, 2, 3)
    _, _, losses = loss_surface(net, _mean_output, torch.zeros(2, 1), torch.zeros(2, 1),
                                e1, e2, alphas, betas)
    expected = 0.5 * (1.0 * alphas[:, None] ** 2 + 3.0 * betas[None, :] ** 2)
    np.testing.assert_allclose(losses, expected, rtol=1e-12, atol=1e-15)


def test_module_without_vmap_rule_falls_back_to_loop():
    torch.manual_seed(0)
    net = RowRNN(row_size=3, n_rows=2, hidden_size=4, n_out=2)
    X, y = torch.randn(4, 2, 3), torch.tensor([0, 1, 1, 0])
    d = random_direction(net, random_state=0)
    line = loss_along_line(net, nn.CrossEntropyLoss(), X, y, d, [0.0, 0.5])
    ref, _ = _loss_at(net, nn.CrossEntropyLoss(), X, y, flatten_parameters(net) + 0.5 * d)
    assert line.loss[1] == pytest.approx(ref, rel=1e-5)


def test_batchnorm_train_module_evaluated_in_eval_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    net.train()(torch.randn(16, 3))
    X, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    snap = _snapshot(net)
    line = loss_along_line(net, nn.CrossEntropyLoss(), X, y, random_direction(net), [0.0])
    _assert_unchanged(net, snap)
    ref, _ = _loss_at(net, nn.CrossEntropyLoss(), X, y, flatten_parameters(net))
    assert line.loss[0] == pytest.approx(ref, rel=1e-6)


def test_line_errors(problem):
    net, criterion, X, y = problem
    d = random_direction(net)
    with pytest.raises(ValueError, match="direction has shape"):
        loss_along_line(net, criterion, X, y, d[:-1], [0.0])
    with pytest.raises(ValueError, match="alphas must be 1-D"):
        loss_along_line(net, criterion, X, y, d, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="n_points_per_call"):
        loss_along_line(net, criterion, X, y, d, [0.0], n_points_per_call=0)
    with pytest.raises(ValueError, match="integer class labels"):
        loss_along_line(net, nn.MSELoss(), X, torch.randn(11, 3), d, [0.0], accuracy=True)


# --------------------------------------------------------------------------- #
# pca_directions / project_onto_plane
# --------------------------------------------------------------------------- #
def test_pca_directions_match_hand_computed_pca():
    rng = np.random.default_rng(0)
    steps = np.cumsum(rng.normal(size=(12, 7)) * np.array([3, 2, 1, .5, .1, .1, .1]), axis=0)
    trajectory = torch.as_tensor(steps)
    plane = pca_directions(trajectory)
    assert isinstance(plane, PCADirections)
    # by hand: SVD of the centred differences to the final point, rows i < n
    diffs = steps[:-1] - steps[-1]
    centred = diffs - diffs.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(np.sum(plane.directions * vt[:2], axis=1))
    np.testing.assert_allclose(plane.directions, signs[:, None] * vt[:2], atol=1e-10)
    variance = s ** 2 / (len(diffs) - 1)
    np.testing.assert_allclose(plane.explained_variance, variance[:2])
    np.testing.assert_allclose(plane.explained_variance_ratio, variance[:2] / variance.sum())
    coords = (steps - steps[-1]) @ plane.directions.T
    np.testing.assert_allclose(plane.coordinates, coords, atol=1e-10)
    np.testing.assert_allclose(plane.coordinates[-1], 0, atol=1e-12)
    np.testing.assert_allclose(plane.origin, steps[-1])
    # and the same as sklearn's PCA on those differences
    ref = PCA(n_components=2, svd_solver="full").fit(diffs)
    np.testing.assert_allclose(plane.directions, ref.components_)
    # orthonormal directions: projection equals least squares in the plane
    lstsq = project_onto_plane(steps, plane.origin, *plane.directions)
    np.testing.assert_allclose(lstsq, plane.coordinates, atol=1e-10)
    # a list of flat tensors works the same
    listed = pca_directions([torch.as_tensor(row) for row in steps])
    np.testing.assert_allclose(listed.coordinates, plane.coordinates)


def test_pca_directions_errors():
    with pytest.raises(ValueError, match="needs at least 3 snapshots"):
        pca_directions(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="n_components"):
        pca_directions(np.zeros((4, 5)), n_components=0)


def test_project_onto_plane_recovers_coordinates():
    rng = np.random.default_rng(1)
    origin, d1, d2 = rng.normal(size=(3, 6))
    coords = rng.normal(size=(5, 2))
    points = origin + coords[:, :1] * d1 + coords[:, 1:] * d2
    np.testing.assert_allclose(project_onto_plane(points, origin, d1, d2), coords)
    np.testing.assert_allclose(
        project_onto_plane(torch.as_tensor(points[0]), origin, d1, d2), coords[0])
    # off-plane component is dropped: least squares onto the orthonormal basis
    q, _ = np.linalg.qr(np.stack([d1, d2], axis=1))
    off = points[0] + 3.0 * (np.eye(6) - q @ q.T) @ rng.normal(size=6)
    np.testing.assert_allclose(project_onto_plane(off, origin, d1, d2), coords[0])
    with pytest.raises(ValueError, match="linearly independent"):
        project_onto_plane(points, origin, d1, 2 * d1)
    with pytest.raises(ValueError, match="must be 1-D of length 6"):
        project_onto_plane(points, origin[:3], d1, d2)
