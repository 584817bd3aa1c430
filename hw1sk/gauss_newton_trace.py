"""Exact Gauss-Newton trace from per-sample gradients, and the Hessian's control variate.

The Gauss-Newton matrix of a loss that is a sum over samples is ``G = sum_n
J_n^T H_n J_n`` (``J_n`` the Jacobian of sample ``n``'s outputs in the
parameters, ``H_n`` the Hessian of the loss in them), so ``tr G = sum_n
sum_{c,c'} H_n[c, c'] <J_n^T e_c, J_n^T e_c'>``: one back-propagation per
output ``c`` (cotangent ``e_c`` on every row) down to the outputs of the
layers that own the parameters gives each sample's cotangents there (the
samples are independent), and each layer turns them into the per-sample
Gram matrices of its parameter gradients from its
inputs and those cotangents, never materializing a per-sample gradient of
the whole net (for a Linear layer ``(delta_nc . delta_nc') ||x_n||^2``).  Supported
owners: :class:`torch.nn.Linear`, :class:`torch.nn.Conv2d` (one group,
zero padding) and BatchNorm on running statistics; anything else (another
parameterized layer, a layer called twice, tied weights, an in-place change
of a layer's output, batch statistics, a forward or loss coupling samples,
which a forward of the first samples alone detects) gives
``None``, and the caller does without.

:func:`~hw1sk.stochastic_curvature.hessian_trace` with
``method="gn-control"`` uses it as a control variate: ``tr H = tr G +
E[z^T (H - G) z]``, the second term by Hutchinson, each probe one
forward-over-reverse product that gives ``H z`` and ``J z`` together.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .curvature import _closed_form_output_blocks, _output_hessian_blocks, _scalar_loss

_BN = nn.modules.batchnorm._BatchNorm
# per-sample gradient entries materialized at a time (Conv2d, Linear on token sequences)
_CHUNK = 1 << 24


def _supported(m):
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.Conv2d):
        return m.groups == 1 and m.padding_mode == "zeros" and not isinstance(m.padding, str)
    if isinstance(m, _BN):
        return (not m.training and m.running_mean is not None
                and m.running_var is not None)
    return False


def _owners(module, names):
    """``{layer: [leaf names]}`` owning the parameters ``names``; ``None`` if one can't."""
    mods = dict(module.named_modules())
    users = {}
    for m in module.modules():
        for p in m._parameters.values():
            if p is not None:
                users[id(p)] = users.get(id(p), 0) + 1
    owners = {}
    for name in names:
        prefix, _, leaf = name.rpartition(".")
        m = mods.get(prefix)
        p = getattr(m, leaf, None)
        if (m is None or leaf not in ("weight", "bias") or not _supported(m)
                or users.get(id(p), 0) != 1):
            return None
        owners.setdefault(m, []).append(leaf)
    return owners


def _features(m, x):
    """What :func:`_gram` needs of layer ``m``'s input ``x``, computed once."""
    if isinstance(m, nn.Linear):
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        return torch.einsum("ni,ni->n", x[:, 0], x[:, 0]) if x.shape[1] == 1 else x
    if isinstance(m, nn.Conv2d):
        return F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # (N, Cin k^2, L)
    shape = (1, -1) + (1,) * (x.dim() - 2)  # BatchNorm on running statistics
    xhat = (x - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps)
    return xhat.reshape(x.shape[0], x.shape[1], -1)


def _gram(m, leaves, feats, d):
    """Per-sample Gram matrices ``(N, k, k)`` of ``m``'s gradients in ``leaves``.

    ``d`` stacks the cotangents of ``m``'s output for the ``k`` unit output
    vectors, ``(k, N, ...)``; entry ``[n, c, c']`` is the inner product of
    sample ``n``'s gradients for outputs ``c`` and ``c'``.
    """
    k, N = d.shape[:2]
    if isinstance(m, nn.Linear):
        d = d.reshape(k, N, -1, d.shape[-1])
        if feats.dim() == 1:  # one input row per sample: each gradient an outer product
            dn = d[:, :, 0].transpose(0, 1)  # (N, k, out)
            dd = dn @ dn.transpose(1, 2)  # the bias's Gram; the weight's is ||x_n||^2 times it
            scale = sum({"weight": feats, "bias": torch.ones_like(feats)}[leaf] for leaf in leaves)
            return dd * scale[:, None, None]
        else:
            g = torch.einsum("cntj,nti->ncji", d, feats).reshape(N, k, -1)
            weight = g @ g.transpose(1, 2)
        b = d.sum(2)
    elif isinstance(m, nn.Conv2d):
        d = d.reshape(k, N, d.shape[2], -1)
        g = torch.einsum("cnol,nil->ncoi", d, feats).reshape(N, k, -1)
        weight = g @ g.transpose(1, 2)
        b = d.sum(3)
    else:
        d = d.reshape(k, N, d.shape[2], -1)
        g = (d * feats[None]).sum(3).transpose(0, 1)
        weight = g @ g.transpose(1, 2)
        b = d.sum(3)
    b = b.transpose(0, 1)
    bias = b @ b.transpose(1, 2)
    return sum({"weight": weight, "bias": bias}[leaf] for leaf in leaves)


