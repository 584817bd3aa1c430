"""The one way the plotting functions get their data: a fitted study's frame, or a DataFrame."""

from __future__ import annotations

import pandas as pd
from sklearn.utils.validation import check_is_fitted


def study_frame(obj, attribute="results_", required=()):
    """``obj.<attribute>`` of a fitted study, or ``obj`` itself when it is a DataFrame.

    Parameters
    ----------
    obj : fitted study or pandas.DataFrame
    attribute : str, default="results_"
        The study's frame to draw.
    required : sequence of str, default=()
        Columns the frame must have.

    Returns
    -------
    frame : pandas.DataFrame

    Raises
    ------
    sklearn.exceptions.NotFittedError
        For a study that is not fitted.
    ValueError
        When a required column is missing or the frame is empty.
    """
    if isinstance(obj, pd.DataFrame):
        frame = obj
    else:
        check_is_fitted(obj, attribute)
        frame = getattr(obj, attribute)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"the results need columns {missing}; they have {list(frame.columns)}.")
    if frame.empty:
        raise ValueError("the results are empty (did every run diverge? see diverged_).")
    return frame
