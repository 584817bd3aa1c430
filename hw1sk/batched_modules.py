"""Many copies of one network as stacked tensors, run with batched matrix products.

:class:`BatchedNetwork` is the fast path of :class:`hw1sk.ensemble.SeedEnsemble`
for the networks the studies train: :class:`~hw1sk.models.MLP`,
:class:`~hw1sk.models.CNN` and ``nn.Sequential`` stacks of ``Linear``,
``Conv2d``, pooling, ``Flatten`` and elementwise activations.  The seeds'
parameters live in one ``(n_seeds, n_params)`` tensor (each row one seed's
parameters in ``named_parameters`` order, as
:func:`hw1sk.parameters.flatten_parameters` lays them out), so an optimizer
step is a handful of elementwise operations on one tensor.  The forward pass
is written directly on stacked tensors, with no :func:`torch.func.vmap`:

* a ``Linear`` layer is one :func:`torch.baddbmm` on activations of shape
  ``(n_seeds, batch, features)`` (one :func:`torch.addmm` against the
  stacked weights when every seed sees the same batch);
* a ``Conv2d`` layer is one grouped convolution on activations of shape
  ``(batch, n_seeds * channels, height, width)`` (``groups`` times
  ``n_seeds``);
* activations and pooling act per element or per channel, so they run on the
  stacked tensors as they are;
* the network of one ReLU layer of one input, ``Linear(1, H) - ReLU -
  Linear(H, O)`` (the shallow model of the 1-D function fits), runs from
  where each unit's ReLU turns on: on a batch every seed shares (full batch)
  along the samples sorted once, by prefix sums, ``O(S (H + B))`` work per
  step; on a batch per seed from the ReLU's 0/1 mask, one wide tensor
  written and read twice per step instead of about ten passes over wide
  tensors.

On one CPU thread the narrow layers' products are what a step costs, so the
shapes MKL is slow at are avoided: a layer with one input is an elementwise
outer product (several times faster than a product with one term).  The training
loop of :class:`~hw1sk.ensemble.SeedEnsemble` gathers the batches with
``index_select`` into reused buffers and, for ``MSELoss`` and
``CrossEntropyLoss``, starts the backward pass from the loss's gradient in
closed form (:func:`batched_loss_and_grad`).

The loss is the sum over seeds of each seed's mean loss, so ordinary autograd
on the stacked parameters gives every seed exactly its own gradient.

Examples
--------
>>> import torch
>>> from hw1sk.models import MLP
>>> from hw1sk.batched_modules import BatchedNetwork
>>> copies = [MLP(2, (3,), 1) for _ in range(4)]
>>> net = BatchedNetwork(copies)
>>> flat = net.stack_parameters(copies)
>>> flat.shape
torch.Size([4, 13])
>>> x = torch.randn(5, 2)
>>> out = net.forward(flat, x, shared=True)          # every seed on the same batch
>>> out.shape
torch.Size([4, 5, 1])
>>> torch.allclose(out[2], copies[2](x), atol=1e-6)
True
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BatchedNetwork", "UnsupportedModule", "batched_loss", "batched_loss_and_grad"]

# layers applied to the stacked tensors as they are: per element, no parameters
_ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.GELU, nn.ELU, nn.SiLU,
                nn.LeakyReLU, nn.Identity, nn.CELU, nn.SELU, nn.Mish, nn.Hardswish,
                nn.Hardtanh, nn.ReLU6, nn.Softsign, nn.Tanhshrink, nn.Hardsigmoid)
# per channel of an image batch: they act on (batch, seeds * channels, h, w) as on one seed
_PER_CHANNEL = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class UnsupportedModule(ValueError):
    """The module is not one :class:`BatchedNetwork` can run (the message says why)."""


def _program(module, path=""):
    """The module as a list of ``(kind, layer)`` steps, or UnsupportedModule."""
    from .models import CNN, MLP

    where = path or "the module"
    kind = type(module)
    if kind is MLP:
        return _program(module.net, f"{path}.net" if path else "net")
    if kind is CNN:
        return ([("images", module)]
                + _program(module.features, f"{path}.features" if path else "features")
                + _program(module.head, f"{path}.head" if path else "head"))
    if kind is nn.Sequential:
        steps = []
        for name, child in module.named_children():
            steps += _program(child, f"{path}.{name}" if path else name)
        return steps
    if kind is nn.Linear:
        return [("linear", module)]
    if kind is nn.Conv2d:
        if module.padding_mode != "zeros":
            raise UnsupportedModule(f"{where}: Conv2d with padding_mode="
                                    f"{module.padding_mode!r}")
        return [("conv", module)]
    if kind is nn.Flatten:
        if module.start_dim != 1 or module.end_dim != -1:
            raise UnsupportedModule(f"{where}: Flatten other than Flatten(1, -1)")
        return [("flatten", module)]
    if kind is nn.Dropout and module.p == 0:
        return [("elementwise", nn.Identity())]
    if isinstance(module, _ELEMENTWISE) and type(module).forward is kind.forward:
        return [("elementwise", module)]
    if isinstance(module, _PER_CHANNEL) and type(module).forward is kind.forward:
        return [("pool", module)]
    raise UnsupportedModule(f"{where} ({kind.__name__}) is not a layer the batched pass "
                            "runs (Linear, Conv2d, pooling, Flatten, elementwise "
                            "activations in MLP, CNN or nn.Sequential)")


class BatchedNetwork:
    """Run ``len(modules)`` copies of one architecture on stacked parameters.

    Parameters
    ----------
    module : torch.nn.Module
        The architecture (one copy); MLP, CNN or ``nn.Sequential`` of the
        supported layers, without buffers.

    Raises
    ------
    UnsupportedModule
        For any other module (the message names the layer).

    Attributes
    ----------
    names : list of str
        Parameter names, in ``named_parameters`` order.
    shapes : list of torch.Size
    offsets : list of int
        Start of each parameter in a row of the flat parameters.
    n_params : int
    one_input_relu : bool
        Whether the network is ``Linear(1, H) - ReLU - Linear(H, O)`` (with
        biases), which runs from where each unit's ReLU turns on: on a shared
        batch by prefix sums along the sorted samples, with no ``(n_seeds, H,
        batch)`` tensor (:class:`_SortedOneInputReLU`), on a batch per seed
        from the ReLU's mask, one such tensor per step, streamed through
        (:class:`_OneInputReLU`); larger chunks of seeds train faster
        whatever the cache.
    """

    def __init__(self, module):
        if isinstance(module, (list, tuple)):
            module = module[0]
        self.steps = _program(module)
        if any(True for _ in module.buffers()):
            raise UnsupportedModule("the module has buffers")
        named = list(module.named_parameters())
        index = {id(p): i for i, (_, p) in enumerate(named)}
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.offsets = [0]
        for shape in self.shapes:
            self.offsets.append(self.offsets[-1] + math.prod(shape))
        self.n_params = self.offsets.pop()
        covered = set()
        self._slots = []  # per step: indices of (weight, bias) in the flat layout, or None
        for kind, layer in self.steps:
            if kind in ("linear", "conv"):
                w = index[id(layer.weight)]
                b = None if layer.bias is None else index[id(layer.bias)]
                covered.update(i for i in (w, b) if i is not None)
                self._slots.append((w, b))
            else:
                self._slots.append(None)
        if len(covered) != len(named):
            missing = [self.names[i] for i in range(len(named)) if i not in covered]
            raise UnsupportedModule(f"parameters {missing} are used outside Linear/Conv2d")
        # a Linear followed by an activation whose derivative is known from its output
        # is one fused step; the activation step is then skipped
        self._fused = {}
        for i, (kind, layer) in enumerate(self.steps[:-1]):
            nxt = self.steps[i + 1][1]
            if kind == "linear" and type(nxt) in _FUSED_ACTIVATIONS:
                self._fused[i] = _FUSED_ACTIVATIONS[type(nxt)]
        self._one_input_relu = _one_input_relu_pair(self.steps, self._slots, self._fused)
        self.one_input_relu = self._one_input_relu is not None
        self._workspace = {}
        self.images = next((layer for kind, layer in self.steps if kind == "images"), None)
        self.image_input = bool(self.steps) and self.steps[0][0] in ("images", "conv")

    # --------------------------------------------------------------- layout
    def stack_parameters(self, modules):
        """The modules' parameters as one ``(n_seeds, n_params)`` tensor (a copy)."""
        with torch.no_grad():
            return torch.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()])
                                for m in modules])

    def unstack_parameters(self, flat, modules):
        """Copy row ``i`` of ``flat`` into the parameters of ``modules[i]``."""
        with torch.no_grad():
            for row, module in zip(flat, modules):
                for (start, shape), p in zip(zip(self.offsets, self.shapes),
                                             module.parameters()):
                    p.copy_(row[start:start + math.prod(shape)].view(shape))

    def leaves(self, flat):
        """Per-parameter views of ``flat`` of shape ``(n_seeds, *shape)`` that require grad."""
        S = flat.shape[0]
        out = []
        for start, shape in zip(self.offsets, self.shapes):
            view = flat.detach()[:, start:start + math.prod(shape)].view(S, *shape)
            out.append(view.requires_grad_())
        return out

    def gather(self, X, idx, out=None):
        """Each seed's batch ``X[idx[s]]`` in the layout the first layer takes.

        Parameters
        ----------
        X : Tensor of shape (n_samples, ...)
        idx : LongTensor of shape (n_seeds, batch)
        out : Tensor of shape (n_seeds * batch, ...), optional
            Written into (a buffer reused across steps); by default a new tensor.

        Returns
        -------
        Tensor of shape (n_seeds, batch, ...), or ``(batch, n_seeds, ...)`` for
        images (they become ``(batch, n_seeds * channels, h, w)``).
        """
        # index_select copies whole rows: several times faster than X[idx]'s
        # general indexing kernel (8 x 128 MNIST images: 0.18 ms against 1.1 ms)
        order = (idx.t() if self.image_input else idx).reshape(-1)
        rows = (torch.index_select(X, 0, order) if out is None
                else torch.index_select(X, 0, order, out=out))
        shape = (idx.shape[::-1] if self.image_input else idx.shape)
        return rows.view(*shape, *X.shape[1:])

    def _workspace_for(self, i, training):
        """Buffers that step ``i`` reuses across training steps (None: allocate).

        Fresh allocations of a few MB are page-faulted in on every step by the
        system allocator (returned to the OS and mapped again); writing the
        wide layers' outputs and gradients into the same buffers each step
        avoids it.  A step's graph is freed before the next step overwrites them.
        """
        if not training:
            return None
        return self._workspace.setdefault(i, {})

    # -------------------------------------------------------------- forward
    def forward(self, params, x, shared):
        """Outputs of shape ``(n_seeds, batch, n_out)``.

        Parameters
        ----------
        params : Tensor of shape (n_seeds, n_params) or list of Tensor
            Flat parameters, or the per-parameter stacked views of :meth:`leaves`.
        x : Tensor
            ``(batch, ...)`` when ``shared`` (every seed on the same batch),
            else what :meth:`gather` returns.
        shared : bool
        """
        if isinstance(params, torch.Tensor):
            S = params.shape[0]
            params = [params[:, s:s + math.prod(shape)].view(S, *shape)
                      for s, shape in zip(self.offsets, self.shapes)]
        S = params[0].shape[0]
        if self._one_input_relu is not None:
            return self._forward_one_input_relu(params, x, shared)
        # the state: "data" as given, (batch, ...) shared or (S, batch, ...);
        # "dense": (S, features, batch), samples last, so that a layer's product
        # W @ h has the long batch dimension as its columns (MKL's batched
        # products are several times faster so for narrow layers);
        # "image": (batch, S * channels, h, w) or, shared, (batch, channels, h, w)
        state = "data"
        training = torch.is_grad_enabled() and params[0].requires_grad
        skip = -1
        for i, ((kind, layer), slot) in enumerate(zip(self.steps, self._slots)):
            if i == skip:
                continue
            if kind == "images":  # CNN.forward: samples that are not (C, H, W) are reshaped
                C, size = layer.in_channels, layer.image_size
                sample = x.shape[1:] if shared else x.shape[2:]
                if len(sample) == 3 and tuple(sample) != (C, size, size):
                    raise UnsupportedModule(f"images of shape {tuple(sample)} for a CNN "
                                            f"of {C} channels of size {size}")
                x = x.reshape(x.shape[0], C if shared else S * C, size, size)
                state = "image"
            elif kind == "linear":
                w, b = params[slot[0]], None if slot[1] is None else params[slot[1]]
                if state == "data":
                    if x.dim() != (2 if shared else 3):
                        raise UnsupportedModule("Linear on samples that are not vectors")
                    x = x.t() if shared else x.transpose(1, 2)
                elif state == "image":
                    raise UnsupportedModule("Linear on images without Flatten")
                act = self._fused.get(i)
                if act is not None:
                    skip = i + 1
                x = _linear(x, w, b, shared, act or "identity",
                            self._workspace_for(i, training))
                shared, state = False, "dense"
            elif kind == "conv":
                w, b = params[slot[0]], None if slot[1] is None else params[slot[1]]
                if state == "dense":
                    raise UnsupportedModule("Conv2d after a dense layer")
                if not shared and x.dim() == 5:  # gathered (B, S, C, H, W) data
                    x = x.reshape(x.shape[0], S * x.shape[2], *x.shape[3:])
                weight = w.reshape(S * w.shape[1], *w.shape[2:])
                bias = None if b is None else b.reshape(-1)
                groups = layer.groups if shared else layer.groups * S
                x = F.conv2d(x, weight, bias, layer.stride, layer.padding, layer.dilation,
                             groups)
                shared, state = False, "image"
            elif kind == "flatten":
                if state == "data":
                    x = x.flatten(1) if shared else x.flatten(2)
                elif state == "image":
                    if shared:
                        x = x.flatten(1)
                        state = "data"
                    else:
                        x = x.reshape(x.shape[0], S, -1).permute(1, 2, 0)
                        state = "dense"
            else:  # elementwise or per-channel pooling
                x = layer(x)
        if state != "dense":
            raise UnsupportedModule("the network does not end in a Linear layer")
        return x.transpose(1, 2)

    def _forward_one_input_relu(self, params, x, shared):
        """:meth:`forward` of a ``Linear(1, H) - ReLU - Linear(H, O)`` network
        (:class:`_OneInputReLU`)."""
        if x.dim() != (2 if shared else 3) or x.shape[-1] != 1:
            raise UnsupportedModule("samples that are not vectors of one feature for a "
                                    "network of one input")
        first, second = self._one_input_relu
        w1, b1 = (params[k] for k in self._slots[first])
        w2, b2 = (params[k] for k in self._slots[second])
        training = torch.is_grad_enabled() and w1.requires_grad
        workspace = self._workspace_for(first, training)
        if shared:  # the samples sorted once for every seed: the sorted pass
            xt = x.t()  # (1, batch)
            xs, perm = torch.sort(xt.detach(), dim=-1, stable=True)
            out = _SortedOneInputReLU.apply(xt, w1, b1, w2, b2, xs,
                                            perm.expand(w1.shape[0], -1), workspace)
        else:  # a batch per seed: sorting each costs more than the mask pass
            xt = x.transpose(1, 2)  # (S, 1, batch)
            out = _OneInputReLU.apply(xt, w1, b1, w2, b2, shared, workspace)
        return out.transpose(1, 2)


