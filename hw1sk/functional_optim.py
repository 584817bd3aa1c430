"""Functional optimizers for stacked (many-seed) parameters.

``torch.optim`` optimizers update the tensors they were given in place, one model
at a time.  To train many seeds of one model in a single vectorized pass
(:func:`torch.func.stack_module_state` + :func:`torch.func.vmap`), the update must
instead be a pure function of stacked tensors: dicts ``name -> tensor`` whose
leading dimension is the seed.  This module provides such functional versions of
:class:`torch.optim.Adam`, :class:`~torch.optim.AdamW`, :class:`~torch.optim.SGD`
and :class:`~torch.optim.RMSprop`.

Each update follows the operation order of torch's single-tensor
(``foreach=False``) implementation, so on the CPU the result for every seed is
bit-for-bit the one the torch optimizer gives on that seed alone (float32 and
float64).  The update is elementwise, so one :meth:`FunctionalOptimizer.step`
updates every seed at once; the per-seed step counter lets a boolean ``mask``
freeze some seeds (diverged or stopped) while the others go on.
:meth:`FunctionalOptimizer.step_` gives the same values in place, without
allocating new tensors (what :class:`hw1sk.ensemble.SeedEnsemble` uses: its
seeds' parameters are one ``(n_seeds, n_params)`` tensor, updated by a
handful of elementwise operations per step); for Adam and AdamW it runs
torch's fused CPU kernel where it applies, one pass instead of about eight,
within an ulp of torch's values (:class:`FunctionalAdam`, Notes).

Examples
--------
>>> import torch
>>> from hw1sk.functional_optim import functional_optimizer
>>> opt = functional_optimizer(torch.optim.Adam, lr=0.1)
>>> params = {"w": torch.ones(3, 2)}               # 3 seeds, 2 weights each
>>> state = opt.init(params)
>>> grads = {"w": torch.tensor([[1.0, -1.0]] * 3)}
>>> params, state = opt.step(params, grads, state)
>>> params["w"][0]
tensor([0.9000, 1.1000])
>>> state["step"]
tensor([1., 1., 1.])
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor

__all__ = [
    "FunctionalAdam",
    "FunctionalAdamW",
    "FunctionalOptimizer",
    "FunctionalRMSprop",
    "FunctionalSGD",
    "functional_optimizer",
]

# Bias-correction tables, by (kind, lr, beta, device), shared by the Adam instances.
_TABLES: dict = {}

# Above this many steps a bias-correction table is not worth its memory and
# ``torch.pow`` is used instead (at most one ulp away from Python's ``**``).
_MAX_TABLE = 2**20


def _seed_view(values: Tensor, like: Tensor) -> Tensor:
    """``values`` of shape ``(n_seeds,)`` reshaped to broadcast against ``like``."""
    return values.reshape((-1,) + (1,) * (like.dim() - 1))


def _per_seed(values: Tensor, like: Tensor) -> Tensor:
    """Per-seed scalars in ``like``'s dtype, shaped to broadcast against it.

    Casting the float64 scalars to the parameter's dtype first is what torch
    does with a Python-float operand, so the arithmetic stays in that dtype.
    """
    return _seed_view(values, like).to(like.dtype)


def _select(mask: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    """``new`` for the seeds where ``mask`` is True, ``old`` elsewhere."""
    if mask is None:
        return new
    return torch.where(_seed_view(mask, old), new, old)


def _scalar(name: str, value):
    """A hyper-parameter as a Python number (1-element tensors are unwrapped)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element, got shape {tuple(value.shape)}.")
        return value.item()
    return value


