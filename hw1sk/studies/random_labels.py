"""HW1-3 generalization, part 1: an over-parameterized network memorizes random labels."""

from __future__ import annotations

import time
from numbers import Integral

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, StrOptions

from ..seeding import spawn_seeds
from ._base import (
    SHORTCUT_CONSTRAINTS,
    Study,
    apply_shortcuts,
    prepare_data,
    shortcut_settings,
    train_run,
)
from ._defaults import default_random_label_classifier, describe_module

__all__ = ["RandomLabelStudy", "default_random_label_classifier", "LABEL_METHODS"]

# the training settings the study sets when asked (None keeps the estimator's)
_SHORTCUTS = ("max_epochs", "lr", "batch_size")

#: How the training labels are randomized, see :func:`hw1sk.datasets.random_labels`.
LABEL_METHODS = ("shuffle", "uniform")

_COLUMNS = ["epoch", "split", "loss", "accuracy"]
_SUMMARY_COLUMNS = ["n_train", "n_test", "n_epochs", "train_loss", "train_accuracy",
                    "test_loss", "test_accuracy", "chance_accuracy", "fit_time"]


def classes_of(y, y_test, given=None):
    """The classes of a classification study: ``given``, or every label of ``y`` and ``y_test``.

    Parameters
    ----------
    y, y_test : ndarray of shape (n_samples,)
        Class labels of any kind (``{3, 7}``, strings); not real numbers.
    given : array-like or None, default=None
        Classes declared by the estimator (its ``classes`` parameter); they
        must hold every label of ``y`` and ``y_test``.

    Returns
    -------
    classes : ndarray of shape (n_classes,)
        Sorted unique labels (``given`` in its own order when declared).

    Raises
    ------
    ValueError
        For real-valued labels, fewer than two classes, or labels missing from ``given``.
    """
    for name, labels in (("y", y), ("y_test", y_test)):
        if labels.dtype.kind not in "iuUSOb":
            raise ValueError(f"{name} must hold integer class labels or strings (such as "
                             f"{{3, 7}} or 'three'), got dtype {labels.dtype}.")
    observed = np.unique(np.concatenate([y, y_test]))
    if given is not None and len(given):
        classes = np.asarray(given)
        missing = np.setdiff1d(observed, classes)
        if missing.size:
            raise ValueError(f"y and y_test hold labels {missing.tolist()} that are not in "
                             f"the estimator's classes {classes.tolist()}.")
    else:
        classes = observed
    if len(classes) < 2:
        raise ValueError(f"A classification study needs at least 2 classes, got "
                         f"{classes.tolist()}.")
    return classes


def _random_class_labels(y, classes, random_state, method):
    """Random labels drawn from ``classes`` (:func:`hw1sk.datasets.random_labels` on indices).

    The labels are mapped to their indices in ``classes``, randomized there
    and mapped back, so labels ``0..k-1`` give exactly the draws of
    ``random_labels(y, n_classes=k)`` and any other labels the same draws
    in their own values.
    """
    from ..datasets import random_labels

    order = np.argsort(classes, kind="stable")
    codes = order[np.searchsorted(classes, y, sorter=order)]
    drawn = random_labels(codes, n_classes=len(classes), random_state=random_state,
                          method=method)
    return classes[drawn]


def _train_random_label_run(estimator, X, y, X_test, y_test, seed):
    """One training run on random labels, timed (a module-level sweep task)."""
    start = time.perf_counter()
    run = train_run(estimator, X, y, X_test, y_test, seed=seed, keep_estimator=True)
    run["fit_time"] = time.perf_counter() - start
    return run


