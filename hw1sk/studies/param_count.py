"""HW1-3 generalization, part 2: final train and test scores against the number of parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..seeding import spawn_seeds
from ._base import Study, train_run
from .random_labels import check_count, check_positive, generalization_data

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

# the module parameter that carries the widths of each family
_WIDTH_PARAM = {"mlp": "module__hidden", "cnn": "module__channels"}


def default_param_count_classifier(max_epochs=20):
    """The default training setup of the parameter-count study.

    A :class:`~hw1sk.estimators.NeuralClassifier` with Adam, lr 1e-3, batch
    size 128; the study sets its module (family and widths).

    Parameters
    ----------
    max_epochs : int, default=20

    Returns
    -------
    estimator : NeuralClassifier (unfitted)
    """
    from ..estimators import NeuralClassifier

    return NeuralClassifier(module="mlp", lr=1e-3, batch_size=128, max_epochs=max_epochs)


def _train_width(estimator, X, y, X_test, y_test, seed, family, width, depth):
    """Train one model of the family (a module-level sweep task); final scores only."""
    est = clone(estimator).set_params(module=family, **{_WIDTH_PARAM[family]: (width,) * depth})
    # the held-out set is scored once, after the last epoch
    run = train_run(est, X, y, X_test, y_test, seed=seed, test_every=int(est.max_epochs),
                    keep_estimator=False)
    return {"n_params": run["n_params"], "train": run["train"], "test": run["test"],
            "history": run["history"]}


class ParamCountStudy(Study):
    """Train models of one family with growing width; final scores against parameter count.

    For each width ``w`` in ``widths`` a model of ``family`` is trained on
    the same training subset: an :class:`~hw1sk.models.MLP` with ``depth``
    hidden layers of ``w`` units, or a :class:`~hw1sk.models.CNN` with
    ``depth`` convolutions of ``w`` channels.  Its final loss and accuracy
    on the training and the held-out data are recorded next to its number
    of parameters (HW1-3 "number of parameters vs generalization").

    Parameters
    ----------
    estimator : NeuralClassifier, optional
        Unfitted template; cloned, never modified.  The study sets its
        ``module`` (``"mlp"`` or ``"cnn"``) and ``module__hidden`` /
        ``module__channels``.  Default: :func:`default_param_count_classifier`
        (Adam, lr 1e-3, batch size 128).
    widths : sequence of int or None, default=None
        Hidden-layer widths (MLP) or channel counts (CNN), one model each; at
        least two.  None: :data:`DEFAULT_WIDTHS` of the family (12 MLPs of
        3,190 to 407,050 parameters on MNIST; 10 CNNs of 154 to 38,218).
    family : {"mlp", "cnn"}, default="mlp"
    depth : int or None, default=None
        Hidden layers (MLP) or convolutions (CNN), all of the same width;
        None: 1 for ``"mlp"``, 2 for ``"cnn"``.
    max_epochs : int or None, default=20
        Epochs of every model; None keeps the estimator's.
    lr : float or None, default=1e-3
        None keeps the estimator's.
    batch_size : int or None, default=128
        None keeps the estimator's.
    n_train : int or None, default=10000
        Training images drawn from ``X``; None uses all.
    n_test : int or None, default=None
        Held-out images drawn from ``X_test`` (or split off ``X``); None uses
        all (20% of ``X`` when split).
    n_jobs, backend, scheduler, cache_dir, progress
        How the runs are executed, see :func:`hw1sk.sweep.run_sweep`.
    random_state : int, RandomState or None, default=0
        Master seed of the subsets and of the runs (run ``i`` gets the
        ``i``-th of :func:`~hw1sk.seeding.spawn_seeds`); the same value gives
        the same numbers on CPU, whatever ``n_jobs``.
    device : str, default="cpu"

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per trained model, in order of ``widths``: ``family``,
        ``depth``, ``width``, ``n_params``, ``seed``, ``train_loss``,
        ``test_loss``, ``train_accuracy``, ``test_accuracy`` (final scores in
        eval mode on the whole training subset and held-out set).  Diverged
        runs are left out (see ``diverged_``).
    summary_ : pandas.DataFrame
        The rows of ``results_`` for the smallest model, the model with the
        best test accuracy and the largest model, with a first column
        ``model`` ("smallest", "best test accuracy", "largest").
    settings_ : dict
        Human-readable settings: family, depth, widths and parameter counts,
        optimizer, lr, batch size, epochs, data sizes, seed.
    histories_ : pandas.DataFrame
        Training histories of the models, with ``width`` and ``n_params`` columns added.
    diverged_ : pandas.DataFrame
        Runs whose training loss became non-finite.

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
    >>> study = ParamCountStudy(widths=(2, 8, 32), max_epochs=2, n_train=None).fit(X, y)
    >>> study.results_[["width", "n_params"]].values.tolist()
    [[2, 28], [8, 106], [32, 418]]
    """

    def __init__(self, estimator=None, widths=None, family="mlp", depth=None, max_epochs=20,
                 lr=1e-3, batch_size=128, n_train=10000, n_test=None, n_jobs=1,
                 backend="loky", scheduler=None, cache_dir=None, progress=False,
                 random_state=0, device="cpu"):
        self.estimator = estimator
        self.widths = widths
        self.family = family
        self.depth = depth
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.n_train = n_train
        self.n_test = n_test
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.cache_dir = cache_dir
        self.progress = progress
        self.random_state = random_state
        self.device = device

    def _check_params(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}.")
        widths = DEFAULT_WIDTHS[self.family] if self.widths is None else self.widths
        try:
            widths = tuple(widths)
        except TypeError:
            raise ValueError(f"widths must be a sequence of positive integers, "
                             f"got {self.widths!r}.") from None
        widths = tuple(check_count(w, "each of widths", allow_none=False) for w in widths)
        if len(widths) < 2 or len(set(widths)) != len(widths):
            raise ValueError(f"widths must hold at least two different widths without repeats, "
                             f"got {self.widths!r}.")
        depth = (_DEFAULT_DEPTH[self.family] if self.depth is None
                 else check_count(self.depth, "depth", allow_none=False))
        max_epochs = check_count(self.max_epochs, "max_epochs")
        lr = check_positive(self.lr, "lr")
        batch_size = check_count(self.batch_size, "batch_size")
        template = clone(self.estimator if self.estimator is not None
                         else default_param_count_classifier())
        template.set_params(device=self.device)
        for name, value in (("max_epochs", max_epochs), ("lr", lr), ("batch_size", batch_size)):
            if value is not None:
                template.set_params(**{name: value})
        return widths, depth, template

    def fit(self, X, y, X_test=None, y_test=None):
        """Train one model per width and record its final scores.

        Parameters
        ----------
        X, y : array-like of shape (n_samples, ...) and (n_samples,)
            Training data; images ``(n, channels, height, width)`` or
            ``(n, height, width)`` for ``family="cnn"``.
        X_test, y_test : array-like, optional
            Held-out data; default: split off ``(X, y)``.

        Returns
        -------
        self : ParamCountStudy
        """
        widths, depth, template = self._check_params()
        data_seed, *run_seeds = spawn_seeds(self.random_state, 1 + len(widths))
        X, y, X_test, y_test = generalization_data(X, y, X_test, y_test, self.n_train,
                                                   self.n_test, data_seed)
        if self.family == "cnn" and X.ndim not in (3, 4):
            raise ValueError(f"family='cnn' needs images of shape (n, channels, height, width) "
                             f"or (n, height, width); X has shape {X.shape}.")

        tasks = [{"estimator": template, "X": X, "y": y, "X_test": X_test, "y_test": y_test,
                  "seed": seed, "family": self.family, "width": width, "depth": depth}
                 for width, seed in zip(widths, run_seeds)]
        runs = self._run_tasks(_train_width, tasks, desc="ParamCountStudy")

        rows, histories = [], []
        for task, run in zip(tasks, runs):
            if run is None:
                continue  # diverged: listed in diverged_
            rows.append({"family": self.family, "depth": depth, "width": task["width"],
                         "n_params": int(run["n_params"]), "seed": task["seed"],
                         "train_loss": run["train"]["loss"], "test_loss": run["test"]["loss"],
                         "train_accuracy": run["train"]["accuracy"],
                         "test_accuracy": run["test"]["accuracy"]})
            histories.append(run["history"].assign(width=task["width"],
                                                   n_params=int(run["n_params"])))
        columns = ["family", "depth", "width", "n_params", "seed", "train_loss", "test_loss",
                   "train_accuracy", "test_accuracy"]
        self.results_ = pd.DataFrame(rows, columns=columns)
        self.histories_ = pd.concat(histories, ignore_index=True) if histories else pd.DataFrame()
        self.summary_ = _summary(self.results_)
        self.settings_ = self._settings(template, widths, depth, X, X_test)
        return self

    def _settings(self, template, widths, depth, X, X_test):
        optimizer = template.optimizer
        counts = dict(zip(self.results_["width"], self.results_["n_params"]))
        unit = "hidden layer" if self.family == "mlp" else "convolution"
        return {
            "family": f"{self.family.upper()}, {depth} {unit}{'s' if depth > 1 else ''} of width w",
            "models": ", ".join(f"w={w}: {counts[w]:,}" if w in counts else f"w={w}: diverged"
                                for w in widths),
            "n_models": len(widths),
            "optimizer": getattr(optimizer, "__name__", type(optimizer).__name__),
            "lr": float(template.lr),
            "batch_size": int(template.batch_size),
            "max_epochs": int(template.max_epochs),
            "n_train": int(X.shape[0]),
            "n_test": int(X_test.shape[0]),
            "random_state": self.random_state,
        }


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