def _one_input_relu_pair(steps, slots, fused):
    """``(first, second)``: the step indices of the two Linear layers when the network
    is ``[Flatten,] Linear(1, H, bias) - ReLU - Linear(H, O, bias)``, else None."""
    kinds = [kind for kind, _ in steps]
    start = 1 if kinds[:1] == ["flatten"] else 0
    if kinds[start:] != ["linear", "elementwise", "linear"]:
        return None
    first, second = start, start + 2
    if (fused.get(first) != "relu" or steps[first][1].in_features != 1
            or None in slots[first] or None in slots[second]):
        return None
    return first, second


def _linear(xt, w, b, shared, activation="identity", workspace=None):
    """``act(W @ x + b)`` for every seed: ``xt`` is ``(S, in, batch)`` or, shared, ``(in, batch)``."""
    has_bias = b is not None
    if b is None:
        b = w.new_zeros(())  # no parameter: its gradient is not asked for
    return _StackedLinear.apply(xt, w, b, shared, has_bias, activation, workspace)


def _buffer(workspace, key, shape, like):
    """``workspace[key]`` if it has this shape and dtype, else a new empty tensor kept there."""
    if workspace is None:
        return None
    buf = workspace.get(key)
    if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
        buf = workspace[key] = like.new_empty(shape)
    return buf


