"""Curvature of the training loss: exact Hessian, spectrum, minimal ratio, HVPs.

Pure analysis functions of a torch module, a criterion and data: no
plotting, no file IO.  Every function takes

- ``module``: a :class:`torch.nn.Module`; its parameters, in the flat layout
  of :mod:`hw1sk.parameters`, are the variables;
- ``criterion``: ``criterion(output, y) -> scalar tensor``, averaging over
  the samples (e.g. ``nn.MSELoss()``); the loss is ``criterion(module(X), y)``;
- ``X, y``: torch tensors or numpy arrays.

The module is evaluated in eval mode (its training flags are restored
afterwards; BatchNorm on its running statistics, or with
``bn_mode="train-batch"`` on the statistics of the batch, see
:func:`hw1sk._inputs.analysis_mode`) and never modified.  Moving the
parameters to a point of near-zero gradient, before the Hessian is
examined, is :func:`hw1sk.critical_points.minimize_gradient_norm`.
:func:`hessian_batch_spread` says whether a batch is large enough for its
Hessian to describe the loss.

Exact Hessians of small networks (the HW1 "minimal ratio" study) are computed
in float64.  For a chain of ``nn.Linear`` layers and elementwise activations
(:class:`hw1sk.models.MLP`, a plain :class:`torch.nn.Sequential`), the
Hessian is assembled from per-sample Jacobians between pre-activations and
matrix products (the Hessian back-propagation of Dangel et al., 2020), which
is exact and about 15 times faster than one Hessian-vector product per
parameter (``benchmarks/bench_hessian.py``); any other module gets one exact
Hessian-vector product per parameter.  Larger models get their top eigenvalues by Lanczos iteration on
Hessian-vector products; their trace (Hutchinson, Hutch++) and spectral
density (stochastic Lanczos quadrature), with standard errors and per
parameter block, are in :mod:`hw1sk.stochastic_curvature`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils.validation import check_array, check_consistent_length
from torch import nn

from ._inputs import (
    analysis_mode,
    as_input_tensor,
    as_target_tensor,
    check_bn_mode,
    check_finite,
    check_module,
    eval_mode,
    module_device,
    module_dtype,
    working_module,
)
from .models import ACTIVATIONS, MLP
from .parameters import flatten_parameters, functional_loss
from .seeding import as_seed, torch_generator

__all__ = [
    "loss_hessian",
    "hessian_eigenvalues",
    "MinimalRatio",
    "minimal_ratio",
    "hessian_minimal_ratio",
    "minimal_ratio_tolerance_sweep",
    "gradient_norm",
    "hessian_vector_product",
    "top_hessian_eigenvalues",
    "HessianBatchSpread",
    "SmallHessianBatchWarning",
    "hessian_batch_spread",
]

_HESSIAN_METHODS = ("auto", "structured", "hvp")
_EIGEN_METHODS = ("lanczos", "power")


# --------------------------------------------------------------------------- #
# input checks and module handling
# --------------------------------------------------------------------------- #
def _check_criterion(criterion):
    if not callable(criterion):
        raise TypeError(f"criterion must be callable(output, y), got {criterion!r}.")
    return criterion


def _check_float_dtype(dtype, name="dtype"):
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating torch.dtype, got {dtype!r}.")
    return dtype


def _prepare(module, criterion, X, y, dtype):
    """The working module (in ``dtype``) and the data as tensors on its device."""
    check_module(module, require_parameters=True)
    _check_criterion(criterion)
    dtype = module_dtype(module) if dtype is None else _check_float_dtype(dtype)
    work, device = working_module(module, dtype=dtype)
    X = as_input_tensor(X, dtype, device)
    y = as_target_tensor(y, dtype, device)
    check_consistent_length(X, y)
    return work, X, y


def _check_int(value, name, minimum=1):
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_positive_real(value, name, allow_zero=False):
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}.")
    return float(value)


def _scalar_loss(loss, criterion):
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise ValueError(
            f"criterion must return a scalar tensor (use reduction='mean'), got "
            f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}."
        )
    return loss.reshape(())


# --------------------------------------------------------------------------- #
# exact Hessian: the structured path for Linear / elementwise chains
# --------------------------------------------------------------------------- #
_ELEMENTWISE = tuple(set(ACTIVATIONS.values()))


def _linear_chain(module):
    """``(pre, layers)`` when ``module`` is a chain of Linear layers and activations.

    ``pre``: input transforms (``Flatten`` and activations before the first
    linear layer); ``layers``: list of ``(linear, activations after it)``, the
    last layer's activations being the tail that ends the network.  Only
    exact :class:`~hw1sk.models.MLP`, :class:`torch.nn.Sequential` and
    :class:`torch.nn.Linear` instances qualify (their forward is known), and
    only when their parameters are exactly the linear layers' in flat-layout
    order.  Anything else returns ``None``.
    """
    if type(module) is MLP:
        items = [module.net]
    elif type(module) in (nn.Sequential, nn.Linear):
        items = [module]
    else:
        return None
    flat = []
    while items:  # expand nested plain Sequentials in order
        item = items.pop(0)
        if type(item) is nn.Sequential:
            items = list(item) + items
        else:
            flat.append(item)
    pre, layers = [], []
    for item in flat:
        if type(item) is nn.Linear:
            layers.append((item, []))
        elif type(item) in _ELEMENTWISE and not getattr(item, "inplace", False):
            (layers[-1][1] if layers else pre).append(item)
        elif type(item) is nn.Flatten and not layers and item.end_dim == -1:
            pre.append(item)
        else:
            return None
    if not layers:
        return None
    expected = [p for lin, _ in layers for p in (lin.weight, lin.bias) if p is not None]
    actual = list(module.parameters())
    if len(expected) != len(actual) or any(a is not b for a, b in zip(expected, actual)):
        return None
    return pre, layers


def _compose(mods):
    def apply(a):
        for m in mods:
            a = m(a)
        return a
    return apply


def _elementwise_derivatives(mods, a):
    """First and second derivatives of the elementwise map ``mods`` at ``a``.

    For an elementwise map, the gradient of the sum is the derivative at each
    entry; once more gives the second derivative.
    """
    with torch.enable_grad():
        a = a.detach().requires_grad_(True)
        z = _compose(mods)(a)
        if not z.requires_grad:  # no activation at all: the identity
            return torch.ones_like(a), torch.zeros_like(a)
        (d1,) = torch.autograd.grad(z.sum(), a, create_graph=True)
        if not d1.requires_grad:  # piecewise-linear map: no curvature
            return d1.detach(), torch.zeros_like(a)
        (d2,) = torch.autograd.grad(d1.sum(), a, allow_unused=True)
    return d1.detach(), torch.zeros_like(a) if d2 is None else d2


def _closed_form_output_blocks(criterion, F, y):
    """``(blocks, gradient)`` of a plain MSE or cross-entropy in the outputs ``F``.

    ``F`` is ``(..., n, k)`` (leading dimensions: stacked copies of a net,
    each scored against the same ``y``); ``blocks`` are the per-sample
    ``(..., n, k, k)`` Hessians of the loss in ``F``, ``gradient`` its
    gradient.  ``nn.MSELoss`` (mean or sum) with float targets of ``F``'s
    sample shape gives ``c I`` and ``c (F - y)``, ``c = 2 / (n k)`` or 2;
    ``nn.CrossEntropyLoss`` (mean or sum) on class indices, without class
    weights, label smoothing or ignored targets, gives
    ``(diag(p) - p p^T) / s`` and ``(p - onehot(y)) / s``, ``p`` the
    softmax, ``s = n`` or 1.  Anything else gives ``(None, None)``; the
    caller then takes the blocks from double back-propagation
    (:func:`_output_hessian_blocks`).
    """
    F = F.detach()
    n, k = F.shape[-2:]
    mean = getattr(criterion, "reduction", None) == "mean"
    if getattr(criterion, "reduction", None) not in ("mean", "sum") or not torch.is_tensor(y):
        return None, None
    if (type(criterion) is nn.MSELoss and y.shape == F.shape[-2:] and y.dtype == F.dtype):
        c = 2 / (n * k) if mean else 2.0
        blocks = torch.eye(k, dtype=F.dtype, device=F.device).mul_(c)
        return blocks.expand(*F.shape[:-1], k, k), (F - y).mul_(c)
    if (type(criterion) is nn.CrossEntropyLoss and criterion.weight is None
            and criterion.label_smoothing == 0 and y.dim() == 1 and y.shape[0] == n
            and not y.dtype.is_floating_point and not bool((y == criterion.ignore_index).any())):
        p = torch.softmax(F, dim=-1)
        blocks = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
        grad = p - nn.functional.one_hot(y, k).to(p.dtype)
        return (blocks / n, grad / n) if mean else (blocks, grad)
    return None, None


def _output_hessian_blocks(head, F):
    """Per-sample ``(n, k, k)`` Hessian blocks of ``head(F)`` w.r.t. the outputs ``F``.

    Returns ``(blocks, gradient)``; ``(None, None)`` when the loss couples
    different samples (a random probe disagrees with the block-diagonal
    product), which the structured path cannot represent.
    """
    n, k = F.shape
    F = F.detach().requires_grad_(True)
    # double back-propagation: torch.func's jvp-of-grad trips over criteria with targets
    (g,) = torch.autograd.grad(head(F), F, create_graph=True)

    def hvp(V):
        if not g.requires_grad:  # loss linear in the outputs
            return torch.zeros_like(V)
        (out,) = torch.autograd.grad(g, F, V, retain_graph=True, allow_unused=True)
        return torch.zeros_like(V) if out is None else out.detach()

    blocks = torch.empty(n, k, k, dtype=F.dtype, device=F.device)
    for c in range(k):
        E = torch.zeros_like(F)
        E[:, c] = 1
        blocks[:, :, c] = hvp(E)
    gen = torch.Generator(device=F.device).manual_seed(0)
    V = torch.randn(F.shape, generator=gen, dtype=F.dtype, device=F.device)
    full = hvp(V)
    block = (blocks @ V[:, :, None])[:, :, 0]
    scale = full.abs().max() + block.abs().max()
    if (full - block).abs().max() > 1e3 * torch.finfo(F.dtype).eps * scale:
        return None, None
    return blocks, g.detach()


def _structured_hessian(module, criterion, X, y, chunk_size=None):
    """Exact Hessian of ``criterion(module(X), y)`` for a Linear/activation chain.

    With ``a_m`` the pre-activations of layer ``m``, ``zhat_m`` its input with
    a 1 appended for the bias, ``G_{l,m} = d a_l / d a_m`` and ``g_{a_m}`` the
    back-propagated gradient, the Hessian is the sum of three exact terms:

    - output curvature: ``sum_i J_i^T (d2 loss / d out2)_i J_i``, ``J_i`` the
      per-sample Jacobian of the output (the Gauss-Newton part);
    - activation curvature: block ``(m, m2)``, ``m <= m2``, is ``sum_i
      (G_{m2,m}^T Q_m2)_i (x) zhat_m,i zhat_m2,i^T``, where ``Q_m`` follows the
      Hessian back-propagation ``Q_m = B_m^T Q_{m+1} B_m + diag(g_z sigma'')``,
      ``B_m = W_{m+1} diag(sigma'(a_m))``, started from ``Q_L = 0``;
    - the bilinear term of ``W_m2 z``: for ``m < m2``, ``sum_i g_{a_m2,i} (x)
      d z_{m2-1,i} / d W_m``.

    Returns ``None`` when ``module`` is not such a chain (or the criterion
    couples samples); the caller then falls back to Hessian-vector products.
    """
    chain = _linear_chain(module)
    if chain is None:
        return None
    pre, layers = chain
    L = len(layers)
    with torch.no_grad():
        z = _compose(pre)(X)
    if z.ndim != 2:
        return None
    dtype, device = z.dtype, z.device
    Ws = [lin.weight.detach() for lin, _ in layers]
    has_bias = [lin.bias is not None for lin, _ in layers]
    inputs, s1, s2 = [], [], []
    with torch.no_grad():
        for m, (lin, acts) in enumerate(layers):
            inputs.append(z)
            bias = None if lin.bias is None else lin.bias.detach()
            a = torch.nn.functional.linear(z, Ws[m], bias)
            if m < L - 1:
                d1, d2 = _elementwise_derivatives(acts, a)
                s1.append(d1)
                s2.append(d2)
                z = _compose(acts)(a)
        F = a
        tail = _compose(layers[-1][1])
        # the forward above must be the module's: a guard against surprises in the chain
        out = module(X)
        eps = torch.finfo(dtype).eps
        if out.shape != F.shape or not torch.allclose(tail(F), out, rtol=1e3 * eps, atol=1e3 * eps):
            return None

    def head(out):
        return _scalar_loss(criterion(tail(out), y), criterion)

    Hout, gF = _output_hessian_blocks(head, F)
    if Hout is None:
        return None
    # back-propagated gradients w.r.t. pre-activations, and activation curvature
    gA, curv = [None] * L, [None] * L
    gA[L - 1] = gF
    for m in range(L - 2, -1, -1):
        gz = gA[m + 1] @ Ws[m + 1]
        gA[m] = gz * s1[m]
        curv[m] = gz * s2[m]

    widths = [W.shape[0] for W in Ws]
    fan_in = [W.shape[1] for W in Ws]
    aug = [fan_in[m] + int(has_bias[m]) for m in range(L)]
    sizes = [widths[m] * aug[m] for m in range(L)]
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    P, k, n = offsets[-1], widths[-1], X.shape[0]
    H = torch.zeros(P, P, dtype=dtype, device=device)
    # cross-layer terms are filled on one side only (see below), then mirrored
    cross = torch.zeros(P, P, dtype=dtype, device=device)
    if chunk_size is None:  # keep the largest per-chunk tensor near 2M entries
        per_sample = max(
            [k * P]
            + [widths[m] * widths[m2] * max(aug[m], fan_in[m2]) for m in range(L) for m2 in range(m, L)]
        )
        chunk_size = max(1, min(n, 2_000_000 // per_sample))

    def block(m, m2, M=H):
        return M[offsets[m]:offsets[m + 1], offsets[m2]:offsets[m2 + 1]]

    def as_units(m, m2, M=H):  # block (m, m2) viewed as (unit, input, unit2, input2)
        return block(m, m2, M).view(widths[m], aug[m], widths[m2], aug[m2])

    def kron_sum(Q, zh, zh2):
        # sum_i Q_i (x) zh_i zh2_i^T, arranged (unit, input) x (unit2, input2)
        c, h, h2 = Q.shape
        Z = (zh[:, :, None] * zh2[:, None, :]).reshape(c, -1)
        R = (Q.reshape(c, -1).T @ Z).reshape(h, h2, zh.shape[1], zh2.shape[1])
        return R.permute(0, 2, 1, 3).reshape(h * zh.shape[1], h2 * zh2.shape[1])

    for start in range(0, n, chunk_size):
        sl = slice(start, min(start + chunk_size, n))
        c = sl.stop - sl.start
        ones = torch.ones(c, 1, dtype=dtype, device=device)
        zh = [torch.cat([inputs[m][sl], ones], 1) if has_bias[m] else inputs[m][sl]
              for m in range(L)]
        B = [Ws[m + 1][None] * s1[m][sl][:, None, :] for m in range(L - 1)]

        # output curvature: per-sample output Jacobian J (c, k, P), then J^T Hout J
        J = torch.zeros(c, k, P, dtype=dtype, device=device)
        G = None  # d out / d a_m; None stands for the identity (m = L - 1)
        for m in range(L - 1, -1, -1):
            Jm = J[:, :, offsets[m]:offsets[m + 1]].view(c, k, widths[m], aug[m])
            if G is None:
                idx = torch.arange(k, device=device)
                Jm[:, idx, idx, :] = zh[m][:, None, :]
            else:
                Jm.copy_(G[:, :, :, None] * zh[m][:, None, None, :])
            if m > 0:
                G = B[m - 1] if G is None else G @ B[m - 1]
        HJ = Hout[sl] @ J
        H.addmm_(J.reshape(c * k, P).T, HJ.reshape(c * k, P))

        # activation curvature: Q[m] is None (zero), a vector (diagonal) or dense
        Q = [None] * L
        for m in range(L - 2, -1, -1):
            if Q[m + 1] is None:
                Q[m] = curv[m][sl]
                continue
            Bt = B[m].transpose(1, 2)
            prop = (Bt * Q[m + 1][:, None, :] if Q[m + 1].ndim == 2 else Bt @ Q[m + 1]) @ B[m]
            prop.diagonal(dim1=1, dim2=2).add_(curv[m][sl])
            Q[m] = prop
        for m in range(L):
            if Q[m] is not None and Q[m].ndim == 2:  # diagonal: block-diagonal over units
                T = ((Q[m][:, :, None] * zh[m][:, None, :]).reshape(c, -1).T @ zh[m]
                     ).reshape(widths[m], aug[m], aug[m])
                idx = torch.arange(widths[m], device=device)
                as_units(m, m)[idx, :, idx, :] += T
            elif Q[m] is not None:
                block(m, m).add_(kron_sum(Q[m], zh[m], zh[m]))
            G = None  # d a_m2 / d a_m; None stands for the identity (m2 == m)
            for m2 in range(m + 1, L):
                # bilinear term: W_m2 (row j, input k) against layer m, through z_{m2-1}
                gA2 = gA[m2][sl]
                Rb = as_units(m2, m, cross)[:, :fan_in[m2]]
                if G is None:
                    # d z_{m2-1,k} / d a_m,p = delta_kp sigma'_k: only k == p survives
                    T = (gA2.T @ (s1[m2 - 1][sl][:, :, None] * zh[m][:, None, :]).reshape(c, -1)
                         ).reshape(widths[m2], widths[m], aug[m])
                    idx = torch.arange(widths[m], device=device)
                    Rb[:, idx, idx, :] += T
                else:
                    D = s1[m2 - 1][sl][:, :, None] * G  # c x h_{m2-1} x h_m
                    Rb += (gA2.T @ (D[:, :, :, None] * zh[m][:, None, None, :]).reshape(c, -1)
                           ).reshape(widths[m2], fan_in[m2], widths[m], aug[m])
                G = B[m] if G is None else B[m2 - 1] @ G
                # activation curvature between layers m and m2: G_{m2,m}^T Q_m2
                if Q[m2] is not None:
                    Gt = G.transpose(1, 2)
                    Qm = Gt * Q[m2][:, None, :] if Q[m2].ndim == 2 else Gt @ Q[m2]
                    block(m, m2, cross).add_(kron_sum(Qm, zh[m], zh[m2]))
    H += cross + cross.T
    # augmented layout (unit, input..., bias) -> flat layout (weight row-major, then bias)
    perm = []
    for m in range(L):
        idx = np.arange(sizes[m]).reshape(widths[m], aug[m]) + offsets[m]
        perm.append(idx[:, :fan_in[m]].reshape(-1))
        if has_bias[m]:
            perm.append(idx[:, fan_in[m]])
    perm = torch.as_tensor(np.concatenate(perm), device=device)
    return H[perm][:, perm]


def _hvp_hessian(module, criterion, X, y):
    """Exact Hessian, one double-backward Hessian-vector product per parameter."""
    loss_fn, theta = functional_loss(module, criterion, X, y)
    theta = theta.requires_grad_(True)
    P = theta.numel()
    loss = _scalar_loss(loss_fn(theta), criterion)
    (g,) = torch.autograd.grad(loss, theta, create_graph=True)
    H = torch.zeros(P, P, dtype=theta.dtype, device=theta.device)
    if not g.requires_grad:  # the loss is linear in the parameters
        return H
    for i in range(P):
        e = torch.zeros(P, dtype=theta.dtype, device=theta.device)
        e[i] = 1
        (row,) = torch.autograd.grad(g, theta, e, retain_graph=True, allow_unused=True)
        if row is not None:
            H[i] = row
    return H


def loss_hessian(module, criterion, X, y, dtype=torch.float64, method="auto", chunk_size=None,
                 bn_mode="eval"):
    """Exact Hessian of the loss w.r.t. all parameters of ``module``.

    Parameters
    ----------
    module : torch.nn.Module
        Not modified: it is copied when its dtype differs from ``dtype``.
    criterion : callable
        ``criterion(output, y) -> scalar``, the mean loss over the samples.
    X : array-like or torch.Tensor of shape (n_samples, ...)
    y : array-like or torch.Tensor of shape (n_samples, ...)
    dtype : torch.dtype, default=torch.float64
        Precision of the computation.
    method : {"auto", "structured", "hvp"}, default="auto"
        ``"structured"``: Hessian back-propagation for chains of ``nn.Linear``
        and elementwise activations (:class:`~hw1sk.models.MLP`, plain
        ``nn.Sequential``) with a criterion that is a sum/mean of per-sample
        terms; ``"hvp"``: one exact Hessian-vector product per parameter (any
        module); ``"auto"``: the first when it applies, else the second.
    chunk_size : int, optional
        Samples processed at once by the structured path (memory bound);
        chosen automatically by default.
    bn_mode : {"eval", "train-batch"}, default="eval"
        BatchNorm layers normalize with their running statistics
        (``"eval"``) or with the statistics of ``X`` (``"train-batch"``, as
        in training), without updating the running statistics.

    Returns
    -------
    H : torch.Tensor of shape (n_params, n_params)
        Symmetric (averaged with its transpose), in the flat parameter layout
        of :mod:`hw1sk.parameters`.

    See Also
    --------
    hessian_eigenvalues, hessian_vector_product

    References
    ----------
    F. Dangel, S. Harmeling, P. Hennig, "Modular Block-diagonal Curvature
    Approximations for Feedforward Architectures", AISTATS 2020.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from hw1sk.curvature import loss_hessian
    >>> X = torch.tensor([[1.0], [2.0]]); y = torch.zeros(2, 1)
    >>> loss_hessian(nn.Linear(1, 1), nn.MSELoss(), X, y)
    tensor([[5., 3.],
            [3., 2.]], dtype=torch.float64)
    """
    if method not in _HESSIAN_METHODS:
        raise ValueError(f"method must be one of {_HESSIAN_METHODS}, got {method!r}.")
    if chunk_size is not None:
        chunk_size = _check_int(chunk_size, "chunk_size")
    check_bn_mode(bn_mode)
    work, X, y = _prepare(module, criterion, X, y, _check_float_dtype(dtype))
    with analysis_mode(work, bn_mode):
        H = None
        if method in ("auto", "structured"):
            H = _structured_hessian(work, criterion, X, y, chunk_size)
            if H is None and method == "structured":
                raise ValueError(
                    "method='structured' needs a chain of nn.Linear layers and elementwise "
                    "activations (hw1sk.models.MLP or a plain nn.Sequential) and a criterion "
                    "that is a sum or mean of per-sample terms; use method='hvp'."
                )
        if H is None:
            H = _hvp_hessian(work, criterion, X, y)
    return (H + H.T) / 2


def hessian_eigenvalues(module, criterion, X, y, **hessian_params):
    """All eigenvalues of the exact float64 loss Hessian, ascending.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`loss_hessian`.
    **hessian_params
        Passed to :func:`loss_hessian` (``method``, ``chunk_size``).

    Returns
    -------
    eigenvalues : numpy.ndarray of shape (n_params,)
    """
    H = loss_hessian(module, criterion, X, y, **hessian_params)
    return torch.linalg.eigvalsh(H).cpu().numpy()


# --------------------------------------------------------------------------- #
# minimal ratio
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class MinimalRatio:
    """Sign census of a Hessian spectrum.

    Only negative eigenvalues show a saddle.  Eigenvalues inside the zero
    tolerance are flat directions (common in over-parameterized networks:
    symmetries, dead or redundant units); they lower the classic ``ratio``
    without meaning a saddle, so a minimum with many flat directions has
    ``ratio < 1`` but ``n_negative == 0`` and ``nonzero_ratio == 1``.

    Attributes
    ----------
    ratio : float
        Fraction of *all* eigenvalues greater than ``tol_used`` (HW1's
        "minimal ratio"; 1 only at a strict local minimum, where no direction
        is flat).
    n_positive : int
        Eigenvalues ``> tol_used``.
    n_negative : int
        Eigenvalues ``< -tol_used``.
    n_zero : int
        Eigenvalues with ``|lambda| <= tol_used``.
    tol_used : float
        The absolute tolerance that separated zero from nonzero.
    nonzero_ratio : float
        ``n_positive / (n_positive + n_negative)``: the fraction of positive
        eigenvalues among the non-zero ones; 1 at any local minimum (strict
        or flat), below 1 exactly when some direction curves down.  NaN when
        no eigenvalue is non-zero.  Computed from the counts when not given.
    """

    ratio: float
    n_positive: int
    n_negative: int
    n_zero: int
    tol_used: float
    nonzero_ratio: float | None = None

    def __post_init__(self):
        if self.nonzero_ratio is None:
            nonzero = self.n_positive + self.n_negative
            value = self.n_positive / nonzero if nonzero else math.nan
            object.__setattr__(self, "nonzero_ratio", value)

    @property
    def is_saddle(self):
        """True when some eigenvalue is below ``-tol_used`` (a direction curves down)."""
        return self.n_negative > 0


def _check_eigenvalues(eigenvalues):
    lam = check_array(eigenvalues, ensure_2d=False, dtype=np.float64, input_name="eigenvalues")
    if lam.ndim != 1:
        raise ValueError(f"eigenvalues must be 1-D, got shape {lam.shape}.")
    return lam


def _census(lam, tol, relative):
    scale = float(np.max(np.abs(lam)))
    if tol is None:
        tol, relative = lam.size * np.finfo(np.float64).eps, True
    tol = _check_positive_real(tol, "tol", allow_zero=True)
    t = tol * scale if relative else tol
    n_pos = int(np.sum(lam > t))
    n_neg = int(np.sum(lam < -t))
    return MinimalRatio(
        ratio=n_pos / lam.size, n_positive=n_pos, n_negative=n_neg,
        n_zero=int(lam.size - n_pos - n_neg), tol_used=float(t),
    )


def minimal_ratio(eigenvalues, tol=None, relative=True):
    """Fraction of Hessian eigenvalues that are positive (above numerical noise).

    An eigenvalue counts as positive when ``lambda > t``, negative when
    ``lambda < -t`` and zero otherwise, with ``t = tol * max|lambda|`` when
    ``relative`` and ``t = tol`` otherwise.  The default ``tol=None`` is
    ``n_eigenvalues * eps(float64)`` relative: the numerical-rank tolerance of
    :func:`numpy.linalg.matrix_rank`, i.e. what a float64 symmetric eigensolver
    cannot tell from 0.  ``ratio = n_positive / n_eigenvalues`` and
    ``nonzero_ratio = n_positive / (n_positive + n_negative)``.

    Only ``n_negative > 0`` (equivalently ``nonzero_ratio < 1``) shows a
    saddle.  Zero eigenvalues are flat directions: they lower ``ratio``
    without meaning a saddle, and how many there are depends on ``tol``
    (:func:`minimal_ratio_tolerance_sweep` shows by how much).

    Parameters
    ----------
    eigenvalues : array-like of shape (n,)
    tol : float, optional
        Zero tolerance (relative to ``max|lambda|`` when ``relative``).
    relative : bool, default=True

    Returns
    -------
    result : MinimalRatio

    See Also
    --------
    minimal_ratio_tolerance_sweep

    Examples
    --------
    >>> from hw1sk.curvature import minimal_ratio
    >>> r = minimal_ratio([-2.0, 0.0, 1.0, 3.0])
    >>> r.ratio, r.nonzero_ratio, r.n_zero
    (0.5, 0.6666666666666666, 1)
    >>> minimal_ratio([0.0, 0.0, 1.0, 3.0]).nonzero_ratio  # flat, but no saddle
    1.0
    """
    return _census(_check_eigenvalues(eigenvalues), tol, relative)


def minimal_ratio_tolerance_sweep(eigenvalues, tols, relative=True):
    """The sign census of one spectrum at several zero tolerances.

    Shows how much the classic ratio depends on the tolerance: as ``tol``
    grows, eigenvalues move from positive or negative into zero, so
    ``n_zero`` never decreases and ``n_positive``, ``n_negative`` and
    ``ratio`` never increase.  ``nonzero_ratio`` is usually far more stable.

    Parameters
    ----------
    eigenvalues : array-like of shape (n,)
    tols : array-like of float
        Tolerances, as ``tol`` in :func:`minimal_ratio` (``None`` entries
        mean its default); one row each, in the given order.
    relative : bool, default=True
        As in :func:`minimal_ratio`.

    Returns
    -------
    sweep : pandas.DataFrame
        Columns ``tol`` (as given; NaN for ``None``), ``tol_used``,
        ``n_positive``, ``n_negative``, ``n_zero``, ``ratio``,
        ``nonzero_ratio``.

    Examples
    --------
    >>> from hw1sk.curvature import minimal_ratio_tolerance_sweep
    >>> sweep = minimal_ratio_tolerance_sweep([-1.0, 1e-9, 2.0, 4.0], [0.0, 1e-6])
    >>> sweep[["n_zero", "ratio", "nonzero_ratio"]].to_numpy().tolist()
    [[0.0, 0.75, 0.75], [1.0, 0.5, 0.6666666666666666]]
    """
    import pandas as pd

    lam = _check_eigenvalues(eigenvalues)
    tols = list(np.atleast_1d(np.asarray(tols, dtype=object)))
    rows = []
    for tol in tols:
        r = _census(lam, None if tol is None else float(tol), relative)
        rows.append({"tol": math.nan if tol is None else float(tol), "tol_used": r.tol_used,
                     "n_positive": r.n_positive, "n_negative": r.n_negative,
                     "n_zero": r.n_zero, "ratio": r.ratio, "nonzero_ratio": r.nonzero_ratio})
    columns = ["tol", "tol_used", "n_positive", "n_negative", "n_zero", "ratio",
               "nonzero_ratio"]
    return pd.DataFrame(rows, columns=columns)


def hessian_minimal_ratio(module, criterion, X, y, tol=None, relative=True, **hessian_params):
    """:func:`minimal_ratio` of the exact float64 Hessian of the loss.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`loss_hessian`.
    tol, relative
        As in :func:`minimal_ratio`.
    **hessian_params
        Passed to :func:`loss_hessian`.

    Returns
    -------
    result : MinimalRatio
        Read ``n_negative`` / ``nonzero_ratio`` for saddles: zero
        eigenvalues (flat directions) lower ``ratio`` at a minimum too.
    """
    return minimal_ratio(hessian_eigenvalues(module, criterion, X, y, **hessian_params),
                         tol=tol, relative=relative)


# --------------------------------------------------------------------------- #
# gradient and Hessian-vector products
# --------------------------------------------------------------------------- #
def _loss_and_gradient(loss_fn, theta, criterion, create_graph=False):
    loss = _scalar_loss(loss_fn(theta), criterion)
    (g,) = torch.autograd.grad(loss, theta, create_graph=create_graph, allow_unused=True)
    if g is None:
        g = torch.zeros_like(theta)
    return loss, g


def gradient_norm(module, criterion, X, y, dtype=None):
    """Global L2 norm of the full-batch loss gradient over all parameters.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`loss_hessian`.
    dtype : torch.dtype, optional
        Precision of the computation; the module's own by default.

    Returns
    -------
    norm : float
    """
    work, X, y = _prepare(module, criterion, X, y, dtype)
    with eval_mode(work):
        loss_fn, theta = functional_loss(work, criterion, X, y)
        _, g = _loss_and_gradient(loss_fn, theta.requires_grad_(True), criterion)
    return float(torch.linalg.vector_norm(g))


class _HessianOperator:
    """``v -> H v`` for the mean loss, optionally accumulated over sample batches.

    With one batch the gradient graph is built once and reused by every
    product; with several, each product rebuilds one batch's graph at a time
    (memory stays that of one batch) and weights it by its share of samples.
    """

    def __init__(self, module, criterion, X, y, batch_size=None):
        self.module, self.criterion, self.X, self.y = module, criterion, X, y
        n = X.shape[0]
        size = n if batch_size is None else min(batch_size, n)
        self.batches = [slice(s, min(s + size, n)) for s in range(0, n, size)]
        self.n = n
        self.theta = flatten_parameters(module).requires_grad_(True)
        self.n_products = 0
        self._graph = self._gradient(self.batches[0]) if len(self.batches) == 1 else None

    def _gradient(self, sl):
        loss_fn, _ = functional_loss(self.module, self.criterion, self.X[sl], self.y[sl])
        return _loss_and_gradient(loss_fn, self.theta, self.criterion, create_graph=True)[1]

    def __call__(self, v):
        self.n_products += 1
        if self._graph is not None:
            return self._product(self._graph, v, retain=True)
        out = torch.zeros_like(v)
        for sl in self.batches:
            out += self._product(self._gradient(sl), v, retain=False) * ((sl.stop - sl.start) / self.n)
        return out

    def _product(self, g, v, retain):
        if not g.requires_grad:  # loss linear in the parameters
            return torch.zeros_like(v)
        (hv,) = torch.autograd.grad(g, self.theta, v, retain_graph=retain, allow_unused=True)
        return torch.zeros_like(v) if hv is None else hv.detach()


def hessian_vector_product(module, criterion, X, y, v, dtype=None, batch_size=None):
    """Product of the loss Hessian with a flat vector, without forming the Hessian.

    Computed by double back-propagation (the gradient of ``grad(L) . v``).

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`loss_hessian`.
    v : array-like or torch.Tensor of shape (n_params,)
        In the flat parameter layout of :mod:`hw1sk.parameters`.
    dtype : torch.dtype, optional
        Precision of the computation; the module's own by default.
    batch_size : int, optional
        Accumulate over batches of this many samples, weighted to the
        full-data mean (exact for criteria that average over samples).

    Returns
    -------
    Hv : torch.Tensor of shape (n_params,)
    """
    work, X, y = _prepare(module, criterion, X, y, dtype)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size")
    P = sum(p.numel() for p in work.parameters())
    v = torch.as_tensor(v).detach()
    if v.shape != (P,):
        raise ValueError(f"v has shape {tuple(v.shape)}, expected ({P},) for this module.")
    check_finite(v, "v")
    v = v.to(dtype=module_dtype(work), device=module_device(work))
    with eval_mode(work):
        return _HessianOperator(work, criterion, X, y, batch_size)(v)


# --------------------------------------------------------------------------- #
# top eigenvalues: Lanczos and power iteration
# --------------------------------------------------------------------------- #
def _random_unit(P, gen, like, against=None):
    v = torch.randn(P, generator=gen, dtype=torch.float64).to(like)
    if against is not None and against.shape[0]:
        for _ in range(2):
            v = v - against.T @ (against @ v)
    return v / torch.linalg.vector_norm(v)


def _ritz_errors(theta, resid):
    """Refined error bounds ``min(r, r^2 / gap)`` of the Ritz values ``theta``."""
    err = resid.copy()
    if theta.size > 1:
        dist = np.abs(theta[:, None] - theta[None, :]) - resid[None, :]
        np.fill_diagonal(dist, np.inf)
        gap = dist.min(axis=1)
        ok = gap > 0
        err[ok] = np.minimum(resid[ok], resid[ok] ** 2 / gap[ok])
    return err


def _lanczos(matvec, P, k, max_iter, tol, gen, like):
    """Largest ``k`` Ritz values of Lanczos with full reorthogonalization.

    Stops when the estimated error of each of the top ``k`` Ritz values is
    below ``tol`` times the largest Ritz value magnitude, or after
    ``max_iter`` products.  The estimate is the refined residual bound
    ``min(r, r^2 / gap)`` (Parlett, *The Symmetric Eigenvalue Problem*, 11.7):
    ``r = beta_m |s_m|`` is the Ritz pair's residual norm (itself a rigorous
    bound) and ``gap`` the distance to the other Ritz values, each widened by
    its own residual.
    """
    m_max = min(max_iter, P)
    V = torch.zeros(m_max + 1, P, dtype=like.dtype, device=like.device)
    alpha, beta = [], []
    V[0] = _random_unit(P, gen, like)
    theta = None
    for j in range(m_max):
        w = matvec(V[j])
        a = float(w @ V[j])
        # full reorthogonalization, twice: Krylov vectors lose orthogonality fast
        for _ in range(2):
            w = w - V[:j + 1].T @ (V[:j + 1] @ w)
        b = float(torch.linalg.vector_norm(w))
        alpha.append(a)
        T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
        theta, S = np.linalg.eigh(T)
        scale = max(float(np.max(np.abs(theta))), np.finfo(np.float64).tiny)
        if j + 1 >= k and np.all(_ritz_errors(theta, b * np.abs(S[-1]))[-k:] <= tol * scale):
            break
        if j + 1 == m_max:
            break
        if b <= 1e-10 * scale:
            # invariant subspace found: continue from a fresh direction orthogonal to it
            beta.append(0.0)
            V[j + 1] = _random_unit(P, gen, like, V[:j + 1])
        else:
            beta.append(b)
            V[j + 1] = w / b
    return theta[-k:]


def _power(matvec, P, k, max_iter, tol, gen, like):
    """Largest ``k`` algebraic eigenvalues by deflated, shifted power iteration.

    Power iteration finds the eigenvalue of largest magnitude; when that is
    negative (or ``k > 1``), the iteration is rerun on ``H + |lambda_dom| I``,
    whose order of eigenvalues is the algebraic one.  Each eigenvalue stops
    when its Rayleigh quotient changes by less than ``tol`` (relative).
    """
    found, values = [], []

    def run(shift, against):
        v = _random_unit(P, gen, like, against)
        lam = None
        for _ in range(max_iter):
            if against is not None:
                v = v - against.T @ (against @ v)
                v = v / torch.linalg.vector_norm(v)
            w = matvec(v) + shift * v
            new = float(w @ v)
            norm = torch.linalg.vector_norm(w)
            if norm == 0:
                return 0.0, v
            v = w / norm
            if lam is not None and abs(new - lam) <= tol * max(abs(new), 1e-30):
                lam = new
                break
            lam = new
        return lam, v

    dom, v = run(0.0, None)
    if dom >= 0 and k == 1:
        return np.array([dom])
    shift = abs(dom)
    for _ in range(k):
        against = torch.stack(found) if found else None
        lam, v = run(shift, against)
        found.append(v)
        values.append(lam - shift)
    return np.sort(np.array(values))


def top_hessian_eigenvalues(module, criterion, X, y, k=1, method="lanczos", max_iter=100,
                            tol=1e-6, batch_size=None, random_state=None,
                            dtype=torch.float32, bn_mode="eval"):
    """Largest ``k`` (algebraic) eigenvalues of the loss Hessian, from products only.

    For models too large for :func:`loss_hessian`.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`loss_hessian`; the module is never modified.
    k : int, default=1
        Number of eigenvalues; at most ``n_params``.
    method : {"lanczos", "power"}, default="lanczos"
        ``"lanczos"``: Lanczos with full reorthogonalization; stops when the
        estimated error of each of the top ``k`` Ritz values (the refined
        residual bound ``min(r, r^2/gap)``) is at most ``tol`` times the
        largest Ritz value.
        ``"power"``: power iteration with deflation (shifted when the dominant
        eigenvalue is negative); each eigenvalue stops when its Rayleigh
        quotient changes by less than ``tol`` (relative).  As any method started
        from one vector, eigenvalues of multiplicity > 1 may be returned once.
    max_iter : int, default=100
        Lanczos: Krylov dimension cap; power: iterations per eigenvalue.
    tol : float, default=1e-6
    batch_size : int, optional
        Accumulate each Hessian-vector product over batches of this many
        samples (memory of one batch), weighted to the full mean.
    random_state : int, RandomState or None
        Start vector.
    dtype : torch.dtype, default=torch.float32
        Precision of the products (the module is copied when it differs).
    bn_mode : {"eval", "train-batch"}, default="eval"
        BatchNorm layers normalize with their running statistics
        (``"eval"``) or with the statistics of the batch (``"train-batch"``:
        of ``X``, or of each batch of ``batch_size`` samples), without
        updating the running statistics.

    Returns
    -------
    eigenvalues : numpy.ndarray of shape (k,)
        Ascending.

    See Also
    --------
    hessian_batch_spread : how much the top eigenvalue varies between batches.
    """
    if method not in _EIGEN_METHODS:
        raise ValueError(f"method must be one of {_EIGEN_METHODS}, got {method!r}.")
    k = _check_int(k, "k")
    max_iter = _check_int(max_iter, "max_iter")
    tol = _check_positive_real(tol, "tol")
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size")
    check_bn_mode(bn_mode)
    work, X, y = _prepare(module, criterion, X, y, _check_float_dtype(dtype))
    P = sum(p.numel() for p in work.parameters())
    if k > P:
        raise ValueError(f"k={k} is larger than the number of parameters ({P}).")
    gen = torch_generator(random_state)
    with analysis_mode(work, bn_mode):
        op = _HessianOperator(work, criterion, X, y, batch_size)
        like = op.theta.detach()
        solver = _lanczos if method == "lanczos" else _power
        values = solver(op, P, k, max_iter, tol, gen, like)
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------- #
# how reliable is a small Hessian batch?
# --------------------------------------------------------------------------- #
class SmallHessianBatchWarning(UserWarning):
    """The top Hessian eigenvalue varies too much between batches of this size.

    Emitted by :func:`hessian_batch_spread` when the relative spread exceeds
    its threshold: curvature measured on one batch of that size says more
    about the batch than about the loss.
    """


@dataclass(frozen=True)
class HessianBatchSpread:
    """The top Hessian eigenvalue on disjoint batches of one size.

    Attributes
    ----------
    batch_size : int
    eigenvalues : numpy.ndarray of shape (n_batches,)
        The largest eigenvalue of the loss Hessian on each batch.
    mean : float
    std : float
        Standard deviation over the batches (``ddof=1``).
    relative_spread : float
        ``std / |mean|`` (infinite when the mean is 0).
    threshold : float
        Relative spread above which a :class:`SmallHessianBatchWarning` was
        emitted.
    reliable : bool
        ``relative_spread <= threshold``.
    """

    batch_size: int
    eigenvalues: np.ndarray
    mean: float
    std: float
    relative_spread: float
    threshold: float
    reliable: bool


def _rows(a, idx):
    if isinstance(a, torch.Tensor):
        return a[torch.as_tensor(idx, device=a.device)]
    return np.asarray(a)[idx]


def hessian_batch_spread(module, criterion, X, y, batch_size, n_batches=4, threshold=0.1,
                         max_iter=100, tol=1e-4, random_state=None, dtype=torch.float32,
                         bn_mode="eval"):
    """Relative spread of the top Hessian eigenvalue over disjoint batches; warns when large.

    ``n_batches`` disjoint batches of ``batch_size`` samples, drawn without
    replacement, each give the largest eigenvalue of their own loss Hessian
    (:func:`top_hessian_eigenvalues`, Lanczos).  When the spread
    ``std / |mean|`` exceeds ``threshold``, a
    :class:`SmallHessianBatchWarning` says that a Hessian computed on one
    batch of that size is not a reliable estimate of the full-data one:
    use larger batches, or accumulate products over several
    (``batch_size`` of :func:`top_hessian_eigenvalues`).

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`loss_hessian`.
    batch_size : int
        Samples per batch; ``batch_size * n_batches`` must not exceed the
        number of samples.
    n_batches : int, default=4
        At least 2.
    threshold : float, default=0.1
        Largest relative spread accepted without a warning.
    max_iter, tol, dtype
        As in :func:`top_hessian_eigenvalues`.
    random_state : int, RandomState or None
        The batches and the Lanczos start vectors.
    bn_mode : {"eval", "train-batch"}, default="eval"
        As in :func:`top_hessian_eigenvalues` (``"train-batch"``: each
        batch's own statistics).

    Returns
    -------
    spread : HessianBatchSpread

    Warns
    -----
    SmallHessianBatchWarning
        When ``spread.relative_spread > threshold``.

    Examples
    --------
    >>> import torch, warnings
    >>> from torch import nn
    >>> from hw1sk.curvature import hessian_batch_spread
    >>> X = torch.linspace(-1, 1, 400)[:, None]; y = torch.zeros(400, 1)
    >>> s = hessian_batch_spread(nn.Linear(1, 1), nn.MSELoss(), X, y, batch_size=100,
    ...                          random_state=0)
    >>> s.eigenvalues.shape, s.reliable
    ((4,), True)
    """
    n_batches = _check_int(n_batches, "n_batches", minimum=2)
    batch_size = _check_int(batch_size, "batch_size")
    threshold = _check_positive_real(threshold, "threshold", allow_zero=True)
    n = len(X)
    if batch_size * n_batches > n:
        raise ValueError(
            f"batch_size * n_batches = {batch_size * n_batches} exceeds the {n} samples; "
            f"the batches must be disjoint."
        )
    rng = np.random.RandomState(as_seed(random_state))
    order = rng.permutation(n)
    values = []
    for b in range(n_batches):
        idx = np.sort(order[b * batch_size:(b + 1) * batch_size])
        values.append(float(top_hessian_eigenvalues(
            module, criterion, _rows(X, idx), _rows(y, idx), k=1, max_iter=max_iter, tol=tol,
            random_state=int(rng.randint(np.iinfo(np.int32).max)), dtype=dtype,
            bn_mode=bn_mode)[-1]))
    lam = np.asarray(values)
    mean, std = float(lam.mean()), float(lam.std(ddof=1))
    spread = std / abs(mean) if mean != 0 else math.inf
    reliable = bool(spread <= threshold)
    if not reliable:
        warnings.warn(
            f"The top Hessian eigenvalue varies by {spread:.0%} (std / |mean|) between "
            f"{n_batches} disjoint batches of {batch_size} samples, more than the threshold "
            f"{threshold:.0%}: a Hessian on one batch of this size is not a reliable estimate "
            f"of the full-data one. Use larger batches, or accumulate the products over "
            f"several (batch_size of top_hessian_eigenvalues).",
            SmallHessianBatchWarning, stacklevel=2,
        )
    return HessianBatchSpread(batch_size=batch_size, eigenvalues=lam, mean=mean, std=std,
                              relative_spread=spread, threshold=threshold, reliable=reliable)