def _table_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device supports it (not on MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _decay_length(beta: float) -> int | None:
    """Number of steps after which ``1 - beta**k`` is 1.0 in float64.

    Returns None when that would make a table longer than ``_MAX_TABLE``.
    """
    if beta <= 0.0:
        return 2
    length = math.ceil(54 * math.log(2) / -math.log(beta)) + 2
    return length if length <= _MAX_TABLE else None


class FunctionalOptimizer:
    """Base class: a pure optimizer step on stacked parameters.

    Subclasses keep their hyper-parameters as plain attributes, name the
    per-parameter state buffers they need in ``_buffers`` and implement
    ``_update`` (one parameter) and, if needed, ``_coefficients`` (per-seed
    scalars shared by all parameters).

    The state returned by :meth:`init` is a plain dict: ``"step"``, a float
    tensor of shape ``(n_seeds,)`` counting each seed's updates, and one dict
    ``name -> tensor`` per buffer (for instance ``"exp_avg"``), each tensor with
    the shape of its parameter.
    """

    _buffers: tuple[str, ...] = ()
    _hyperparameters: tuple[str, ...] = ()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._hyperparameters)
        return f"{type(self).__name__}({args})"

    def buffers(self) -> tuple[str, ...]:
        """Names of the per-parameter state buffers (keys of the state dict).

        Returns
        -------
        names : tuple of str
        """
        return tuple(self._buffers)

    def init(self, params: dict[str, Tensor]) -> dict:
        """The optimizer state for stacked parameters, before the first step.

        Parameters
        ----------
        params : dict of str to Tensor
            Stacked parameters; every tensor's leading dimension is the seed.

        Returns
        -------
        state : dict
            ``"step"``: zeros of shape ``(n_seeds,)``; one zero-filled dict
            ``name -> tensor`` per buffer of :meth:`buffers`.
        """
        n_seeds = _n_seeds(params)
        first = next(iter(params.values()))
        state: dict = {
            "step": torch.zeros(n_seeds, dtype=_step_dtype(), device=first.device)
        }
        for key in self._buffers:
            state[key] = {
                name: torch.zeros_like(p, memory_format=torch.preserve_format)
                for name, p in params.items()
            }
        return state

    def step(self, params: dict, grads: dict, state: dict, mask: Tensor | None = None):
        """One update of every (unmasked) seed; pure.

        Runs under :func:`torch.no_grad`, like ``torch.optim.Optimizer.step``;
        the inputs are not modified.

        Parameters
        ----------
        params : dict of str to Tensor
            Stacked parameters, leading dimension ``n_seeds``.
        grads : dict of str to Tensor
            Their gradients, same keys and shapes.
        state : dict
            The state from :meth:`init` or a previous :meth:`step`.
        mask : bool Tensor of shape (n_seeds,), optional
            Seeds where it is False keep their parameters and state (step
            counter included) unchanged.  None updates every seed.

        Returns
        -------
        new_params : dict of str to Tensor
        new_state : dict
        """
        _check_step_inputs(params, grads, state, mask, self._buffers)
        with torch.no_grad():
            old_step = state["step"]
            if mask is None:
                new_step = old_step + 1
            else:
                new_step = old_step + mask.to(old_step.dtype)
            coeffs = self._coefficients(old_step, new_step, next(iter(params.values())))
            new_params: dict = {}
            new_state: dict = {"step": new_step}
            new_state.update({key: {} for key in self._buffers})
            for name, param in params.items():
                bufs = {key: state[key][name] for key in self._buffers}
                p_new, bufs_new = self._update(param, grads[name], bufs, coeffs)
                new_params[name] = _select(mask, p_new, param)
                for key in self._buffers:
                    new_state[key][name] = _select(mask, bufs_new[key], bufs[key])
        return new_params, new_state

    def step_(self, params: dict, grads: dict, state: dict, mask: Tensor | None = None):
        """:meth:`step` in place: the same values, written into ``params`` and ``state``.

        Saves the allocation of a new tensor per operation, which on a CPU
        costs more than the arithmetic for large stacked parameters.  Where
        ``mask`` freezes some seeds (or the optimizer has no in-place
        update), the values of :meth:`step` are copied in.

        Parameters
        ----------
        params, grads, state, mask
            As in :meth:`step`; ``params`` and the state's tensors are updated.

        Returns
        -------
        params : dict of str to Tensor
            The same dict, updated.
        state : dict
            The same dict, updated.
        """
        if type(self)._update_ is FunctionalOptimizer._update_ or (
                mask is not None and not bool(mask.all())):
            new_params, new_state = self.step(params, grads, state, mask)
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(new_params[name])
                for key in self._buffers:
                    for name, buf in state[key].items():
                        buf.copy_(new_state[key][name])
            state["step"] = new_state["step"]
            return params, state
        _check_step_inputs(params, grads, state, mask, self._buffers)
        with torch.no_grad():
            old_step = state["step"]
            new_step = old_step + 1
            coeffs = self._coefficients(old_step, new_step, next(iter(params.values())))
            for name, param in params.items():
                self._update_(param, grads[name], {k: state[k][name] for k in self._buffers},
                              coeffs)
            state["step"] = new_step
        return params, state

    def _update_(self, param: Tensor, grad: Tensor, buffers: dict, coeffs: dict) -> None:
        """:meth:`_update` in place (optional; the base class has none)."""
        raise NotImplementedError

    def _scratch(self, key: str, like: Tensor) -> Tensor:
        """A temporary of ``like``'s shape, kept for the next step (allocating costs more)."""
        cache = self.__dict__.setdefault("_scratch_buffers", {})
        spec = (key, tuple(like.shape), like.dtype, like.device)
        buf = cache.get(spec)
        if buf is None:
            buf = cache[spec] = torch.empty_like(like, memory_format=torch.contiguous_format)
        return buf

    def _coefficients(self, old_step: Tensor, new_step: Tensor, like: Tensor) -> dict:
        """Per-seed scalars of shape ``(n_seeds,)`` shared by every parameter."""
        return {}

    def _update(self, param: Tensor, grad: Tensor, buffers: dict, coeffs: dict):
        """New ``(param, buffers)`` of one stacked parameter, all seeds updated."""
        raise NotImplementedError


