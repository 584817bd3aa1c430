"""Generalization measures of a trained network: input sensitivity and sharpness.

Pure functions of a torch module (and a criterion and data): no training, no
plotting, no file IO.  Every function evaluates the network in **eval mode**
(dropout off, BatchNorm on its running statistics), so that each sample's
output depends on that sample alone; the caller's module is left exactly as it
was (its training flags are restored, its parameters are never written to).
"""

from __future__ import annotations

import copy
import inspect
from contextlib import nullcontext
from dataclasses import dataclass
from numbers import Integral, Real

import torch
from torch import nn
from torch.func import functional_call, jacfwd, jacrev, vmap

from ._inputs import check_batch_size, eval_mode, module_and_data
from .models import MLP
from .parameters import flatten_parameters, functional_loss
from .seeding import torch_generator

__all__ = [
    "input_jacobian_norm",
    "loss_input_gradient_norm",
    "sharpness",
    "SharpnessResult",
]


# --------------------------------------------------------------------------- #
# module handling (the checks and conversions are hw1sk._inputs')
# --------------------------------------------------------------------------- #
def _functional_state(module):
    """Detached parameters and buffers of ``module``, for ``functional_call``."""
    state = {k: v.detach() for k, v in module.named_parameters()}
    state.update({k: v.detach() for k, v in module.named_buffers()})
    return state


