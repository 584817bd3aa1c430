"""HW1-3 flatness, part 2: sensitivity and sharpness of models trained with varied batch sizes."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.utils._param_validation import Interval, StrOptions

from ..seeding import as_seed, spawn_seeds
from ._base import (
    SHORTCUT_CONSTRAINTS,
    Study,
    apply_shortcuts,
    prepare_data,
    shortcut_settings,
    subset_indices,
    train_run,
)
from ._defaults import default_flatness_classifier, describe_module

__all__ = ["SensitivityStudy"]

# the training settings the study sets when asked (None keeps the estimator's)
_SHORTCUTS = ("lr", "max_epochs")

_MEASURES = ["sensitivity", "loss_input_gradient_norm", "sharpness", "top_hessian_eigenvalue"]
_COLUMNS = ["batch_size", "lr", "max_epochs", "n_steps", "seed", "n_params", "train_loss",
            "test_loss", "train_accuracy", "test_accuracy", *_MEASURES]


def _batch_size_run(estimator, X, y, X_test, y_test, seed, batch_size, X_sens, y_sens,
                    X_curv, y_curv, output, sharpness, sharpness_epsilon, sharpness_steps,
                    sharpness_restarts, hessian_top, hessian_max_iter):
    """Train one model at ``batch_size`` and measure it (a module-level sweep task).

    Returns ``{"row": dict of the results_ columns, "history": DataFrame,
    "model": str, "estimator": the fitted net}``.
    """
    from .. import curvature, generalization
    from ..evaluation import encode_targets

    est = clone(estimator).set_params(batch_size=int(batch_size))
    run = train_run(est, X, y, X_test, y_test, seed=seed, keep_estimator=True)
    net = run["estimator"]
    module, criterion = net.module_, net.criterion_
    # the measures take the module and its criterion: labels as the criterion takes them
    y_sens, y_curv = encode_targets(net, y_sens), encode_targets(net, y_curv)
    row = {
        "batch_size": int(batch_size), "lr": float(net.lr), "max_epochs": int(net.max_epochs),
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
    return {"row": row, "history": run["history"], "model": describe_module(module),
            "estimator": net}


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
        Unfitted template, cloned and never modified.  Every run trains with
        its settings exactly, except ``batch_size`` (what the study varies),
        the seed, and ``lr`` / ``max_epochs`` when those are set here.
        Default:
        :func:`~hw1sk.studies._defaults.default_flatness_classifier`
        (MLP 784-128-10, Adam, lr 1e-3, 5 epochs).
    batch_sizes : sequence of int, default=(16, 64, 256, 1024, 4096)
        One model per batch size (distinct values).
    lr : float or None, default=None
        Learning rate of every model, when set (recorded in ``settings_``);
        None keeps the estimator's.
    max_epochs : int or None, default=None
        Epochs of every model, when set; None keeps the estimator's.
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
    device : str or None, default=None
        Where every model trains; None keeps the estimator's.

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
    estimators_ : dict
        Batch size -> the fitted estimator of that run.
    diverged_ : pandas.DataFrame
        Runs that diverged (``batch_size`` and the message).

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

    _parameter_constraints = {
        **Study._parameter_constraints,
        "batch_sizes": ["array-like"],
        **{name: SHORTCUT_CONSTRAINTS[name] for name in _SHORTCUTS},
        "output": [StrOptions({"softmax", "logits"})],
        "sensitivity_on": [StrOptions({"train", "test"})],
        "n_eval": [Interval(Integral, 1, None, closed="left"), None],
        "sharpness": ["boolean"],
        "sharpness_epsilon": [Interval(Real, 0, None, closed="neither")],
        "sharpness_steps": [Interval(Integral, 1, None, closed="left")],
        "sharpness_restarts": [Interval(Integral, 1, None, closed="left")],
        "hessian_top": ["boolean"],
        "hessian_max_iter": [Interval(Integral, 1, None, closed="left")],
        "test_size": [Interval(Real, 0, 1, closed="neither"),
                      Interval(Integral, 1, None, closed="left")],
    }
    _run_function = staticmethod(_batch_size_run)

    def __init__(self, estimator=None, batch_sizes=(16, 64, 256, 1024, 4096), lr=None,
                 max_epochs=None, output="softmax", sensitivity_on="test", n_eval=1000,
                 sharpness=True, sharpness_epsilon=1e-3, sharpness_steps=20,
                 sharpness_restarts=3, hessian_top=True, hessian_max_iter=50,
                 test_size=0.2, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    # ------------------------------------------------------------------ hooks
    def _prepare_data(self, X, y, X_test, y_test):
        self._seeds = spawn_seeds(as_seed(self.random_state), 3)  # split, training, subsets
        return prepare_data(X, y, X_test, y_test, test_size=self.test_size,
                            seeds=(self._seeds[0], None, None))

    def _default_estimator(self, data):
        return default_flatness_classifier()

    def _template_estimator(self, data):
        return apply_shortcuts(super()._template_estimator(data), self, _SHORTCUTS)

    def _tasks(self, data, template):
        batch_sizes = list(np.asarray(self.batch_sizes, dtype=object).ravel())
        if (not batch_sizes or len(set(batch_sizes)) != len(batch_sizes) or not all(
                isinstance(b, Integral) and not isinstance(b, bool) and b >= 1
                for b in batch_sizes)):
            raise ValueError(f"batch_sizes must be a non-empty sequence of distinct positive "
                             f"integers, got {self.batch_sizes!r}.")
        rng = np.random.RandomState(self._seeds[2])
        X_pool, y_pool = ((data.X_test, data.y_test) if self.sensitivity_on == "test"
                          else (data.X, data.y))
        sens = subset_indices(len(X_pool), self._n_eval(len(X_pool)), rng)
        curv = subset_indices(len(data.X), self._n_eval(len(data.X)), rng)
        self.eval_indices_ = {"sensitivity": sens, "curvature": curv}
        common = {
            "estimator": template, "X": data.X, "y": data.y, "X_test": data.X_test,
            "y_test": data.y_test, "seed": self._seeds[1],
            "X_sens": X_pool[sens], "y_sens": y_pool[sens],
            "X_curv": data.X[curv], "y_curv": data.y[curv], "output": self.output,
            "sharpness": bool(self.sharpness), "sharpness_epsilon": float(self.sharpness_epsilon),
            "sharpness_steps": int(self.sharpness_steps),
            "sharpness_restarts": int(self.sharpness_restarts),
            "hessian_top": bool(self.hessian_top), "hessian_max_iter": int(self.hessian_max_iter),
        }
        return [({"batch_size": int(b)}, {**common, "batch_size": int(b)}) for b in batch_sizes]

    def _n_eval(self, n_available):
        """``n_eval`` samples, or None for all of them (no draw)."""
        return self.n_eval if self.n_eval is not None and self.n_eval < n_available else None

    def _collect(self, data, template, labels, runs):
        done = [r for r in runs if r is not None]
        self.results_ = pd.DataFrame([r["row"] for r in done], columns=_COLUMNS)
        self.estimators_ = {r["row"]["batch_size"]: r["estimator"] for r in done}
        self.histories_ = (pd.concat([r["history"].assign(batch_size=r["row"]["batch_size"])
                                      for r in done], ignore_index=True)
                           if done else pd.DataFrame())
        res = self.results_
        self.summary_ = pd.DataFrame({
            "batch_size": res["batch_size"], "test_accuracy": res["test_accuracy"],
            "loss_gap": res["test_loss"] - res["train_loss"],
            "accuracy_gap": res["train_accuracy"] - res["test_accuracy"],
            "sensitivity": res["sensitivity"], "sharpness": res["sharpness"],
            "top_hessian_eigenvalue": res["top_hessian_eigenvalue"],
        })
        self._model = (done[0]["model"], int(done[0]["row"]["n_params"])) if done else None

    def _settings(self, data, template):
        n_sens, n_curv = (len(self.eval_indices_[k]) for k in ("sensitivity", "curvature"))
        settings = {} if self._model is None else {"model": self._model[0],
                                                   "n_params": self._model[1]}
        settings.update({
            "varied": "batch_size",
            "batch_sizes": str(tuple(int(b) for b in np.asarray(self.batch_sizes).ravel())),
            **shortcut_settings(self, _SHORTCUTS),
            "seed (all models)": int(self._seeds[1]),
            "n_train": int(data.X.shape[0]),
            "n_test": int(data.X_test.shape[0]),
            "sensitivity": (f"mean Frobenius norm of d {self.output}/d input on "
                            f"{n_sens} {self.sensitivity_on} samples"),
            "sharpness": (f"epsilon={self.sharpness_epsilon:g}, {self.sharpness_steps} steps x "
                          f"{self.sharpness_restarts} starts on {n_curv} train samples"
                          if self.sharpness else "off"),
            "top Hessian eigenvalue": (f"Lanczos, <= {self.hessian_max_iter} iterations on "
                                       f"{n_curv} train samples" if self.hessian_top else "off"),
            "random_state": self.random_state,
        })
        return settings