# activations fused into the Linear before them: derivative from the output
_FUSED_ACTIVATIONS = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid",
                      nn.Identity: "identity"}


class _StackedLinear(torch.autograd.Function):
    """A Linear layer (and the activation after it) of every seed on samples-last
    activations.  Its backward picks the cheap product for the shapes of a
    narrow or one-output layer (autograd's ``baddbmm`` backward makes an outer
    product a matrix product), and it writes the wide tensors into reused
    buffers of ``workspace``."""

    @staticmethod
    def forward(ctx, xt, w, b, shared, has_bias, activation, workspace):
        S, O = w.shape[0], w.shape[1]
        B = xt.shape[-1]
        xe = xt.expand(S, *xt.shape) if shared else xt
        out = _buffer(workspace, "out", (S, O, B), w)
        if w.shape[2] == 1:  # one input: an outer product, elementwise (several times
            # faster than baddbmm or addcmul, which broadcast through slower paths)
            out = torch.mul(w, xe, out=out) if out is not None else torch.mul(w, xe)
            if has_bias:
                out.add_(b.unsqueeze(-1))
        elif has_bias:
            out = torch.baddbmm(b.unsqueeze(-1), w, xe, out=out)
        else:
            out = torch.bmm(w, xe, out=out)
        if activation == "relu":
            out.clamp_min_(0)
        elif activation == "tanh":
            out.tanh_()
        elif activation == "sigmoid":
            out.sigmoid_()
        ctx.save_for_backward(xt, w, out)
        ctx.shared, ctx.has_bias, ctx.activation = shared, has_bias, activation
        ctx.workspace = workspace
        return out

    @staticmethod
    def backward(ctx, g):
        xt, w, y = ctx.saved_tensors
        act = ctx.activation
        if act != "identity":
            h = _buffer(ctx.workspace, "grad_out", g.shape, g)
            if act == "relu":
                g = torch.ops.aten.threshold_backward.grad_input(g, y, 0, grad_input=h) \
                    if h is not None else torch.ops.aten.threshold_backward(g, y, 0)
            elif act == "tanh":
                g = torch.ops.aten.tanh_backward.grad_input(g, y, grad_input=h) \
                    if h is not None else torch.ops.aten.tanh_backward(g, y)
            else:
                g = torch.ops.aten.sigmoid_backward.grad_input(g, y, grad_input=h) \
                    if h is not None else torch.ops.aten.sigmoid_backward(g, y)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            wt = w.transpose(1, 2)
            buf = _buffer(ctx.workspace, "grad_in", (w.shape[0], w.shape[2], g.shape[-1]), g)
            if w.shape[1] == 1:  # one output: an outer product
                grad_x = torch.mul(wt, g, out=buf) if buf is not None else torch.mul(wt, g)
            else:
                grad_x = torch.bmm(wt, g, out=buf) if buf is not None else torch.bmm(wt, g)
            if ctx.shared:
                grad_x = grad_x.sum(0)
        if ctx.needs_input_grad[1]:
            if ctx.shared:  # one product: (S * out, batch) @ (batch, in)
                grad_w = torch.matmul(g, xt.t())
            else:
                grad_w = torch.bmm(g, xt.transpose(1, 2))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(-1)
        return grad_x, grad_w, grad_b, None, None, None, None