def _recurrent_layers(module):
    """The ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` layers of ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.RNNBase)]


def _backward_in_eval_mode(module, device):
    """A context in which the module can be differentiated in eval mode.

    cuDNN's recurrent kernels refuse a backward pass in eval mode, so for
    modules with recurrent layers on a CUDA device cuDNN is switched off
    (the native kernels compute the same function); a no-op otherwise.
    """
    if torch.device(device).type == "cuda" and _recurrent_layers(module):
        return torch.backends.cudnn.flags(enabled=False)
    return nullcontext()


def _check_reduction(reduction):
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")
    return reduction


def _reduce(values, reduction):
    """Per-sample values (tensor) -> float mean or numpy array."""
    if reduction == "mean":
        return float(values.double().mean())
    return values.detach().cpu().numpy()


def _full_data_loss(loss_fn_factory, X, y, batch_size, theta):
    """Mean loss over all samples as a size-weighted average of chunk means.

    Exact for criteria that average over samples (``reduction="mean"``).
    """
    n = X.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        loss_fn = loss_fn_factory(X[start:stop], y[start:stop])
        total = total + loss_fn(theta) * ((stop - start) / n)
    return total


# --------------------------------------------------------------------------- #
# input-Jacobian sensitivity
# --------------------------------------------------------------------------- #
_JACOBIAN_METHODS = ("auto", "gram", "jacrev", "jacfwd", "batched")


def _linear_input_split(module):
    """``(flatten, linear, tail)`` when ``module`` is ``[Flatten,] Linear, *tail``.

    Only exact :class:`~hw1sk.models.MLP` and :class:`torch.nn.Sequential`
    instances qualify: their forward is known to be the layer chain, so the
    input reaches the output only through the first linear layer.
    """
    if type(module) is MLP:
        seq = module.net
    elif type(module) is nn.Sequential:
        seq = module
    else:
        return None
    layers = list(seq)
    i, flatten = 0, False
    while (i < len(layers) and type(layers[i]) is nn.Flatten
           and layers[i].start_dim == 1 and layers[i].end_dim == -1):
        i, flatten = i + 1, True
    if i >= len(layers) or type(layers[i]) is not nn.Linear:
        return None
    return flatten, layers[i], nn.Sequential(*layers[i + 1:])


def _output_map(output, n_out):
    """``squash(z)``: a batch of outputs ``(n, ...)`` -> ``(n, n_out)`` (softmax or logits)."""
    if output == "softmax":
        if n_out < 2:
            raise ValueError(
                "output='softmax' needs at least 2 outputs per sample (the softmax of a "
                "single output is constant); use output='logits' for regression networks."
            )
        return lambda z: torch.softmax(z.reshape(z.shape[0], -1), dim=1)
    return lambda z: z.reshape(z.shape[0], -1)


def _choose_jacobian_method(method, work, split, n_in, n_out):
    """The method ``"auto"`` stands for; ValueError for a method the module cannot use."""
    recurrent = _recurrent_layers(work)
    if recurrent and method in ("jacrev", "jacfwd"):
        names = sorted({type(m).__name__ for m in recurrent})
        raise ValueError(
            f"method={method!r} batches one-sample Jacobians with torch.func.vmap, which "
            f"cannot batch the recurrent layers of this module ({', '.join(names)}); use "
            "method='batched' or 'auto'."
        )
    if method != "auto":
        return method
    if recurrent:
        return "batched"
    if split is not None and split[1].out_features < split[1].in_features:
        return "gram"
    return "jacfwd" if n_in < n_out else "jacrev"


def _gram_norms(split, squash, X, batch_size):
    """Per-sample norms through the first linear layer: ``||J_x||^2 = tr(J_h W W^T J_h^T)``."""
    _, linear, tail = split
    weight, bias = linear.weight.detach(), linear.bias
    bias = None if bias is None else bias.detach()
    gram = weight @ weight.T
    state = _functional_state(tail)

    def from_hidden(h):  # one sample's first-layer pre-activation -> output
        return squash(functional_call(tail, state, (h.unsqueeze(0),)))[0]

    jac = vmap(jacrev(from_hidden))
    norms = []
    for start in range(0, X.shape[0], batch_size):
        xb = X[start:start + batch_size]
        with torch.no_grad():
            h = nn.functional.linear(xb.reshape(xb.shape[0], -1), weight, bias)
        J = jac(h).detach()  # (batch, n_out, n_hidden)
        sq = ((J @ gram) * J).sum(dim=(1, 2))
        norms.append(sq.clamp_min(0).sqrt())  # clamp: rounding can go below 0
    return norms


def _vmap_norms(work, squash, X, batch_size, method):
    """Per-sample norms of ``vmap(jacrev(f))`` or ``vmap(jacfwd(f))``, ``f`` one sample's output."""
    state = _functional_state(work)

    def single(x):  # one sample -> its flattened (softmax) output
        return squash(functional_call(work, state, (x.unsqueeze(0),)))[0]

    jac = vmap(jacrev(single) if method == "jacrev" else jacfwd(single))
    norms = []
    for start in range(0, X.shape[0], batch_size):
        J = jac(X[start:start + batch_size]).detach()
        norms.append(J.reshape(J.shape[0], -1).norm(dim=1))
    return norms


def _batched_norms(work, squash, X, batch_size, n_out, device):
    """Per-sample norms from one backward pass of the whole chunk per output.

    In eval mode each sample's output depends on its own input only, so the
    gradient of ``sum_i f_k(x_i)`` with respect to the chunk holds, in row
    ``i``, row ``k`` of sample ``i``'s Jacobian.  No ``vmap``: the module
    runs on whole batches (recurrent layers included).
    """
    state = _functional_state(work)
    norms = []
    for start in range(0, X.shape[0], batch_size):
        xb = X[start:start + batch_size].clone().requires_grad_(True)
        sq = torch.zeros(xb.shape[0], dtype=xb.dtype, device=xb.device)
        with torch.enable_grad(), _backward_in_eval_mode(work, device):
            out = squash(functional_call(work, state, (xb,)))
            for k in range(n_out):
                (g,) = torch.autograd.grad(out[:, k].sum(), xb, retain_graph=k < n_out - 1)
                sq += g.reshape(g.shape[0], -1).square().sum(dim=1)
        norms.append(sq.sqrt())
    return norms


