"""Tests of hw1sk.critical_points: the gradient-norm phase of the minimal-ratio study."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from hw1sk.critical_points import GradientNormResult, minimize_gradient_norm
from hw1sk.curvature import gradient_norm, hessian_minimal_ratio
from hw1sk.models import MLP


class Saddle(nn.Module):
    """Output ``a^2 - b^2`` whatever the input: a known saddle at (0, 0)."""

    def __init__(self, a=1.0, b=1.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))

    def forward(self, X):
        return (self.a ** 2 - self.b ** 2).expand(X.shape[0])


def mean_output(out, y):
    return out.mean()


# --------------------------------------------------------------------------- #
# the gradient-norm phase
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def _trained_net():
    X = torch.linspace(-1, 1, 100)[:, None]
    y = torch.sinc(5 * X)
    torch.manual_seed(1)
    module = MLP(1, (8,), 1, activation="tanh")
    opt = torch.optim.Adam(module.parameters(), lr=3e-2)
    for _ in range(800):
        opt.zero_grad()
        nn.MSELoss()(module(X), y).backward()
        opt.step()
    return module, X, y


@pytest.fixture
def trained_net(_trained_net):
    module, X, y = _trained_net
    return copy.deepcopy(module), X, y  # each test moves the parameters


@pytest.mark.parametrize("optimizer", ["auto", "newton", "lbfgs"])
def test_minimize_gradient_norm_reaches_tol(trained_net, optimizer):
    module, X, y = trained_net
    start = gradient_norm(module, nn.MSELoss(), X, y)
    tol = 1e-3
    assert start > 10 * tol  # the phase has work to do
    result = minimize_gradient_norm(module, nn.MSELoss(), X, y, tol=tol, optimizer=optimizer)
    assert isinstance(result, GradientNormResult)
    assert result.initial_grad_norm == pytest.approx(start, rel=1e-4)
    assert result.converged and result.final_grad_norm < tol
    # the verdict is the module's own, measured independently
    assert gradient_norm(module, nn.MSELoss(), X, y) == pytest.approx(result.final_grad_norm)
    assert result.history[0] == result.initial_grad_norm
    assert result.history[-1] == pytest.approx(result.final_grad_norm, rel=1e-2)
    assert np.all(np.isfinite(result.history))
    if result.optimizer == "newton":  # monotone, one entry per accepted step
        assert len(result.history) == result.n_steps + 1
        assert np.all(np.diff(result.history) < 0)
    assert result.loss == pytest.approx(float(nn.MSELoss()(module(X), y).detach()), rel=1e-5)
    assert all(p.dtype == torch.float32 for p in module.parameters())


def test_minimize_gradient_norm_with_adam_lowers_the_norm_and_reports_the_cap(trained_net):
    module, X, y = trained_net
    result = minimize_gradient_norm(module, nn.MSELoss(), X, y, tol=1e-12, optimizer="adam",
                                    lr=1e-4, max_steps=30)
    assert not result.converged and result.n_steps == 30
    assert result.final_grad_norm < result.initial_grad_norm


def test_minimize_gradient_norm_finds_the_saddle_of_a_quadratic():
    module = Saddle(0.4, -0.3)  # ||grad||^2 = 4 a^2 + 4 b^2: zero only at the saddle
    X, y = torch.zeros(2, 1), torch.zeros(2)
    result = minimize_gradient_norm(module, mean_output, X, y, tol=1e-6)
    assert result.converged and result.n_steps <= 2
    assert abs(module.a.item()) < 1e-6 and abs(module.b.item()) < 1e-6
    assert hessian_minimal_ratio(module, mean_output, X, y).ratio == 0.5


def test_minimize_gradient_norm_input_validation():
    X = torch.linspace(-1, 1, 10)[:, None]
    module, crit = MLP(1, (3,), 1, activation="tanh"), nn.MSELoss()
    with pytest.raises(ValueError, match="optimizer"):
        minimize_gradient_norm(module, crit, X, X, optimizer="sgd")
    with pytest.raises(ValueError, match="tol"):
        minimize_gradient_norm(module, crit, X, X, tol=0)


def test_public_name():
    import hw1sk

    assert hw1sk.minimize_gradient_norm is minimize_gradient_norm
