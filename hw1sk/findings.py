"""Findings: claims computed from a fitted study's results, with expectations and verdicts.

Each HW1 item of the report ends with its findings.  A finding states what
the numbers show (the *claim*, with the numbers in it), the *expectation* it
tests (from the assignment or the paper in *reference*), and a *verdict*:
``"reproduced"``, ``"not reproduced"`` or ``"inconclusive"``, with the
*reason* (too few runs, overlapping spreads, a rank correlation that is not
significant, a difference below a stated threshold, ...).  Nothing here is
fixed text about the results: every claim, evidence and verdict is computed
from the study's fitted attributes (``results_``, ``summary_``, ...).

There is one function per kind of item; each takes the fitted study (and the
item's id) and returns a list of :class:`Finding`.  The thresholds are the
module's constants below, so that a reader finds them in one place.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = ["Finding", "VERDICTS", "REPRODUCED", "NOT_REPRODUCED", "INCONCLUSIVE",
           "findings_frame", "safe_findings", "deep_shallow_findings",
           "trajectory_findings", "gradient_norm_findings", "minimal_ratio_findings",
           "error_surface_findings", "random_label_findings", "param_count_findings",
           "interpolation_findings", "sensitivity_findings", "hessian_spectrum_findings"]

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

#: Significance level of every rank-correlation test.
ALPHA = 0.05
#: Restarts per model needed before the spread across restarts is judged (1-1).
MIN_RESTARTS = 3
#: Converged runs needed for the loss / minimal-ratio correlation (1-2).
MIN_CONVERGED = 10
#: Models (1-3 parameter count) and batch sizes (1-3 sensitivity) needed for a correlation.
MIN_MODELS = 5
MIN_BATCH_SIZES = 5
#: Part of the iterations compared at the start and at the end of training (1-2).
EDGE_FRACTION = 0.1
#: Relative change of the gradient norm below which it neither "falls" nor "rises".
GRAD_CHANGE = 0.1
#: Endpoint distances, relative to a run's travel in the PCA plane, that count as
#: "apart" (above) or "together" (below); explained variance that makes "together" final.
APART, PLANE_VARIANCE = 0.1, 0.9
#: Excess of the trained point's loss over the surface minimum, relative to the surface's
#: range: at most ``AT_MINIMUM`` it is the minimum, above ``OFF_MINIMUM`` it is not.
AT_MINIMUM, OFF_MINIMUM = 0.01, 0.05
#: Memorization (1-3 random labels): train accuracy at least, test accuracy above chance at most.
MEMORIZED, CHANCE_MARGIN = 0.9, 0.05
#: Interpolation barrier relative to the larger end-point loss: a barrier at least
#: ``BARRIER``, none at most ``NO_BARRIER``.
BARRIER, NO_BARRIER = 0.05, 0.01
#: Test-accuracy difference between the small- and the large-batch model that counts.
ACCURACY_DIFFERENCE = 0.01
#: Hessian outliers (1-2 spectrum): a count within this many of C - 1 is "about C - 1";
#: a relative change of the top eigenvalue below ``TOP_CHANGE`` is no change.
OUTLIER_SLACK, TOP_CHANGE = 2, 0.05


@dataclass(frozen=True)
class Finding:
    """One claim about an item's results, the expectation it tests and the verdict.

    Parameters
    ----------
    item : str
        The report item's id (``"1-2-minimal-ratio"``).
    claim : str
        What the numbers show, with the numbers.
    expectation : str
        The expected result the claim tests.
    reference : str
        Where the expectation comes from (the assignment, a paper).
    verdict : {"reproduced", "not reproduced", "inconclusive"}
    evidence : str
        The numbers the verdict rests on.
    reason : str
        Why the verdict is what it is (thresholds, counts, p-values).
    """

    item: str
    claim: str
    expectation: str
    reference: str
    verdict: str
    evidence: str
    reason: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}.")


def findings_frame(findings) -> pd.DataFrame:
    """The findings as a table, one row each, columns as the fields of :class:`Finding`."""
    columns = ["item", "claim", "verdict", "evidence", "expectation", "reference", "reason"]
    return pd.DataFrame([asdict(f) for f in findings], columns=columns)


def safe_findings(function, study, item):
    """``function(study, item=item)``, or one inconclusive finding when it raises.

    A report must never lose an item because its findings could not be
    computed (a column missing, every run diverged, ...): the error becomes
    the finding's reason.

    Returns
    -------
    findings : list of Finding
    """
    try:
        return list(function(study, item=item))
    except Exception as exc:  # noqa: BLE001 - the report shows the error instead
        return [Finding(item, "The findings of this item could not be computed.",
                        "-", "-", INCONCLUSIVE, "none",
                        f"computing them raised {type(exc).__name__}: {exc}")]


# ------------------------------------------------------------------ shared pieces
def _g(value) -> str:
    """A number as the findings print it (4 significant digits)."""
    value = float(value)
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _rank_correlation(x, y):
    """Spearman's rho, its p-value and the number of finite pairs (NaN when undefined)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan, n
    rho, p = spearmanr(x[ok], y[ok])
    return float(rho), float(p), n


def _correlation_verdict(rho, p, n, expected_sign, min_n):
    """Verdict and reason of a rank correlation expected to have ``expected_sign``."""
    if n < min_n:
        return INCONCLUSIVE, f"only {n} points: at least {min_n} are needed"
    if not math.isfinite(rho):
        return INCONCLUSIVE, "one of the two quantities is constant: no rank correlation"
    if p >= ALPHA:
        return INCONCLUSIVE, f"the rank correlation is not significant (p = {_g(p)} >= {ALPHA})"
    if np.sign(rho) == expected_sign:
        return REPRODUCED, (f"significant rank correlation (p = {_g(p)} < {ALPHA}) of the "
                            "expected sign")
    return NOT_REPRODUCED, (f"significant rank correlation (p = {_g(p)} < {ALPHA}) of the "
                            "opposite sign")