def input_jacobian_norm(module, X, output="softmax", batch_size=1024, reduction="mean",
                        method="auto", device=None):
    """Sensitivity: Frobenius norm of each sample's input-output Jacobian.

    For every sample :math:`x_i` this is :math:`\\|\\partial f(x_i)/\\partial x_i\\|_F`,
    where :math:`f` is the network followed by a softmax (``output="softmax"``)
    or the raw network output (``output="logits"``, also the choice for
    regression networks).  Each sample's Jacobian is its own (computed per
    sample with :func:`torch.func.vmap`), never the derivative of the
    batch-summed output, which would mix samples.

    The module is evaluated in eval mode: in train mode BatchNorm normalizes
    with the batch's statistics, so a sample's output would depend on the
    other samples in the batch.  The result is therefore the same whether the
    module is passed in train or eval mode.

    Parameters
    ----------
    module : torch.nn.Module
        Maps a batch ``(n_samples, ...)`` to outputs ``(n_samples, n_outputs)``.
    X : array-like or torch.Tensor of shape (n_samples, ...)
        Inputs; converted to the module's parameter dtype (float32 by default).
    output : {"softmax", "logits"}, default="softmax"
        Differentiate the softmax probabilities or the raw outputs.
    batch_size : int or None, default=1024
        Samples per vectorized chunk (bounds memory); ``None`` for all at once.
        The values do not depend on it.
    reduction : {"mean", "none"}, default="mean"
        Return the mean over samples, or the per-sample norms.
    method : {"auto", "gram", "jacrev", "jacfwd", "batched"}, default="auto"
        How the per-sample Jacobians are computed; all are exact.
        ``"jacrev"`` is ``vmap(jacrev(f))`` (one vector-Jacobian product per
        output), ``"jacfwd"`` is ``vmap(jacfwd(f))`` (one Jacobian-vector
        product per input feature, for low-dimensional inputs).
        ``"batched"`` needs no ``vmap``: one backward pass of the whole chunk
        per output, whose gradient holds every sample's Jacobian row (each
        sample's output depends on its own input alone in eval mode); it is
        the method for recurrent modules (``nn.RNN``, ``nn.GRU``,
        ``nn.LSTM``, :class:`~hw1sk.models.RowRNN`), whose layers
        ``torch.func.vmap`` cannot batch (``"jacrev"`` and ``"jacfwd"`` are
        refused for them).
        ``"gram"`` is for modules that start with ``[Flatten,] Linear`` (an
        :class:`~hw1sk.models.MLP` or an ``nn.Sequential``): with
        :math:`h = Wx + b`, :math:`J_x = J_h W`, so
        :math:`\\|J_x\\|_F^2 = \\mathrm{tr}(J_h W W^\\top J_h^\\top)`; only the
        Jacobian with respect to the (narrower) first hidden layer is formed.
        ``"auto"`` uses ``"batched"`` for modules with recurrent layers,
        else ``"gram"`` when it applies and the first layer is narrower than
        the input, else ``"jacfwd"`` when the inputs are fewer than the
        outputs, else ``"jacrev"``.
    device : str, torch.device or None, default=None
        Where to compute; ``None`` uses the module's device.

    Returns
    -------
    sensitivity : float or numpy.ndarray of shape (n_samples,)
        The mean norm (``reduction="mean"``) or the per-sample norms.

    See Also
    --------
    loss_input_gradient_norm : The cheaper norm of the loss gradient w.r.t. the input.

    References
    ----------
    .. [1] Novak, Bahri, Abolafia, Pennington, Sohl-Dickstein, "Sensitivity and
       Generalization in Neural Networks: an Empirical Study", ICLR 2018.

    Examples
    --------
    >>> import torch
    >>> from hw1sk.generalization import input_jacobian_norm
    >>> layer = torch.nn.Linear(3, 2)
    >>> X = torch.randn(5, 3)
    >>> round(input_jacobian_norm(layer, X, output="logits"), 5) == round(
    ...     float(layer.weight.detach().norm()), 5)
    True
    """
    if output not in ("softmax", "logits"):
        raise ValueError(f"output must be 'softmax' or 'logits', got {output!r}.")
    if method not in _JACOBIAN_METHODS:
        raise ValueError(f"method must be one of {_JACOBIAN_METHODS}, got {method!r}.")
    reduction = _check_reduction(reduction)
    work, device, X, _ = module_and_data(module, X, None, device)
    batch_size = check_batch_size(batch_size, X.shape[0])

    split = _linear_input_split(work)
    if split is not None and not split[0] and X.ndim != 2:
        split = None  # without a Flatten, Linear would act on the last axis only
    if method == "gram" and split is None:
        raise ValueError(
            "method='gram' needs a module that is an hw1sk.models.MLP or an nn.Sequential "
            "starting with [Flatten,] Linear (and 2-D X when there is no Flatten)."
        )
    n_in = X[0].numel()
    with eval_mode(work), torch.no_grad():
        first_output = work(X[:1])
    if output == "softmax" and first_output.ndim != 2:
        raise ValueError(
            "output='softmax' needs outputs of shape (n_samples, n_classes), got "
            f"{tuple(first_output.shape)} for one sample; use output='logits'."
        )
    n_out = first_output.numel()
    method = _choose_jacobian_method(method, work, split, n_in, n_out)
    squash = _output_map(output, n_out)

    with eval_mode(work):
        if method == "gram":
            norms = _gram_norms(split, squash, X, batch_size)
        elif method == "batched":
            norms = _batched_norms(work, squash, X, batch_size, n_out, device)
        else:
            norms = _vmap_norms(work, squash, X, batch_size, method)
    return _reduce(torch.cat(norms), reduction)


