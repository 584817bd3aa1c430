"""HW1-2 curvature: the Hessian spectral density of a classifier over training (bulk and outliers)."""

from __future__ import annotations

import copy
import math
from numbers import Integral

import numpy as np
import pandas as pd
from skorch.callbacks import Callback
from sklearn.base import clone
from sklearn.utils._param_validation import Interval

from ..seeding import as_seed, spawn_seeds
from ._base import Study, subset_indices, train_run, with_callbacks
from ._defaults import describe_module

__all__ = ["HessianSpectrumStudy", "count_outliers"]

_NAMED = ("init", "mid", "end")
_COLUMNS = ["checkpoint", "epoch", "train_loss", "trace", "top_ritz_value", "bulk_edge",
            "n_outliers", "n_params"]


class _StateSnapshots(Callback):
    """Copies of the module's ``state_dict`` at the given epochs (0: before training)."""

    def __init__(self, epochs=()):
        self.epochs = epochs

    def initialize(self):
        self.snapshots_ = {}
        return self

    def _take(self, net, epoch):
        if epoch in set(self.epochs):
            self.snapshots_[epoch] = {k: v.detach().cpu().clone()
                                      for k, v in net.module_.state_dict().items()}

    def on_train_begin(self, net, **kwargs):
        self._take(net, 0)

    def on_epoch_end(self, net, **kwargs):
        self._take(net, len(net.history))


def _bulk_edge(density, n_params):
    h1 = 1.0 / (n_params * density.sigma * math.sqrt(2 * math.pi))
    mode = int(np.argmax(density.density))
    below = np.flatnonzero(density.density[mode:] < h1 / 2)
    return float(density.grid[mode + below[0]]) if below.size else float(density.grid[-1])


def count_outliers(density, n_params):
    """The bulk edge and the number of outlier eigenvalues of an SLQ density.

    Rule: the bulk edge is the first grid point right of the density's mode
    where the density falls below half the height of one isolated
    eigenvalue's bump, ``1 / (2 P sigma sqrt(2 pi))`` (``P`` = ``n_params``).
    Lanczos resolves the isolated extreme eigenvalues of every probe, so a
    probe's outliers are its Ritz values above the edge; the count is the
    median over the probes (rounded).

    Parameters
    ----------
    density : SpectralDensity
    n_params : int
        The size of the Hessian.

    Returns
    -------
    edge : float
    n_outliers : int

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.stochastic_curvature import SpectralDensity, exact_spectral_density
    >>> lam = np.r_[np.linspace(0, 0.1, 996), 2.0, 3.0, 4.0, 5.0]
    >>> grid = np.linspace(-0.5, 5.5, 2000)
    >>> d = SpectralDensity(grid, exact_spectral_density(lam, grid, 0.05),
    ...                     np.r_[0.05, 2.0, 3.0, 4.0, 5.0][None], np.full((1, 5), 0.2), 0.05)
    >>> edge, n = count_outliers(d, 1000)
    >>> bool(0.1 < edge < 2.0), n
    (True, 4)
    """
    edge = _bulk_edge(density, int(n_params))
    per_probe = (np.asarray(density.nodes) > edge).sum(axis=1)
    return edge, int(round(float(np.median(per_probe))))