class RandomLabelStudy(Study):
    """Train a network on images whose training labels were replaced by random ones.

    A subset of ``n_train`` training images gets labels with no relation to
    the images (:func:`hw1sk.datasets.random_labels`: a random permutation of
    the true labels, or uniform draws); a network is trained on them and
    scored every epoch on held-out images with their *true* labels.  An
    over-parameterized network drives its training loss to zero — it
    memorizes — while its test accuracy stays at chance (HW1-3 "can a
    network fit random labels", after Zhang et al., 2017).

    The classes are those declared by the estimator's ``classes``, else
    every label of ``y`` and ``y_test`` (integers such as ``0..9`` or
    ``{3, 7}``, or strings); the study declares them to the estimator, so
    uniform draws that miss a class still train a full-width output.
    ``fit(X, y, X_test=None, y_test=None)`` splits the held-out images off
    ``(X, y)`` when no ``X_test`` is given.

    Parameters
    ----------
    estimator : NeuralClassifier, optional
        Unfitted template, cloned and never modified.  The run trains with
        its settings exactly, except the labels (what the study varies), the
        seed, its ``classes`` (declared as above) and ``max_epochs`` /
        ``lr`` / ``batch_size`` when those are set here.  Default:
        :func:`default_random_label_classifier` (MLP 784-512-512-10, Adam,
        lr 1e-3, batch size 128, 60 epochs).
    n_train : int or None, default=5000
        Training images drawn (without replacement) from ``X``; None uses all.
    n_test : int or None, default=2000
        Held-out images drawn from ``X_test`` (or split off ``X`` when
        ``fit`` gets no ``X_test``); None uses all (20% of ``X`` when split).
    max_epochs : int or None, default=None
        Epochs, when set (recorded in ``settings_``); None keeps the estimator's.
    lr : float or None, default=None
        Learning rate, when set; None keeps the estimator's.
    batch_size : int or None, default=None
        Mini-batch size, when set; None keeps the estimator's.
    label_method : {"shuffle", "uniform"}, default="shuffle"
        ``"shuffle"`` permutes the true training labels (the label histogram
        is kept exactly); ``"uniform"`` draws each label uniformly over the
        classes.
    n_jobs, backend, scheduler, cache_dir, progress
        How the training run is executed, see :func:`hw1sk.sweep.run_sweep`
        (one run: ``n_jobs`` matters only with a ``cache_dir`` or dask).
    random_state : int, RandomState or None, default=0
        Master seed of the subsets, the random labels and the training run;
        the same value gives the same numbers on CPU.
    device : str or None, default=None
        Where the network is trained and evaluated; None keeps the estimator's.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (epoch, split): columns ``epoch`` (1, 2, ...), ``split``
        (``"train"``: the random training labels, ``"test"``: the held-out
        images with true labels), ``loss`` and ``accuracy``.  The train rows
        are the training loop's running means over the epoch's mini-batches
        (skorch's ``train_loss``/``train_acc``, taken while the weights
        change); the test rows are scored at the end of each epoch in eval
        mode.  For the final numbers use ``summary_``.  Empty when the run
        diverged.
    summary_ : pandas.DataFrame
        One row: ``n_train``, ``n_test``, ``n_epochs``, the final
        ``train_loss``, ``train_accuracy`` (on the random labels, evaluated
        after training in eval mode on the whole training subset),
        ``test_loss``, ``test_accuracy``, ``chance_accuracy`` (1 / n_classes)
        and ``fit_time`` (seconds of the training run, evaluation included).
    settings_ : dict
        Every training setting of the estimator
        (:func:`~hw1sk.studies._base.describe_estimator`: optimizer and its
        arguments, lr, batch size, epochs, ...), the shortcuts set here,
        model, parameter count, label method, data sizes, seeds.
    y_train_ : ndarray of shape (n_train,)
        True labels of the training subset.
    random_labels_ : ndarray of shape (n_train,)
        The random labels the network was trained on.
    estimator_ : NeuralClassifier or None
        The fitted network of the (single) run; None when it diverged.
    history_ : pandas.DataFrame
        The raw training history (``train_loss``, ``train_acc``, ``test_loss``,
        ``test_acc``, ``dur`` and every column the estimator's callbacks record).
    diverged_ : pandas.DataFrame
        The run (``seed``, ``lr``, ``batch_size``), when its training loss
        became non-finite.

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
    >>> from hw1sk.estimators import NeuralClassifier
    >>> from hw1sk.studies.random_labels import RandomLabelStudy
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(300, 20).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> study = RandomLabelStudy(NeuralClassifier(module__hidden=(64,)), n_train=100,
    ...                          n_test=50, max_epochs=3).fit(X, y)
    >>> study.results_.shape, list(study.results_.columns)
    ((6, 4), ['epoch', 'split', 'loss', 'accuracy'])
    >>> bool((np.sort(study.random_labels_) == np.sort(study.y_train_)).all())
    True
    >>> study.settings_["batch_size"], study.settings_["max_epochs"]  # the estimator's, 3 set here
    (64, 3)
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        "n_train": [Interval(Integral, 1, None, closed="left"), None],
        "n_test": [Interval(Integral, 1, None, closed="left"), None],
        **{name: SHORTCUT_CONSTRAINTS[name] for name in _SHORTCUTS},
        "label_method": [StrOptions(set(LABEL_METHODS))],
    }
    _run_function = staticmethod(_train_random_label_run)

    def __init__(self, estimator=None, n_train=5000, n_test=2000, max_epochs=None, lr=None,
                 batch_size=None, label_method="shuffle", n_jobs=1, backend="loky",
                 scheduler=None, cache_dir=None, progress=False, random_state=0,
                 device=None):
        super().__init__(estimator=estimator, n_jobs=n_jobs, backend=backend,
                         scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                         device=device, random_state=random_state)
        self.n_train = n_train
        self.n_test = n_test
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.label_method = label_method

    # ------------------------------------------------------------------ hooks
    def _prepare_data(self, X, y, X_test, y_test):
        data_seed, self._label_seed, self._run_seed = spawn_seeds(self.random_state, 3)
        # a split of n_test samples, or of 20% when n_test is None
        data = prepare_data(X, y, X_test, y_test,
                            test_size=None if self.n_test is not None else 0.2,
                            n_train=self.n_train, n_test=self.n_test,
                            seeds=spawn_seeds(data_seed, 3))
        given = getattr(self.estimator, "classes", None) if self.estimator is not None else None
        self._classes = classes_of(data.y, data.y_test, given)
        return data

    def _default_estimator(self, data):
        return default_random_label_classifier()

    def _template_estimator(self, data):
        template = super()._template_estimator(data)
        # all classes declared: uniform draws on a small subset may miss one
        template.set_params(classes=self._classes)
        return apply_shortcuts(template, self, _SHORTCUTS)

    def _tasks(self, data, template):
        y_random = _random_class_labels(data.y, self._classes, self._label_seed,
                                        self.label_method)
        self.y_train_, self.random_labels_ = data.y, y_random
        label = {"seed": int(self._run_seed), "lr": template.lr,
                 "batch_size": template.batch_size}
        return [(label, {"estimator": template, "X": data.X, "y": y_random,
                         "X_test": data.X_test, "y_test": data.y_test,
                         "seed": self._run_seed})]

    def _collect(self, data, template, labels, runs):
        (run,) = runs
        self._n_params = None if run is None else int(run["n_params"])
        if run is None:  # diverged: listed in diverged_, nothing to show
            self.estimator_, self.history_ = None, pd.DataFrame()
            self.results_ = pd.DataFrame(columns=_COLUMNS)
            self.summary_ = pd.DataFrame(columns=_SUMMARY_COLUMNS)
            return
        history = run["history"]
        self.estimator_, self.history_ = run["estimator"], history
        epoch = history["epoch"].to_numpy()
        frames = [pd.DataFrame({"epoch": epoch, "split": split,
                                "loss": history[f"{split}_loss"].to_numpy(float),
                                "accuracy": history[f"{split}_acc"].to_numpy(float)})
                  for split in ("train", "test")]
        self.results_ = (pd.concat(frames, ignore_index=True)
                         .sort_values(["epoch", "split"], kind="stable")
                         .reset_index(drop=True)[_COLUMNS])
        self.summary_ = pd.DataFrame([{
            "n_train": len(data.X), "n_test": len(data.X_test), "n_epochs": len(history),
            "train_loss": run["train"]["loss"], "train_accuracy": run["train"]["accuracy"],
            "test_loss": run["test"]["loss"], "test_accuracy": run["test"]["accuracy"],
            "chance_accuracy": 1.0 / len(self._classes), "fit_time": run["fit_time"],
        }], columns=_SUMMARY_COLUMNS)

    def _settings(self, data, template):
        n_classes, n_params = len(self._classes), self._n_params
        settings = {}
        if n_params is not None:
            settings["model"] = describe_module(self.estimator_.module_)
            settings["n_params"] = n_params
        settings.update({
            "varied": "training labels",
            **shortcut_settings(self, _SHORTCUTS),
            "label_method": self.label_method,
            "n_classes": n_classes,
            "chance_accuracy": 1.0 / n_classes,
            "n_train": int(data.X.shape[0]),
            "n_test": int(data.X_test.shape[0]),
        })
        if n_params is not None:
            settings["params per training image"] = round(n_params / data.X.shape[0], 1)
        settings["run seed"] = int(self._run_seed)
        settings["random_state"] = self.random_state
        return settings
