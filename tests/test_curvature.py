"""Tests of hw1sk.curvature against analytic cases and independent computations."""

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from hw1sk.curvature import (
    MinimalRatio,
    SmallHessianBatchWarning,
    gradient_norm,
    hessian_batch_spread,
    hessian_eigenvalues,
    hessian_minimal_ratio,
    hessian_vector_product,
    loss_hessian,
    minimal_ratio,
    minimal_ratio_tolerance_sweep,
    top_hessian_eigenvalues,
)
from hw1sk.models import MLP
from hw1sk.parameters import flatten_parameters, functional_loss


def reference_hessian(module, criterion, X, y):
    """``torch.autograd.functional.hessian`` of the flat float64 loss."""
    work = copy.deepcopy(module).double()
    y = y.double() if y.is_floating_point() else y
    loss_fn, theta = functional_loss(work, criterion, X.double(), y)
    return torch.autograd.functional.hessian(loss_fn, theta)


class Saddle(nn.Module):
    """Output ``c_a a^2 - c_b b^2`` whatever the input: a known saddle at (a, b)."""

    def __init__(self, a=1.0, b=1.0, c_a=1.0, c_b=1.0):
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a))
        self.b = nn.Parameter(torch.tensor(b))
        self.c_a, self.c_b = c_a, c_b

    def forward(self, X):
        return (self.c_a * self.a ** 2 - self.c_b * self.b ** 2).expand(X.shape[0])


def mean_output(out, y):
    return out.mean()


@pytest.fixture
def regression():
    gen = torch.Generator().manual_seed(0)
    X = torch.rand(40, 1, generator=gen) * 2 - 1
    return X, torch.sinc(3 * X)


# --------------------------------------------------------------------------- #
# exact Hessian
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", ["auto", "structured", "hvp"])
@pytest.mark.parametrize("n_out", [1, 2])
def test_linear_least_squares_hessian_is_twice_the_gram_matrix(method, n_out):
    gen = torch.Generator().manual_seed(1)
    n, d = 30, 3
    X = torch.randn(n, d, generator=gen)
    y = torch.randn(n, n_out, generator=gen)
    H = loss_hessian(nn.Linear(d, n_out), nn.MSELoss(), X, y, method=method)
    # layout: weight (n_out, d) row-major, then bias (n_out,); MSE averages n * n_out terms
    A = torch.cat([X, torch.ones(n, 1)], 1).double()
    gram = 2 * A.T @ A / (n * n_out)
    expected = torch.zeros(n_out * (d + 1), n_out * (d + 1), dtype=torch.float64)
    for c in range(n_out):
        idx = list(range(c * d, (c + 1) * d)) + [n_out * d + c]
        expected[np.ix_(idx, idx)] = gram
    torch.testing.assert_close(H, expected, rtol=1e-12, atol=1e-12)
    lam = hessian_eigenvalues(nn.Linear(d, n_out), nn.MSELoss(), X, y, method=method)
    assert np.all(lam > 0)
    assert minimal_ratio(lam).ratio == 1.0


def test_known_saddle_has_eigenvalues_plus_minus_two_and_ratio_one_half():
    X, y = torch.zeros(5, 1), torch.zeros(5)
    H = loss_hessian(Saddle(0.3, -0.7), mean_output, X, y)
    torch.testing.assert_close(H, torch.tensor([[2.0, 0.0], [0.0, -2.0]], dtype=torch.float64))
    np.testing.assert_allclose(hessian_eigenvalues(Saddle(), mean_output, X, y), [-2.0, 2.0])
    result = hessian_minimal_ratio(Saddle(), mean_output, X, y)
    assert result == MinimalRatio(ratio=0.5, n_positive=1, n_negative=1, n_zero=0,
                                  tol_used=result.tol_used)
    assert 0 < result.tol_used < 1e-12


