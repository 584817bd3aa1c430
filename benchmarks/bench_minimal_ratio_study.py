"""Wall time of the HW1-2 minimal-ratio study: n_jobs=2 against 1, vectorized seeds, 100 runs.

The same :class:`~hw1sk.studies.minimal_ratio.MinimalRatioStudy` (default
settings, ``--n-runs`` runs) is fitted with ``n_jobs=1`` and with
``n_jobs=2`` (loky; :func:`hw1sk.sweep.run_sweep` pins the threads of each
worker, and each run of these ~500-parameter networks uses one torch
thread) in this process; the ratio of the wall times is the speed-up, and
the two ``results_`` must be identical.  The loky workers are started (and
import torch) before the timed region.  Targets on an idle 2-core machine:
speed-up >= 1.7, and with ``--full`` the default 100-run study in <= 600 s.

With ``--vectorize``, the default 100-run study at ``n_jobs=2`` is timed
with ``vectorize=False`` (every run on its own, the study before
SeedEnsemble) and with ``vectorize="auto"`` (the training phases of the runs
trained together, :class:`hw1sk.ensemble.SeedEnsemble`), in this process;
the ratio of the wall times is the speed-up (target >= 2), and the two
distributions of minimal ratios are compared (quantiles, a two-sample
Kolmogorov-Smirnov test, the largest difference of one run's ratio).

Run::

    python benchmarks/bench_minimal_ratio_study.py [--n-runs 12] [--full] [--full-n-jobs 1]
    python benchmarks/bench_minimal_ratio_study.py --vectorize [--vectorize-runs 100]
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd

from hw1sk.studies.minimal_ratio import MinimalRatioStudy

BUDGET_S = 600.0


def timed_fit(**params):
    start = time.perf_counter()
    study = MinimalRatioStudy(**params).fit()
    return time.perf_counter() - start, study


def compare_vectorized(n_runs):
    """The ``n_runs`` study at n_jobs=2, every run on its own vs seeds trained together."""
    from scipy.stats import ks_2samp

    timed_fit(n_runs=2, n_jobs=2, vectorize=False)  # start the loky workers
    load_before = os.getloadavg()[0]
    t_loop, loop = timed_fit(n_runs=n_runs, n_jobs=2, vectorize=False)
    t_vec, vec = timed_fit(n_runs=n_runs, n_jobs=2, vectorize="auto")
    load_after = os.getloadavg()[0]
    a, b = loop.results_["minimal_ratio"], vec.results_["minimal_ratio"]
    ks = ks_2samp(a, b)
    print(f"MinimalRatioStudy, {n_runs} runs, n_jobs=2; load average {load_before:.1f} -> "
          f"{load_after:.1f}")
    print(f"vectorize=False : {t_loop:7.2f} s")
    print(f"vectorize='auto': {t_vec:7.2f} s")
    print(f"speed-up        : {t_loop / t_vec:7.2f} x  (target >= 2)")
    quantiles = [0.1, 0.25, 0.5, 0.75, 0.9]
    print("minimal ratio quantiles", quantiles)
    print("  separate fits :", [round(float(v), 4) for v in a.quantile(quantiles)])
    print("  vectorized    :", [round(float(v), 4) for v in b.quantile(quantiles)])
    print(f"KS two-sample: statistic {ks.statistic:.3f}, p = {ks.pvalue:.3f}; largest "
          f"per-run difference {float((a.values - b.values).__abs__().max()):.4f}; "
          f"train-loss rel. difference {float(((loop.results_['train_loss'] - vec.results_['train_loss']).abs() / loop.results_['train_loss']).max()):.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-runs", type=int, default=12)
    parser.add_argument("--full", action="store_true",
                        help="also time the default 100-run study against the 600 s budget")
    parser.add_argument("--full-n-jobs", type=int, default=1,
                        help="n_jobs of the --full study (default 1: the default settings)")
    parser.add_argument("--vectorize", action="store_true",
                        help="only compare vectorize=False and 'auto' at n_jobs=2")
    parser.add_argument("--vectorize-runs", type=int, default=100)
    args = parser.parse_args()
    if args.vectorize:
        compare_vectorized(args.vectorize_runs)
        return
    load_before = os.getloadavg()[0]

    timed_fit(n_runs=2, n_jobs=2)  # start the loky workers outside the timed region
    timed_fit(n_runs=1, n_jobs=1)  # and warm this process up the same way
    t_seq, seq = timed_fit(n_runs=args.n_runs, n_jobs=1)
    t_par, par = timed_fit(n_runs=args.n_runs, n_jobs=2)
    load_after = os.getloadavg()[0]
    same = seq.results_.equals(par.results_)

    print(f"MinimalRatioStudy, default settings, {args.n_runs} runs; "
          f"{os.cpu_count()} cpus; load average {load_before:.1f} -> {load_after:.1f}")
    print(f"  {seq.settings_['model']}, {seq.settings_['n_params']} parameters; "
          f"{seq.settings_['training']}")
    print(f"n_jobs=1             : {t_seq:7.2f} s  ({t_seq / args.n_runs:.2f} s/run)")
    print(f"n_jobs=2 (loky, warm): {t_par:7.2f} s")
    print(f"speed-up n_jobs=2 / 1: {t_seq / t_par:7.2f} x  (target >= 1.7 on an idle 2-core "
          "machine)")
    print(f"results identical    : {same}")

    if args.full:
        load_before = os.getloadavg()[0]
        t_full, full = timed_fit(n_jobs=args.full_n_jobs)
        load_after = os.getloadavg()[0]
        print(f"full study (100 runs, n_jobs={args.full_n_jobs}): {t_full:7.1f} s of the "
              f"{BUDGET_S:.0f} s budget (ratio {t_full / BUDGET_S:.2f}); load average "
              f"{load_before:.1f} -> {load_after:.1f}")
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(full.summary_.to_string(index=False, float_format="%.4g"))


if __name__ == "__main__":
    main()