def _correlation_finding(item, x, y, names, expected_sign, min_n, expectation, reference,
                         note=""):
    """A finding on the Spearman correlation of ``x`` and ``y`` (named ``names``)."""
    rho, p, n = _rank_correlation(x, y)
    verdict, reason = _correlation_verdict(rho, p, n, expected_sign, min_n)
    subject = names[1][:1].upper() + names[1][1:]
    if math.isfinite(rho):
        claim = (f"{subject} {'rises' if rho > 0 else 'falls'} with {names[0]} "
                 f"(Spearman rho = {_g(rho)}, n = {n}).")
    elif n < 3:
        claim = f"{subject} against {names[0]}: {n} point(s), too few to rank."
    else:
        claim = f"{subject} against {names[0]}: one of them is constant over {n} points."
    evidence = f"Spearman rho({names[0]}, {names[1]}) = {_g(rho)}, p = {_g(p)}, n = {n}"
    return Finding(item, claim, expectation, reference, verdict,
                   evidence + (f"; {note}" if note else ""), reason)


# --------------------------------------------------------------------------- 1-1
def _depth_pair(frame):
    """The shallowest and the deepest model of ``frame`` (by ``n_layers``), or None."""
    layers = frame.groupby("model", sort=False)["n_layers"].first()
    if layers.nunique() < 2:
        return None
    return layers.idxmin(), layers.idxmax(), layers


def _deep_shallow_one(item, name, family, frame, metric, higher):
    """One finding: the deepest vs the shallowest model of one family on one data set."""
    shallow, deep, layers = _depth_pair(frame)
    values = {m: frame.loc[frame["model"] == m, metric].to_numpy(float) for m in (shallow, deep)}
    best = {m: (v.max() if higher else v.min()) for m, v in values.items()}
    deep_better = best[deep] > best[shallow] if higher else best[deep] < best[shallow]
    num, den = (best[deep], best[shallow]) if higher else (best[shallow], best[deep])
    ratio = num / den if den else math.inf
    word = ("higher" if deep_better else "lower") if higher else (
        "lower" if deep_better else "higher")
    claim = (f"{name}, {family}: the deepest model {deep} ({layers[deep]} layers) reaches a "
             f"{word} best {metric} than the shallowest {shallow} ({layers[shallow]} layers): "
             f"{_g(best[deep])} vs {_g(best[shallow])}"
             f" ({_g(ratio if deep_better else 1 / ratio)}x).")
    n = min(len(v) for v in values.values())
    ranges = {m: (v.min(), v.max()) for m, v in values.items()}
    overlap = max(r[0] for r in ranges.values()) <= min(r[1] for r in ranges.values())
    evidence = "; ".join(f"{m}: {len(v)} restart(s), best {_g(best[m])}, range "
                         f"[{_g(ranges[m][0])}, {_g(ranges[m][1])}]" for m, v in values.items())
    if "constant_output" in frame:
        evidence += f"; constant-output restarts: {int(frame['constant_output'].sum())}"
    if n < MIN_RESTARTS:
        verdict, reason = INCONCLUSIVE, (f"only {n} restart(s) per model: at least "
                                         f"{MIN_RESTARTS} are needed to judge the spread")
    elif overlap:
        verdict, reason = INCONCLUSIVE, "the ranges of the two models across restarts overlap"
    else:
        verdict = REPRODUCED if deep_better else NOT_REPRODUCED
        reason = f"the ranges across {n} restarts do not overlap"
    goal = "higher " + metric if higher else "lower " + metric
    expectation = f"The deeper model of about equal parameter count reaches a {goal}."
    return Finding(item, claim, expectation, "HW1-1 (deep vs shallow)", verdict, evidence,
                   reason)


def deep_shallow_findings(study, item="1-1"):
    """1-1: does the deepest model of each family beat the shallowest of equal size?

    Function fitting compares the best (lowest) final ``train_loss`` over the
    restarts; classification the best ``test_acc`` (``train_acc`` without
    test data).  Inconclusive with fewer than :data:`MIN_RESTARTS` restarts
    per model or when the ranges across restarts overlap.

    Parameters
    ----------
    study : fitted DeepShallowStudy
        ``summary_`` with ``function`` or ``dataset``, ``model``, ``n_layers``
        and the metric.
    item : str

    Returns
    -------
    findings : list of Finding
        One per (function or data set, model family) with two depths or more.
    """
    summary = study.summary_
    key = "function" if "function" in summary else "dataset"
    higher = "train_acc" in summary or "test_acc" in summary
    metric = ("test_acc" if "test_acc" in summary else "train_acc") if higher else "train_loss"
    family = summary["model"].astype(str).map(lambda m: re.sub(r"-\d+$", "", m))
    out = []
    for (name, fam), frame in summary.assign(_family=family).groupby([key, "_family"],
                                                                     sort=False):
        if _depth_pair(frame) is not None:
            out.append(_deep_shallow_one(item, name, fam, frame, metric, higher))
    return out


# --------------------------------------------------------------------------- 1-2
def _edge_ratio(values):
    """Mean of the last over the first :data:`EDGE_FRACTION` of ``values``, and their size."""
    values = np.asarray(values, dtype=float)
    k = int(len(values) * EDGE_FRACTION)
    if k < 2:
        return math.nan, math.nan, math.nan, k
    first, last = values[:k].mean(), values[-k:].mean()
    return last / first if first else math.nan, first, last, k


