"""HW1-2 curvature: the Hessian spectral density of a classifier over training (bulk and outliers)."""

from __future__ import annotations

import copy
import math
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from skorch.callbacks import Callback
from sklearn.base import clone
from sklearn.utils._param_validation import Interval

from .._inputs import eval_mode
from ..seeding import as_seed, spawn_seeds
from ._base import Study, subset_indices, train_run, with_callbacks
from ._collect import COUNT, aggregate_seeds, completed, run_seeds, seeded_tasks, stack
from ._defaults import describe_module

__all__ = ["HessianSpectrumStudy", "count_outliers"]

_NAMED = ("init", "mid", "end")
_COLUMNS = ["seed", "checkpoint", "epoch", "train_loss", "trace", "top_ritz_value", "bulk_edge",
            "n_outliers", "n_params"]
_MEASURES = ["train_loss", "top_ritz_value", "n_outliers"]


class _StateSnapshots(Callback):
    """Copies of the module's ``state_dict`` at the given epochs (0: before training)."""

    def __init__(self, epochs=()):
        self.epochs = epochs

    def _take(self, net, epoch):
        if epoch in set(self.epochs):
            self.snapshots_[epoch] = {k: v.detach().cpu().clone()
                                      for k, v in net.module_.state_dict().items()}

    def on_train_begin(self, net, **kwargs):
        self.snapshots_ = {}
        self._take(net, 0)

    def on_epoch_end(self, net, **kwargs):
        self._take(net, len(net.history))


def count_outliers(density, n_params):
    """``(bulk_edge, n_outliers)`` of an SLQ density of a Hessian of size ``n_params`` (P).

    The bulk edge is the first grid point right of the density's mode where
    it falls below half the bump of one isolated eigenvalue,
    ``1 / (2 P sigma sqrt(2 pi))``.  Lanczos resolves every probe's isolated
    extreme eigenvalues, so a probe's outliers are its Ritz values above the
    edge; the count is their median over the probes (rounded).

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
    h1 = 1.0 / (int(n_params) * density.sigma * math.sqrt(2 * math.pi))
    mode = int(np.argmax(density.density))
    below = np.flatnonzero(density.density[mode:] < h1 / 2)
    edge = float(density.grid[mode + below[0]]) if below.size else float(density.grid[-1])
    per_probe = (np.asarray(density.nodes) > edge).sum(axis=1)
    return edge, int(round(float(np.median(per_probe))))


def _checkpoint_epochs(checkpoints, max_epochs):
    """``[(label, epoch)]`` of the checkpoints: names ``init``/``mid``/``end`` or epochs."""
    named, out = {"init": 0, "mid": max(1, max_epochs // 2), "end": max_epochs}, []
    for c in [checkpoints] if isinstance(checkpoints, str) else list(checkpoints):
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


def _loss(module, criterion, X, y):
    """The mean loss of ``module`` on ``(X, y)`` in eval mode."""
    p = next(module.parameters())
    with torch.no_grad(), eval_mode(module):
        out = module(torch.as_tensor(np.asarray(X), dtype=p.dtype, device=p.device))
        return float(criterion(out, torch.as_tensor(y, device=p.device)))


def _with_snapshots(estimator, checkpoints):
    """``estimator`` snapshotting its weights at the checkpoints' epochs (what a run trains)."""
    cb = _StateSnapshots(epochs=tuple(e for _, e in checkpoints))
    return with_callbacks(estimator, ("hessian_snapshots", cb))


def _spectrum_run(estimator, X, y, seed, checkpoints, X_hess, y_hess, n_probes, n_iter):
    """Train once, snapshotting the weights; the SLQ density at each snapshot (a sweep task)."""
    from ..evaluation import encode_targets
    from ..parameters import count_params
    from ..stochastic_curvature import hessian_spectral_density

    if "hessian_snapshots" not in {name for name, _ in estimator.callbacks or []}:
        estimator = _with_snapshots(clone(estimator), checkpoints)
    run = train_run(estimator, X, y, seed=seed, keep_estimator=True)
    net, rows, densities = run["estimator"], [], {}
    snapshots = dict(net.callbacks_)["hessian_snapshots"].snapshots_
    y_hess, work = encode_targets(net, y_hess), copy.deepcopy(net.module_)
    n_params = count_params(work)
    for label, epoch in checkpoints:
        if epoch not in snapshots:  # training stopped before this epoch
            continue
        work.load_state_dict(snapshots[epoch])
        d = densities[label] = hessian_spectral_density(
            work, net.criterion_, X_hess, y_hess, n_probes=n_probes, n_iter=n_iter,
            random_state=seed)
        edge, n_out = count_outliers(d, n_params)
        # trace: the first moment of the density (exact from the quadrature) times P
        rows.append(dict(zip(_COLUMNS, (
            int(seed), label, int(epoch), _loss(work, net.criterion_, X_hess, y_hess),
            float((d.nodes * d.weights).sum() / d.nodes.shape[0] * n_params),
            float(d.nodes.max()), edge, n_out, int(n_params)))))
    return {"rows": rows, "densities": densities, "history": run["history"],
            "model": describe_module(net.module_), "estimator": net,
            "n_classes": int(len(net.classes_))}


