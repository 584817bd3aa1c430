"""Tests of hw1sk.batched_critical_points: the gradient-norm phase of many seeds at once."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from hw1sk.batched_critical_points import _stack, minimize_gradient_norms
from hw1sk.batched_modules import UnsupportedModule
from hw1sk.critical_points import minimize_gradient_norm
from hw1sk.curvature import hessian_eigenvalues, loss_hessian, minimal_ratio
from hw1sk.models import MLP


def _copies(make, n, seed0=0):
    out = []
    for s in range(n):
        torch.manual_seed(seed0 + s)
        out.append(make().double())
    return out


def _trained(make, X, y, n, criterion=None, epochs=300, lr=3e-2):
    """``n`` seeds of ``make()`` trained a little by Adam: near, not at, a critical point."""
    criterion = criterion or nn.MSELoss()
    nets = _copies(make, n)
    for net in nets:
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(epochs):
            opt.zero_grad()
            criterion(net(X), y).backward()
            opt.step()
    return nets


X1 = torch.linspace(-1, 1, 80, dtype=torch.float64)[:, None]
Y1 = torch.sinc(5 * X1)
gen = torch.Generator().manual_seed(0)
X3 = torch.randn(60, 3, generator=gen, dtype=torch.float64)
Y2 = torch.stack([X3[:, 0] * X3[:, 1], torch.sin(X3[:, 2])], 1)
LABELS = (X3[:, 0] > 0).long() + (X3[:, 1] > 0).long()

CHAINS = {
    "mlp-tanh": (lambda: MLP(1, (6, 5), 1, activation="tanh"), X1, Y1, nn.MSELoss()),
    "deep-no-bias": (lambda: nn.Sequential(nn.Linear(3, 4), nn.Tanh(),
                                           nn.Linear(4, 5, bias=False), nn.Softplus(),
                                           nn.Linear(5, 3), nn.Sigmoid(), nn.Linear(3, 2)),
                     X3, Y2, nn.MSELoss()),
    "classifier": (lambda: nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)),
                   X3, LABELS, nn.CrossEntropyLoss()),
    "one-layer": (lambda: nn.Sequential(nn.Linear(3, 2), nn.Tanh()), X3, Y2, nn.MSELoss()),
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_stacked_hessians_are_each_seeds_exact_hessian(name):
    make, X, y, criterion = CHAINS[name]
    nets = _copies(make, 3)
    chain, theta = _stack(nets, criterion, X, y)
    H = chain.hessians(theta)
    assert H.shape == (3, chain.n_params, chain.n_params)
    for s, net in enumerate(nets):
        # independent: one double-backward Hessian-vector product per parameter
        expected = loss_hessian(net, criterion, X, y, method="hvp")
        scale = expected.abs().max()
        torch.testing.assert_close(H[s], expected, rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(H[s], H[s].T, rtol=0, atol=0)
    losses, grads = chain.loss_and_gradient(theta)
    for s, net in enumerate(nets):
        net.zero_grad()
        loss = criterion(net(X), y)
        loss.backward()
        expected = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        torch.testing.assert_close(grads[s], expected, rtol=1e-12, atol=1e-15)
        assert float(losses[s]) == pytest.approx(float(loss.detach()), rel=1e-13)


def _mean_square(out, y):  # the mean squared error, not nn.MSELoss: the autograd path
    return ((out - y) ** 2).mean()


@pytest.mark.parametrize("name", ["mlp-tanh", "deep-no-bias"])
def test_mean_squared_error_blocks_in_closed_form_match_autograd(name):
    """nn.MSELoss takes the closed form 2/(nk) I, 2 (F - y)/(nk); autograd gives the same."""
    make, X, y, criterion = CHAINS[name]
    nets = _copies(make, 3)
    chain, theta = _stack(nets, criterion, X, y)
    plain, theta_plain = _stack(nets, _mean_square, X, y)
    assert chain._plain_mse(chain.outputs(theta)) and not plain._plain_mse(plain.outputs(theta))
    with torch.no_grad():
        F = chain.outputs(theta)
    blocks, grads = chain._output_blocks(F)
    expected_blocks, expected_grads = plain._output_blocks(F)
    torch.testing.assert_close(blocks, expected_blocks, rtol=1e-14, atol=0)
    torch.testing.assert_close(grads, expected_grads, rtol=1e-13, atol=1e-17)
    H, expected = chain.hessians(theta), plain.hessians(theta_plain)
    torch.testing.assert_close(H, expected, rtol=0, atol=1e-12 * expected.abs().max())


@pytest.mark.parametrize("name", list(CHAINS))
def test_output_jacobians_are_autograds(name):
    """The Gauss-Newton factor J: each output's gradient w.r.t. the flat parameters."""
    make, X, y, criterion = CHAINS[name]
    nets = _copies(make, 2)
    chain, theta = _stack(nets, criterion, X, y)
    Ws, inputs, s1, *_ = chain._backward(theta)
    k, sl = chain.widths[-1], slice(3, 17)
    root = torch.rand(sl.stop - sl.start, k, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64)
    for s in range(2):
        # independent: autograd's Jacobian of the pre-activation outputs of samples 3..16
        expected = torch.autograd.functional.jacobian(
            lambda t: chain.outputs(t[None])[0, sl].reshape(-1), theta[s])
        torch.testing.assert_close(chain._jacobian(s, sl, Ws, inputs, s1), expected,
                                   rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(chain._jacobian(s, sl, Ws, inputs, s1, root),
                                   expected * root.reshape(-1, 1), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["mlp-tanh", "classifier"])
def test_batched_phase_follows_each_seeds_own_run(name):
    """Same steps, histories to 1e-8, the same eigenvalue counts as one run at a time."""
    make, X, y, criterion = CHAINS[name]
    nets = _trained(make, X, y, 4, criterion)
    alone = [copy.deepcopy(n) for n in nets]
    results, spectra = minimize_gradient_norms(nets, criterion, X, y, tol=1e-6,
                                               max_steps=30, eigenvalues=True)
    assert any(r.n_steps > 1 for r in results)  # the phase has work to do
    for net, own, result, spectrum in zip(nets, alone, results, spectra):
        expected = minimize_gradient_norm(own, criterion, X, y, tol=1e-6, max_steps=30,
                                          optimizer="newton")
        assert result.optimizer == "newton"
        assert (result.n_steps, result.converged) == (expected.n_steps, expected.converged)
        assert len(result.history) == result.n_steps + 1
        np.testing.assert_allclose(result.history, expected.history, rtol=1e-8)
        assert result.final_grad_norm == pytest.approx(expected.final_grad_norm, rel=1e-6)
        assert result.loss == pytest.approx(expected.loss, rel=1e-10)
        # the module holds its result: the Hessian there is the spectrum returned
        np.testing.assert_allclose(spectrum, hessian_eigenvalues(net, criterion, X, y),
                                   rtol=0, atol=1e-10 * np.abs(spectrum).max())
        own_values = hessian_eigenvalues(own, criterion, X, y)
        a, b = minimal_ratio(spectrum), minimal_ratio(own_values)
        assert (a.n_positive, a.n_negative, a.n_zero) == (b.n_positive, b.n_negative,
                                                          b.n_zero)


def test_converged_seeds_stop_and_the_others_go_on():
    make, X, y, criterion = CHAINS["mlp-tanh"]
    nets = _trained(make, X, y, 4, epochs=200)
    starts = np.array([float(r.initial_grad_norm) for r in minimize_gradient_norms(
        [copy.deepcopy(n) for n in nets], criterion, X, y, max_steps=0)])
    low, next_low = np.sort(starts)[:2]
    tol = float(low + next_low) / 2  # one seed starts below, the others above
    before = [torch.cat([p.detach().reshape(-1) for p in n.parameters()]) for n in nets]
    results = minimize_gradient_norms(nets, criterion, X, y, tol=tol, max_steps=30)
    for start, result, net, theta in zip(starts, results, nets, before):
        after = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        if start < tol:  # converged from the start: it does not move
            assert result.n_steps == 0 and len(result.history) == 1
            assert torch.equal(after, theta)
        else:
            assert result.n_steps > 0 and result.converged
            np.testing.assert_array_less(np.diff(result.history), 0)


def test_step_cap_and_zero_steps():
    make, X, y, criterion = CHAINS["mlp-tanh"]
    nets = _trained(make, X, y, 2, epochs=50)
    capped = minimize_gradient_norms([copy.deepcopy(n) for n in nets], criterion, X, y,
                                     tol=1e-300, max_steps=2)
    assert [r.n_steps for r in capped] == [2, 2] and not any(r.converged for r in capped)
    none = minimize_gradient_norms(nets, criterion, X, y, tol=1e-300, max_steps=0)
    assert [r.n_steps for r in none] == [0, 0]
    assert none[0].final_grad_norm == none[0].initial_grad_norm


class _Square(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1, dtype=torch.float64))

    def forward(self, X):
        return X * self.w ** 2