@pytest.mark.parametrize("method", ["structured", "hvp"])
@pytest.mark.parametrize(
    "build, criterion, n_in, target",
    [
        (lambda: MLP(1, (6,), 1, activation="tanh"), nn.MSELoss(), 1, "real"),
        (lambda: MLP(2, (4, 5, 3), 2, activation="softplus"), nn.MSELoss(), 2, "real"),
        (lambda: MLP(3, (4, 5), 3, activation="gelu"), nn.CrossEntropyLoss(), 3, "class"),
        (lambda: MLP(2, (5, 4), 1, activation="relu"), nn.L1Loss(), 2, "real"),
        (lambda: nn.Sequential(nn.Flatten(), nn.Linear(4, 3, bias=False), nn.Tanh(), nn.Sigmoid(),
                               nn.Linear(3, 2), nn.Linear(2, 2), nn.Sigmoid()),
         nn.MSELoss(), (2, 2), "real"),
    ],
)
def test_hessian_matches_torch_autograd_functional_hessian(method, build, criterion, n_in, target):
    torch.manual_seed(0)
    module = build()
    shape = (12,) + (n_in if isinstance(n_in, tuple) else (n_in,))
    X = torch.randn(shape)
    y = torch.randint(0, 3, (12,)) if target == "class" else torch.randn(12, module(X).shape[1])
    H = loss_hessian(module, criterion, X, y, method=method)
    expected = reference_hessian(module, criterion, X, y)
    torch.testing.assert_close(H, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H, H.T, rtol=0, atol=0)


def test_structured_path_falls_back_when_the_criterion_couples_samples(regression):
    X, y = regression
    module = MLP(1, (5,), 1, activation="tanh")

    def coupled(out, target):  # the square of the mean residual: not a per-sample sum
        return (out - target).mean() ** 2

    expected = reference_hessian(module, coupled, X, y)
    torch.testing.assert_close(loss_hessian(module, coupled, X, y), expected, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="structured"):
        loss_hessian(module, coupled, X, y, method="structured")


def test_structured_hessian_chunking_does_not_change_the_result(regression):
    X, y = regression
    torch.manual_seed(3)
    module = MLP(1, (4, 6, 3), 1, activation="tanh")
    full = loss_hessian(module, nn.MSELoss(), X, y)
    chunked = loss_hessian(module, nn.MSELoss(), X, y, chunk_size=7)
    torch.testing.assert_close(chunked, full, rtol=1e-12, atol=1e-14)


def test_loss_hessian_leaves_the_callers_module_untouched(regression):
    X, y = regression
    module = MLP(1, (5,), 1, activation="tanh").train()
    before = flatten_parameters(module)
    H = loss_hessian(module, nn.MSELoss(), X, y)
    assert H.dtype == torch.float64
    assert all(p.dtype == torch.float32 for p in module.parameters())
    assert module.training and all(m.training for m in module.modules())
    torch.testing.assert_close(flatten_parameters(module), before, rtol=0, atol=0)


def test_numpy_inputs_give_the_same_hessian_as_tensors(regression):
    X, y = regression
    module = MLP(1, (4,), 1, activation="tanh")
    torch.testing.assert_close(loss_hessian(module, nn.MSELoss(), X.numpy(), y.numpy()),
                               loss_hessian(module, nn.MSELoss(), X, y))


# --------------------------------------------------------------------------- #
# minimal ratio
# --------------------------------------------------------------------------- #
def test_minimal_ratio_counts_signs_with_the_documented_tolerance():
    lam = np.array([-3.0, -1e-15, 0.0, 2e-15, 0.5, 4.0])
    default = minimal_ratio(lam)
    assert default.tol_used == pytest.approx(6 * np.finfo(np.float64).eps * 4.0)
    assert (default.n_positive, default.n_negative, default.n_zero) == (2, 1, 3)
    assert default.ratio == pytest.approx(2 / 6)
    absolute = minimal_ratio(lam, tol=0.0, relative=False)
    assert (absolute.n_positive, absolute.n_negative, absolute.n_zero) == (3, 2, 1)
    relative = minimal_ratio(lam, tol=0.2)
    assert relative.tol_used == pytest.approx(0.8)
    assert (relative.n_positive, relative.n_negative, relative.n_zero) == (1, 1, 4)


