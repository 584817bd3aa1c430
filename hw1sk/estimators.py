"""scikit-learn estimators on skorch, with a fast path for in-memory data.

:class:`NeuralClassifier` and :class:`NeuralRegressor` are
:class:`skorch.NeuralNetClassifier` / :class:`skorch.NeuralNetRegressor`
subclasses with defaults suited to small experiments (a zoo model, Adam,
no internal validation, silent), the scikit-learn input checks, seeding
through ``random_state`` and a training loop whose per-batch and per-epoch
overhead is small enough for 571-parameter networks trained for thousands of
full-batch epochs.

What makes it fast (see ``benchmarks/bench_training_overhead.py``):

* :class:`TensorBatchIterator` slices tensors that were converted once per
  fit, instead of collating single samples through a ``DataLoader``;
* the train loss, train accuracy (classifiers), validation loss/accuracy and
  their ``*_best`` flags are added up batch by batch by
  :class:`~hw1sk.training_callbacks.EpochScores` rather than by skorch's
  scoring callbacks, which walk the history (the predicted labels are
  taken for many batches at once, not one tensor op per batch);
  ``PrintLog`` formats nothing when ``verbose=0``;
* the NaN/inf check of ``X`` is one multi-threaded torch sum (scikit-learn's
  check runs only when that sum is not finite, for its error message);
* callbacks are only called for the events they override, and the history
  appends rows without copying itself (skorch's ``History.record`` copies the
  whole list on every call).

Everything else is skorch's own fit loop: the estimators extend it only
through its hooks (``initialize_*``, ``get_iterator``, ``notify``,
``get_loss``, the net's ``on_*`` methods).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.metaestimators import available_if
from sklearn.utils._param_validation import Interval, Options, validate_parameter_constraints
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    column_or_1d,
)
from skorch import NeuralNet, NeuralNetClassifier, NeuralNetRegressor
from skorch.callbacks import Callback, EpochTimer, PrintLog
from skorch.dataset import Dataset
from skorch.history import History
from skorch.utils import is_dataset
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

from .interrupts import InterruptWatch, StopTraining
from .models import resolve_module
from .training_callbacks import DivergenceCheck, EpochScores
from .seeding import seed_everything, spawn_seeds, torch_generator

try:  # sklearn >= 1.6 has it as a function, older versions as a method
    from sklearn.utils.validation import _check_feature_names
except ImportError:  # pragma: no cover
    def _check_feature_names(estimator, X, *, reset):
        return estimator._check_feature_names(X, reset=reset)

__all__ = [
    "NeuralClassifier",
    "NeuralRegressor",
    "TensorBatchIterator",
    "TrainingHistory",
    "DivergenceWarning",
]


class DivergenceWarning(ConvergenceWarning):
    """Training stopped because the training loss diverged.

    Diverged means: a training batch loss that is NaN or infinite, or one
    above ``divergence_factor`` times the starting loss (the loss of the
    first training batch, at the initial weights).
    """


# the first columns of ``history_``, in this order, when present
_HISTORY_FRONT = ("epoch", "train_loss", "train_loss_best", "train_acc", "train_acc_best",
                  "valid_loss", "valid_loss_best", "valid_acc", "valid_acc_best")


class _Diverged(StopTraining):
    """Raised by the net's own hooks once :class:`DivergenceCheck` has flagged a batch."""

    def __init__(self, mid_epoch=False):
        super().__init__()
        self.mid_epoch = mid_epoch


class TrainingHistory(History):
    """skorch :class:`~skorch.history.History` whose writes do not copy it.

    skorch's ``History.record`` reaches the current epoch through the
    general ``__getitem__``, which copies the whole list first; over
    thousands of epochs that is quadratic.  Here integer indexing and the
    ``new_*``/``record*`` writers go straight to the list.  Everything else,
    including the multi-level indexing ``history[:, 'train_loss']``, is
    skorch's.
    """

    def __getitem__(self, i):
        if isinstance(i, int):
            return list.__getitem__(self, i)
        return super().__getitem__(i)

    def new_batch(self):
        list.__getitem__(self, -1)["batches"].append({})

    def record(self, attr, value):
        if not self:
            raise ValueError("Call new_epoch before recording for the first time.")
        list.__getitem__(self, -1)[attr] = value

    def record_batch(self, attr, value):
        list.__getitem__(self, -1)["batches"][-1][attr] = value


class LazyPrintLog(PrintLog):
    """:class:`skorch.callbacks.PrintLog` that does nothing when ``net.verbose`` is 0.

    skorch's ``PrintLog`` tabulates the epoch row even when the sink
    discards it, which costs more than a small network's training step.
    """

    def on_epoch_end(self, net, **kwargs):
        if net.verbose:
            super().on_epoch_end(net, **kwargs)


def _tensor_of(data):
    """``data`` as a tensor without copying, or None when it is not plain numeric data."""
    if isinstance(data, torch.Tensor):
        return data
    if isinstance(data, np.ndarray) and data.dtype.kind in "biuf":
        data = np.ascontiguousarray(data)
        if data.flags.writeable:
            return torch.from_numpy(data)
        with warnings.catch_warnings():
            # read-only inputs (memory maps) are only ever read here
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(data)
    return None