def gradient_norm_findings(study, item="1-2-gradient-norm"):
    """1-2: does the gradient norm fall over training?

    Per run, the mean gradient norm of the last :data:`EDGE_FRACTION` of the
    iterations over that of the first; the median over runs decides: below
    ``1 - GRAD_CHANGE`` reproduced, above ``1 + GRAD_CHANGE`` not reproduced,
    between inconclusive (as with fewer than 20 iterations).

    Parameters
    ----------
    study : fitted OptimizationStudy
        ``grad_norms_`` with ``run``, ``iteration``, ``grad_norm``, ``loss``.
    item : str

    Returns
    -------
    findings : list of Finding
    """
    rows = []
    for run, g in study.grad_norms_.sort_values(["run", "iteration"]).groupby("run"):
        ratio, first, last, k = _edge_ratio(g["grad_norm"])
        rows.append((run, ratio, first, last, k, _edge_ratio(g["loss"])[0]))
    frame = pd.DataFrame(rows, columns=["run", "ratio", "first", "last", "k", "loss_ratio"])
    ratios = frame["ratio"].dropna()
    median = float(ratios.median()) if len(ratios) else math.nan
    evidence = (f"last/first {EDGE_FRACTION:.0%} of iterations, mean gradient norm: median "
                f"ratio {_g(median)} over {len(ratios)} run(s) (range "
                f"[{_g(ratios.min() if len(ratios) else math.nan)}, "
                f"{_g(ratios.max() if len(ratios) else math.nan)}]); run {frame['run'].iloc[0]}: "
                f"{_g(frame['first'].iloc[0])} -> {_g(frame['last'].iloc[0])} over "
                f"{frame['k'].iloc[0]} iterations each; loss ratio median "
                f"{_g(frame['loss_ratio'].median())}")
    if not len(ratios):
        verdict, reason = INCONCLUSIVE, "fewer than 20 iterations per run: no edges to compare"
    elif median < 1 - GRAD_CHANGE:
        verdict, reason = REPRODUCED, f"the median ratio is below {1 - GRAD_CHANGE:g}"
    elif median > 1 + GRAD_CHANGE:
        verdict, reason = NOT_REPRODUCED, f"the median ratio is above {1 + GRAD_CHANGE:g}"
    else:
        verdict, reason = INCONCLUSIVE, f"the change is within ±{GRAD_CHANGE:.0%}"
    trend = "falls" if median < 1 else "rises" if median > 1 else "stays"
    claim = (f"The gradient norm {trend} over training: the last {EDGE_FRACTION:.0%} of "
             f"iterations average {_g(median)}x the first {EDGE_FRACTION:.0%} (median of runs).")
    return [Finding(item, claim, "The gradient norm falls as training converges.",
                    "HW1-2 (gradient norm during training)", verdict, evidence, reason)]


def trajectory_findings(study, item="1-2-trajectory"):
    """1-2: do runs from different seeds end in different places of weight space?

    In the joint PCA plane of the whole model (``scope == "model"``), the
    distances between the runs' final points are compared with a run's travel
    (its first to last point, median over runs).  The smallest endpoint
    distance at least :data:`APART` times the travel: reproduced.  Projection
    only shrinks distances, so endpoints that are close in the plane are
    "not reproduced" only when the plane explains at least
    :data:`PLANE_VARIANCE` of the variance; else inconclusive.

    Parameters
    ----------
    study : fitted OptimizationStudy
        ``results_`` with ``scope``, ``run``, ``epoch``, ``component_1``,
        ``component_2``; ``explained_variance_ratio_`` when there.
    item : str

    Returns
    -------
    findings : list of Finding
    """
    from scipy.spatial.distance import pdist

    res = study.results_[study.results_["scope"] == "model"].sort_values(["run", "epoch"])
    points = res.groupby("run")[["component_1", "component_2"]]
    start, end = points.first().to_numpy(float), points.last().to_numpy(float)
    n = len(end)
    travel = float(np.median(np.linalg.norm(end - start, axis=1))) if n else math.nan
    dist = pdist(end) if n > 1 else np.array([math.nan])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_min, rel_median = dist.min() / travel, np.median(dist) / travel
    ratio = (getattr(study, "explained_variance_ratio_", None) or {}).get("model")
    explained = float(np.sum(ratio)) if ratio is not None else math.nan
    evidence = (f"{n} runs; endpoint distances in the PCA plane: min {_g(dist.min())}, median "
                f"{_g(np.median(dist))}; median travel of a run {_g(travel)}; plane explains "
                f"{_g(explained)} of the variance")
    if n < 3:
        verdict, reason = INCONCLUSIVE, f"only {n} run(s): at least 3 are needed"
    elif rel_min >= APART:
        verdict, reason = REPRODUCED, (f"every pair of endpoints is at least {APART:g} x the "
                                       "travel apart (true distances are at least as large)")
    elif rel_median < APART and explained >= PLANE_VARIANCE:
        verdict, reason = NOT_REPRODUCED, (f"most endpoints are within {APART:g} x the travel "
                                           f"of each other in a plane explaining >= "
                                           f"{PLANE_VARIANCE:.0%} of the variance")
    else:
        verdict, reason = INCONCLUSIVE, ("some endpoints are close in the plane, which may hide "
                                         "distances off the plane")
    claim = (f"In the joint PCA plane the {n} runs end at least {_g(rel_min)}x (median "
             f"{_g(rel_median)}x) a run's travel apart from each other.")
    return [Finding(item, claim, "Runs from different seeds end in different places of "
                    "weight space.", "HW1-2 (visualize the optimization process)", verdict,
                    evidence, reason)]


def minimal_ratio_findings(study, item="1-2-minimal-ratio"):
    """1-2: does a lower loss go with a higher minimal ratio, over the converged runs?

    Spearman's rank correlation of ``loss`` and ``minimal_ratio`` over the
    runs with ``converged`` true; inconclusive with fewer than
    :data:`MIN_CONVERGED` of them or ``p >= ALPHA``.  The evidence counts the
    zero eigenvalues, which the minimal ratio counts as not positive.

    Parameters
    ----------
    study : fitted MinimalRatioStudy
        ``results_`` with ``loss``, ``minimal_ratio``, ``converged``,
        ``n_zero`` and ``n_params``.
    item : str

    Returns
    -------
    findings : list of Finding
    """
    res = study.results_
    done = res[res["converged"].astype(bool)]
    zero = done["n_zero"].to_numpy(float)
    share = zero / done["n_params"].to_numpy(float) if len(done) else np.array([math.nan])
    note = (f"{len(done)} of {len(res)} runs converged; zero eigenvalues (neither sign) per "
            f"converged run: mean {_g(zero.mean() if len(zero) else math.nan)}, max "
            f"{_g(zero.max() if len(zero) else math.nan)} (up to {_g(np.max(share))} of the "
            "parameters); they count as not positive, so many zeros lower the ratio without "
            "any negative curvature")
    return [_correlation_finding(
        item, done["loss"], done["minimal_ratio"], ("loss", "minimal ratio"), -1,
        MIN_CONVERGED, "A lower loss goes with a higher minimal ratio (more positive "
        "curvature): a negative rank correlation.", "HW1-2 (minimal ratio vs loss)", note)]


