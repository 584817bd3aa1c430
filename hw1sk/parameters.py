"""The one place that turns a module's parameters into a flat vector and back.

Every analysis (Hessian, trajectories, interpolation, sharpness, landscapes)
works on the same flat layout: the parameters in ``module.named_parameters()``
order, each flattened in row-major order and concatenated.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def count_params(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of scalar parameters of ``module``.

    Parameters
    ----------
    module : torch.nn.Module
    trainable_only : bool, default=True
        Count only parameters with ``requires_grad``.

    Returns
    -------
    n_params : int
    """
    return sum(
        p.numel() for p in module.parameters() if p.requires_grad or not trainable_only
    )


def parameter_slices(module: nn.Module) -> "OrderedDict[str, slice]":
    """Where each named parameter lives in the flat vector.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    slices : OrderedDict of str to slice
        ``flat[slices[name]]`` is parameter ``name`` flattened.
    """
    slices = OrderedDict()
    start = 0
    for name, p in module.named_parameters():
        slices[name] = slice(start, start + p.numel())
        start += p.numel()
    return slices


def layer_slices(module: nn.Module) -> "OrderedDict[str, slice]":
    """Where each layer's parameters (weight and bias together) live.

    A layer is the prefix of a parameter name before its last dot
    (``"net.0.weight"`` and ``"net.0.bias"`` form layer ``"net.0"``);
    parameters of one layer are contiguous in the flat layout.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    slices : OrderedDict of str to slice
    """
    layers: "OrderedDict[str, slice]" = OrderedDict()
    for name, sl in parameter_slices(module).items():
        layer = name.rsplit(".", 1)[0] if "." in name else name
        if layer in layers:
            layers[layer] = slice(layers[layer].start, sl.stop)
        else:
            layers[layer] = sl
    return layers


def flatten_parameters(module_or_params) -> torch.Tensor:
    """Concatenate parameters into one detached 1-D tensor (a copy).

    Parameters
    ----------
    module_or_params : torch.nn.Module, dict of str to Tensor, or iterable of Tensor

    Returns
    -------
    flat : torch.Tensor of shape (n_params,)
    """
    if isinstance(module_or_params, nn.Module):
        tensors = [p for p in module_or_params.parameters()]
    elif isinstance(module_or_params, dict):
        tensors = list(module_or_params.values())
    else:
        tensors = list(module_or_params)
    if not tensors:
        return torch.zeros(0)
    return torch.cat([t.detach().reshape(-1) for t in tensors]).clone()


def unflatten_parameters(module: nn.Module, flat: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
    """Split a flat vector into named tensors shaped like ``module``'s parameters.

    The result is what :func:`torch.func.functional_call` takes; the tensors
    are views of ``flat``, so gradients flow back to it.

    Parameters
    ----------
    module : torch.nn.Module
    flat : torch.Tensor of shape (n_params,)

    Returns
    -------
    params : OrderedDict of str to Tensor
    """
    named = list(module.named_parameters())
    n = sum(p.numel() for _, p in named)
    if flat.ndim != 1 or flat.numel() != n:
        raise ValueError(
            f"flat vector has shape {tuple(flat.shape)}, expected ({n},) for this module."
        )
    out = OrderedDict()
    start = 0
    for name, p in named:
        out[name] = flat[start:start + p.numel()].view_as(p)
        start += p.numel()
    return out


@torch.no_grad()
def assign_flat_parameters(module: nn.Module, flat) -> nn.Module:
    """Copy a flat vector into ``module``'s parameters, in place.

    Parameters
    ----------
    module : torch.nn.Module
    flat : torch.Tensor or numpy.ndarray of shape (n_params,)

    Returns
    -------
    module : torch.nn.Module
        The same module, for chaining.
    """
    params = list(module.parameters())
    flat = torch.as_tensor(flat)
    n = sum(p.numel() for p in params)
    if flat.ndim != 1 or flat.numel() != n:
        raise ValueError(
            f"flat vector has shape {tuple(flat.shape)}, expected ({n},) for this module."
        )
    start = 0
    for p in params:
        p.copy_(flat[start:start + p.numel()].view_as(p).to(p.dtype))
        start += p.numel()
    return module


def flat_gradient(module: nn.Module) -> torch.Tensor:
    """Concatenate the ``.grad`` of every parameter (zeros where there is none).

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    grad : torch.Tensor of shape (n_params,)
    """
    return torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1)
        for p in module.parameters()
    ])


def functional_loss(module: nn.Module, criterion, X, y):
    """The loss as a function of the flat parameter vector.

    Built on :func:`torch.func.functional_call`, so the returned function can
    be differentiated with ``torch.func.grad``, ``hessian``, ``jvp``/``vjp``
    and vmapped.  The module's buffers are used as they are.

    Parameters
    ----------
    module : torch.nn.Module
        Its parameters give the layout (and dtype/device) of the vector.
    criterion : callable
        ``criterion(output, y) -> scalar tensor`` (e.g. ``nn.MSELoss()``).
    X, y : torch.Tensor
        The data the loss is evaluated on.

    Returns
    -------
    loss_fn : callable
        ``loss_fn(theta)`` with ``theta`` of shape ``(n_params,)``.
    theta : torch.Tensor of shape (n_params,)
        The module's current parameters, flattened (a detached copy).
    """
    from torch.func import functional_call

    buffers = dict(module.named_buffers())

    def loss_fn(theta):
        params = unflatten_parameters(module, theta)
        return criterion(functional_call(module, {**params, **buffers}, (X,)), y)

    return loss_fn, flatten_parameters(module)