def _surely_finite(X):
    """Whether the float array ``X`` is all finite, by one (multi-threaded) torch sum.

    scikit-learn's first pass is the same test with numpy's single-threaded
    sum.  False when the sum is not finite (NaN/inf in ``X``, or a finite
    overflow) or torch cannot view ``X``: scikit-learn's check decides then.
    """
    try:
        if X.flags.writeable:
            total = torch.from_numpy(X).sum()
        else:
            with warnings.catch_warnings():  # only read here
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                total = torch.from_numpy(X).sum()
    except (TypeError, ValueError, RuntimeError):  # negative strides, unsupported dtype
        return False
    return bool(torch.isfinite(total))


def _dataset_tensors(dataset):
    """``(X, y)`` tensors behind ``dataset``, or None when it must be iterated sample by sample.

    Only the exact classes skorch and torch use for in-memory data are taken
    apart (a subclass may transform its samples in ``__getitem__``).
    """
    if type(dataset) is Dataset:
        X = _tensor_of(dataset.X)
        y = None if dataset.y is None else _tensor_of(dataset.y)
        if X is None or (dataset.y is not None and y is None):
            return None
        return X, y
    if type(dataset) is TensorDataset and len(dataset.tensors) in (1, 2):
        X = dataset.tensors[0]
        return X, (dataset.tensors[1] if len(dataset.tensors) == 2 else None)
    if type(dataset) is Subset:
        inner = _dataset_tensors(dataset.dataset)
        if inner is None:
            return None
        X, y = inner
        idx = torch.as_tensor(np.asarray(dataset.indices), dtype=torch.long, device=X.device)
        return X[idx], (None if y is None else y[idx.to(y.device)])
    return None


class TensorBatchIterator:
    """Mini-batches of in-memory data by slicing tensors, without a DataLoader.

    The data are converted to tensors (and moved to ``device``) once, when
    the iterator is built; each epoch then draws one permutation with
    ``torch.randperm`` and indexes the tensors with it, as a hand-written
    PyTorch loop would.  Datasets that are not plain in-memory data (custom
    :class:`torch.utils.data.Dataset` classes, dicts, pandas frames) are
    iterated by a :class:`torch.utils.data.DataLoader` with the same
    arguments instead.

    Use it as ``iterator_train`` / ``iterator_valid`` of a skorch net; the
    arguments are set through ``iterator_train__shuffle`` etc.

    Parameters
    ----------
    dataset : skorch Dataset, torch TensorDataset or Subset of either
        The data; anything else is handed to a ``DataLoader``.
    batch_size : int, default=64
        Samples per batch.  A batch size of at least ``len(dataset)`` yields
        the tensors themselves (no copy, no permutation: the order of samples
        inside a full batch does not change a mean loss).
    shuffle : bool, default=False
        Draw a new permutation each epoch.
    drop_last : bool, default=False
        Skip the last batch when it is smaller than ``batch_size``.
    generator : torch.Generator or None, default=None
        Source of the permutations; None uses torch's global generator.
    device : str, torch.device or None, default=None
        Where the tensors are moved once; None leaves them where they are.

    Attributes
    ----------
    tensors_ : tuple of (Tensor, Tensor or None) or None
        The data as tensors; None when a DataLoader is used.
    loader_ : torch.utils.data.DataLoader or None
        The fallback loader for other datasets.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skorch.dataset import Dataset
    >>> from hw1sk.estimators import TensorBatchIterator
    >>> it = TensorBatchIterator(Dataset(np.arange(5.0)[:, None], np.arange(5)),
    ...                          batch_size=2, shuffle=True,
    ...                          generator=torch.Generator().manual_seed(0))
    >>> sorted(int(i) for _, yb in it for i in yb)
    [0, 1, 2, 3, 4]
    """

    def __init__(self, dataset, batch_size=64, shuffle=False, drop_last=False,
                 generator=None, device=None):
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.generator = generator
        self.device = device
        tensors = _dataset_tensors(dataset)
        if tensors is None:
            self.tensors_ = None
            self.loader_ = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                      drop_last=drop_last, generator=generator)
        else:
            X, y = tensors
            if device is not None:
                X = X.to(device)
                y = None if y is None else y.to(device)
            self.tensors_ = (X, y)
            self.loader_ = None

    def __len__(self):
        if self.loader_ is not None:
            return len(self.loader_)
        n = self.tensors_[0].shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        if self.loader_ is not None:
            yield from self.loader_
            return
        X, y = self.tensors_
        n, bs = X.shape[0], self.batch_size
        if bs >= n:
            if n and (n == bs or not self.drop_last):
                yield X, y
            return
        stop = n - n % bs if self.drop_last else n
        if self.shuffle:
            perm = torch.randperm(n, generator=self.generator)
            if perm.device != X.device:
                perm = perm.to(X.device)
            for start in range(0, stop, bs):
                idx = perm[start:start + bs]
                yield X[idx], (None if y is None else y[idx])
        else:
            for start in range(0, stop, bs):
                yield X[start:start + bs], (None if y is None else y[start:start + bs])


