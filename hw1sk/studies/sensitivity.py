"""HW1-3 flatness, part 2: sensitivity and sharpness of models trained with varied batch sizes."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import pandas as pd
from sklearn.utils._param_validation import Interval, StrOptions

from ..seeding import as_seed, spawn_seeds
from ._base import Study, prepare_data, shortcut_settings, subset_indices, train_run
from ._collect import (CONTROL_CONSTRAINTS, COUNT, OPTIONAL_COUNT, TEST_SIZE, aggregate_seeds,
                       check_controls, completed, control_outcome, control_settings,
                       controlled_estimator, data_sizes, final_scores, is_positive_int,
                       model_settings, run_seeds, seeded_tasks, stack)
from ._defaults import default_flatness_classifier

__all__ = ["SensitivityStudy"]

_COLUMNS = ["control", "batch_size", "lr", "max_epochs", "n_steps", "seed", "n_params",
            "train_loss", "test_loss", "train_accuracy", "test_accuracy", "sensitivity",
            "loss_input_gradient_norm", "sharpness", "top_hessian_eigenvalue", "n_epochs",
            "target_reached", "reached_epoch"]
_SUMMARY_MEASURES = ("train_loss", "test_loss", "test_accuracy", "loss_gap", "accuracy_gap",
                     "sensitivity", "sharpness", "top_hessian_eigenvalue")


def _batch_size_run(estimator, X, y, X_test, y_test, seed, control, X_sens, y_sens, X_curv,
                    y_curv, output, sharpness, hessian_max_iter):
    """Train ``estimator`` (its batch size set) with ``seed`` and measure it: ``train_run``'s
    dict and a ``row``.

    ``control`` names how long it trains (:func:`~._collect.controlled_estimator`);
    ``sharpness`` (the arguments of :func:`hw1sk.generalization.sharpness`) and
    ``hessian_max_iter`` (Lanczos iterations): None skips the measure.
    """
    from .. import curvature, generalization
    from ..evaluation import encode_targets

    run = train_run(estimator, X, y, X_test, y_test, seed=seed)
    net = run["estimator"]
    module, criterion, batch_size = net.module_, net.criterion_, int(net.batch_size)
    # the measures take the module and its criterion: labels as the criterion takes them
    y_sens, y_curv = encode_targets(net, y_sens), encode_targets(net, y_curv)
    row = {"batch_size": batch_size, "lr": float(net.lr), "max_epochs": int(net.max_epochs),
           # optimizer steps taken: epochs x batches per epoch (the last one partial)
           "n_steps": int(len(run["history"]) * math.ceil(len(X) / batch_size)),
           "seed": int(seed), "n_params": int(run["n_params"]), **final_scores(run),
           "sensitivity": generalization.input_jacobian_norm(module, X_sens, output=output),
           "loss_input_gradient_norm": generalization.loss_input_gradient_norm(
               module, criterion, X_sens, y_sens),
           "sharpness": math.nan, "top_hessian_eigenvalue": math.nan,
           **control_outcome(net, control)}
    if sharpness is not None:
        row["sharpness"] = generalization.sharpness(module, criterion, X_curv, y_curv,
                                                    random_state=seed, **sharpness)
    if hessian_max_iter is not None:
        row["top_hessian_eigenvalue"] = float(curvature.top_hessian_eigenvalues(
            module, criterion, X_curv, y_curv, k=1, max_iter=hessian_max_iter, tol=1e-4,
            random_state=seed)[-1])
    return {**run, "row": row}


class SensitivityStudy(Study):
    """Models that differ only in batch size: generalization, sensitivity, sharpness.

    ``n_seeds`` models per batch size (the seeds, of initial weights and
    shuffling, shared by all batch sizes), with one lr.  Under the
    ``"epochs"`` control every model trains the estimator's epochs (equal
    compute: a large-batch model takes fewer optimizer steps, ``n_steps``,
    and may be undertrained); under ``"train_loss"`` each trains until its
    train loss reaches ``target_loss`` (at most ``max_epochs_cap`` epochs).
    Every model is measured on the same samples (Novak et al., 2018; Keskar
    et al., 2017).

    Parameters
    ----------
    estimator : NeuralClassifier or None, default=None
        Trained as given but for ``batch_size``, the seed and the shortcuts;
        None: :func:`~hw1sk.studies._defaults.default_flatness_classifier`.
    batch_sizes : sequence of int, default=(16, 64, 256, 1024, 4096)
    {shortcuts}
    output : {"softmax", "logits"}, default="softmax"
        The output the sensitivity differentiates.
    sensitivity_on : {"test", "train"}, default="test"
    n_eval : int or None, default=1000
        Samples of each measure; None: all.
    sharpness, hessian_top : bool, default=True
        Compute the ε-sharpness, the top Hessian eigenvalue.
    sharpness_epsilon, sharpness_steps, sharpness_restarts : default=1e-3, 20, 3
        Relative box size, ascent steps per start, starts (the first at the minimum).
    hessian_max_iter : int, default=50
        Lanczos iterations at most (a relative residual of 1e-4 stops earlier).
    {test_size}
    {n_seeds}
    {controls}
    random_state : int, RandomState or None, default=0
        Seeds the split, the training, the subsets and the random starts.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (control, batch size, seed): control, batch_size, lr,
        max_epochs (the cap under "train_loss"), n_steps, seed, n_params,
        train_loss, test_loss, train_accuracy, test_accuracy; on ``n_eval`` samples
        of ``sensitivity_on``: sensitivity (mean Frobenius norm of the output's
        input Jacobian, :func:`hw1sk.generalization.input_jacobian_norm`) and
        loss_input_gradient_norm; on ``n_eval`` training samples: sharpness
        (:func:`hw1sk.generalization.sharpness`) and top_hessian_eigenvalue
        (Lanczos, :func:`hw1sk.curvature.top_hessian_eigenvalues`); NaN when off;
        n_epochs trained, target_reached (None under "epochs"), reached_epoch.
    summary_ : pandas.DataFrame
        Per (control, batch_size), over the seeds: the mean of train_loss,
        test_loss, test_accuracy, loss_gap (test - train loss), accuracy_gap
        (train - test accuracy), sensitivity, sharpness, top_hessian_eigenvalue,
        each {seed_spread}; {control_means}, mean reached_epoch.
    histories_ : pandas.DataFrame
        Training histories, with ``control``, ``batch_size`` and ``seed`` columns.
    eval_indices_ : dict
        ``"sensitivity"`` (into the ``sensitivity_on`` split), ``"curvature"``
        (training indices): the samples measured.
    estimators_ : dict
        Batch size -> fitted estimator (first control, first seed).
    all_estimators_ : dict
        ``(control, batch_size, seed)`` -> fitted estimator.

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
    >>> X = np.random.RandomState(0).randn(200, 5).astype("float32")
    >>> study = SensitivityStudy(batch_sizes=(8, 64), max_epochs=2, n_eval=50,
    ...                          sharpness_steps=2, hessian_max_iter=5)
    >>> study = study.fit(X, (X[:, 0] > 0).astype(int))
    >>> study.results_[["batch_size", "n_steps"]].values.tolist()
    [[8, 40], [64, 6]]
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        "batch_sizes": ["array-like"],
        "output": [StrOptions({"softmax", "logits"})],
        "sensitivity_on": [StrOptions({"train", "test"})],
        "n_eval": OPTIONAL_COUNT,
        **dict.fromkeys(("sharpness", "hessian_top"), ["boolean"]),
        "sharpness_epsilon": [Interval(Real, 0, None, closed="neither")],
        **dict.fromkeys(("sharpness_steps", "sharpness_restarts", "hessian_max_iter"), COUNT),
        "test_size": TEST_SIZE,
        **CONTROL_CONSTRAINTS,
    }
    _run_function = staticmethod(_batch_size_run)
    _shortcuts = ("lr", "max_epochs")
    _doc_values = {"runs": "Models per batch size and control",
                   "run_labels": "control, batch_size, seed"}

    def __init__(self, estimator=None, batch_sizes=(16, 64, 256, 1024, 4096), lr=None,
                 max_epochs=None, output="softmax", sensitivity_on="test", n_eval=1000,
                 sharpness=True, sharpness_epsilon=1e-3, sharpness_steps=20,
                 sharpness_restarts=3, hessian_top=True, hessian_max_iter=50,
                 test_size=0.2, n_seeds=1, controls=("epochs",), target_loss=None,
                 max_epochs_cap=None, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _prepare_data(self, X, y, X_test, y_test):
        self._seeds = spawn_seeds(as_seed(self.random_state), 3)  # split, training, subsets
        return prepare_data(X, y, X_test, y_test, test_size=self.test_size,
                            seeds=(self._seeds[0], None, None))

    def _default_estimator(self, data):
        return default_flatness_classifier()

    def _tasks(self, data, template):
        batch_sizes = list(np.asarray(self.batch_sizes, dtype=object).ravel())
        if (not batch_sizes or len(set(batch_sizes)) != len(batch_sizes)
                or not all(is_positive_int(b) for b in batch_sizes)):
            raise ValueError(f"batch_sizes must be a non-empty sequence of distinct positive "
                             f"integers, got {self.batch_sizes!r}.")
        rng = np.random.RandomState(self._seeds[2])
        X_pool, y_pool = ((data.X_test, data.y_test) if self.sensitivity_on == "test"
                          else (data.X, data.y))
        # n_eval samples, or all of them (no draw)
        sens, curv = (subset_indices(n, None if self.n_eval is None or self.n_eval >= n
                                     else self.n_eval, rng) for n in (len(X_pool), len(data.X)))
        self.eval_indices_ = {"sensitivity": sens, "curvature": curv}
        sharpness = {"epsilon": float(self.sharpness_epsilon),
                     "n_steps": int(self.sharpness_steps),
                     "n_restarts": int(self.sharpness_restarts)}
        common = {"X": data.X, "y": data.y, "X_test": data.X_test, "y_test": data.y_test,
                  "X_sens": X_pool[sens], "y_sens": y_pool[sens], "X_curv": data.X[curv],
                  "y_curv": data.y[curv], "output": self.output,
                  "sharpness": sharpness if self.sharpness else None,
                  "hessian_max_iter": int(self.hessian_max_iter) if self.hessian_top else None}
        self._run_seeds = run_seeds(self._seeds[1], self.n_seeds)
        # one estimator per condition: its seeds train together
        return [pair for control in check_controls(self) for b in batch_sizes
                for pair in seeded_tasks({"control": control, "batch_size": int(b)}, {
                    **common, "control": control, "estimator": controlled_estimator(
                        template, control, self, batch_size=int(b))}, self._run_seeds)]

    def _collect(self, data, template, labels, runs):
        done = completed(labels, runs)
        self.results_ = res = pd.DataFrame([run["row"] for _, run in done], columns=_COLUMNS)
        self.all_estimators_ = {(lab["control"], lab["batch_size"], lab["seed"]): run["estimator"]
                                for lab, run in done}
        first = (labels[0]["control"], labels[0]["seed"]) if labels else None
        self.estimators_ = {b: est for (c, b, s), est in self.all_estimators_.items()
                            if (c, s) == first}
        self.histories_ = stack([(lab, run["history"]) for lab, run in done])
        per_seed = res.assign(loss_gap=res["test_loss"] - res["train_loss"],
                              accuracy_gap=res["train_accuracy"] - res["test_accuracy"])
        self.summary_ = aggregate_seeds(per_seed, ["control", "batch_size"], _SUMMARY_MEASURES)
        self._model = {} if not done else model_settings(done[0][1]["estimator"].module_,
                                                         done[0][1]["n_params"])

    def _settings(self, data, template):
        n_sens, n_curv = (len(self.eval_indices_[k]) for k in ("sensitivity", "curvature"))
        return {
            **self._model, "varied": "batch_size",
            "batch_sizes": str(tuple(int(b) for b in np.asarray(self.batch_sizes).ravel())),
            **shortcut_settings(self, self._shortcuts),
            **control_settings(self, template, self._run_seeds),
            **data_sizes(data),
            "sensitivity": (f"mean Frobenius norm of d {self.output}/d input on "
                            f"{n_sens} {self.sensitivity_on} samples"),
            "sharpness": (f"epsilon={self.sharpness_epsilon:g}, {self.sharpness_steps} steps x "
                          f"{self.sharpness_restarts} starts on {n_curv} train samples"
                          if self.sharpness else "off"),
            "top Hessian eigenvalue": (f"Lanczos, <= {self.hessian_max_iter} iterations on "
                                       f"{n_curv} train samples" if self.hessian_top else "off"),
            "random_state": self.random_state,
        }