def _step_dtype() -> torch.dtype:
    """The dtype torch uses for its ``state["step"]`` tensors."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _n_seeds(params: dict) -> int:
    """The common leading dimension of stacked parameters (checked)."""
    if not isinstance(params, dict) or not params:
        raise ValueError("params must be a non-empty dict of stacked tensors.")
    sizes = {name: (p.shape[0] if p.dim() else None) for name, p in params.items()}
    n_seeds = next(iter(sizes.values()))
    if n_seeds is None or any(size != n_seeds for size in sizes.values()):
        raise ValueError(
            "Every stacked parameter needs the same leading (seed) dimension; "
            f"got {sizes}."
        )
    return n_seeds


def _check_step_inputs(params, grads, state, mask, buffers) -> None:
    """Raise ValueError when the step's inputs do not fit together."""
    n_seeds = _n_seeds(params)
    if set(grads) != set(params):
        raise ValueError(
            f"grads must have the keys of params; missing {sorted(set(params) - set(grads))}, "
            f"extra {sorted(set(grads) - set(params))}."
        )
    for name, p in params.items():
        if grads[name].shape != p.shape:
            raise ValueError(
                f"grads[{name!r}] has shape {tuple(grads[name].shape)}, "
                f"params[{name!r}] has {tuple(p.shape)}."
            )
    missing = [k for k in ("step",) + tuple(buffers) if k not in state]
    if missing:
        raise ValueError(f"state lacks {missing}; make it with init(params).")
    if tuple(state["step"].shape) != (n_seeds,):
        raise ValueError(
            f"state['step'] has shape {tuple(state['step'].shape)}, expected ({n_seeds},)."
        )
    if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != (n_seeds,)):
        raise ValueError(
            f"mask must be a bool tensor of shape ({n_seeds},); "
            f"got {mask.dtype} of shape {tuple(mask.shape)}."
        )