# --------------------------------------------------------------------------- #
# loss-gradient sensitivity
# --------------------------------------------------------------------------- #
def _reduce_rest(losses, reduction):
    """Unreduced losses ``(n, ...)`` -> one per sample: mean (``"sum"``: sum) over the rest."""
    if losses.ndim > 1:
        losses = losses.reshape(losses.shape[0], -1)
        losses = losses.sum(dim=1) if reduction == "sum" else losses.mean(dim=1)
    return losses


def _reduction_keyword(criterion):
    """The default of a function's ``reduction`` argument (``F.cross_entropy``, a partial).

    None for modules, for callables without such an argument, and for
    builtins without a signature.
    """
    if isinstance(criterion, nn.Module):
        return None
    try:
        parameter = inspect.signature(criterion).parameters.get("reduction")
    except (TypeError, ValueError):  # builtins without a signature
        return None
    if parameter is None or parameter.default not in ("mean", "sum", "none"):
        return None
    return parameter.default


def _per_sample_criterion(criterion):
    """``per_sample(out, y)``: one loss per sample, the sample's term of the unreduced criterion.

    A loss with a ``reduction`` attribute (torch's loss modules) is copied with
    ``reduction="none"``; a function with a ``reduction`` argument
    (``F.cross_entropy``, ``functools.partial(F.cross_entropy, weight=w)``)
    is called with ``reduction="none"``.  Extra dimensions (the outputs of
    ``MSELoss``) are averaged, or summed for ``reduction="sum"``.  Any other
    callable is applied to one-sample batches under :func:`torch.func.vmap`;
    :func:`_check_decomposes` then makes sure the batch loss is the mean or
    sum of those values.  Returns ``(per_sample, opaque)``.
    """
    reduction = getattr(criterion, "reduction", None)
    if reduction in ("mean", "sum", "none"):
        unreduced = copy.copy(criterion)
        unreduced.reduction = "none"
        return (lambda out, y: _reduce_rest(unreduced(out, y), reduction)), False
    reduction = _reduction_keyword(criterion)
    if reduction is not None:
        return (lambda out, y: _reduce_rest(criterion(out, y, reduction="none"),
                                            reduction)), False

    def alone(o, t):
        return criterion(o.unsqueeze(0), t.unsqueeze(0))

    return (lambda out, y: vmap(alone)(out, y).reshape(out.shape[0])), True


