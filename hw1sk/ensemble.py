"""SeedEnsemble: many seeds of one estimator trained in one vectorized pass.

A study that repeats a fit over seeds (the spread of the minimal ratio, of
the final loss, of the trajectory) spends most of its time in the per-step
overhead of a small network.  :class:`SeedEnsemble` stacks the seeds' copies
of the network with :func:`torch.func.stack_module_state` and trains them
together: one :func:`torch.func.vmap` over :func:`torch.func.grad` of
:func:`torch.func.functional_call` per step, and one functional optimizer
step (:mod:`hw1sk.functional_optim`) for all seeds.

Every seed gets exactly what its own fit would get: the initial weights of
``clone(estimator).set_params(random_state=seed)`` (built by that clone's
``initialize``), the batches of that clone's shuffle generator in the same
order, the estimator's criterion, optimizer, ``lr``, ``max_epochs``,
``batch_size`` and ``divergence_factor`` rule.  After training the seeds are
ordinary fitted estimators, in ``estimators_``.

Speed: vectorizing pays when a seed's step is bound by per-step overhead
(small layers, an accelerator).  On a CPU it does not yet: measured by
``benchmarks/bench_seed_ensemble.py`` at one thread, 32 seeds of the
571-parameter function fit (width 190) train at 0.34x the speed of the loop
of separate fits, and 8 seeds of an MNIST MLP at 0.83x, because the stacked
activations leave the cache.  The studies therefore do not use it yet.
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
from torch import nn

from .callbacks import GradNormTrace, WeightTrace
from .estimators import DivergenceWarning, TensorBatchIterator, TrainingHistory
from .functional_optim import functional_optimizer
from .seeding import as_seed
from .training_callbacks import DivergenceCheck, EpochScores

__all__ = ["SeedEnsemble"]

#: Memory (bytes) that ``chunk_size="auto"`` lets one chunk of seeds use.
AUTO_CHUNK_BUDGET = 1 << 30

_DEFAULT_N_SEEDS = 5
# callbacks whose effect on a fit the vectorized pass reproduces
_REPLAYED_CALLBACKS = (EpochScores, DivergenceCheck, WeightTrace, GradNormTrace)
_FUNCTIONAL_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD,
                          torch.optim.RMSprop)
# layers that keep state across calls (running statistics) or draw random numbers
_UNVECTORIZABLE = (nn.modules.batchnorm._BatchNorm, nn.RNNBase)


def _functional_optimizer_of(net):
    """The functional version of ``net``'s optimizer, with its ``lr`` and ``optimizer__*``."""
    kwargs = net.get_params_for("optimizer")
    kwargs.setdefault("lr", net.lr)
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
    others = [name for name, cb in net.callbacks_ if not isinstance(cb, _REPLAYED_CALLBACKS)
              and name not in ("epoch_timer", "print_log")]
    if others:
        return (f"callbacks {others} are not replayed by the vectorized pass (only "
                "WeightTrace and GradNormTrace are)")
    return None


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
        same results as one chunk.  ``"auto"`` takes all seeds when their
        stacked parameters, gradients, optimizer state and the activations
        of one batch fit in :data:`AUTO_CHUNK_BUDGET` bytes (1 GiB), else as
        many as fit (at least one).
    vectorize : bool, default=True
        False fits the copies one after another (``clone(...).fit``).  The
        loop is also used, with a ``UserWarning`` saying why, when the
        vectorized pass cannot reproduce the fit: stateful or random layers
        (BatchNorm, RNNs, Dropout), a ``train_split``, callbacks other than
        the defaults, WeightTrace and GradNormTrace, an optimizer without a
        functional version, data that are not a numeric array, or a module
        that ``torch.func.vmap`` rejects on a trial step.

    Attributes
    ----------
    estimators_ : list of NeuralClassifier or NeuralRegressor
        The fitted copy of each seed (``predict``, ``score``, pickling as
        usual); its ``history_`` holds ``epoch``, ``train_loss`` (the
        sample-weighted mean of the epoch's batch losses), ``train_acc``
        (classifiers), ``train_batch_count``, ``dur`` (the wall time of the
        epoch of its chunk) and ``diverged``; its WeightTrace and
        GradNormTrace callbacks hold their records.  The optimizer state is
        not carried over (``optimizer_`` is freshly initialized).
    seeds_ : list of int
    diverged_seeds_ : list of int
        Seeds whose training diverged (the estimator's ``divergence_factor``
        rule); their training stopped after the diverged batch, as a fit
        would, while the other seeds went on.
    vectorized_ : bool
        Whether the vectorized pass was used.
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

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralRegressor
    >>> from hw1sk.ensemble import SeedEnsemble
    >>> X = np.linspace(-1, 1, 40)[:, None]; y = np.sin(3 * X[:, 0])
    >>> est = NeuralRegressor(module__hidden=(8,), batch_size=-1, max_epochs=5)
    >>> ens = SeedEnsemble(est, n_seeds=3).fit(X, y)
    >>> len(ens.estimators_), ens.history_["seed"].unique().tolist()
    (3, [0, 1, 2])
    """

    _parameter_constraints = {
        "estimator": [HasMethods(["fit", "initialize"])],
        "seeds": ["array-like", None],
        "n_seeds": [Interval(Integral, 1, None, closed="left"), None],
        "chunk_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "vectorize": ["boolean"],
    }

    def __init__(self, estimator, seeds=None, n_seeds=None, chunk_size="auto", vectorize=True):
        self.estimator = estimator
        self.seeds = seeds
        self.n_seeds = n_seeds
        self.chunk_size = chunk_size
        self.vectorize = vectorize

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
        if reason is None:
            self.chunk_size_ = (self._auto_chunk_size(first, len(seeds))
                                if self.chunk_size == "auto" else min(self.chunk_size,
                                                                      len(seeds)))
            reason = self._trial_step(first)
        if reason is not None:
            if self.vectorize:
                warnings.warn(f"SeedEnsemble fits the seeds one by one: {reason}.",
                              UserWarning, stacklevel=2)
            self.vectorized_ = False
            self.fallback_reason_ = reason
            self.chunk_size_ = 1
            self.estimators_ = [clone(self.estimator).set_params(random_state=s).fit(X, y)
                                for s in seeds]
        else:
            self.vectorized_ = True
            self.estimators_ = []
            for start in range(0, len(seeds), self.chunk_size_):
                chunk = seeds[start:start + self.chunk_size_]
                copies = [first if (start == 0 and i == 0) else
                          self._initialized_copy(s, X, y) for i, s in enumerate(chunk)]
                _train_chunk([c[0] for c in copies], copies[0][1], copies[0][2])
                self.estimators_.extend(c[0] for c in copies)
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
        numel = [0]

        def count(_, __, out):
            if isinstance(out, torch.Tensor):
                numel[0] += out.numel()

        handles = [m.register_forward_hook(count) for m in module.modules()]
        try:
            with torch.no_grad():
                p = next(module.parameters())
                module(torch.as_tensor(X[:1]).to(device=p.device, dtype=p.dtype))
        finally:
            for h in handles:
                h.remove()
        itemsize = next(module.parameters()).element_size()
        # activations kept for backward and their gradients; the gathered batch
        per_seed += batch * itemsize * (3 * numel[0] + int(np.prod(X.shape[1:])))
        return int(max(1, min(n_seeds, AUTO_CHUNK_BUDGET // max(per_seed, 1))))

    def _trial_step(self, first):
        """None if one vectorized gradient of the first batch works, else why not."""
        net, X, y = first
        try:
            trainer = _ChunkTrainer([net], X, y)
            trainer.gradient(trainer.params, trainer.X[:2], trainer.y[:2], None)
        except Exception as exc:  # what vmap refuses is reported, not raised
            return f"torch.func could not vectorize the module ({type(exc).__name__}: {exc})"
        return None

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


class _ChunkTrainer:
    """The stacked state of a chunk of initialized copies and its vectorized gradient."""

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
        X = torch.as_tensor(X).to(device=self.device)
        self.X = X.to(self.dtype) if X.is_floating_point() else X
        y = torch.as_tensor(y).to(device=self.device)
        self.y = y.to(self.dtype) if y.is_floating_point() else y
        criterion = template.criterion_
        criterion.train(True)
        classifier = not y.is_floating_point()

        def loss_of(params, buffers, xb, yb):
            out = functional_call(module, (params, buffers), (xb,))
            loss = criterion(out, yb)
            correct = (out.argmax(-1) == yb).sum() if classifier else loss.new_zeros(())
            return loss, (loss.detach(), correct)

        self._grad = {dims: vmap(grad(loss_of, has_aux=True), in_dims=(0, 0, dims, dims))
                      for dims in (None, 0)}

    def gradient(self, params, xb, yb, batched):
        """``(grads, losses, n_correct)`` of each seed on its batch (``batched``: per seed)."""
        grads, (loss, correct) = self._grad[0 if batched else None](params, self.buffers,
                                                                     xb, yb)
        return grads, loss, correct


def _train_chunk(nets, X, y):
    """Train the initialized copies ``nets`` together, then write back what each fit would have."""
    template = nets[0]
    S = len(nets)
    trainer = _ChunkTrainer(nets, X, y)
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

    fopt = _functional_optimizer_of(template)
    state = fopt.init(params)

    factor = template.divergence_factor
    active = torch.ones(S, dtype=torch.bool, device=trainer.device)
    initial = torch.full((S,), math.nan, dtype=torch.float64, device=trainer.device)
    traces = _traces_of(nets)
    want_norms = any(isinstance(cb, GradNormTrace) for _, cb in traces[0])
    everies = [cb.every for _, cb in traces[0] if isinstance(cb, WeightTrace)]

    def flat(params):
        return torch.cat([p.detach().reshape(S, -1) for p in params.values()], 1).to(
            device="cpu", dtype=torch.float32)

    snapshots = {0: flat(params)} if everies else {}
    steps = []  # per step: (epoch, batch size, losses, n_correct, active before, norms)
    durations = []
    for epoch in range(1, template.max_epochs + 1):
        begin = time.perf_counter()
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
                grads, loss, correct = trainer.gradient(params, X[idx], y[idx], True)
            norms = None
            if want_norms:
                norms = torch.stack([g.detach().reshape(S, -1).pow(2).sum(1)
                                     for g in grads.values()]).sum(0).sqrt()
            before = active
            params, state = fopt.step(params, grads, state, mask=active)
            # the estimator's rule (DivergenceCheck), in float64 as it is on the host
            loss64 = loss.to(torch.float64)
            initial = torch.where(torch.isnan(initial) & torch.isfinite(loss64), loss64,
                                  initial)
            if factor is None:
                limit = torch.full_like(initial, math.inf)
            else:
                limit = torch.where(initial > 0, factor * initial, math.inf)
            active = before & torch.isfinite(loss64) & (loss64 <= limit)
            steps.append((epoch, size, loss64, correct, before, norms))
        durations.append(time.perf_counter() - begin)
        if any(epoch % e == 0 for e in everies):
            snapshots[epoch] = flat(params)
        if not bool(active.any()):
            break

    with torch.no_grad():
        for i, net in enumerate(nets):
            for name, p in net.module_.named_parameters():
                p.copy_(params[name][i])
    _write_back(nets, steps, durations, snapshots, initial, active)


def _traces_of(nets):
    return [[(name, cb) for name, cb in net.callbacks_
             if isinstance(cb, (WeightTrace, GradNormTrace))] for net in nets]


def _write_back(nets, steps, durations, snapshots, initial, active):
    """Each copy's history, divergence state and trace records, as its own fit leaves them."""
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
    for i, net in enumerate(nets):
        mine = [k for k in range(len(steps)) if taken[k, i]]
        scores = dict(net.callbacks_).get("epoch_scores")
        best = {}
        history = TrainingHistory()
        diverged = not bool(active[i])  # only the divergence rule deactivates a seed
        for k in mine:
            epoch = epochs[k]
            if not history or history[-1]["epoch"] != epoch:
                history.append({"epoch": epoch, "batches": []})
            history[-1]["batches"].append({"train_loss": float(losses[k, i]),
                                           "train_batch_size": sizes[k]})
        for row in history:
            total, n_samples, n_correct = 0.0, 0, 0
            for k in (k for k in mine if epochs[k] == row["epoch"]):
                total += float(losses[k, i]) * sizes[k]
                n_samples += sizes[k]
                n_correct += int(correct[k, i])
            row["train_batch_count"] = len(row["batches"])
            _record(scores, best, row, "train_loss", total / n_samples, True)
            if is_classifier:
                _record(scores, best, row, "train_acc", n_correct / n_samples, False)
            row["dur"] = durations[row["epoch"] - 1]
            row["diverged"] = False
        net.history = history
        net.initial_loss_ = float(initial[i]) if math.isfinite(initial[i]) else None
        net.diverged_ = diverged
        net.divergence_reason_ = None
        if diverged:
            history[-1]["diverged"] = True
            net.divergence_reason_ = DivergenceCheck._reason(net, float(losses[mine[-1], i]))
        last_epoch = history[-1]["epoch"] if history else 0
        for _, cb in _traces_of([net])[0]:
            if isinstance(cb, WeightTrace):
                _fill_weight_trace(cb, net, i, snapshots, history, last_epoch,
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
