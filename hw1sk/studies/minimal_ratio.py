"""HW1-2, minimal ratio: the Hessian's sign census where the gradient is almost zero.

:class:`MinimalRatioStudy` repeats, ``n_runs`` times with its own seed each,

1. full-batch Adam training of a small MLP (a few hundred parameters) on a
   1-D function (:class:`~hw1sk.estimators.NeuralRegressor`);
2. the "gradient almost zero" phase: the objective becomes
   ``||grad L||^2`` until ``||grad L|| < grad_tol`` or ``max_grad_steps``
   steps (:func:`~hw1sk.curvature.minimize_gradient_norm`, float64);
3. the exact float64 Hessian of the loss w.r.t. all parameters and its
   eigenvalues (:func:`~hw1sk.curvature.hessian_eigenvalues`);
4. the minimal ratio, the fraction of eigenvalues above a relative tolerance,
   with the counts of positive, negative and near-zero eigenvalues
   (:func:`~hw1sk.curvature.minimal_ratio`),

and tabulates one row per run, for the "minimal ratio vs loss" scatter of HW1.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.utils.validation import check_X_y

from ..seeding import as_seed, spawn_seeds
from ._base import Study, describe_value, train_run

__all__ = ["MinimalRatioStudy", "minimal_ratio_run"]

_GRAD_OPTIMIZERS = ("auto", "newton", "lbfgs", "adam")

#: Columns of ``results_``, in order.
RESULT_COLUMNS = (
    "run", "seed", "n_params", "train_loss", "loss", "grad_norm_before", "grad_norm_after",
    "converged", "n_steps", "grad_optimizer", "minimal_ratio", "n_positive", "n_negative",
    "n_zero", "eigen_tol_used", "min_eigenvalue", "max_eigenvalue",
)

# below this many (samples x parameters) a run's tensors are too small for torch's
# intra-op threads: under load on 2 cores two threads made a run up to 7x slower
_SMALL_RUN = 2**20


def minimal_ratio_run(estimator, X, y, seed=0, grad_tol=1e-3, max_grad_steps=50,
                      grad_optimizer="auto", eigen_tol=None, keep_spectrum=True,
                      n_threads=None):
    """One run of the study: train, minimize ``||grad L||``, count Hessian eigenvalue signs.

    A module-level function so that it pickles into joblib and dask workers.

    Parameters
    ----------
    estimator : NeuralRegressor (unfitted template)
        Cloned and fitted with ``random_state=seed``
        (``hw1sk.studies._base.train_run``).
    X, y : ndarray
        Training data; ``y`` of shape ``(n_samples, n_outputs)``.
    seed : int, default=0
    grad_tol : float, default=1e-3
        Target of the gradient phase for the global L2 norm of the gradient.
    max_grad_steps : int, default=50
        Step cap of the gradient phase.
    grad_optimizer : {"auto", "newton", "lbfgs", "adam"}, default="auto"
        Passed to :func:`~hw1sk.curvature.minimize_gradient_norm`.
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
        ``eigenvalues`` (ascending float64 array, or None).

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
    from ..curvature import hessian_eigenvalues, minimal_ratio, minimize_gradient_norm
    from ..parameters import count_params
    from ..sweep import RunDiverged

    run = train_run(estimator, X, y, seed=seed, keep_estimator=True)
    fitted = run["estimator"]
    criterion = fitted.criterion_
    # phase 2 and the Hessian in float64 on the same module: the gradient norm that
    # decides "converged" is measured at exactly the parameters whose Hessian is taken
    module = fitted.module_.to(torch.float64)
    X64, y64 = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    result = minimize_gradient_norm(module, criterion, X64, y64, tol=grad_tol,
                                    max_steps=max_grad_steps, optimizer=grad_optimizer)
    if not (np.isfinite(result.loss) and np.isfinite(result.final_grad_norm)):
        raise RunDiverged(f"the gradient-norm phase ended at loss {result.loss}, "
                          f"||grad L|| {result.final_grad_norm}",
                          info={"history": run["history"]})
    try:
        eigenvalues = hessian_eigenvalues(module, criterion, X64, y64)
    except (ValueError, torch.linalg.LinAlgError) as exc:  # a non-finite Hessian
        raise RunDiverged(f"the Hessian could not be diagonalised: {exc}") from exc
    if not np.all(np.isfinite(eigenvalues)):
        raise RunDiverged("the Hessian has non-finite eigenvalues")
    census = minimal_ratio(eigenvalues, tol=eigen_tol, relative=True)
    return {
        "n_params": count_params(module),
        "train_loss": float(run["train"]["loss"]),
        "loss": float(result.loss),
        "grad_norm_before": float(result.initial_grad_norm),
        "grad_norm_after": float(result.final_grad_norm),
        "converged": bool(result.converged),
        "n_steps": int(result.n_steps),
        "grad_optimizer": result.optimizer,
        "minimal_ratio": float(census.ratio),
        "n_positive": census.n_positive,
        "n_negative": census.n_negative,
        "n_zero": census.n_zero,
        "eigen_tol_used": census.tol_used,
        "min_eigenvalue": float(eigenvalues[0]),
        "max_eigenvalue": float(eigenvalues[-1]),
        "eigenvalues": np.asarray(eigenvalues, dtype=np.float64) if keep_spectrum else None,
    }


