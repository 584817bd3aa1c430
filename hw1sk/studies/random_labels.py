"""HW1-3 generalization, part 1: an over-parameterized network memorizes random labels."""

from __future__ import annotations

import time
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_X_y

from ..seeding import spawn_seeds
from ._base import Study, train_run

__all__ = ["RandomLabelStudy", "default_random_label_classifier", "generalization_data",
           "LABEL_METHODS"]

#: How the training labels are randomized, see :func:`hw1sk.datasets.random_labels`.
LABEL_METHODS = ("shuffle", "uniform")

# 784-512-512-10 (669,706 parameters): memorizes 5,000 random MNIST labels in ~50 epochs of Adam
_DEFAULT_HIDDEN = (512, 512)


def default_random_label_classifier(max_epochs=60):
    """The default network of the random-label study.

    A :class:`~hw1sk.estimators.NeuralClassifier` MLP with two hidden layers
    of 512 ReLU units (784-512-512-10 on MNIST, 669,706 parameters, over 100
    per training image at the default 5,000 images), Adam, lr 1e-3, batch
    size 128.

    Parameters
    ----------
    max_epochs : int, default=60

    Returns
    -------
    estimator : NeuralClassifier (unfitted)
    """
    from ..estimators import NeuralClassifier

    return NeuralClassifier(module="mlp", module__hidden=_DEFAULT_HIDDEN, lr=1e-3,
                            batch_size=128, max_epochs=max_epochs)


def check_count(value, name, allow_none=True):
    """``value`` as a positive int (or None when allowed); ValueError naming ``name`` otherwise."""
    if allow_none and value is None:
        return None
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}, "
                         f"got {value!r}.")
    return int(value)


def check_positive(value, name, allow_none=True):
    """``value`` as a positive finite float (or None when allowed)."""
    if allow_none and value is None:
        return None
    if (not isinstance(value, Real) or isinstance(value, bool) or not np.isfinite(value)
            or value <= 0):
        raise ValueError(f"{name} must be a positive number{' or None' if allow_none else ''}, "
                         f"got {value!r}.")
    return float(value)


def _subset(n_available, n_wanted, name, seed):
    """Sorted indices of ``n_wanted`` of ``n_available`` rows, drawn with ``seed`` (all if None)."""
    if n_wanted is None:
        return np.arange(n_available)
    if n_wanted > n_available:
        raise ValueError(f"{name}={n_wanted} is larger than the {n_available} samples available.")
    rng = check_random_state(seed)
    return np.sort(rng.choice(n_available, size=n_wanted, replace=False))