@functools.cache
def _samples_as_rows():
    """Whether the mask pass of :class:`_OneInputReLU` runs its products samples-first.

    Its three products are an outer product (one term) and two of one
    short side (``2 O`` rows), whose speed depends on the BLAS kernels the
    processor gets.  MKL on Intel processors runs the outer product ``(S, H,
    1) @ (S, 1, B)`` faster than ``torch.mul``'s broadcast, and the
    backward ``(S, 2O, B) @ (S, B, H)`` twice as fast as ``(S, H, B) @ (S,
    B, 2O)``; on AMD processors (measured on an EPYC with AVX-512, 32 x 190
    x 1000) it is the other way round: ``torch.mul`` in 0.4 of the time,
    and the samples-first backward product on a transposed view in 0.5.
    True on AMD processors.  The choice depends on the processor only,
    never on timings, so one machine always gives the same numbers.
    """
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return "AuthenticAMD" in line
    except OSError:
        pass
    import platform

    return "AMD" in platform.processor().upper()


class _OneInputReLU(torch.autograd.Function):
    """``W2 @ relu(w1 x + b1) + b2`` for every seed, from the ReLU's 0/1 mask alone.

    With one input, the hidden activations are ``M * (w1 x + b1)`` where ``M``
    is the mask ``w1 x + b1 > 0``, so every product of the network is one of
    ``M``: the outputs are ``[W2 w1, W2 b1] @ M`` combined as ``x P_1 + P_2 +
    b2``, and all four gradients follow from ``[g x, g] @ M^T`` (``A^T`` and
    ``C^T``): ``dW2 = w1 A^T + b1 C^T``, ``dw1 = sum_o W2 A^T``, ``db1 =
    sum_o W2 C^T``.  The wide ``(S, H, batch)`` tensor is written once (the mask) and
    read twice (the two batched products), where the layer-by-layer pass
    makes about ten passes over such tensors (the 1-190-1 network's step is
    bound by that memory traffic).  The mask is the layer-by-layer pass's
    (``fl(w1 x) > -b1`` has the sign of ``fl(fl(w1 x) + b1)``); the sums are
    grouped differently, so results agree with it up to rounding.
    """

    @staticmethod
    def forward(ctx, xt, w1, b1, w2, b2, shared, workspace):
        S, H, O = w1.shape[0], w1.shape[1], w2.shape[1]
        xe = xt.unsqueeze(0) if shared else xt  # (1 or S, 1, batch)
        mask = _buffer(workspace, "mask", (S, H, xt.shape[-1]), w1)
        # fl(w1 x): a product of one term is exact rounding either way; on Intel MKL's is
        # faster than torch.mul's broadcast (1.4 ms against 1.9 ms for 32 x 190 x 1000),
        # on AMD torch.mul (0.9-1.1 against 2.3-2.8 ms)
        xs = xe.expand(S, 1, xe.shape[-1])
        product = torch.mul if _samples_as_rows() else torch.bmm
        mask = product(w1, xs, out=mask) if mask is not None else product(w1, xs)
        torch.gt(mask, b1.neg().unsqueeze(-1), out=mask)  # 1.0 where w1 x + b1 > 0
        rows = torch.cat([w2 * w1.transpose(1, 2), w2 * b1.unsqueeze(1)], 1)  # (S, 2O, H)
        prod = torch.bmm(rows, mask)  # (samples-first took 10 ms against 2 ms on AMD)
        out = torch.addcmul(prod[:, O:], prod[:, :O], xe).add_(b2.unsqueeze(-1))
        ctx.save_for_backward(xt, w1, b1, w2, mask, prod)
        ctx.shared = shared
        return out

    @staticmethod
    def backward(ctx, g):
        xt, w1, b1, w2, mask, prod = ctx.saved_tensors
        O = w2.shape[1]
        xe = xt.unsqueeze(0) if ctx.shared else xt
        # [g x, g] @ M^T: MKL on Intel runs this layout twice as fast as M @ [g x, g]^T,
        # on AMD half as fast (_samples_as_rows)
        gg = torch.cat([g * xe, g], 1)  # (S, 2O, B)
        both = (torch.bmm(mask, gg.transpose(1, 2)).transpose(1, 2) if _samples_as_rows()
                else torch.bmm(gg, mask.transpose(1, 2)))  # (S, 2O, H)
        grad_w1, grad_b1, grad_w2 = _first_gradients(w1, b1, w2, both)
        grad_b2 = g.sum(-1)
        grad_x = None
        if ctx.needs_input_grad[0]:  # d out / d x = (W2 w1) @ M, the first rows' product
            grad_x = (g * prod[:, :O]).sum(1, keepdim=True)
            if ctx.shared:
                grad_x = grad_x.sum(0)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None, None



