"""HW1-3 generalization, part 1: an over-parameterized network memorizes random labels."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import StrOptions

from ..parameters import count_params
from ..seeding import spawn_seeds
from ._base import Study, shortcut_settings, train_run
from ._collect import (COUNT, OPTIONAL_COUNT, aggregate_seeds, completed, data_sizes,
                       final_scores, model_settings, run_seeds, sample_data, seeded_tasks, stack)
from ._defaults import default_random_label_classifier

__all__ = ["RandomLabelStudy", "default_random_label_classifier", "LABEL_METHODS"]

#: How the training labels are randomized, see :func:`hw1sk.datasets.random_labels`.
LABEL_METHODS = ("shuffle", "uniform")

_COLUMNS = ["seed", "epoch", "split", "loss", "accuracy"]
_SCORES = ["train_loss", "train_accuracy", "test_loss", "test_accuracy"]
_SUMMARY_COLUMNS = ["n_train", "n_test", "n_epochs", "n_seeds", *_SCORES, "chance_accuracy",
                    "fit_time",
                    *[f"{c}_{s}" for c in _SCORES for s in ("std", "ci_low", "ci_high")]]


def classes_of(y, y_test, given=None):
    """``given`` (the estimator's ``classes``), else the sorted labels of ``y`` and ``y_test``.

    A ValueError for real-valued labels, fewer than 2 classes, or labels not in ``given``.
    """
    for name, labels in (("y", y), ("y_test", y_test)):
        if labels.dtype.kind not in "iuUSOb":
            raise ValueError(f"{name} must hold integer class labels or strings (such as "
                             f"{{3, 7}} or 'three'), got dtype {labels.dtype}.")
    observed = np.unique(np.concatenate([y, y_test]))
    classes = observed if given is None or not len(given) else np.asarray(given)
    missing = np.setdiff1d(observed, classes)
    if missing.size:
        raise ValueError(f"y and y_test hold labels {missing.tolist()} that are not in "
                         f"the estimator's classes {classes.tolist()}.")
    if len(classes) < 2:
        raise ValueError(f"A classification study needs at least 2 classes, got "
                         f"{classes.tolist()}.")
    return classes


def _random_class_labels(y, classes, random_state, method):
    """:func:`hw1sk.datasets.random_labels` on the indices of ``y`` in ``classes``, mapped back."""
    from ..datasets import random_labels

    order = np.argsort(classes, kind="stable")
    codes = order[np.searchsorted(classes, y, sorter=order)]
    return classes[random_labels(codes, n_classes=len(classes), random_state=random_state,
                                 method=method)]


def _timed_run(estimator, X, y, X_test, y_test, seed):
    """:func:`~hw1sk.studies._base.train_run` with its ``fit_time`` (a sweep task)."""
    start = time.perf_counter()
    run = train_run(estimator, X, y, X_test, y_test, seed=seed)
    return {**run, "fit_time": time.perf_counter() - start}


def _curves(seed, history):
    """The train and test curves of one run, per (epoch, split): rows of ``results_``."""
    return (pd.concat([pd.DataFrame({"seed": seed, "epoch": history["epoch"].to_numpy(),
                                     "split": split,
                                     "loss": history[f"{split}_loss"].to_numpy(float),
                                     "accuracy": history[f"{split}_acc"].to_numpy(float)})
                       for split in ("train", "test")], ignore_index=True)
            .sort_values(["epoch", "split"], kind="stable")[_COLUMNS])


class RandomLabelStudy(Study):
    """Train a network on random labels: it memorizes them, its test accuracy stays at chance.

    Each epoch the network is scored on held-out images with their true labels
    (Zhang et al., 2017).  The classes (the estimator's ``classes``, else every
    label of ``y`` and ``y_test``) are declared to the estimator, so uniform
    draws that miss one still train every output.  With ``n_seeds`` the run is
    repeated: the random labels stay the same, the seed varies the
    initialization and the batch order.

    Parameters
    ----------
    estimator : NeuralClassifier or None, default=None
        Trained as given but for the labels, the seed, ``classes`` and the
        shortcuts; None: :func:`default_random_label_classifier`.
    {n_train_n_test}
    {shortcuts}
    label_method : {"shuffle", "uniform"}, default="shuffle"
        Permute the true labels (their histogram kept), or draw them uniformly.
    {n_seeds}
    random_state : int, RandomState or None, default=0
        Seeds the subsets, the random labels and the runs.

    Attributes
    ----------
    results_ : pandas.DataFrame
        Per (seed, epoch, split): seed, epoch, split (``"train"``: random labels,
        running means over the epoch; ``"test"``: true labels, eval mode), loss, accuracy.
    summary_ : pandas.DataFrame
        n_train, n_test, n_epochs, n_seeds (runs that did not diverge), the means
        over seeds of the final train_loss, train_accuracy (eval mode),
        test_loss, test_accuracy, chance_accuracy, fit_time (seconds); each
        score's ``_std`` and 95% t-interval ``_ci_low``, ``_ci_high``.
    y_train_, random_labels_ : ndarray of shape (n_train,)
        True labels of the training subset; the labels trained on.
    estimator_, history_ : NeuralClassifier or None, pandas.DataFrame
        The first seed's fitted network and history; None when it diverged.
    estimators_, histories_ : dict, pandas.DataFrame
        Seed -> fitted network; every history with a ``seed`` column.

    See Also
    --------
    hw1sk.datasets.random_labels
    hw1sk.plotting.generalization.plot_random_labels
    hw1sk.studies.param_count.ParamCountStudy

    References
    ----------
    .. [1] Zhang, Bengio, Hardt, Recht, Vinyals, "Understanding deep learning
       requires rethinking generalization", ICLR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(300, 20).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> from hw1sk.estimators import NeuralClassifier
    >>> from hw1sk.studies.random_labels import RandomLabelStudy
    >>> study = RandomLabelStudy(NeuralClassifier(module__hidden=(64,)), n_train=100,
    ...                          n_test=50, max_epochs=3).fit(X, y)
    >>> study.results_.shape, list(study.results_.columns)
    ((6, 5), ['seed', 'epoch', 'split', 'loss', 'accuracy'])
    >>> bool((np.sort(study.random_labels_) == np.sort(study.y_train_)).all())
    True
    >>> study.settings_["batch_size"], study.settings_["max_epochs"]  # the estimator's, 3 set here
    (64, 3)
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        **dict.fromkeys(("n_train", "n_test"), OPTIONAL_COUNT),
        "label_method": [StrOptions(set(LABEL_METHODS))],
        "n_seeds": COUNT,
    }
    _run_function = staticmethod(_timed_run)
    _held_out_in_training = True
    _shortcuts = ("max_epochs", "lr", "batch_size")
    _doc_values = {"runs": "Training runs on the same random labels",
                   "run_labels": "lr, batch_size, seed", "n_train_n_test_defaults": "5000, 2000"}

    def __init__(self, estimator=None, n_train=5000, n_test=2000, max_epochs=None, lr=None,
                 batch_size=None, label_method="shuffle", n_seeds=1, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _prepare_data(self, X, y, X_test, y_test):
        data_seed, self._label_seed, self._run_seed = spawn_seeds(self.random_state, 3)
        data = sample_data(X, y, X_test, y_test, self.n_train, self.n_test, data_seed)
        self._classes = classes_of(data.y, data.y_test, getattr(self.estimator, "classes", None))
        return data

    def _default_estimator(self, data):
        return default_random_label_classifier()

    def _template_estimator(self, data):
        # the classes declared: uniform draws may miss one
        return super()._template_estimator(data).set_params(classes=self._classes)

    def _tasks(self, data, template):
        self.y_train_ = data.y
        self.random_labels_ = _random_class_labels(data.y, self._classes, self._label_seed,
                                                   self.label_method)
        label = {"lr": template.lr, "batch_size": template.batch_size}
        return seeded_tasks(label, {"estimator": template, "X": data.X, "y": self.random_labels_,
                                    "X_test": data.X_test, "y_test": data.y_test},
                            run_seeds(self._run_seed, self.n_seeds))

    def _collect(self, data, template, labels, runs):
        done = completed(labels, runs)  # the seeds that did not diverge
        self.estimators_ = {label["seed"]: run["estimator"] for label, run in done}
        self.histories_ = stack([({"seed": label["seed"]}, run["history"]) for label, run in done],
                                first=True)
        self.estimator_, self.history_ = ((None, pd.DataFrame()) if not done
                                          else (done[0][1]["estimator"], done[0][1]["history"]))
        self.results_ = (pd.concat([_curves(label["seed"], run["history"]) for label, run in done],
                                   ignore_index=True) if done else pd.DataFrame(columns=_COLUMNS))
        sizes = {"n_train": len(data.X), "n_test": len(data.X_test),
                 "chance_accuracy": 1.0 / len(self._classes)}
        finals = pd.DataFrame([{**sizes, "n_epochs": len(run["history"]), **final_scores(run),
                                "fit_time": run["fit_time"]} for _, run in done],
                              columns=[*sizes, "n_epochs", *_SCORES, "fit_time"])
        self.summary_ = aggregate_seeds(finals, [*sizes, "n_epochs"], [*_SCORES, "fit_time"])[
            _SUMMARY_COLUMNS]

    def _settings(self, data, template):
        module = None if self.estimator_ is None else self.estimator_.module_
        n_params = None if module is None else count_params(module)
        return {**({} if module is None else model_settings(module, n_params)),
                "varied": "training labels", **shortcut_settings(self, self._shortcuts),
                "label_method": self.label_method, "n_classes": len(self._classes),
                "chance_accuracy": 1.0 / len(self._classes), **data_sizes(data),
                **({} if module is None else
                   {"params per training image": round(n_params / data.X.shape[0], 1)}),
                "run seed": int(self._run_seed), "n_seeds": self.n_seeds,
                "random_state": self.random_state}
