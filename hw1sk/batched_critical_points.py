"""The gradient-norm phase and exact Hessians of many seeds of one network at once.

:func:`minimize_gradient_norms` is :func:`hw1sk.critical_points.minimize_gradient_norm`
(``optimizer="newton"``: Levenberg-Marquardt on exact float64 Hessians) for
copies of one chain of ``nn.Linear`` layers and elementwise activations
(:class:`~hw1sk.models.MLP`, a plain ``nn.Sequential``) trained from
different seeds, all on the same data.  The copies' parameters are one
``(n_seeds, n_params)`` tensor; every seed's exact Hessian comes from one
pass of the Hessian back-propagation of :func:`hw1sk.curvature.loss_hessian`
written on stacked tensors, the steps from each seed's eigendecomposition,
with per-seed damping and a per-seed stop (a seed that has converged stops
changing, the others go on).  The step counts and histories mean what they
mean for one run, and the trajectories are those of the runs done one by one
up to float64 rounding.

The Hessian is the sum of two exact parts.  The output curvature (the
Gauss-Newton part) ``sum_i J_i^T Hout_i J_i`` is one matrix product per
seed of the per-sample output Jacobians ``J`` (``(n k, P)``); for the mean
squared error ``Hout_i = 2 / (n k) I`` in closed form and the product is
NumPy's symmetric ``A.T @ A`` of ``sqrt(Hout) J`` (BLAS ``syrk``, half a
product).  The rest, the activation and bilinear curvature, is the Hessian
back-propagation of :func:`hw1sk.curvature._structured_hessian` started
from zero at the output: zero for the last layer, diagonal for the one
before it (one small block per unit), and otherwise, with ``Q_i`` the
per-sample matrix and ``z_i`` the layer's input (a 1 appended for the
bias), the diagonal block ``sum_i Q_i (x) z_i z_i^T`` with only the upper
triangles of both symmetric factors multiplied.  Against the previous
assembly (the triangles of the full pre-activation Hessians, Gauss-Newton
part included) a 481-parameter 1-20-20-1 seed's Hessian at 1,000 points
costs 25 instead of 35 ms on one core in a group of 25 (28 instead of 31
ms alone).  The phase as a whole, run by run against a seed group at once:
``benchmarks/bench_minimal_ratio_study.py --phase``.
"""

from __future__ import annotations

import numpy as np
import torch

from .batched_modules import UnsupportedModule
from .critical_points import _LM_DOWN, _LM_MU0, _LM_UP, GradientNormResult
from .curvature import _check_int, _check_positive_real, _closed_form_output_blocks, \
    _elementwise_derivatives, _linear_chain, _prepare, _scalar_loss
from .parameters import assign_flat_parameters

__all__ = ["minimize_gradient_norms"]

# the largest per-chunk tensor of the Hessian pass, in entries: small enough for the cache
_CHUNK_ENTRIES = 250000
# the most Hessian entries held at once (seeds are done in blocks below it): 256 MiB
_HESSIAN_ENTRIES = 2 ** 25
# LM tries per step before the seed stops (as the one-module path)
_LM_TRIES = 30


def _compose(mods, a):
    for m in mods:
        a = m(a)
    return a


def _tri_index(n, device):
    """Upper-triangle indices of an ``n x n`` matrix and the map (p, p2) -> their position."""
    iu = torch.triu_indices(n, n, device=device)
    where = torch.empty(n, n, dtype=torch.long, device=device)
    pos = torch.arange(iu.shape[1], device=device)
    where[iu[0], iu[1]] = pos
    where[iu[1], iu[0]] = pos
    return iu, where