def generalization_data(X, y, X_test=None, y_test=None, n_train=None, n_test=None,
                        random_state=0):
    """Validated, reproducibly subsampled training and held-out data of a study.

    When ``X_test`` and ``y_test`` are None, ``n_test`` samples (20% when
    ``n_test`` is None) are split off ``(X, y)`` with
    :func:`sklearn.model_selection.train_test_split`.  Then ``n_train``
    training and ``n_test`` held-out samples are drawn without replacement
    (all when None); the subsets keep the order of the data.

    Parameters
    ----------
    X, y : array-like of shape (n_samples, ...) and (n_samples,)
    X_test, y_test : array-like or None
    n_train, n_test : int or None
    random_state : int, RandomState or None, default=0
        Seeds the split and the subsets.

    Returns
    -------
    X, y, X_test, y_test : ndarray
    """
    n_train = check_count(n_train, "n_train")
    n_test = check_count(n_test, "n_test")
    X, y = check_X_y(X, y, allow_nd=True)
    if (X_test is None) != (y_test is None):
        raise ValueError("Pass both X_test and y_test, or neither.")
    split_seed, train_seed, test_seed = spawn_seeds(random_state, 3)
    if X_test is None:
        if n_test is not None and n_test >= len(X):
            raise ValueError(f"n_test={n_test} leaves no training data: X has {len(X)} samples.")
        X, X_test, y, y_test = train_test_split(
            X, y, test_size=n_test if n_test is not None else 0.2, random_state=split_seed)
        n_test = None  # the split already has the requested size
    else:
        X_test, y_test = check_X_y(X_test, y_test, allow_nd=True)
        if X_test.shape[1:] != X.shape[1:]:
            raise ValueError(f"X_test has samples of shape {X_test.shape[1:]}, but X has "
                             f"{X.shape[1:]}.")
    train = _subset(len(X), n_train, "n_train", train_seed)
    test = _subset(len(X_test), n_test, "n_test", test_seed)
    return X[train], y[train], X_test[test], y_test[test]


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

    Parameters
    ----------
    estimator : NeuralClassifier, optional
        Unfitted template; cloned, never modified.  Default:
        :func:`default_random_label_classifier` (MLP 784-512-512-10, Adam).
    n_train : int or None, default=5000
        Training images drawn (without replacement) from ``X``; None uses all.
    n_test : int or None, default=2000
        Held-out images drawn from ``X_test`` (or split off ``X`` when
        ``fit`` gets no ``X_test``); None uses all (20% of ``X`` when split).
    max_epochs : int or None, default=60
        Epochs; None keeps the estimator's.
    lr : float or None, default=1e-3
        Learning rate; None keeps the estimator's.
    batch_size : int or None, default=128
        Mini-batch size; None keeps the estimator's.
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
    device : str, default="cpu"
        Where the network is trained and evaluated.

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
        Human-readable settings: model, parameter count, optimizer, lr, batch
        size, epochs, label method, data sizes, seeds.
    y_train_ : ndarray of shape (n_train,)
        True labels of the training subset.
    random_labels_ : ndarray of shape (n_train,)
        The random labels the network was trained on.
    estimator_ : NeuralClassifier or None
        The fitted network (None when the run diverged).
    history_ : pandas.DataFrame
        The raw training history (``train_loss``, ``train_acc``, ``test_loss``,
        ``test_acc``, ``dur``, ...).
    diverged_ : pandas.DataFrame
        The run, when its training loss became non-finite.

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
    """

    def __init__(self, estimator=None, n_train=5000, n_test=2000, max_epochs=60, lr=1e-3,
                 batch_size=128, label_method="shuffle", n_jobs=1, backend="loky",
                 scheduler=None, cache_dir=None, progress=False, random_state=0,
                 device="cpu"):
        self.estimator = estimator
        self.n_train = n_train
        self.n_test = n_test
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.label_method = label_method
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.cache_dir = cache_dir
        self.progress = progress
        self.random_state = random_state
        self.device = device

    def _template(self, classes):
        max_epochs = check_count(self.max_epochs, "max_epochs")
        lr = check_positive(self.lr, "lr")
        batch_size = check_count(self.batch_size, "batch_size")
        if self.label_method not in LABEL_METHODS:
            raise ValueError(f"label_method must be one of {LABEL_METHODS}, "
                             f"got {self.label_method!r}.")
        template = clone(self.estimator if self.estimator is not None
                         else default_random_label_classifier())
        # all classes declared: uniform draws on a small subset may miss one
        template.set_params(device=self.device, classes=classes)
        for name, value in (("max_epochs", max_epochs), ("lr", lr), ("batch_size", batch_size)):
            if value is not None:
                template.set_params(**{name: value})
        return template

    def fit(self, X, y, X_test=None, y_test=None):
        """Randomize the training labels, train, and score train and test every epoch.

        Parameters
        ----------
        X, y : array-like of shape (n_samples, ...) and (n_samples,)
            Training images and their true labels: integers (``0..9``,
            ``{3, 7}``) or strings.  The classes are those declared by the
            estimator's ``classes``, else every label of ``y`` and ``y_test``.
        X_test, y_test : array-like, optional
            Held-out images and true labels; default: split off ``(X, y)``.

        Returns
        -------
        self : RandomLabelStudy
        """
        data_seed, label_seed, run_seed = spawn_seeds(self.random_state, 3)
        X, y, X_test, y_test = generalization_data(X, y, X_test, y_test, self.n_train,
                                                   self.n_test, data_seed)
        given = getattr(self.estimator, "classes", None) if self.estimator is not None else None
        classes = classes_of(y, y_test, given)
        n_classes = len(classes)
        template = self._template(classes)
        y_random = _random_class_labels(y, classes, label_seed, self.label_method)
        self.y_train_, self.random_labels_ = y, y_random

        task = {"estimator": template, "X": X, "y": y_random, "X_test": X_test,
                "y_test": y_test, "seed": run_seed}
        (run,) = self._run_tasks(_train_random_label_run, [task], desc="RandomLabelStudy")

        columns = ["epoch", "split", "loss", "accuracy"]
        summary_columns = ["n_train", "n_test", "n_epochs", "train_loss", "train_accuracy",
                           "test_loss", "test_accuracy", "chance_accuracy", "fit_time"]
        if run is None:  # diverged: listed in diverged_, nothing to show
            self.estimator_, self.history_ = None, pd.DataFrame()
            self.results_ = pd.DataFrame(columns=columns)
            self.summary_ = pd.DataFrame(columns=summary_columns)
        else:
            history = run["history"]
            self.estimator_, self.history_ = run["estimator"], history
            epoch = history["epoch"].to_numpy()
            frames = [pd.DataFrame({"epoch": epoch, "split": split,
                                    "loss": history[f"{split}_loss"].to_numpy(float),
                                    "accuracy": history[f"{split}_acc"].to_numpy(float)})
                      for split in ("train", "test")]
            self.results_ = (pd.concat(frames, ignore_index=True)
                             .sort_values(["epoch", "split"], kind="stable")
                             .reset_index(drop=True)[columns])
            self.summary_ = pd.DataFrame([{
                "n_train": len(X), "n_test": len(X_test), "n_epochs": len(history),
                "train_loss": run["train"]["loss"], "train_accuracy": run["train"]["accuracy"],
                "test_loss": run["test"]["loss"], "test_accuracy": run["test"]["accuracy"],
                "chance_accuracy": 1.0 / n_classes, "fit_time": run["fit_time"],
            }], columns=summary_columns)
        self.settings_ = self._settings(template, run, X, X_test, n_classes, run_seed)
        return self

    def _settings(self, template, run, X, X_test, n_classes, run_seed):
        from ._defaults import describe_module

        settings = {}
        if run is not None:
            settings["model"] = describe_module(run["estimator"].module_)
            settings["n_params"] = int(run["n_params"])
        optimizer = template.optimizer
        settings["optimizer"] = getattr(optimizer, "__name__", type(optimizer).__name__)
        settings["lr"] = float(template.lr)
        settings["batch_size"] = int(template.batch_size)
        settings["max_epochs"] = int(template.max_epochs)
        settings["label_method"] = self.label_method
        settings["n_classes"] = n_classes
        settings["chance_accuracy"] = 1.0 / n_classes
        settings["n_train"] = int(X.shape[0])
        settings["n_test"] = int(X_test.shape[0])
        if run is not None:
            settings["params per training image"] = round(run["n_params"] / X.shape[0], 1)
        settings["run seed"] = int(run_seed)
        settings["random_state"] = self.random_state
        return settings
