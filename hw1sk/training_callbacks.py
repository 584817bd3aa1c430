"""The default callbacks of the hw1sk estimators: epoch scores and the divergence check.

skorch computes the epoch's ``train_loss`` with ``PassthroughScoring``,
which walks the history at every epoch; :class:`EpochScores` adds up the
batch losses as they come instead (and, for classifiers, the running
accuracy, with no extra pass).  :class:`DivergenceCheck` applies the
estimator's ``divergence_factor`` rule to every training batch loss.
:class:`PlateauStopping` is an early stop that stays cheap over thousands of
epochs, and ends training with :class:`~hw1sk.interrupts.StopTraining`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

from skorch.callbacks import Callback, EarlyStopping

from .interrupts import StopTraining

__all__ = ["EpochScores", "DivergenceCheck", "PlateauStopping", "TargetLossStopping"]


class EpochScores(Callback):
    """Per-epoch ``train_loss``/``valid_loss`` (and ``*_acc``) with their ``*_best`` flags.

    The loss is the sample-weighted mean of the epoch's batch losses, which
    skorch has already read into the history; for a classifier the accuracy
    is the fraction of correct predictions on the batches as they were
    trained (a running accuracy).  ``<prefix>_batch_count`` is recorded
    too, also for an epoch cut short.

    Attributes
    ----------
    best_ : dict
        Best value so far of each recorded score.
    """

    # class scores kept (as elements) before their argmax is taken, for many batches at once
    _PENDING_SCORES = 1 << 22

    def initialize(self):
        self.best_ = {}
        self._sums = {}
        return self

    def on_epoch_begin(self, net, **kwargs):
        self._sums = {}

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        prefix = "train" if training else "valid"
        row = net.history[-1]["batches"][-1]
        sums = self._sums.get(prefix)
        if sums is None:
            # loss * size, samples, batches, pending (scores, targets), their size, correct
            sums = self._sums[prefix] = [0.0, 0, 0, [], 0, 0]
        size = row[prefix + "_batch_size"]
        sums[0] += row[prefix + "_loss"] * size
        sums[1] += size
        sums[2] += 1
        pair = net._batch_scores(y_pred, batch)
        if pair is not None:
            sums[3].append(pair)  # no tensor op per batch, no sync
            sums[4] += pair[0].numel()
            if sums[4] >= self._PENDING_SCORES:
                self._count_correct(sums)

    @staticmethod
    def _count_correct(sums):
        """Add the pending batches' correct predictions to ``sums`` (a tensor: no sync)."""
        import torch

        scores, targets = zip(*sums[3])
        predicted = torch.cat(scores).argmax(1)  # row by row: the per-batch argmax
        sums[5] = sums[5] + (predicted == torch.cat(targets).to(predicted.device)).sum()
        sums[3], sums[4] = [], 0

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        for prefix, sums in self._sums.items():
            total, n_samples, n_batches = sums[:3]
            row.setdefault(prefix + "_batch_count", n_batches)
            if not n_samples:
                continue
            self._record(row, prefix + "_loss", total / n_samples, lower_is_better=True)
            if sums[3]:
                self._count_correct(sums)
            if not isinstance(sums[5], int):  # some batch had class scores
                n_correct = int(sums[5].item())
                self._record(row, prefix + "_acc", n_correct / n_samples, lower_is_better=False)

    def _record(self, row, key, value, lower_is_better):
        previous = self.best_.get(key)
        better = math.isfinite(value) and (
            previous is None or (value < previous if lower_is_better else value > previous)
        )
        if better:
            self.best_[key] = value
        row[key] = value
        row[key + "_best"] = better


class DivergenceCheck(Callback):
    """Flags a training batch loss that is NaN/inf or far above the starting loss.

    The rule is the estimator's ``divergence_factor``: a loss above
    ``divergence_factor * initial_loss_`` (the first training batch's loss)
    diverges, and so does any non-finite one.  The check sets the net's
    ``diverged_`` and ``divergence_reason_`` and records ``diverged`` in
    the epoch's row; the net then stops before its next batch, after every
    callback has seen the diverged one.
    """

    def initialize(self):
        self._limit = math.inf
        return self

    def on_train_begin(self, net, **kwargs):
        self._limit = self._limit_of(net)

    def on_epoch_end(self, net, **kwargs):
        net.history[-1]["diverged"] = bool(net.diverged_)

    def on_batch_end(self, net, training=None, **kwargs):
        if not training:
            return
        loss = net.history[-1]["batches"][-1]["train_loss"]
        if net.initial_loss_ is None and math.isfinite(loss):
            net.initial_loss_ = loss  # the first batch, at the initial weights
            self._limit = self._limit_of(net)
        if not (math.isfinite(loss) and loss <= self._limit):
            net.diverged_ = True
            net.divergence_reason_ = self._reason(net, loss)

    @staticmethod
    def _limit_of(net):
        factor, start = net.divergence_factor, net.initial_loss_
        if factor is None or start is None or start <= 0:
            return math.inf  # only a non-finite loss diverges
        return factor * start

    @staticmethod
    def _reason(net, loss):
        epoch = net.history[-1]["epoch"]
        if not math.isfinite(loss):
            return f"the training loss became {loss} in epoch {epoch}"
        return (f"the training loss reached {loss:.4g} in epoch {epoch}, over "
                f"divergence_factor={net.divergence_factor:g} times the starting loss "
                f"{net.initial_loss_:.4g}")


