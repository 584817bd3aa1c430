"""HW1-3 generalization, part 2: final train and test scores against the number of parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.utils._param_validation import StrOptions

from ..seeding import spawn_seeds
from ._base import Study, apply_shortcuts, describe_estimator, shortcut_settings, train_run
from ._collect import (COUNT, OPTIONAL_COUNT, aggregate_seeds, completed, final_scores,
                       is_positive_int, run_seeds, sample_data, seeded_tasks, stack,
                       varying_settings)
from ._defaults import default_param_count_classifier

__all__ = ["ParamCountStudy", "default_param_count_classifier", "FAMILIES", "DEFAULT_WIDTHS"]

#: Model families: MLPs of ``depth`` hidden layers, CNNs of ``depth`` convolutions.
FAMILIES = ("mlp", "cnn")

#: Default widths per family: 12 MLPs 784-w-10 (3,190 to 407,050 parameters),
#: 10 CNNs of two w-channel convolutions (154 to 38,218 parameters).
DEFAULT_WIDTHS = {
    "mlp": (4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256, 512),
    "cnn": (3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
}
_DEFAULT_DEPTH = {"mlp": 1, "cnn": 2}
_WIDTH_PARAM = {"mlp": "module__hidden", "cnn": "module__channels"}
_COLUMNS = ["name", "family", "depth", "width", "n_params", "seed", "train_loss", "test_loss",
            "train_accuracy", "test_accuracy"]
_SCORES = ["train_loss", "test_loss", "train_accuracy", "test_accuracy"]


def _is_estimator(model):
    return hasattr(model, "fit") and hasattr(model, "get_params")


def _model_name(model):
    """A name of an entry of ``models``: its class or factory, or module (optimizer)."""
    if _is_estimator(model):
        described = describe_estimator(model)
        return f"{described.get('module', type(model).__name__)} ({described.get('optimizer')})"
    # a class or factory by its name (a partial: its function's), an instance by its class
    return getattr(getattr(model, "func", model), "__name__", type(model).__name__)


class ParamCountStudy(Study):
    """Train models of growing size; final train and test scores against parameter count.

    The models: ``widths`` of ints (per width ``w``, an :class:`~hw1sk.models.MLP`
    with ``depth`` hidden layers of ``w`` units or a :class:`~hw1sk.models.CNN`
    with ``depth`` convolutions of ``w`` channels), ``widths`` of tuples (one
    layout per model, e.g. ``[(16, 8), (32, 16)]``), or ``models``: modules
    (classes, factories or instances, each replacing the estimator's module
    and its ``module__`` arguments) or unfitted estimators (their own settings).

    Parameters
    ----------
    estimator : NeuralClassifier or None, default=None
        Trained as given but for the module, the seed and the shortcuts; None:
        :func:`default_param_count_classifier`.
    widths : sequence of int or of tuples of int, or None, default=None
        One model per entry (at least two, no repeats); None (and no
        ``models``): :data:`DEFAULT_WIDTHS` of the family.
    models : list or dict of modules, module factories or estimators, optional
        At least two; a dict names them, a list by class (module and optimizer).
    family : {"mlp", "cnn"}, default="mlp"
    depth : int or None, default=None
        Layers of each integer width; None: 1 for ``"mlp"``, 2 for ``"cnn"``.
    {shortcuts}
    {n_train_n_test}
    {n_seeds}
    random_state : int, RandomState or None, default=0
        Seeds the subsets and the runs (one first seed per model).

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (model, seed) by increasing ``n_params``: name (``"w=8"``,
        ``"w=(16, 8)"`` or the model's), family (``"custom"`` for ``models``),
        depth, width (None for ``models``), n_params, seed, train_loss,
        test_loss, train_accuracy, test_accuracy (final, eval mode).
    summary_ : pandas.DataFrame
        One row per model: name, family, depth, width, n_params, n_seeds, each
        score's mean over seeds (its name), ``_std``, 95% t-interval ``_ci_low``, ``_ci_high``.
    settings_ : dict
        Training settings (``"varies by model"`` where they differ, ``"per
        model"`` lists them with ``models``), models, sizes, data.
    estimators_ : dict
        Model name -> fitted estimator of its first seed, in the order of ``results_``.
    histories_ : pandas.DataFrame
        Training histories, with ``name``, ``seed``, ``n_params`` and ``width`` columns.

    See Also
    --------
    hw1sk.studies.random_labels.RandomLabelStudy
    hw1sk.plotting.generalization.plot_param_count

    Examples
    --------
    >>> from sklearn.datasets import make_classification
    >>> from hw1sk.studies.param_count import ParamCountStudy
    >>> X, y = make_classification(200, 10, random_state=0)
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
        "depth": OPTIONAL_COUNT,
        **dict.fromkeys(("n_train", "n_test"), OPTIONAL_COUNT),
        "n_seeds": COUNT,
    }
    _run_function = staticmethod(train_run)
    _held_out_in_training = True
    _shortcuts = ("max_epochs", "lr", "batch_size")
    _doc_values = {"runs": "Runs per model (each its own first seed)", "shortcut_keeps":
                   "each model's", "n_train_n_test_defaults": "10000, None",
                   "run_labels": "name, family, width, depth, seed"}

    def __init__(self, estimator=None, widths=None, models=None, family="mlp", depth=None,
                 max_epochs=None, lr=None, batch_size=None, n_train=10000, n_test=None,
                 n_seeds=1, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _layouts(self):
        """``(label, ("layout", widths))`` per entry of ``widths``."""
        widths = list(DEFAULT_WIDTHS[self.family] if self.widths is None else self.widths)
        ints = all(is_positive_int(w) for w in widths)
        if not ints and not all(isinstance(w, (tuple, list, np.ndarray)) and len(w)
                                and all(is_positive_int(v) for v in w) for w in widths):
            raise ValueError("widths must hold positive integers (one width per model) or "
                             f"tuples of them (the widths of each layer), got {self.widths!r}.")
        if not ints and self.depth is not None:
            raise ValueError("depth applies to integer widths only; a tuple of widths "
                             f"gives every layer, got depth={self.depth!r}.")
        depth = _DEFAULT_DEPTH[self.family] if self.depth is None else self.depth
        layouts = [(int(w),) * depth if ints else tuple(int(v) for v in w) for w in widths]
        if len(layouts) < 2 or len(set(layouts)) != len(layouts):
            raise ValueError(f"widths must hold at least two different widths without repeats, "
                             f"got {self.widths!r}.")
        if not ints:
            depth = len(layouts[0]) if len({len(t) for t in layouts}) == 1 else None
        return [({"name": f"w={int(w) if ints else t}", "width": int(w) if ints else t,
                  "depth": depth, "family": self.family}, ("layout", t))
                for w, t in zip(widths, layouts)]

    def _given_models(self):
        """``(label, (kind, model))`` per entry of ``models``, named by its key or its class."""
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
            out.append(({"name": name, "family": "custom", "width": None, "depth": None},
                        ("estimator" if _is_estimator(model) else "module", model)))
        if len(out) < 2:
            raise ValueError(f"models must hold at least two models, got {len(out)}.")
        return out

    def _build(self, template, kind, value):
        """The unfitted estimator of one model, with the study's shortcuts when set."""
        if kind == "layout":
            est = clone(template).set_params(module=self.family,
                                             **{_WIDTH_PARAM[self.family]: value})
        elif kind == "module":  # the template without its module and module__ arguments
            params = {k: v for k, v in template.get_params(deep=False).items()
                      if not k.startswith("module__")}
            est = type(template)(**{**params, "module": value})
        else:
            est = clone(value)
            if self.device is not None:
                est.set_params(device=self.device)
        return apply_shortcuts(est, self, self._shortcuts)

    def _prepare_data(self, X, y, X_test, y_test):
        self._specs = self._layouts() if self.models is None else self._given_models()
        data_seed, *self._run_seeds = spawn_seeds(self.random_state, 1 + len(self._specs))
        data = sample_data(X, y, X_test, y_test, self.n_train, self.n_test, data_seed)
        if self.models is None and self.family == "cnn" and data.X.ndim not in (3, 4):
            raise ValueError(f"family='cnn' needs images of shape (n, channels, height, width) "
                             f"or (n, height, width); X has shape {data.X.shape}.")
        return data

    def _default_estimator(self, data):
        return default_param_count_classifier()

    def _tasks(self, data, template):
        self._built = [self._build(template, *spec) for _, spec in self._specs]
        # the held-out set is scored once, after the last epoch
        return [pair for (label, _), est, seed in zip(self._specs, self._built, self._run_seeds)
                for pair in seeded_tasks(label, {
                    "estimator": est, "X": data.X, "y": data.y, "X_test": data.X_test,
                    "y_test": data.y_test, "test_every": int(est.max_epochs)},
                    run_seeds(seed, self.n_seeds))]

    def _collect(self, data, template, labels, runs):
        done = completed(labels, runs)
        rows = [{**label, "n_params": int(run["n_params"]), **final_scores(run)}
                for label, run in done]
        self.results_ = (pd.DataFrame(rows, columns=_COLUMNS)
                         .sort_values("n_params", kind="stable").reset_index(drop=True))
        estimators = {}
        for label, run in done:  # each model's first seed that did not diverge
            estimators.setdefault(label["name"], run["estimator"])
        self.estimators_ = {name: estimators[name] for name in dict.fromkeys(self.results_["name"])}
        self.histories_ = stack([({"name": label["name"], "seed": label["seed"],
                                   "n_params": int(run["n_params"]),
                                   "width": pd.Series([label["width"]] * len(run["history"]),
                                                      dtype=object, index=run["history"].index)},
                                  run["history"]) for label, run in done])
        means = aggregate_seeds(self.results_, ["name"], _SCORES)
        self.summary_ = (self.results_.drop_duplicates("name")[_COLUMNS[:5]]
                         .merge(means, on="name", how="left").reset_index(drop=True))
        self.summary_ = self.summary_[[*_COLUMNS[:5], "n_seeds", *means.columns[1:-1]]]

    def _settings(self, data, template):
        counts = dict(zip(self.results_["name"], self.results_["n_params"]))
        names = [label["name"] for label, _ in self._specs]
        return {**varying_settings(dict(zip(names, self._built)), self.models is not None),
                "family": self._family_words(), "varied": "module",
                "models": ", ".join(f"{n}: {counts[n]:,}" if n in counts else f"{n}: diverged"
                                    for n in names),
                "n_models": len(names), **shortcut_settings(self, self._shortcuts),
                "n_train": int(data.X.shape[0]), "n_test": int(data.X_test.shape[0]),
                "n_seeds": self.n_seeds, "random_state": self.random_state}

    def _family_words(self):  # "MLP, 1 hidden layer of width w"
        if self.models is not None:
            return "custom models"
        if isinstance(self._specs[0][0]["width"], tuple):
            return f"{self.family.upper()}, per-layer widths"
        unit = "hidden layer" if self.family == "mlp" else "convolution"
        depth = self._specs[0][0]["depth"]
        return f"{self.family.upper()}, {depth} {unit}{'s' if depth > 1 else ''} of width w"