def _first_gradients(w1, b1, w2, both):
    """``(dw1, db1, dW2)`` of ``W2 @ relu(w1 x + b1)`` from ``both = [A^T, C^T]``, the
    sums ``[g x, g] @ M^T`` of shape ``(S, 2O, H)`` (:class:`_OneInputReLU`)."""
    O = w2.shape[1]
    a, c = both[:, :O], both[:, O:]
    grad_w1 = (w2 * a).sum(1).unsqueeze(-1)
    grad_b1 = (w2 * c).sum(1)
    grad_w2 = torch.addcmul(b1.unsqueeze(1) * c, w1.transpose(1, 2), a)
    return grad_w1, grad_b1, grad_w2

def _relu_boundaries(a, nb, xs, start=None):
    """Where each unit's ReLU turns on along the sorted samples.

    The mask of unit ``j`` on sample ``x`` is ``fl(a_j x) > -b_j`` (the mask
    pass's, :class:`_OneInputReLU`).  ``fl(a_j x)`` is monotone in ``x``, so
    along sorted samples the mask is a suffix of them (``a_j >= 0``) or a
    prefix (``a_j < 0``).  The boundary ``k_j`` is the first sorted position
    of the suffix, or the length of the prefix.  It is found exactly, by
    evaluating the mask itself at positions ``k - 1`` and ``k`` (the
    positions before the first and after the last are ``-inf`` and ``inf``)
    and moving each candidate one position towards its boundary until none
    moves: from ``start`` (the caller's extrapolation of the last two steps'
    boundaries; parameters move little per step) for at most three moves,
    else from :func:`torch.searchsorted` of ``-b_j / a_j`` (slower on CPU than
    a few checks).  A unit with ``a_j = 0`` is on everywhere
    or nowhere (``b_j > 0``); one with a non-finite ``a_j`` or ``b_j`` is
    given ``B`` (its seed's outputs are made NaN by the caller).

    Parameters
    ----------
    a, nb : Tensor of shape (S, H)
        First-layer weights and negated biases.
    xs : Tensor of shape (S or 1, B)
        Sorted samples.
    start : LongTensor of shape (S, H), optional

    Returns
    -------
    LongTensor of shape (S, H)
    """
    S, H = a.shape
    B = xs.shape[-1]
    inf = xs.new_full((xs.shape[0], 1), math.inf)
    padded = torch.cat([-inf, xs, inf], 1).expand(S, B + 2)  # position p at p + 1
    moving = (a != 0) & torch.isfinite(a) & torch.isfinite(nb)
    fixed = torch.where((a == 0) & (nb < 0), 0, B)
    # +1 for units on a suffix, -1 for units on a prefix, 0 for units that do not move
    direction = torch.where(a < 0, -1, 1).mul_(moving)
    # positions k - 1 and k side by side, (S, 2H): contiguous rows (elementwise
    # kernels are slow on a trailing dimension of 2)
    a2, nb2 = torch.cat([a, a], 1), torch.cat([nb, nb], 1)
    k = start
    for _ in range(2):  # from the last step's boundaries, then from a search
        if k is None:
            k = torch.searchsorted(xs.expand(S, B).contiguous(), nb / a)
        k = torch.where(moving, k, fixed)
        for _ in range(3 if start is not None else B + 1):
            v = padded.gather(1, torch.cat([k, k + 1], 1))
            # masks at k - 1 and k: both on, move towards the off side; one, stay
            on = torch.gt(a2 * v, nb2).view(S, 2, H).sum(1)
            step = (1 - on).mul_(direction)
            if not bool(step.any()):
                return k
            k += step
        k, start = None, None  # far from the last step's: search
    raise AssertionError("unreachable: the mask is monotone along the sorted samples")


