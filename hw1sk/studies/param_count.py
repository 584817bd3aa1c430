"""HW1-3 generalization, part 2: final train and test scores against the number of parameters."""

from __future__ import annotations

from numbers import Integral

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, StrOptions

from ..seeding import spawn_seeds
from ._defaults import default_param_count_classifier
from ._base import (
    SHORTCUT_CONSTRAINTS,
    Study,
    apply_shortcuts,
    describe_estimator,
    describe_value,
    prepare_data,
    shortcut_settings,
    train_run,
)

__all__ = ["ParamCountStudy", "default_param_count_classifier", "FAMILIES", "DEFAULT_WIDTHS"]

# the training settings the study sets when asked (None keeps the estimator's)
_SHORTCUTS = ("max_epochs", "lr", "batch_size")

#: Model families: MLPs of ``depth`` hidden layers, CNNs of ``depth`` convolutions.
FAMILIES = ("mlp", "cnn")

#: Default widths per family: 12 MLPs 784-w-10 (3,190 to 407,050 parameters),
#: 10 CNNs of two w-channel convolutions (154 to 38,218 parameters).
DEFAULT_WIDTHS = {
    "mlp": (4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512),
    "cnn": (3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
}

_DEFAULT_DEPTH = {"mlp": 1, "cnn": 2}

# the module parameter that carries the widths of each family
_WIDTH_PARAM = {"mlp": "module__hidden", "cnn": "module__channels"}

_COLUMNS = ["name", "family", "depth", "width", "n_params", "seed", "train_loss", "test_loss",
            "train_accuracy", "test_accuracy"]


def _train_model(estimator, X, y, X_test, y_test, seed):
    """Train one model as given (a module-level sweep task); final scores only."""
    # the held-out set is scored once, after the last epoch
    return train_run(estimator, X, y, X_test, y_test, seed=seed,
                     test_every=int(estimator.max_epochs), keep_estimator=True)


def _is_estimator(model):
    return hasattr(model, "fit") and hasattr(model, "get_params")


def _model_name(model):
    """A readable name of an entry of ``models``: its class or factory, or module + optimizer."""
    if _is_estimator(model):
        described = describe_estimator(model)
        return f"{described.get('module', type(model).__name__)} ({described.get('optimizer')})"
    if isinstance(model, torch.nn.Module):
        return type(model).__name__
    func = getattr(model, "func", model)  # functools.partial: the function it wraps
    return getattr(func, "__name__", type(model).__name__)


def _with_module(template, module):
    """``template`` with ``module`` in place of its module and of that module's arguments."""
    params = {k: v for k, v in template.get_params(deep=False).items()
              if not k.startswith("module__")}
    return type(template)(**{**params, "module": module})


class ParamCountStudy(Study):
    """Train models of growing size; final train and test scores against parameter count.

    The models are given in one of three ways, and each is trained on the
    same training subset:

    * ``widths`` of ints: for each width ``w`` a model of ``family``, an
      :class:`~hw1sk.models.MLP` with ``depth`` hidden layers of ``w``
      units or a :class:`~hw1sk.models.CNN` with ``depth`` convolutions of
      ``w`` channels;
    * ``widths`` of tuples: one per-layer layout per model, e.g.
      ``[(16, 8), (32, 16), (64, 32)]`` (hidden widths of the MLP, or
      channels of the CNN);
    * ``models``: a list (or dict name -> model) of ``torch.nn.Module``
      classes, factories or instances (each replaces the estimator's module
      and that module's ``module__`` arguments; ``n_in``/``n_out`` are
      inferred as usual), or unfitted estimators of any family, trained
      with their own settings.

    Every model's number of parameters is measured
    (:func:`~hw1sk.parameters.count_params`) and recorded next to its final
    loss and accuracy on the training and held-out data (HW1-3 "number of
    parameters vs generalization"); the results are ordered by it.

    Parameters
    ----------
    estimator : NeuralClassifier, optional
        Unfitted template, cloned and never modified.  Every model trains
        with its settings exactly, except the module (what the study
        varies: ``module`` and ``module__hidden`` / ``module__channels``
        for ``widths``, the module for module entries of ``models``), the
        seed, and ``max_epochs`` / ``lr`` / ``batch_size`` when those are
        set here.  Estimator entries of ``models`` are trained instead of
        it.  Default: :func:`default_param_count_classifier` (Adam, lr 1e-3,
        batch size 128, 20 epochs).
    widths : sequence of int, sequence of tuples of int, or None, default=None
        One model per entry, at least two, without repeats.  None (and no
        ``models``): :data:`DEFAULT_WIDTHS` of the family (12 MLPs of 3,190
        to 407,050 parameters on MNIST; 10 CNNs of 154 to 38,218).
    models : list or dict of nn.Module classes, factories, instances or estimators, optional
        The models themselves (at least two), instead of ``widths``; a dict
        names them, a list is named by class (module + optimizer for an
        estimator).
    family : {"mlp", "cnn"}, default="mlp"
        The family of the ``widths`` models.
    depth : int or None, default=None
        Hidden layers (MLP) or convolutions (CNN) of each integer width;
        None: 1 for ``"mlp"``, 2 for ``"cnn"``.  Only with integer widths.
    max_epochs : int or None, default=None
        Epochs of every model, when set (recorded in ``settings_``); None
        keeps each model's.
    lr : float or None, default=None
        Learning rate of every model, when set; None keeps each model's.
    batch_size : int or None, default=None
        Mini-batch size of every model, when set; None keeps each model's.
    n_train : int or None, default=10000
        Training images drawn from ``X``; None uses all.
    n_test : int or None, default=None
        Held-out images drawn from ``X_test`` (or split off ``X``); None uses
        all (20% of ``X`` when split).
    n_jobs, backend, scheduler, cache_dir, progress
        How the runs are executed, see :func:`hw1sk.sweep.run_sweep`.
    random_state : int, RandomState or None, default=0
        Master seed of the subsets and of the runs (the ``i``-th model as
        given gets the ``i``-th of :func:`~hw1sk.seeding.spawn_seeds`); the
        same value gives the same numbers on CPU, whatever ``n_jobs``.
    device : str or None, default=None
        Where every model trains; None keeps each model's.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per trained model, by increasing ``n_params`` (ties in the
        order given): ``name`` (``"w=8"``, ``"w=(16, 8)"`` or the model's
        name), ``family`` (``"custom"`` for ``models``), ``depth`` (None for
        ``models`` and for layouts of different depths), ``width`` (the int
        or the layout tuple; None for ``models``), ``n_params``, ``seed``,
        ``train_loss``, ``test_loss``, ``train_accuracy``, ``test_accuracy``
        (final scores in eval mode on the whole training subset and held-out
        set).  Diverged runs are left out (see ``diverged_``).
    summary_ : pandas.DataFrame
        The rows of ``results_`` for the smallest model, the model with the
        best test accuracy and the largest model, with a first column
        ``model`` ("smallest", "best test accuracy", "largest").
    settings_ : dict
        Every training setting (:func:`~hw1sk.studies._base.describe_estimator`;
        a setting that differs between models reads ``"varies by model"``,
        and with ``models`` ``"per model"`` lists those settings per model),
        the shortcuts set here, the models and their parameter counts, data
        sizes, seed.
    estimators_ : dict
        Model name (the ``name`` column) -> its fitted estimator, in the
        order of ``results_``.
    histories_ : pandas.DataFrame
        Training histories of the models, with ``name``, ``width`` and
        ``n_params`` columns added.
    diverged_ : pandas.DataFrame
        Runs whose training loss became non-finite (``name``, ``family``,
        ``width``, ``depth`` and the message).

    See Also
    --------
    hw1sk.studies.random_labels.RandomLabelStudy
    hw1sk.plotting.generalization.plot_param_count

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.studies.param_count import ParamCountStudy
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(200, 10).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> study = ParamCountStudy(widths=(32, 2, 8), max_epochs=2, n_train=None).fit(X, y)
    >>> study.results_[["width", "n_params"]].values.tolist()
    [[2, 28], [8, 106], [32, 418]]
    >>> layouts = ParamCountStudy(widths=[(8, 4), (16, 8)], max_epochs=1,
    ...                           n_train=None).fit(X, y)
    >>> layouts.results_[["name", "n_params"]].values.tolist()
    [['w=(8, 4)', 134], ['w=(16, 8)', 330]]
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        "widths": ["array-like", None],
        "models": [list, tuple, dict, None],
        "family": [StrOptions(set(FAMILIES))],
        "depth": [Interval(Integral, 1, None, closed="left"), None],
        **{name: SHORTCUT_CONSTRAINTS[name] for name in _SHORTCUTS},
        "n_train": [Interval(Integral, 1, None, closed="left"), None],
        "n_test": [Interval(Integral, 1, None, closed="left"), None],
    }
    _run_function = staticmethod(_train_model)

    def __init__(self, estimator=None, widths=None, models=None, family="mlp", depth=None,
                 max_epochs=None, lr=None, batch_size=None, n_train=10000, n_test=None,
                 n_jobs=1, backend="loky", scheduler=None, cache_dir=None, progress=False,
                 random_state=0, device=None):
        super().__init__(estimator=estimator, n_jobs=n_jobs, backend=backend,
                         scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                         device=device, random_state=random_state)
        self.widths = widths
        self.models = models
        self.family = family
        self.depth = depth
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.n_train = n_train
        self.n_test = n_test

    # ------------------------------------------------------------- the models
    def _layouts(self):
        """``(label, layout)`` per entry of ``widths``: ints repeated ``depth`` times, or tuples."""
        widths = list(DEFAULT_WIDTHS[self.family] if self.widths is None else self.widths)

        def positive(w):
            return isinstance(w, Integral) and not isinstance(w, bool) and w >= 1

        if all(positive(w) for w in widths):
            depth = _DEFAULT_DEPTH[self.family] if self.depth is None else self.depth
            layouts = [(int(w),) * depth for w in widths]
            labels = [{"name": f"w={int(w)}", "width": int(w), "depth": depth} for w in widths]
        elif all(isinstance(w, (tuple, list, np.ndarray)) and len(w) and
                 all(positive(v) for v in w) for w in widths):
            if self.depth is not None:
                raise ValueError("depth applies to integer widths only; a tuple of widths "
                                 f"gives every layer, got depth={self.depth!r}.")
            layouts = [tuple(int(v) for v in w) for w in widths]
            depth = len(layouts[0]) if len({len(t) for t in layouts}) == 1 else None
            labels = [{"name": f"w={t}", "width": t, "depth": depth} for t in layouts]
        else:
            raise ValueError("widths must hold positive integers (one width per model) or "
                             f"tuples of them (the widths of each layer), got {self.widths!r}.")
        if len(layouts) < 2 or len(set(layouts)) != len(layouts):
            raise ValueError(f"widths must hold at least two different widths without repeats, "
                             f"got {self.widths!r}.")
        return [({**label, "family": self.family}, ("layout", t))
                for label, t in zip(labels, layouts)]

    def _given_models(self):
        """``(label, entry)`` per entry of ``models``, named by its key or its class."""
        if self.widths is not None or self.depth is not None:
            raise ValueError("Pass widths (with family and depth) or models, not both.")
        items = (list(self.models.items()) if isinstance(self.models, dict)
                 else [(None, m) for m in self.models])
        out, seen = [], {}
        for key, model in items:
            if not (_is_estimator(model) or isinstance(model, torch.nn.Module) or callable(model)):
                raise ValueError(f"each of models must be a torch.nn.Module class, factory or "
                                 f"instance, or an unfitted estimator; got {model!r}.")
            name = str(key) if key is not None else _model_name(model)
            seen[name] = seen.get(name, 0) + 1
            name = name if seen[name] == 1 else f"{name} #{seen[name]}"
            kind = "estimator" if _is_estimator(model) else "module"
            out.append(({"name": name, "family": "custom", "width": None, "depth": None},
                        (kind, model)))
        if len(out) < 2:
            raise ValueError(f"models must hold at least two models, got {len(out)}.")
        return out

    def _build(self, template, kind, value):
        """The unfitted estimator of one model, with the study's shortcuts when set."""
        if kind == "layout":
            est = clone(template).set_params(module=self.family,
                                             **{_WIDTH_PARAM[self.family]: value})
        elif kind == "module":
            est = _with_module(template, value)
        else:
            est = clone(value)
            if self.device is not None:
                est.set_params(device=self.device)
        return apply_shortcuts(est, self, _SHORTCUTS)

    # ------------------------------------------------------------------ hooks
    def _prepare_data(self, X, y, X_test, y_test):
        self._specs = self._layouts() if self.models is None else self._given_models()
        data_seed, *self._run_seeds = spawn_seeds(self.random_state, 1 + len(self._specs))
        # a split of n_test samples, or of 20% when n_test is None
        data = prepare_data(X, y, X_test, y_test,
                            test_size=None if self.n_test is not None else 0.2,
                            n_train=self.n_train, n_test=self.n_test,
                            seeds=spawn_seeds(data_seed, 3))
        if self.models is None and self.family == "cnn" and data.X.ndim not in (3, 4):
            raise ValueError(f"family='cnn' needs images of shape (n, channels, height, width) "
                             f"or (n, height, width); X has shape {data.X.shape}.")
        return data

    def _default_estimator(self, data):
        return default_param_count_classifier()

    def _template_estimator(self, data):
        return apply_shortcuts(super()._template_estimator(data), self, _SHORTCUTS)

    def _tasks(self, data, template):
        self._built = [self._build(template, *spec) for _, spec in self._specs]
        return [(label, {"estimator": est, "X": data.X, "y": data.y, "X_test": data.X_test,
                         "y_test": data.y_test, "seed": seed})
                for (label, _), est, seed in zip(self._specs, self._built, self._run_seeds)]

    def _collect(self, data, template, labels, runs):
        rows, histories, estimators = [], [], {}
        for label, seed, run in zip(labels, self._run_seeds, runs):
            if run is None:
                continue  # diverged: listed in diverged_
            n_params = int(run["n_params"])
            rows.append({**label, "n_params": n_params, "seed": seed,
                         "train_loss": run["train"]["loss"], "test_loss": run["test"]["loss"],
                         "train_accuracy": run["train"]["accuracy"],
                         "test_accuracy": run["test"]["accuracy"]})
            history = run["history"].copy()
            history["name"], history["n_params"] = label["name"], n_params
            history["width"] = pd.Series([label["width"]] * len(history), dtype=object,
                                         index=history.index)
            histories.append(history)
            estimators[label["name"]] = run["estimator"]
        results = pd.DataFrame(rows, columns=_COLUMNS)
        self.results_ = results.sort_values("n_params", kind="stable").reset_index(drop=True)
        self.estimators_ = {name: estimators[name] for name in self.results_["name"]}
        self.histories_ = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
        self.summary_ = _summary(self.results_)

    def _settings(self, data, template):
        counts = dict(zip(self.results_["name"], self.results_["n_params"]))
        names = [label["name"] for label, _ in self._specs]
        settings = _varying_settings(dict(zip(names, self._built)), self.models is not None)
        settings.update({
            "family": self._family_words(),
            "varied": "module",
            "models": ", ".join(f"{n}: {counts[n]:,}" if n in counts else f"{n}: diverged"
                                for n in names),
            "n_models": len(names),
            **shortcut_settings(self, _SHORTCUTS),
            "n_train": int(data.X.shape[0]),
            "n_test": int(data.X_test.shape[0]),
            "random_state": self.random_state,
        })
        return settings

    def _family_words(self):
        if self.models is not None:
            return "custom models"
        unit = "hidden layer" if self.family == "mlp" else "convolution"
        depth = self._specs[0][0]["depth"]
        if isinstance(self._specs[0][0]["width"], tuple):
            return f"{self.family.upper()}, per-layer widths"
        return f"{self.family.upper()}, {depth} {unit}{'s' if depth > 1 else ''} of width w"


def _varying_settings(estimators, per_model):
    """The training settings of every model: one value where all agree, else "varies by model".

    With ``per_model``, ``"per model"`` gives the differing settings of each model.
    """
    described = {name: describe_estimator(est) for name, est in estimators.items()}
    keys = list(dict.fromkeys(k for d in described.values() for k in d))
    out, varying = {}, []
    for key in keys:
        values = {str(d.get(key)) for d in described.values()}
        if len(values) == 1:
            out[key] = next(iter(described.values())).get(key)
        else:
            out[key] = "varies by model"
            varying.append(key)
    if per_model and varying:
        out["per model"] = {name: {k: describe_value(d.get(k)) for k in varying}
                            for name, d in described.items()}
    return out


def _summary(results):
    """The smallest, the best-on-test and the largest model."""
    columns = ["model", *results.columns]
    if results.empty:
        return pd.DataFrame(columns=columns)
    picks = [("smallest", results["n_params"].idxmin()),
             ("best test accuracy", results["test_accuracy"].idxmax()),
             ("largest", results["n_params"].idxmax())]
    return pd.DataFrame([{"model": name, **results.loc[i].to_dict()} for name, i in picks],
                        columns=columns)
