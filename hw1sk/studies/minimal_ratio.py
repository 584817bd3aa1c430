"""HW1-2, minimal ratio: the Hessian's sign census where the gradient is almost zero."""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_X_y

from ..models import ACTIVATIONS
from ..parameters import count_params
from ..seeding import as_seed, spawn_seeds
from ._base import (Study, StudyData, apply_shortcuts, describe_estimator, describe_value,
                    prepare_data, shortcut_settings, train_run)
from ._collect import completed, model_settings
from ._defaults import default_minimal_ratio_regressor

__all__ = ["MinimalRatioStudy", "minimal_ratio_run"]

#: Columns of ``results_``, in order.
RESULT_COLUMNS = (
    "run", "seed", "n_params", "train_loss", "loss", "grad_norm_before", "grad_norm_after",
    "converged", "n_steps", "grad_optimizer", "minimal_ratio", "nonzero_ratio", "n_positive",
    "n_negative", "n_zero", "eigen_tol_used", "min_eigenvalue", "max_eigenvalue",
)


def minimal_ratio_run(estimator, X, y, seed=0, grad_tol=1e-3, max_grad_steps=50,
                      grad_optimizer="auto", eigen_tol=None, keep_spectrum=True,
                      n_threads=None):
    """One run: train, minimize ``||grad L||``, count the Hessian's eigenvalue signs.

    ``estimator`` is fitted with ``random_state=seed`` on ``X, y`` (targets,
    or labels encoded through its ``classes_``); then come the float64
    gradient phase and Hessian, with the study's parameters of the same
    names.  ``n_threads``: torch threads during the run (restored afterwards;
    None keeps the worker's).  Returns the ``RESULT_COLUMNS`` but ``run`` and
    ``seed``, ``eigenvalues`` (ascending, or None) and ``estimator`` (the net
    as trained: the gradient phase moves a float64 copy); raises
    :class:`hw1sk.sweep.RunDiverged` for a non-finite loss or Hessian.
    """
    threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(int(n_threads))
    try:
        return _run(estimator, X, y, seed, grad_tol, max_grad_steps, grad_optimizer,
                    eigen_tol, keep_spectrum)
    finally:
        torch.set_num_threads(threads)


def _run(estimator, X, y, seed, grad_tol, max_grad_steps, grad_optimizer, eigen_tol,
         keep_spectrum):
    from ..critical_points import minimize_gradient_norm
    from ..curvature import hessian_eigenvalues, minimal_ratio
    from ..evaluation import check_predict_X, encode_targets, estimator_loss
    from ..sweep import RunDiverged
    from ._seed_groups import take_group_phase

    run = train_run(estimator, X, y, seed=seed, keep_estimator=True)
    # the loss the net trains on, on the data as it sees them (labels through classes_)
    net = run["estimator"]
    criterion = estimator_loss(net)
    X64 = np.asarray(check_predict_X(net, X), dtype=np.float64)
    targets = encode_targets(net, y)
    targets = targets.astype(np.float64) if targets.dtype.kind == "f" else targets
    # phase 2 and the Hessian in float64 on one copy of the module: the gradient norm that
    # decides "converged" is measured at exactly the parameters whose Hessian is taken
    # (a seed group does both for all its seeds at once, _seed_group_phase)
    module = copy.deepcopy(net.module_).to(torch.float64)
    batched = take_group_phase(estimator, X, y, seed)  # done with the seed group
    if batched is not None:
        result, eigenvalues = batched
    else:
        result = minimize_gradient_norm(module, criterion, X64, targets, tol=grad_tol,
                                        max_steps=max_grad_steps, optimizer=grad_optimizer)
    if not (np.isfinite(result.loss) and np.isfinite(result.final_grad_norm)):
        raise RunDiverged(f"the gradient-norm phase ended at loss {result.loss}, "
                          f"||grad L|| {result.final_grad_norm}",
                          info={"history": run["history"]})
    if batched is None:
        try:
            eigenvalues = hessian_eigenvalues(module, criterion, X64, targets)
        except (ValueError, torch.linalg.LinAlgError) as exc:  # a non-finite Hessian
            raise RunDiverged(f"the Hessian could not be diagonalised: {exc}") from exc
    if not np.all(np.isfinite(eigenvalues)):
        raise RunDiverged("the Hessian has non-finite eigenvalues")
    census = minimal_ratio(eigenvalues, tol=eigen_tol, relative=True)
    return {
        "n_params": count_params(module), "train_loss": float(run["train"]["loss"]),
        "loss": float(result.loss), "grad_norm_before": float(result.initial_grad_norm),
        "grad_norm_after": float(result.final_grad_norm), "converged": bool(result.converged),
        "n_steps": int(result.n_steps), "grad_optimizer": result.optimizer,
        "minimal_ratio": float(census.ratio), "nonzero_ratio": float(census.nonzero_ratio),
        "n_positive": census.n_positive, "n_negative": census.n_negative,
        "n_zero": census.n_zero, "eigen_tol_used": census.tol_used,
        "min_eigenvalue": float(eigenvalues[0]), "max_eigenvalue": float(eigenvalues[-1]),
        "eigenvalues": np.asarray(eigenvalues, dtype=np.float64) if keep_spectrum else None,
        "estimator": net,
    }


