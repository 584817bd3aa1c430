"""HW1-2, minimal ratio: the Hessian's sign census where the gradient is almost zero.

:class:`MinimalRatioStudy` repeats, ``n_runs`` times with its own seed each,

1. the training of an estimator (by default full-batch Adam training of a
   small MLP, a few hundred parameters, on a 1-D function: a
   :class:`~hw1sk.estimators.NeuralRegressor`; any regressor or classifier
   with any module and optimizer otherwise);
2. the "gradient almost zero" phase: the objective becomes
   ``||grad L||^2`` of the net's own loss until ``||grad L|| < grad_tol`` or
   ``max_grad_steps`` steps
   (:func:`~hw1sk.critical_points.minimize_gradient_norm`, float64);
3. the exact float64 Hessian of the loss w.r.t. all parameters and its
   eigenvalues (:func:`~hw1sk.curvature.hessian_eigenvalues`);
4. the minimal ratio, the fraction of eigenvalues above a relative tolerance,
   with the counts of positive, negative and near-zero eigenvalues
   (:func:`~hw1sk.curvature.minimal_ratio`),

and tabulates one row per run, for the "minimal ratio vs loss" scatter of HW1.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_X_y

from ..models import ACTIVATIONS
from ..seeding import as_seed, spawn_seeds
from ._base import (
    Study,
    StudyData,
    apply_shortcuts,
    describe_estimator,
    describe_value,
    prepare_data,
    train_run,
)
from ._defaults import (
    default_minimal_ratio_regressor,
    describe_module,
)

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
    """One run of the study: train, minimize ``||grad L||``, count Hessian eigenvalue signs.

    A module-level function so that it pickles into joblib and dask workers.

    Parameters
    ----------
    estimator : NeuralRegressor or NeuralClassifier (unfitted template)
        Cloned and fitted with ``random_state=seed``
        (``hw1sk.studies._base.train_run``).
    X, y : ndarray
        Training data: targets (any shape the estimator takes) or class
        labels (encoded through the fitted net's ``classes_``).
    seed : int, default=0
    grad_tol : float, default=1e-3
        Target of the gradient phase for the global L2 norm of the gradient.
    max_grad_steps : int, default=50
        Step cap of the gradient phase.
    grad_optimizer : {"auto", "newton", "lbfgs", "adam"}, default="auto"
        Passed to :func:`~hw1sk.critical_points.minimize_gradient_norm`.
    eigen_tol : float or None, default=None
        Relative zero tolerance of :func:`~hw1sk.curvature.minimal_ratio`.
    keep_spectrum : bool, default=True
        Return all eigenvalues too.
    n_threads : int or None, default=None
        Torch intra-op threads during the run (restored afterwards); None
        keeps the worker's setting.

    Returns
    -------
    run : dict
        The keys of ``RESULT_COLUMNS`` except ``run`` and ``seed``, plus
        ``eigenvalues`` (ascending float64 array, or None) and ``estimator``
        (the fitted net, as trained: the gradient phase moves a float64 copy
        of its module).

    Raises
    ------
    hw1sk.sweep.RunDiverged
        When the training loss, the loss after the gradient phase or the
        Hessian is not finite.
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
    """The body of :func:`minimal_ratio_run`."""
    from ..critical_points import minimize_gradient_norm
    from ..curvature import hessian_eigenvalues, minimal_ratio
    from ..evaluation import check_predict_X, encode_targets, estimator_loss
    from ..parameters import count_params
    from ..sweep import RunDiverged

    run = train_run(estimator, X, y, seed=seed, keep_estimator=True)
    net = run["estimator"]
    # the loss the net trains on, on the data as it sees them (labels through classes_)
    criterion = estimator_loss(net)
    X64 = np.asarray(check_predict_X(net, X), dtype=np.float64)
    targets = encode_targets(net, y)
    targets = targets.astype(np.float64) if targets.dtype.kind == "f" else targets
    # phase 2 and the Hessian in float64 on one copy of the module: the gradient norm that
    # decides "converged" is measured at exactly the parameters whose Hessian is taken
    module = copy.deepcopy(net.module_).to(torch.float64)
    result = minimize_gradient_norm(module, criterion, X64, targets, tol=grad_tol,
                                    max_steps=max_grad_steps, optimizer=grad_optimizer)
    if not (np.isfinite(result.loss) and np.isfinite(result.final_grad_norm)):
        raise RunDiverged(f"the gradient-norm phase ended at loss {result.loss}, "
                          f"||grad L|| {result.final_grad_norm}",
                          info={"history": run["history"]})
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
        "n_positive": census.n_positive,
        "n_negative": census.n_negative, "n_zero": census.n_zero,
        "eigen_tol_used": census.tol_used, "min_eigenvalue": float(eigenvalues[0]),
        "max_eigenvalue": float(eigenvalues[-1]),
        "eigenvalues": np.asarray(eigenvalues, dtype=np.float64) if keep_spectrum else None,
        "estimator": net,
    }