class PlateauStopping(EarlyStopping):
    """skorch's :class:`~skorch.callbacks.EarlyStopping`, cheap over thousands of epochs.

    Stops training when the monitored score has not improved on its last
    reference value by ``threshold`` (relative by default) for ``patience``
    epochs.  It reads the current epoch's row directly: skorch's
    ``history[-1, key]`` walks the whole history, which over 20,000 epochs
    of a 571-parameter network costs more than the training itself.

    Parameters
    ----------
    monitor, patience, threshold, threshold_mode, lower_is_better, sink, load_best
        As in skorch's ``EarlyStopping``; defaults ``"train_loss"``, 1000,
        1e-3, ``"rel"``, True, ``print``, False.

    Attributes
    ----------
    stopped_epoch_ : int or None
        The epoch after which training stopped; None if it ran to the end.
    """

    def __init__(self, monitor="train_loss", patience=1000, threshold=1e-3,
                 threshold_mode="rel", lower_is_better=True, sink=print, load_best=False):
        super().__init__(monitor=monitor, patience=patience, threshold=threshold,
                         threshold_mode=threshold_mode, lower_is_better=lower_is_better,
                         sink=sink, load_best=load_best)

    def on_train_begin(self, net, **kwargs):
        super().on_train_begin(net, **kwargs)
        self.stopped_epoch_ = None

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        if not isinstance(row, Mapping):  # a plain skorch History: its own indexing
            row = {self.monitor: net.history[-1, self.monitor],
                   "epoch": net.history[-1, "epoch"]}
        score = row[self.monitor]
        if self._is_score_improved(score):
            self.misses_ = 0
            self.dynamic_threshold_ = self._calc_new_threshold(score)
            self.best_epoch_ = row["epoch"]
            if self.load_best:
                self.best_model_weights_ = copy.deepcopy(net.module_.state_dict())
        else:
            self.misses_ += 1
        if self.misses_ == self.patience:
            self.stopped_epoch_ = row["epoch"]
            if net.verbose:
                self._sink(f"Stopping since {self.monitor} has not improved in the last "
                           f"{self.patience} epochs.", verbose=net.verbose)
            from .estimators import NeuralClassifier, NeuralRegressor

            if isinstance(net, (NeuralClassifier, NeuralRegressor)):
                raise StopTraining  # ours: never mistaken for the user's Ctrl-C
            raise KeyboardInterrupt  # a plain skorch net knows no other way to stop early


class TargetLossStopping(Callback):
    """Ends training after the first epoch whose monitored loss is at most ``target``.

    The estimator's ``max_epochs`` is the cap: a fit that never reaches the
    target runs to the end, with ``reached_epoch_`` None.  Like
    :class:`PlateauStopping` it ends training with
    :class:`~hw1sk.interrupts.StopTraining` (a ``KeyboardInterrupt`` on a
    plain skorch net), so callbacks listed after it do not see that epoch.

    Parameters
    ----------
    target : float
        The loss to reach.
    monitor : str, default="train_loss"
        The history key compared with ``target``.

    Attributes
    ----------
    reached_epoch_ : int or None
        The epoch at whose end the target was reached; None if never.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.estimators import NeuralClassifier
    >>> from hw1sk.training_callbacks import TargetLossStopping
    >>> X = np.random.RandomState(0).randn(64, 2).astype("float32")
    >>> stop = TargetLossStopping(target=10.0)
    >>> net = NeuralClassifier(module__hidden=(4,), max_epochs=5, callbacks=[stop])
    >>> len(net.fit(X, (X[:, 0] > 0).astype(int)).history_), stop.reached_epoch_
    (1, 1)
    """

    def __init__(self, target, monitor="train_loss"):
        self.target = target
        self.monitor = monitor

    def on_train_begin(self, net, **kwargs):
        self.reached_epoch_ = None

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        if not isinstance(row, Mapping):  # a plain skorch History: its own indexing
            row = {self.monitor: net.history[-1, self.monitor],
                   "epoch": net.history[-1, "epoch"]}
        loss = row.get(self.monitor, math.nan)
        if not (math.isfinite(loss) and loss <= self.target):
            return
        self.reached_epoch_ = int(row["epoch"])
        from .estimators import NeuralClassifier, NeuralRegressor

        if isinstance(net, (NeuralClassifier, NeuralRegressor)):
            raise StopTraining
        raise KeyboardInterrupt  # a plain skorch net knows no other way to stop early
