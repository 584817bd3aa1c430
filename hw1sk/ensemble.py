"""SeedEnsemble: many seeds of one estimator trained in one vectorized pass.

A study that repeats a fit over seeds (the spread of the minimal ratio, of
the final loss, of the trajectory) spends most of its time in the per-step
overhead of a small network.  :class:`SeedEnsemble` trains the seeds' copies
of the network together, one step for all seeds at a time, by one of two
passes:

* ``"batched"`` (:class:`hw1sk.batched_modules.BatchedNetwork`): for
  :class:`~hw1sk.models.MLP`, :class:`~hw1sk.models.CNN` and
  ``nn.Sequential`` stacks of Linear, Conv2d, pooling, Flatten and
  elementwise activations.  The seeds' parameters are one ``(n_seeds,
  n_params)`` tensor; a Linear layer is one batched matrix product, a
  convolution one grouped convolution; ordinary autograd of the sum of the
  seeds' losses gives each seed its own gradient; the functional optimizer
  (:mod:`hw1sk.functional_optim`) updates the one tensor in a few
  elementwise operations.
* ``"vmap"``: any other module that :func:`torch.func.vmap` can batch, with
  :func:`torch.func.stack_module_state` and :func:`torch.func.grad` of
  :func:`torch.func.functional_call`;
* ``"per-seed"`` (``rounding="loop"``): each seed's forward and backward pass
  on its own tensors (:func:`torch.func.functional_call` on its slice of the
  stacked parameters), so that every seed rounds exactly as its own fit; the
  optimizer step stays one elementwise pass over all seeds.

Every seed gets exactly what its own fit would get: the initial weights of
``clone(estimator).set_params(random_state=seed)`` (built by that clone's
``initialize``), the batches of that clone's shuffle generator in the same
order, the estimator's criterion, optimizer, ``lr``, ``max_epochs``,
``batch_size`` and ``divergence_factor`` rule.  After training the seeds are
ordinary fitted estimators, in ``estimators_`` (:func:`fit_seeds` returns
just those).

Speed (``benchmarks/bench_seed_ensemble.py``, one thread, against the loop of
separate fits in the same process): vectorizing pays where a seed's step is
bound by per-step overhead -- the narrow 571-parameter networks of depth 4
and 7 -- and less where the loop already runs near the machine's rate: the
MNIST MLP's loop spends its time in MKL matrix products of 128 x 784 x 64
(about half a large matmul's rate).  The 1-190-1 network never forms its
190-wide activations on a full batch: it runs by prefix sums along the sorted
samples (:attr:`~hw1sk.batched_modules.BatchedNetwork.one_input_relu`), all
seeds in one chunk.  See the benchmark's output for the figures.
"""

from __future__ import annotations

import math
import time
import warnings
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, clone
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
import torch.nn.functional as F
from torch import nn

from .batched_modules import BatchedNetwork, batched_loss, batched_loss_and_grad
from .callbacks import GradNormTrace, WeightTrace
from .estimators import DivergenceWarning, TensorBatchIterator, TrainingHistory
from .evaluation import HeldOutScore, check_predict_X, encode_targets
from .functional_optim import functional_optimizer
from .seeding import as_seed
from .ensemble_stops import (STOPPING_CALLBACKS, SeedStops, epoch_rows, epoch_scores,
                             stop_obstacle)
from .training_callbacks import DivergenceCheck, EpochScores

__all__ = ["SeedEnsemble", "fit_seeds"]

#: Memory (bytes) that ``chunk_size="auto"`` lets one chunk of seeds use.
AUTO_CHUNK_BUDGET = 1 << 30
#: Activations (bytes) of one step of a chunk that ``chunk_size="auto"`` aims
#: to keep in the CPU's last-level cache on the batched pass: wide layers are
#: bound by memory traffic, and a chunk whose step fits in the cache trains
#: faster than all seeds at once (``benchmarks/bench_seed_ensemble.py``: 100
#: seeds of the 1-1 MNIST CNN).  Not applied to the one-input ReLU network of one
#: hidden layer (1-190-1), whose pass streams its mask: 32 seeds of 1-190-1, 200
#: epochs at one thread, 1.57 s in chunks of 8, 1.35 s of 16, 1.18 s in one chunk.
AUTO_CHUNK_CACHE = 16 << 20

_DEFAULT_N_SEEDS = 5
# callbacks whose effect on a fit the vectorized pass reproduces
_REPLAYED_CALLBACKS = (EpochScores, DivergenceCheck, WeightTrace, GradNormTrace, HeldOutScore)
#: Callback classes whose effect the vectorized pass reproduces (the stopping ones per seed,
#: :mod:`hw1sk.ensemble_stops`); any other callback makes SeedEnsemble fit the seeds one by one.
REPLAYED_CALLBACKS = _REPLAYED_CALLBACKS + STOPPING_CALLBACKS
_FUNCTIONAL_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD,
                          torch.optim.RMSprop)
# layers that keep state across calls (running statistics) or draw random numbers
_UNVECTORIZABLE = (nn.modules.batchnorm._BatchNorm, nn.RNNBase)


def _functional_optimizer_of(net, rounding="batched"):
    """The functional version of ``net``'s optimizer, with its ``lr`` and ``optimizer__*``.

    ``rounding="loop"``: Adam and AdamW in torch's single-tensor order (not
    the fused kernel, which rounds an update differently by an ulp), as the
    loop's ``torch.optim.Adam`` runs on the CPU, unless ``optimizer__fused``
    is set.
    """
    kwargs = net.get_params_for("optimizer")
    kwargs.setdefault("lr", net.lr)
    if rounding == "loop" and net.optimizer in (torch.optim.Adam, torch.optim.AdamW):
        kwargs.setdefault("fused", False)
    return functional_optimizer(net.optimizer, **kwargs)