class FunctionalAdam(FunctionalOptimizer):
    """Functional :class:`torch.optim.Adam` (and AdamW) on stacked parameters.

    Parameters
    ----------
    lr : float, default=1e-3
    betas : tuple of float, default=(0.9, 0.999)
    eps : float, default=1e-8
    weight_decay : float, default=0
        Added to the gradient (L2), or, with ``decoupled_weight_decay``,
        applied as ``param * (1 - lr * weight_decay)`` (AdamW).
    decoupled_weight_decay : bool, default=False
    fused : bool or None, default=None
        Whether :meth:`step_` may run torch's fused kernel (``torch._fused_adam_``
        / ``torch._fused_adamw_``, what ``torch.optim.Adam(fused=True)`` calls):
        None or True use it where it applies (see Notes), False never does.

    Notes
    -----
    :meth:`step` always follows torch's single-tensor order (bit-for-bit).
    :meth:`step_` runs the fused CPU kernel instead, one pass over the
    buffers for the whole update, when ``fused`` allows it, torch has the
    kernel, the tensors are contiguous float32 or float64 CPU tensors and
    the seeds that step (those of ``mask``) are at the same step count (a
    chunk of :class:`~hw1sk.ensemble.SeedEnsemble` trained from the start,
    its diverged or stopped seeds masked); otherwise it uses the in-place
    single-tensor operations.  The kernel runs the
    arithmetic of ``torch.optim.Adam(fused=True)`` on the stacked tensors;
    against torch's default (single-tensor) optimizer, and against its fused
    one on each seed's own tensors, a step's values differ by an ulp where
    they differ at all (measured 1.2e-7 relative to a tensor's largest value
    in float32, 2.2e-16 in float64; ``tests/test_functional_optim.py``
    checks 1e-6 and 1e-14 per step, and the single-tensor tolerances over
    50 steps).  Speed (one thread, paired in one process): 8 seeds of the
    52,650-parameter MNIST MLP 784-64-32-10, 1.24 ms a step in place
    against 0.36 ms fused, or 2.64 ms against 0.37 ms when a fifth of the
    gradients are zero (``sqrt`` of zeros is ~15x slower than of normal
    values on the CPU; the kernel's is not); 32 seeds of 571 parameters,
    139 us against 23 us; with one seed masked, 6.1 ms against 0.40 ms (the
    kernel on the other seeds' rows) and 367 us against 197 us.  A whole
    :class:`~hw1sk.ensemble.SeedEnsemble` fit, CPU time: MNIST MLP, 8 seeds,
    10k images, 0.57 s -> 0.43 s (``bench_seed_ensemble.py --cases
    mnist-mlp``, 60k images: 3.56 s -> 2.51 s, 2.14x -> 2.67x the loop's
    speed); the 571-parameter depth-4 network, 32 seeds, 200 full-batch
    epochs, 1.45 s -> 1.34 s (its step is bound by the network, not Adam).

    ``amsgrad`` and ``maximize`` are not supported.  Outside the kernel, the
    bias corrections are computed like torch's, in Python double precision
    (through a table indexed by the step count), so the per-seed step sizes
    are the ones torch uses.
    """

    _buffers = ("exp_avg", "exp_avg_sq")
    _hyperparameters = ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay",
                        "fused")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, fused=None):
        self.lr = _scalar("lr", lr)
        self.fused = fused
        self.betas = tuple(_scalar(f"betas[{i}]", b) for i, b in enumerate(betas))
        self.eps = eps
        self.weight_decay = weight_decay
        self.decoupled_weight_decay = decoupled_weight_decay
        _check_nonnegative(lr=self.lr, eps=eps, weight_decay=weight_decay)
        for i, beta in enumerate(self.betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")

    def _coefficients(self, old_step, new_step, like):
        """Per-seed ``-lr / bias_correction1`` and ``sqrt(bias_correction2)``."""
        beta1, beta2 = self.betas
        return {
            "neg_step_size": -self._lookup(
                "step_size", lambda k: self.lr / (1 - beta1**k), beta1, new_step),
            "bc2_sqrt": self._lookup(
                "bc2_sqrt", lambda k: (1 - beta2**k) ** 0.5, beta2, new_step),
        }

    def _lookup(self, key, formula, beta, step: Tensor) -> Tensor:
        """``formula(step)`` per seed, evaluated as torch does, in Python floats.

        ``formula(k)`` depends on ``k`` only through ``1 - beta**k``, which is
        1.0 in float64 past ``_decay_length(beta)`` steps, so a table of that
        length, cached per device, covers every step.
        """
        length = _decay_length(beta)
        if length is None:  # too long a table: torch.pow, at most 1 ulp off
            k = step.to(_table_dtype(step.device))
            return formula(k)
        # shared by instances with the same hyper-parameters: a table of 1-beta2**k is
        # tens of thousands of Python evaluations (one optimizer per chunk of seeds)
        cache_key = (key, self.lr, beta, step.device)
        table = _TABLES.get(cache_key)
        if table is None:
            values = [math.inf if k == 0 else formula(float(k)) for k in range(length)]
            table = torch.tensor(values, dtype=torch.float64).to(
                device=step.device, dtype=_table_dtype(step.device))
            _TABLES[cache_key] = table
        index = step.to(torch.long).clamp(0, length - 1)
        return table[index]

    def _update(self, param, grad, buffers, coeffs):
        """Adam on one stacked parameter, in torch's ``_single_tensor_adam`` order."""
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self.decoupled_weight_decay:
                param = param.mul(1 - self.lr * self.weight_decay)
            else:
                grad = grad.add(param, alpha=self.weight_decay)
        exp_avg = buffers["exp_avg"].lerp(grad, 1 - beta1)
        exp_avg_sq = buffers["exp_avg_sq"].mul(beta2).addcmul(grad, grad, value=1 - beta2)
        bc2_sqrt = _per_seed(coeffs["bc2_sqrt"], param)
        denom = (exp_avg_sq.sqrt() / bc2_sqrt).add(self.eps)
        # torch: param.addcdiv_(exp_avg, denom, value=-step_size), which
        # evaluates param + (value * exp_avg) / denom elementwise.
        step = _per_seed(coeffs["neg_step_size"], param)
        param = param + (step * exp_avg) / denom
        return param, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}

    def _update_(self, param, grad, buffers, coeffs):
        """:meth:`_update` in place, the same operations in the same order."""
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self.decoupled_weight_decay:
                param.mul_(1 - self.lr * self.weight_decay)
            else:
                grad = grad.add(param, alpha=self.weight_decay)
        exp_avg, exp_avg_sq = buffers["exp_avg"], buffers["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = torch.sqrt(exp_avg_sq, out=self._scratch("denom", param))
        denom.div_(_per_seed(coeffs["bc2_sqrt"], param)).add_(self.eps)
        update = torch.mul(_per_seed(coeffs["neg_step_size"], param), exp_avg,
                           out=self._scratch("update", param))
        param.add_(update.div_(denom))

    def step_(self, params: dict, grads: dict, state: dict, mask: Tensor | None = None):
        """:meth:`FunctionalOptimizer.step_`, through torch's fused kernel where it applies.

        See the class Notes for when the kernel runs and how close it is to
        torch's default optimizer.

        Parameters
        ----------
        params, grads, state, mask
            As in :meth:`FunctionalOptimizer.step_`.

        Returns
        -------
        params : dict of str to Tensor
        state : dict
        """
        kernel, seeds = self._fused_plan(params, grads, state, mask)
        if kernel is None:
            return super().step_(params, grads, state, mask)
        with torch.no_grad():
            old_step = state["step"]
            new_step = old_step + (1 if seeds is None else mask.to(old_step.dtype))
            names = list(params)
            dicts = (params, grads, state["exp_avg"], state["exp_avg_sq"])
            if seeds is None:  # whole stacked tensors
                lists = [[d[k] for k in names] for d in dicts]
            else:  # the rows of the seeds that step (contiguous: a seed's row is)
                lists = [[row for k in names for row in _rows(d[k], seeds)] for d in dicts]
            if lists[0]:  # (no seed steps: nothing to do)
                step = new_step[seeds[0] if seeds else 0]
                try:
                    kernel(*lists, [], [step] * len(lists[0]), lr=self.lr,
                           beta1=self.betas[0], beta2=self.betas[1],
                           weight_decay=self.weight_decay, eps=self.eps, amsgrad=False,
                           maximize=False)
                except (NotImplementedError, RuntimeError):  # refused before any write:
                    self.__dict__["_fused_unavailable"] = True  # no CPU kernel in this torch
                    return super().step_(params, grads, state, mask)
            state["step"] = new_step
        return params, state

    def _fused_plan(self, params, grads, state, mask):
        """``(kernel, seeds)``: torch's fused kernel and the seeds it updates.

        ``seeds`` is None for every seed (one call on the stacked tensors), or
        the list of unmasked seeds (one call on their rows); ``kernel`` is None
        where the kernel does not apply.  It takes one step count per call: the
        seeds it updates must share theirs.
        """
        if self.fused is False or self.__dict__.get("_fused_unavailable"):
            return None, None
        name = "_fused_adamw_" if self.decoupled_weight_decay else "_fused_adam_"
        kernel = getattr(torch, name, None)
        if kernel is None:
            return None, None
        _check_step_inputs(params, grads, state, mask, self._buffers)
        tensors = [d[k] for d in (params, grads, state["exp_avg"], state["exp_avg_sq"])
                   for k in params]
        dtype = tensors[0].dtype
        if not all(t.device.type == "cpu" and t.dtype == dtype and t.is_contiguous()
                   for t in tensors) or dtype not in (torch.float32, torch.float64):
            return None, None
        step, seeds = state["step"], None
        if mask is not None and not bool(mask.all()):
            seeds = mask.nonzero().flatten().tolist()
            step = step[mask]
        if step.numel() and not bool((step == step[0]).all()):
            return None, None
        return kernel, seeds


def _rows(tensor: Tensor, seeds: list) -> list:
    """The rows ``tensor[i]`` of the seeds ``i`` in ``seeds``."""
    rows = tensor.unbind(0)
    return [rows[i] for i in seeds]


class FunctionalAdamW(FunctionalAdam):
    """Functional :class:`torch.optim.AdamW`: Adam with decoupled weight decay.

    Parameters
    ----------
    lr : float, default=1e-3
    betas : tuple of float, default=(0.9, 0.999)
    eps : float, default=1e-8
    weight_decay : float, default=1e-2
    fused : bool or None, default=None
        As in :class:`FunctionalAdam`.
    """

    _hyperparameters = ("lr", "betas", "eps", "weight_decay", "fused")

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 fused=None):
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=True, fused=fused)