class _SortedOneInputReLU(torch.autograd.Function):
    """``W2 @ relu(w1 x + b1) + b2`` for every seed on one shared batch, from the
    samples sorted once.

    Each unit's ReLU is on over a contiguous range of the sorted samples
    (:func:`_relu_boundaries`: its mask is the mask pass's, exactly), so
    every product of :class:`_OneInputReLU` is a sum over ranges: the
    outputs' ``[W2 w1, W2 b1] @ M`` are prefix sums of each unit's row
    scattered at its boundary (units on a suffix summed forwards, units on a
    prefix backwards), and the gradients' ``[g x, g] @ M^T`` are prefix and
    suffix sums of ``[g x, g]`` read at the boundaries.  A step is then
    ``O(S (H + B))`` work instead of the ``(S, H, B)`` mask's: the 1-190-1
    fit of 32 seeds on 1000 samples trains 5.1 times faster than by the mask
    pass on one thread of an AMD EPYC (``benchmarks/bench_seed_ensemble.py
    --cases one-input-passes``).  The sums are grouped differently
    from a matrix product's, so results agree with the layer-by-layer pass up
    to rounding.  ``workspace`` keeps the boundaries for the next step's
    search.
    """

    @staticmethod
    def forward(ctx, xt, w1, b1, w2, b2, xs, perm, workspace):
        S, H, O = w1.shape[0], w1.shape[1], w2.shape[1]
        B = xs.shape[-1]
        a, nb = w1[..., 0], b1.neg()
        # the last two steps' boundaries, extrapolated: where the search starts
        past = [] if workspace is None else workspace.get("boundaries", [])
        past = [k for k in past if k.shape == a.shape]
        start = (None if not past else past[-1] if len(past) == 1
                 else (2 * past[-1] - past[-2]).clamp_(0, B))
        k = _relu_boundaries(a, nb, xs, start)
        if workspace is not None:
            workspace["boundaries"] = past[-1:] + [k]
        rows = torch.cat([w2 * a.unsqueeze(1), w2 * b1.unsqueeze(1)], 1)  # (S, 2O, H)
        # suffix units at their boundary in the first half, prefix units at B - k in the
        # second (read backwards): each half's prefix sums are the rows' products with M
        scattered = rows.new_zeros(S, 2 * O, 2 * (B + 1))
        at = torch.where(a >= 0, k, 2 * B + 1 - k)
        scattered.scatter_add_(2, at.unsqueeze(1).expand(S, 2 * O, H), rows)
        scattered[:, :, 0] += rows.sum(-1) * 0  # a non-finite parameter: every output NaN
        sums = scattered.view(S, 2 * O, 2, B + 1).cumsum(-1)
        prod = sums[:, :, 0, :B] + sums[:, :, 1, :B].flip(-1)  # (S, 2O, B), sorted
        out_sorted = torch.addcmul(prod[:, O:], prod[:, :O], xs.unsqueeze(1))
        out_sorted.add_(b2.unsqueeze(-1))
        out = torch.empty_like(out_sorted).scatter_(2, perm.unsqueeze(1).expand(S, O, B),
                                                    out_sorted)
        ctx.save_for_backward(xs, perm, w1, b1, w2, at, prod)
        return out

    @staticmethod
    def backward(ctx, g):
        xs, perm, w1, b1, w2, at, prod = ctx.saved_tensors
        S, O, B = g.shape
        H = w1.shape[1]
        gs = g.gather(2, perm.unsqueeze(1).expand(S, O, B))  # sorted
        # [g x, g] and, reversed, in two halves after a zero: prefix sums (k samples)
        # and suffix sums (B - k samples)
        both = g.new_empty(S, 2 * O, 2, B + 1)
        both[..., 0] = 0
        torch.mul(gs, xs.unsqueeze(1), out=both[:, :O, 0, 1:])
        both[:, O:, 0, 1:] = gs
        both[:, :, 1, 1:] = both[:, :, 0, 1:].flip(-1)
        sums = both.cumsum(-1).view(S, 2 * O, 2 * (B + 1))
        # a unit on a suffix reads the reversed half at B - k, one on a prefix the
        # forward half at k: the forward's scatter positions mirrored, 2B + 1 - at
        ranges = sums.gather(2, (2 * B + 1 - at).unsqueeze(1).expand(S, 2 * O, H))
        grad_w1, grad_b1, grad_w2 = _first_gradients(w1, b1, w2, ranges)
        grad_b2 = g.sum(-1)
        grad_x = None
        if ctx.needs_input_grad[0]:  # d out / d x = (W2 w1) @ M, sorted
            dx = (gs * prod[:, :O]).sum(1, keepdim=True)
            grad_x = torch.empty_like(dx).scatter_(2, perm.unsqueeze(1), dx).sum(0)
        return grad_x, grad_w1, grad_b1, grad_w2, grad_b2, None, None, None