def _obstacle(net, X):
    """Why ``net`` (initialized) cannot be trained in the vectorized pass, or None."""
    for name, layer in net.module_.named_modules():
        if isinstance(layer, _UNVECTORIZABLE):
            return (f"the module's layer {name!r} ({type(layer).__name__}) keeps state "
                    "across calls, which torch.func.vmap cannot batch")
        if isinstance(layer, nn.modules.dropout._DropoutNd) and layer.p > 0:
            return (f"the module's layer {name!r} ({type(layer).__name__}) draws random "
                    "numbers from torch's global generator, which a vectorized pass "
                    "cannot reproduce")
    if net.train_split is not None:
        return "train_split is set (the vectorized pass has no validation split)"
    if not isinstance(X, (np.ndarray, torch.Tensor)):  # X as the copy's own checks left it
        return "X is a dataset or a dict, not an in-memory array"
    if not (isinstance(net.iterator_train, type)
            and issubclass(net.iterator_train, TensorBatchIterator)):
        return "iterator_train is not a TensorBatchIterator"
    if isinstance(net.criterion_, nn.NLLLoss):
        return "criterion NLLLoss (skorch decides on the first batch how to apply it)"
    if net.optimizer not in _FUNCTIONAL_OPTIMIZERS:
        return (f"optimizer {getattr(net.optimizer, '__name__', net.optimizer)!r} has no "
                "functional version (Adam, AdamW, SGD, RMSprop have)")
    try:
        _functional_optimizer_of(net)
    except (TypeError, ValueError) as exc:  # an option it does not implement (amsgrad)
        return f"the functional optimizer does not support these options ({exc})"
    others = [name for name, cb in net.callbacks_ if not isinstance(cb, REPLAYED_CALLBACKS)
              and name not in ("epoch_timer", "print_log")]
    if others:
        return (f"callbacks {others} are not replayed by the vectorized pass (only "
                "WeightTrace, GradNormTrace, HeldOutScore, PlateauStopping and "
                "TargetLossStopping are)")
    every_epoch = [f"{cb.name}_{key}" for _, cb in net.callbacks_
                   if isinstance(cb, HeldOutScore) and cb.every == 1 for key in ("loss", "acc")]
    return stop_obstacle(net, every_epoch)