class FunctionalSGD(FunctionalOptimizer):
    """Functional :class:`torch.optim.SGD` on stacked parameters.

    Parameters
    ----------
    lr : float, default=1e-3
    momentum : float, default=0
    dampening : float, default=0
    weight_decay : float, default=0
    nesterov : bool, default=False
        Requires ``momentum > 0`` and ``dampening == 0``, as in torch.

    Notes
    -----
    As in torch, a seed's first update sets its momentum buffer to the
    gradient itself (no dampening); the per-seed step counter tells which
    seeds have not been updated yet.
    """

    _hyperparameters = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0,
                 nesterov=False):
        self.lr = _scalar("lr", lr)
        self.momentum = momentum
        self.dampening = dampening
        self.weight_decay = _scalar("weight_decay", weight_decay)
        self.nesterov = nesterov
        _check_nonnegative(lr=self.lr, momentum=momentum, weight_decay=self.weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self._buffers = ("momentum_buffer",) if momentum != 0 else ()

    def _coefficients(self, old_step, new_step, like):
        """Which seeds take their first step (their buffer starts as the gradient)."""
        return {"first": old_step == 0}

    def _update(self, param, grad, buffers, coeffs):
        """SGD on one stacked parameter, in torch's ``_single_tensor_sgd`` order."""
        new_buffers = {}
        if self.weight_decay != 0:
            grad = grad.add(param, alpha=self.weight_decay)
        if self.momentum != 0:
            running = buffers["momentum_buffer"].mul(self.momentum).add(
                grad, alpha=1 - self.dampening)
            buf = torch.where(_seed_view(coeffs["first"], grad), grad, running)
            new_buffers["momentum_buffer"] = buf
            grad = grad.add(buf, alpha=self.momentum) if self.nesterov else buf
        return param.add(grad, alpha=-self.lr), new_buffers

    def _update_(self, param, grad, buffers, coeffs):
        """:meth:`_update` in place, the same operations in the same order."""
        if self.weight_decay != 0:
            grad = grad.add(param, alpha=self.weight_decay)
        if self.momentum != 0:
            buf = buffers["momentum_buffer"]
            first = _seed_view(coeffs["first"], grad)
            running = buf.mul(self.momentum).add_(grad, alpha=1 - self.dampening)
            buf.copy_(torch.where(first, grad, running))
            grad = grad.add(buf, alpha=self.momentum) if self.nesterov else buf
        param.add_(grad, alpha=-self.lr)


class FunctionalRMSprop(FunctionalOptimizer):
    """Functional :class:`torch.optim.RMSprop` on stacked parameters.

    Parameters
    ----------
    lr : float, default=1e-2
    alpha : float, default=0.99
    eps : float, default=1e-8
    weight_decay : float, default=0
    momentum : float, default=0
    centered : bool, default=False
    """

    _hyperparameters = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                 centered=False):
        self.lr = _scalar("lr", lr)
        self.alpha = alpha
        self.eps = eps
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.centered = centered
        _check_nonnegative(lr=self.lr, eps=eps, momentum=momentum,
                           weight_decay=weight_decay, alpha=alpha)
        self._buffers = (("square_avg",) + (("momentum_buffer",) if momentum > 0 else ())
                         + (("grad_avg",) if centered else ()))

    def _update(self, param, grad, buffers, coeffs):
        """RMSprop on one stacked parameter, in torch's ``_single_tensor_rmsprop`` order."""
        new_buffers = {}
        if self.weight_decay != 0:
            grad = grad.add(param, alpha=self.weight_decay)
        square_avg = buffers["square_avg"].mul(self.alpha).addcmul(
            grad, grad, value=1 - self.alpha)
        new_buffers["square_avg"] = square_avg
        if self.centered:
            grad_avg = buffers["grad_avg"].lerp(grad, 1 - self.alpha)
            new_buffers["grad_avg"] = grad_avg
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt()
        else:
            avg = square_avg.sqrt()
        avg = avg.add(self.eps)
        if self.momentum > 0:
            buf = buffers["momentum_buffer"].mul(self.momentum).addcdiv(grad, avg)
            new_buffers["momentum_buffer"] = buf
            return param.add(buf, alpha=-self.lr), new_buffers
        return param.addcdiv(grad, avg, value=-self.lr), new_buffers