def _base_method(name):
    return getattr(Callback, name, None)


class _NeuralNetMixin:
    """What the classifier and the regressor share: checks, seeding, the fast loop."""

    # events whose callbacks are looked up once per callback list
    _EVENTS = ("on_train_begin", "on_train_end", "on_epoch_begin", "on_epoch_end",
               "on_batch_begin", "on_batch_end", "on_grad_computed")
    # caches rebuilt on demand, left out of pickles
    _TRANSIENT = ("_notify_cache_", "_epoch_kwargs_", "_learnable_params_cache_")

    # checked at fit (scikit-learn's constraints, so the messages are the familiar ones)
    _parameter_constraints = {
        "lr": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), Options(Integral, {-1})],
        "divergence_factor": [Interval(Real, 1, None, closed="neither"), None],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "device": [str, torch.device, None],
    }

    @property
    def _default_callbacks(self):
        return [
            ("epoch_timer", EpochTimer()),
            ("epoch_scores", EpochScores()),
            ("divergence", DivergenceCheck()),
            ("print_log", LazyPrintLog()),
        ]

    # ----------------------------------------------------------------- history
    @property
    def history(self):
        """The skorch :class:`~skorch.history.History` (a list of epoch dicts)."""
        return self.__dict__.get("_history_")

    @history.setter
    def history(self, value):
        if value is not None and not isinstance(value, TrainingHistory):
            value = TrainingHistory(value)
        self.__dict__["_history_"] = value

    @property
    def history_(self):
        """Per-epoch history as a :class:`pandas.DataFrame` (one row per epoch).

        The per-batch records (``net.history[-1, 'batches']``) are left out;
        ``train_batch_count`` gives their number.
        """
        history = self.history
        if history is None:
            raise NotFittedError(
                f"This {type(self).__name__} instance has no history yet; call 'fit' first."
            )
        frame = pd.DataFrame(
            [{k: v for k, v in row.items() if k != "batches"} for row in history]
        )
        front = [c for c in _HISTORY_FRONT if c in frame.columns]
        return frame[front + [c for c in frame.columns if c not in front]]

    @history_.setter
    def history_(self, value):
        # skorch's __init__ assigns ``history_``; route it to the History object
        self.history = value

    def initialize_history(self):
        """Start an empty :class:`TrainingHistory`."""
        self.history = TrainingHistory()
        return self

    # --------------------------------------------------------------- seeding
    def initialize(self):
        """Seed, then initialize module, criterion, optimizer, callbacks and history.

        With ``random_state`` set, module initialisation and batch shuffling
        get their own seeds derived from it, so the same ``random_state``
        gives the same numbers on CPU.

        Returns
        -------
        self
        """
        if self.random_state is None:
            self._init_seed_ = None
            self._shuffle_generator_ = None
        else:
            init_seed, shuffle_seed = spawn_seeds(self.random_state, 2)
            self._init_seed_ = init_seed
            self._shuffle_generator_ = torch_generator(shuffle_seed)
        self.__dict__.pop("_nll_log_input_", None)  # decided again for the new module
        super().initialize()
        self.diverged_ = False
        self.divergence_reason_ = None
        self.interrupted_ = False
        self.initial_loss_ = None
        return self

    def _check_params(self):
        """Check the training parameters; a ``ValueError`` names the one that is wrong."""
        params = {k: getattr(self, k) for k in self._parameter_constraints}
        validate_parameter_constraints(self._parameter_constraints, params,
                                       caller_name=type(self).__name__)
        for name in ("max_epochs", "batch_size"):  # bool passes Integral
            if isinstance(params[name], bool):
                raise ValueError(f"The {name!r} parameter of {type(self).__name__} must be an "
                                 f"int, got {params[name]!r}.")
        device = params["device"]
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, ValueError):
                raise ValueError(
                    f"The 'device' parameter of {type(self).__name__} must be a torch device "
                    f"such as 'cpu', 'cuda' or 'cuda:0'; got {params['device']!r}.") from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"{type(self).__name__}(device={params['device']!r}): CUDA is "
                                 "not available on this machine; use device='cpu'.")

    def initialize_module(self):
        """Build the module from a zoo name, class, factory or instance.

        Arguments given as ``module__<name>`` win; ``n_in`` / ``n_out`` (and
        ``in_channels``, ``image_size``, ``row_size``, ``n_rows`` for images)
        that the factory accepts but the user did not set are taken from the
        training data.  The module is built under ``random_state``'s seed,
        without touching torch's global generator.
        """
        kwargs = self.get_params_for("module")
        module = resolve_module(self.module)
        if not isinstance(module, nn.Module):
            kwargs = {**self._inferred_module_params(module, kwargs), **kwargs}
        seed = getattr(self, "_init_seed_", None)
        if seed is None:
            self.module_ = self.initialized_instance(module, kwargs)
            return self
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            seed_everything(seed)
            self.module_ = self.initialized_instance(module, kwargs)
        return self

    def _n_module_outputs(self):
        raise NotImplementedError

    def _inferred_module_params(self, factory, given):
        try:
            names = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            return {}
        out = {}
        shape = getattr(self, "input_shape_", None)
        if shape is not None:
            if "n_in" in names:
                out["n_in"] = int(np.prod(shape))
            side = math.isqrt(shape[0]) if len(shape) == 1 else 0
            if side > 1 and side * side == shape[0] and "image_size" in names:
                out["image_size"] = side  # flattened grey square images, as MNIST's 784
            if len(shape) in (2, 3):  # (H, W) or (C, H, W) images
                C, H, W = (1, *shape) if len(shape) == 2 else shape
                if "in_channels" in names:
                    out["in_channels"] = C
                if "image_size" in names and H == W:
                    out["image_size"] = H
                if "row_size" in names:
                    out["row_size"] = W
                if "n_rows" in names:
                    out["n_rows"] = H
        n_out = self._n_module_outputs()
        if n_out is not None and "n_out" in names:
            out["n_out"] = n_out
        return {k: v for k, v in out.items() if k not in given}

    # ------------------------------------------------------------ validation
    def check_data(self, X, y=None):
        # arrays are checked (and labels encoded) in fit / partial_fit
        if not self._is_checkable(X):
            super().check_data(X, y)

    @staticmethod
    def _is_checkable(X):
        # scipy's DOK matrices are Mappings too, and must meet check_array's refusal
        return not (is_dataset(X) or (isinstance(X, Mapping) and not sp.issparse(X)))

    def _validate_X(self, X, reset):
        """Check X with sklearn's rules; record or compare the per-sample shape."""
        if isinstance(X, torch.Tensor):
            X = X.detach()
            if X.ndim < 2:
                raise ValueError(
                    f"Expected 2D array, got {X.ndim}D tensor instead: reshape your "
                    "data with X.reshape(-1, 1) for a single feature."
                )
            if X.shape[0] < 1:
                raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
            if X.dtype != torch.float32:
                X = X.to(torch.float32)
            if not bool(torch.isfinite(X).all()):
                raise ValueError("Input X contains NaN or infinity.")
        else:
            _check_feature_names(self, X, reset=reset)
            X = check_array(X, dtype=np.float32, allow_nd=True, ensure_all_finite=False,
                            input_name="X")
            if not _surely_finite(X):  # scikit-learn's own check, for its message
                X = check_array(X, dtype=np.float32, allow_nd=True, ensure_all_finite=True,
                                input_name="X")
        shape = tuple(int(s) for s in X.shape[1:])
        if reset:
            self.input_shape_ = shape
            self.n_features_in_ = int(np.prod(shape))
            return X
        expected = getattr(self, "input_shape_", None)
        if expected is not None and shape != expected:
            name = type(self).__name__
            if len(shape) == 1 and len(expected) == 1:
                msg = (f"X has {shape[0]} features, but {name} is expecting "
                       f"{expected[0]} features as input.")
            else:
                msg = (f"X has samples of shape {shape}, but {name} is expecting "
                       f"samples of shape {expected} as input.")
            raise ValueError(msg)
        return X

    def _validate_training_data(self, X, y, reset, classes=None):
        if not self._is_checkable(X):
            return X, y  # a Dataset or dict: skorch's own handling
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        X = self._validate_X(X, reset)
        y = self._validate_y(y, reset, classes=classes)
        check_consistent_length(X, y)
        return X, y

    def _validate_predict_X(self, X):
        check_is_fitted(self)
        if not self._is_checkable(X):
            return X
        return self._validate_X(X, reset=False)

    # ------------------------------------------------------------------- fit
    def fit(self, X, y, **fit_params):
        """Initialize the module (unless ``warm_start``) and train it.

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, ...)
            Inputs; float64 is cast to float32.  A skorch/torch Dataset or a
            dict is passed to skorch unchecked.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets.
        **fit_params
            Passed to the module's ``forward`` (skorch semantics).

        Returns
        -------
        self
        """
        self._check_params()
        first = not (self.warm_start and self.initialized_)
        X, y = self._validate_training_data(X, y, reset=first)
        if first:
            self.initialize()
        return self._train(X, y, "fit", **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Train for ``max_epochs`` more epochs without re-initializing.

        The first call initializes the module.  Records of the tracing
        callbacks continue; they are reset only by ``initialize`` / ``fit``.

        Parameters
        ----------
        X, y
            As in :meth:`fit`.
        classes : array-like or None, default=None
            Classifier only: all labels, needed on the first call when a
            batch may miss some.
        **fit_params
            Passed to the module's ``forward``.

        Returns
        -------
        self
        """
        self._check_params()
        first = not self.initialized_
        X, y = self._validate_training_data(X, y, reset=first, classes=classes)
        if first:
            self.initialize()
        return self._train(X, y, "partial_fit", **fit_params)

    def _train(self, X, y, routing_method, **fit_params):
        """skorch's ``partial_fit`` on checked data, except for what ends training.

        :class:`~hw1sk.interrupts.StopTraining` from a callback, and a
        ``KeyboardInterrupt`` that a callback raises (skorch's
        ``EarlyStopping``), end training normally.  The user's Ctrl-C is
        not swallowed as in skorch: ``interrupted_`` is set and the
        ``KeyboardInterrupt`` propagates, so a script or a sweep stops and
        never takes the cut-short run for a finished one.
        """
        self.interrupted_ = False
        self.diverged_ = False
        self.divergence_reason_ = None
        self.notify("on_train_begin", X=X, y=y)
        # the parameters do not change during a fit: list them once for train_step
        self.__dict__["_learnable_params_cache_"] = list(self.get_all_learnable_params())
        with InterruptWatch() as watch:
            try:
                self.fit_loop(X, y, _routing_method=routing_method, **fit_params)
            except _Diverged as stop:
                if stop.mid_epoch:  # close the epoch that was cut short, as the loop would
                    self.notify("on_epoch_end", **self.__dict__.get("_epoch_kwargs_", {}))
                warnings.warn(
                    f"{type(self).__name__}: {self.divergence_reason_}; training "
                    "stopped (diverged_ is True). Lower lr or rescale the targets.",
                    DivergenceWarning, stacklevel=3)
            except StopTraining:
                pass
            except KeyboardInterrupt:
                if watch.interrupted:
                    self.interrupted_ = True
                    raise
            finally:
                self.__dict__.pop("_learnable_params_cache_", None)
        self.notify("on_train_end", X=X, y=y)
        return self

    def get_iterator(self, dataset, training=False):
        """Build ``iterator_train`` / ``iterator_valid`` on ``dataset``.

        As skorch, plus: training batches are shuffled unless
        ``iterator_train__shuffle=False``; with ``random_state`` set, the
        shuffling uses a generator seeded from it; a
        :class:`TensorBatchIterator` moves the data to ``device`` once.
        """
        if training:
            kwargs = self.get_params_for("iterator_train")
            iterator = self.iterator_train
        else:
            kwargs = self.get_params_for("iterator_valid")
            iterator = self.iterator_valid
        kwargs.setdefault("batch_size", self.batch_size)
        if kwargs["batch_size"] == -1:
            kwargs["batch_size"] = len(dataset)
        known = (isinstance(iterator, type)
                 and issubclass(iterator, (TensorBatchIterator, DataLoader)))
        if known and training:
            kwargs.setdefault("shuffle", True)
            generator = getattr(self, "_shuffle_generator_", None)
            if kwargs["shuffle"] and generator is not None:
                kwargs.setdefault("generator", generator)
        if isinstance(iterator, type) and issubclass(iterator, TensorBatchIterator):
            kwargs.setdefault("device", self.device)
        return iterator(dataset, **kwargs)

    # ------------------------------------------------------------ fast loop
    def _callbacks_for(self, event):
        """Bound methods of the callbacks that override ``event`` (cached per callback list)."""
        callbacks = getattr(self, "callbacks_", None) or []
        cache = self.__dict__.get("_notify_cache_")
        if cache is None or cache[0] is not callbacks or cache[1] != len(callbacks):
            methods = {e: [] for e in self._EVENTS}
            for _, cb in callbacks:
                for e in self._EVENTS:
                    method = getattr(type(cb), e, None)
                    if method is not None and method is not _base_method(e):
                        methods[e].append(getattr(cb, e))
            cache = (callbacks, len(callbacks), methods)
            self.__dict__["_notify_cache_"] = cache
        methods = cache[2].get(event)
        if methods is None:  # an event outside _EVENTS: every callback
            return [getattr(cb, event) for _, cb in callbacks]
        return methods

    def notify(self, method_name, **cb_kwargs):
        """Call ``method_name`` on the net and on the callbacks that override it."""
        getattr(self, method_name)(self, **cb_kwargs)
        for method in self._callbacks_for(method_name):
            method(self, **cb_kwargs)

    def _set_training(self, training=True):
        # skorch walks every submodule at every step (Module.train sets an attribute on
        # each, a quarter of a small net's step); switch only when the top-level flag
        # differs (a callback that flips a submodule alone is not undone)
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, nn.Module) and module.training != training:
                module.train(training)

    def train_step(self, batch, **fit_params):
        """skorch's optimizer step, without listing the parameters again at every step."""
        accumulator = self.get_train_step_accumulator()
        named_parameters = self.__dict__.get("_learnable_params_cache_")
        if named_parameters is None:
            named_parameters = list(self.get_all_learnable_params())

        def step_fn():
            self._zero_grad_optimizer()
            step = self.train_step_single(batch, **fit_params)
            accumulator.store_step(step)
            self.notify("on_grad_computed", named_parameters=named_parameters,
                        batch=batch, training=True)
            return step["loss"]

        self._step_optimizer(step_fn)
        return accumulator.get_step()

    def get_loss(self, y_pred, y_true, *args, **kwargs):
        """skorch's loss, except that ``NLLLoss`` also takes log-probabilities.

        skorch's classifier takes the log of what the module returns when
        the criterion is ``NLLLoss`` (a module ending in softmax); PyTorch's
        usual pairing is a module ending in ``LogSoftmax``, whose output
        goes to ``NLLLoss`` as it is.  Which one the module does is decided
        on the first batch.
        """
        if isinstance(self.criterion_, nn.NLLLoss):
            if isinstance(y_pred, torch.Tensor) and self._nll_takes_log_probabilities(y_pred):
                return NeuralNet.get_loss(self, y_pred, y_true, *args, **kwargs)
        elif (isinstance(y_true, torch.Tensor) and isinstance(y_pred, torch.Tensor)
                and y_true.device == y_pred.device):
            return self.criterion_(y_pred, y_true)  # skip skorch's to_tensor dispatch
        return super().get_loss(y_pred, y_true, *args, **kwargs)

    def infer(self, x, **fit_params):
        """The module's output on ``x``; a tensor already on ``device`` goes straight in."""
        if isinstance(x, torch.Tensor) and (self.device is None
                                            or x.device == torch.device(self.device)):
            return self.module_(x, **fit_params)
        return super().infer(x, **fit_params)

    def _nll_takes_log_probabilities(self, y_pred):
        """Whether the module feeds ``NLLLoss`` log-probabilities (PyTorch) or probabilities (skorch).

        Decided on the first batch and kept: log-probabilities are all <= 0,
        probabilities all >= 0; anything else is raw scores, for which
        ``NLLLoss`` is the wrong criterion.
        """
        known = self.__dict__.get("_nll_log_input_")
        if known is not None:
            return known
        out = y_pred.detach()
        if bool((out <= 0).all()):
            known = True
        elif bool((out >= 0).all()):
            known = False
        else:
            raise ValueError(
                f"{type(self).__name__}: criterion=NLLLoss needs a module that outputs "
                "log-probabilities (end it with nn.LogSoftmax(dim=1)) or probabilities "
                "(nn.Softmax(dim=1)), but its outputs have both signs (raw scores). Use "
                "criterion=nn.CrossEntropyLoss for a module that outputs logits.")
        self.__dict__["_nll_log_input_"] = known
        return known

    def _get_predict_nonlinearity(self):
        nonlin = super()._get_predict_nonlinearity()
        if (self.predict_nonlinearity == "auto"
                and isinstance(getattr(self, "criterion_", None), nn.NLLLoss)
                and self.__dict__.get("_nll_log_input_")):
            return torch.exp  # log-probabilities -> probabilities
        return nonlin

    def _batch_scores(self, y_pred, batch):
        """``(class scores, targets)`` of a batch, or None (regressors).

        The scores are ``y_pred`` detached; :class:`EpochScores` takes their
        ``argmax`` for many batches at once.
        """
        return None

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        if self.diverged_:  # diverged in the last batch of the previous epoch
            raise _Diverged
        super().on_epoch_begin(net, dataset_train=dataset_train,
                               dataset_valid=dataset_valid, **kwargs)
        self.__dict__["_epoch_kwargs_"] = {"dataset_train": dataset_train,
                                           "dataset_valid": dataset_valid}

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if self.diverged_:  # DivergenceCheck flagged the previous batch: stop before this one
            raise _Diverged(True)
        super().on_batch_begin(net, batch=batch, training=training, **kwargs)

    def _get_param_names(self):
        # skorch lists every attribute without a trailing '_', which would make its
        # private ``_params_to_validate`` set a constructor parameter
        return [k for k in super()._get_param_names() if not k.startswith("_")]

    # --------------------------------------------------------------- pickling
    def __getstate__(self):
        state = super().__getstate__()
        for key in self._TRANSIENT:
            state.pop(key, None)
        return state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


_SHARED_DOC = """
    module : str, nn.Module class, factory or instance, default="mlp"
        A name of :data:`hw1sk.models.MODEL_ZOO` or anything skorch accepts.
        Its arguments are set as ``module__<name>``; ``n_in`` and ``n_out``
        (and image sizes) default to what the training data imply.
    criterion : torch criterion class, default={criterion}
    optimizer : torch optimizer class, default=torch.optim.Adam
        Its arguments as ``optimizer__<name>``.
    lr : float, default=1e-3
    max_epochs : int, default=10
    batch_size : int, default=64
        ``-1`` means one batch of all samples (full-batch gradient descent).
    iterator_train, iterator_valid : class, default=TensorBatchIterator
        Training batches are shuffled unless ``iterator_train__shuffle=False``.
    dataset : class, default=skorch.dataset.Dataset
    train_split : callable or None, default=None
        None trains on all data (no internal validation); e.g.
        ``skorch.dataset.ValidSplit(5)`` adds ``valid_loss`` to the history.
    callbacks : list or None, default=None
        Extra skorch callbacks, e.g. :class:`hw1sk.callbacks.WeightTrace`.
    predict_nonlinearity : callable, "auto" or None, default="auto"
    warm_start : bool, default=False
    verbose : int, default=0
    device : str, default="cpu"
    random_state : int, RandomState or None, default=None
        Seeds module initialisation and batch shuffling; the same value
        gives identical numbers on CPU.
    divergence_factor : float > 1 or None, default=1e4
        Training counts as diverged, and stops with a
        :class:`DivergenceWarning` and ``diverged_`` set, when a training
        batch loss is NaN or infinite, or above ``divergence_factor`` times
        the starting loss (``initial_loss_``: the first training batch's
        loss, at the initial weights).  None: only a non-finite loss
        counts.  Studies leave diverged runs out of their results and list
        them in ``diverged_``.
    **kwargs
        skorch's routed arguments: ``module__hidden``, ``optimizer__momentum``,
        ``callbacks__<name>__<arg>``, ``iterator_train__shuffle``, ...
"""


_STATE_DOC = """\
    diverged_ : bool
        Whether the training diverged (see ``divergence_factor``); training
        then stopped.
    divergence_reason_ : str or None
        When and how it diverged (the loss, the epoch, the rule).
    initial_loss_ : float or None
        The loss of the first training batch, at the initial weights.
    interrupted_ : bool
        Whether the last fit was stopped by Ctrl-C (SIGINT).  Unlike
        skorch, the ``KeyboardInterrupt`` is not swallowed: it propagates
        out of ``fit`` (so scripts and sweeps stop), and the net keeps the
        weights and history of the epochs it did train.  A
        ``KeyboardInterrupt`` raised by a callback (skorch's
        ``EarlyStopping``), or :class:`~hw1sk.interrupts.StopTraining`,
        ends training normally.
"""


class NeuralClassifier(_NeuralNetMixin, NeuralNetClassifier):
    __doc__ = """Neural-network classifier (skorch) trained on cross-entropy of logits.

    The module returns logits; :meth:`predict_proba` applies a softmax.
    Labels may be any discrete values (strings included); they are encoded
    as ``0..n_classes-1`` in the sorted order of ``classes_``.

    Parameters
    ----------""" + _SHARED_DOC.format(criterion="torch.nn.CrossEntropyLoss") + """
    classes : array-like or None, default=None
        All class labels, when the training labels may miss some.

    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
        Number of input values per sample (product of ``input_shape_``).
    input_shape_ : tuple of int
        Shape of one input sample.
    history : skorch History
        The raw training log; ``history_`` is the same as a DataFrame with
        columns ``epoch``, ``train_loss``, ``train_acc`` (running accuracy
        over the epoch's batches), ``train_batch_count``, ``dur``,
        ``diverged`` (and ``valid_*`` with a ``train_split``).
""" + _STATE_DOC + """
    See Also
    --------
    NeuralRegressor
    hw1sk.callbacks.WeightTrace, hw1sk.callbacks.GradNormTrace

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(60, 4); y = (X[:, 0] > 0).astype(int)
    >>> clf = NeuralClassifier(module__hidden=(8,), max_epochs=5, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape, list(clf.history_.columns[:3])
    ((3,), ['epoch', 'train_loss', 'train_loss_best'])
    """

    def __init__(self, module="mlp", *, criterion=torch.nn.CrossEntropyLoss,
                 optimizer=torch.optim.Adam, lr=1e-3, max_epochs=10, batch_size=64,
                 iterator_train=TensorBatchIterator, iterator_valid=TensorBatchIterator,
                 dataset=Dataset, train_split=None, callbacks=None,
                 predict_nonlinearity="auto", warm_start=False, verbose=0, device="cpu",
                 classes=None, random_state=None, divergence_factor=1e4, **kwargs):
        super().__init__(
            module, criterion=criterion, optimizer=optimizer, lr=lr, max_epochs=max_epochs,
            batch_size=batch_size, iterator_train=iterator_train,
            iterator_valid=iterator_valid, dataset=dataset, train_split=train_split,
            callbacks=callbacks, predict_nonlinearity=predict_nonlinearity,
            warm_start=warm_start, verbose=verbose, device=device, classes=classes,
            **kwargs,
        )
        self.random_state = random_state
        self.divergence_factor = divergence_factor

    def _n_module_outputs(self):
        try:
            return len(self.classes_)
        except AttributeError:
            return None

    def _validate_y(self, y, reset, classes=None):
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if reset:
            given = classes if classes is not None else self.classes
            if given is not None and len(given):
                self.classes_inferred_ = np.asarray(given)
            else:
                self.classes_inferred_ = np.unique(y)
        classes = self.classes_
        if (classes.dtype.kind in "iu" and y.dtype.kind in "iu"
                and np.array_equal(classes, np.arange(len(classes)))):
            # labels already 0..k-1: no search needed
            if y.size and (y.min() < 0 or y.max() >= len(classes)):
                unseen = np.setdiff1d(y, classes)
                raise ValueError(f"y contains labels {unseen.tolist()} that are not in "
                                 f"classes_ {classes.tolist()}.")
            return y.astype(np.int64, copy=False)
        order = np.argsort(classes, kind="stable")
        try:
            pos = np.searchsorted(classes, y, sorter=order)
        except TypeError as exc:
            raise ValueError(f"y has labels of type {y.dtype} that cannot be compared with "
                             f"classes_ {classes.tolist()}.") from exc
        pos = np.minimum(pos, len(classes) - 1)
        encoded = order[pos]
        unknown = classes[encoded] != y
        if np.any(unknown):
            raise ValueError(f"y contains labels {np.unique(y[unknown]).tolist()} that are "
                             f"not in classes_ {classes.tolist()}.")
        return encoded.astype(np.int64)

    def _batch_scores(self, y_pred, batch):
        yb = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        if isinstance(y_pred, tuple):
            y_pred = y_pred[0]
        if (not isinstance(yb, torch.Tensor) or y_pred.ndim != 2
                or yb.shape != y_pred.shape[:1]):
            return None
        return y_pred.detach(), yb

    def predict_proba(self, X):
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, ...)

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), float64
        """
        X = self._validate_predict_X(X)
        return super().predict_proba(X).astype(np.float64)

    def predict(self, X):
        """Predicted labels (from ``classes_``).

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, ...)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)  # checks fitted first
        return self.classes_[proba.argmax(axis=1)]