def _check_decomposes(criterion, out, y, losses):
    """ValueError unless ``criterion(out, y)`` is the mean or the sum of the one-sample ``losses``.

    A class-weighted mean loss hidden in a plain callable is neither: on a
    one-sample batch its weight cancels, so the one-sample values are the
    unweighted losses, not the terms ``w[y_i] * l_i`` of the weighted loss.
    """
    with torch.no_grad():
        total = criterion(out, y).double()
        values = losses.double()
    if not any(torch.allclose(total, ref, rtol=1e-4, atol=1e-6)
               for ref in (values.mean(), values.sum())):
        raise ValueError(
            "criterion(output, y) on a batch is neither the mean nor the sum of its values "
            "on the samples alone (a class-weighted loss?), so its per-sample losses are "
            "not defined. Pass a torch loss module (e.g. nn.CrossEntropyLoss(weight=w)) or "
            "a function with a reduction argument (e.g. functools.partial("
            "F.cross_entropy, weight=w)): its reduction='none' terms are the per-sample "
            "losses."
        )


def loss_input_gradient_norm(module, criterion, X, y, batch_size=1024, reduction="mean",
                             device=None):
    """Norm of each sample's loss gradient with respect to its input.

    For every sample this is :math:`\\|\\partial \\ell_i/\\partial x_i\\|_2`,
    where :math:`\\ell_i` is sample :math:`i`'s term of the *unreduced*
    criterion, what ``reduction="none"`` gives (averaged over any remaining
    dimensions, summed for a ``"sum"`` criterion) -- not the batch mean,
    whose gradient would be scaled by ``1/n``.  For class-weighted
    cross-entropy, :math:`\\ell_i = w_{y_i}\\,\\mathrm{CE}_i`: the class
    weight is kept (a mean-reduced weighted loss on a one-sample batch would
    divide it out again).  The gradient is computed with one backward pass
    of the *sum* of the per-sample losses: in eval mode each loss depends on
    its own input only, so the gradient of the sum w.r.t. :math:`x_i` is
    exactly :math:`\\partial \\ell_i/\\partial x_i`.  It costs about one
    forward and backward pass, against one backward pass per output for
    :func:`input_jacobian_norm`.  The module runs on whole batches (no
    ``vmap``), recurrent layers included.

    Parameters
    ----------
    module : torch.nn.Module
        Evaluated in eval mode (see :func:`input_jacobian_norm`).
    criterion : callable
        ``criterion(output, y)``.  A torch loss with a ``reduction`` attribute
        is copied with ``reduction="none"``, and a function with a
        ``reduction`` argument (``F.cross_entropy``, a ``functools.partial``
        of it) is called with ``reduction="none"``; both give the
        per-sample terms, class weights included.  Any other callable is
        applied to one-sample batches (under :func:`torch.func.vmap`); it
        must then be the mean or the sum of those values over a batch, which
        is checked on the first chunk (a class-weighted mean loss wrapped in
        a ``lambda`` is neither, and is refused with a ``ValueError``).
    X : array-like or torch.Tensor of shape (n_samples, ...)
    y : array-like or torch.Tensor of shape (n_samples, ...)
        Integer labels become int64, real targets the module's dtype.
    batch_size : int or None, default=1024
        Samples per backward pass; the values do not depend on it.
    reduction : {"mean", "none"}, default="mean"
    device : str, torch.device or None, default=None

    Returns
    -------
    norm : float or numpy.ndarray of shape (n_samples,)

    Raises
    ------
    ValueError
        For a plain callable whose batch value is not the mean or the sum
        of its one-sample values.

    See Also
    --------
    input_jacobian_norm : Norm of the full input-output Jacobian.

    Examples
    --------
    >>> import torch
    >>> from hw1sk.generalization import loss_input_gradient_norm
    >>> layer = torch.nn.Linear(3, 1, bias=False)
    >>> X, y = torch.randn(4, 3), torch.zeros(4, 1)
    >>> g = loss_input_gradient_norm(layer, torch.nn.MSELoss(), X, y, reduction="none")
    >>> bool(torch.allclose(torch.as_tensor(g),
    ...      2 * (X @ layer.weight.T).abs().squeeze(1) * layer.weight.norm()))
    True
    """
    reduction = _check_reduction(reduction)
    if not callable(criterion):
        raise TypeError(f"criterion must be callable, got {type(criterion).__name__}.")
    work, device, X, y = module_and_data(module, X, y, device)
    batch_size = check_batch_size(batch_size, X.shape[0])
    per_sample, opaque = _per_sample_criterion(criterion)

    norms = []
    with eval_mode(work):
        state = _functional_state(work)
        for start in range(0, X.shape[0], batch_size):
            xb = X[start:start + batch_size].clone().requires_grad_(True)
            yb = y[start:start + batch_size]
            with torch.enable_grad(), _backward_in_eval_mode(work, device):
                out = functional_call(work, state, (xb,))
                losses = per_sample(out, yb)
                if opaque and start == 0:
                    _check_decomposes(criterion, out, yb, losses)
                (g,) = torch.autograd.grad(losses.sum(), xb)
            norms.append(g.detach().reshape(g.shape[0], -1).norm(dim=1))
    return _reduce(torch.cat(norms), reduction)