def _seed_group_phase(tasks, fitted):
    """The gradient-norm phase and Hessian spectra of a seed group's runs, all at once.

    :func:`hw1sk.batched_critical_points.minimize_gradient_norms` on float64
    copies of the fitted nets, when the Newton (Levenberg-Marquardt) path
    is the one the runs take and the nets are one Linear/activation chain;
    returns seed -> ``(GradientNormResult, eigenvalues)``.  Seeds it cannot
    do (diverged training, a non-finite Hessian, another optimizer or
    module) are left out: their runs do the phase alone, as without a group.
    """
    from ..batched_critical_points import minimize_gradient_norms
    from ..batched_modules import UnsupportedModule
    from ..critical_points import MAX_EXACT_PARAMS
    from ..evaluation import check_predict_X, encode_targets, estimator_loss

    first = tasks[0]
    nets = {int(t["seed"]): fitted.get(int(t["seed"])) for t in tasks}
    nets = {s: net for s, net in nets.items()
            if net is not None and not getattr(net, "diverged_", False)}
    if first["grad_optimizer"] not in ("auto", "newton") or not nets:
        return {}
    template = next(iter(nets.values()))
    kinds = {type(net.criterion_) for net in nets.values()}
    if (len(kinds) > 1 or any(True for _ in template.criterion_.parameters())
            or (first["grad_optimizer"] == "auto"
                and count_params(template.module_) > MAX_EXACT_PARAMS)):
        return {}
    X64 = np.asarray(check_predict_X(template, first["X"]), dtype=np.float64)
    targets = encode_targets(template, first["y"])
    targets = targets.astype(np.float64) if targets.dtype.kind == "f" else targets
    modules = [copy.deepcopy(net.module_).to(torch.float64) for net in nets.values()]
    threads = torch.get_num_threads()
    if first.get("n_threads") is not None:
        torch.set_num_threads(int(first["n_threads"]))
    try:
        results, spectra = minimize_gradient_norms(
            modules, estimator_loss(template), X64, targets, tol=first["grad_tol"],
            max_steps=first["max_grad_steps"], eigenvalues=True)
    except UnsupportedModule:
        return {}
    finally:
        torch.set_num_threads(threads)
    return {s: (r, e) for s, r, e in zip(nets, results, spectra)
            if r is not None and e is not None}


minimal_ratio_run.seed_group_phase = _seed_group_phase