def batched_loss(criterion, out, y, shared):
    """Each seed's mean loss, shape ``(n_seeds,)``, as ``criterion`` computes it per seed.

    ``MSELoss``, ``L1Loss`` and ``CrossEntropyLoss`` (mean reduction, no class
    weights) are computed directly; other criteria through
    :func:`torch.func.vmap` over the seeds.

    Parameters
    ----------
    criterion : torch.nn.Module
    out : Tensor of shape (n_seeds, batch, ...)
    y : Tensor of shape (batch, ...) when ``shared``, else (n_seeds, batch, ...)
    shared : bool
    """
    S = out.shape[0]
    kind = type(criterion)
    if kind in (nn.MSELoss, nn.L1Loss) and criterion.reduction == "mean":
        target = y.unsqueeze(0) if shared else y
        if target.shape[1:] == out.shape[1:]:
            diff = out - target
            per = diff.square() if kind is nn.MSELoss else diff.abs()
            return per.reshape(S, -1).mean(1)
    if (kind is nn.CrossEntropyLoss and criterion.reduction == "mean"
            and criterion.weight is None and out.dim() == 3 and not y.is_floating_point()):
        target = (y.expand(S, *y.shape) if shared else y).reshape(-1)
        if criterion.ignore_index < 0:  # class indices are >= 0: none is ignored
            losses = F.cross_entropy(out.reshape(-1, out.shape[-1]), target, reduction="none",
                                     label_smoothing=criterion.label_smoothing)
            return losses.view(S, -1).mean(1)
    from torch.func import vmap

    return vmap(criterion, in_dims=(0, None if shared else 0))(out, y)


