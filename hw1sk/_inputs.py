"""The one place for the torch inputs of the analysis functions.

Curvature, generalization measures, landscapes and evaluation all take any
``torch.nn.Module`` with data given as arrays or tensors.  Checking the
module, finding its dtype and device, switching it to eval mode and back,
and turning inputs into tensors happen here, once, so every analysis
function accepts the same inputs and fails with the same messages.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from numbers import Integral

import numpy as np
import torch
from sklearn.utils.validation import check_array, check_consistent_length
from torch import nn

__all__ = ["check_module", "module_dtype", "module_device", "eval_mode", "working_module",
           "as_input_tensor", "as_target_tensor", "module_and_data", "check_batch_size",
           "check_finite", "BN_MODES", "check_bn_mode", "analysis_mode"]

BN_MODES = ("eval", "train-batch")


def check_module(module, require_parameters=False):
    """``module``, after checking it is an ``nn.Module`` (with parameters, if required)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}.")
    if require_parameters and not any(True for _ in module.parameters()):
        raise ValueError("module has no parameters; there is nothing to differentiate.")
    return module


def module_dtype(module):
    """The dtype of the module's first floating parameter (float32 without any)."""
    for t in module.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def module_device(module):
    """The device of the module's parameters (or buffers; CPU without either)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _same_device(a, b):
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def working_module(module, device=None, dtype=None):
    """``module`` itself, or a copy moved to ``device`` / converted to ``dtype``.

    The caller's module is never moved or converted: a copy is made only
    when the device or dtype asked for differs from the module's own.

    Returns
    -------
    module : torch.nn.Module
    device : torch.device
        Where the returned module lives.
    """
    check_module(module)
    own = module_device(module)
    device = own if device is None else torch.device(device)
    moved = not _same_device(device, own)
    converted = dtype is not None and any(p.dtype != dtype for p in module.parameters()
                                          if p.is_floating_point())
    if not (moved or converted):
        return module, own
    work = copy.deepcopy(module)
    if moved:
        work = work.to(device)
    if converted:
        work = work.to(dtype)
    return work, (device if moved else own)


@contextmanager
def eval_mode(module):
    """Put ``module`` in eval mode and restore every submodule's flag on exit."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


def check_bn_mode(bn_mode):
    """``bn_mode``, after checking it is one of :data:`BN_MODES`."""
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}.")
    return bn_mode


@contextmanager
def analysis_mode(module, bn_mode="eval"):
    """Eval mode, with BatchNorm layers on running or batch statistics.

    ``bn_mode="eval"`` is :func:`eval_mode`: BatchNorm normalizes with its
    running statistics.  ``"train-batch"``: BatchNorm layers normalize with
    the statistics of the batch they are given (as in training) but do not
    update their running statistics or ``num_batches_tracked``; every other
    submodule (dropout included) stays in eval mode.  Flags, and the
    BatchNorm buffers, are restored on exit.
    """
    check_bn_mode(bn_mode)
    with eval_mode(module):
        if bn_mode == "eval":
            yield module
            return
        norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [(m, m.track_running_stats, {k: b.clone() for k, b in m.named_buffers(
            recurse=False) if b is not None}) for m in norms]
        for m in norms:
            # training + no tracking: batch statistics, running buffers neither read nor written
            m.train()
            m.track_running_stats = False
        try:
            yield module
        finally:
            for m, track, buffers in saved:
                m.track_running_stats = track
                with torch.no_grad():
                    for k, b in buffers.items():
                        getattr(m, k).copy_(b)


def check_finite(t, name):
    """ValueError when the floating tensor ``t`` holds NaN or infinity."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"Input {name} contains NaN or infinity.")


def _tensor(a, name, ensure_2d):
    """``a`` (array-like or tensor) as a detached tensor, checked like scikit-learn checks arrays."""
    if isinstance(a, torch.Tensor):
        t = a.detach()
        if t.ndim == 0:
            raise ValueError(f"Expected {name} with a sample axis, got a scalar tensor.")
        if ensure_2d and t.ndim < 2:
            raise ValueError(
                f"Expected {name} with at least 2 dimensions (n_samples, ...), got shape "
                f"{tuple(t.shape)}. Reshape your data either using X.reshape(-1, 1) if "
                "your data has a single feature or X.reshape(1, -1) if it contains a "
                "single sample."
            )
        if t.shape[0] < 1:
            raise ValueError(f"{name} has 0 samples; at least 1 is required.")
        check_finite(t, name)
        return t
    a = np.ascontiguousarray(check_array(a, ensure_2d=ensure_2d, allow_nd=True, dtype=None,
                                         input_name=name))
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():  # read-only inputs (joblib's memory maps) are only read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


def as_input_tensor(X, dtype, device, name="X"):
    """Inputs (array-like or tensor, at least 2-D, finite) as a ``dtype`` tensor on ``device``.

    Integer pixels or features become ``dtype`` too: they feed a floating network.
    """
    t = _tensor(X, name, ensure_2d=True)
    if t.dtype != dtype:
        t = t.to(dtype)
    return t.to(device)


def as_target_tensor(y, dtype, device, name="y"):
    """Targets as a tensor on ``device``: real values become ``dtype``, labels int64.

    Booleans stay booleans (a criterion such as ``BCELoss`` decides).
    """
    t = _tensor(y, name, ensure_2d=False)
    if t.is_floating_point():
        t = t.to(dtype)
    elif t.dtype != torch.bool:
        t = t.to(torch.int64)
    return t.to(device)


def module_and_data(module, X, y=None, device=None):
    """The working module (on ``device``), its device, and the data as tensors there.

    Parameters
    ----------
    module : torch.nn.Module
    X : array-like or tensor of shape (n_samples, ...)
    y : array-like or tensor of shape (n_samples, ...), optional
    device : str, torch.device or None
        None computes where the module is; otherwise a copy of the module
        is moved there (the caller's module never moves).

    Returns
    -------
    module, device, X, y
        ``y`` is None when not given.
    """
    work, device = working_module(module, device)
    dtype = module_dtype(work)
    X = as_input_tensor(X, dtype, device)
    if y is None:
        return work, device, X, None
    y = as_target_tensor(y, dtype, device)
    check_consistent_length(X, y)
    return work, device, X, y


def check_batch_size(batch_size, n_samples):
    """``batch_size`` as an int (``None`` means all samples at once)."""
    if batch_size is None:
        return max(int(n_samples), 1)
    if not isinstance(batch_size, Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}.")
    return int(batch_size)