def error_surface_findings(study, item="1-2-error-surface"):
    """1-2 bonus: is the trained point the minimum of the evaluated surface?

    The excess of the loss at the grid point nearest the trained weights
    (``center_loss``) over the surface's minimum, relative to its range:
    at most :data:`AT_MINIMUM` reproduced, above :data:`OFF_MINIMUM` not,
    between (or on a flat surface) inconclusive.

    Parameters
    ----------
    study : fitted ErrorSurfaceStudy
        ``summary_`` with ``center_loss``, ``surface_min``, ``surface_max``,
        ``line_min``, ``line_max``; ``results_`` with ``alpha``, ``beta``, ``loss``.
    item : str

    Returns
    -------
    findings : list of Finding
    """
    row = study.summary_.iloc[0]
    center, low, high = (float(row[k]) for k in ("center_loss", "surface_min", "surface_max"))
    span = high - low
    excess = (center - low) / span if span > 1e-12 * max(abs(high), 1.0) else math.nan
    at = study.results_.loc[study.results_["loss"].idxmin()]
    evidence = (f"loss at the trained point {_g(center)}; surface min {_g(low)} at "
                f"(alpha, beta) = ({_g(at['alpha'])}, {_g(at['beta'])}), max {_g(high)}; "
                f"line min {_g(row['line_min'])}, max {_g(row['line_max'])}")
    if not math.isfinite(excess):
        verdict, reason = INCONCLUSIVE, "the surface is flat (or not finite): no minimum to find"
    elif excess <= AT_MINIMUM:
        verdict, reason = REPRODUCED, f"the excess is at most {AT_MINIMUM:.0%} of the range"
    elif excess > OFF_MINIMUM:
        verdict, reason = NOT_REPRODUCED, f"the excess is above {OFF_MINIMUM:.0%} of the range"
    else:
        verdict, reason = INCONCLUSIVE, (f"the excess is between {AT_MINIMUM:.0%} and "
                                         f"{OFF_MINIMUM:.0%} of the range")
    claim = (f"The trained point's loss is {_g(100 * excess)}% of the surface's range above "
             "its minimum.")
    return [Finding(item, claim, "The trained weights sit at the minimum of the error surface "
                    "around them.", "HW1-2 bonus (error surface); Li et al. 2018", verdict,
                    evidence, reason)]


#: Seeds needed before a claim resting on the spread over seeds is judged (1-2 spectrum, 1-3).
MIN_SEEDS = 3


def _t_interval(values):
    """``(mean, low, high, n)``: the 95% t-interval over seeds of the finite ``values``."""
    from .studies._collect import seed_interval

    mean, _, low, high, n = seed_interval(values)
    return mean, low, high, n


def _ci_text(mean, low, high):
    """``"0.99 [0.98, 1]"``; the mean alone when there is no interval."""
    return _g(mean) + (f" [{_g(low)}, {_g(high)}]" if math.isfinite(low) else "")


def _seeds_reason(n):
    """The reason of a verdict left open by too few seeds, or None with enough."""
    return (None if n >= MIN_SEEDS else
            f"only {n} seed(s): at least {MIN_SEEDS} are needed for a 95% interval over seeds")


def _row_interval(row, column):
    """``(mean, low, high)`` of ``column`` from a summary row (no interval columns: NaN)."""
    return (float(row[column]), float(row.get(f"{column}_ci_low", math.nan)),
            float(row.get(f"{column}_ci_high", math.nan)))


def _random_label_verdict(train, test, chance, n_seeds, error):
    """Verdict and reason of the memorization finding from the two intervals."""
    bar = chance + CHANCE_MARGIN
    if error > CHANCE_MARGIN:
        return INCONCLUSIVE, (f"two standard errors of chance accuracy ({_g(error)}) exceed "
                              f"the {CHANCE_MARGIN:g} margin")
    if _seeds_reason(n_seeds):
        return INCONCLUSIVE, _seeds_reason(n_seeds)
    failed = [f"train accuracy < {MEMORIZED:g}"] * (train[2] < MEMORIZED) + [
        f"test accuracy > chance + {CHANCE_MARGIN:g}"] * (test[1] > bar)
    if failed:
        return NOT_REPRODUCED, "; ".join(failed) + " over the whole 95% interval"
    if train[1] >= MEMORIZED and test[2] <= bar:
        return REPRODUCED, "both thresholds are met by the whole 95% intervals"
    return INCONCLUSIVE, (f"an interval overlaps its threshold (train {MEMORIZED:g}, test "
                          f"{_g(bar)})")