# --------------------------------------------------------------------------- checks
def _check_int(value, name, minimum=1):
    if not isinstance(value, Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_real(value, name, allow_none=False, allow_zero=False):
    if value is None and allow_none:
        return None
    ok = (isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(value)
          and (value > 0 or (allow_zero and value == 0)))
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        extra = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a finite number {bound}{extra}, got {value!r}.")
    return float(value)


def _check_hidden(hidden):
    if (isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__")
            or not all(isinstance(w, Integral) and not isinstance(w, bool) and w >= 1
                       for w in hidden)):
        raise ValueError(f"hidden must be a sequence of positive integers, got {hidden!r}.")
    return tuple(int(w) for w in hidden)


def _check_activation(activation):
    from ..models import ACTIVATIONS

    if not (isinstance(activation, str) and activation in ACTIVATIONS):
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    return activation


class MinimalRatioStudy(Study):
    """HW1-2: minimal ratio of the Hessian vs loss at points of near-zero gradient.

    Each of ``n_runs`` runs trains an :class:`~hw1sk.models.MLP` on the same
    data with its own seed (full-batch Adam through
    :class:`~hw1sk.estimators.NeuralRegressor`), then switches the objective
    to the squared gradient norm until ``||grad L|| < grad_tol`` (at most
    ``max_grad_steps`` steps, in float64;
    :func:`~hw1sk.curvature.minimize_gradient_norm`), takes the exact float64
    Hessian of the loss w.r.t. all parameters and counts its positive,
    negative and near-zero eigenvalues.  The minimal ratio is the fraction of
    eigenvalues above ``eigen_tol * max|lambda|``: 1 at a strict local
    minimum, less at a saddle.

    Runs that reach the step cap first are kept, with ``converged=False``
    and their final gradient norm; plots draw them apart.

    Parameters
    ----------
    n_runs : int, default=100
        Independent runs.
    function : str or callable, default="sinc"
        Target of the generated data (:func:`hw1sk.datasets.make_function_dataset`:
        ``"sinc"``, ``"sign"``, ``"sin"`` or a vectorised callable); unused
        when ``fit`` gets data.
    n_samples : int, default=1000
        Size of the generated data set.
    domain : (float, float), default=(-1.0, 1.0)
        Interval of the generated ``x``.
    hidden : sequence of int, default=(20, 20)
        Hidden widths of the MLP (481 parameters on 1-D data).
    activation : str, default="tanh"
        A smooth activation keeps the Hessian well defined; any name of
        :data:`hw1sk.models.ACTIVATIONS` is accepted.
    train_epochs : int, default=1000
        Full-batch Adam epochs of the training phase.
    lr : float, default=1e-2
        Adam learning rate.
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
    n_jobs : int, default=1
        Runs in parallel (:func:`hw1sk.sweep.run_sweep`).
    backend : {"loky", "threading", "sequential", "dask"}, default="loky"
    scheduler : str or distributed.Client, optional
        Dask scheduler, with ``backend="dask"``.
    cache_dir : str, optional
        Cache of finished runs (a killed study resumes).
    progress : bool, default=False
    device : str, default="cpu"
        Where the runs train and their Hessians are computed.
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
        ``minimal_ratio``, ``n_positive``, ``n_negative``, ``n_zero``,
        ``eigen_tol_used`` (absolute zero tolerance), ``min_eigenvalue``,
        ``max_eigenvalue``.
    spectra_ : dict
        Run -> ascending float64 eigenvalues (with ``keep_spectrum``; else empty).
    summary_ : pandas.DataFrame
        One row per group ``"converged"``, ``"not converged"``, ``"diverged"``
        and ``"finished"`` (the first two together): ``n_runs``, ``fraction``
        (of all ``n_runs``), and the mean, std, min and max of the minimal
        ratio, the median loss and the mean eigenvalue counts (NaN for
        diverged runs, which have none).
    settings_ : dict
        Human-readable settings for the report.
    diverged_ : pandas.DataFrame
        Runs with a non-finite loss or Hessian (``run``, ``seed``,
        ``message``); left out of ``results_``.
    X_, y_ : ndarray
        The training data of every run.

    See Also
    --------
    hw1sk.curvature.minimize_gradient_norm, hw1sk.curvature.hessian_minimal_ratio
    hw1sk.plotting.curvature.plot_minimal_ratio
    hw1sk.plotting.curvature.plot_hessian_spectrum

    Examples
    --------
    >>> from hw1sk.studies.minimal_ratio import MinimalRatioStudy
    >>> study = MinimalRatioStudy(n_runs=2, n_samples=50, hidden=(4,), train_epochs=50,
    ...                           backend="sequential").fit()
    >>> len(study.results_), bool(study.results_["n_params"].eq(13).all())
    (2, True)
    """

    def __init__(self, n_runs=100, *, function="sinc", n_samples=1000, domain=(-1.0, 1.0),
                 hidden=(20, 20), activation="tanh", train_epochs=1000, lr=1e-2,
                 grad_tol=1e-3, max_grad_steps=50, grad_optimizer="auto", eigen_tol=None,
                 keep_spectrum=True, n_jobs=1, backend="loky", scheduler=None,
                 cache_dir=None, progress=False, device="cpu", random_state=0):
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
        self.n_jobs = n_jobs
        self.backend = backend
        self.scheduler = scheduler
        self.cache_dir = cache_dir
        self.progress = progress
        self.device = device
        self.random_state = random_state

    def _validate_params(self):
        n_runs = _check_int(self.n_runs, "n_runs")
        hidden = _check_hidden(self.hidden)
        activation = _check_activation(self.activation)
        _check_int(self.train_epochs, "train_epochs")
        _check_real(self.lr, "lr")
        _check_real(self.grad_tol, "grad_tol")
        _check_int(self.max_grad_steps, "max_grad_steps", minimum=0)
        if self.grad_optimizer not in _GRAD_OPTIMIZERS:
            raise ValueError(f"grad_optimizer must be one of {_GRAD_OPTIMIZERS}, "
                             f"got {self.grad_optimizer!r}.")
        _check_real(self.eigen_tol, "eigen_tol", allow_none=True, allow_zero=True)
        if not isinstance(self.keep_spectrum, (bool, np.bool_)):
            raise ValueError(f"keep_spectrum must be a bool, got {self.keep_spectrum!r}.")
        return n_runs, hidden, activation

    def _data(self, X, y, master):
        """``(X, y, generated)``: the given arrays, or the generated function data."""
        from ..datasets import make_function_dataset

        if X is None and y is None:
            _check_int(self.n_samples, "n_samples")
            X, y = make_function_dataset(self.function, n_samples=self.n_samples,
                                         domain=self.domain, random_state=master)
            return X, y, True
        if X is None or y is None:
            raise ValueError("X and y must be given together (or both left to None to "
                             "generate the function data).")
        X, y = check_X_y(X, y, dtype=np.float32, multi_output=True, y_numeric=True)
        return X, (y.reshape(-1, 1) if y.ndim == 1 else y).astype(np.float32), False

    def fit(self, X=None, y=None):
        """Run the ``n_runs`` train / minimize-gradient / Hessian runs.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), optional
            Training inputs; None generates ``n_samples`` points of
            ``function`` on ``domain`` (drawn once from ``random_state``, the
            same for every run).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs), optional
            Real targets, given with ``X``.

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
        from ..estimators import NeuralRegressor
        from ..models import mlp_n_params

        n_runs, hidden, activation = self._validate_params()
        master = as_seed(self.random_state)
        X, y, generated = self._data(X, y, master)
        n_params = mlp_n_params(X.shape[1], hidden, y.shape[1])
        template = NeuralRegressor(module="mlp", module__hidden=hidden,
                                   module__activation=activation, batch_size=-1,
                                   max_epochs=int(self.train_epochs), lr=float(self.lr),
                                   device=self.device)
        seeds = spawn_seeds(master, n_runs)
        settings = {"grad_tol": float(self.grad_tol), "max_grad_steps": int(self.max_grad_steps),
                    "grad_optimizer": self.grad_optimizer,
                    "eigen_tol": None if self.eigen_tol is None else float(self.eigen_tol),
                    "keep_spectrum": bool(self.keep_spectrum),
                    "n_threads": 1 if len(X) * n_params < _SMALL_RUN else None}
        tasks = [{"estimator": template, "X": X, "y": y, "seed": seed, **settings}
                 for seed in seeds]
        runs = self._run_tasks(minimal_ratio_run, tasks, desc="MinimalRatioStudy")
        failed = [(i, seed) for i, (seed, run) in enumerate(zip(seeds, runs)) if run is None]
        # name diverged runs by their index and seed rather than by their arrays
        self.diverged_ = pd.DataFrame(
            [{"run": i, "seed": seed, "message": msg}
             for (i, seed), msg in zip(failed, self.diverged_.get("message", []))],
            columns=["run", "seed", "message"])
        done = {i: run for i, run in enumerate(runs) if run is not None}
        if not done:
            raise RuntimeError("MinimalRatioStudy: every run diverged; see diverged_ "
                               "(lower lr).")
        rows = [{"run": i, "seed": seeds[i], **{k: v for k, v in run.items()
                                                if k != "eigenvalues"}}
                for i, run in done.items()]
        self.results_ = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        self.spectra_ = {i: run["eigenvalues"] for i, run in done.items()
                         if run["eigenvalues"] is not None}
        self.summary_ = self._summary(n_runs)
        self.X_, self.y_ = X, y
        self.settings_ = self._settings(X, y, generated, hidden, activation, seeds, n_params)
        return self

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

    def _settings(self, X, y, generated, hidden, activation, seeds, n_params):
        return {
            "data": (f"{len(X)} given samples ({X.shape[1]} feature(s))" if not generated else
                     f"{len(X)} samples of {describe_value(self.function)} drawn uniformly "
                     f"on {tuple(float(v) for v in self.domain)}, the same for every run"),
            "model": f"MLP({X.shape[1]}, {hidden}, {y.shape[1]}, {activation})",
            "n_params": int(n_params),
            "training": f"full-batch Adam, lr {self.lr}, {self.train_epochs} epochs, MSE",
            "gradient phase": (f"minimize ||grad L|| (optimizer {self.grad_optimizer!r}, float64)"
                               f" until < {self.grad_tol:g}, at most {self.max_grad_steps} "
                               "steps"),
            "Hessian": "exact, float64, all parameters (hw1sk.curvature.loss_hessian)",
            "eigen_tol": ("n_params * eps(float64), relative to max|lambda|"
                          if self.eigen_tol is None else
                          f"{self.eigen_tol:g} relative to max|lambda|"),
            "n_runs": int(self.n_runs),
            "random_state": describe_value(self.random_state),
            "seeds": list(seeds),
        }