def test_minimal_ratio_separates_flat_directions_from_saddles():
    # [-1, 0, 0, 2, 3] with absolute tol 0.5: one negative, two flat, two positive
    r = minimal_ratio([-1.0, 0.0, 0.0, 2.0, 3.0], tol=0.5, relative=False)
    assert (r.n_positive, r.n_negative, r.n_zero, r.tol_used) == (2, 1, 2, 0.5)
    assert r.ratio == pytest.approx(2 / 5)
    assert r.nonzero_ratio == pytest.approx(2 / 3)
    assert r.is_saddle
    # a flat minimum: the classic ratio is below 1, yet nothing curves down
    flat = minimal_ratio([0.0, 1e-20, 0.0, 2.0, 3.0], tol=1e-12, relative=False)
    assert flat.ratio == pytest.approx(2 / 5)
    assert flat.nonzero_ratio == 1.0 and flat.n_negative == 0 and not flat.is_saddle
    # relative tol 0.5: t = 0.5 * max|lambda| = 1.5, so -1 becomes flat
    rel = minimal_ratio([-1.0, 0.0, 0.0, 2.0, 3.0], tol=0.5)
    assert rel.tol_used == pytest.approx(1.5)
    assert (rel.n_positive, rel.n_negative, rel.n_zero) == (2, 0, 3)
    assert rel.nonzero_ratio == 1.0


def test_minimal_ratio_nonzero_ratio_is_nan_without_nonzero_eigenvalues():
    r = minimal_ratio([0.0, 0.0, 0.0], tol=0.0, relative=False)
    assert r.n_zero == 3 and r.ratio == 0.0
    assert np.isnan(r.nonzero_ratio)


def test_minimal_ratio_keyword_construction_still_computes_nonzero_ratio():
    # callers (plotting) build MinimalRatio from stored counts without nonzero_ratio
    r = MinimalRatio(ratio=0.4, n_positive=2, n_negative=1, n_zero=2, tol_used=0.5)
    assert r.nonzero_ratio == pytest.approx(2 / 3)
    assert r == minimal_ratio([-1.0, 0.0, 0.0, 2.0, 3.0], tol=0.5, relative=False)


def test_minimal_ratio_tolerance_sweep_matches_minimal_ratio_and_is_monotone():
    rng = np.random.RandomState(0)
    lam = np.concatenate([-rng.exponential(1.0, 20), rng.randn(30) * 1e-10,
                          rng.exponential(1.0, 50)]) * 10.0 ** rng.uniform(-8, 0, 100)
    tols = [0.0, 1e-14, 1e-12, 1e-9, 1e-6, 1e-3, 1e-1]
    sweep = minimal_ratio_tolerance_sweep(lam, tols)
    assert list(sweep.columns) == ["tol", "tol_used", "n_positive", "n_negative", "n_zero",
                                   "ratio", "nonzero_ratio"]
    assert sweep["tol"].tolist() == tols
    for row, tol in zip(sweep.itertuples(), tols):
        r = minimal_ratio(lam, tol=tol)
        assert (row.n_positive, row.n_negative, row.n_zero) == (r.n_positive, r.n_negative,
                                                                 r.n_zero)
        assert row.ratio == r.ratio and row.tol_used == r.tol_used
        assert row.nonzero_ratio == pytest.approx(r.nonzero_ratio, nan_ok=True)
    assert (sweep["n_positive"] + sweep["n_negative"] + sweep["n_zero"] == lam.size).all()
    assert np.all(np.diff(sweep["n_zero"]) >= 0)
    assert np.all(np.diff(sweep["n_positive"]) <= 0)
    assert np.all(np.diff(sweep["n_negative"]) <= 0)
    assert np.all(np.diff(sweep["ratio"]) <= 0)
    assert sweep["n_zero"].iloc[-1] > sweep["n_zero"].iloc[0]