# --------------------------------------------------------------------------- 1-3
def random_label_findings(study, item="1-3-random-labels"):
    """1-3: does the network memorize random labels (Zhang et al. 2017)?

    Reproduced when the 95% t-interval over seeds of the final train accuracy
    (on the random labels) lies at or above :data:`MEMORIZED` and that of the
    test accuracy at or below chance + :data:`CHANCE_MARGIN`; not reproduced
    when an interval lies wholly on the wrong side; inconclusive when an
    interval overlaps its threshold, with fewer than :data:`MIN_SEEDS` seeds,
    when the run diverged, or when the test set is too small to tell the
    margin from chance (two standard errors of a chance-level accuracy above
    the margin).

    Parameters
    ----------
    study : fitted RandomLabelStudy
        ``summary_`` with ``train_accuracy``, ``test_accuracy`` (means over
        seeds), their ``_ci_low``, ``_ci_high``, ``n_seeds``,
        ``chance_accuracy``, ``n_test``, ``n_epochs``.
    item : str

    Returns
    -------
    findings : list of Finding
    """
    expectation = (f"Train accuracy >= {MEMORIZED:g} on random labels while test accuracy "
                   f"stays within {CHANCE_MARGIN:g} of chance.")
    reference = "Zhang et al. 2017, Understanding deep learning requires rethinking generalization"
    if study.summary_.empty:
        return [Finding(item, "The network has no final numbers (the run diverged).",
                        expectation, reference, INCONCLUSIVE, "no summary row",
                        "the training run diverged")]
    row = study.summary_.iloc[0]
    train, test = _row_interval(row, "train_accuracy"), _row_interval(row, "test_accuracy")
    chance, n_seeds = float(row["chance_accuracy"]), int(row.get("n_seeds", 1))
    error = 2 * math.sqrt(chance * (1 - chance) / max(int(row["n_test"]), 1))
    covers = ("" if not math.isfinite(test[1]) else
              f"; the test interval {'contains' if test[1] <= chance <= test[2] else 'excludes'}"
              " chance")
    evidence = (f"after {int(row['n_epochs'])} epochs, {n_seeds} seed(s), mean [95% "
                f"t-interval]: train accuracy {_ci_text(*train)}, test accuracy "
                f"{_ci_text(*test)} on {int(row['n_test'])} images, chance {_g(chance)}{covers}")
    verdict, reason = _random_label_verdict(train, test, chance, n_seeds, error)
    claim = (f"On random labels the network reaches {_ci_text(*train)} train accuracy and "
             f"{_ci_text(*test)} test accuracy over {n_seeds} seed(s) (chance {_g(chance)}).")
    return [Finding(item, claim, expectation, reference, verdict, evidence, reason)]


def _model_means(res):
    """Per model (``name``, else each row): ``n_params`` and the mean scores over seeds."""
    key = res["name"] if "name" in res.columns else pd.Series(res.index, index=res.index)
    scores = ["n_params", "train_loss", "test_loss", "train_accuracy", "test_accuracy"]
    return res.groupby(key, sort=False)[scores].mean().sort_values("n_params", kind="stable")


def _per_seed_rhos(res, y):
    """Spearman rho of ``n_params`` and ``y`` over the models, per seed index (k-th seed)."""
    if "name" not in res.columns:
        return []
    k = res.groupby("name", sort=False).cumcount()
    return [_rank_correlation(res["n_params"][k == i], y[k == i])[0] for i in sorted(set(k))]


def _ends_finding(item, res, values, names, expected_sign, expectation, reference):
    """``values`` at the smallest vs the largest model: their 95% t-intervals over seeds."""
    small = values[res["n_params"] == res["n_params"].min()]
    large = values[res["n_params"] == res["n_params"].max()]
    (m1, l1, h1, n1), (m2, l2, h2, n2) = _t_interval(small), _t_interval(large)
    sides = 1 if l2 > h1 else -1 if h2 < l1 else 0
    evidence = (f"smallest model ({int(res['n_params'].min()):,} parameters) "
                f"{_ci_text(m1, l1, h1)} over {n1} seed(s), largest "
                f"({int(res['n_params'].max()):,}) {_ci_text(m2, l2, h2)} over {n2}")
    if _seeds_reason(min(n1, n2)):
        verdict, reason = INCONCLUSIVE, _seeds_reason(min(n1, n2))
    elif sides == 0:
        verdict, reason = INCONCLUSIVE, "the two 95% intervals overlap"
    else:
        verdict = REPRODUCED if sides == expected_sign else NOT_REPRODUCED
        reason = (f"the 95% intervals do not overlap; the largest model's is "
                  f"{'above' if sides > 0 else 'below'} the smallest's")
    claim = (f"{names[:1].upper() + names[1:]}: {_g(m1)} at the smallest model, {_g(m2)} at "
             f"the largest (means over seeds).")
    return Finding(item, claim, expectation, reference, verdict, evidence, reason)


def param_count_findings(study, item="1-3-param-count"):
    """1-3: the train loss falls with the parameter count, the generalization gap grows.

    Two Spearman rank correlations over the models' means over seeds:
    ``n_params`` vs ``train_loss`` (expected negative) and ``n_params`` vs
    ``test_loss - train_loss`` (expected positive); inconclusive with fewer
    than :data:`MIN_MODELS` models or ``p >= ALPHA`` (the per-seed
    correlations are in the evidence).  Then the same two quantities at the
    smallest vs the largest model, by their 95% t-intervals over seeds:
    inconclusive when they overlap or with fewer than :data:`MIN_SEEDS` seeds.

    Parameters
    ----------
    study : fitted ParamCountStudy
        ``results_`` (one row per model and seed) with ``n_params``,
        ``train_loss``, ``test_loss``, ``train_accuracy``, ``test_accuracy``
        (and ``name``, ``seed``).
    item : str

    Returns
    -------
    findings : list of Finding
    """
    res, means = study.results_, _model_means(study.results_)
    reference = "HW1-3 (number of parameters vs generalization)"
    rho, p, _ = _rank_correlation(means["n_params"],
                                  means["train_accuracy"] - means["test_accuracy"])
    gap, mean_gap = res["test_loss"] - res["train_loss"], means["test_loss"] - means["train_loss"]
    seeds = {name: ", ".join(_g(r) for r in _per_seed_rhos(res, y)) or "one seed"
             for name, y in (("train", res["train_loss"]), ("gap", gap))}
    loss_words = "The train loss falls as the number of parameters grows."
    gap_words = "The gap between test and train loss grows with the number of parameters."
    return [
        _correlation_finding(item, means["n_params"], means["train_loss"],
                             ("parameters", "train loss"), -1, MIN_MODELS, loss_words,
                             reference, f"means over seeds; train loss from "
                             f"{_g(means['train_loss'].iloc[0])} to "
                             f"{_g(means['train_loss'].iloc[-1])} (smallest to largest); "
                             f"rho per seed: {seeds['train']}"),
        _correlation_finding(item, means["n_params"], mean_gap,
                             ("parameters", "test - train loss"), 1, MIN_MODELS, gap_words,
                             reference, f"means over seeds; accuracy gap: rho = {_g(rho)}, "
                             f"p = {_g(p)}; rho per seed: {seeds['gap']}"),
        _ends_finding(item, res, res["train_loss"], "train loss", -1, loss_words, reference),
        _ends_finding(item, res, gap, "test - train loss", 1, gap_words, reference),
    ]