def _record(module, owners, X):
    """The outputs of ``module(X)`` and each owner's ``(input, output)``; ``None`` if unusable."""
    seen = {m: [] for m in owners}

    def hook(m, args, out):
        seen[m].append((args[0].detach(), out, out._version))

    handles = [m.register_forward_hook(hook) for m in owners]
    try:
        with torch.enable_grad():
            out = module(X)
    finally:
        for h in handles:
            h.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        return None
    for calls in seen.values():
        if len(calls) != 1 or not calls[0][1].requires_grad or calls[0][1]._version != calls[0][2]:
            return None
    if _couples_samples(module, X, out):
        return None
    return out, {m: calls[0][:2] for m, calls in seen.items()}


def _couples_samples(module, X, out):
    """Whether a sample's outputs depend on the other samples: a forward of the first 8
    samples alone, or (for a batch of at most 8) with sample 0 changed, must agree."""
    n = X.shape[0]
    if n < 2:
        return False
    if n > 8:
        rows, X2 = slice(0, 8), X[:8]
    elif X.is_floating_point():
        rows, X2 = slice(1, n), X.clone()
        X2[0] = X2[0] + 0.5 + X2[0].abs()
    else:
        return True
    with torch.no_grad():
        out2 = module(X2)[rows]
    ref = out[rows].detach()
    scale = float(ref.abs().max()) + 1e-30
    return bool((ref - out2).abs().max() > 1e3 * torch.finfo(out.dtype).eps * scale)


def gauss_newton_trace(module, criterion, X, y, names):
    """``(tr G, blocks)`` for the parameters ``names``, or ``None`` where unsupported.

    ``module`` is in analysis mode (BatchNorm on running statistics);
    ``blocks`` are the per-sample ``(n, k, k)`` output Hessians.  The trace
    is accumulated in float64.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from hw1sk.gauss_newton_trace import gauss_newton_trace
    >>> X = torch.tensor([[1.0], [2.0]]); y = torch.zeros(2, 1)
    >>> net = nn.Linear(1, 1)  # linear in its parameters: G is the Hessian, trace 7
    >>> round(gauss_newton_trace(net, nn.MSELoss(), X, y, ["weight", "bias"])[0], 4)
    7.0
    """
    owners = _owners(module, names)
    if owners is None:
        return None
    recorded = _record(module, owners, X)
    if recorded is None:
        return None
    out, layers = recorded
    blocks, _ = _closed_form_output_blocks(criterion, out, y)
    if blocks is None:
        blocks, _ = _output_hessian_blocks(
            lambda F_: _scalar_loss(criterion(F_, y), criterion), out)
    if blocks is None:
        return None
    mods = list(layers)
    feats = {m: _features(m, layers[m][0]) for m in mods}
    cot = [[] for _ in mods]
    for c in range(out.shape[1]):
        E = torch.zeros_like(out)
        E[:, c] = 1
        deltas = torch.autograd.grad(out, [layers[m][1] for m in mods], E,
                                     retain_graph=True, allow_unused=True)
        for i, (m, d) in enumerate(zip(mods, deltas)):
            cot[i].append(torch.zeros_like(layers[m][1]) if d is None else d.detach())
    total = torch.zeros((), dtype=torch.float64, device=out.device)
    for m, d in zip(mods, cot):
        d = torch.stack(d)
        size = sum(getattr(m, leaf).numel() for leaf in owners[m])
        if feats[m].dim() <= 1 or isinstance(m, _BN):  # no per-sample gradient materialized
            size = 1
        step = max(1, _CHUNK // (d.shape[0] * size))  # samples whose gradients fit in memory
        for start in range(0, d.shape[1], step):
            sl = slice(start, start + step)
            K = _gram(m, owners[m], feats[m][sl], d[:, sl])
            total += (K.double() * blocks[sl].double()).sum()
    return float(total), blocks.detach()


def _double_backward_forms(outputs, loss, theta, Z):
    """``H z`` by double back-propagation and ``J z`` by forward mode, for each row ``z``."""
    t = theta.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(loss(outputs(t)), t, create_graph=True)
    rows = [torch.autograd.grad(g, t, z, retain_graph=True, allow_unused=True)[0]
            if g.requires_grad else None for z in Z]
    HZ = torch.stack([torch.zeros_like(z) if h is None else h for z, h in zip(Z, rows)])
    JZ = torch.stack([torch.func.jvp(outputs, (theta.detach(),), (z,))[1] for z in Z])
    return HZ.detach(), JZ.detach()


def curvature_forms(outputs, loss, theta, Z, blocks):
    """``(z^T H z, z^T G z)`` for each row ``z`` of ``Z``, in float64.

    ``outputs(theta)`` the module's outputs, ``loss(out)`` the scalar loss;
    one forward-over-reverse product per row (``torch.func.jvp`` of the
    gradient, vmapped over the rows) gives ``H z`` and, as the tangent of
    the outputs, ``J z``; ``z^T G z = sum_n (J z)_n^T H_n (J z)_n``.
    """
    def grad_and_out(t):
        out = outputs(t)
        return loss(out), out

    gfun = torch.func.grad(grad_and_out, has_aux=True)

    def one(z):
        _, (hz, jz) = torch.func.jvp(gfun, (theta,), (z,))
        return hz, jz

    try:
        with warnings.catch_warnings():  # torch's first jvp scripts decompositions, noisily
            warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
            HZ, JZ = torch.func.vmap(one)(Z)
    except RuntimeError:  # criteria that torch.func's jvp-of-grad trips over (MSE's target)
        HZ, JZ = _double_backward_forms(outputs, loss, theta, Z)
    zhz = (Z.double() * HZ.double()).sum(1)
    JZ = JZ.double()
    zgz = torch.einsum("bni,nij,bnj->b", JZ, blocks.double(), JZ)
    return zhz, zgz