class MinimalRatioStudy(Study):
    """HW1-2: minimal ratio of the Hessian vs loss at points of near-zero gradient.

    Each of ``n_runs`` runs trains the estimator on the same data with its
    own seed (by default an :class:`~hw1sk.models.MLP` regressor, full-batch
    Adam), then switches the objective to the squared gradient norm of the
    net's own loss until ``||grad L|| < grad_tol`` (at most
    ``max_grad_steps`` steps, in float64;
    :func:`~hw1sk.critical_points.minimize_gradient_norm`), takes the exact
    float64 Hessian of that loss w.r.t. all parameters and counts its
    positive, negative and near-zero eigenvalues.  The minimal ratio is the
    fraction of eigenvalues above ``eigen_tol * max|lambda|``: 1 at a strict
    local minimum, less at a saddle.

    The loss is the one the net trains on (its ``get_loss``: ``criterion_``,
    e.g. MSE or cross-entropy; an optimizer's weight decay is not part of
    it), on the data as the net sees them: inputs as ``predict`` checks
    them, class labels encoded through the net's ``classes_``.  Any module
    works; chains of linear layers and elementwise activations get the fast
    structured Hessian, others one Hessian-vector product per parameter.

    Runs that reach the step cap first are kept, with ``converged=False``
    and their final gradient norm; plots draw them apart.

    Parameters
    ----------
    n_runs : int, default=100
        Independent runs.
    estimator : NeuralRegressor or NeuralClassifier, optional
        Unfitted template, cloned and never modified.  Every run trains with
        its settings exactly (module, criterion, optimizer and its
        arguments, batch size, callbacks, ...), except the seed, and
        ``train_epochs`` / ``lr`` when those are set here.  Default:
        :func:`default_minimal_ratio_regressor` (MLP 1-20-20-1, tanh,
        full-batch Adam, lr 1e-2, 1000 epochs, MSE).
    function : str or callable, default="sinc"
        Target of the generated data (:func:`hw1sk.datasets.make_function_dataset`:
        ``"sinc"``, ``"sign"``, ``"sin"`` or a vectorised callable); unused
        when ``fit`` gets data.
    n_samples : int, default=1000
        Size of the generated data set.
    domain : (float, float), default=(-1.0, 1.0)
        Interval of the generated ``x``.
    hidden : sequence of int or None, default=None
        Hidden widths, when set: the estimator's ``module__hidden`` (the
        default estimator's MLP has ``(20, 20)``, 481 parameters on 1-D
        data).  None keeps the estimator's.
    activation : str or None, default=None
        Activation, when set: the estimator's ``module__activation``, a name
        of :data:`hw1sk.models.ACTIVATIONS` (the default is ``"tanh"``; a
        smooth activation keeps the Hessian well defined).  None keeps the
        estimator's.
    train_epochs : int or None, default=None
        Training epochs of every run, when set (recorded in ``settings_``);
        None keeps the estimator's (1000 for the default one).
    lr : float or None, default=None
        Learning rate of every run, when set; None keeps the estimator's
        (1e-2 for the default one).
    grad_tol : float, default=1e-3
        Target for the global L2 norm of the gradient.
    max_grad_steps : int, default=50
        Step cap of the gradient phase (0 skips it).
    grad_optimizer : {"auto", "newton", "lbfgs", "adam"}, default="auto"
        How ``||grad L||^2`` is minimized: ``"newton"`` (Levenberg-Marquardt
        with the exact Hessian, the choice of ``"auto"`` up to 4096
        parameters), or ``"lbfgs"`` / ``"adam"`` by double back-propagation.
    eigen_tol : float or None, default=None
        Relative zero tolerance of the eigenvalues; None is
        ``n_params * eps(float64)`` (:func:`hw1sk.curvature.minimal_ratio`).
    keep_spectrum : bool, default=True
        Keep every run's eigenvalues in ``spectra_`` (481 floats a run), for
        :func:`hw1sk.plotting.curvature.plot_hessian_spectrum`.
    n_jobs, backend, scheduler, cache_dir, progress
        How the runs are executed, see :func:`hw1sk.sweep.run_sweep`.
    device : str or None, default=None
        Where the runs train and their Hessians are computed; None keeps the
        estimator's (``"cpu"`` for the default one).
    random_state : int, RandomState or None, default=0
        Master seed: run ``i`` gets seed ``i`` of
        :func:`hw1sk.seeding.spawn_seeds`, whatever ``n_jobs``; the generated
        data are drawn once from it and shared by all runs.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per finished run: ``run``, ``seed``, ``n_params``,
        ``train_loss`` (after training), ``loss`` (at the final point),
        ``grad_norm_before`` / ``grad_norm_after`` (float64 gradient norm
        before and after the gradient phase), ``converged``
        (``grad_norm_after < grad_tol``), ``n_steps``, ``grad_optimizer``,
        ``minimal_ratio`` (positive / all eigenvalues, the classic ratio),
        ``nonzero_ratio`` (positive / non-zero eigenvalues: zero eigenvalues
        are flat directions, not a saddle; only negative ones show a
        saddle), ``n_positive``, ``n_negative``, ``n_zero`` (they add up to
        ``n_params``), ``eigen_tol_used`` (absolute zero tolerance),
        ``min_eigenvalue``, ``max_eigenvalue``.
    spectra_ : dict
        Run -> ascending float64 eigenvalues (with ``keep_spectrum``; else empty).
    estimators_ : dict
        Run -> the fitted estimator of that run, as trained (the gradient
        phase moves a float64 copy of its module, so it still predicts as
        trained); its ``history_`` keeps every column its callbacks record.
    summary_ : pandas.DataFrame
        One row per group ``"converged"``, ``"not converged"``, ``"diverged"``
        and ``"finished"`` (the first two together): ``n_runs``, ``fraction``
        (of all ``n_runs``), and the mean, std, min and max of the minimal
        ratio, the median loss and the mean eigenvalue counts (NaN for
        diverged runs, which have none).
    settings_ : dict
        Every training setting of the template estimator
        (:func:`~hw1sk.studies._base.describe_estimator`: ``optimizer``,
        ``optimizer__weight_decay``, ``lr``, ``max_epochs``, ``batch_size``,
        ...), what the study set, the data, the gradient phase and the seeds.
    diverged_ : pandas.DataFrame
        Runs with a non-finite loss or Hessian (``run``, ``seed``,
        ``message``); left out of ``results_``.
    X_, y_ : ndarray
        The training data of every run (targets or labels as given).

    See Also
    --------
    hw1sk.critical_points.minimize_gradient_norm, hw1sk.curvature.hessian_minimal_ratio
    hw1sk.plotting.curvature.plot_minimal_ratio
    hw1sk.plotting.curvature.plot_hessian_spectrum

    Examples
    --------
    >>> from hw1sk.studies.minimal_ratio import MinimalRatioStudy
    >>> study = MinimalRatioStudy(n_runs=2, n_samples=50, hidden=(4,), train_epochs=50,
    ...                           backend="sequential").fit()
    >>> len(study.results_), bool(study.results_["n_params"].eq(13).all())
    (2, True)

    Any estimator, e.g. a classifier (its labels are encoded through its
    ``classes_``, its loss is its cross-entropy):

    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(40, 2).astype("float32"); y = np.where(X[:, 0] > 0, "a", "b")
    >>> clf = NeuralClassifier(module__hidden=(3,), module__activation="tanh", max_epochs=5)
    >>> study = MinimalRatioStudy(n_runs=1, estimator=clf, backend="sequential").fit(X, y)
    >>> row = study.results_.iloc[0]
    >>> int(row["n_positive"] + row["n_negative"] + row["n_zero"]), int(row["n_params"])
    (17, 17)
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
                 keep_spectrum=True, n_jobs=1, backend="loky", scheduler=None,
                 cache_dir=None, progress=False, device=None, random_state=0):
        super().__init__(estimator=estimator, n_jobs=n_jobs, backend=backend,
                         scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                         device=device, random_state=random_state)
        self.n_runs = n_runs
        self.function = function
        self.n_samples = n_samples
        self.domain = domain
        self.hidden = hidden
        self.activation = activation
        self.train_epochs = train_epochs
        self.lr = lr
        self.grad_tol = grad_tol
        self.max_grad_steps = max_grad_steps
        self.grad_optimizer = grad_optimizer
        self.eigen_tol = eigen_tol
        self.keep_spectrum = keep_spectrum

    def fit(self, X=None, y=None):
        """Run the ``n_runs`` train / minimize-gradient / Hessian runs.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...), optional
            Training inputs; None generates ``n_samples`` points of
            ``function`` on ``domain`` (drawn once from ``random_state``, the
            same for every run).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), optional
            Targets (real values, or class labels for a classifier), given
            with ``X``.

        Returns
        -------
        self : MinimalRatioStudy

        Raises
        ------
        ValueError
            For invalid parameters or data.
        RuntimeError
            When every run diverged.
        """
        return super().fit(X, y)

    # ------------------------------------------------------------------ hooks
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
            return StudyData(*check_X_y(X, y, allow_nd=True, multi_output=True,
                                        y_numeric=True))
        return prepare_data(X, y, random_state=self._master)

    def _default_estimator(self, data):
        return default_minimal_ratio_regressor()

    def _template_estimator(self, data):
        template = apply_shortcuts(super()._template_estimator(data), self, ("hidden", "lr"))
        if self.activation is not None:
            template.set_params(module__activation=self.activation)
        if self.train_epochs is not None:
            template.set_params(max_epochs=self.train_epochs)
        return template

    def _tasks(self, data, template):
        self._seeds = spawn_seeds(self._master, self.n_runs)
        common = {"estimator": template, "X": data.X, "y": data.y,
                  "grad_tol": float(self.grad_tol), "max_grad_steps": int(self.max_grad_steps),
                  "grad_optimizer": self.grad_optimizer,
                  "eigen_tol": None if self.eigen_tol is None else float(self.eigen_tol),
                  "keep_spectrum": bool(self.keep_spectrum)}
        return [({"run": i, "seed": seed}, {**common, "seed": seed})
                for i, seed in enumerate(self._seeds)]

    def _collect(self, data, template, labels, runs):
        self.diverged_ = self.diverged_.reindex(columns=["run", "seed", "message"])
        self.X_, self.y_ = data.X, data.y
        done = {label["run"]: run for label, run in zip(labels, runs) if run is not None}
        if not done:
            raise RuntimeError("MinimalRatioStudy: every run diverged; see diverged_ "
                               "(lower lr).")
        self.results_ = pd.DataFrame(
            [{"run": i, "seed": labels[i]["seed"], **{k: run[k] for k in RESULT_COLUMNS[2:]}}
             for i, run in done.items()], columns=list(RESULT_COLUMNS))
        self.spectra_ = {i: run["eigenvalues"] for i, run in done.items()
                         if run["eigenvalues"] is not None}
        self.estimators_ = {i: run["estimator"] for i, run in done.items()}
        self.summary_ = self._summary(self.n_runs)

    def _summary(self, n_runs):
        res = self.results_
        groups = {"converged": res[res["converged"]], "not converged": res[~res["converged"]],
                  "finished": res}
        rows = []
        for name, frame in groups.items():
            ratio = frame["minimal_ratio"]
            rows.append({
                "group": name, "n_runs": len(frame), "fraction": len(frame) / n_runs,
                "mean_minimal_ratio": ratio.mean(),
                "std_minimal_ratio": ratio.std(ddof=0) if len(frame) else np.nan,
                "min_minimal_ratio": ratio.min(), "max_minimal_ratio": ratio.max(),
                "median_loss": frame["loss"].median(),
                "mean_n_positive": frame["n_positive"].mean(),
                "mean_n_negative": frame["n_negative"].mean(),
                "mean_n_zero": frame["n_zero"].mean(),
            })
        n_div = len(self.diverged_)
        rows.insert(2, {"group": "diverged", "n_runs": n_div, "fraction": n_div / n_runs})
        return pd.DataFrame(rows, columns=list(rows[0]))

    def _settings(self, data, template):
        X, d = data.X, describe_estimator(template)
        first = next(iter(self.estimators_.values()))
        return {
            "data": (f"{len(X)} samples of {describe_value(self.function)} drawn uniformly "
                     f"on {tuple(float(v) for v in self.domain)}, the same for every run"
                     if self._generated else
                     f"{len(X)} given samples of shape {X.shape[1:]}"),
            "model": describe_module(first.module_),
            "n_params": int(self.results_["n_params"].iloc[0]),
            "training": (f"{d['optimizer']}, lr {d['lr']}, {d['max_epochs']} epochs, batch size "
                         f"{d['batch_size']} (-1: full batch), {d['criterion']}"),
            "train_epochs (set by the study)": self.train_epochs,
            "lr (set by the study)": self.lr,
            "gradient phase": (f"minimize ||grad L|| of the net's loss (optimizer "
                               f"{self.grad_optimizer!r}, float64) until < {self.grad_tol:g}, "
                               f"at most {self.max_grad_steps} steps"),
            "Hessian": "exact, float64, all parameters (hw1sk.curvature.loss_hessian)",
            "eigen_tol": ("n_params * eps(float64), relative to max|lambda|"
                          if self.eigen_tol is None else
                          f"{self.eigen_tol:g} relative to max|lambda|"),
            "n_runs": int(self.n_runs),
            "random_state": describe_value(self.random_state),
            "seeds": list(self._seeds),
        }