def _checkpoint_epochs(checkpoints, max_epochs):
    """``[(label, epoch)]`` of the checkpoints: names ``init``/``mid``/``end`` or epochs."""
    values = list(checkpoints) if not isinstance(checkpoints, str) else [checkpoints]
    named = {"init": 0, "mid": max(1, max_epochs // 2), "end": max_epochs}
    out = []
    for c in values:
        if isinstance(c, str) and c in named:
            out.append((c, named[c]))
        elif isinstance(c, Integral) and not isinstance(c, bool) and 0 <= c <= max_epochs:
            out.append((f"epoch {int(c)}", int(c)))
        else:
            raise ValueError(f"checkpoints must be among {_NAMED} or epochs in [0, "
                             f"{max_epochs}] (the estimator's max_epochs), got {c!r}.")
    if not out or len({label for label, _ in out}) != len(out):
        raise ValueError(f"checkpoints must be non-empty and distinct, got {checkpoints!r}.")
    return out


def _loss(module, criterion, X, y, torch, eval_mode):
    """The mean loss of ``module`` on ``(X, y)`` in eval mode."""
    p = next(module.parameters())
    with torch.no_grad(), eval_mode(module):
        out = module(torch.as_tensor(np.asarray(X), dtype=p.dtype, device=p.device))
        return float(criterion(out, torch.as_tensor(y, device=p.device)))


def _spectrum_run(estimator, X, y, seed, checkpoints, X_hess, y_hess, n_probes, n_iter):
    """Train once, snapshotting the weights; the SLQ density at each snapshot (a sweep task).

    Returns ``{"rows": [dict of the results_ columns], "densities": {label:
    SpectralDensity}, "history": DataFrame, "model": str, "estimator": net}``.
    """
    import torch

    from .._inputs import eval_mode
    from ..evaluation import encode_targets
    from ..parameters import count_params
    from ..stochastic_curvature import hessian_spectral_density

    cb = _StateSnapshots(epochs=tuple(e for _, e in checkpoints))
    est = with_callbacks(clone(estimator), ("hessian_snapshots", cb))
    run = train_run(est, X, y, seed=seed, keep_estimator=True)
    net = run["estimator"]
    snapshots = dict(net.callbacks_)["hessian_snapshots"].snapshots_
    y_hess = encode_targets(net, y_hess)
    work = copy.deepcopy(net.module_)
    n_params = count_params(work)
    rows, densities = [], {}
    for label, epoch in checkpoints:
        if epoch not in snapshots:  # training stopped before this epoch
            continue
        work.load_state_dict(snapshots[epoch])
        d = hessian_spectral_density(work, net.criterion_, X_hess, y_hess, n_probes=n_probes,
                                     n_iter=n_iter, random_state=seed)
        edge, n_out = count_outliers(d, n_params)
        densities[label] = d
        rows.append({
            "checkpoint": label, "epoch": int(epoch),
            "train_loss": _loss(work, net.criterion_, X_hess, y_hess, torch, eval_mode),
            # first moment of the density (exact from the quadrature) times P
            "trace": float((d.nodes * d.weights).sum() / d.nodes.shape[0] * n_params),
            "top_ritz_value": float(d.nodes.max()), "bulk_edge": edge,
            "n_outliers": n_out, "n_params": int(n_params)})
    return {"rows": rows, "densities": densities, "history": run["history"],
            "model": describe_module(net.module_), "estimator": net,
            "n_classes": int(len(net.classes_))}


class HessianSpectrumStudy(Study):
    """The Hessian eigenvalue density of a classifier's training loss over training.

    One model is trained; a callback copies its weights at the checkpoint
    epochs (epoch 0, before the first step, for ``"init"``).  At each copy
    the spectral density of the Hessian of the training loss on a fixed
    subset of ``n_hessian`` training samples is estimated by stochastic
    Lanczos quadrature
    (:func:`hw1sk.stochastic_curvature.hessian_spectral_density`), and the
    outliers separated from the bulk are counted by
    :func:`count_outliers`: the bulk edge is the first point right of the
    density's mode where it falls below half the height of one isolated
    eigenvalue's bump; a probe's outliers are its Ritz values above it, and
    the count is the median over probes.  Trained classifiers show a bulk
    near zero and about ``C - 1`` outliers for ``C`` classes (Sagun et al.,
    2017; Papyan, 2020).

    Parameters
    ----------
    estimator : NeuralClassifier, optional
        Unfitted template, cloned and never modified; it trains with its own
        settings (only the seed is the study's).  Default: an MLP 784-32-10,
        Adam, lr 1e-3, batch size 128, 3 epochs.
    checkpoints : sequence of {"init", "mid", "end"} or int, default=("init", "mid", "end")
        Where to measure: ``"init"`` is epoch 0, ``"mid"`` epoch
        ``max(1, max_epochs // 2)``, ``"end"`` epoch ``max_epochs``; an int
        is an epoch.
    n_hessian : int or None, default=1000
        Training samples of the Hessian's loss (None: all of them).
    n_probes : int, default=10
        Random probes of the quadrature.
    n_iter : int, default=60
        Lanczos steps per probe.
    n_jobs, backend, scheduler, cache_dir, progress, device
        As in :class:`~hw1sk.studies._base.Study`.
    random_state : int, RandomState or None, default=0
        Master seed of the training seed, the Hessian subset and the probes.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per checkpoint: ``checkpoint``, ``epoch``, ``train_loss``
        (on the Hessian's subset), ``trace`` (first moment of the density
        times ``P``), ``top_ritz_value``, ``bulk_edge``, ``n_outliers``,
        ``n_params``.
    summary_ : pandas.DataFrame
        ``checkpoint``, ``epoch``, ``train_loss``, ``top_ritz_value``,
        ``n_outliers`` and ``n_classes``.
    densities_ : dict
        Checkpoint -> :class:`~hw1sk.stochastic_curvature.SpectralDensity`.
    estimators_ : dict
        ``"model"`` -> the fitted estimator.
    history_ : pandas.DataFrame
    n_classes_ : int
    hessian_indices_ : numpy.ndarray
        Indices of the training samples of the Hessian.
    settings_ : dict
    diverged_ : pandas.DataFrame

    See Also
    --------
    hw1sk.plotting.spectrum.plot_spectral_density

    References
    ----------
    .. [1] Sagun, Evci, Guney, Dauphin, Bottou, "Empirical Analysis of the
       Hessian of Over-Parametrized Neural Networks", 2017.
    .. [2] Papyan, "Traces of Class/Cross-Class Structure Pervade Deep
       Learning Spectra", JMLR 2020.
    .. [3] Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net
       Optimization via Hessian Eigenvalue Density", ICML 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralClassifier
    >>> from hw1sk.studies.hessian_spectrum import HessianSpectrumStudy
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(120, 5).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> est = NeuralClassifier(module="mlp", module__hidden=(4,), max_epochs=2)
    >>> study = HessianSpectrumStudy(est, n_hessian=50, n_probes=2, n_iter=5).fit(X, y)
    >>> study.results_["epoch"].tolist()
    [0, 1, 2]
    """

    _parameter_constraints = {
        **Study._parameter_constraints,
        "checkpoints": ["array-like", str],
        "n_hessian": [Interval(Integral, 1, None, closed="left"), None],
        "n_probes": [Interval(Integral, 1, None, closed="left")],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
    }
    _run_function = staticmethod(_spectrum_run)

    def __init__(self, estimator=None, checkpoints=_NAMED, n_hessian=1000, n_probes=10,
                 n_iter=60, n_jobs=1, backend="loky", scheduler=None, cache_dir=None,
                 progress=False, device=None, random_state=0):
        super().__init__(estimator=estimator, n_jobs=n_jobs, backend=backend,
                         scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                         device=device, random_state=random_state)
        self.checkpoints = checkpoints
        self.n_hessian = n_hessian
        self.n_probes = n_probes
        self.n_iter = n_iter

    # ------------------------------------------------------------------ hooks
    def _default_estimator(self, data):
        from ..estimators import NeuralClassifier

        return NeuralClassifier(module="mlp", module__hidden=(32,), lr=1e-3, batch_size=128,
                                max_epochs=3)

    def _tasks(self, data, template):
        self._seeds = spawn_seeds(as_seed(self.random_state), 2)  # training + probes, subset
        self._checkpoints = _checkpoint_epochs(self.checkpoints, int(template.max_epochs))
        n = self.n_hessian if self.n_hessian is not None and self.n_hessian < len(data.X) else None
        self.hessian_indices_ = subset_indices(len(data.X), n, self._seeds[1], "n_hessian")
        idx = self.hessian_indices_
        task = {"estimator": template, "X": data.X, "y": data.y, "seed": self._seeds[0],
                "checkpoints": self._checkpoints, "X_hess": data.X[idx], "y_hess": data.y[idx],
                "n_probes": int(self.n_probes), "n_iter": int(self.n_iter)}
        return [({"run": 0}, task)]

    def _collect(self, data, template, labels, runs):
        run = runs[0]
        self.results_ = pd.DataFrame(run["rows"] if run else [], columns=_COLUMNS)
        self.densities_ = run["densities"] if run else {}
        self.estimators_ = {"model": run["estimator"]} if run else {}
        self.history_ = run["history"] if run else pd.DataFrame()
        self.n_classes_ = run["n_classes"] if run else int(len(np.unique(data.y)))
        self.summary_ = self.results_[["checkpoint", "epoch", "train_loss", "top_ritz_value",
                                       "n_outliers"]].assign(n_classes=self.n_classes_)
        self._model = run["model"] if run else None

    def _settings(self, data, template):
        settings = {} if self._model is None else {"model": self._model}
        settings.update({
            "checkpoints": ", ".join(f"{label} (epoch {e})" for label, e in self._checkpoints),
            "Hessian": (f"SLQ on {len(self.hessian_indices_)} training samples, "
                        f"{self.n_probes} probes x {self.n_iter} Lanczos steps"),
            "outliers": ("Ritz values above the bulk edge (density below half an isolated "
                         "eigenvalue's bump), median over probes"),
            "seed": int(self._seeds[0]), "n_train": int(data.X.shape[0]),
            "random_state": self.random_state,
        })
        return settings
