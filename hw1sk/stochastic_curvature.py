"""Curvature beyond the top eigenvalues: Hessian trace and spectral density.

Randomized numerical linear algebra on Hessian-vector products, in the
spirit of PyHessian (Yao et al., 2020): the trace by Hutchinson's estimator
or Hutch++, the whole spectral density by stochastic Lanczos quadrature
(SLQ).  Every function can restrict itself to one block of the Hessian: the
rows and columns of the parameters selected by ``params`` (one layer, or
any set of parameters), with the other parameters held fixed.

The inputs are those of :mod:`hw1sk.curvature` (``module``, ``criterion``,
``X``, ``y``); the module is evaluated in eval mode, never modified, and the
products are computed in its own dtype (float64 for a float64 module).
Every stochastic estimate carries its standard error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.validation import check_array
from torch.func import functional_call

from ._inputs import eval_mode
from .curvature import _check_int, _check_positive_real, _prepare, _scalar_loss
from .seeding import torch_generator

__all__ = [
    "TraceEstimate",
    "hessian_trace",
    "SpectralDensity",
    "hessian_spectral_density",
    "exact_spectral_density",
]

_TRACE_METHODS = ("auto", "exact", "hutchinson", "hutch++")
_EXACT_MAX_PARAMS = 2000


# --------------------------------------------------------------------------- #
# parameter blocks and their Hessian-vector products
# --------------------------------------------------------------------------- #
def _matches(name, key):
    key = key.rstrip(".")
    return name == key or name.startswith(key + ".")


def _select_parameters(module, params):
    """Names of the parameters ``params`` selects, in ``named_parameters()`` order.

    ``None`` selects all of them; a string or each string of a list is a
    full parameter name or a dotted prefix (``"net.0"`` selects
    ``"net.0.weight"`` and ``"net.0.bias"``, not ``"net.01.weight"``).
    """
    names = [name for name, _ in module.named_parameters()]
    if params is None:
        return names
    keys = [params] if isinstance(params, str) else params
    if not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(
            f"params must be None, a parameter name or prefix, or a non-empty list of them, "
            f"got {params!r}."
        )
    for key in keys:
        if not any(_matches(name, key) for name in names):
            raise ValueError(
                f"params entry {key!r} matches no parameter of the module; its parameters "
                f"are {names}."
            )
    return [name for name in names if any(_matches(name, key) for key in keys)]


class _BlockHessianOperator:
    """``v -> H_BB v``: the Hessian block of the selected parameters ``B``.

    The loss is a function of the selected parameters only (flattened and
    concatenated in ``named_parameters()`` order), built with
    :func:`torch.func.functional_call`; the others and the buffers are fixed.
    The gradient graph is built once and every product is one double
    back-propagation through it.
    """

    def __init__(self, module, criterion, X, y, names):
        tensors = dict(module.named_parameters())
        fixed = {n: t.detach() for n, t in tensors.items() if n not in names}
        fixed.update(dict(module.named_buffers()))
        shapes = [tensors[n].shape for n in names]
        sizes = [tensors[n].numel() for n in names]
        self.theta = torch.cat([tensors[n].detach().reshape(-1) for n in names])
        self.theta.requires_grad_(True)
        self.size, self.n_products = self.theta.numel(), 0
        chunks = torch.split(self.theta, sizes)
        block = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        loss = _scalar_loss(criterion(functional_call(module, {**fixed, **block}, (X,)), y),
                            criterion)
        (g,) = torch.autograd.grad(loss, self.theta, create_graph=True, allow_unused=True)
        self._g = g

    @property
    def like(self):
        return self.theta.detach()

    def __call__(self, v):
        self.n_products += 1
        if self._g is None or not self._g.requires_grad:  # loss linear in the block
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(self._g, self.theta, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.detach()


def _block_operator(module, criterion, X, y, params):
    """The working module, data and block operator; the caller enters eval mode."""
    work, X, y = _prepare(module, criterion, X, y, None)
    names = _select_parameters(work, params)
    return work, lambda: _BlockHessianOperator(work, criterion, X, y, names)


def _rademacher(P, gen, like):
    return (torch.randint(0, 2, (P,), generator=gen, dtype=torch.int64) * 2 - 1).to(like)


# --------------------------------------------------------------------------- #
# trace
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TraceEstimate:
    """A Hessian trace and its uncertainty.

    Attributes
    ----------
    value : float
        The trace (exact, or the estimate).
    std_error : float
        Standard error of the estimate: 0.0 for ``"exact"``; NaN when only
        one probe was left to estimate it (Hutch++ with ``n_matvecs`` < 5).
    method : str
        The method used (``"auto"`` resolved).
    n_matvecs : int
        Hessian-vector products spent.
    """

    value: float
    std_error: float
    method: str
    n_matvecs: int


def _mean_and_error(samples):
    x = np.asarray(samples, dtype=np.float64)
    err = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return float(np.mean(x)), err


def _exact_trace(op):
    total, like = 0.0, op.like
    for i in range(op.size):
        e = torch.zeros_like(like)
        e[i] = 1
        total += float(op(e)[i])
    return total, 0.0


def _hutchinson(op, n, gen):
    samples = []
    for _ in range(n):
        z = _rademacher(op.size, gen, op.like)
        samples.append(float(z @ op(z)))
    return _mean_and_error(samples)


def _hutch_plus_plus(op, n, gen):
    """Meyer et al.'s Hutch++: exact on a sketched range, Hutchinson on the rest."""
    P, like = op.size, op.like
    k = min(n // 3, P)
    S = torch.stack([_rademacher(P, gen, like) for _ in range(k)], dim=1)
    HS = torch.stack([op(S[:, j]) for j in range(k)], dim=1)
    Q, _ = torch.linalg.qr(HS)  # orthonormal even when H S is rank deficient
    top = sum(float(Q[:, j] @ op(Q[:, j])) for j in range(Q.shape[1]))
    samples = []
    for _ in range(n - 2 * k):
        g = _rademacher(P, gen, like)
        h = g - Q @ (Q.T @ g)
        samples.append(float(h @ op(h)))
    rest, err = _mean_and_error(samples)
    return top + rest, err


def _check_trace_args(method, n_matvecs):
    if method not in _TRACE_METHODS:
        raise ValueError(f"method must be one of {_TRACE_METHODS}, got {method!r}.")
    n_matvecs = _check_int(n_matvecs, "n_matvecs")
    if method == "hutchinson" and n_matvecs < 2:
        raise ValueError(
            f"method='hutchinson' needs n_matvecs >= 2 for a standard error, got {n_matvecs}."
        )
    if method in ("hutch++", "auto") and n_matvecs < 3:
        raise ValueError(
            f"method={method!r} needs n_matvecs >= 3 (sketch, its products and probes), "
            f"got {n_matvecs}."
        )
    return n_matvecs


def hessian_trace(module, criterion, X, y, method="auto", n_matvecs=100, random_state=None,
                  params=None):
    """Trace of the loss Hessian (or of one of its blocks), exact or estimated.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`hw1sk.curvature.loss_hessian`; products are computed in
        the module's dtype.
    method : {"auto", "exact", "hutchinson", "hutch++"}, default="auto"
        ``"exact"``: the sum of the diagonal, ``e_i^T H e_i`` over the ``P``
        parameters of the block (``P`` products).  ``"hutchinson"``: the mean
        of ``z^T H z`` over ``n_matvecs`` Rademacher probes ``z``; standard
        error ``std(ddof=1) / sqrt(n_matvecs)``.  ``"hutch++"``: ``k =
        n_matvecs // 3`` products sketch ``Q = orth(H S)`` (Rademacher
        ``S``), ``trace(Q^T H Q)`` is computed exactly with ``k`` more, and
        the remaining ``n_matvecs - 2k`` Rademacher probes estimate the
        trace of the deflated ``(I - QQ^T) H (I - QQ^T)``; the standard error
        is that of the remainder.  ``"auto"``: ``"exact"`` when ``P <= 2000``,
        else ``"hutch++"``.
    n_matvecs : int, default=100
        Budget of Hessian-vector products of the stochastic methods (>= 2 for
        Hutchinson, >= 3 for Hutch++ and ``"auto"``).
    random_state : int, RandomState or None
        The probes.
    params : str or list of str, optional
        Parameter names or dotted prefixes (``"net.0"``) selecting a block;
        the trace is then that of the Hessian block of those parameters,
        the others held fixed.  All parameters by default.

    Returns
    -------
    estimate : TraceEstimate

    See Also
    --------
    hessian_spectral_density, hw1sk.curvature.loss_hessian

    References
    ----------
    M. F. Hutchinson, "A stochastic estimator of the trace of the influence
    matrix for Laplacian smoothing splines", Communications in Statistics -
    Simulation and Computation 19(2), 1990.

    R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal
    Stochastic Trace Estimation", SOSA 2021.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from hw1sk.stochastic_curvature import hessian_trace
    >>> X = torch.tensor([[1.0], [2.0]]); y = torch.zeros(2, 1)
    >>> hessian_trace(nn.Linear(1, 1), nn.MSELoss(), X, y).value
    7.0
    """
    n_matvecs = _check_trace_args(method, n_matvecs)
    work, make_op = _block_operator(module, criterion, X, y, params)
    gen = torch_generator(random_state)
    with eval_mode(work):
        op = make_op()
        if method == "auto":
            method = "exact" if op.size <= _EXACT_MAX_PARAMS else "hutch++"
        if method == "exact":
            value, err = _exact_trace(op)
        elif method == "hutchinson":
            value, err = _hutchinson(op, n_matvecs, gen)
        else:
            value, err = _hutch_plus_plus(op, n_matvecs, gen)
    return TraceEstimate(value=value, std_error=err, method=method, n_matvecs=op.n_products)



# --------------------------------------------------------------------------- #
# spectral density: stochastic Lanczos quadrature
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SpectralDensity:
    """A smoothed Hessian eigenvalue density from stochastic Lanczos quadrature.

    Attributes
    ----------
    grid : numpy.ndarray of shape (n_grid,)
        Where the density is evaluated.
    density : numpy.ndarray of shape (n_grid,)
        The Gaussian-broadened spectral density (integrates to about 1 when
        the grid covers the spectrum and resolves the broadening).
    nodes : numpy.ndarray of shape (n_probes, n_iter)
        Ritz values of each probe's Lanczos tridiagonal (the quadrature nodes),
        ascending.  ``n_iter`` is capped at the block size; a probe whose
        Krylov space closes early repeats its last node with weight 0.
    weights : numpy.ndarray of shape (n_probes, n_iter)
        Squared first components of the tridiagonal's eigenvectors; each row
        sums to 1.
    sigma : float
        Standard deviation of the Gaussian broadening.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float


def _gaussian_mixture(nodes, weights, grid, sigma):
    """``sum_i weights_i N(grid; nodes_i, sigma^2)`` for flat ``nodes``, ``weights``."""
    z = (grid[None, :] - nodes[:, None]) / sigma
    return weights @ np.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))


def _lanczos_quadrature(op, v, m):
    """Nodes and weights of ``m`` Lanczos steps from unit ``v`` (full reorthogonalization)."""
    V = torch.zeros(m, op.size, dtype=v.dtype, device=v.device)
    V[0] = v
    alpha, beta = [], []
    for j in range(m):
        w = op(V[j])
        alpha.append(float(w @ V[j]))
        for _ in range(2):  # twice: Krylov vectors lose orthogonality fast
            w = w - V[:j + 1].T @ (V[:j + 1] @ w)
        b = float(torch.linalg.vector_norm(w))
        scale = max(abs(a) for a in alpha) + max(beta, default=0.0)
        if j + 1 == m or b <= 100 * torch.finfo(v.dtype).eps * max(scale, 1e-300):
            break  # the Krylov space is invariant: the quadrature is exact
        beta.append(b)
        V[j + 1] = w / b
    T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    theta, S = np.linalg.eigh(T)
    nodes, weights = np.full(m, theta[-1]), np.zeros(m)
    nodes[:theta.size], weights[:theta.size] = theta, S[0] ** 2
    return nodes, weights


def _density_grid(nodes, grid, n_grid, sigma):
    lo, hi = float(nodes.min()), float(nodes.max())
    if sigma is None:
        spread = hi - lo if hi > lo else max(abs(hi), 1.0)
        sigma = 0.01 * spread
    sigma = _check_positive_real(sigma, "sigma")
    if grid is None:
        grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid)
    else:
        grid = check_array(grid, ensure_2d=False, dtype=np.float64, input_name="grid")
        if grid.ndim != 1:
            raise ValueError(f"grid must be 1-D, got shape {grid.shape}.")
    return grid, sigma


def hessian_spectral_density(module, criterion, X, y, n_probes=10, n_iter=80, grid=None,
                             n_grid=1000, sigma=None, random_state=None, params=None):
    """Eigenvalue density of the loss Hessian (or a block) by stochastic Lanczos quadrature.

    For each of ``n_probes`` Gaussian probes ``v`` (normalized), ``n_iter``
    steps of Lanczos with full reorthogonalization on Hessian-vector products
    give a tridiagonal ``T``; its eigenvalues ``theta_i`` (Ritz values) and
    the squared first components ``w_i`` of its eigenvectors are the
    Gauss quadrature of the probe's spectral measure ``sum_j (v . u_j)^2
    delta(lambda_j)``, whose expectation is the spectral density ``(1/P)
    sum_j delta(lambda_j)``.  The returned density is the average over probes
    of ``sum_i w_i N(grid; theta_i, sigma^2)``.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`hw1sk.curvature.loss_hessian`; products are computed in
        the module's dtype.
    n_probes : int, default=10
    n_iter : int, default=80
        Lanczos steps per probe (capped at the number of parameters of the
        block, where Lanczos is exact).
    grid : array-like of shape (n_grid,), optional
        Where to evaluate the density; by default ``n_grid`` points from the
        smallest Ritz value minus ``5 sigma`` to the largest plus ``5 sigma``.
    n_grid : int, default=1000
    sigma : float, optional
        Standard deviation of the Gaussian broadening; by default 1% of the
        range of the Ritz values.
    random_state : int, RandomState or None
        The probes.
    params : str or list of str, optional
        Parameter names or dotted prefixes selecting a Hessian block, as in
        :func:`hessian_trace`.

    Returns
    -------
    density : SpectralDensity

    See Also
    --------
    exact_spectral_density, hessian_trace

    References
    ----------
    B. Ghorbani, S. Krishnan, Y. Xiao, "An Investigation into Neural Net
    Optimization via Hessian Eigenvalue Density", ICML 2019.

    Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney, "PyHessian: Neural
    Networks Through the Lens of the Hessian", IEEE Big Data 2020.
    """
    n_probes = _check_int(n_probes, "n_probes")
    n_iter = _check_int(n_iter, "n_iter")
    n_grid = _check_int(n_grid, "n_grid", minimum=2)
    work, make_op = _block_operator(module, criterion, X, y, params)
    gen = torch_generator(random_state)
    with eval_mode(work):
        op = make_op()
        m = min(n_iter, op.size)
        nodes, weights = np.empty((n_probes, m)), np.empty((n_probes, m))
        for p in range(n_probes):
            v = torch.randn(op.size, generator=gen, dtype=torch.float64).to(op.like)
            nodes[p], weights[p] = _lanczos_quadrature(op, v / torch.linalg.vector_norm(v), m)
    grid, sigma = _density_grid(nodes, grid, n_grid, sigma)
    density = _gaussian_mixture(nodes.ravel(), weights.ravel(), grid, sigma) / n_probes
    return SpectralDensity(grid=grid, density=density, nodes=nodes, weights=weights, sigma=sigma)


def exact_spectral_density(eigenvalues, grid, sigma):
    """An eigenvalue list broadened as :func:`hessian_spectral_density` broadens Ritz values.

    ``(1/P) sum_j N(grid; lambda_j, sigma^2)``: for small networks, the exact
    spectrum (:func:`hw1sk.curvature.hessian_eigenvalues`) on the same grid
    and with the same ``sigma`` as an SLQ estimate.

    Parameters
    ----------
    eigenvalues : array-like of shape (P,)
    grid : array-like of shape (n_grid,)
    sigma : float
        Standard deviation of the Gaussian broadening.

    Returns
    -------
    density : numpy.ndarray of shape (n_grid,)

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.stochastic_curvature import exact_spectral_density
    >>> d = exact_spectral_density([0.0, 1.0], np.linspace(-1, 2, 301), 0.05)
    >>> round(float(np.trapezoid(d, np.linspace(-1, 2, 301))), 6)
    1.0
    """
    lam = check_array(eigenvalues, ensure_2d=False, dtype=np.float64, input_name="eigenvalues")
    grid = check_array(grid, ensure_2d=False, dtype=np.float64, input_name="grid")
    if lam.ndim != 1 or grid.ndim != 1:
        raise ValueError(
            f"eigenvalues and grid must be 1-D, got shapes {lam.shape} and {grid.shape}."
        )
    sigma = _check_positive_real(sigma, "sigma")
    return _gaussian_mixture(lam, np.full(lam.size, 1.0 / lam.size), grid, sigma)