class SeedEnsemble(BaseEstimator):
    """One hw1sk estimator fitted once per seed, all seeds in one vectorized pass.

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor
        The (unfitted) template; it is cloned, never changed.  Each seed's
        copy is ``clone(estimator).set_params(random_state=seed)``.
    seeds : array-like of int or None, default=None
        The ``random_state`` of each copy.  None: ``range(n_seeds)``.
    n_seeds : int or None, default=None
        Number of seeds when ``seeds`` is None (None: 5).
    chunk_size : int or "auto", default="auto"
        Seeds trained together; chunks run one after another and give the
        same results as one chunk up to rounding (a seed's block of a
        batched product can round differently at another offset in
        memory).  ``"auto"`` bounds the memory of a chunk: the seeds'
        stacked parameters, gradients, optimizer state and the activations
        of one batch (kept for the backward pass, and their gradients) stay
        within :data:`AUTO_CHUNK_BUDGET` bytes (1 GiB); on the batched pass,
        the activations of one step also stay within :data:`AUTO_CHUNK_CACHE`
        (16 MiB, half a last-level cache), except for a ``Linear(1, H) -
        ReLU - Linear(H, O)`` network, which forms no such activations on
        a full batch, streams one mask per step on mini-batches, and trains
        fastest in one chunk
        (:attr:`~hw1sk.batched_modules.BatchedNetwork.one_input_relu`).  The
        seeds are then split into chunks of equal size.
    vectorize : bool, default=True
        False fits the copies one after another (``clone(...).fit``).  The
        loop is also used, with a ``UserWarning`` saying why, when the
        vectorized pass cannot reproduce the fit: stateful or random layers
        (BatchNorm, RNNs, Dropout), a ``train_split``, callbacks other than
        the defaults, WeightTrace, GradNormTrace, HeldOutScore,
        PlateauStopping and TargetLossStopping (these two stop each seed on
        its own, :mod:`hw1sk.ensemble_stops`; not with ``load_best=True``, or
        a monitored key the pass does not record every epoch), an
        optimizer without a functional version, data that are not a numeric
        array, a module that ``torch.func.vmap`` rejects on a trial step,
        or HeldOutScore with a module that only the ``"vmap"`` pass runs.
    rounding : {"batched", "loop"}, default="batched"
        ``"batched"``: the fastest pass (``"batched"`` or ``"vmap"``), whose
        batched products round differently from a separate fit's (see
        Notes).  ``"loop"``: the ``"per-seed"`` pass, which runs each seed's
        forward and backward pass on its own tensors, with the module's own
        operations in the layouts of a separate fit, and Adam in torch's
        single-tensor order; each seed's losses, gradients and weights are
        then those of its own fit, bit for bit (tested: 200 full-batch steps
        of the 571-parameter depth-4 fit, mini-batches of a classifier with
        SGD, Adam and RMSprop, a CNN).  Several times slower than
        ``"batched"``, and still faster than the loop: 1.4x to 1.9x on the
        571-parameter fits of depth 1, 4 and 7, against 5.5x to 8.6x for
        ``"batched"`` (``benchmarks/bench_seed_ensemble.py --cases
        loop-rounding``, one thread, 200 epochs).
        Held-out scores (HeldOutScore) are computed on the stacked outputs and
        agree with the loop's up to rounding.

    Attributes
    ----------
    estimators_ : list of NeuralClassifier or NeuralRegressor
        The fitted copy of each seed, in the order of ``seeds_``
        (``predict``, ``score``, pickling as usual); its ``history_`` has
        the columns of the loop's: ``epoch``, ``train_loss`` (the
        sample-weighted mean of the epoch's batch losses), ``train_acc``
        (classifiers), their ``*_best`` flags, ``train_batch_count``,
        ``dur`` (the wall time of the epoch of its chunk), ``diverged``, and
        ``<name>_loss`` / ``<name>_acc`` of each
        :class:`~hw1sk.evaluation.HeldOutScore` callback (every ``every``-th
        epoch, from all seeds' outputs on the held-out set in one batched
        pass); its WeightTrace and GradNormTrace callbacks hold their
        records.  ``diverged_`` and ``divergence_reason_`` are set as the
        seed's own fit sets them.  The optimizer state is not carried over
        (``optimizer_`` is freshly initialized).
    seeds_ : list of int
    diverged_seeds_ : list of int
        Seeds whose training diverged (the estimator's ``divergence_factor``
        rule: a NaN/inf batch loss, or one above ``divergence_factor`` times
        the first); each stopped after its diverged batch, as its fit would
        (masked: its parameters and optimizer state frozen), while the other
        seeds went on.  One :class:`~hw1sk.estimators.DivergenceWarning`
        names them with their reasons.
    vectorized_ : bool
        Whether a vectorized pass was used.
    pass_ : {"batched", "vmap", "per-seed", "loop"}
        Which pass trained the seeds.
    fallback_reason_ : str or None
        Why the loop was used instead, if it was.
    chunk_size_ : int
        Seeds per chunk that were trained together.

    Notes
    -----
    Data are checked and converted by each copy, as its ``fit`` would, then
    cast to the dtype of the module's parameters (so a float64 module trains
    in float64).  Results agree with the loop of fits up to floating-point
    rounding (batched matrix products may round differently); initial
    weights and batch order are identical.

    How close that is depends on the dtype and on how much training
    amplifies rounding.  In float64 the training losses agree with the loop's
    to 1e-9 relative after 200 full-batch steps (tested for Adam and SGD
    with momentum, depth 1 to 4).  In float32 they agree to 1e-4 on
    well-conditioned fits (tested: 1-16-1 MLPs, Adam and SGD).  Adam,
    however, amplifies the last bits of a gradient. On the 571-parameter
    function fits of depth 4 and 7, a few of 32 seeds differ from the loop by
    up to about 4e-3 at epoch 200, and by up to 10% after 2,000 epochs.  That is
    float32 rounding, not an error of either side: the float32 loop differs
    from float64 training from the same weights by as much (4.3e-3, against
    1.3e-3 for the ensemble; ``benchmarks/bench_seed_ensemble.py
    --float64-reference``), and the loop itself, run on the same rows in
    reverse order (the same loss, summed in another order), leaves the 1e-4
    band for one of 32 seeds at epoch 200 at depth 4 and at depth 7
    (``--cases loop-rounding``).  Train a float64 module when the runs must match
    separate fits to more digits, or pass ``rounding="loop"``: each seed then
    rounds as its own fit does.

    See Also
    --------
    fit_seeds : the fitted estimators of a list of seeds, in one call.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralRegressor
    >>> from hw1sk.ensemble import SeedEnsemble
    >>> X = np.linspace(-1, 1, 40)[:, None]; y = np.sin(3 * X[:, 0])
    >>> est = NeuralRegressor(module__hidden=(8,), batch_size=-1, max_epochs=5)
    >>> ens = SeedEnsemble(est, n_seeds=3).fit(X, y)
    >>> len(ens.estimators_), ens.history_["seed"].unique().tolist(), ens.pass_
    (3, [0, 1, 2], 'batched')
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "initialize"])],
        "seeds": ["array-like", None],
        "n_seeds": [Interval(Integral, 1, None, closed="left"), None],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "vectorize": ["boolean"],
        "rounding": [StrOptions({"batched", "loop"})],
    }

    def __init__(self, estimator, seeds=None, n_seeds=None, chunk_size="auto", vectorize=True,
                 rounding="batched"):
        self.estimator = estimator
        self.seeds = seeds
        self.n_seeds = n_seeds
        self.chunk_size = chunk_size
        self.vectorize = vectorize
        self.rounding = rounding

    # ------------------------------------------------------------------ fit
    def fit(self, X, y):
        """Fit one copy of ``estimator`` per seed.

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, ...)
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)

        Returns
        -------
        self
        """
        self._validate_params()
        seeds = self._resolve_seeds()
        self.seeds_ = seeds
        self.fallback_reason_ = None
        first = self._initialized_copy(seeds[0], X, y)
        reason = None if self.vectorize else "vectorize=False"
        if reason is None:
            reason = _obstacle(first[0], first[1])
        self.pass_ = "loop"
        if reason is None:
            self.pass_, reason = self._trial_step(first)
        if reason is None:
            self.chunk_size_ = (self._auto_chunk_size(first, len(seeds))
                                if self.chunk_size == "auto" else min(self.chunk_size,
                                                                      len(seeds)))
        if reason is not None:
            if self.vectorize:
                warnings.warn(f"SeedEnsemble fits the seeds one by one: {reason}.",
                              UserWarning, stacklevel=2)
            self.vectorized_ = False
            self.pass_ = "loop"
            self.fallback_reason_ = reason
            self.chunk_size_ = 1
            self.estimators_ = [clone(self.estimator).set_params(random_state=s).fit(X, y)
                                for s in seeds]
        else:
            self.vectorized_ = True
            self.estimators_ = []
            for start in range(0, len(seeds), self.chunk_size_):
                chunk = seeds[start:start + self.chunk_size_]
                # every copy checks the data as its fit would; the first copy's are used
                nets = [first[0] if (start == 0 and i == 0) else
                        self._initialized_copy(s, X, y)[0] for i, s in enumerate(chunk)]
                _train_chunk(nets, first[1], first[2], kind=self.pass_,
                             eval_budget=AUTO_CHUNK_BUDGET, rounding=self.rounding)
                self.estimators_.extend(nets)
        self.diverged_seeds_ = [s for s, est in zip(seeds, self.estimators_) if est.diverged_]
        if self.vectorized_ and self.diverged_seeds_:
            reasons = "; ".join(f"seed {s}: {est.divergence_reason_}"
                                for s, est in zip(seeds, self.estimators_) if est.diverged_)
            warnings.warn(f"SeedEnsemble: {reasons}; those seeds stopped training "
                          "(diverged_seeds_).", DivergenceWarning, stacklevel=2)
        return self

    def _resolve_seeds(self):
        if self.seeds is not None:
            seeds = [as_seed(int(s)) for s in np.asarray(self.seeds).ravel()]
            if not seeds:
                raise ValueError("seeds must hold at least one seed.")
            if len(set(seeds)) != len(seeds):
                raise ValueError(f"seeds must be distinct, got {seeds}.")
            return seeds
        return list(range(self.n_seeds if self.n_seeds is not None else _DEFAULT_N_SEEDS))

    def _initialized_copy(self, seed, X, y):
        """``(copy, X, y)``: the seed's copy checked and initialized as its ``fit`` would."""
        net = clone(self.estimator).set_params(random_state=seed)
        net._check_params()
        Xc, yc = net._validate_training_data(X, y, reset=True)
        net.initialize()
        return net, Xc, yc

    def _auto_chunk_size(self, first, n_seeds):
        net, X, _ = first
        module = net.module_
        param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
        # live per seed: parameters, gradients, optimizer state (<= 2), new parameters
        per_seed = 6 * param_bytes
        batch = len(X) if net.batch_size == -1 else min(net.batch_size, len(X))
        numel = [_activation_numel(net, X)]
        itemsize = next(module.parameters()).element_size()
        # activations kept for backward and their gradients; the gathered batch
        per_seed += batch * itemsize * (3 * numel[0] + int(np.prod(X.shape[1:])))
        largest = int(max(1, min(n_seeds, AUTO_CHUNK_BUDGET // max(per_seed, 1))))
        if self.pass_ == "batched" and not BatchedNetwork(module).one_input_relu:
            step_bytes = batch * itemsize * numel[0]
            largest = int(max(1, min(largest, AUTO_CHUNK_CACHE // max(step_bytes, 1))))
        # chunks of equal size: 32 seeds at most 10 per chunk are 4 chunks of 8
        n_chunks = -(-n_seeds // largest)
        return -(-n_seeds // n_chunks)

    def _trial_step(self, first):
        """``(pass, None)`` for the first pass whose gradient of two samples works, else
        ``("loop", why not)``: the batched pass, then torch.func's vmap."""
        net, X, y = first
        X, y = X[:2], y[:2]  # a trial on two samples
        if self.rounding == "loop":
            try:
                _trial(_PerSeedTrainer, net, X, y)
            except Exception as exc:  # what functional_call refuses is reported
                return "loop", (f"torch.func.functional_call could not run the module "
                                f"({type(exc).__name__}: {exc})")
            return "per-seed", None
        try:
            _trial(_BatchedTrainer, net, X, y)
            return "batched", None
        except Exception:  # a module or criterion the batched pass does not run
            pass
        held_out = [name for name, cb in net.callbacks_ if isinstance(cb, HeldOutScore)]
        try:
            _trial(_VmapTrainer, net, X, y)
        except Exception as exc:  # what vmap refuses is reported, not raised
            return "loop", (f"torch.func could not vectorize the module "
                            f"({type(exc).__name__}: {exc})")
        if held_out:
            return "loop", (f"HeldOutScore callbacks {held_out} are replayed by the batched "
                            "pass only, which does not run this module")
        return "vmap", None

    # -------------------------------------------------------------- results
    @property
    def history_(self):
        """Every seed's ``history_`` in one DataFrame, with a ``seed`` column first."""
        check_is_fitted(self, "estimators_")
        frames = []
        for seed, est in zip(self.seeds_, self.estimators_):
            frame = est.history_.copy()
            frame.insert(0, "seed", seed)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


def fit_seeds(estimator, X, y, seeds, *, chunk_size="auto", vectorize=True,
              rounding="batched"):
    """Fit ``clone(estimator).set_params(random_state=s)`` for each seed, together.

    What a loop of separate fits gives (see :class:`SeedEnsemble`), in one
    vectorized pass where the estimator allows it.

    Parameters
    ----------
    estimator : NeuralClassifier or NeuralRegressor
        The unfitted template (not changed).
    X, y : array-like
    seeds : sequence of int
        Distinct ``random_state`` values.
    chunk_size, vectorize, rounding
        As in :class:`SeedEnsemble`.

    Returns
    -------
    estimators : list of NeuralClassifier or NeuralRegressor
        One ordinary fitted estimator per seed, in the order of ``seeds``;
        a seed whose training diverged has ``diverged_`` True and its
        ``divergence_reason_`` (its training stopped, the others went on).

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralRegressor
    >>> from hw1sk.ensemble import fit_seeds
    >>> X = np.linspace(-1, 1, 40)[:, None]; y = np.sin(3 * X[:, 0])
    >>> est = NeuralRegressor(module__hidden=(8,), batch_size=-1, max_epochs=5)
    >>> fitted = fit_seeds(est, X, y, seeds=[3, 7])
    >>> [f.random_state for f in fitted], [f.diverged_ for f in fitted]
    ([3, 7], [False, False])
    """
    return SeedEnsemble(estimator, seeds=list(seeds), chunk_size=chunk_size,
                        vectorize=vectorize, rounding=rounding).fit(X, y).estimators_


class _Trainer:
    """The stacked state of a chunk of initialized copies: data, loss, gradient, outputs."""

    def _setup_data(self, template, X, y):
        X = torch.as_tensor(X).to(device=self.device)
        self.X = X.to(self.dtype) if X.is_floating_point() else X
        y = torch.as_tensor(y).to(device=self.device)
        self.y = y.to(self.dtype) if y.is_floating_point() else y
        self.criterion = template.criterion_
        self.criterion.train(True)
        self.classifier = not self.y.is_floating_point()

    def gather(self, idx):
        """Each seed's batch: ``(X[idx[s]], y[idx[s]])`` stacked."""
        return self.X[idx], self.y[idx]

    def flat(self, params):
        """The seeds' parameters as rows of a CPU float32 ``(n_seeds, n_params)`` tensor."""
        return torch.cat([p.detach().reshape(p.shape[0], -1) for p in params.values()],
                         1).to(device="cpu", dtype=torch.float32)

    def grad_norms(self, grads):
        return torch.stack([g.detach().reshape(g.shape[0], -1).pow(2).sum(1)
                            for g in grads.values()]).sum(0).sqrt()

    @torch.no_grad()
    def evaluate(self, params, X, y, batch_size):
        """Each seed's ``(loss, accuracy)`` on ``(X, y)``, as :func:`evaluate_module` does."""
        n = X.shape[0]
        total, n_correct = 0.0, 0
        classify = not y.is_floating_point() and y.ndim == 1
        for start in range(0, n, batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            out = self.outputs(params, xb)
            columns = classify and out.ndim == 3 and out.shape[2] > 1
            total = total + batched_loss(self.criterion, out, yb, True).to(
                torch.float64) * xb.shape[0]
            if columns:
                n_correct = n_correct + (out.argmax(-1) == yb).sum(1)
            else:
                classify = False
        loss = total / n
        accuracy = (n_correct / n if classify else torch.full_like(loss, math.nan))
        return loss, accuracy


class _BatchedTrainer(_Trainer):
    """The fast path: :class:`~hw1sk.batched_modules.BatchedNetwork`, one flat parameter tensor."""

    name = "batched"

    def __init__(self, nets, X, y):
        template = nets[0]
        module = template.module_
        self.network = BatchedNetwork(module)
        flat = self.network.stack_parameters([n.module_ for n in nets])
        self.params = {"flat": flat}
        self.device, self.dtype = flat.device, flat.dtype
        self.n_seeds = flat.shape[0]
        self._setup_data(template, X, y)
        self._no_correct = torch.zeros(self.n_seeds, dtype=torch.long, device=self.device)
        self._gather_buffers = {}

    def gather(self, idx):
        """Each seed's batch; the samples are written into a buffer kept per batch
        shape (the previous step's graph, which held it, is freed by then)."""
        buf = self._gather_buffers.get(tuple(idx.shape))
        if buf is None:
            buf = self.X.new_empty((idx.numel(), *self.X.shape[1:]))
            self._gather_buffers[tuple(idx.shape)] = buf
        yb = torch.index_select(self.y, 0, idx.reshape(-1)).view(*idx.shape, *self.y.shape[1:])
        return self.network.gather(self.X, idx, out=buf), yb

    def gradient(self, params, xb, yb, batched):
        """``(grads, losses, n_correct)`` of each seed on its batch (``batched``: per seed)."""
        leaves = self.network.leaves(params["flat"])
        with torch.enable_grad():
            out = self.network.forward(leaves, xb, shared=not batched)
            closed = batched_loss_and_grad(self.criterion, out, yb, shared=not batched)
            if closed is None:
                loss = batched_loss(self.criterion, out, yb, shared=not batched)
                grads = torch.autograd.grad(loss.sum(), leaves)
            else:  # the loss's gradient in closed form, autograd from the outputs
                loss, grad_out = closed
                grads = torch.autograd.grad(out, leaves, grad_out)
        S = self.n_seeds
        flat = torch.cat([g.reshape(S, -1) for g in grads], 1)
        if self.classifier:
            # the outputs are a samples-last tensor seen transposed: argmax over a
            # contiguous copy is several times faster than over the strided view
            correct = (out.detach().contiguous().argmax(-1) == yb).sum(-1)
        else:
            correct = self._no_correct
        return {"flat": flat}, loss.detach(), correct

    def outputs(self, params, x):
        return self.network.forward(params["flat"], x, shared=True)

    def flat(self, params):
        flat = params["flat"].detach()
        return flat.to(device="cpu", dtype=torch.float32, copy=True)  # updated in place later

    def grad_norms(self, grads):
        return grads["flat"].pow(2).sum(1).sqrt()

    def write_back(self, params, nets):
        self.network.unstack_parameters(params["flat"], [n.module_ for n in nets])


class _VmapTrainer(_Trainer):
    """The generic path: :func:`torch.func.vmap` of :func:`torch.func.functional_call`."""

    name = "vmap"

    def __init__(self, nets, X, y):
        from torch.func import functional_call, grad, stack_module_state, vmap

        template = nets[0]
        module = template.module_
        module.train(True)
        params, buffers = stack_module_state([n.module_ for n in nets])
        self.params = {k: v.detach() for k, v in params.items()}
        self.buffers = {k: v.detach() for k, v in buffers.items()}
        ref = next(iter(self.params.values()))
        self.device, self.dtype = ref.device, ref.dtype
        self.n_seeds = ref.shape[0]
        self._setup_data(template, X, y)
        criterion, classifier = self.criterion, self.classifier

        def loss_of(params, buffers, xb, yb):
            out = functional_call(module, (params, buffers), (xb,))
            loss = criterion(out, yb)
            correct = (out.argmax(-1) == yb).sum() if classifier else loss.new_zeros(())
            return loss, (loss.detach(), correct)

        self._grad = {dims: vmap(grad(loss_of, has_aux=True), in_dims=(0, 0, dims, dims))
                      for dims in (None, 0)}
        self._outputs = vmap(lambda p, b, x: functional_call(module, (p, b), (x,)),
                             in_dims=(0, 0, None))

    def gradient(self, params, xb, yb, batched):
        """``(grads, losses, n_correct)`` of each seed on its batch (``batched``: per seed)."""
        grads, (loss, correct) = self._grad[0 if batched else None](params, self.buffers,
                                                                     xb, yb)
        return grads, loss, correct

    def outputs(self, params, x):
        return self._outputs(params, self.buffers, x)

    def write_back(self, params, nets):
        with torch.no_grad():
            for i, net in enumerate(nets):
                for name, p in net.module_.named_parameters():
                    p.copy_(params[name][i])


class _PerSeedTrainer(_VmapTrainer):
    """``rounding="loop"``: each seed's pass on its own tensors, as its own fit runs it.

    The stacked parameters are those of :class:`_VmapTrainer`; a step runs
    the module and the criterion once per seed, on that seed's slices
    (contiguous, with the strides of a separate module's tensors) and its
    own batch, and autograd takes each seed's gradient alone: the
    operations, shapes and memory layouts of a separate fit, so the same
    rounding.  A chain of Linear, Conv2d, pooling, Flatten and elementwise
    layers in an MLP or ``nn.Sequential`` runs as the chain of the calls its
    layers' ``forward`` make (``F.linear``, ``F.conv2d``, the layer itself);
    any other module through :func:`torch.func.functional_call`.
    """

    name = "per-seed"

    def __init__(self, nets, X, y):
        super().__init__(nets, X, y)
        self._module = nets[0].module_
        self._chain = _layer_chain(self._module)

    def _call(self, params, s, x):
        if self._chain is None:
            from torch.func import functional_call

            buffers = {k: v[s] for k, v in self.buffers.items()}
            return functional_call(self._module, (params, buffers), (x,))
        for kind, layer, weight, bias in self._chain:
            if kind == "linear":
                x = F.linear(x, params[weight], None if bias is None else params[bias])
            elif kind == "conv":
                x = layer._conv_forward(x, params[weight],
                                        None if bias is None else params[bias])
            else:
                x = layer(x)
        return x

    def gradient(self, params, xb, yb, batched):
        """``(grads, losses, n_correct)`` of each seed on its batch (``batched``: per seed).

        One backward pass from the sum of the seeds' losses: each loss gets the
        gradient 1, as a separate fit's ``loss.backward()`` gives it, and each
        seed's parameters are leaves of their own.
        """
        S, names = self.n_seeds, list(params)
        own = [[params[k][s].detach().requires_grad_() for k in names] for s in range(S)]
        losses, correct = [], []
        with torch.enable_grad():
            for s in range(S):
                x, t = (xb[s], yb[s]) if batched else (xb, yb)
                out = self._call(dict(zip(names, own[s])), s, x)
                losses.append(self.criterion(out, t))
                if self.classifier:
                    correct.append((out.detach().argmax(-1) == t).sum())
            loss = torch.stack(losses)
            flat = torch.autograd.grad(loss.sum(), [p for seed in own for p in seed])
        n = len(names)
        grads = {k: torch.stack(flat[i::n]) for i, k in enumerate(names)}
        correct = (torch.stack(correct) if self.classifier
                   else torch.zeros(S, dtype=torch.long, device=self.device))
        return grads, loss.detach(), correct

    def outputs(self, params, x):
        return torch.stack([self._call({k: v[s] for k, v in params.items()}, s, x)
                            for s in range(self.n_seeds)])


def _layer_chain(module):
    """``[(kind, layer, weight name, bias name)]`` of an MLP or ``nn.Sequential`` of Linear,
    Conv2d, pooling, Flatten and elementwise layers, in ``named_parameters`` names; None
    for any other module (a CNN reshapes its inputs first)."""
    from .batched_modules import UnsupportedModule, _program
    from .models import MLP

    if not isinstance(module, (MLP, nn.Sequential)) or type(module).forward not in (
            MLP.forward, nn.Sequential.forward):
        return None
    try:
        steps = _program(module)
    except UnsupportedModule:
        return None
    names = {id(p): name for name, p in module.named_parameters()}
    chain = []
    for kind, layer in steps:
        if kind not in ("linear", "conv", "flatten", "elementwise", "pool"):
            return None
        weight = names.get(id(layer.weight)) if kind in ("linear", "conv") else None
        bias = names.get(id(layer.bias)) if kind in ("linear", "conv") and layer.bias is not None \
            else None
        chain.append((kind, layer, weight, bias))
    return chain


def _activation_numel(net, X):
    """Number of values the layers of ``net.module_`` output for one sample of ``X``."""
    module = net.module_
    numel = [0]

    def count(_, __, out):
        if isinstance(out, torch.Tensor):
            numel[0] += out.numel()

    handles = [m.register_forward_hook(count) for m in module.modules()
               if not any(True for _ in m.children())]
    try:
        with torch.no_grad():
            p = next(module.parameters())
            module(torch.as_tensor(X[:1]).to(device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    return numel[0]


def _trial(cls, net, X, y):
    """One gradient (and one held-out output) of two samples through trainer ``cls``."""
    trainer = cls([net], X, y)
    xb, yb = trainer.X[:2], trainer.y[:2]
    trainer.gradient(trainer.params, xb, yb, False)
    idx = torch.arange(xb.shape[0], device=trainer.device)[None]
    trainer.gradient(trainer.params, *trainer.gather(idx), True)
    trainer.outputs(trainer.params, xb)


def _make_trainer(kind, nets, X, y):
    return {"batched": _BatchedTrainer, "vmap": _VmapTrainer,
            "per-seed": _PerSeedTrainer}[kind](nets, X, y)


def _train_chunk(nets, X, y, kind="batched", eval_budget=AUTO_CHUNK_BUDGET,
                 rounding="batched"):
    """Train the initialized copies ``nets`` together, then write back what each fit would have."""
    template = nets[0]
    S = len(nets)
    trainer = _make_trainer(kind, nets, X, y)
    params = trainer.params
    X, y = trainer.X, trainer.y
    n = X.shape[0]
    # each copy's own training iterator: its batch size, shuffling and generator
    iterators = [net.get_iterator(net.get_dataset(X, y), training=True) for net in nets]
    it = iterators[0]
    bs = it.batch_size
    full_batch = bs >= n
    stop = n - n % bs if it.drop_last else n
    if full_batch:
        stop = n if (n == bs or not it.drop_last) else 0

    fopt = _functional_optimizer_of(template, rounding)
    state = fopt.init(params)

    factor = template.divergence_factor
    active = torch.ones(S, dtype=torch.bool, device=trainer.device)
    initial = torch.full((S,), math.nan, dtype=torch.float64, device=trainer.device)
    limit = None  # fixed once every seed has a finite initial loss
    traces = _traces_of(nets)
    want_norms = any(isinstance(cb, GradNormTrace) for _, cb in traces[0])
    everies = [cb.every for _, cb in traces[0] if isinstance(cb, WeightTrace)]
    held_out = _held_out_data(template, trainer, eval_budget)

    stops = SeedStops(nets)  # each seed's own plateau / target stop
    stops.begin()
    stopped = torch.zeros(S, dtype=torch.bool, device=trainer.device)

    snapshots = {0: trainer.flat(params)} if everies else {}
    scores = {}  # (callback name, epoch) -> (losses, accuracies) of every seed
    steps = []  # per step: (epoch, batch size, losses, n_correct, active before, norms)
    durations = []
    for epoch in range(1, template.max_epochs + 1):
        begin = time.perf_counter()
        first_step = len(steps)
        if not full_batch:
            if it.shuffle:
                perms = torch.stack([torch.randperm(n, generator=i.generator)
                                     for i in iterators]).to(trainer.device)
            else:
                perms = torch.arange(n, device=trainer.device).expand(S, n)
        for start in range(0, stop, bs):
            if full_batch:
                grads, loss, correct = trainer.gradient(params, X, y, False)
                size = n
            else:
                idx = perms[:, start:start + bs]
                size = idx.shape[1]
                xb, yb = trainer.gather(idx)
                grads, loss, correct = trainer.gradient(params, xb, yb, True)
            norms = trainer.grad_norms(grads) if want_norms else None
            before = active & ~stopped  # the seeds that take this step
            params, state = fopt.step_(params, grads, state, mask=before)  # in place
            # the estimator's rule (DivergenceCheck), in float64 as it is on the host
            loss64 = loss.to(torch.float64)
            if limit is None:
                initial = torch.where(torch.isnan(initial) & torch.isfinite(loss64), loss64,
                                      initial)
                if factor is None:
                    current = torch.full_like(initial, math.inf)
                else:
                    current = torch.where(initial > 0, factor * initial, math.inf)
                if not bool(torch.isnan(initial).any()):
                    limit = current
            else:
                current = limit
            # a seed that took the step diverges on it; a stopped seed keeps its state
            active = active & (~before | (torch.isfinite(loss64) & (loss64 <= current)))
            steps.append((epoch, size, loss64, correct, before, norms))
        durations.append(time.perf_counter() - begin)
        if any(epoch % e == 0 for e in everies):
            snapshots[epoch] = trainer.flat(params)
        for name, (cb, Xh, yh, batch) in held_out.items():
            if epoch % cb.every == 0:
                scores[name, epoch] = trainer.evaluate(params, Xh, yh, batch)
        if stops.active:
            stopped = _apply_stops(stops, epoch, steps[first_step:], scores, held_out,
                                   active, stopped, hasattr(template, "classes_"))
        if not bool((active & ~stopped).any()):
            break

    trainer.write_back(params, nets)
    _write_back(nets, steps, durations, snapshots, initial, active, scores, stops)


def _apply_stops(stops, epoch, epoch_steps, scores, held_out, active, stopped, is_classifier):
    """Give each running seed's stopping callbacks its epoch row; the new ``stopped`` mask."""
    losses = torch.stack([s[2] for s in epoch_steps]).tolist()
    correct = (torch.stack([s[3] for s in epoch_steps]).tolist() if is_classifier else None)
    recorded = {}
    for name, (cb, *_) in held_out.items():
        if (name, epoch) in scores:
            loss, acc = scores[name, epoch]
            recorded[f"{cb.name}_loss"], recorded[f"{cb.name}_acc"] = loss.tolist(), acc.tolist()
    rows = epoch_rows(epoch, losses, [s[1] for s in epoch_steps], correct, is_classifier,
                      recorded)
    newly = stops.epoch_end(epoch, rows, running=(active & ~stopped).tolist())
    if not newly:
        return stopped
    stopped = stopped.clone()
    stopped[newly] = True
    return stopped


def _held_out_data(template, trainer, budget):
    """``name -> (callback, X, y, batch size)`` of the template's HeldOutScore callbacks.

    The batch size is the callback's, or smaller so that the outputs of every
    layer for all seeds of the chunk stay within ``budget`` bytes (the mean loss
    is the same up to rounding: the batches are weighted by their size).
    """
    out = {}
    callbacks = [(name, cb) for name, cb in template.callbacks_ if isinstance(cb, HeldOutScore)]
    if callbacks:
        per_sample = _activation_numel(template, trainer.X) * trainer.X.element_size()
        largest = max(1, budget // max(1, per_sample * trainer.n_seeds))
    for name, cb in callbacks:
        X = torch.as_tensor(check_predict_X(template, cb.X)).to(trainer.device)
        X = X.to(trainer.dtype) if X.is_floating_point() else X
        y = torch.as_tensor(encode_targets(template, cb.y)).to(trainer.device)
        y = y.to(trainer.dtype) if y.is_floating_point() else y
        out[name] = (cb, X, y, int(min(cb.batch_size, largest)))
    return out


def _traces_of(nets):
    return [[(name, cb) for name, cb in net.callbacks_
             if isinstance(cb, (WeightTrace, GradNormTrace))] for net in nets]


def _write_back(nets, steps, durations, snapshots, initial, active, held_out_scores=None,
                stops=None):
    """Each copy's history, divergence state and trace records, as its own fit leaves them.

    ``stops`` (:class:`~hw1sk.ensemble_stops.SeedStops`): a callback listed
    after the one that stopped a seed does not record that seed's last epoch.
    """
    if steps:
        losses = torch.stack([s[2] for s in steps]).cpu().numpy()
        correct = torch.stack([s[3] for s in steps]).cpu().numpy()
        taken = torch.stack([s[4] for s in steps]).cpu().numpy()
        norms = (torch.stack([s[5] for s in steps]).cpu().numpy()
                 if steps[0][5] is not None else None)
    initial = initial.cpu().numpy()
    active = active.cpu().numpy()
    epochs = [s[0] for s in steps]
    sizes = [s[1] for s in steps]
    is_classifier = hasattr(nets[0], "classes_")
    held_out = {key: (loss.cpu().numpy(), acc.cpu().numpy())
                for key, (loss, acc) in (held_out_scores or {}).items()}
    for i, net in enumerate(nets):
        mine = [k for k in range(len(steps)) if taken[k, i]]
        seed_losses = losses[:, i].tolist() if steps else []
        seed_correct = correct[:, i].tolist() if steps else None
        scores = dict(net.callbacks_).get("epoch_scores")
        best = {}
        history = TrainingHistory()
        diverged = not bool(active[i])  # only the divergence rule deactivates a seed
        taken_in = []  # per row: the seed's steps of that epoch
        for k in mine:
            epoch = epochs[k]
            if not history or history[-1]["epoch"] != epoch:
                history.append({"epoch": epoch, "batches": []})
                taken_in.append([])
            history[-1]["batches"].append({"train_loss": seed_losses[k],
                                           "train_batch_size": sizes[k]})
            taken_in[-1].append(k)
        for row, ks in zip(history, taken_in):
            row["train_batch_count"] = len(row["batches"])
            loss, accuracy = epoch_scores([seed_losses[k] for k in ks], [sizes[k] for k in ks],
                                          [seed_correct[k] for k in ks] if is_classifier
                                          else None)
            _record(scores, best, row, "train_loss", loss, True)
            if is_classifier:
                _record(scores, best, row, "train_acc", accuracy, False)
            row["dur"] = durations[row["epoch"] - 1]
            row["diverged"] = False
        last_epoch = history[-1]["epoch"] if history else 0
        position = {name: k for k, (name, _) in enumerate(net.callbacks_)}

        def sees(name, epoch):  # whether callback ``name`` ran at the end of ``epoch``
            return (stops is None or epoch != last_epoch
                    or stops.sees_last_epoch(i, position[name]))

        for name, _ in net.callbacks_:  # HeldOutScore records, in callback order
            for row in history:
                pair = held_out.get((name, row["epoch"]))
                if pair is not None and sees(name, row["epoch"]):
                    cb = dict(net.callbacks_)[name]
                    row[f"{cb.name}_loss"] = float(pair[0][i])
                    row[f"{cb.name}_acc"] = float(pair[1][i])
        net.history = history
        net.initial_loss_ = float(initial[i]) if math.isfinite(initial[i]) else None
        net.diverged_ = diverged
        net.divergence_reason_ = None
        if diverged:
            history[-1]["diverged"] = True
            net.divergence_reason_ = DivergenceCheck._reason(net, float(losses[mine[-1], i]))
        for name, cb in _traces_of([net])[0]:
            if isinstance(cb, WeightTrace):
                traced = last_epoch if sees(name, last_epoch) else last_epoch - 1
                _fill_weight_trace(cb, net, i, snapshots, history, traced,
                                   first=(losses[mine[0], i], correct[mine[0], i], sizes[0])
                                   if mine else None, is_classifier=is_classifier)
            elif norms is not None:
                records = cb._records_
                records["grad_norms_"].extend(float(norms[k, i]) for k in mine)
                records["losses_"].extend(float(losses[k, i]) for k in mine)
                records["epochs_"].extend(epochs[k] for k in mine)
                records["iterations_"].extend(range(len(mine)))


def _record(scores, best, row, key, value, lower_is_better):
    if isinstance(scores, EpochScores):
        scores._record(row, key, value, lower_is_better)  # keeps the callback's best_ right
        return
    previous = best.get(key)
    better = math.isfinite(value) and (
        previous is None or (value < previous if lower_is_better else value > previous))
    if better:
        best[key] = value
    row[key] = value
    row[key + "_best"] = better


def _fill_weight_trace(cb, net, i, snapshots, history, last_epoch, first, is_classifier):
    """Give ``cb`` the snapshots its own fit would have taken of seed ``i``."""
    cb._resolve_layers(net.module_)
    rows = {row["epoch"]: row for row in history}
    wanted = []
    if cb.include_initial:
        loss, accuracy = math.nan, math.nan
        if first is not None:
            loss = float(first[0])
            if is_classifier:
                accuracy = float(first[1]) / first[2]
        wanted.append((0, loss, accuracy))
    for epoch in range(cb.every, last_epoch + 1, cb.every):
        row = rows[epoch]
        wanted.append((epoch, row.get("train_loss", math.nan), row.get("train_acc", math.nan)))
    for epoch, loss, accuracy in wanted:
        flat = snapshots[epoch][i].numpy()
        if cb._index_ is not None:
            flat = flat[cb._index_]
        cb.epochs_.append(int(epoch))
        cb.snapshots_.append(flat.copy())
        cb.train_loss_.append(float(loss))
        cb.train_accuracy_.append(float(accuracy))
