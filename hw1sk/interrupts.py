"""Telling the user's Ctrl-C apart from a callback that ends training early.

skorch ends ``fit`` quietly on any :class:`KeyboardInterrupt`, because its
``EarlyStopping`` raises one to stop.  A Ctrl-C then looks like an early
stop: a run cut short is kept as if it had finished.  Here the two are
different signals:

* callbacks of ours end training with :class:`StopTraining`;
* a real SIGINT is recorded by :class:`InterruptWatch` while a fit runs,
  so the estimators re-raise it (and set ``interrupted_``) instead of
  swallowing it, while a ``KeyboardInterrupt`` that a skorch callback
  raises still ends training normally.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["StopTraining", "InterruptWatch"]


class StopTraining(Exception):
    """Raised by a callback to end training early, as a finished fit.

    Not a :class:`KeyboardInterrupt`, so it is never confused with the
    user's Ctrl-C.  :class:`~hw1sk.NeuralClassifier` and
    :class:`~hw1sk.NeuralRegressor` catch it around their fit loop and then
    run the ``on_train_end`` callbacks as after the last epoch.
    """


class InterruptWatch:
    """Context manager that records whether SIGINT arrived while it was active.

    In the main thread it installs a SIGINT handler that sets
    :attr:`interrupted` and then hands the signal to the handler that was
    there before (Python's default raises :class:`KeyboardInterrupt`); the
    previous handler is restored on exit.  Where SIGINT is ignored, or
    outside the main thread (signals are only delivered to the main
    thread), nothing is installed and :attr:`interrupted` stays False: a
    ``KeyboardInterrupt`` seen there was raised by code, not by the user.

    Attributes
    ----------
    interrupted : bool
        Whether SIGINT arrived inside the ``with`` block.

    Examples
    --------
    >>> from hw1sk.interrupts import InterruptWatch
    >>> with InterruptWatch() as watch:
    ...     pass
    >>> watch.interrupted
    False
    """

    def __init__(self):
        self.interrupted = False
        self._previous = None
        self._installed = False

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            previous = signal.getsignal(signal.SIGINT)
            if previous is signal.SIG_IGN:
                return self
            signal.signal(signal.SIGINT, self._handle)
        except (ValueError, OSError):  # not the main interpreter, or no signals here
            return self
        self._previous, self._installed = previous, True
        return self

    def _handle(self, signum, frame):
        self.interrupted = True
        previous = self._previous
        if callable(previous):
            return previous(signum, frame)
        raise KeyboardInterrupt  # SIG_DFL or a handler set outside Python

    def __exit__(self, *exc_info):
        if self._installed:
            try:
                signal.signal(signal.SIGINT, self._previous
                              if self._previous is not None else signal.default_int_handler)
            except (ValueError, OSError):  # pragma: no cover
                pass
            self._installed = False
        return False