def batched_loss_and_grad(criterion, out, y, shared):
    """Each seed's mean loss and the gradient of their sum with respect to ``out``.

    Closed forms of :func:`batched_loss` for ``MSELoss`` (``2 (out - y) / n``
    per seed) and ``CrossEntropyLoss`` of class indices (``(softmax(out) -
    onehot(y)) / batch``), mean reduction, without autograd's graph of the
    loss: a few passes over the outputs, where autograd's loss and its
    backward cost more than a narrow network's layers.  Other criteria (and
    options: class weights, label smoothing, an ``ignore_index`` that can
    match) give None: use :func:`batched_loss` and autograd.

    Parameters
    ----------
    criterion : torch.nn.Module
    out : Tensor of shape (n_seeds, batch, ...)
        Detached or not; the loss is computed without a graph.
    y : Tensor of shape (batch, ...) when ``shared``, else (n_seeds, batch, ...)
    shared : bool

    Returns
    -------
    (losses, grad_out) : tuple of Tensor, or None
        ``losses`` of shape ``(n_seeds,)``; ``grad_out`` of the shape of ``out``.
    """
    kind = type(criterion)
    if getattr(criterion, "reduction", None) != "mean":
        return None
    with torch.no_grad():
        if kind is nn.MSELoss:
            return _mse_and_grad(out.detach(), y, shared)
        if (kind is nn.CrossEntropyLoss and criterion.weight is None and out.dim() == 3
                and criterion.label_smoothing == 0 and criterion.ignore_index < 0
                and not y.is_floating_point()):
            return _cross_entropy_and_grad(out.detach(), y, shared)
    return None


def _mse_and_grad(out, y, shared):
    target = y.unsqueeze(0) if shared else y
    if target.shape[1:] != out.shape[1:] or not target.is_floating_point():
        return None
    diff = out - target
    losses = diff.square().reshape(out.shape[0], -1).mean(1)
    return losses, diff.mul_(2.0 / math.prod(out.shape[1:]))


def _cross_entropy_and_grad(out, y, shared):
    """Softmax cross-entropy of ``(S, batch, classes)`` logits, computed classes-first:
    the layout the batched pass's outputs have in memory (samples last)."""
    S, B, _ = out.shape
    z = out.transpose(1, 2)  # (S, classes, batch)
    target = (y.expand(S, B) if shared else y).unsqueeze(1)
    top = z.amax(1, keepdim=True)
    exp = torch.exp(z - top)
    total = exp.sum(1, keepdim=True)
    losses = (top + total.log() - z.gather(1, target)).squeeze(1).mean(1)
    grad = exp.div_(total)
    grad.scatter_add_(1, target, torch.full_like(target, -1, dtype=grad.dtype))
    return losses, grad.div_(B).transpose(1, 2)
