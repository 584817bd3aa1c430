"""Curvature beyond the top eigenvalues: Hessian trace and spectral density.

Randomized numerical linear algebra on Hessian-vector products, in the
spirit of PyHessian (Yao et al., 2020): the trace by Hutchinson's estimator,
Hutch++ or its Krylov-space variant (which also gives the top eigenvalue,
:func:`hessian_top_eigenvalue_and_trace`), the whole spectral density by
stochastic Lanczos quadrature (SLQ).  Every function can restrict itself to one block of the Hessian: the
rows and columns of the parameters selected by ``params`` (one layer, or
any set of parameters), with the other parameters held fixed.

The inputs are those of :mod:`hw1sk.curvature` (``module``, ``criterion``,
``X``, ``y``); the module is evaluated in eval mode (BatchNorm on its running
statistics, or on the batch's with ``bn_mode="train-batch"``), never
modified, and the products are computed in its own dtype (float64 for a
float64 module).  Every stochastic estimate carries its standard error.

``curvature="gauss-newton"`` replaces the Hessian by the Gauss-Newton matrix
``J^T H_out J`` (``J`` the Jacobian of the outputs, ``H_out`` the Hessian of
the loss in the outputs).  For a loss convex in the outputs (MSE,
cross-entropy) it is positive semi-definite: it shows no negative curvature
and gives no minimal ratio, and a :class:`GaussNewtonWarning` says so.

Independent products are batched (several vectors through one backward pass
of the retained gradient graph): the probes of Hutchinson and of each Hutch++
stage, the unit vectors of the exact trace, and the probes of SLQ, whose
Lanczos recurrences run side by side (or, with ``block_size``, as blocks of
one block Lanczos recurrence each).  For a chain of Linear layers and
elementwise activations (an :class:`~hw1sk.models.MLP`) with a loss that is
a sum or mean over samples, the products are written out by hand
(Pearlmutter's R-operator: the first layer's data products one GEMM for all
vectors of a batch, input features that are zero on every sample left out)
and the exact trace has a closed form that needs no products at all; other
modules (convolutions, BatchNorm, custom forwards) use double
back-propagation.  For those, ``hessian_trace(method="gn-control")`` takes
the Gauss-Newton trace exactly (:mod:`hw1sk.gauss_newton_trace`) and
estimates only ``tr(H - G)``, by probes far less variable than the
Hessian's where ``G`` dominates.  ``benchmarks/bench_curvature.py``
compares time and accuracy with PyHessian.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.utils.validation import check_array
from torch.func import functional_call

from ._inputs import analysis_mode, check_bn_mode
from .curvature import (
    _check_int,
    _check_positive_real,
    _compose,
    _elementwise_derivatives,
    _linear_chain,
    _output_hessian_blocks,
    _prepare,
    _scalar_loss,
)
from .gauss_newton_trace import curvature_forms, gauss_newton_trace
from .seeding import torch_generator

__all__ = [
    "GaussNewtonWarning",
    "TraceEstimate",
    "hessian_trace",
    "hessian_top_eigenvalue_and_trace",
    "SpectralDensity",
    "hessian_spectral_density",
    "exact_spectral_density",
]

_TRACE_METHODS = ("auto", "exact", "hutchinson", "hutch++", "krylov", "gn-control")
_CURVATURES = ("hessian", "gauss-newton")
_EXACT_MAX_PARAMS = 2000
# vectors per batched product: bounds the memory of one backward pass to ~this many copies
_BATCH = 32


class GaussNewtonWarning(UserWarning):
    """The Gauss-Newton matrix is positive semi-definite: no negative curvature.

    Emitted by every function called with ``curvature="gauss-newton"``: for a
    loss convex in the outputs, ``J^T H_out J`` has no negative eigenvalue
    whatever the parameters, so it cannot show a saddle and gives no
    minimal ratio (use the Hessian, :func:`hw1sk.curvature.minimal_ratio`).
    """


def _check_curvature(curvature):
    if curvature not in _CURVATURES:
        raise ValueError(f"curvature must be one of {_CURVATURES}, got {curvature!r}.")
    if curvature == "gauss-newton":
        warnings.warn(
            "curvature='gauss-newton': the Gauss-Newton matrix J^T H_out J is positive "
            "semi-definite (for a loss convex in the outputs), so it cannot show negative "
            "curvature and gives no minimal ratio; use curvature='hessian' for those.",
            GaussNewtonWarning, stacklevel=3,
        )
    return curvature


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
    if (not isinstance(keys, (list, tuple)) or not keys
            or not all(isinstance(k, str) for k in keys)):
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


class _BlockOperator:
    """The selected parameters ``B`` as one flat vector, and the module as their function.

    The other parameters and the buffers are fixed; products ``v -> M v``
    come from the subclasses.  ``matmat`` takes vectors as the rows of a
    matrix and counts one product per row, ``batch`` rows at a time.
    """

    batch = _BATCH

    def __init__(self, module, criterion, X, y, names):
        tensors = dict(module.named_parameters())
        fixed = {n: t.detach() for n, t in tensors.items() if n not in names}
        fixed.update(dict(module.named_buffers()))
        shapes = [tensors[n].shape for n in names]
        sizes = [tensors[n].numel() for n in names]
        self.theta = torch.cat([tensors[n].detach().reshape(-1) for n in names])
        self.size, self.n_products = self.theta.numel(), 0
        self.criterion, self.y = criterion, y

        def outputs(theta):
            block = {n: c.view(s) for n, c, s in zip(names, torch.split(theta, sizes), shapes)}
            return functional_call(module, {**fixed, **block}, (X,))

        self._outputs = outputs

    @property
    def like(self):
        return self.theta.detach()

    def _loss(self, out):
        return _scalar_loss(self.criterion(out, self.y), self.criterion)

    def __call__(self, v):
        return self.matmat(v[None])[0]

    def matmat(self, V):
        self.n_products += V.shape[0]
        return torch.cat([self._products(chunk) for chunk in torch.split(V, self.batch)])

    def exact_cost(self):
        """Work of :meth:`exact_trace`, in products."""
        return float(self.size)

    def exact_trace(self):
        """``(trace, 0.0)``: the sum of ``e_i^T M e_i`` over the block, one product each."""
        return _exact_trace(self)


class _BlockHessianOperator(_BlockOperator):
    """``v -> H_BB v``: the Hessian block of the selected parameters ``B``.

    The gradient graph is built once; every product is one double
    back-propagation through it, batched over the rows of ``V``.
    """

    def __init__(self, module, criterion, X, y, names):
        super().__init__(module, criterion, X, y, names)
        self.theta.requires_grad_(True)
        loss = self._loss(self._outputs(self.theta))
        (self._g,) = torch.autograd.grad(loss, self.theta, create_graph=True, allow_unused=True)
        self._batched = True

    def _products(self, V):
        if self._g is None or not self._g.requires_grad:  # loss linear in the block
            return torch.zeros_like(V)
        if self._batched and V.shape[0] > 1:
            try:
                (hv,) = torch.autograd.grad(self._g, self.theta, V, retain_graph=True,
                                            allow_unused=True, is_grads_batched=True)
                return torch.zeros_like(V) if hv is None else hv.detach()
            except RuntimeError:  # an operation without a batching rule: one at a time
                self._batched = False
        rows = [torch.autograd.grad(self._g, self.theta, v, retain_graph=True,
                                    allow_unused=True)[0] for v in V]
        return torch.stack([torch.zeros_like(v) if h is None else h.detach()
                            for v, h in zip(V, rows)])


class _BlockGaussNewtonOperator(_BlockOperator):
    """``v -> J^T H_out J v``: the Gauss-Newton block of the selected parameters.

    ``J v`` by forward mode (:func:`torch.func.jvp`, vmapped over the
    vectors), ``H_out u`` by double back-propagation of the loss in the
    outputs, ``J^T u`` by back-propagation through the retained forward graph
    (a vector-Jacobian product); the last two batched over the vectors.
    """

    def __init__(self, module, criterion, X, y, names):
        super().__init__(module, criterion, X, y, names)
        theta = self.theta.detach().requires_grad_(True)
        self._theta_graph, self._out_graph = theta, self._outputs(theta)
        self._out = self._out_graph.detach().requires_grad_(True)
        (self._g_out,) = torch.autograd.grad(self._loss(self._out), self._out,
                                             create_graph=True)

    def _backward(self, tensor, inputs, grads):
        """``d tensor / d inputs`` contracted with each row of ``grads`` (zeros if unused)."""
        shape = (grads.shape[0],) + inputs.shape
        if not tensor.requires_grad:
            return torch.zeros(shape, dtype=grads.dtype, device=grads.device)
        (out,) = torch.autograd.grad(tensor, inputs, grads, retain_graph=True,
                                     allow_unused=True, is_grads_batched=True)
        return torch.zeros(shape, dtype=grads.dtype, device=grads.device) if out is None else out

    def _products(self, V):
        with warnings.catch_warnings():  # torch's first jvp scripts decompositions, noisily
            warnings.filterwarnings("ignore", category=FutureWarning, module="torch")
            JV = torch.func.vmap(
                lambda v: torch.func.jvp(self._outputs, (self.theta,), (v,))[1])(V)
        HJV = self._backward(self._g_out, self._out, JV.detach())
        return self._backward(self._out_graph, self._theta_graph, HJV).detach()


# --------------------------------------------------------------------------- #
# Linear/activation chains (MLPs): hand-derived products and a closed-form trace
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class _Chain:
    """The forward pass of a Linear/activation chain, layer by layer.

    Layer ``m`` computes the pre-activations ``a_m = z_m W_m^T + b_m`` from
    its input ``z_m`` (``z_0`` the transformed ``X``, ``z_{m+1} =
    sigma_m(a_m)``); ``s1[m]``, ``s2[m]`` are ``sigma_m'`` and ``sigma_m''``
    at ``a_m``, and ``tail`` is the elementwise map after the last layer.
    """

    weights: list
    has_bias: list
    inputs: list
    s1: list
    s2: list
    out: torch.Tensor
    tail: object


def _chain_forward(module, X):
    """The :class:`_Chain` of ``module`` on ``X``; ``None`` unless it is such a chain."""
    chain = _linear_chain(module)
    if chain is None:
        return None
    pre, layers = chain
    inputs, s1, s2 = [], [], []
    with torch.no_grad():
        z = _compose(pre)(X)
        if z.ndim != 2:
            return None
        for m, (lin, acts) in enumerate(layers):
            inputs.append(z)
            a = torch.nn.functional.linear(z, lin.weight, lin.bias)
            if m < len(layers) - 1:
                d1, d2 = _elementwise_derivatives(acts, a)
                s1.append(d1)
                s2.append(d2)
                z = _compose(acts)(a)
        tail = _compose(layers[-1][1])
        out = module(X)  # a guard: the chain's forward must be the module's
        tol = 1e3 * torch.finfo(a.dtype).eps
        if out.shape != a.shape or not torch.allclose(tail(a), out, rtol=tol, atol=tol):
            return None
    return _Chain([lin.weight.detach() for lin, _ in layers],
                  [lin.bias is not None for lin, _ in layers], inputs, s1, s2, a, tail)


def _chain_curvature(chain, criterion, y, gauss_newton):
    """Per-sample output Hessians, pre-activation gradients, activation curvature.

    ``(Hout, grads, curv)``: ``Hout`` the ``(n, k, k)`` Hessians of the loss
    in the outputs ``a_{L-1}``, ``grads[m]`` the gradient in ``a_m``,
    ``curv[m] = (grads[m + 1] W_{m+1}) sigma_m''`` (zero for Gauss-Newton);
    ``None`` when the criterion couples samples.
    """
    def head(out):
        return _scalar_loss(criterion(chain.tail(out), y), criterion)

    Hout, g = _output_hessian_blocks(head, chain.out)
    if Hout is None:
        return None
    L = len(chain.weights)
    grads, curv = [None] * L, [None] * (L - 1)
    grads[-1] = g
    for m in range(L - 2, -1, -1):
        gz = grads[m + 1] @ chain.weights[m + 1]
        grads[m] = gz * chain.s1[m]
        curv[m] = torch.zeros_like(gz) if gauss_newton else gz * chain.s2[m]
    return Hout, grads, curv


class _ChainOperator(_BlockOperator):
    """Hessian (or Gauss-Newton) block products of a Linear/activation chain, by hand.

    Pearlmutter's R-operator written out for the chain: a forward pass of
    the directional derivatives ``R a_m`` of the pre-activations, then their
    back-propagation, each layer's data product one GEMM for all the
    vectors of a batch (``X`` against the stacked first-layer directions).
    Input features that are zero on every sample (MNIST's border pixels)
    are dropped from the first layer's GEMMs: their rows and columns of the
    Hessian are exactly zero.  Products of a block pad the vectors with
    zeros and keep the block's entries.  :meth:`exact_trace` is closed-form.
    """

    batch = 16  # vectors per product: the (n, batch, width) tangents stay cache-sized

    def __init__(self, module, criterion, X, y, names, chain, curvature, gauss_newton):
        super().__init__(module, criterion, X, y, names)
        self.chain, self._gn = chain, gauss_newton
        self._H, self._g, self._curv = curvature
        all_names = [n for n, _ in module.named_parameters()]
        sizes = [p.numel() for _, p in module.named_parameters()]
        starts = np.cumsum([0] + sizes)
        self._full = int(starts[-1])
        self._index = None if names == all_names else torch.cat([
            torch.arange(int(starts[i]), int(starts[i + 1]), device=self.theta.device)
            for i, n in enumerate(all_names) if n in names])
        kinds = [(m, kind) for m, b in enumerate(chain.has_bias)
                 for kind in (("weight", "bias") if b else ("weight",))]
        self._parts = {kinds[i] for i, n in enumerate(all_names) if n in names}
        self._cols = self._z0 = None  # the first layer's used inputs, at the first product

    def _layers(self, V):
        """The rows of ``V`` (full layout) as per-layer ``(K, w, f)`` and ``(K, w)`` views."""
        dW, db, at = [], [], 0
        for W, b in zip(self.chain.weights, self.chain.has_bias):
            w, f = W.shape
            dW.append(V[:, at:at + w * f].view(-1, w, f))
            at += w * f
            db.append(V[:, at:at + w] if b else None)
            at += w if b else 0
        return dW, db

    def _tangents(self, dW, db):
        """``R a_m`` and ``R z_{m+1}``: derivatives along the vectors, ``(n, K, width)`` each."""
        c, K = self.chain, dW[0].shape[0]
        Ra, Rz = [], []
        for m, W in enumerate(c.weights):
            (w, f), n = W.shape, c.out.shape[0]
            z, d = (c.inputs[m], dW[m]) if m else (self._z0, self._first(dW[0]))
            d = d.reshape(K * w, -1).T
            # one GEMM for all K vectors: columns (k, unit); the bias direction rides along
            r = z @ d if db[m] is None else torch.addmm(db[m].reshape(-1), z, d)
            if Rz:
                r.view(n * K, w).addmm_(Rz[-1].view(n * K, f), W.T)
            Ra.append(r.view(n, K, w))
            if m + 1 < len(c.weights):
                Rz.append(Ra[-1] * c.s1[m][:, None, :])
        return Ra, Rz

    def _first(self, dW0):
        return dW0 if self._cols is None else torch.index_select(dW0, 2, self._cols)

    def _products(self, V):
        if self._z0 is None:
            z0 = self.chain.inputs[0]
            used = (z0 != 0).any(0)
            self._cols = None if bool(used.all()) else torch.nonzero(used)[:, 0]
            self._z0 = z0 if self._cols is None else z0[:, self._cols]
        K = V.shape[0]
        if self._index is not None:
            full = V.new_zeros(K, self._full)
            full[:, self._index] = V
            V = full
        dW, db = self._layers(V)
        Ra, Rz = self._tangents(dW, db)
        HV = V.new_zeros(K, self._full) if self._cols is not None else V.new_empty(K, self._full)
        self._adjoint(dW, Ra, Rz, self._layers(HV))
        return HV if self._index is None else HV[:, self._index]

    def _adjoint(self, dW, Ra, Rz, out):
        """Back-propagate ``R grad`` from ``Hout R a_{L-1}``, writing each layer into ``out``."""
        c, (oW, ob) = self.chain, out
        R = torch.bmm(Ra[-1], self._H.transpose(1, 2))
        K = R.shape[1]
        for m in range(len(c.weights) - 1, -1, -1):
            W = c.weights[m]
            (w, f), n = W.shape, R.shape[0]
            z = c.inputs[m] if m else self._z0
            gW = (R.reshape(n, K * w).T @ z).view(K, w, -1)
            if m and not self._gn:  # grad W_m = g_m^T z_m: z_m moves too
                gW += (self._g[m].T @ Rz[m - 1].view(n, K * f)).view(w, K, f).transpose(0, 1)
            if m or self._cols is None:
                oW[m].copy_(gW)
            else:
                oW[m].index_copy_(2, self._cols, gW)
            if ob[m] is not None:
                ob[m].copy_(R.sum(0))
            if m:
                Rg = (R.reshape(n * K, w) @ W).view(n, K, f)
                if not self._gn:
                    Rg.view(n, K * f).addmm_(self._g[m], dW[m].transpose(0, 1).reshape(w, K * f))
                R = Rg.mul_(c.s1[m - 1][:, None, :])
                if not self._gn:
                    R.addcmul_(self._curv[m - 1][:, None, :], Ra[m - 1])

    def exact_cost(self):
        """Floating-point work of :meth:`exact_trace`, in products (of ``~6 n P`` each)."""
        flops = sum(W.shape[0] * W.shape[1] * (W.shape[0] + W.shape[1])
                    for W in self.chain.weights[1:])
        return flops / (6.0 * self._full)

    def exact_trace(self):
        """The trace in closed form, without products.

        Within layer ``m`` the Hessian is ``sum_n M_{m,n} (x) z_{m,n}
        z_{m,n}^T`` (``M_{m,n}`` the Hessian of sample ``n``'s loss in
        ``a_m``), so its weights contribute ``sum_n ||z_{m,n}||^2 tr
        M_{m,n}`` to the trace and its bias ``sum_n tr M_{m,n}``.  ``M``
        follows the Hessian back-propagation ``M_{m-1} = S W_m^T M_m W_m S +
        diag(curv_{m-1})``, ``S = diag(sigma_{m-1}')``, from ``M_{L-1} =
        Hout``; the deepest layer needs only its diagonal.  Samples go in
        chunks of about ``2**21`` entries of ``M``.
        """
        c, parts = self.chain, self._parts
        deepest = min(m for m, _ in parts)
        chunk = max(1, 2**21 // max(W.shape[0] for W in c.weights) ** 2)
        total = 0.0
        for start in range(0, self._H.shape[0], chunk):
            sl = slice(start, start + chunk)
            M, diag = self._H[sl], None
            for m in range(len(c.weights) - 1, deepest - 1, -1):
                t = (M.diagonal(dim1=1, dim2=2) if diag is None else diag).sum(1).double()
                if (m, "weight") in parts:
                    z = c.inputs[m][sl]
                    total += float((z * z).sum(1).double() @ t)
                if (m, "bias") in parts:
                    total += float(t.sum())
                if m == deepest:
                    break
                W, s, curv = c.weights[m], c.s1[m - 1][sl], self._curv[m - 1][sl]
                if m - 1 == deepest:  # diag(W^T M W) S^2 + curv: no (n, f, f) tensor
                    diag = ((M @ W) * W).sum(1) * (s * s) + curv
                else:
                    M = (W.T @ M @ W) * s[:, :, None] * s[:, None, :]
                    M.diagonal(dim1=1, dim2=2).add_(curv)
        return total, 0.0


def _chain_operator(module, criterion, X, y, names, curvature):
    """A :class:`_ChainOperator` when ``module`` is a chain and the loss a per-sample mean."""
    chain = _chain_forward(module, X)
    if chain is None:
        return None
    parts = _chain_curvature(chain, criterion, y, curvature == "gauss-newton")
    if parts is None:
        return None
    return _ChainOperator(module, criterion, X, y, names, chain, parts,
                          curvature == "gauss-newton")


def _block_operator(module, criterion, X, y, params, curvature="hessian", structured=True):
    """The working module, data and operator; the caller enters :func:`analysis_mode`.

    Chains of Linear layers and activations get the hand-derived
    :class:`_ChainOperator` (``structured=False``: the autograd operators,
    for the tests); every other module double back-propagation.
    """
    work, X, y = _prepare(module, criterion, X, y, None)
    names = _select_parameters(work, params)
    cls = _BlockGaussNewtonOperator if curvature == "gauss-newton" else _BlockHessianOperator

    def make():
        op = _chain_operator(work, criterion, X, y, names, curvature) if structured else None
        return cls(work, criterion, X, y, names) if op is None else op

    return work, make


def _rademacher(P, gen, like):
    return (torch.randint(0, 2, (P,), generator=gen, dtype=torch.int64) * 2 - 1).to(like)


# --------------------------------------------------------------------------- #
# trace
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TraceEstimate:
    """A Hessian (or Gauss-Newton) trace and its uncertainty.

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
        Matrix-vector products spent (0 for the closed-form exact trace of a
        chain of Linear layers and activations).
    curvature : {"hessian", "gauss-newton"}, default="hessian"
        Whose trace: the loss Hessian's, or the positive semi-definite
        Gauss-Newton matrix's ``J^T H_out J``.
    """

    value: float
    std_error: float
    method: str
    n_matvecs: int
    curvature: str = "hessian"


def _mean_and_error(samples):
    x = np.asarray(samples, dtype=np.float64)
    err = float(np.std(x, ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
    return float(np.mean(x)), err


def _quadratic_forms(op, Z):
    """``z^T M z`` for each row ``z`` of ``Z``, accumulated in float64."""
    if Z.shape[0] == 0:
        return np.zeros(0)
    return (Z.double() * op.matmat(Z).double()).sum(1).cpu().numpy()


def _exact_trace(op):
    like, total = op.like, 0.0
    for start in range(0, op.size, _BATCH):
        idx = torch.arange(start, min(start + _BATCH, op.size), device=like.device)
        E = torch.zeros(idx.numel(), op.size, dtype=like.dtype, device=like.device)
        E[torch.arange(idx.numel(), device=like.device), idx] = 1
        total += float(_quadratic_forms(op, E).sum())
    return total, 0.0


def _probes(n, gen, like):
    """``n`` Rademacher probes as rows (drawn one by one: the same stream for any ``n``)."""
    if n == 0:
        return torch.zeros(0, like.numel(), dtype=like.dtype, device=like.device)
    return torch.stack([_rademacher(like.numel(), gen, like) for _ in range(n)])


def _hutchinson(op, n, gen):
    return _mean_and_error(_quadratic_forms(op, _probes(n, gen, op.like)))


def _hutch_plus_plus(op, n, gen):
    """Meyer et al.'s Hutch++: exact on a sketched range, Hutchinson on the rest."""
    P, like = op.size, op.like
    k = min(n // 3, P)
    S = _probes(k, gen, like)
    Q, _ = torch.linalg.qr(op.matmat(S).T)  # orthonormal even when H S is rank deficient
    top = float(_quadratic_forms(op, Q.T.contiguous()).sum())
    G = _probes(n - 2 * k, gen, like)
    rest, err = _mean_and_error(_quadratic_forms(op, G - (G @ Q) @ Q.T))
    return top + rest, err


def _gn_control(module, criterion, X, y, params, bn_mode, n, gen):
    """``tr G`` exactly plus Hutchinson on ``H - G`` over ``n`` probes: ``(trace, std_error)``."""
    work, X, y = _prepare(module, criterion, X, y, None)
    names = _select_parameters(work, params)
    with analysis_mode(work, bn_mode):
        exact = gauss_newton_trace(work, criterion, X, y, names) if bn_mode == "eval" else None
        if exact is None:
            raise ValueError(
                "method='gn-control' needs the exact Gauss-Newton trace: every selected "
                "parameter owned by a Linear, Conv2d (one group, zero padding) or BatchNorm "
                "layer (running statistics, bn_mode='eval') called once, and a loss that is a "
                "sum or mean over samples of 2-d outputs; use method='hutch++' for this module."
            )
        tr_g, blocks = exact
        op = _BlockOperator(work, criterion, X, y, names)
        forms = [curvature_forms(op._outputs, op._loss, op.theta, Z, blocks)
                 for Z in torch.split(_probes(n, gen, op.like), op.batch)]
    rest, err = _mean_and_error(torch.cat([h - g for h, g in forms]).cpu().numpy())
    return tr_g + rest, err


def _krylov_basis(op, v, m):
    """Lanczos from unit ``v``: orthonormal basis (rows), ``trace(V M V^T)``, top Ritz value.

    Up to ``m`` steps with full reorthogonalization (the three-term
    recurrence, then one Gram-Schmidt pass against the whole basis); stops
    early when the Krylov space is invariant.  ``trace(V M V^T)`` is the sum
    of the Rayleigh quotients ``alpha_j = v_j^T M v_j`` the recurrence
    computes anyway.
    """
    V = torch.zeros(m, op.size, dtype=v.dtype, device=v.device)
    V[0] = v
    alpha, beta, scale = [], [], 0.0
    eps = torch.finfo(v.dtype).eps
    for j in range(m):
        w = op(V[j])
        alpha.append(float((w.double() * V[j].double()).sum()))
        if j + 1 == m:
            break
        w = w - alpha[-1] * V[j]
        if j:
            w = w - beta[-1] * V[j - 1]
        w = w - V[:j + 1].T @ (V[:j + 1] @ w)
        b = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(alpha[-1]), b)
        if b <= 100 * eps * max(scale, 1e-300):
            break
        beta.append(b)
        V[j + 1] = w / b
    T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
    return V[:len(alpha)], float(sum(alpha)), float(np.linalg.eigvalsh(T)[-1])


def _krylov_hutchinson(op, n_steps, n_probes, gen):
    """The trace on a Krylov space exactly, Hutchinson on its orthogonal complement.

    Hutch++ with the sketch ``orth(H S)`` replaced by the Krylov space of
    ``n_steps`` Lanczos steps from a Gaussian start: a better approximation
    of the top eigenspace, and ``trace(V^T H V)`` comes out of the
    recurrence, so the sketch costs ``n_steps`` products instead of twice
    that.  The Krylov space depends on the start vector only, not on the
    probes, so the estimate is unbiased (Chen & Hallman, 2023).  Returns
    ``(trace, std_error, top Ritz value)``; products the basis did not use
    (an invariant space) go to the probes.
    """
    P, like = op.size, op.like
    v = torch.randn(P, generator=gen, dtype=torch.float64).to(like)
    V, top, ritz = _krylov_basis(op, v / torch.linalg.vector_norm(v), min(n_steps, P))
    G = _probes(n_probes + min(n_steps, P) - V.shape[0], gen, like)
    rest, err = _mean_and_error(_quadratic_forms(op, G - (G @ V.T) @ V))
    return top + rest, err, ritz


def hessian_top_eigenvalue_and_trace(module, criterion, X, y, n_iter=20, n_probes=10,
                                     random_state=None, params=None, bn_mode="eval",
                                     method="krylov"):
    """Largest Hessian eigenvalue and the trace, from one Lanczos run and a few probes.

    ``n_iter`` Lanczos steps (full reorthogonalization) from a Gaussian start
    give the largest Ritz value (a lower bound of the top eigenvalue, close
    once the top of the spectrum has converged) and an orthonormal Krylov
    basis ``V`` on which ``trace(V^T H V)`` is known exactly; ``n_probes``
    Rademacher probes projected onto the complement of ``V`` estimate the
    rest of the trace, with its standard error, as ``method="krylov"`` of
    :func:`hessian_trace` does.  ``n_iter + n_probes`` products in all: the
    top eigenvalue and the trace share the Krylov space.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`hessian_trace`.
    n_iter : int, default=20
        Lanczos steps (capped at the number of parameters).
    n_probes : int, default=10
        Probes of the remainder (>= 2 for a standard error).
    random_state : int, RandomState or None
        The start vector and the probes.
    params : str or list of str, optional
        A Hessian block, as in :func:`hessian_trace`.
    bn_mode : {"eval", "train-batch"}, default="eval"
        As in :func:`hessian_trace`.
    method : {"krylov", "auto"}, default="krylov"
        The trace.  ``"krylov"``: as above.  ``"auto"``: for a chain of
        Linear layers and elementwise activations with a per-sample loss
        (where :func:`hessian_trace` has its closed form), the exact trace
        in closed form, whatever the size of the net, and no probes
        (``n_probes`` is then unused; the top eigenvalue is the same as
        with ``"krylov"`` and the same ``random_state``); ``"krylov"`` for
        any other module.

    Returns
    -------
    top : float
        Largest Ritz value.
    trace : TraceEstimate
        ``method="krylov"``, ``n_matvecs = n_iter + n_probes`` (the products
        of both); or ``method="exact"``, ``std_error=0.0``, ``n_matvecs``
        the Lanczos products only.

    See Also
    --------
    hw1sk.curvature.top_hessian_eigenvalues, hessian_trace

    References
    ----------
    T. Chen, E. Hallman, "Krylov-aware stochastic trace estimation", SIAM
    Journal on Matrix Analysis and Applications 44(3), 2023.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from hw1sk.stochastic_curvature import hessian_top_eigenvalue_and_trace
    >>> X = torch.tensor([[1.0], [2.0]]); y = torch.zeros(2, 1)
    >>> top, trace = hessian_top_eigenvalue_and_trace(nn.Linear(1, 1), nn.MSELoss(), X, y,
    ...                                               random_state=0)
    >>> round(top, 4), round(trace.value, 4), round(trace.std_error, 6)  # 2 parameters: exact
    (6.8541, 7.0, 0.0)
    """
    n_iter = _check_int(n_iter, "n_iter")
    n_probes = _check_int(n_probes, "n_probes", minimum=2)
    if method not in ("krylov", "auto"):
        raise ValueError(f"method must be one of ('krylov', 'auto'), got {method!r}.")
    check_bn_mode(bn_mode)
    work, make_op = _block_operator(module, criterion, X, y, params)
    gen = torch_generator(random_state)
    with analysis_mode(work, bn_mode):
        op = make_op()
        if method == "auto" and isinstance(op, _ChainOperator):
            v = torch.randn(op.size, generator=gen, dtype=torch.float64).to(op.like)
            _, _, top = _krylov_basis(op, v / torch.linalg.vector_norm(v), min(n_iter, op.size))
            (value, err), method = op.exact_trace(), "exact"
        else:
            value, err, top = _krylov_hutchinson(op, n_iter, n_probes, gen)
            method = "krylov"
    return top, TraceEstimate(value=value, std_error=err, method=method,
                              n_matvecs=op.n_products)


def _check_trace_args(method, n_matvecs):
    if method not in _TRACE_METHODS:
        raise ValueError(f"method must be one of {_TRACE_METHODS}, got {method!r}.")
    n_matvecs = _check_int(n_matvecs, "n_matvecs")
    if method == "hutchinson" and n_matvecs < 2:
        raise ValueError(
            f"method='hutchinson' needs n_matvecs >= 2 for a standard error, got {n_matvecs}."
        )
    if method == "gn-control" and n_matvecs < 2:
        raise ValueError(
            f"method='gn-control' needs n_matvecs >= 2 for a standard error, got {n_matvecs}."
        )
    if method in ("hutch++", "krylov", "auto") and n_matvecs < 3:
        raise ValueError(
            f"method={method!r} needs n_matvecs >= 3 (sketch, its products and probes), "
            f"got {n_matvecs}."
        )
    return n_matvecs


def hessian_trace(module, criterion, X, y, method="auto", n_matvecs=100, random_state=None,
                  params=None, curvature="hessian", bn_mode="eval"):
    """Trace of the loss Hessian (or of one of its blocks), exact or estimated.

    The products are batched: every stage of each method multiplies all its
    vectors in one backward pass (32 vectors at a time).  For chains of
    Linear layers and activations they are derived by hand (see the module
    docstring) and the exact trace has a closed form.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`hw1sk.curvature.loss_hessian`; products are computed in
        the module's dtype.
    method : {"auto", "exact", "hutchinson", "hutch++", "krylov", "gn-control"}, default="auto"
        ``"exact"``: for a chain of Linear layers and elementwise activations
        (:class:`~hw1sk.models.MLP`, a plain :class:`torch.nn.Sequential` of
        them) and a loss that is a sum or mean over samples, in closed form
        without products (``n_matvecs=0``): within layer ``m`` the Hessian is
        ``sum_n M_n (x) z_n z_n^T`` (``z_n`` the layer's input, ``M_n`` the
        Hessian of sample ``n``'s loss in its pre-activations, back-propagated
        layer by layer), so the trace is ``sum_n ||z_n||^2 tr M_n`` (plus
        ``sum_n tr M_n`` for the bias).  Any other module: the sum of the
        diagonal, ``e_i^T H e_i`` over the ``P`` parameters of the block
        (``P`` products).  ``"hutchinson"``: the mean
        of ``z^T H z`` over ``n_matvecs`` Rademacher probes ``z``; standard
        error ``std(ddof=1) / sqrt(n_matvecs)``.  ``"hutch++"``: ``k =
        n_matvecs // 3`` products sketch ``Q = orth(H S)`` (Rademacher
        ``S``), ``trace(Q^T H Q)`` is computed exactly with ``k`` more, and
        the remaining ``n_matvecs - 2k`` Rademacher probes estimate the
        trace of the deflated ``(I - QQ^T) H (I - QQ^T)``; the standard error
        is that of the remainder.  ``"krylov"``: Hutch++ with the sketch
        replaced by the Krylov space of ``n_matvecs // 2`` Lanczos steps,
        whose ``trace(V^T H V)`` the recurrence gives for free, and the
        other products as probes of the complement (Chen & Hallman, 2023);
        more accurate than Hutch++ at equal products when the top of the
        spectrum stands out.  ``"gn-control"``: the Gauss-Newton matrix ``G``
        as a control variate, ``tr H = tr G + tr(H - G)``: ``tr G`` exactly
        from per-sample gradients (:mod:`hw1sk.gauss_newton_trace`: one
        back-propagation per output down to the layers' outputs), ``tr(H -
        G)`` by Hutchinson over ``n_matvecs`` Rademacher probes, each one
        forward-over-reverse product giving ``H z`` and ``J z`` together;
        the standard error is that of the Hutchinson part.  Where ``G``
        carries most of ``H`` (a partly trained net) the probes' variance
        drops severalfold: on the MNIST MLP of
        ``benchmarks/bench_curvature.py`` the per-probe standard deviation
        is 3.1 against Hutchinson's 10.5.  It needs every selected
        parameter in a Linear, Conv2d (one group, zero padding) or BatchNorm
        layer (running statistics: ``bn_mode="eval"``) called once, and a
        loss that is a sum or mean over samples of 2-d outputs; otherwise a
        ``ValueError``.  ``"auto"``: ``"exact"`` when it costs no more
        than 2,000 products (always for the closed form of a chain: on the
        MNIST MLP of ``benchmarks/bench_curvature.py``, 0.1 product's work;
        otherwise when ``P <= 2000``), else ``"hutch++"``.
    n_matvecs : int, default=100
        Budget of Hessian-vector products of the stochastic methods (>= 2 for
        Hutchinson and ``"gn-control"``, >= 3 for Hutch++, ``"krylov"`` and
        ``"auto"``; ``"gn-control"``'s exact ``tr G`` is not counted: its
        back-propagations stop at the layers' outputs).  Deflation
        pays off from a few tens of products: on the MNIST MLP of
        ``benchmarks/bench_curvature.py``, with 20 products Hutchinson's
        RMS error is 1.8, Hutch++'s 3.2, ``"krylov"``'s 3.5; all are even
        at 30; from 45 on Hutch++ and ``"krylov"`` are ahead (0.65 and 0.56 at
        60 products, where Hutchinson needs 200 probes for 0.75).
    random_state : int, RandomState or None
        The probes.
    params : str or list of str, optional
        Parameter names or dotted prefixes (``"net.0"``) selecting a block;
        the trace is then that of the Hessian block of those parameters,
        the others held fixed.  All parameters by default.
    curvature : {"hessian", "gauss-newton"}, default="hessian"
        ``"gauss-newton"``: the trace of ``J^T H_out J`` instead (``J`` the
        Jacobian of the module's outputs in the parameters, ``H_out`` the
        Hessian of the criterion in the outputs), with the same methods.  It
        is positive semi-definite for a loss convex in the outputs, so it
        misses the negative curvature the Hessian may have; a
        :class:`GaussNewtonWarning` says so.
    bn_mode : {"eval", "train-batch"}, default="eval"
        BatchNorm layers normalize with their running statistics
        (``"eval"``), or with the statistics of ``X`` as in training
        (``"train-batch"``), without updating the running statistics.  Every
        other layer is in eval mode either way.

    Returns
    -------
    estimate : TraceEstimate
        ``estimate.curvature`` says whose trace it is.

    See Also
    --------
    hessian_spectral_density, hw1sk.curvature.loss_hessian

    References
    ----------
    N. N. Schraudolph, "Fast curvature matrix-vector products for
    second-order gradient descent", Neural Computation 14(7), 2002 (the
    Gauss-Newton matrix).

    M. F. Hutchinson, "A stochastic estimator of the trace of the influence
    matrix for Laplacian smoothing splines", Communications in Statistics -
    Simulation and Computation 19(2), 1990.

    R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal
    Stochastic Trace Estimation", SOSA 2021.

    T. Chen, E. Hallman, "Krylov-aware stochastic trace estimation", SIAM
    Journal on Matrix Analysis and Applications 44(3), 2023.

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
    check_bn_mode(bn_mode)
    curvature = _check_curvature(curvature)
    if method == "gn-control" and curvature == "gauss-newton":
        raise ValueError("method='gn-control' estimates the Hessian's trace; the "
                         "Gauss-Newton trace it uses is exact: use curvature='hessian'.")
    gen = torch_generator(random_state)
    if method == "gn-control":
        value, err = _gn_control(module, criterion, X, y, params, bn_mode, n_matvecs, gen)
        return TraceEstimate(value=value, std_error=err, method=method, n_matvecs=n_matvecs)
    work, make_op = _block_operator(module, criterion, X, y, params, curvature)
    with analysis_mode(work, bn_mode):
        op = make_op()
        if method == "auto":
            method = "exact" if op.exact_cost() <= _EXACT_MAX_PARAMS else "hutch++"
        if method == "exact":
            value, err = op.exact_trace()
        elif method == "hutchinson":
            value, err = _hutchinson(op, n_matvecs, gen)
        elif method == "krylov":
            value, err, _ = _krylov_hutchinson(op, n_matvecs // 2, n_matvecs - n_matvecs // 2,
                                               gen)
        else:
            value, err = _hutch_plus_plus(op, n_matvecs, gen)
    return TraceEstimate(value=value, std_error=err, method=method, n_matvecs=op.n_products,
                         curvature=curvature)



# --------------------------------------------------------------------------- #
# spectral density: stochastic Lanczos quadrature
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class SpectralDensity:
    """A smoothed Hessian (or Gauss-Newton) eigenvalue density from stochastic Lanczos quadrature.

    Attributes
    ----------
    grid : numpy.ndarray of shape (n_grid,)
        Where the density is evaluated.
    density : numpy.ndarray of shape (n_grid,)
        The Gaussian-broadened spectral density (integrates to about 1 when
        the grid covers the spectrum and resolves the broadening).
    nodes : numpy.ndarray of shape (n_probes // block_size, block_size * n_iter)
        Ritz values of each probe's Lanczos tridiagonal (the quadrature nodes),
        ascending; with ``block_size > 1``, one row per block of probes, the
        eigenvalues of its block tridiagonal.  ``n_iter`` is capped at the
        number of parameters (over ``block_size``); a probe (block) whose
        Krylov space closes early repeats its last node with weight 0.
    weights : numpy.ndarray of shape (n_probes // block_size, block_size * n_iter)
        Squared first components of the tridiagonal's eigenvectors (for a
        block, the squared norms of the first ``block_size`` components over
        ``block_size``); each row sums to 1.
    sigma : float
        Standard deviation of the Gaussian broadening.
    curvature : {"hessian", "gauss-newton"}, default="hessian"
        Whose spectrum: the loss Hessian's, or the Gauss-Newton matrix's
        (positive semi-definite: no mass below 0 beyond the broadening).
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    curvature: str = "hessian"


def _gaussian_mixture(nodes, weights, grid, sigma):
    """``sum_i weights_i N(grid; nodes_i, sigma^2)`` for flat ``nodes``, ``weights``."""
    z = (grid[None, :] - nodes[:, None]) / sigma
    return weights @ np.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))


def _lanczos_quadrature(op, V0, m):
    """Nodes and weights of ``m`` Lanczos steps from each unit row of ``V0``.

    The recurrences of all rows run side by side, one batched product per
    step, each with full reorthogonalization against its own basis; a row
    whose Krylov space closes early stops there (its quadrature is exact).
    """
    b, P = V0.shape
    basis = torch.zeros(b, m, P, dtype=V0.dtype, device=V0.device)
    basis[:, 0] = V0
    alphas, betas = [[] for _ in range(b)], [[] for _ in range(b)]
    active = list(range(b))  # row r of ``basis`` is the recurrence of probe active[r]
    eps = torch.finfo(V0.dtype).eps
    beta_prev = torch.zeros(b, 1, dtype=V0.dtype, device=V0.device)
    for j in range(m):
        B = basis[:, :j + 1]  # a view: (n_active, j + 1, P)
        W = op.matmat(basis[:, j])
        a = (W * basis[:, j]).sum(1)
        # the three-term recurrence, then one Gram-Schmidt pass against the whole basis: the
        # local step removes the large components, so one pass restores orthogonality
        W = W - a[:, None] * basis[:, j]
        if j:
            W = W - beta_prev * basis[:, j - 1]
        W = W - torch.bmm(torch.bmm(W[:, None], B.transpose(1, 2)), B)[:, 0]
        norms = torch.linalg.vector_norm(W, dim=1)
        beta_prev = norms[:, None]
        keep = []
        for r, p in enumerate(active):
            alphas[p].append(float(a[r]))
            beta = float(norms[r])
            scale = max(abs(x) for x in alphas[p]) + max(betas[p], default=0.0)
            if j + 1 == m or beta <= 100 * eps * max(scale, 1e-300):
                continue  # the Krylov space is invariant: the quadrature is exact
            betas[p].append(beta)
            if j + 1 < m:
                basis[r, j + 1] = W[r] / beta
            keep.append(r)
        if not keep:
            break
        if len(keep) < len(active):  # drop the finished recurrences (rare: one copy)
            sel = torch.tensor(keep, device=V0.device)
            basis, beta_prev = basis[sel], beta_prev[sel]
            active = [active[r] for r in keep]
    nodes, weights = np.empty((b, m)), np.zeros((b, m))
    for p in range(b):
        alpha, beta = alphas[p], betas[p][:len(alphas[p]) - 1]
        T = np.diag(alpha) + np.diag(beta, 1) + np.diag(beta, -1)
        theta, S = np.linalg.eigh(T)
        nodes[p] = theta[-1]
        nodes[p, :theta.size], weights[p, :theta.size] = theta, S[0] ** 2
    return nodes, weights


def _block_lanczos_quadrature(op, V0, m):
    """Nodes and weights of ``m`` block Lanczos steps from each block of rows of ``V0``.

    ``V0`` is ``(n_blocks, b, P)``; each block is orthonormalized (its
    columns ``Q_1``) and runs the block recurrence ``H Q_j = Q_{j-1} B_{j-1}^T
    + Q_j A_j + Q_{j+1} B_j`` (``B_j`` from a QR factorization) with full
    reorthogonalization, its ``b`` products one batch, the blocks side by
    side.  The block tridiagonal ``T`` of order ``b m`` gives the block Gauss
    quadrature of ``(1/b) tr(Q_1^T f(H) Q_1)``: nodes its eigenvalues,
    weights the squared norms of the first ``b`` components of its
    eigenvectors over ``b``.  A block whose new directions lose rank stops
    there (its space is then invariant, or nearly so, in those directions).
    """
    nb, b, P = V0.shape
    Q0 = torch.linalg.qr(V0.transpose(1, 2))[0].transpose(1, 2)
    basis = torch.empty(nb, m * b, P, dtype=V0.dtype, device=V0.device)
    basis[:, :b] = Q0
    T = np.zeros((nb, m * b, m * b))
    sizes = np.full(nb, m * b)
    active = list(range(nb))  # row r of ``basis`` is block active[r]
    eps = torch.finfo(V0.dtype).eps
    for j in range(m):
        lo, hi = j * b, (j + 1) * b
        Qj = basis[:, lo:hi]
        W = op.matmat(Qj.reshape(-1, P)).view(len(active), b, P)
        At = torch.bmm(W, Qj.transpose(1, 2))
        A = At.double().cpu().numpy()
        B = basis[:, :hi]
        # the three-term recurrence, then one Gram-Schmidt pass against the whole basis: the
        # local step removes the large components, so one pass restores orthogonality
        W = W - torch.bmm(At, Qj)
        if j:
            W = W - torch.bmm(R_prev, basis[:, lo - b:lo])
        W = W - torch.bmm(torch.bmm(W, B.transpose(1, 2)), B)
        if j + 1 < m:
            Qn, Rt = torch.linalg.qr(W.transpose(1, 2))
            R = Rt.double().cpu().numpy()
        keep = []
        for r, p in enumerate(active):
            T[p, lo:hi, lo:hi] = (A[r] + A[r].T) / 2
            if j + 1 == m:
                continue
            scale = np.abs(T[p, :hi, :hi]).max()
            if np.abs(np.diag(R[r])).min() <= 100 * eps * max(scale, 1e-300):
                sizes[p] = hi  # no new direction of full rank: stop this block
                continue
            T[p, hi:hi + b, lo:hi], T[p, lo:hi, hi:hi + b] = R[r], R[r].T
            basis[r, hi:hi + b] = Qn[r].T
            keep.append(r)
        if not keep:
            break
        R_prev = Rt  # W_j = R^T Q_{j+1}, so Q_{j+1} H Q_j^T = R: H Q_{j+1}'s part on Q_j
        if len(keep) < len(active):
            sel = torch.tensor(keep, device=V0.device)
            basis, R_prev = basis[sel], R_prev[sel]
            active = [active[r] for r in keep]
    nodes, weights = np.empty((nb, m * b)), np.zeros((nb, m * b))
    for p in range(nb):
        theta, S = np.linalg.eigh(T[p, :sizes[p], :sizes[p]])
        nodes[p] = theta[-1]
        nodes[p, :theta.size] = theta
        weights[p, :theta.size] = (S[:b] ** 2).sum(0) / b
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
                             n_grid=1000, sigma=None, random_state=None, params=None,
                             curvature="hessian", bn_mode="eval", block_size=1):
    """Eigenvalue density of the loss Hessian (or a block) by stochastic Lanczos quadrature.

    For each of ``n_probes`` Gaussian probes ``v`` (normalized), ``n_iter``
    steps of Lanczos with full reorthogonalization on Hessian-vector products
    give a tridiagonal ``T``; its eigenvalues ``theta_i`` (Ritz values) and
    the squared first components ``w_i`` of its eigenvectors are the
    Gauss quadrature of the probe's spectral measure ``sum_j (v . u_j)^2
    delta(lambda_j)``, whose expectation is the spectral density ``(1/P)
    sum_j delta(lambda_j)``.  The returned density is the average over probes
    of ``sum_i w_i N(grid; theta_i, sigma^2)``.  The probes' recurrences run
    side by side, one batched product per step for all of them.

    With ``block_size=b > 1`` the probes go in blocks of ``b``: each block
    (orthonormalized, ``Q_1``) runs ``n_iter`` steps of block Lanczos, ``b``
    products per step in one batch, and the eigenvalues ``theta_i`` of the
    block tridiagonal (order ``b n_iter``) with weights ``w_i`` the squared
    norms of the first ``b`` components of its eigenvectors, over ``b``,
    are the block Gauss quadrature of ``(1/b) tr(Q_1^T f(H) Q_1)``, exact
    for polynomials of degree ``2 n_iter - 1``; its expectation is again
    the spectral density.  At equal products (``n_probes * n_iter`` either
    way) a block has ``b`` times fewer steps than one long recurrence, but
    as many nodes, the randomness of ``b`` probes, and cheaper products
    (batched).  On the MNIST MLP of ``benchmarks/bench_curvature.py``
    (tanh; RMS over 16 seeds of the Wasserstein-1 distance of the
    quadrature nodes to a converged reference, over the width of the
    spectrum; CPU seconds, one thread), one probe of 100 steps is
    ``2.25e-4`` off in 0.39 s, a block of 4 probes of 25 steps ``2.10e-4``
    in 0.26 s; 2 probes of 100 steps ``1.96e-4`` in 0.59 s, a block of 8 of
    25 steps ``1.50e-4`` in 0.46 s; 16 probes of 20 steps ``5.5e-4``, a
    block of 16 of 20 steps ``1.3e-4`` (0.88 and 0.98 s).  The broadened
    density of a block is as accurate as that of its probes run one by one.
    Caveat: a block's Krylov space holds at most ``b`` vectors of
    one eigenspace, and a block that loses rank (an eigenvalue of
    multiplicity above ``b``, near the end of a small space) stops there,
    with fewer nodes.

    Parameters
    ----------
    module, criterion, X, y
        As in :func:`hw1sk.curvature.loss_hessian`; products are computed in
        the module's dtype.
    n_probes : int, default=10
    n_iter : int, default=80
        Lanczos steps per probe, or block Lanczos steps per block (capped at
        the number of parameters of the block over ``block_size``, where
        Lanczos is exact); ``n_probes * n_iter`` products either way.
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
    curvature : {"hessian", "gauss-newton"}, default="hessian"
        ``"gauss-newton"``: the spectrum of ``J^T H_out J`` instead, as in
        :func:`hessian_trace`; positive semi-definite, so it has no negative
        eigenvalues to show (a :class:`GaussNewtonWarning` says so).
    bn_mode : {"eval", "train-batch"}, default="eval"
        BatchNorm on running or batch statistics, as in :func:`hessian_trace`.
    block_size : int, default=1
        Probes per block Lanczos recurrence (a divisor of ``n_probes``, at
        most the number of parameters); 1: each probe its own Lanczos.

    Returns
    -------
    density : SpectralDensity
        ``density.curvature`` says whose spectrum it is.

    See Also
    --------
    exact_spectral_density, hessian_trace

    References
    ----------
    B. Ghorbani, S. Krishnan, Y. Xiao, "An Investigation into Neural Net
    Optimization via Hessian Eigenvalue Density", ICML 2019.

    Z. Yao, A. Gholami, K. Keutzer, M. W. Mahoney, "PyHessian: Neural
    Networks Through the Lens of the Hessian", IEEE Big Data 2020.

    G. H. Golub, G. Meurant, "Matrices, Moments and Quadrature with
    Applications", Princeton University Press, 2010 (block Gauss quadrature).
    """
    n_probes = _check_int(n_probes, "n_probes")
    n_iter = _check_int(n_iter, "n_iter")
    n_grid = _check_int(n_grid, "n_grid", minimum=2)
    b = _check_int(block_size, "block_size")
    if n_probes % b:
        raise ValueError(f"n_probes must be a multiple of block_size, got n_probes={n_probes} "
                         f"and block_size={block_size}.")
    check_bn_mode(bn_mode)
    curvature = _check_curvature(curvature)
    work, make_op = _block_operator(module, criterion, X, y, params, curvature)
    gen = torch_generator(random_state)
    with analysis_mode(work, bn_mode):
        op = make_op()
        if b > op.size:
            raise ValueError(f"block_size={block_size} is larger than the number of "
                             f"parameters of the block ({op.size}).")
        m = min(n_iter, op.size // b)
        V = torch.stack([torch.randn(op.size, generator=gen, dtype=torch.float64)
                         for _ in range(n_probes)]).to(op.like)
        V = V / torch.linalg.vector_norm(V, dim=1, keepdim=True)
        # side by side, as many recurrences as keep the Krylov bases near 2**26 entries
        group = max(1, min(_BATCH // b, 2**26 // (m * b * op.size)))
        if b == 1:
            parts = [_lanczos_quadrature(op, V[i:i + group], m)
                     for i in range(0, n_probes, group)]
        else:
            V = V.view(n_probes // b, b, op.size)
            parts = [_block_lanczos_quadrature(op, V[i:i + group], m)
                     for i in range(0, n_probes // b, group)]
        nodes = np.concatenate([p[0] for p in parts])
        weights = np.concatenate([p[1] for p in parts])
    grid, sigma = _density_grid(nodes, grid, n_grid, sigma)
    density = _gaussian_mixture(nodes.ravel(), weights.ravel(), grid, sigma) / nodes.shape[0]
    return SpectralDensity(grid=grid, density=density, nodes=nodes, weights=weights, sigma=sigma,
                           curvature=curvature)


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