def _check_nonnegative(**values) -> None:
    """Torch's ``Invalid <name> value`` checks."""
    for name, value in values.items():
        if not value >= 0.0:
            label = "learning rate" if name == "lr" else f"{name} value"
            raise ValueError(f"Invalid {label}: {value}")


_REGISTRY = {
    torch.optim.Adam: FunctionalAdam,
    torch.optim.AdamW: FunctionalAdamW,
    torch.optim.SGD: FunctionalSGD,
    torch.optim.RMSprop: FunctionalRMSprop,
}

# Options of the torch classes that only choose an implementation strategy.
_IGNORED = ("foreach", "fused", "capturable")
# Options with a default only this value of which is supported.
_ONLY_DEFAULT = {"amsgrad": False, "maximize": False, "differentiable": False}


def functional_optimizer(optimizer, **kwargs) -> FunctionalOptimizer:
    """The functional counterpart of a ``torch.optim`` optimizer class.

    Parameters
    ----------
    optimizer : {torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, \
torch.optim.RMSprop} or FunctionalOptimizer
        The class, as given to the estimator (``optimizer=torch.optim.SGD``).  A
        :class:`FunctionalOptimizer` instance is returned as it is (then no
        keyword arguments are allowed).
    **kwargs
        Its keyword arguments (``lr``, ``betas``, ``eps``, ``weight_decay``,
        ``momentum``, ``nesterov``, ``dampening``, ``alpha``, ``centered``,
        and for Adam ``decoupled_weight_decay`` and ``fused``).  ``foreach``,
        ``capturable`` (and ``fused`` of SGD, RMSprop) are ignored;
        ``amsgrad``, ``maximize`` and ``differentiable`` may only be False.

    Returns
    -------
    functional : FunctionalOptimizer

    Raises
    ------
    TypeError
        For an unsupported optimizer class or an unknown keyword argument.
    ValueError
        For an unsupported option value (``amsgrad=True``) or an invalid
        hyper-parameter (negative ``lr``).
    """
    if isinstance(optimizer, FunctionalOptimizer):
        if kwargs:
            raise TypeError(
                f"Keyword arguments {sorted(kwargs)} cannot be applied to an existing "
                f"{type(optimizer).__name__}; pass the torch.optim class instead.")
        return optimizer
    cls = _REGISTRY.get(optimizer) if isinstance(optimizer, type) else None
    if cls is None:
        supported = ", ".join(f"torch.optim.{c.__name__}" for c in _REGISTRY)
        raise TypeError(
            f"No functional version of optimizer {_describe(optimizer)}; "
            f"supported: {supported}.")
    accepted = inspect.signature(cls).parameters
    kwargs = {k: v for k, v in kwargs.items() if k not in _IGNORED or k in accepted}
    for option, allowed in _ONLY_DEFAULT.items():
        if option in kwargs and kwargs.pop(option) != allowed:
            raise ValueError(
                f"{option}=True is not supported by the functional "
                f"{optimizer.__name__} (hw1sk.functional_optim).")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TypeError(
            f"Unsupported option for the functional {optimizer.__name__}: {exc}") from None


def _describe(obj) -> str:
    """``module.Name`` of a class, or the repr of anything else."""
    if isinstance(obj, type):
        return f"{obj.__module__}.{obj.__qualname__}"
    return repr(obj)