#: How the findings name a training control (1-3 interpolation and sensitivity).
_CONTROL_WORDS = {"epochs": "equal epochs", "train_loss": "equal train loss"}


def _with(finding, **changes):
    """``finding`` with some fields replaced."""
    from dataclasses import replace

    return replace(finding, **changes)


def _by_control(frame):
    """``(control, rows)`` per training control of ``frame``; ``(None, frame)`` without one."""
    if "control" not in frame.columns:
        return [(None, frame)]
    return [(c, frame[frame["control"] == c]) for c in pd.unique(frame["control"])]


def _missed(rows, what="models"):
    """``"k of n models (batch sizes ...) did not reach the target train loss"``, or None."""
    if "target_reached" not in rows.columns or rows["target_reached"].isna().all():
        return None
    missed = rows[~rows["target_reached"].astype(object).fillna(True).astype(bool)]
    if missed.empty:
        return None
    sizes = (f" (batch sizes {', '.join(str(int(b)) for b in pd.unique(missed['batch_size']))})"
             if "batch_size" in missed.columns else "")
    return f"{len(missed)} of {len(rows)} {what}{sizes} did not reach the target train loss"


def _under(control, finding, missed=None):
    """``finding`` under ``control`` (its claim prefixed); inconclusive when targets were missed."""
    prefix = "" if control is None else f"At {_CONTROL_WORDS.get(control, control)}: "
    claim = prefix + finding.claim + (f" ({missed}.)" if missed else "")
    if missed:
        return _with(finding, claim=claim, verdict=INCONCLUSIVE,
                     reason=f"{missed}, so the models are not compared at equal train loss")
    return _with(finding, claim=claim)


def _paired_finding(item, diffs, what, expectation, reference, min_difference=0.0):
    """A paired comparison over seeds: ``diffs`` (one per seed) expected positive.

    Reproduced when the 95% t-interval of the mean difference lies above 0
    (and the mean exceeds ``min_difference``), not reproduced when it lies
    below 0 (and the mean is below ``-min_difference``); inconclusive with
    fewer than :data:`MIN_SEEDS` seeds, an interval that contains 0, or a
    mean within ``min_difference`` of 0.
    """
    mean, low, high, n = _t_interval(diffs)
    interval = (f"95% t-interval [{_g(low)}, {_g(high)}]" if math.isfinite(low)
                else f"no interval from {n} seed(s)")
    claim = f"Mean over {n} seed(s) of {what}: {_g(mean)} ({interval})."
    evidence = (f"{what}, per seed: " + (", ".join(_g(d) for d in diffs) or "none")
                + f"; n = {n}")
    if _seeds_reason(n):
        verdict, reason = INCONCLUSIVE, _seeds_reason(n)
    elif low <= 0 <= high:
        verdict, reason = INCONCLUSIVE, "the 95% t-interval contains 0"
    elif abs(mean) <= min_difference:
        verdict, reason = INCONCLUSIVE, (f"the mean difference is within {_g(min_difference)} "
                                         "of 0")
    else:
        verdict = REPRODUCED if low > 0 else NOT_REPRODUCED
        reason = f"the 95% t-interval lies {'above' if low > 0 else 'below'} 0"
    return Finding(item, claim, expectation, reference, verdict, evidence, reason)


def _barrier_finding(item, pair, rows):
    """Whether the train loss between the two end points of one pair rises above them.

    ``rows``: the pair's train-split rows, one per seed; judged on the mean
    barrier relative to the larger end-point loss (its t-interval as evidence).
    """
    top = np.maximum(rows["loss_1"].astype(float), rows["loss_2"].astype(float))
    per_seed = np.where(top > 0, rows["loss_barrier"].astype(float) / top.where(top > 0), np.nan)
    rel, low, high, n = _t_interval(per_seed)
    evidence = (f"pair {pair}, train split, {len(rows)} seed(s): end-point losses "
                f"{_g(rows['loss_1'].mean())} and {_g(rows['loss_2'].mean())}, barrier "
                f"{_g(rows['loss_barrier'].mean())} ({_g(100 * rel)}% of the larger"
                + (f"; 95% t-interval [{_g(100 * low)}%, {_g(100 * high)}%]" if n > 1 else "")
                + ") (means over the seeds)")
    if not math.isfinite(rel):
        verdict, reason = INCONCLUSIVE, "alpha = 0 and 1 are not both on the grid"
    elif rel >= BARRIER:
        verdict, reason = REPRODUCED, (f"the mean barrier is at least {BARRIER:.0%} of the "
                                       "end-point loss")
    elif rel <= NO_BARRIER:
        verdict, reason = NOT_REPRODUCED, (f"the mean barrier is at most {NO_BARRIER:.0%} of "
                                           "the end-point loss")
    else:
        verdict, reason = INCONCLUSIVE, (f"the mean barrier is between {NO_BARRIER:.0%} and "
                                         f"{BARRIER:.0%} of the end-point loss")
    claim = (f"Between the two {pair} minima the train loss "
             + (f"rises {_g(100 * rel)}% above the larger end-point loss." if rel > 0 else
                "never rises above the larger end-point loss." if rel <= 0 else
                "is not known at both end points."))
    return Finding(item, claim, "The loss along the line between two minima rises between "
                   "them (a barrier).", "Goodfellow et al. 2015; Keskar et al. 2017",
                   verdict, evidence, reason)


def _batch_gap_finding(item, rows, batch_sizes):
    """Whether the small-batch end point has the higher test accuracy, paired over seeds."""
    small_first = batch_sizes[0] <= batch_sizes[1]
    small, large = ("accuracy_1", "accuracy_2") if small_first else ("accuracy_2", "accuracy_1")
    diffs = (rows[small].astype(float) - rows[large].astype(float)).tolist()
    lo, hi = sorted(batch_sizes)
    found = _paired_finding(
        item, diffs, f"the test accuracy of batch size {lo} minus that of batch size {hi}",
        "Small-batch training generalizes better than large-batch training.",
        "Keskar et al. 2017, On large-batch training for deep learning", ACCURACY_DIFFERENCE)
    return _with(found, evidence=(f"test accuracy: batch size {lo} {_g(rows[small].mean())}, "
                                    f"batch size {hi} {_g(rows[large].mean())} (means); "
                                    + found.evidence))


