"""HW1-3 flatness, part 2: sensitivity and sharpness of models trained with varied batch sizes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.base import clone

from ..seeding import as_seed, spawn_seeds
from ._base import Study, train_run
from .interpolation import (
    _check_positive_int,
    _check_positive_real,
    default_flatness_classifier,
    describe_module,
    study_data,
)

__all__ = ["SensitivityStudy"]

_MEASURES = ["sensitivity", "loss_input_gradient_norm", "sharpness", "top_hessian_eigenvalue"]
_COLUMNS = ["batch_size", "lr", "max_epochs", "n_steps", "seed", "n_params", "train_loss",
            "test_loss", "train_accuracy", "test_accuracy", *_MEASURES]


def _batch_size_run(estimator, X, y, X_test, y_test, seed, batch_size, lr, X_sens, y_sens,
                    X_curv, y_curv, output, sharpness, sharpness_epsilon, sharpness_steps,
                    sharpness_restarts, hessian_top, hessian_max_iter):
    """Train one model and measure it (a module-level sweep task).

    Returns ``{"row": dict of the results_ columns, "history": DataFrame,
    "model": str}``.
    """
    from .. import curvature, generalization
    from ..evaluation import encode_targets

    est = clone(estimator).set_params(batch_size=int(batch_size), lr=float(lr))
    run = train_run(est, X, y, X_test, y_test, seed=seed, keep_estimator=True)
    net = run["estimator"]
    module, criterion = net.module_, net.criterion_
    # the measures take the module and its criterion: labels as the criterion takes them
    y_sens, y_curv = encode_targets(net, y_sens), encode_targets(net, y_curv)
    row = {
        "batch_size": int(batch_size), "lr": float(lr), "max_epochs": int(net.max_epochs),
        # optimizer steps actually taken: epochs x batches per epoch (last one partial)
        "n_steps": int(len(run["history"]) * math.ceil(len(X) / batch_size)),
        "seed": int(seed), "n_params": int(run["n_params"]),
        "train_loss": run["train"]["loss"], "test_loss": run["test"]["loss"],
        "train_accuracy": run["train"]["accuracy"], "test_accuracy": run["test"]["accuracy"],
        "sensitivity": generalization.input_jacobian_norm(module, X_sens, output=output),
        "loss_input_gradient_norm": generalization.loss_input_gradient_norm(
            module, criterion, X_sens, y_sens),
        "sharpness": math.nan,
        "top_hessian_eigenvalue": math.nan,
    }
    if sharpness:
        row["sharpness"] = generalization.sharpness(
            module, criterion, X_curv, y_curv, epsilon=sharpness_epsilon,
            n_steps=sharpness_steps, n_restarts=sharpness_restarts, random_state=seed)
    if hessian_top:
        row["top_hessian_eigenvalue"] = float(curvature.top_hessian_eigenvalues(
            module, criterion, X_curv, y_curv, k=1, max_iter=hessian_max_iter, tol=1e-4,
            random_state=seed)[-1])
    return {"row": row, "history": run["history"], "model": describe_module(module)}


class SensitivityStudy(Study):
    """Models that differ only in batch size: generalization, sensitivity, sharpness.

    One model is trained per batch size, all from the same initial weights
    (one seed for all: the same initialization and the same shuffling seed),
    with the same learning rate and the same number of epochs.  Equal epochs
    mean equal compute (every model computes the gradient of each training
    sample ``max_epochs`` times), so a large-batch model takes proportionally
    fewer optimizer steps (column ``n_steps``).  For each model the study
    records the final loss and accuracy on the training and held-out data, and

    - ``sensitivity``: the per-sample mean of the Frobenius norm of the
      Jacobian of the network output (softmax, or logits with
      ``output="logits"``) with respect to the input
      (:func:`hw1sk.generalization.input_jacobian_norm`, Novak et al., 2018);
    - ``loss_input_gradient_norm``: the cheaper per-sample mean of
      :math:`\\|\\partial \\ell(f(x_i), y_i) / \\partial x_i\\|_2`
      (:func:`hw1sk.generalization.loss_input_gradient_norm`);
    - ``sharpness``: Keskar et al.'s ε-sharpness of the training loss
      (:func:`hw1sk.generalization.sharpness`), if ``sharpness=True``;
    - ``top_hessian_eigenvalue``: the largest eigenvalue of the training-loss
      Hessian, by Lanczos on Hessian-vector products
      (:func:`hw1sk.curvature.top_hessian_eigenvalues`), if ``hessian_top=True``.

    The two sensitivities are measured on ``n_eval`` samples of the split
    ``sensitivity_on``; sharpness and the Hessian eigenvalue on ``n_eval``
    training samples.  Each subset is drawn once, so all models are measured on
    the same samples.

    Parameters
    ----------
    estimator : NeuralClassifier, optional
        Unfitted template; cloned, never modified; its ``batch_size`` and
        ``lr`` are replaced.  Default:
        :func:`~hw1sk.studies.interpolation.default_flatness_classifier`
        (MLP 784-128-10, Adam).
    batch_sizes : sequence of int, default=(16, 64, 256, 1024, 4096)
        One model per batch size (distinct values).
    lr : float or None, default=1e-3
        Learning rate of every model (None keeps the estimator's).
    max_epochs : int or None, default=5
        Epochs of every model (None keeps the estimator's).
    output : {"softmax", "logits"}, default="softmax"
        Which output the sensitivity differentiates.
    sensitivity_on : {"test", "train"}, default="test"
        Where the two sensitivities are measured.
    n_eval : int or None, default=1000
        Samples used for each measure (None: all of the split).
    sharpness : bool, default=True
        Compute the ε-sharpness.
    sharpness_epsilon : float, default=1e-3
        Relative box size ε of the sharpness.
    sharpness_steps : int, default=20
        Projected-ascent steps per start of the sharpness estimate.
    sharpness_restarts : int, default=3
        Starts of the sharpness estimate (the first at the minimum itself).
    hessian_top : bool, default=True
        Compute the top Hessian eigenvalue.
    hessian_max_iter : int, default=50
        Lanczos iterations at most (it stops earlier when the top Ritz value
        has converged to a relative residual of 1e-4).
    test_size : float or int, default=0.2
        Held-out part of ``(X, y)`` when ``fit`` gets no ``X_test``.
    n_jobs, backend, scheduler, cache_dir, progress
        How the runs are executed, see :func:`hw1sk.sweep.run_sweep`.
    random_state : int, RandomState or None, default=0
        Master seed of the split, the training seed, the measurement subsets
        and the random starts of sharpness and Lanczos.
    device : str, default="cpu"

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per batch size (diverged runs left out), columns
        ``batch_size``, ``lr``, ``max_epochs``, ``n_steps``, ``seed``,
        ``n_params``, ``train_loss``, ``test_loss``, ``train_accuracy``,
        ``test_accuracy``, ``sensitivity``, ``loss_input_gradient_norm``,
        ``sharpness`` and ``top_hessian_eigenvalue`` (NaN when switched off).
    summary_ : pandas.DataFrame
        One row per batch size: ``batch_size``, ``test_accuracy``,
        ``loss_gap`` (test minus train loss), ``accuracy_gap`` (train minus
        test accuracy), ``sensitivity``, ``sharpness``, ``top_hessian_eigenvalue``.
    settings_ : dict
        Human-readable settings: model, parameter count, optimizer, lr,
        epochs, batch sizes, seed, data sizes, measurement settings.
    histories_ : pandas.DataFrame
        Training histories (with per-epoch ``test_loss``, ``test_acc``) and a
        ``batch_size`` column.
    eval_indices_ : dict
        ``"sensitivity"``: indices (into the ``sensitivity_on`` split) of the
        samples the two sensitivities are measured on; ``"curvature"``:
        indices of the training samples of sharpness and the Hessian.
    diverged_ : pandas.DataFrame
        Runs whose training loss became non-finite.

    See Also
    --------
    hw1sk.plotting.flatness.plot_sensitivity, hw1sk.plotting.flatness.plot_sharpness

    References
    ----------
    .. [1] Novak, Bahri, Abolafia, Pennington, Sohl-Dickstein, "Sensitivity and
       Generalization in Neural Networks: an Empirical Study", ICLR 2018.
    .. [2] Keskar, Mudigere, Nocedal, Smelyanskiy, Tang, "On Large-Batch
       Training for Deep Learning: Generalization Gap and Sharp Minima", ICLR 2017.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.studies.sensitivity import SensitivityStudy
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(200, 5).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> study = SensitivityStudy(batch_sizes=(8, 64), max_epochs=2, n_eval=50,
    ...                          sharpness_steps=2, hessian_max_iter=5).fit(X, y)
    >>> study.results_[["batch_size", "n_steps"]].values.tolist()
    [[8, 40], [64, 6]]
    """

    def __init__(self, estimator=None, batch_sizes=(16, 64, 256, 1024, 4096), lr=1e-3,
                 max_epochs=5, output="softmax", sensitivity_on="test", n_eval=1000,
                 sharpness=True, sharpness_epsilon=1e-3, sharpness_steps=20,
                 sharpness_restarts=3, hessian_top=True, hessian_max_iter=50,
                 test_size=0.2, n_jobs=1, backend="loky", scheduler=None, cache_dir=None,
                 progress=False, random_state=0, device="cpu"):
        self.estimator = estimator
        self.batch_sizes = batch_sizes
        self.lr = lr
        self.max_epochs = max_epochs
        self.output = output
        self.sensitivity_on = sensitivity_on
        self.n_eval = n_eval
        self.sharpness = sharpness
        self.sharpness_epsilon = sharpness_epsilon
        self.sharpness_steps = sharpness_steps
        self.sharpness_restarts = sharpness_restarts
        self.hessian_top = hessian_top
        self.hessian_max_iter = hessian_max_iter
        self.test_size = test_size
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.cache_dir = cache_dir
        self.progress = progress
        self.random_state = random_state
        self.device = device

    def _check_params(self):
        try:
            batch_sizes = list(self.batch_sizes)
        except TypeError:
            batch_sizes = []
        if not batch_sizes or len(set(batch_sizes)) != len(batch_sizes):
            raise ValueError(f"batch_sizes must be a non-empty sequence of distinct positive "
                             f"integers, got {self.batch_sizes!r}.")
        batch_sizes = [_check_positive_int(b, "batch_sizes[i]") for b in batch_sizes]
        if self.output not in ("softmax", "logits"):
            raise ValueError(f"output must be 'softmax' or 'logits', got {self.output!r}.")
        if self.sensitivity_on not in ("train", "test"):
            raise ValueError(f"sensitivity_on must be 'train' or 'test', got "
                             f"{self.sensitivity_on!r}.")
        for name in ("sharpness", "hessian_top"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}.")
        checked = {
            "lr": _check_positive_real(self.lr, "lr", allow_none=True),
            "max_epochs": _check_positive_int(self.max_epochs, "max_epochs", allow_none=True),
            "n_eval": _check_positive_int(self.n_eval, "n_eval", allow_none=True),
            "sharpness_epsilon": _check_positive_real(self.sharpness_epsilon, "sharpness_epsilon"),
            "sharpness_steps": _check_positive_int(self.sharpness_steps, "sharpness_steps"),
            "sharpness_restarts": _check_positive_int(self.sharpness_restarts,
                                                      "sharpness_restarts"),
            "hessian_max_iter": _check_positive_int(self.hessian_max_iter, "hessian_max_iter"),
        }
        return batch_sizes, checked

    def fit(self, X, y, X_test=None, y_test=None):
        """Train one model per batch size and measure each.

        Parameters
        ----------
        X, y : array-like of shape (n_samples, ...) and (n_samples,)
            Training data; any class labels (``{3, 7}``, strings), encoded
            through each fitted model's ``classes_`` wherever the module's
            criterion is evaluated.
        X_test, y_test : array-like, optional
            Held-out data; default: ``test_size`` of ``(X, y)``.

        Returns
        -------
        self : SensitivityStudy
        """
        batch_sizes, p = self._check_params()
        split_seed, run_seed, subset_seed = spawn_seeds(as_seed(self.random_state), 3)
        X, y, X_test, y_test = study_data(X, y, X_test, y_test, self.test_size, split_seed)
        template = clone(self.estimator if self.estimator is not None
                         else default_flatness_classifier()).set_params(device=self.device)
        if p["max_epochs"] is not None:
            template.set_params(max_epochs=p["max_epochs"])
        lr = p["lr"] if p["lr"] is not None else float(template.lr)

        rng = np.random.RandomState(subset_seed)
        X_pool, y_pool = (X_test, y_test) if self.sensitivity_on == "test" else (X, y)
        sens_idx = _subset_indices(X_pool.shape[0], p["n_eval"], rng)
        curv_idx = _subset_indices(X.shape[0], p["n_eval"], rng)
        X_sens, y_sens = X_pool[sens_idx], y_pool[sens_idx]
        X_curv, y_curv = X[curv_idx], y[curv_idx]
        self.eval_indices_ = {"sensitivity": sens_idx, "curvature": curv_idx}

        common = {
            "estimator": template, "X": X, "y": y, "X_test": X_test, "y_test": y_test,
            "seed": run_seed, "lr": lr, "X_sens": X_sens, "y_sens": y_sens,
            "X_curv": X_curv, "y_curv": y_curv, "output": self.output,
            "sharpness": bool(self.sharpness), "sharpness_epsilon": p["sharpness_epsilon"],
            "sharpness_steps": p["sharpness_steps"],
            "sharpness_restarts": p["sharpness_restarts"],
            "hessian_top": bool(self.hessian_top), "hessian_max_iter": p["hessian_max_iter"],
        }
        tasks = [{**common, "batch_size": b} for b in batch_sizes]
        runs = self._run_tasks(_batch_size_run, tasks, desc="SensitivityStudy")

        done = [r for r in runs if r is not None]
        self.results_ = pd.DataFrame([r["row"] for r in done], columns=_COLUMNS)
        self.histories_ = (pd.concat([r["history"].assign(batch_size=r["row"]["batch_size"])
                                      for r in done], ignore_index=True)
                           if done else pd.DataFrame())
        self.summary_ = pd.DataFrame({
            "batch_size": self.results_["batch_size"],
            "test_accuracy": self.results_["test_accuracy"],
            "loss_gap": self.results_["test_loss"] - self.results_["train_loss"],
            "accuracy_gap": self.results_["train_accuracy"] - self.results_["test_accuracy"],
            "sensitivity": self.results_["sensitivity"],
            "sharpness": self.results_["sharpness"],
            "top_hessian_eigenvalue": self.results_["top_hessian_eigenvalue"],
        })
        self.settings_ = self._settings(template, lr, run_seed, X, X_test, X_sens, X_curv, done)
        return self

    def _settings(self, template, lr, run_seed, X, X_test, X_sens, X_curv, done):
        settings = {}
        if done:
            settings["model"] = done[0]["model"]
            settings["n_params"] = int(done[0]["row"]["n_params"])
        optimizer = template.optimizer
        settings.update({
            "optimizer": getattr(optimizer, "__name__", type(optimizer).__name__),
            "lr": lr,
            "max_epochs": int(template.max_epochs),
            "batch_sizes": str(tuple(int(b) for b in self.batch_sizes)),
            "seed (all models)": int(run_seed),
            "n_train": int(X.shape[0]),
            "n_test": int(X_test.shape[0]),
            "sensitivity": (f"mean Frobenius norm of d {self.output}/d input on "
                            f"{X_sens.shape[0]} {self.sensitivity_on} samples"),
            "sharpness": (f"epsilon={self.sharpness_epsilon:g}, {self.sharpness_steps} steps x "
                          f"{self.sharpness_restarts} starts on {X_curv.shape[0]} train samples"
                          if self.sharpness else "off"),
            "top Hessian eigenvalue": (f"Lanczos, <= {self.hessian_max_iter} iterations on "
                                       f"{X_curv.shape[0]} train samples"
                                       if self.hessian_top else "off"),
            "random_state": self.random_state,
        })
        return settings


def _subset_indices(n_samples, n, rng):
    """Sorted indices of ``n`` samples drawn without replacement (all when n is None or too big)."""
    if n is None or n >= n_samples:
        return np.arange(n_samples)
    return np.sort(rng.choice(n_samples, n, replace=False))