class NeuralRegressor(_NeuralNetMixin, NeuralNetRegressor):
    __doc__ = """Neural-network regressor (skorch) trained on the mean squared error.

    1-D targets are trained as ``(n, 1)`` and predicted as ``(n,)``; 2-D
    targets keep their shape.

    Parameters
    ----------""" + _SHARED_DOC.format(criterion="torch.nn.MSELoss") + """
    Attributes
    ----------
    module_ : torch.nn.Module
        The trained network.
    n_outputs_ : int
        Number of targets.
    n_features_in_ : int
        Number of input values per sample (product of ``input_shape_``).
    input_shape_ : tuple of int
        Shape of one input sample.
    history : skorch History
        The raw training log; ``history_`` is the same as a DataFrame with
        columns ``epoch``, ``train_loss``, ``train_batch_count``, ``dur``,
        ``diverged`` (and ``valid_loss`` with a ``train_split``).
""" + _STATE_DOC + """
    See Also
    --------
    NeuralClassifier
    hw1sk.models.mlp_for_budget

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralRegressor
    >>> X = np.linspace(-1, 1, 50)[:, None]; y = np.sin(3 * X[:, 0])
    >>> reg = NeuralRegressor(module__hidden=(16,), batch_size=-1, max_epochs=3,
    ...                       random_state=0).fit(X, y)
    >>> reg.predict(X).shape, len(reg.history_)
    ((50,), 3)
    """

    def __init__(self, module="mlp", *, criterion=torch.nn.MSELoss,
                 optimizer=torch.optim.Adam, lr=1e-3, max_epochs=10, batch_size=64,
                 iterator_train=TensorBatchIterator, iterator_valid=TensorBatchIterator,
                 dataset=Dataset, train_split=None, callbacks=None,
                 predict_nonlinearity="auto", warm_start=False, verbose=0, device="cpu",
                 random_state=None, divergence_factor=1e4, **kwargs):
        super().__init__(
            module, criterion=criterion, optimizer=optimizer, lr=lr, max_epochs=max_epochs,
            batch_size=batch_size, iterator_train=iterator_train,
            iterator_valid=iterator_valid, dataset=dataset, train_split=train_split,
            callbacks=callbacks, predict_nonlinearity=predict_nonlinearity,
            warm_start=warm_start, verbose=verbose, device=device, **kwargs,
        )
        self.random_state = random_state
        self.divergence_factor = divergence_factor

    def _n_module_outputs(self):
        return getattr(self, "n_outputs_", None)

    def _validate_y(self, y, reset, classes=None):
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        y = check_array(y, ensure_2d=False, dtype=np.float32, ensure_all_finite=True,
                        input_name="y")
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D, got an array of shape {y.shape}.")
        ndim = y.ndim
        if ndim == 1:
            y = y.reshape(-1, 1)
        if reset:
            self.n_outputs_ = int(y.shape[1])
            self._y_ndim_ = ndim
        elif y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y.shape[1]} outputs, but {type(self).__name__} "
                             f"is expecting {self.n_outputs_} outputs.")
        return y

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like or tensor of shape (n_samples, ...)

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs), float64
            1-D when the model was fitted on a 1-D ``y``.
        """
        X = self._validate_predict_X(X)
        # skorch's predict goes through predict_proba, which regressors do not expose
        y_pred = NeuralNet.predict_proba(self, X).astype(np.float64)
        if getattr(self, "_y_ndim_", 2) == 1 and y_pred.ndim == 2 and y_pred.shape[1] == 1:
            y_pred = y_pred[:, 0]
        return y_pred

    @available_if(lambda self: False)
    def predict_proba(self, X):
        """Not available: a regressor predicts values, see :meth:`predict`."""
        raise AttributeError("NeuralRegressor has no predict_proba; use predict.")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
