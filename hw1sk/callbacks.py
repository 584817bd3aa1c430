"""Tracing callbacks: weight snapshots, gradient norms and curvature recorded during training.

All are :class:`skorch.callbacks.Callback` subclasses that keep their
records on themselves, so they travel with a pickled net.  Their records are
reset when the net is (re)initialized (``fit`` without ``warm_start``,
``initialize``, ``set_params`` of a callback) and continue across
``partial_fit`` calls and ``warm_start`` fits.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from sklearn.base import ClassifierMixin
from sklearn.exceptions import NotFittedError
from skorch.callbacks import Callback

from .parameters import flatten_parameters, layer_slices

__all__ = ["WeightTrace", "GradNormTrace", "CurvatureTrace", "global_grad_norm"]


def global_grad_norm(grads) -> torch.Tensor:
    """L2 norm of all gradients together, as a 0-d tensor (no host sync).

    ``sqrt(sum over tensors of sum of squares)``, computed with one fused
    per-tensor norm where torch provides it.

    Parameters
    ----------
    grads : list of torch.Tensor

    Returns
    -------
    norm : torch.Tensor of shape ()
    """
    if not grads:
        return torch.zeros(())
    if hasattr(torch, "_foreach_norm"):
        try:
            # one fused kernel for the per-tensor norms (what clip_grad_norm_ uses)
            return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        except (RuntimeError, TypeError):  # mixed devices/dtypes
            pass
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)
    if get_total_norm is not None:
        return get_total_norm(grads)
    return torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g).to(grads[0].device) for g in grads])
    )


def _host_or_pending(value):
    """A CPU scalar as a float now (no sync involved); other devices' stay tensors."""
    value = value.detach()
    return value.item() if value.device.type == "cpu" else value