def _coupled(out, y):  # the loss of the mean output: couples the samples
    return (out.mean() - y.mean()) ** 2


@pytest.mark.parametrize("nets, criterion, match", [
    ([_Square(), _Square()], nn.MSELoss(), "chain"),
    ([MLP(1, (3,), 1), MLP(1, (3,), 1)], nn.MSELoss(), "float64"),
    ([MLP(1, (3,), 1).double(), MLP(1, (4,), 1).double()], nn.MSELoss(), "copies"),
    ([MLP(1, (3,), 1).double()], _coupled, "couples"),
])
def test_what_the_batched_path_does_not_take(nets, criterion, match):
    with pytest.raises(UnsupportedModule, match=match):
        minimize_gradient_norms(nets, criterion, X1, Y1)


def test_input_validation():
    with pytest.raises(ValueError, match="tol"):
        minimize_gradient_norms([MLP(1, (3,), 1).double()], nn.MSELoss(), X1, Y1, tol=0)
    with pytest.raises(ValueError, match="max_steps"):
        minimize_gradient_norms([MLP(1, (3,), 1).double()], nn.MSELoss(), X1, Y1,
                                max_steps=-1)
    with pytest.raises(ValueError, match="at least one"):
        minimize_gradient_norms([], nn.MSELoss(), X1, Y1)