def test_minimal_ratio_tolerance_sweep_default_tolerance_row():
    lam = np.array([-3.0, -1e-15, 0.0, 2e-15, 0.5, 4.0])
    sweep = minimal_ratio_tolerance_sweep(lam, [None, 0.2])
    assert np.isnan(sweep["tol"].iloc[0])
    default = minimal_ratio(lam)
    assert sweep["tol_used"].iloc[0] == default.tol_used
    assert sweep[["n_positive", "n_negative", "n_zero"]].iloc[1].tolist() == [1, 1, 4]


def test_minimal_ratio_rejects_bad_input():
    with pytest.raises(ValueError, match="tol"):
        minimal_ratio([1.0, 2.0], tol=-1.0)
    with pytest.raises(ValueError, match="1-D"):
        minimal_ratio(np.ones((2, 2)))
    with pytest.raises(ValueError, match="NaN|infinity"):
        minimal_ratio([1.0, np.nan])


# --------------------------------------------------------------------------- #
# gradient norm and Hessian-vector products
# --------------------------------------------------------------------------- #
def test_gradient_norm_matches_autograd(regression):
    X, y = regression
    module = MLP(1, (5,), 1, activation="tanh")
    nn.MSELoss()(module(X), y).backward()
    expected = torch.cat([p.grad.reshape(-1) for p in module.parameters()]).norm()
    assert gradient_norm(module, nn.MSELoss(), X, y) == pytest.approx(float(expected), rel=1e-5)
    assert gradient_norm(Saddle(0.5, 2.0), mean_output, X, y[:, 0]) == pytest.approx(np.hypot(1.0, 4.0))


@pytest.mark.parametrize("batch_size", [None, 7])
def test_hessian_vector_product_matches_the_hessian(regression, batch_size):
    X, y = regression
    module = MLP(1, (4, 3), 1, activation="softplus").double()
    H = loss_hessian(module, nn.MSELoss(), X, y)
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    Hv = hessian_vector_product(module, nn.MSELoss(), X, y, v, batch_size=batch_size)
    torch.testing.assert_close(Hv, H @ v, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- #
# top eigenvalues
# --------------------------------------------------------------------------- #
@pytest.fixture
def small_problem():
    torch.manual_seed(0)
    module = MLP(2, (6, 6), 1, activation="tanh")
    gen = torch.Generator().manual_seed(5)
    X, y = torch.randn(50, 2, generator=gen), torch.randn(50, 1, generator=gen)
    return module, nn.MSELoss(), X, y, hessian_eigenvalues(module, nn.MSELoss(), X, y)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_lanczos_top_eigenvalues_match_the_exact_spectrum(small_problem, k, dtype, rtol):
    module, criterion, X, y, exact = small_problem
    top = top_hessian_eigenvalues(module, criterion, X, y, k=k, dtype=dtype, random_state=0,
                                  tol=1e-10 if dtype == torch.float64 else 1e-6)
    assert top.shape == (k,)
    np.testing.assert_allclose(top, exact[-k:], rtol=0, atol=rtol * abs(exact[-1]))


@pytest.mark.parametrize("k", [1, 2])
def test_power_iteration_matches_the_exact_spectrum(small_problem, k):
    module, criterion, X, y, exact = small_problem
    top = top_hessian_eigenvalues(module, criterion, X, y, k=k, method="power", tol=1e-10,
                                  max_iter=2000, dtype=torch.float64, random_state=0)
    np.testing.assert_allclose(top, exact[-k:], rtol=0, atol=1e-5 * abs(exact[-1]))


@pytest.mark.parametrize("method", ["lanczos", "power"])
def test_top_eigenvalues_are_algebraic_when_a_negative_one_dominates(method):
    X, y = torch.zeros(3, 1), torch.zeros(3)
    module = Saddle(1.0, 1.0, c_a=3.0, c_b=5.0)  # Hessian diag(6, -10)
    kw = dict(method=method, dtype=torch.float64, random_state=0, tol=1e-12, max_iter=500)
    np.testing.assert_allclose(top_hessian_eigenvalues(module, mean_output, X, y, k=1, **kw), [6.0])
    np.testing.assert_allclose(top_hessian_eigenvalues(module, mean_output, X, y, k=2, **kw),
                               [-10.0, 6.0], atol=1e-8)


def test_lanczos_with_batches_and_random_state_is_reproducible(small_problem):
    module, criterion, X, y, exact = small_problem
    kw = dict(k=2, batch_size=16, dtype=torch.float64, tol=1e-10)
    a = top_hessian_eigenvalues(module, criterion, X, y, random_state=3, **kw)
    b = top_hessian_eigenvalues(module, criterion, X, y, random_state=3, **kw)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, exact[-2:], rtol=0, atol=1e-9 * abs(exact[-1]))