def interpolation_findings(study, item="1-3-interpolation"):
    """1-3: the loss barrier between two minima; small- vs large-batch test accuracy.

    Per training control and pair (train split), the mean barrier over the
    seeds relative to the larger end-point loss: at least :data:`BARRIER`
    reproduced, at most :data:`NO_BARRIER` not, between inconclusive.  For
    the ``batch_size`` pair (test split), the small-batch model's test
    accuracy minus the large-batch one's, paired by seed: reproduced when its
    95% t-interval over at least :data:`MIN_SEEDS` seeds excludes 0 (and the
    mean exceeds :data:`ACCURACY_DIFFERENCE`).  Under the ``"train_loss"``
    control a pair with an end point that missed the target is inconclusive.

    Parameters
    ----------
    study : fitted InterpolationStudy
        ``seed_summary_`` (or ``summary_``, one seed) with ``pair``, ``split``,
        ``loss_1``, ``loss_2``, ``accuracy_1``, ``accuracy_2``, ``loss_barrier``
        (``control``, ``target_reached`` when there); ``batch_sizes``.
    item : str

    Returns
    -------
    findings : list of Finding
    """
    frame = getattr(study, "seed_summary_", None)
    frame = study.summary_ if frame is None else frame
    sizes = tuple(int(b) for b in np.asarray(study.batch_sizes).ravel()[:2])
    out = []
    for control, rows in _by_control(frame):
        for pair in pd.unique(rows["pair"]):
            train = rows[(rows["pair"] == pair) & (rows["split"] == "train")]
            if len(train):
                out.append(_under(control, _barrier_finding(item, pair, train)))
        batch = rows[(rows["pair"] == "batch_size") & (rows["split"] == "test")]
        if len(batch):
            out.append(_under(control, _batch_gap_finding(item, batch, sizes),
                              _missed(batch, what="pairs of models")))
    return out


def sensitivity_findings(study, item="1-3-sensitivity"):
    """1-3: sensitivity tracks the generalization gap; large batches are sharper, generalize worse.

    Per training control (equal epochs, equal train loss): two Spearman rank
    correlations on the per-seed points, ``sensitivity`` vs ``loss_gap``
    (test minus train loss; Novak et al. 2018) and ``batch_size`` vs
    ``sharpness`` (Keskar et al. 2017), both expected positive, inconclusive
    with fewer than :data:`MIN_BATCH_SIZES` batch sizes or ``p >= ALPHA``;
    and two paired comparisons of the largest with the smallest batch size
    over the seeds (sharpness and loss gap, largest minus smallest, expected
    positive; see :func:`_paired_finding`).  Under ``"train_loss"``, models
    that missed the target make the control's findings inconclusive.

    Parameters
    ----------
    study : fitted SensitivityStudy
        ``results_`` with ``batch_size``, ``seed``, ``train_loss``,
        ``test_loss``, ``train_accuracy``, ``test_accuracy``, ``sensitivity``,
        ``sharpness`` (``control``, ``target_reached`` when there).
    item : str

    Returns
    -------
    findings : list of Finding
    """
    out = []
    for control, rows in _by_control(study.results_):
        rows = rows.assign(loss_gap=rows["test_loss"] - rows["train_loss"],
                           accuracy_gap=rows["train_accuracy"] - rows["test_accuracy"])
        missed = _missed(rows)
        out += [_under(control, f, missed) for f in _sensitivity_control(item, rows)]
    return out


def _sensitivity_control(item, rows):
    """The four findings of :func:`sensitivity_findings` on one control's per-seed rows."""
    sizes = sorted(pd.unique(rows["batch_size"]))
    rho, p, _ = _rank_correlation(rows["sensitivity"], rows["accuracy_gap"])
    keskar = "Keskar et al. 2017, On large-batch training for deep learning"
    found = [
        _correlation_finding(item, rows["sensitivity"], rows["loss_gap"],
                             ("sensitivity", "test - train loss"), 1, MIN_BATCH_SIZES,
                             "Models with a higher input sensitivity (Jacobian norm) have a "
                             "larger generalization gap.",
                             "Novak et al. 2018, Sensitivity and generalization in neural "
                             "networks", f"batch sizes {[int(b) for b in sizes]}, "
                             f"{rows['seed'].nunique()} seed(s) each; accuracy "
                             f"gap: rho = {_g(rho)}, p = {_g(p)}"),
        _correlation_finding(item, rows["batch_size"], rows["sharpness"],
                             ("batch size", "sharpness"), 1, MIN_BATCH_SIZES,
                             "Sharpness grows with the batch size.", keskar,
                             "mean sharpness " + ", ".join(
                                 _g(v) for v in rows.groupby("batch_size")["sharpness"].mean())),
    ]
    if len(sizes) < MIN_BATCH_SIZES:
        found = [_with(f, verdict=INCONCLUSIVE, reason=f"only {len(sizes)} batch sizes: at "
                         f"least {MIN_BATCH_SIZES} are needed") for f in found]
    lo, hi = int(sizes[0]), int(sizes[-1])
    for measure, expectation in (("sharpness", "Large-batch minima are sharper than "
                                  "small-batch ones."),
                                 ("loss_gap", "Large-batch models generalize worse (a larger "
                                  "test - train loss gap) than small-batch ones.")):
        by_seed = rows.pivot(index="seed", columns="batch_size", values=measure)
        diffs = (by_seed[hi] - by_seed[lo]).tolist() if len(sizes) > 1 else []
        name = "sharpness" if measure == "sharpness" else "the test - train loss gap"
        found.append(_paired_finding(item, diffs, f"{name} at batch size {hi} minus at {lo}",
                                     expectation, keskar))
    return found


