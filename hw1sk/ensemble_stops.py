"""Per-seed early stopping in SeedEnsemble's vectorized pass.

A loop of ordinary fits stops each fit when its own :class:`PlateauStopping`
or :class:`TargetLossStopping` says so.  :class:`SeedStops` replays that in
the vectorized pass: at the end of every epoch it gives each running seed's
own copy of each stopping callback that seed's epoch row (the train loss as
:class:`~hw1sk.training_callbacks.EpochScores` computes it, the train
accuracy, the held-out scores of that epoch), in the copy's callback order,
and a callback that ends training stops that seed only: its parameters are
frozen from then on (as a diverged seed's are) while the others go on.  The
callbacks keep the state their own fit leaves (``stopped_epoch_``,
``best_epoch_``, ``misses_``, ``reached_epoch_``).

As in a fit, callbacks listed *after* the one that stopped a seed do not
see its last epoch: :meth:`SeedStops.sees_last_epoch` tells the write-back
which trace or held-out records to leave out.
"""

from __future__ import annotations

from .interrupts import StopTraining
from .training_callbacks import PlateauStopping, TargetLossStopping

__all__ = ["STOPPING_CALLBACKS", "SeedStops", "epoch_rows", "epoch_scores", "stop_obstacle"]

#: Stopping callbacks the vectorized pass replays per seed.
STOPPING_CALLBACKS = (PlateauStopping, TargetLossStopping)


def stop_obstacle(net, held_out_names):
    """Why a stopping callback of ``net`` cannot be replayed per seed, or None.

    ``held_out_names``: the history keys the replayed held-out scores write
    every epoch (only those, ``train_loss`` and, for a classifier,
    ``train_acc`` are known at the end of every epoch).
    """
    known = {"train_loss", *held_out_names}
    if hasattr(net, "classes_"):
        known.add("train_acc")
    for name, cb in net.callbacks_:
        if not isinstance(cb, STOPPING_CALLBACKS):
            continue
        if getattr(cb, "load_best", False):
            return (f"callback {name!r} has load_best=True (the vectorized pass keeps no "
                    "per-epoch weights)")
        if cb.monitor not in known:
            return (f"callback {name!r} monitors {cb.monitor!r}, which the vectorized pass "
                    f"does not record every epoch (it records {sorted(known)})")
    return None


class _OneRow(list):
    """The stand-in history a stopping callback reads: ``history[-1]`` is the epoch's row."""


class SeedStops:
    """The stopping callbacks of each seed's copy, replayed epoch by epoch.

    Parameters
    ----------
    nets : list of NeuralClassifier or NeuralRegressor
        The initialized copies of one chunk, one per seed.

    Attributes
    ----------
    stopped_epoch : list of int or None
        Per seed, the epoch after which a callback stopped it.
    stopper_position : list of int or None
        Per seed, the index in ``net.callbacks_`` of the callback that stopped it.
    """

    def __init__(self, nets):
        self.nets = nets
        self.stoppers = [[(pos, cb) for pos, (_, cb) in enumerate(net.callbacks_)
                          if isinstance(cb, STOPPING_CALLBACKS)] for net in nets]
        self.active = any(self.stoppers)
        self.stopped_epoch = [None] * len(nets)
        self.stopper_position = [None] * len(nets)

    def begin(self):
        """Reset every stopping callback as ``on_train_begin`` of its fit does."""
        for net, stoppers in zip(self.nets, self.stoppers):
            for _, cb in stoppers:
                cb.on_train_begin(net)

    def epoch_end(self, epoch, rows, running):
        """Give each running seed's callbacks its ``rows[i]``; the seeds that stop now.

        Parameters
        ----------
        epoch : int
        rows : list of dict
            Per seed, the epoch's history row (``epoch`` and the recorded keys).
        running : sequence of bool
            Per seed, whether it is still training.

        Returns
        -------
        list of int
            The seeds stopped by this epoch.
        """
        stopped = []
        for i, (net, stoppers) in enumerate(zip(self.nets, self.stoppers)):
            if not (stoppers and running[i]):
                continue
            saved = net.history
            net.history = _OneRow([rows[i]])
            try:
                for pos, cb in stoppers:
                    try:
                        cb.on_epoch_end(net)
                    except StopTraining:  # only this seed stops
                        self.stopped_epoch[i], self.stopper_position[i] = epoch, pos
                        stopped.append(i)
                        break
            finally:
                net.history = saved
        return stopped

    def sees_last_epoch(self, i, position):
        """Whether the callback at ``position`` of seed ``i`` saw that seed's last epoch."""
        return self.stopper_position[i] is None or position < self.stopper_position[i]


def epoch_rows(epoch, losses, sizes, correct, is_classifier, held_out=None):
    """Per seed, the epoch's row as the fit's callbacks would read it.

    Parameters
    ----------
    epoch : int
    losses : list of list of float
        Per step of the epoch, every seed's float64 batch loss.
    sizes : list of int
        Per step, the batch size.
    correct : list of list of int or None
        Per step, every seed's number of correct predictions (classifiers).
    is_classifier : bool
    held_out : dict or None
        History key -> per-seed values recorded this epoch (held-out scores).

    Returns
    -------
    list of dict
        ``{"epoch", "train_loss"[, "train_acc"], *held_out}`` per seed: the
        train loss summed in batch order as ``EpochScores`` sums it.
    """
    n_seeds = len(losses[0]) if losses else 0
    rows = []
    for i in range(n_seeds):
        loss, accuracy = epoch_scores([step[i] for step in losses], sizes,
                                      [step[i] for step in correct] if is_classifier else None)
        row = {"epoch": epoch, "train_loss": loss}
        if is_classifier:
            row["train_acc"] = accuracy
        for key, values in (held_out or {}).items():
            row[key] = float(values[i])
        rows.append(row)
    return rows


def epoch_scores(losses, sizes, correct=None):
    """``(train_loss, train_acc)`` of one seed's epoch, as its fit's ``EpochScores`` has them.

    Parameters
    ----------
    losses : list of float
        The seed's batch losses, in batch order.
    sizes : list of int
        The batch sizes.
    correct : list of int or None
        Correct predictions per batch (classifiers); None: ``train_acc`` is None.

    Returns
    -------
    tuple
        The sample-weighted mean loss (summed in batch order) and the accuracy.
    """
    total, n_samples = 0.0, 0
    for loss, size in zip(losses, sizes):
        total += loss * size
        n_samples += size
    accuracy = None if correct is None else sum(int(c) for c in correct) / n_samples
    return total / n_samples, accuracy