# --------------------------------------------------------------------------- #
# input validation
# --------------------------------------------------------------------------- #
def test_input_validation_errors(regression):
    X, y = regression
    module = MLP(1, (3,), 1, activation="tanh")
    crit = nn.MSELoss()
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        loss_hessian(module, crit, X, y[:-1])
    bad = X.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinity"):
        loss_hessian(module, crit, bad, y)
    with pytest.raises(ValueError, match="infinity"):
        gradient_norm(module, crit, X.numpy(), np.full(y.shape, np.inf))
    with pytest.raises(ValueError, match="2 dimensions"):
        loss_hessian(module, crit, X[:, 0], y)
    with pytest.raises(ValueError, match="method"):
        loss_hessian(module, crit, X, y, method="exact")
    with pytest.raises(ValueError, match="dtype"):
        loss_hessian(module, crit, X, y, dtype=torch.int64)
    with pytest.raises(ValueError, match="scalar"):
        loss_hessian(module, nn.MSELoss(reduction="none"), X, y, method="hvp")
    with pytest.raises(ValueError, match="larger than the number of parameters"):
        top_hessian_eigenvalues(module, crit, X, y, k=11)
    with pytest.raises(ValueError, match="k must be"):
        top_hessian_eigenvalues(module, crit, X, y, k=0)
    with pytest.raises(ValueError, match="method"):
        top_hessian_eigenvalues(module, crit, X, y, method="arnoldi")
    with pytest.raises(ValueError, match=r"v has shape \(3,\), expected \(10,\)"):
        hessian_vector_product(module, crit, X, y, torch.ones(3))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        gradient_norm("mlp", crit, X, y)
    with pytest.raises(TypeError, match="callable"):
        gradient_norm(module, "mse", X, y)


# --------------------------------------------------------------------------- #
# reliability of a small Hessian batch
# --------------------------------------------------------------------------- #
def test_small_hessian_batches_warn_and_large_ones_do_not():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(),
                        nn.Linear(16, 1)).double()
    X = torch.randn(2000, 3, dtype=torch.float64)
    y = torch.sin(X.sum(1, keepdim=True))
    with pytest.warns(SmallHessianBatchWarning, match="4 disjoint batches of 4 samples"):
        tiny = hessian_batch_spread(net, nn.MSELoss(), X, y, batch_size=4, random_state=0)
    assert not tiny.reliable and tiny.relative_spread > tiny.threshold == 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmallHessianBatchWarning)
        large = hessian_batch_spread(net, nn.MSELoss(), X, y, batch_size=500, random_state=0)
    assert large.reliable and large.relative_spread < 0.1
    assert large.eigenvalues.shape == (4,) and large.batch_size == 500
    assert large.mean == pytest.approx(large.eigenvalues.mean())
    assert large.relative_spread == pytest.approx(large.eigenvalues.std(ddof=1) / large.mean)
    # each entry is the top eigenvalue of its own batch: the full data's lies among them
    full = top_hessian_eigenvalues(net, nn.MSELoss(), X, y, dtype=torch.float64,
                                   random_state=0)[0]
    assert large.eigenvalues.min() < full * 1.05 and large.eigenvalues.max() > full * 0.95
    with pytest.raises(ValueError, match="must be disjoint"):
        hessian_batch_spread(net, nn.MSELoss(), X, y, batch_size=600)
    with pytest.raises(ValueError, match="n_batches"):
        hessian_batch_spread(net, nn.MSELoss(), X, y, batch_size=10, n_batches=1)
