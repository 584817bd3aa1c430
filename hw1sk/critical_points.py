"""Critical points of the training loss: the "gradient almost zero" phase of HW1-2.

:func:`minimize_gradient_norm` moves a module's parameters to where the
full-batch gradient norm ``||grad L||`` is below a tolerance, so that their
Hessian (:func:`hw1sk.curvature.hessian_eigenvalues`,
:func:`hw1sk.curvature.hessian_minimal_ratio`) describes a critical point: a
minimum, a saddle or a maximum.  The module, criterion and data are taken as
in :mod:`hw1sk.curvature`: ``criterion(module(X), y)`` is the mean loss, and
``X, y`` are tensors or arrays.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ._inputs import check_module, eval_mode, module_dtype
from .curvature import (
    _check_float_dtype,
    _check_int,
    _check_positive_real,
    _hvp_hessian,
    _linear_chain,
    _loss_and_gradient,
    _prepare,
    _structured_hessian,
)
from .parameters import assign_flat_parameters, functional_loss

__all__ = ["GradientNormResult", "minimize_gradient_norm"]

_OPTIMIZERS = ("newton", "lbfgs", "adam")
# Levenberg-Marquardt damping: initial mu / max(lambda)^2, growth on a rejected
# step, shrinkage on an accepted one (compared on trained HW1-size MLPs, see
# benchmarks/bench_hessian.py; smaller mu0 and faster schedules were no better)
_LM_MU0, _LM_UP, _LM_DOWN = 1e-3, 4.0, 3.0
#: Largest model ``optimizer="auto"`` hands to Newton (the default ``max_exact_params``).
MAX_EXACT_PARAMS = 4096


@dataclass
class GradientNormResult:
    """Outcome of :func:`minimize_gradient_norm`.

    Attributes
    ----------
    initial_grad_norm : float
        ``||grad L||`` before the first step (in the working dtype).
    final_grad_norm : float
        ``||grad L||`` at the parameters left in the module, in the module's
        own dtype.
    n_steps : int
        Optimizer steps taken (accepted Levenberg-Marquardt steps, L-BFGS
        iterations or Adam steps).
    converged : bool
        Whether ``final_grad_norm < tol``.
    loss : float
        The training loss at the final parameters.
    history : numpy.ndarray
        ``||grad L||`` (working dtype) at the start and after each step
        (L-BFGS: after each round of up to 10 iterations).
    optimizer : str
        The optimizer used.
    """

    initial_grad_norm: float
    final_grad_norm: float
    n_steps: int
    converged: bool
    loss: float
    history: np.ndarray = field(repr=False)
    optimizer: str = "newton"


def _levenberg_marquardt(theta, loss_fn, hessian_fn, criterion, tol, max_steps, history):
    """Minimize ``||grad L||`` by Levenberg-Marquardt on the residual ``g(theta)``.

    The Gauss-Newton matrix of ``||g||^2`` is ``H^2``, so each step is
    ``-(H^2 + mu I)^{-1} H g`` (through the eigendecomposition of the exact
    Hessian ``H``); ``mu`` shrinks after a step that lowers ``||g||`` and grows
    after one that does not.  Newton's method for ``g = 0`` is the ``mu -> 0``
    limit, so convergence to a nondegenerate critical point is quadratic.
    """
    def grad_at(t):
        t = t.detach().requires_grad_(True)
        return _loss_and_gradient(loss_fn, t, criterion)[1].detach()

    g = grad_at(theta)
    norm = float(torch.linalg.vector_norm(g))
    history.append(norm)
    mu, steps = None, 0
    while norm >= tol and steps < max_steps:
        lam, U = torch.linalg.eigh(hessian_fn(theta))
        if mu is None:  # start between gradient descent and Newton
            mu = _LM_MU0 * float(lam.abs().max()) ** 2
        proj = U.T @ g
        accepted = False
        for _ in range(30):  # raise mu until the step lowers ||g||
            step = -U @ (lam / (lam ** 2 + mu) * proj)
            new_theta = theta + step
            new_g = grad_at(new_theta)
            new_norm = float(torch.linalg.vector_norm(new_g))
            if math.isfinite(new_norm) and new_norm < norm:
                accepted = True
                break
            mu *= _LM_UP
        if not accepted:
            break
        steps += 1
        theta, g, norm = new_theta, new_g, new_norm
        mu = max(mu / _LM_DOWN, 1e-300)
        history.append(norm)
    return theta, steps


def _first_order(theta, loss_fn, criterion, tol, max_steps, optimizer, lr, history):
    """Minimize ``||grad L||^2`` by double back-propagation with a torch optimizer.

    L-BFGS runs in rounds of at most 10 iterations (each with its strong-Wolfe
    line search), the norm being checked between rounds; Adam checks it at
    every step.  ``max_steps`` caps iterations in both cases.  The iterate
    with the smallest norm seen is returned (Adam's norm need not decrease).
    """
    theta = theta.detach().clone().requires_grad_(True)
    round_size = 10
    if optimizer == "lbfgs":
        # tolerances 0: stopping is ours (||g|| < tol), the objective is tiny near the end
        opt = torch.optim.LBFGS([theta], lr=lr, max_iter=round_size, max_eval=4 * round_size,
                                history_size=50, tolerance_grad=0.0, tolerance_change=0.0,
                                line_search_fn="strong_wolfe")
    else:
        opt = torch.optim.Adam([theta], lr=lr)

    def objective():
        _, g = _loss_and_gradient(loss_fn, theta, criterion, create_graph=True)
        return g @ g

    def closure():
        opt.zero_grad()
        value = objective()
        if value.requires_grad:
            value.backward()
        return value

    def norm_now():
        return float(objective().detach()) ** 0.5

    steps = 0
    norm = norm_now()
    history.append(norm)
    best_norm, best_theta = norm, theta.detach().clone()
    while norm >= tol and steps < max_steps:
        if optimizer == "lbfgs":
            opt.param_groups[0]["max_iter"] = min(round_size, max_steps - steps)
            before = opt.state[theta].get("n_iter", 0)
            opt.step(closure)
            done = opt.state[theta]["n_iter"] - before
            steps += done
            if done == 0:  # the line search made no progress
                break
        else:
            closure()
            opt.step()
            steps += 1
        norm = norm_now()
        if not math.isfinite(norm):
            break
        history.append(norm)
        if norm < best_norm:
            best_norm, best_theta = norm, theta.detach().clone()
    return best_theta, steps


def minimize_gradient_norm(module, criterion, X, y, tol=1e-3, max_steps=None, lr=None,
                           optimizer="auto", dtype=torch.float64,
                           max_exact_params=MAX_EXACT_PARAMS):
    """Move ``module``'s parameters to where ``||grad L||`` is below ``tol``.

    HW1's "gradient almost zero" phase: after ordinary training, the objective
    becomes the gradient norm of the (full-batch) loss, so that the parameters
    settle on a critical point (a minimum, a saddle or a maximum) whose
    Hessian is then examined (:func:`hw1sk.curvature.hessian_minimal_ratio`).

    Parameters
    ----------
    module : torch.nn.Module
        Its parameters are overwritten **in place** with the result.
    criterion, X, y
        As in :func:`hw1sk.curvature.loss_hessian`.
    tol : float, default=1e-3
        Target for the global L2 norm of the gradient.
    max_steps : int, optional
        Step cap: 50 for ``"newton"``, 2000 for ``"lbfgs"``, 20000 for ``"adam"``.
    lr : float, optional
        Learning rate of ``"lbfgs"`` (default 1, with a strong-Wolfe line
        search) or ``"adam"`` (default 1e-3); unused by ``"newton"``.
    optimizer : {"auto", "newton", "lbfgs", "adam"}, default="auto"
        ``"newton"``: Levenberg-Marquardt on the gradient, ``-(H^2 + mu I)^{-1}
        H g`` with the exact Hessian (quadratic convergence; needs
        :func:`hw1sk.curvature.loss_hessian`, so small models only).
        ``"lbfgs"`` and ``"adam"`` minimize ``||grad L||^2`` by double
        back-propagation.
        ``"auto"``: ``"newton"`` up to ``max_exact_params`` parameters, else
        ``"lbfgs"``.  On trained HW1-size MLPs (100-600 parameters, tanh,
        1,000 points) ``"newton"`` reached 1e-3 in 1 to 20 steps where L-BFGS
        and Adam on ``||grad L||^2`` stalled above it in 1,000 steps.
    dtype : torch.dtype, default=torch.float64
        Precision of the optimization; the result is cast back to the
        module's own dtype.
    max_exact_params : int, default=4096
        Largest model ``"auto"`` hands to ``"newton"``.

    Returns
    -------
    result : GradientNormResult
        ``final_grad_norm`` and ``loss`` are measured on the updated module in
        its own dtype; ``converged`` is ``final_grad_norm < tol``.  When the
        step cap is reached first, the result says so (``converged=False``).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from hw1sk.critical_points import minimize_gradient_norm
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> X = torch.linspace(-1, 1, 50)[:, None]; y = X ** 3
    >>> net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    >>> minimize_gradient_norm(net, nn.MSELoss(), X, y).converged
    True
    """
    if optimizer not in ("auto",) + _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {('auto',) + _OPTIMIZERS}, got {optimizer!r}.")
    tol = _check_positive_real(tol, "tol")
    max_exact_params = _check_int(max_exact_params, "max_exact_params")
    own_dtype = module_dtype(check_module(module, require_parameters=True))
    # a private copy: the Newton path writes trial parameters into it
    work, Xw, yw = _prepare(copy.deepcopy(module), criterion, X, y, _check_float_dtype(dtype))
    P = sum(p.numel() for p in work.parameters())
    if optimizer == "auto":
        optimizer = "newton" if P <= max_exact_params else "lbfgs"
    if max_steps is None:
        max_steps = {"newton": 50, "lbfgs": 2000, "adam": 20000}[optimizer]
    max_steps = _check_int(max_steps, "max_steps", minimum=0)
    if lr is None:
        lr = {"newton": 1.0, "lbfgs": 1.0, "adam": 1e-3}[optimizer]
    lr = _check_positive_real(lr, "lr")
    history = []
    with eval_mode(work):
        loss_fn, theta = functional_loss(work, criterion, Xw, yw)
        if optimizer == "newton":
            structured = _linear_chain(work) is not None

            def hessian_fn(t):
                assign_flat_parameters(work, t)
                H = _structured_hessian(work, criterion, Xw, yw) if structured else None
                H = _hvp_hessian(work, criterion, Xw, yw) if H is None else H
                return (H + H.T) / 2

            theta, steps = _levenberg_marquardt(theta, loss_fn, hessian_fn, criterion,
                                                tol, max_steps, history)
        else:
            theta, steps = _first_order(theta, loss_fn, criterion, tol, max_steps,
                                        optimizer, lr, history)
    assign_flat_parameters(module, theta.to(own_dtype))
    # the verdict is measured on the caller's module, in its own precision
    _, Xo, yo = _prepare(module, criterion, X, y, own_dtype)
    with eval_mode(module):
        loss_fn, theta_o = functional_loss(module, criterion, Xo, yo)
        loss, g = _loss_and_gradient(loss_fn, theta_o.requires_grad_(True), criterion)
    final = float(torch.linalg.vector_norm(g))
    return GradientNormResult(
        initial_grad_norm=history[0], final_grad_norm=final, n_steps=int(steps),
        converged=final < tol, loss=float(loss.detach()),
        history=np.asarray(history, dtype=np.float64), optimizer=optimizer,
    )