class HessianSpectrumStudy(Study):
    """The Hessian eigenvalue density of a classifier's training loss over training.

    One model is trained (``n_seeds`` times); at checkpoint epochs the spectral
    density of the Hessian of its loss on ``n_hessian`` fixed training samples is estimated by
    stochastic Lanczos quadrature [3]_
    (:func:`~hw1sk.stochastic_curvature.hessian_spectral_density`) and its
    outliers counted (:func:`count_outliers`).  Trained classifiers
    show a bulk near zero and about ``C - 1`` outliers for ``C`` classes [1]_ [2]_.

    Parameters
    ----------
    estimator : NeuralClassifier, optional
        Trained with its own settings (only the seed is the study's).
        Default: MLP 784-32-10, Adam, lr 1e-3, batch size 128, 3 epochs.
    checkpoints : sequence of {"init", "mid", "end"} or int, default=("init", "mid", "end")
        Epochs: ``"init"`` 0, ``"mid"`` ``max(1, max_epochs // 2)``, ``"end"`` ``max_epochs``.
    n_hessian : int or None, default=1000
        Training samples of the Hessian's loss (None: all).
    n_probes, n_iter : int, default=10 and 60
        Random probes of the quadrature; Lanczos steps per probe.
    {n_seeds}
    random_state : int, RandomState or None, default=0
        Seeds the trainings, the Hessian subset (the same for every seed) and the probes.

    Attributes
    ----------
    results_ : pandas.DataFrame
        One row per (seed, checkpoint): ``seed``, ``checkpoint``, ``epoch``,
        ``train_loss`` (Hessian subset), ``trace`` (first moment times ``P``),
        ``top_ritz_value``, ``bulk_edge``, ``n_outliers``, ``n_params``.
    summary_ : pandas.DataFrame
        Per checkpoint: ``checkpoint``, ``epoch``, the means over seeds of ``train_loss``,
        ``top_ritz_value``, ``n_outliers`` {seed_spread}; ``n_seeds``, ``n_classes``.
    densities_, seed_densities_, hessian_indices_ : dict, dict, ndarray
        Checkpoint -> :class:`~hw1sk.stochastic_curvature.SpectralDensity` of the
        first seed; seed -> such a dict; the Hessian's samples.
    estimators_, history_, histories_, n_classes_
        ``{"model": the first seed's fitted estimator}``, its history, every
        history (``seed`` column), number of classes.

    See Also
    --------
    hw1sk.plotting.spectrum.plot_spectral_density

    References
    ----------
    .. [1] Sagun et al., "Empirical Analysis of the Hessian of Over-Parametrized Neural
       Networks", 2017.
    .. [2] Papyan, "Traces of Class/Cross-Class Structure Pervade Deep Learning Spectra", 2020.
    .. [3] Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net Optimization via
       Hessian Eigenvalue Density", ICML 2019.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralClassifier
    >>> from hw1sk.studies.hessian_spectrum import HessianSpectrumStudy
    >>> X = np.random.RandomState(0).randn(120, 5).astype("float32"); y = (X[:, 0] > 0) * 1
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
        "n_seeds": COUNT,
    }
    _run_function = staticmethod(_spectrum_run)
    _doc_values = {"runs": "Training runs (and probe draws)", "run_labels": "seed"}

    def __init__(self, estimator=None, checkpoints=_NAMED, n_hessian=1000, n_probes=10,
                 n_iter=60, n_seeds=1, **shared):
        super().__init__(estimator, **shared)
        self._store(locals())

    def _default_estimator(self, data):
        from ..estimators import NeuralClassifier
        return NeuralClassifier(module="mlp", module__hidden=(32,), lr=1e-3, batch_size=128,
                                max_epochs=3)

    def _tasks(self, data, template):
        self._seeds = spawn_seeds(as_seed(self.random_state), 2)  # training + probes, subset
        self._checkpoints = _checkpoint_epochs(self.checkpoints, int(template.max_epochs))
        n = self.n_hessian if self.n_hessian is not None and self.n_hessian < len(data.X) else None
        idx = self.hessian_indices_ = subset_indices(len(data.X), n, self._seeds[1], "n_hessian")
        return seeded_tasks({}, {
            "estimator": _with_snapshots(clone(template), self._checkpoints), "X": data.X,
            "y": data.y, "checkpoints": self._checkpoints, "X_hess": data.X[idx],
            "y_hess": data.y[idx], "n_probes": int(self.n_probes), "n_iter": int(self.n_iter)},
            run_seeds(self._seeds[0], self.n_seeds))

    def _collect(self, data, template, labels, runs):
        done = completed(labels, runs)
        first = done[0][1] if done else {"densities": {}, "history": pd.DataFrame(), "model": None,
                                         "n_classes": int(len(np.unique(data.y)))}
        self.results_ = pd.DataFrame([r for _, run in done for r in run["rows"]], columns=_COLUMNS)
        self.seed_densities_ = {label["seed"]: run["densities"] for label, run in done}
        self.densities_, self.history_, self.n_classes_ = (
            first["densities"], first["history"], first["n_classes"])
        self.histories_ = stack([({"seed": label["seed"]}, run["history"]) for label, run in done],
                                first=True)
        self.estimators_ = {"model": first["estimator"]} if done else {}
        self.summary_ = aggregate_seeds(self.results_, ["checkpoint", "epoch"], _MEASURES).assign(
            n_classes=self.n_classes_)
        self._model = first["model"]

    def _settings(self, data, template):
        return {**({} if self._model is None else {"model": self._model}),
                "checkpoints": ", ".join(f"{label} (epoch {e})" for label, e in self._checkpoints),
                "Hessian": (f"SLQ on {len(self.hessian_indices_)} training samples, "
                            f"{self.n_probes} probes x {self.n_iter} Lanczos steps"),
                "outliers": ("Ritz values above the bulk edge (density below half an isolated "
                             "eigenvalue's bump), median over probes"),
                "seed": int(self._seeds[0]), "n_seeds": self.n_seeds,
                "n_train": int(data.X.shape[0]),
                "random_state": self.random_state}