class _StackedChain:
    """Copies of one Linear/activation chain on stacked float64 parameters ``(S, P)``."""

    def __init__(self, module, criterion, X, y):
        chain = _linear_chain(module)
        if chain is None:
            raise UnsupportedModule("not a chain of nn.Linear layers and elementwise "
                                    "activations (MLP or plain nn.Sequential)")
        pre, layers = chain
        self.criterion, self.y = criterion, y
        with torch.no_grad():
            self.z0 = _compose(pre, X)
        if self.z0.ndim != 2:
            raise UnsupportedModule("the chain's first layer does not take vectors")
        self.acts = [acts for _, acts in layers]
        self.widths = [lin.out_features for lin, _ in layers]
        self.fan_in = [lin.in_features for lin, _ in layers]
        self.has_bias = [lin.bias is not None for lin, _ in layers]
        self.aug = [f + int(b) for f, b in zip(self.fan_in, self.has_bias)]
        self.offsets = [0]  # flat layout: weight (row-major) then bias, layer by layer
        for h, a in zip(self.widths, self.aug):
            self.offsets.append(self.offsets[-1] + h * a)
        self.n_params = self.offsets[-1]
        perm = []  # augmented layout (unit, input..., bias) -> flat layout
        for m, (h, a, f) in enumerate(zip(self.widths, self.aug, self.fan_in)):
            idx = np.arange(h * a).reshape(h, a) + self.offsets[m]
            perm.append(idx[:, :f].reshape(-1))
            if self.has_bias[m]:
                perm.append(idx[:, f])
        self.perm = torch.as_tensor(np.concatenate(perm), device=X.device)
        self._triangles = {}

    # ------------------------------------------------------------- forward
    def weights(self, theta):
        """Per layer ``(W, b)``: ``(S, out, in)`` and ``(S, out)`` (or None) views of ``theta``."""
        S, out = theta.shape[0], []
        for m, (h, f) in enumerate(zip(self.widths, self.fan_in)):
            start = self.offsets[m]
            W = theta[:, start:start + h * f].view(S, h, f)
            b = theta[:, start + h * f:start + h * f + h] if self.has_bias[m] else None
            out.append((W, b))
        return out

    def _layer(self, z, W, b):
        if z.ndim == 2:  # the shared input
            a = torch.matmul(z, W.transpose(1, 2))
            return a if b is None else a + b[:, None, :]
        if b is None:
            return torch.bmm(z, W.transpose(1, 2))
        return torch.baddbmm(b[:, None, :], z, W.transpose(1, 2))

    def outputs(self, theta):
        """The last layer's pre-activations ``(S, n, k)`` (differentiable in ``theta``)."""
        z = self.z0
        weights = self.weights(theta)
        for m, (W, b) in enumerate(weights):
            a = self._layer(z, W, b)
            if m < len(weights) - 1:
                z = _compose(self.acts[m], a)
        return a

    def losses(self, F):
        """Each seed's loss ``(S,)`` from its outputs ``F[s]``, as the criterion computes it."""
        tail = self.acts[-1]
        return torch.stack([_scalar_loss(self.criterion(_compose(tail, f), self.y),
                                         self.criterion) for f in F])

    def loss_and_gradient(self, theta):
        """``(losses (S,), gradients (S, P))`` at ``theta``."""
        with torch.enable_grad():
            t = theta.detach().requires_grad_(True)
            losses = self.losses(self.outputs(t))
            (g,) = torch.autograd.grad(losses.sum(), t, allow_unused=True)
        return losses.detach(), torch.zeros_like(theta) if g is None else g

    # ------------------------------------------------------------- Hessian
    def _output_blocks(self, F, check=False):
        """Per-sample output Hessians ``(S, n, k, k)`` and gradients ``(S, n, k)``.

        With ``check``, None when a random probe shows that the loss couples
        samples (the blocks do not describe it); that is a property of the
        criterion, so :func:`_stack` checks it once.  The mean squared error
        (:meth:`_plain_mse`) has them in closed form: ``2 / (n k) I`` and
        ``2 (F - y) / (n k)``.
        """
        S, n, k = F.shape
        if self._plain_mse(F):  # closed form: the mean of (F - y)^2 over n * k entries
            return _closed_form_output_blocks(self.criterion, F, self.y)
        F = F.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.losses(F).sum(), F, create_graph=True)

        def hvp(V):
            if not g.requires_grad:
                return torch.zeros_like(V)
            (out,) = torch.autograd.grad(g, F, V, retain_graph=True, allow_unused=True)
            return torch.zeros_like(V) if out is None else out.detach()

        blocks = torch.empty(S, n, k, k, dtype=F.dtype, device=F.device)
        for c in range(k):
            E = torch.zeros_like(F)
            E[..., c] = 1
            blocks[..., c] = hvp(E)
        if check:
            gen = torch.Generator(device=F.device).manual_seed(0)
            V = torch.randn(F.shape, generator=gen, dtype=F.dtype, device=F.device)
            full, block = hvp(V), (blocks @ V[..., None])[..., 0]
            # rounding is relative to the terms summed, not to their (cancelling) sum
            scale = (blocks.abs() @ V.abs()[..., None]).max() + full.abs().max()
            if (full - block).abs().max() > 1e3 * torch.finfo(F.dtype).eps * scale:
                return None, None
        return blocks, g.detach()

    def _plain_mse(self, F):
        """Whether the loss of outputs ``F`` is ``nn.MSELoss()`` (mean) of ``F[s]`` and ``y``."""
        return (type(self.criterion) is torch.nn.MSELoss and self.criterion.reduction == "mean"
                and not self.acts[-1] and torch.is_tensor(self.y)
                and self.y.shape == F.shape[1:] and self.y.dtype == F.dtype)

    def _backward(self, theta):
        """Layer inputs, activation derivatives, back-propagated gradients, output blocks."""
        weights = self.weights(theta)
        L = len(weights)
        inputs, s1, s2 = [], [], []
        with torch.no_grad():
            z = self.z0
            for m, (W, b) in enumerate(weights):
                inputs.append(z)
                a = self._layer(z, W, b)
                if m < L - 1:
                    d1, d2 = _elementwise_derivatives(self.acts[m], a)
                    s1.append(d1)
                    s2.append(d2)
                    z = _compose(self.acts[m], a)
        Hout, gF = self._output_blocks(a)
        gA, curv = [None] * L, [None] * L
        gA[L - 1] = gF
        for m in range(L - 2, -1, -1):
            gz = torch.bmm(gA[m + 1], weights[m + 1][0])
            gA[m], curv[m] = gz * s1[m], gz * s2[m]
        return [W for W, _ in weights], inputs, s1, gA, curv, Hout

    def _triangle(self, n, device):
        if n not in self._triangles:
            self._triangles[n] = _tri_index(n, device)
        return self._triangles[n]

    def hessians(self, theta):
        """Every seed's exact Hessian ``(S, P, P)`` at ``theta``, in the flat layout.

        The sum of the Gauss-Newton part ``sum_i J_i^T Hout_i J_i`` (one
        matrix product per seed, :meth:`_add_gauss_newton`) and of the
        activation and bilinear curvature (:meth:`_accumulate`, the Hessian
        back-propagation started from zero at the output).
        """
        Ws, inputs, s1, gA, curv, Hout = self._backward(theta)
        S, n, L = theta.shape[0], self.z0.shape[0], len(Ws)
        h, a = self.widths, self.aug
        tri = [self._triangle(h[m], theta.device) for m in range(L)]
        tri_in = [self._triangle(a[m], theta.device) for m in range(L)]
        diag = [theta.new_zeros(S, tri[m][0].shape[1], tri_in[m][0].shape[1]) for m in range(L)]
        pairs = [(m, m2) for m in range(L) for m2 in range(m + 1, L)]
        off = {(m, m2): theta.new_zeros(S, h[m] * h[m2], a[m] * a[m2]) for m, m2 in pairs}
        bil = {(m, m2): theta.new_zeros(S, h[m2], h[m], a[m]) if m2 == m + 1 else
               theta.new_zeros(S, h[m2] * a[m], h[m2 - 1] * h[m]) for m, m2 in pairs}
        widest = max([hm * max(hm, am) for hm, am in zip(h, a)]  # per-sample entries
                     + [h[m2 - 1] * h[m] + h[m] * h[m2] + a[m] * a[m2] for m, m2 in pairs])
        # Q of the layer before the last is diagonal: its block is one per unit
        units = {L - 2: theta.new_zeros(S, h[L - 2], a[L - 2] ** 2)} if L > 1 else {}
        chunk = max(1, min(n, _CHUNK_ENTRIES // (S * widest)))
        for start in range(0, n, chunk):
            sl = slice(start, min(start + chunk, n))
            self._accumulate(sl, Ws, inputs, s1, gA, curv, tri, tri_in, diag, off, bil, units)
        H = self._assemble(theta, tri, tri_in, diag, off, bil)
        for m, block in units.items():
            # each unit's block is sum_i q_i zhat zhat^T: its (j, k) and (k, j) columns of
            # the product may round apart (BLAS kernels treat edge columns differently)
            block = block.view(S, h[m], a[m], a[m])
            block = (block + block.transpose(2, 3)) / 2
            H.view(S, -1).index_add_(1, self._unit_index(m, theta.device), block.reshape(S, -1))
        self._add_gauss_newton(H, Ws, inputs, s1, Hout)
        return H

    def _unit_index(self, m, device):
        """Positions in the flattened ``(P, P)`` Hessian of layer ``m``'s per-unit blocks.

        ``(h, a, a)``: unit ``p``'s (weights, then bias) rows by the same columns.
        """
        key = ("units", m)
        if key not in self._triangles:
            o, h, f, P = self.offsets[m], self.widths[m], self.fan_in[m], self.n_params
            rows = [o + np.arange(h)[:, None] * f + np.arange(f)[None, :]]
            if self.has_bias[m]:
                rows.append(o + h * f + np.arange(h)[:, None])
            rows = np.concatenate(rows, 1)
            index = rows[:, :, None] * P + rows[:, None, :]
            self._triangles[key] = torch.as_tensor(index.reshape(-1), device=device)
        return self._triangles[key]

    def _jacobian(self, s, sl, Ws, inputs, s1, root=None):
        """Seed ``s``'s output Jacobians of the samples ``sl``: ``(c * k, P)``, flat layout.

        With ``root`` ``(c, k)``, row ``(i, j)`` is scaled by ``root[i, j]``.
        """
        L, k, P = len(Ws), self.widths[-1], self.n_params
        c = sl.stop - sl.start
        delta = torch.eye(k, dtype=Ws[0].dtype, device=Ws[0].device).expand(c, k, k)
        if root is not None:
            delta = delta * root[:, :, None]
        J = Ws[0].new_empty(c, k, P)
        for m in range(L - 1, -1, -1):  # delta = d F / d a_m: (c, k, h_m)
            z = inputs[m][sl] if inputs[m].ndim == 2 else inputs[m][s, sl]
            h, f, o = self.widths[m], self.fan_in[m], self.offsets[m]
            torch.mul(delta[..., :, None], z[:, None, None, :],
                      out=J[:, :, o:o + h * f].view(c, k, h, f))
            if self.has_bias[m]:
                J[:, :, o + h * f:o + h * f + h] = delta
            if m:
                delta = torch.matmul(delta, Ws[m][s]) * s1[m - 1][s, sl][:, None, :]
        return J.view(c * k, P)

    def _add_gauss_newton(self, H, Ws, inputs, s1, Hout):
        """Add every seed's ``sum_i J_i^T Hout_i J_i`` to ``H`` (the output curvature).

        When each ``Hout_i`` is diagonal and nonnegative (the mean squared
        error), ``sqrt(Hout_i) J_i`` is formed and, on the CPU, its Gram
        matrix is one symmetric rank-k update (NumPy's ``A.T @ A``); else
        ``J^T (Hout J)`` by one matrix product.
        """
        S, n, k = Hout.shape[0], Hout.shape[1], Hout.shape[2]
        d = Hout.diagonal(dim1=2, dim2=3)
        scaled = bool((d >= 0).all()) and bool(torch.equal(torch.diag_embed(d), Hout))
        root = d.sqrt() if scaled else None
        chunk = max(1, min(n, _CHUNK_ENTRIES * 2 // (k * self.n_params)))
        for s in range(S):
            G = None if scaled else torch.zeros_like(H[s])
            for start in range(0, n, chunk):
                sl = slice(start, min(start + chunk, n))
                if not scaled:
                    J = self._jacobian(s, sl, Ws, inputs, s1)
                    HJ = torch.bmm(Hout[s, sl], J.view(-1, k, J.shape[1])).reshape(J.shape)
                    G.addmm_(J.T, HJ)
                    continue
                J = self._jacobian(s, sl, Ws, inputs, s1, root[s, sl])
                if J.device.type == "cpu":
                    Jn = J.numpy()
                    H[s] += torch.from_numpy(Jn.T @ Jn)
                else:
                    H[s].addmm_(J.T, J)
            if G is not None:  # J^T (Hout J) rounds unsymmetrically
                H[s] += (G + G.T) / 2

    def _accumulate(self, sl, Ws, inputs, s1, gA, curv, tri, tri_in, diag, off, bil, units):
        """Add the samples ``sl``'s activation and bilinear curvature to the Hessian's pieces.

        ``Q_m``, the Hessian back-propagation started from zero at the output
        (:func:`hw1sk.curvature._structured_hessian`): zero for the last
        layer, ``diag(curv)`` for the one before (kept as a vector), full
        before that; the output curvature is :meth:`_add_gauss_newton`'s.
        """
        L, S = len(Ws), Ws[0].shape[0]
        c = sl.stop - sl.start
        zh = []
        for m in range(L):
            z = inputs[m][sl] if inputs[m].ndim == 2 else inputs[m][:, sl]
            z = z.expand(S, *z.shape) if z.ndim == 2 else z
            zh.append(torch.cat([z, z.new_ones(S, c, 1)], 2) if self.has_bias[m] else z)
        sig = [s[:, sl] for s in s1]
        Q = [None] * L  # None: zero; (S, c, h): diagonal; (S, c, h, h): full
        for m in range(L - 2, -1, -1):
            W = Ws[m + 1]
            if Q[m + 1] is None:
                Q[m] = curv[m][:, sl]
                continue
            if Q[m + 1].ndim == 3:
                T = _lmul(W.transpose(1, 2), Q[m + 1][..., :, None] * W[:, None])
            else:
                T = _lmul(W.transpose(1, 2), _rmul(Q[m + 1], W))
            Q[m] = sig[m][..., :, None] * T * sig[m][..., None, :]
            Q[m].diagonal(dim1=2, dim2=3).add_(curv[m][:, sl])
        self._diagonal_blocks(Q, zh, tri, tri_in, diag, units)
        self._cross_blocks(Q, zh, sig, Ws, off)
        self._bilinear_blocks(sl, zh, sig, Ws, gA, bil)

    def _diagonal_blocks(self, Q, zh, tri, tri_in, diag, units):
        """``diag[m] += sum_i triu(Q_m,i) (x) triu(zhat zhat^T)`` (upper triangles only).

        A diagonal ``Q_m`` adds ``sum_i Q_m,i,p zhat zhat^T`` to unit ``p``'s
        block (``units[m]``, full ``zhat zhat^T``: no gathers).
        """
        for m, q in enumerate(Q):
            if q is None:
                continue
            S, c, hm = q.shape[:3]
            if q.ndim == 3:
                Z = (zh[m][:, :, :, None] * zh[m][:, :, None, :]).reshape(S, c, -1)
                units[m].baddbmm_(q.transpose(1, 2), Z)
                continue
            (iu, _), (iu_in, _) = tri[m], tri_in[m]
            Zt = zh[m].index_select(2, iu_in[0]) * zh[m].index_select(2, iu_in[1])
            At = q.reshape(S, c, hm * hm).index_select(2, iu[0] * hm + iu[1])
            diag[m].baddbmm_(At.transpose(1, 2), Zt)

    def _cross_blocks(self, Q, zh, sig, Ws, off):
        """``off[m, m2] += sum_i C_i (x) zhat_m zhat_m2^T``, ``C = (d a_m2 / d a_m)^T Q_m2``."""
        S, c = zh[0].shape[:2]
        for m2 in range(1, len(Ws)):
            C = Q[m2]
            if C is None:
                continue
            for m in range(m2 - 1, -1, -1):
                Wt = Ws[m + 1].transpose(1, 2)
                C = (Wt[:, None] * C[:, :, None, :]) if C.ndim == 3 else _lmul(Wt, C)
                C = sig[m][..., None] * C
                Z = (zh[m][:, :, :, None] * zh[m2][:, :, None, :]).reshape(S, c, -1)
                off[m, m2].baddbmm_(C.reshape(S, c, -1).transpose(1, 2), Z)

    def _bilinear_blocks(self, sl, zh, sig, Ws, gA, bil):
        """``bil[m, m2] += sum_i g_a_m2,i (x) d z_{m2-1,i} / d W_m`` (the ``W_m2 z`` term)."""
        S, c = zh[0].shape[:2]
        for m in range(len(Ws) - 1):
            G = None  # d a_k / d a_m for k = m2 - 1
            for m2 in range(m + 1, len(Ws)):
                gz = gA[m2][:, sl]
                if G is None:  # d z_{m,k} / d a_m,p = delta_kp sigma'_k: only k == p survives
                    bil[m, m2].view(S, gz.shape[2], -1).baddbmm_(
                        gz.transpose(1, 2),
                        (sig[m][:, :, :, None] * zh[m][:, :, None, :]).reshape(S, c, -1))
                    G = Ws[m + 1][:, None] * sig[m][:, :, None, :]
                else:  # D = d z_{m2-1} / d a_m
                    D = sig[m2 - 1][..., None] * G
                    U = (gz[:, :, :, None] * zh[m][:, :, None, :]).reshape(S, c, -1)
                    bil[m, m2].baddbmm_(U.transpose(1, 2), D.reshape(S, c, -1))
                    G = _lmul(Ws[m2], D)

    def _assemble(self, theta, tri, tri_in, diag, off, bil):
        """The pieces as full ``(S, P, P)`` Hessians in the flat layout."""
        L, P, S = len(self.widths), self.n_params, theta.shape[0]
        h, a, f = self.widths, self.aug, self.fan_in
        H = theta.new_empty(S, P, P)
        for m in range(L):
            (_, where), (_, where_in) = tri[m], tri_in[m]
            full = diag[m].index_select(1, where.reshape(-1)).index_select(2, where_in.reshape(-1))
            self._place(H, full.view(S, h[m], h[m], a[m], a[m]).permute(0, 1, 3, 2, 4), m, m)
            for m2 in range(m + 1, L):
                upper = off[m, m2].view(S, h[m], h[m2], a[m], a[m2]).permute(0, 1, 3, 2, 4)
                upper = upper.contiguous()
                if m2 == m + 1:  # (j, p, q) at k == p
                    idx = torch.arange(h[m], device=theta.device)
                    upper[:, idx, :, :, idx] += bil[m, m2].permute(2, 0, 3, 1)
                else:  # (j, q, k, p) -> (p, q, j, k)
                    upper[..., :f[m2]] += bil[m, m2].view(
                        S, h[m2], a[m], h[m2 - 1], h[m]).permute(0, 4, 2, 1, 3)
                self._place(H, upper, m, m2)
                self._place(H, upper.permute(0, 3, 4, 1, 2), m2, m)
        return H

    def _place(self, H, X5, m, m2):
        """Write block ``(m, m2)``, given as ``(S, unit, input, unit2, input2)`` (bias last)."""
        S = H.shape[0]

        def parts(layer):
            o, h, f = self.offsets[layer], self.widths[layer], self.fan_in[layer]
            out = [(slice(o, o + h * f), slice(0, f), (h, f))]
            if self.has_bias[layer]:
                out.append((slice(o + h * f, o + h * f + h), f, (h,)))
            return out

        for rows, rq, rshape in parts(m):
            for cols, cq, cshape in parts(m2):
                src = X5[:, :, rq]
                src = src[..., cq] if isinstance(cq, int) else src[..., cq]
                H[:, rows, cols].view(S, *rshape, *cshape).copy_(src)


def _lmul(M, X):
    """``M @ X_i`` for per-seed ``M (S, r, p)`` and per-sample ``X (S, c, p, q)``: one bmm."""
    S, c, p, q = X.shape
    Y = torch.bmm(M, X.transpose(1, 2).reshape(S, p, c * q))
    return Y.view(S, M.shape[1], c, q).transpose(1, 2)


def _rmul(X, M):
    """``X_i @ M`` for per-sample ``X (S, c, p, q)`` and per-seed ``M (S, q, r)``: one bmm."""
    S, c, p, q = X.shape
    return torch.bmm(X.reshape(S, c * p, q), M).view(S, c, p, M.shape[2])


def _lm_steps(chain, theta, tol, max_steps):
    """Levenberg-Marquardt of :func:`hw1sk.critical_points._levenberg_marquardt`, per seed.

    Returns the final parameters, losses and gradient norms, the step counts,
    the histories, and a mask of the seeds handled (False where a Hessian was
    not finite or could not be diagonalised: those are left to the one-run path).
    """
    S = theta.shape[0]
    loss, g = chain.loss_and_gradient(theta)
    norm = torch.linalg.vector_norm(g, dim=1)
    history = [[float(v)] for v in norm]
    mu = torch.full((S,), float("nan"), dtype=theta.dtype, device=theta.device)
    steps = torch.zeros(S, dtype=torch.long, device=theta.device)
    handled = torch.isfinite(norm)
    stopped = ~handled  # no accepted step, or left to the one-run path
    while True:
        active = torch.nonzero((norm >= tol) & (steps < max_steps) & ~stopped)[:, 0]
        if not active.numel():
            break
        H = chain.hessians(theta[active])
        finite = torch.isfinite(H).flatten(1).all(1)
        if not finite.all():
            handled[active[~finite]] = False
            stopped[active[~finite]] = True
            active, H = active[finite], H[finite]
            if not active.numel():
                continue
        try:
            lam, U = _eigh(H)
        except (torch.linalg.LinAlgError, np.linalg.LinAlgError):
            handled[active] = False
            stopped[active] = True
            continue
        fresh = torch.isnan(mu[active])  # start between gradient descent and Newton
        mu[active[fresh]] = _LM_MU0 * lam[fresh].abs().amax(1) ** 2
        proj = (U.transpose(1, 2) @ g[active, :, None])[..., 0]
        accepted = _lm_try(chain, theta, g, loss, norm, mu, active, lam, U, proj)
        steps[accepted] += 1
        mu[accepted] = torch.clamp(mu[accepted] / _LM_DOWN, min=1e-300)
        for s in accepted.tolist():
            history[s].append(float(norm[s]))
        rejected = active[~torch.isin(active, accepted)]
        stopped[rejected] = True
    return theta, loss, norm, steps, history, handled


def _eigh(H):
    """``torch.linalg.eigh`` of a stack of symmetric matrices.

    On the CPU by SciPy's divide-and-conquer driver, matrix by matrix: the
    same factorization, about 20% faster than torch's for these sizes
    (``benchmarks/bench_minimal_ratio_study.py --phase``).
    """
    if H.device.type != "cpu":
        return torch.linalg.eigh(H)
    from scipy.linalg import eigh

    pairs = [eigh(h, driver="evd", check_finite=False) for h in H.numpy()]
    return (torch.as_tensor(np.stack([w for w, _ in pairs])),
            torch.as_tensor(np.stack([v for _, v in pairs])))


def _lm_try(chain, theta, g, loss, norm, mu, active, lam, U, proj):
    """Raise each active seed's ``mu`` until its step lowers ``||g||``; apply the steps.

    Updates ``theta``, ``g``, ``loss``, ``norm`` and ``mu`` in place; returns
    the seeds whose step was accepted.
    """
    pending = torch.arange(active.numel(), device=active.device)
    accepted = []
    for _ in range(_LM_TRIES):
        seeds = active[pending]
        scale = lam[pending] / (lam[pending] ** 2 + mu[seeds, None])
        step = -(U[pending] @ (scale * proj[pending])[..., None])[..., 0]
        new_theta = theta[seeds] + step
        new_loss, new_g = chain.loss_and_gradient(new_theta)
        new_norm = torch.linalg.vector_norm(new_g, dim=1)
        ok = torch.isfinite(new_norm) & (new_norm < norm[seeds])
        done = seeds[ok]
        theta[done], g[done], loss[done], norm[done] = (new_theta[ok], new_g[ok],
                                                        new_loss[ok], new_norm[ok])
        accepted.append(done)
        mu[seeds[~ok]] *= _LM_UP
        pending = pending[~ok]
        if not pending.numel():
            break
    return torch.cat(accepted)


def minimize_gradient_norms(modules, criterion, X, y, tol=1e-3, max_steps=50,
                            eigenvalues=False):
    """:func:`~hw1sk.critical_points.minimize_gradient_norm` ("newton") for many seeds at once.

    Parameters
    ----------
    modules : list of torch.nn.Module
        Copies of one chain of ``nn.Linear`` layers and elementwise
        activations (:class:`~hw1sk.models.MLP` or a plain
        ``nn.Sequential``), e.g. one net trained from several seeds, all in
        float64.  Each is moved **in place** to its seed's result.
    criterion, X, y
        As in :func:`hw1sk.curvature.loss_hessian`: ``criterion(module(X), y)``
        is each seed's mean loss, a sum of per-sample terms.
    tol : float, default=1e-3
        Target for each seed's ``||grad L||``.
    max_steps : int, default=50
        Each seed's cap on accepted Levenberg-Marquardt steps.
    eigenvalues : bool, default=False
        Also return every seed's Hessian eigenvalues at its final parameters.

    Returns
    -------
    results : list of GradientNormResult or None
        Per module, as the one-module function reports it (``optimizer="newton"``);
        None for a seed this path could not finish (a non-finite gradient or
        Hessian): the one-module function then says what happens to it.
    spectra : list of numpy.ndarray or None
        Only with ``eigenvalues=True``: per module, the ascending
        eigenvalues of the exact float64 Hessian at the final parameters
        (as :func:`hw1sk.curvature.hessian_eigenvalues`), or None.

    Raises
    ------
    hw1sk.batched_modules.UnsupportedModule
        When the modules are not such a chain, are not float64 or not alike,
        or the criterion couples samples.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from hw1sk.batched_critical_points import minimize_gradient_norms
    >>> X = torch.linspace(-1, 1, 50, dtype=torch.float64)[:, None]; y = X ** 3
    >>> nets = []
    >>> for seed in range(3):
    ...     _ = torch.manual_seed(seed)
    ...     nets.append(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)).double())
    >>> [r.converged for r in minimize_gradient_norms(nets, nn.MSELoss(), X, y)]
    [True, True, True]
    """
    tol = _check_positive_real(tol, "tol")
    max_steps = _check_int(max_steps, "max_steps", minimum=0)
    modules = list(modules)
    chain, theta = _stack(modules, criterion, X, y)
    block = max(1, _HESSIAN_ENTRIES // chain.n_params ** 2)  # seeds whose Hessians fit
    results, spectra = [], []
    for start in range(0, len(modules), block):
        part = slice(start, start + block)
        done, values = _minimize_block(chain, theta[part], modules[part], tol, max_steps,
                                       eigenvalues)
        results += done
        spectra += values
    return (results, spectra) if eigenvalues else results


def _minimize_block(chain, theta, modules, tol, max_steps, eigenvalues):
    """:func:`minimize_gradient_norms` for the seeds of ``theta``: results and spectra."""
    theta, loss, norm, steps, history, handled = _lm_steps(chain, theta, tol, max_steps)
    results = []
    for s, module in enumerate(modules):
        if not handled[s]:
            results.append(None)
            continue
        assign_flat_parameters(module, theta[s])
        results.append(GradientNormResult(
            initial_grad_norm=history[s][0], final_grad_norm=float(norm[s]),
            n_steps=int(steps[s]), converged=bool(norm[s] < tol), loss=float(loss[s]),
            history=np.asarray(history[s], dtype=np.float64), optimizer="newton"))
    return results, _spectra(chain, theta, handled) if eigenvalues else []


def _spectra(chain, theta, handled):
    """Ascending Hessian eigenvalues of the handled seeds (None for the others)."""
    out = [None] * theta.shape[0]
    keep = torch.nonzero(handled)[:, 0]
    if not keep.numel():
        return out
    H = chain.hessians(theta[keep])
    finite = torch.isfinite(H).flatten(1).all(1)
    keep, H = keep[finite], H[finite]
    try:
        lam = torch.linalg.eigvalsh(H).cpu().numpy()
    except torch.linalg.LinAlgError:
        return out
    for s, values in zip(keep.tolist(), lam):
        out[s] = values
    return out


def _stack(modules, criterion, X, y):
    """The stacked chain of ``modules``, their ``(S, P)`` parameters, and the data as tensors."""
    modules = list(modules)
    if not modules:
        raise ValueError("modules must hold at least one module.")
    first = modules[0]
    _, Xw, yw = _prepare(first, criterion, X, y, torch.float64)
    chain = _StackedChain(first, criterion, Xw, yw)
    rows = []
    for module in modules:
        params = list(module.parameters())
        if (type(module) is not type(first) or any(p.dtype != torch.float64 for p in params)
                or [p.shape for p in params] != [p.shape for p in first.parameters()]
                or _linear_chain(module) is None):
            raise UnsupportedModule("the modules must be float64 copies of one chain")
        rows.append(torch.cat([p.detach().reshape(-1) for p in params]))
    theta = torch.stack(rows).to(Xw.device)
    with torch.no_grad():  # the stacked forward must be each module's own
        F = chain.outputs(theta)
        for module, f in zip(modules, F):
            out, eps = module(Xw), torch.finfo(torch.float64).eps
            tail = _compose(chain.acts[-1], f)
            if out.shape != tail.shape or not torch.allclose(tail, out, rtol=1e3 * eps,
                                                             atol=1e3 * eps):
                raise UnsupportedModule("the stacked forward differs from the module's")
    if chain._output_blocks(F, check=True)[0] is None:
        raise UnsupportedModule("the criterion couples samples")
    return chain, theta