class MinimalRatioStudy(Study):
    """HW1-2: minimal ratio of the Hessian vs loss at points of near-zero gradient.

    Each of ``n_runs`` runs trains the estimator with its own seed, minimizes
    the squared gradient norm of the net's own loss (its ``criterion_``, no
    weight decay; labels through ``classes_``) until ``||grad L|| < grad_tol``
    (:func:`~hw1sk.critical_points.minimize_gradient_norm`, float64), and
    counts the positive, negative and near-zero eigenvalues of the exact
    float64 Hessian (:func:`~hw1sk.curvature.minimal_ratio`).  The minimal
    ratio is the fraction above ``eigen_tol * max|lambda|``: 1 at a strict
    minimum.  Zero eigenvalues are flat directions, not a saddle: only negative
    ones show one.  Runs that reach the step cap keep ``converged=False``.
    Runs trained together (``vectorize``) also take the gradient phase and the
    Hessian together, per seed as alone
    (:func:`hw1sk.batched_critical_points.minimize_gradient_norms`) when the
    Newton path applies to their network (a Linear/activation chain); other
    runs do them one by one.

    Parameters
    ----------
    n_runs : int, default=100
    estimator : NeuralRegressor or NeuralClassifier, optional
        Trained as given but the seed, ``train_epochs`` and ``lr``.  Default:
        :func:`default_minimal_ratio_regressor` (MLP 1-20-20-1, tanh, full-batch
        Adam, lr 1e-2, 1000 epochs, MSE).
    function, n_samples, domain : default="sinc", 1000, (-1.0, 1.0)
        Data generated when ``fit`` gets none (:func:`hw1sk.datasets.make_function_dataset`).
    hidden, activation, train_epochs, lr : default=None
        When set: ``module__hidden``, ``module__activation`` (smooth keeps the
        Hessian defined), ``max_epochs`` and ``lr`` of every run.
    grad_tol, max_grad_steps : float, int, default=1e-3, 50
        Target of the gradient's L2 norm; step cap of the gradient phase (0 skips it).
    grad_optimizer : {"auto", "newton", "lbfgs", "adam"}, default="auto"
        ``"newton"``: Levenberg-Marquardt, exact Hessian (``"auto"`` up to 4096 parameters).
    eigen_tol : float or None, default=None
        Relative zero tolerance; None: ``n_params * eps(float64)``.
    keep_spectrum : bool, default=True
        Keep every run's eigenvalues in ``spectra_``.
    n_jobs, backend, scheduler, cache_dir, progress, device : see :class:`~hw1sk.studies._base.Study`.
    random_state : int, RandomState or None, default=0
        Run ``i`` gets seed ``i`` of :func:`hw1sk.seeding.spawn_seeds`; the data are drawn once.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per finished run, :data:`RESULT_COLUMNS`: ``train_loss`` after training,
        ``loss`` at the final point, ``grad_norm_before``/``_after`` the gradient phase,
        ``minimal_ratio`` positive / all, ``nonzero_ratio`` positive / non-zero,
        ``n_positive + n_negative + n_zero == n_params``, ``eigen_tol_used`` (absolute).
    summary_ : pandas.DataFrame
        Groups converged, not converged, diverged, finished: ``n_runs``, ``fraction``,
        the minimal ratio's mean/std/min/max, median loss, mean counts.
    spectra_, estimators_, X_, y_, settings_, diverged_
        Run -> ascending eigenvalues; run -> fitted estimator; the training data.

    See Also
    --------
    hw1sk.critical_points.minimize_gradient_norm, hw1sk.curvature.hessian_minimal_ratio
    hw1sk.plotting.curvature.plot_minimal_ratio, hw1sk.plotting.curvature.plot_hessian_spectrum

    Examples
    --------
    >>> from hw1sk.studies.minimal_ratio import MinimalRatioStudy
    >>> study = MinimalRatioStudy(n_runs=2, n_samples=50, hidden=(4,), train_epochs=50,
    ...                           backend="sequential").fit()
    >>> len(study.results_), bool(study.results_["n_params"].eq(13).all())
    (2, True)
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        "n_runs": [Interval(Integral, 1, None, closed="left")],
        "function": [str, callable],
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "domain": ["array-like"],
        "hidden": ["array-like", None],
        "activation": [StrOptions(set(ACTIVATIONS)), None],
        "train_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "grad_tol": [Interval(Real, 0, None, closed="neither")],
        "max_grad_steps": [Interval(Integral, 0, None, closed="left")],
        "grad_optimizer": [StrOptions({"auto", "newton", "lbfgs", "adam"})],
        "eigen_tol": [Interval(Real, 0, None, closed="left"), None],
        "keep_spectrum": ["boolean"],
    }
    _run_function = staticmethod(minimal_ratio_run)

    def __init__(self, n_runs=100, *, estimator=None, function="sinc", n_samples=1000,
                 domain=(-1.0, 1.0), hidden=None, activation=None, train_epochs=None, lr=None,
                 grad_tol=1e-3, max_grad_steps=50, grad_optimizer="auto", eigen_tol=None,
                 keep_spectrum=True, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def fit(self, X=None, y=None):
        """Run the study on ``(X, y)``, or on generated data; ``RuntimeError`` if all diverge."""
        return super().fit(X, y)

    def _prepare_data(self, X, y, X_test, y_test):
        from ..datasets import make_function_dataset

        self._master = as_seed(self.random_state)  # once: the data and the run seeds
        self._generated = X is None and y is None
        if self._generated:
            X, y = make_function_dataset(self.function, n_samples=self.n_samples,
                                         domain=self.domain, random_state=self._master)
            return StudyData(X, y)
        if X is None or y is None:
            raise ValueError("X and y must be given together (or both left to None to "
                             "generate the function data).")
        if np.ndim(y) == 2:  # several regression outputs: prepare_data takes 1-D targets
            return StudyData(*check_X_y(X, y, allow_nd=True, multi_output=True, y_numeric=True))
        return prepare_data(X, y, random_state=self._master)

    def _default_estimator(self, data):
        return default_minimal_ratio_regressor()

    def _template_estimator(self, data):
        template = apply_shortcuts(super()._template_estimator(data), self, ("hidden", "lr"))
        extra = {"module__activation": self.activation, "max_epochs": self.train_epochs}
        return template.set_params(**{k: v for k, v in extra.items() if v is not None})

    def _tasks(self, data, template):
        self._seeds = spawn_seeds(self._master, self.n_runs)
        common = dict(estimator=template, X=data.X, y=data.y, grad_tol=float(self.grad_tol),
                      max_grad_steps=int(self.max_grad_steps), grad_optimizer=self.grad_optimizer,
                      eigen_tol=None if self.eigen_tol is None else float(self.eigen_tol),
                      keep_spectrum=bool(self.keep_spectrum))
        return [({"run": i, "seed": seed}, {**common, "seed": seed})
                for i, seed in enumerate(self._seeds)]

    def _collect(self, data, template, labels, runs):
        self.diverged_ = self.diverged_.reindex(columns=["run", "seed", "message"])
        self.X_, self.y_ = data.X, data.y
        done = {label["run"]: run for label, run in completed(labels, runs)}
        if not done:
            raise RuntimeError("MinimalRatioStudy: every run diverged; see diverged_ (lower lr).")
        self.results_ = pd.DataFrame(
            [{"run": i, "seed": labels[i]["seed"], **{k: run[k] for k in RESULT_COLUMNS[2:]}}
             for i, run in done.items()], columns=list(RESULT_COLUMNS))
        self.spectra_ = {i: run["eigenvalues"] for i, run in done.items()
                         if run["eigenvalues"] is not None}
        self.estimators_ = {i: run["estimator"] for i, run in done.items()}
        self.summary_ = self._summary(self.n_runs)

    def _summary(self, n_runs):
        res, rows = self.results_, []
        for name, frame in {"converged": res[res["converged"]],
                            "not converged": res[~res["converged"]], "finished": res}.items():
            ratio = frame["minimal_ratio"]
            rows.append({
                "group": name, "n_runs": len(frame), "fraction": len(frame) / n_runs,
                "mean_minimal_ratio": ratio.mean(),
                "std_minimal_ratio": ratio.std(ddof=0) if len(frame) else np.nan,
                "min_minimal_ratio": ratio.min(), "max_minimal_ratio": ratio.max(),
                "median_loss": frame["loss"].median(),
                **{f"mean_{c}": frame[c].mean() for c in ("n_positive", "n_negative", "n_zero")}})
        n_div = len(self.diverged_)
        rows.insert(2, {"group": "diverged", "n_runs": n_div, "fraction": n_div / n_runs})
        return pd.DataFrame(rows, columns=list(rows[0]))

    def _settings(self, data, template):
        X, d = data.X, describe_estimator(template)
        return {
            "data": (f"{len(X)} samples of {describe_value(self.function)} drawn uniformly "
                     f"on {tuple(float(v) for v in self.domain)}, the same for every run"
                     if self._generated else
                     f"{len(X)} given samples of shape {X.shape[1:]}"),
            **model_settings(next(iter(self.estimators_.values())).module_,
                             self.results_["n_params"].iloc[0]),
            "training": (f"{d['optimizer']}, lr {d['lr']}, {d['max_epochs']} epochs, batch size "
                         f"{d['batch_size']} (-1: full batch), {d['criterion']}"),
            **shortcut_settings(self, ("train_epochs", "lr")),
            "gradient phase": (f"minimize ||grad L|| of the net's loss (optimizer "
                               f"{self.grad_optimizer!r}, float64) until < {self.grad_tol:g}, "
                               f"at most {self.max_grad_steps} steps"),
            "Hessian": "exact, float64, all parameters (hw1sk.curvature.loss_hessian)",
            "eigen_tol": ("n_params * eps(float64)," if self.eigen_tol is None else
                          f"{self.eigen_tol:g}") + " relative to max|lambda|",
            "n_runs": int(self.n_runs), "random_state": describe_value(self.random_state),
            "seeds": list(self._seeds),
        }