def _as_floats(values):
    """Floats of a list of floats and device scalars, with one transfer for the latter."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    if not tensors:
        return list(values)
    host = iter(torch.stack(tensors).float().cpu().tolist())
    return [next(host) if isinstance(v, torch.Tensor) else float(v) for v in values]


class WeightTrace(Callback):
    """Snapshots of the flattened parameters every ``every`` epochs.

    The layout is :func:`hw1sk.parameters.flatten_parameters`'s (the order
    of ``module.named_parameters()``), stored as float32 numpy vectors.

    Parameters
    ----------
    every : int, default=1
        Take a snapshot at the end of each epoch ``e`` with ``e % every == 0``
        (epochs count from 1, as in the net's history).
    include_initial : bool, default=True
        Also snapshot the parameters before the first epoch, as epoch 0.
    layers : str, list of str or None, default=None
        Keep only these layers (names from
        :func:`hw1sk.parameters.layer_slices`, e.g. ``"net.1"``); None keeps
        all parameters.

    Attributes
    ----------
    epochs_ : list of int
        Epoch of each snapshot (0 is the initial parameters).
    snapshots_ : list of ndarray of shape (n_kept,)
        The parameters (float32).
    train_loss_ : list of float
        Training loss at each snapshot: the epoch's ``train_loss`` from the
        history, i.e. the mean of the batch losses during that epoch, each
        computed at the parameters in place before its step (no extra pass
        over the data).  For the initial snapshot it is the loss of the
        first training batch, computed at the initial parameters (exactly
        the initial training loss for full-batch training).
    train_accuracy_ : list of float
        Likewise for the accuracy (the history's running ``train_acc``) for
        classifiers; NaN for regressors.
    layer_slices_ : dict of str to slice
        Where each kept layer lives in a snapshot.

    Notes
    -----
    Records are reset when the net is initialized and continue across
    ``partial_fit`` calls; the initial snapshot is taken only when no
    snapshot exists yet, with the number of epochs already trained as its
    epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralRegressor
    >>> from hw1sk.callbacks import WeightTrace
    >>> X = np.linspace(-1, 1, 20)[:, None]; y = X[:, 0] ** 2
    >>> trace = WeightTrace(every=3)
    >>> _ = NeuralRegressor(module__hidden=(4,), max_epochs=10, batch_size=-1,
    ...                     callbacks=[trace], random_state=0).fit(X, y)
    >>> trace.epochs_, trace.to_array().shape
    ([0, 3, 6, 9], (4, 13))
    """

    def __init__(self, every=1, include_initial=True, layers=None):
        self.every = every
        self.include_initial = include_initial
        self.layers = layers

    def initialize(self):
        if not isinstance(self.every, Integral) or isinstance(self.every, bool) or self.every < 1:
            raise ValueError(f"every must be a positive integer, got {self.every!r}.")
        self.epochs_ = []
        self.snapshots_ = []
        self.train_loss_ = []
        self.train_accuracy_ = []
        self.layer_slices_ = None
        self._index_ = None
        self._fill_initial_ = False
        self._params_ = None
        self._views_ = None
        return self

    def _resolve_layers(self, module):
        all_slices = layer_slices(module)
        if self.layers is None:
            self._index_ = None
            self.layer_slices_ = dict(all_slices)
            return
        names = [self.layers] if isinstance(self.layers, str) else list(self.layers)
        unknown = [n for n in names if n not in all_slices]
        if unknown:
            raise ValueError(f"Unknown layers {unknown}; the module has {list(all_slices)}.")
        index, kept, start = [], {}, 0
        for name in names:
            sl = all_slices[name]
            index.append(np.arange(sl.start, sl.stop))
            kept[name] = slice(start, start + sl.stop - sl.start)
            start += sl.stop - sl.start
        self._index_ = np.concatenate(index)
        self.layer_slices_ = kept

    def _snapshot(self, net, epoch, loss, accuracy):
        params = self._params_ if self._params_ is not None else net.module_
        views = self._host_views() if params is self._params_ else None
        if views is not None:  # flatten_parameters' layout, in one numpy copy
            flat = np.concatenate(views)
        else:
            flat = flatten_parameters(params).to(device="cpu", dtype=torch.float32).numpy()
        if self._index_ is not None:
            flat = flat[self._index_]
        self.epochs_.append(int(epoch))
        self.snapshots_.append(flat)
        self.train_loss_.append(float(loss))
        self.train_accuracy_.append(float(accuracy))

    def on_train_begin(self, net, **kwargs):
        # module.parameters() walks the module tree; once per fit call is enough
        self._params_ = list(net.module_.parameters())
        self._views_ = None
        if self.layer_slices_ is None:
            self._resolve_layers(net.module_)
        if self.include_initial and not self.snapshots_:
            self._snapshot(net, len(net.history), math.nan, math.nan)
            self._fill_initial_ = True

    def on_batch_end(self, net, batch=None, training=False, loss=None, y_pred=None, **kwargs):
        if not (self._fill_initial_ and training):
            return
        # the first training batch was evaluated at the initial parameters
        self._fill_initial_ = False
        if loss is not None:
            self.train_loss_[0] = float(loss.item())
        if isinstance(net, ClassifierMixin) and y_pred is not None:
            yb = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
            out = y_pred[0] if isinstance(y_pred, tuple) else y_pred
            if isinstance(yb, torch.Tensor) and out.ndim == 2 and yb.shape == out.shape[:1]:
                self.train_accuracy_[0] = float((out.argmax(1) == yb).float().mean().item())

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        epoch = row["epoch"]
        if epoch % self.every == 0:
            self._snapshot(net, epoch, row.get("train_loss", math.nan),
                           row.get("train_acc", math.nan))

    def _host_views(self):
        """Flat numpy views of the parameters when all are contiguous float32 on CPU, else None.

        Built once per fit; a snapshot is then one ``np.concatenate`` (a few
        microseconds instead of a few torch ops, which a 571-parameter net
        pays every epoch).  Rebuilt when a parameter's storage, shape or
        dtype changed.
        """
        params = self._params_
        key = [(p.data_ptr(), p.shape, p.dtype, p.is_contiguous()) for p in params]
        if self._views_ is None or self._views_[0] != key:
            usable = bool(params) and all(
                p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous()
                for p in params)
            views = [p.detach().numpy().reshape(-1) for p in params] if usable else None
            self._views_ = (key, views)
        return self._views_[1]

    def on_train_end(self, net, **kwargs):
        self._fill_initial_ = False
        self._params_ = None
        self._views_ = None

    def __getstate__(self):
        state = self.__dict__.copy()
        if "_views_" in state:
            state["_views_"] = None  # views of this process's parameters
        return state

    def _check_recorded(self):
        if not getattr(self, "snapshots_", None):
            raise NotFittedError("WeightTrace has no snapshots; fit a net with it first.")

    def to_array(self, layer=None):
        """Snapshots stacked as rows.

        Parameters
        ----------
        layer : str or None, default=None
            Restrict to one layer's columns (a key of ``layer_slices_``).

        Returns
        -------
        weights : ndarray of shape (n_snapshots, n_params) or (n_snapshots, layer_size)
        """
        self._check_recorded()
        weights = np.stack(self.snapshots_)
        if layer is None:
            return weights
        if layer not in self.layer_slices_:
            raise ValueError(f"Unknown layer {layer!r}; recorded layers are "
                             f"{list(self.layer_slices_)}.")
        return weights[:, self.layer_slices_[layer]]

    def to_frame(self):
        """One row per snapshot.

        Returns
        -------
        frame : pandas.DataFrame
            Columns ``epoch``, ``train_loss``, ``train_accuracy``.
        """
        self._check_recorded()
        return pd.DataFrame({
            "epoch": np.asarray(self.epochs_, dtype=int),
            "train_loss": np.asarray(self.train_loss_, dtype=float),
            "train_accuracy": np.asarray(self.train_accuracy_, dtype=float),
        })


class GradNormTrace(Callback):
    """Global L2 norm of the gradient at every optimizer step.

    The norm is taken over all learnable parameters together (what
    :func:`torch.nn.utils.clip_grad_norm_` would clip), after
    ``backward`` and before the optimizer step, so the gradient of
    iteration ``i`` is the one at the parameters reached after ``i`` steps.
    On an accelerator, norms and losses stay tensors on the device and are
    moved to the host in blocks of ``_BLOCK`` steps, at the end of training,
    or when an attribute is read (no device sync per step); on CPU they are
    read at once.

    Attributes
    ----------
    grad_norms_ : list of float
        Gradient norm per iteration.
    losses_ : list of float
        The batch loss of the same iteration (as in the history).
    epochs_ : list of int
        Epoch (from 1, as in the history) of each iteration.
    iterations_ : list of int
        Iteration index: 0-based count of optimizer steps since the net was
        initialized.

    Notes
    -----
    With optimizers that evaluate the loss several times per step (LBFGS),
    the first gradient of each step is recorded.  Records are reset when
    the net is initialized and continue across ``partial_fit`` calls.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralRegressor
    >>> from hw1sk.callbacks import GradNormTrace
    >>> X = np.linspace(-1, 1, 20)[:, None]; y = X[:, 0] ** 2
    >>> trace = GradNormTrace()
    >>> _ = NeuralRegressor(module__hidden=(4,), max_epochs=3, batch_size=10,
    ...                     callbacks=[trace], random_state=0).fit(X, y)
    >>> trace.iterations_, trace.epochs_
    ([0, 1, 2, 3, 4, 5], [1, 1, 2, 2, 3, 3])
    """

    _BLOCK = 1024  # pending steps moved to the host at once

    def initialize(self):
        self._records_ = {"grad_norms_": [], "losses_": [], "epochs_": [], "iterations_": []}
        self._pending_norms_ = []
        self._pending_losses_ = []
        self._pending_epochs_ = []
        self._awaiting_ = False
        self._on_cpu_ = False
        return self

    def _record(self, name):
        if not hasattr(self, "_records_"):
            raise AttributeError(f"GradNormTrace has no attribute {name!r} before it is "
                                 "initialized.")
        self._flush()
        return self._records_[name]

    grad_norms_ = property(lambda self: self._record("grad_norms_"),
                           doc="Gradient norm per iteration (list of float).")
    losses_ = property(lambda self: self._record("losses_"),
                       doc="Batch loss per iteration (list of float).")
    epochs_ = property(lambda self: self._record("epochs_"),
                       doc="Epoch of each iteration (list of int, from 1).")
    iterations_ = property(lambda self: self._record("iterations_"),
                           doc="0-based optimizer-step index (list of int).")

    def on_train_begin(self, net, **kwargs):
        self._on_cpu_ = hasattr(torch, "_foreach_norm") and all(
            p.device.type == "cpu" for p in net.module_.parameters())

    def on_batch_begin(self, net, training=False, **kwargs):
        self._awaiting_ = training

    def on_grad_computed(self, net, named_parameters, training=False, **kwargs):
        if not self._awaiting_:
            return
        self._awaiting_ = False
        grads = [p.grad for _, p in named_parameters if p.grad is not None]
        if grads and self._on_cpu_:
            # on CPU, combining the per-tensor norms in Python beats two more tensor ops
            norms = torch._foreach_norm(grads)
            self._pending_norms_.append(math.hypot(*[n.item() for n in norms]))
        else:
            self._pending_norms_.append(_host_or_pending(global_grad_norm(grads)))

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        # a loss belongs to the record only if its gradient norm was taken
        if training and len(self._pending_losses_) < len(self._pending_norms_):
            history = net.history
            try:  # skorch has just recorded ``loss.item()`` there: take that float
                value = list.__getitem__(history, -1)["batches"][-1].get("train_loss")
            except (IndexError, KeyError, TypeError, AttributeError):
                value = None
            if type(value) is not float:  # a loop that records no batch loss
                value = _host_or_pending(loss)
            self._pending_losses_.append(value)
            self._pending_epochs_.append(len(history))
            if len(self._pending_losses_) >= self._BLOCK:
                self._flush()

    def _flush(self):
        n = len(self._pending_losses_)  # complete steps (norm and loss)
        if not n:
            return
        records = self._records_
        records["grad_norms_"].extend(_as_floats(self._pending_norms_[:n]))
        records["losses_"].extend(_as_floats(self._pending_losses_))
        records["epochs_"].extend(self._pending_epochs_)
        start = records["iterations_"][-1] + 1 if records["iterations_"] else 0
        records["iterations_"].extend(range(start, start + n))
        del self._pending_norms_[:n]
        self._pending_losses_ = []
        self._pending_epochs_ = []

    def on_train_end(self, net, **kwargs):
        self._flush()
        self._pending_norms_ = []  # a step interrupted before its loss was reported

    def __getstate__(self):
        if hasattr(self, "_records_"):
            self._flush()
        return self.__dict__.copy()

    def to_frame(self):
        """One row per iteration.

        Returns
        -------
        frame : pandas.DataFrame
            Columns ``iteration``, ``epoch``, ``grad_norm``, ``loss``.
        """
        if not getattr(self, "iterations_", None):
            raise NotFittedError("GradNormTrace has no records; fit a net with it first.")
        return pd.DataFrame({
            "iteration": np.asarray(self.iterations_, dtype=int),
            "epoch": np.asarray(self.epochs_, dtype=int),
            "grad_norm": np.asarray(self.grad_norms_, dtype=float),
            "loss": np.asarray(self.losses_, dtype=float),
        })


_CURVATURE_QUANTITIES = ("top", "trace")
_SCHEDULES = ("linear", "log")


def _check_positive_int(value, name):
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _take(a, index):
    """Rows ``index`` of an array or tensor."""
    if isinstance(a, torch.Tensor):
        return a[torch.as_tensor(index, device=a.device)]
    if hasattr(a, "iloc"):
        return a.iloc[index].to_numpy()
    return np.asarray(a)[index]


class CurvatureTrace(Callback):
    """Top Hessian eigenvalue and Hessian trace at chosen epochs of training.

    At the end of each chosen epoch, the loss Hessian of the net's module
    and loss (``net.get_loss``, i.e. the training criterion) on a fixed
    subset of the training data gives

    - ``"top"``: its largest eigenvalue,
      :func:`hw1sk.curvature.top_hessian_eigenvalues` (``k=1``, Lanczos,
      at most ``max_iter`` products);
    - ``"trace"``: its trace and the standard error,
      :func:`hw1sk.stochastic_curvature.hessian_trace` (``trace_method``,
      ``n_matvecs`` products for the stochastic methods).

    With ``trace_method="auto"`` the trace of a chain of Linear layers and
    elementwise activations (an :class:`~hw1sk.models.MLP`, what
    ``module__hidden`` builds, or a plain :class:`torch.nn.Sequential` of
    them) with a per-sample loss is exact, in closed form, whatever the
    size of the net (standard error 0, no Hessian-vector products).  For
    any other module (BatchNorm, convolutions, a custom ``forward``) of more
    than 2,000 parameters, when both are measured, they share one Lanczos
    run, :func:`hw1sk.stochastic_curvature.hessian_top_eigenvalue_and_trace`:
    its ``max_iter`` products give the top eigenvalue and a Krylov space on
    which the trace is exact, and ``n_matvecs`` probes of the complement
    estimate the rest of the trace, with its standard error.

    Training is not changed: the module is evaluated in eval mode (its
    flags restored), through functional calls that leave no ``.grad``
    behind, and the random numbers (subset, Lanczos start, trace probes)
    come from the callback's own generators, never torch's or numpy's
    global ones.

    Parameters
    ----------
    every : int, default=1
        ``schedule="linear"``: measure at epochs ``e`` with ``e % every == 0``.
        ``schedule="log"``: measure at epochs ``every * 2**k`` (1, 2, 4, 8, ...
        for ``every=1``).
    schedule : {"linear", "log"}, default="linear"
    quantities : tuple of {"top", "trace"}, default=("top", "trace")
        What to measure; the other records hold NaN.
    X, y : array-like or tensor, optional
        Data to draw the subset from; by default the data passed to ``fit``
        (as the net received it, after its own checks).
    n_samples : int, default=512
        Size of the subset, drawn once without replacement (all samples
        when there are fewer) and kept for the whole of training.
    n_matvecs : int, optional
        Hessian-vector products of the stochastic trace estimate beyond
        those shared with the top eigenvalue.  By default 10 for the shared
        estimate, 30 otherwise; unused when the trace is exact.
    max_iter : int, default=20
        Lanczos products for the top eigenvalue.
    random_state : int, RandomState or None, default=None
        The subset and the seeds of each measurement (recorded in
        ``seeds_``).  None: fresh entropy, not reproducible.
    trace_method : {"auto", "hutch++", "krylov", "hutchinson", "exact"}, default="auto"
        ``"auto"``: for a Linear/activation chain with a per-sample loss,
        the closed-form exact trace (with the top eigenvalue, whatever the
        size; alone, as ``method="auto"`` of
        :func:`~hw1sk.stochastic_curvature.hessian_trace` chooses it: when
        its work is at most that of 2,000 products, i.e. layers narrower
        than about 6,000 units).  Any other module: exact up to 2,000
        parameters; above, the estimate shared with the top eigenvalue when
        it is measured too, else Hutch++.  Any other value: ``method`` of
        :func:`~hw1sk.stochastic_curvature.hessian_trace`, with products of
        its own.
    bn_mode : {"eval", "train-batch"}, default="eval"
        BatchNorm on its running statistics, or on the subset's (without
        updating the running statistics), as in
        :func:`~hw1sk.stochastic_curvature.hessian_trace`.

    Attributes
    ----------
    epochs_ : list of int
        Epochs measured (from 1, as in the history).
    top_ : list of float
        Largest Hessian eigenvalue.
    trace_ : list of float
        Hessian trace (estimate).
    trace_std_error_ : list of float
        Its standard error (0 for the exact trace).
    seeds_ : list of int
        Seed given to both functions (``random_state``) at each measurement.
    seconds_ : list of float
        Wall-clock seconds each measurement took.
    indices_ : ndarray of int
        Rows of the data in the subset.

    Notes
    -----
    Records are reset when the net is initialized and continue across
    ``partial_fit`` calls, with the same subset.  Each measurement costs
    ``max_iter`` Hessian-vector products on ``n_samples`` samples for the top
    eigenvalue and, for a Linear/activation chain, the closed-form trace
    (about ``sum_m w_m w_{m-1} (w_m + w_{m-1})`` operations per sample over
    the layers after the first, ``w_m`` their widths: 2.5 products' worth
    for an MLP 784-128-64-10); any other module of more than 2,000
    parameters ``max_iter + n_matvecs`` products (30 with the defaults).  On
    MNIST (MLP 784-128-64-10, batch 128, 60,000 images, one thread;
    ``benchmarks/bench_curvature_trace.py``) one measurement takes 0.11-0.15 s
    of CPU time in isolation, against 0.16-0.22 s for the shared Krylov
    estimate (whose standard error is about 2% of the trace), and one
    measurement per epoch adds 10-16% to the training time (CPU time; 1.10
    and 1.16 measured, 1.30 once on a loaded machine where the fits alone
    varied by 40%; the shared estimate measured 1.10 and 1.15).

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralRegressor
    >>> from hw1sk.callbacks import CurvatureTrace
    >>> X = np.linspace(-1, 1, 20, dtype=np.float32)[:, None]; y = X[:, 0] ** 2
    >>> trace = CurvatureTrace(schedule="log", random_state=0)
    >>> _ = NeuralRegressor(module__hidden=(4,), max_epochs=10, batch_size=-1,
    ...                     callbacks=[trace], random_state=0).fit(X, y)
    >>> trace.epochs_
    [1, 2, 4, 8]
    """

    def __init__(self, every=1, schedule="linear", quantities=("top", "trace"), X=None, y=None,
                 n_samples=512, n_matvecs=None, max_iter=20, random_state=None,
                 trace_method="auto", bn_mode="eval"):
        self.every = every
        self.schedule = schedule
        self.quantities = quantities
        self.X = X
        self.y = y
        self.n_samples = n_samples
        self.n_matvecs = n_matvecs
        self.max_iter = max_iter
        self.random_state = random_state
        self.trace_method = trace_method
        self.bn_mode = bn_mode

    def initialize(self):
        _check_positive_int(self.every, "every")
        _check_positive_int(self.n_samples, "n_samples")
        if self.n_matvecs is not None:
            _check_positive_int(self.n_matvecs, "n_matvecs")
        _check_positive_int(self.max_iter, "max_iter")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}.")
        quantities = ((self.quantities,) if isinstance(self.quantities, str)
                      else tuple(self.quantities))
        bad = [q for q in quantities if q not in _CURVATURE_QUANTITIES]
        if bad or not quantities:
            raise ValueError(f"quantities must be a non-empty subset of "
                             f"{_CURVATURE_QUANTITIES}, got {self.quantities!r}.")
        if (self.X is None) != (self.y is None):
            raise ValueError("give both X and y, or neither (the fit data is used).")
        from ._inputs import check_bn_mode

        check_bn_mode(self.bn_mode)
        self._quantities_ = quantities
        self.epochs_ = []
        self.top_ = []
        self.trace_ = []
        self.trace_std_error_ = []
        self.seeds_ = []
        self.seconds_ = []
        self.indices_ = None
        self._subset_ = None
        # a private generator: RandomState(None) draws OS entropy, not numpy's global state
        rs = self.random_state
        self._rng_ = (np.random.RandomState(np.random.SeedSequence().generate_state(1)[0])
                      if rs is None else
                      rs if isinstance(rs, np.random.RandomState) else np.random.RandomState(rs))
        return self

    def _is_scheduled(self, epoch):
        if epoch < 1 or epoch % self.every:
            return False
        if self.schedule == "linear":
            return True
        q = epoch // self.every
        return q & (q - 1) == 0

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        if self._subset_ is not None:
            return
        if self.X is not None:
            fit_y = y
            X, y = self.X, self.y
            if fit_y is not None and np.ndim(fit_y) == 2 and np.ndim(y) == 1:
                y = y.reshape(-1, 1)  # the shape the net gave its own targets
        if X is None or y is None:
            raise ValueError("CurvatureTrace needs X and y: give them to the callback or to fit.")
        n = len(X)
        if len(y) != n:
            raise ValueError(f"X and y have different lengths ({n} and {len(y)}).")
        if self.n_samples >= n:
            index = np.arange(n)
        else:
            index = np.sort(self._rng_.choice(n, self.n_samples, replace=False))
        self.indices_ = index
        self._subset_ = (_take(X, index), _take(y, index))

    def on_epoch_end(self, net, **kwargs):
        epoch = net.history[-1]["epoch"]
        if self._is_scheduled(epoch):
            self._measure(net, epoch)

    def _measure(self, net, epoch):
        import time

        from .curvature import top_hessian_eigenvalues
        from .stochastic_curvature import hessian_top_eigenvalue_and_trace, hessian_trace

        module = net.module_
        X, y = self._subset_

        def criterion(output, target):
            return net.get_loss(output, target)

        start = time.perf_counter()
        seed = int(self._rng_.randint(np.iinfo(np.int32).max))
        dtype = next(module.parameters()).dtype
        top = trace = error = math.nan
        shared = (self.trace_method == "auto" and len(self._quantities_) == 2
                  and sum(p.numel() for p in module.parameters()) > 2000)
        if shared:  # one Lanczos run for both: its Krylov space deflates the trace
            top, est = hessian_top_eigenvalue_and_trace(  # exact trace for a chain (MLP)
                module, criterion, X, y, n_iter=self.max_iter,
                n_probes=10 if self.n_matvecs is None else max(self.n_matvecs, 2),
                random_state=seed, bn_mode=self.bn_mode, method="auto")
            trace, error = float(est.value), float(est.std_error)
        if "top" in self._quantities_ and not shared:
            top = float(top_hessian_eigenvalues(
                module, criterion, X, y, k=1, max_iter=self.max_iter, random_state=seed,
                dtype=dtype, bn_mode=self.bn_mode)[-1])
        if "trace" in self._quantities_ and not shared:
            est = hessian_trace(module, criterion, X, y, method=self.trace_method,
                                n_matvecs=30 if self.n_matvecs is None else self.n_matvecs,
                                random_state=seed, bn_mode=self.bn_mode)
            trace, error = float(est.value), float(est.std_error)
        self.epochs_.append(int(epoch))
        self.seeds_.append(seed)
        self.top_.append(top)
        self.trace_.append(trace)
        self.trace_std_error_.append(error)
        self.seconds_.append(time.perf_counter() - start)

    def to_frame(self):
        """One row per measurement.

        Returns
        -------
        frame : pandas.DataFrame
            Columns ``epoch``, ``top_eigenvalue``, ``trace``, ``trace_std_error``,
            ``seconds``.
        """
        if not getattr(self, "epochs_", None):
            raise NotFittedError("CurvatureTrace has no records; fit a net with it first.")
        return pd.DataFrame({
            "epoch": np.asarray(self.epochs_, dtype=int),
            "top_eigenvalue": np.asarray(self.top_, dtype=float),
            "trace": np.asarray(self.trace_, dtype=float),
            "trace_std_error": np.asarray(self.trace_std_error_, dtype=float),
            "seconds": np.asarray(self.seconds_, dtype=float),
        })