def _spectrum_rows(res):
    """Finite rows of a spectrum ``results_``, by seed (one when there is no column) and epoch."""
    res = res.assign(seed=res["seed"] if "seed" in res.columns else 0)
    ok = np.isfinite(res[["top_ritz_value", "bulk_edge", "train_loss"]].to_numpy(float)).all(axis=1)
    return res[ok].sort_values(["seed", "epoch"], kind="stable")


def _outlier_finding(item, ok, c, expectation, ref):
    """Per seed, the outlier count at ``"end"`` (else the last checkpoint) against C - 1."""
    named = ok[ok["checkpoint"] == "end"]
    end = (named if len(named) else ok).groupby("seed", sort=False).tail(1)
    counts = end["n_outliers"].astype(int).tolist()
    within = [abs(n - (c - 1)) <= OUTLIER_SLACK for n in counts]
    evidence = (f"{end['checkpoint'].iloc[0]} (epoch {int(end['epoch'].iloc[0])}), per seed: "
                + "; ".join(f"{n} Ritz value(s) above the bulk edge {_g(e)}, top {_g(t)}"
                            for n, e, t in zip(counts, end["bulk_edge"], end["top_ritz_value"]))
                + f" (medians over probes); C = {c}")
    if _seeds_reason(len(counts)):
        verdict, reason = INCONCLUSIVE, _seeds_reason(len(counts))
    elif all(within) or not any(within):
        verdict = REPRODUCED if all(within) else NOT_REPRODUCED
        reason = (f"the count of {'every' if all(within) else 'no'} seed is within "
                  f"{OUTLIER_SLACK} of C - 1")
    else:
        verdict, reason = INCONCLUSIVE, (f"{sum(within)} of {len(counts)} seeds have a count "
                                         f"within {OUTLIER_SLACK} of C - 1")
    claim = (f"At {end['checkpoint'].iloc[0]} the spectrum has {', '.join(map(str, counts))} "
             f"outlier(s) over {len(counts)} seed(s), above a bulk ending at "
             f"{_g(end['bulk_edge'].mean())} on average (C - 1 = {c - 1}).")
    return Finding(item, claim, expectation, ref, verdict, evidence, reason)


def _top_rise_finding(item, ok, ref):
    """Per seed, the relative change of the top Ritz value from the first to the last checkpoint."""
    first, last = ok.groupby("seed", sort=False).head(1), ok.groupby("seed", sort=False).tail(1)
    a, b = first["top_ritz_value"].to_numpy(float), last["top_ritz_value"].to_numpy(float)
    change = np.where(a != 0, (b - a) / np.where(a != 0, np.abs(a), 1), np.inf)
    mean, low, high, n = _t_interval(change)
    if ok["epoch"].nunique() < 2:
        verdict, reason = INCONCLUSIVE, "only one checkpoint: nothing to compare"
    elif _seeds_reason(len(change)):
        verdict, reason = INCONCLUSIVE, _seeds_reason(len(change))
    elif low > TOP_CHANGE or high < -TOP_CHANGE:
        verdict = REPRODUCED if low > TOP_CHANGE else NOT_REPRODUCED
        reason = (f"the 95% interval of the change lies {'above' if low > 0 else 'below'} "
                  f"{'+' if low > 0 else '-'}{TOP_CHANGE:.0%}")
    else:
        verdict, reason = INCONCLUSIVE, (f"the 95% interval of the change reaches into "
                                         f"±{TOP_CHANGE:.0%}")
    claim = (f"The top Hessian eigenvalue goes from {_g(a.mean())} ({first['checkpoint'].iloc[0]})"
             f" to {_g(b.mean())} ({last['checkpoint'].iloc[0]}) on average over {len(a)} "
             f"seed(s): {_ci_text(100 * mean, 100 * low, 100 * high)}%.")
    evidence = ("relative change per seed: " + ", ".join(f"{_g(100 * x)}%" for x in change)
                + "; top Ritz value per checkpoint (mean over seeds): " + ", ".join(
                    f"{k} {_g(v)}" for k, v in ok.groupby("checkpoint", sort=False)
                    ["top_ritz_value"].mean().items()))
    return Finding(item, claim, "The top Hessian eigenvalue grows from initialization to the "
                   "end of training.", ref, verdict, evidence, reason)


def hessian_spectrum_findings(study, item="1-2-hessian-spectrum"):
    """1-2 spectrum: a bulk near zero and about C - 1 outliers; the top eigenvalue grows.

    The outlier count of each seed at the ``"end"`` checkpoint (the last one
    when there is none named so): every seed within :data:`OUTLIER_SLACK` of
    ``C - 1`` reproduced, none not reproduced, some inconclusive.  The top
    Ritz value from the first to the last checkpoint, as a relative change
    per seed: its 95% t-interval above :data:`TOP_CHANGE` reproduced, below
    ``-TOP_CHANGE`` not reproduced, reaching into ``±TOP_CHANGE``
    inconclusive.  Both inconclusive with fewer than :data:`MIN_SEEDS` seeds,
    without a density (the run diverged) or with a non-finite one.

    Parameters
    ----------
    study : fitted HessianSpectrumStudy
        ``results_`` with ``seed`` (optional), ``checkpoint``, ``epoch``,
        ``n_outliers``, ``top_ritz_value``, ``bulk_edge``, ``train_loss``; ``n_classes_``.
    item : str

    Returns
    -------
    findings : list of Finding
    """
    c = int(study.n_classes_)
    ref = "Sagun et al. 2017; Papyan 2020 (Hessian spectrum of classifiers)"
    expectation = (f"At the end of training the spectrum has a bulk near zero and about "
                   f"C - 1 = {c - 1} outliers.")
    ok = _spectrum_rows(study.results_)
    if not len(ok):
        return [Finding(item, "No spectral density could be computed.", expectation, ref,
                        INCONCLUSIVE, f"{len(study.diverged_)} diverged run(s)",
                        "training diverged or the density is not finite"),
                Finding(item, "No spectral density could be computed.",
                        "The top Hessian eigenvalue grows from initialization to the end "
                        "of training.", ref, INCONCLUSIVE, "none",
                        "training diverged or the density is not finite")]
    return [_outlier_finding(item, ok, c, expectation, ref), _top_rise_finding(item, ok, ref)]
