"""The default callbacks of the hw1sk estimators: epoch scores and the divergence check.

skorch computes the epoch's ``train_loss`` with ``PassthroughScoring``,
which walks the history at every epoch; :class:`EpochScores` adds up the
batch losses as they come instead (and, for classifiers, the running
accuracy, with no extra pass).  :class:`DivergenceCheck` applies the
estimator's ``divergence_factor`` rule to every training batch loss.
"""

from __future__ import annotations

import math

from skorch.callbacks import Callback

__all__ = ["EpochScores", "DivergenceCheck"]


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
            sums = self._sums[prefix] = [0.0, 0, 0, []]
        size = row[prefix + "_batch_size"]
        sums[0] += row[prefix + "_loss"] * size
        sums[1] += size
        sums[2] += 1
        pair = net._batch_labels(y_pred, batch)
        if pair is not None:
            sums[3].append(pair)  # compared once at the end: one op per batch, no sync

    def on_epoch_end(self, net, **kwargs):
        import torch

        row = net.history[-1]
        for prefix, (total, n_samples, n_batches, labels) in self._sums.items():
            row.setdefault(prefix + "_batch_count", n_batches)
            if not n_samples:
                continue
            self._record(row, prefix + "_loss", total / n_samples, lower_is_better=True)
            if labels:
                predicted, targets = zip(*labels)
                predicted = torch.cat(predicted)
                n_correct = (predicted == torch.cat(targets).to(predicted.device)).sum().item()
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