# --------------------------------------------------------------------------- #
# sharpness
# --------------------------------------------------------------------------- #
@dataclass
class SharpnessResult:
    """What :func:`sharpness` found.

    Attributes
    ----------
    sharpness : float
        ``100 * (max_loss - loss) / (1 + loss)``.
    loss : float
        Full-data loss at the module's parameters.
    max_loss : float
        Largest full-data loss found in the box.
    perturbation : torch.Tensor of shape (n_params,)
        The perturbation (flat layout of :mod:`hw1sk.parameters`) reaching ``max_loss``.
    epsilon : float
        Relative size of the box.
    """

    sharpness: float
    loss: float
    max_loss: float
    perturbation: torch.Tensor
    epsilon: float


def sharpness(module, criterion, X, y, epsilon=1e-3, n_steps=20, n_restarts=3, step_size=None,
              random_state=None, batch_size=None, device=None, return_result=False):
    """Epsilon-sharpness of Keskar et al. (2017), by projected gradient ascent.

    .. math::

        \\phi_\\epsilon(\\theta) = 100 \\times
        \\frac{\\max_{y \\in C_\\epsilon} L(\\theta + y) - L(\\theta)}{1 + L(\\theta)},
        \\qquad C_\\epsilon = \\{y : |y_j| \\le \\epsilon (|\\theta_j| + 1)\\},

    with :math:`L` the mean loss over all of ``(X, y)`` and the box taken in the
    full parameter space.  Keskar et al. solve the inner maximization with
    L-BFGS-B; here it is estimated by projected sign-gradient ascent: each step
    moves every coordinate by ``step_size`` times its box half-width in the
    direction of the gradient's sign, then clips to the box.  The first run
    starts at :math:`y = 0` (as Keskar et al.), the other ``n_restarts - 1``
    at uniform random points of the box; the largest loss met at any iterate
    is kept.  The estimate is a lower bound of the true maximum and is never
    negative.  The module is evaluated in eval mode.

    Parameters
    ----------
    module : torch.nn.Module
    criterion : callable
        ``criterion(output, y) -> scalar``, averaging over samples (e.g.
        ``nn.CrossEntropyLoss()``); with ``batch_size`` the full-data loss is
        the size-weighted mean of the chunk losses.
    X : array-like or torch.Tensor of shape (n_samples, ...)
    y : array-like or torch.Tensor of shape (n_samples, ...)
    epsilon : float, default=1e-3
        Relative box size.
    n_steps : int, default=20
        Ascent steps per run.
    n_restarts : int, default=3
        Number of runs (the first from the centre of the box).
    step_size : float or None, default=None
        Step as a fraction of each coordinate's box half-width; ``None`` uses
        ``2.5 / n_steps``, so a run can cross the box (the usual choice for
        projected sign-gradient ascent).
    random_state : int, RandomState or None, default=None
        Seeds the random starts; the same value gives the same result.
    batch_size : int or None, default=None
        Samples per chunk when evaluating the loss and gradient; ``None`` for
        all at once.
    device : str, torch.device or None, default=None
    return_result : bool, default=False
        Return a :class:`SharpnessResult` instead of the float.

    Returns
    -------
    sharpness : float or SharpnessResult

    References
    ----------
    .. [1] Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, "On Large-Batch
       Training for Deep Learning: Generalization Gap and Sharp Minima",
       ICLR 2017.

    Examples
    --------
    >>> import torch
    >>> from hw1sk.generalization import sharpness
    >>> net = torch.nn.Linear(2, 1)
    >>> X, y = torch.randn(8, 2), torch.randn(8, 1)
    >>> sharpness(net, torch.nn.MSELoss(), X, y, epsilon=1e-2, random_state=0) >= 0
    True
    """
    if not isinstance(epsilon, Real) or isinstance(epsilon, bool) or not epsilon > 0:
        raise ValueError(f"epsilon must be a positive number, got {epsilon!r}.")
    for name, value in (("n_steps", n_steps), ("n_restarts", n_restarts)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    if step_size is None:
        step_size = 2.5 / n_steps
    elif not isinstance(step_size, Real) or isinstance(step_size, bool) or not step_size > 0:
        raise ValueError(f"step_size must be a positive number or None, got {step_size!r}.")
    if not callable(criterion):
        raise TypeError(f"criterion must be callable, got {type(criterion).__name__}.")
    work, device, X, y = module_and_data(module, X, y, device)
    batch_size = check_batch_size(batch_size, X.shape[0])

    def factory(xb, yb):
        return functional_loss(work, criterion, xb, yb)[0]

    def value_and_gradient(theta):
        n = X.shape[0]
        value, gradient = 0.0, torch.zeros_like(theta)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            g, v = torch.func.grad_and_value(factory(X[start:stop], y[start:stop]))(theta)
            w = (stop - start) / n
            value, gradient = value + float(v) * w, gradient + g * w
        return value, gradient

    with eval_mode(work), torch.no_grad():
        theta = flatten_parameters(work).to(device)
        loss0 = float(_full_data_loss(factory, X, y, batch_size, theta))
        half_width = epsilon * (theta.abs() + 1)
        step = step_size * half_width
        generator = torch_generator(random_state)  # CPU draws: same numbers on any device
        best_loss, best_y = loss0, torch.zeros_like(theta)
        for restart in range(n_restarts):
            if restart == 0:
                pert = torch.zeros_like(theta)
            else:
                u = torch.rand(theta.shape, generator=generator, dtype=theta.dtype)
                pert = (2 * u.to(device) - 1) * half_width
            for _ in range(n_steps):
                with torch.enable_grad():
                    value, gradient = value_and_gradient(theta + pert)
                if value > best_loss:
                    best_loss, best_y = value, pert.clone()
                pert = torch.clamp(pert + step * torch.sign(gradient), -half_width, half_width)
            value = float(_full_data_loss(factory, X, y, batch_size, theta + pert))
            if value > best_loss:  # the last iterate has no step after it
                best_loss, best_y = value, pert.clone()
    value = 100.0 * (best_loss - loss0) / (1.0 + loss0)
    if not return_result:
        return value
    return SharpnessResult(sharpness=value, loss=loss0, max_loss=best_loss,
                           perturbation=best_y, epsilon=float(epsilon))
