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

With ``--phase``, only what follows training: the default study's seed
groups (``--phase-runs`` runs, groups as the study cuts them) are trained
once each by :class:`~hw1sk.ensemble.SeedEnsemble`, then each group's
gradient-norm phase and Hessian spectra are computed run by run
(:func:`~hw1sk.critical_points.minimize_gradient_norm` and
:func:`~hw1sk.curvature.hessian_eigenvalues`, as with ``vectorize=False``)
and all at once (the study's batched group phase,
:func:`~hw1sk.batched_critical_points.minimize_gradient_norms`), in this
process on one thread; the ratio of the process times is the speed-up of the
phase, and the step counts and minimal ratios of the two must agree.

Run::

    python benchmarks/bench_minimal_ratio_study.py [--n-runs 12] [--full] [--full-n-jobs 1]
    python benchmarks/bench_minimal_ratio_study.py --vectorize [--vectorize-runs 100]
    python benchmarks/bench_minimal_ratio_study.py --phase [--phase-runs 100]
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


def compare_phase(n_runs):
    """Process time of the post-training phase: run by run vs a seed group at once."""
    import copy

    import numpy as np
    import torch

    from hw1sk.critical_points import minimize_gradient_norm
    from hw1sk.curvature import hessian_eigenvalues, minimal_ratio
    from hw1sk.ensemble import SeedEnsemble
    from hw1sk.evaluation import check_predict_X, encode_targets, estimator_loss
    from hw1sk.studies.minimal_ratio import _seed_group_phase

    torch.set_num_threads(1)
    study = MinimalRatioStudy(n_runs=n_runs)
    study._validate_params()
    data = study._prepare_data(None, None, None, None)
    template = study._template_estimator(data)
    tasks = [task for _, task in study._tasks(data, template)]
    load_before = os.getloadavg()[0]
    total_alone = total_group = 0.0
    differences = 0
    for group in study._seed_groups(tasks):
        part = [tasks[i] for i in group]
        ensemble = SeedEnsemble(template, seeds=[t["seed"] for t in part]).fit(data.X, data.y)
        fitted = dict(zip(ensemble.seeds_, ensemble.estimators_))
        start = time.process_time()
        together = _seed_group_phase(part, fitted)
        t_group = time.process_time() - start
        start = time.process_time()
        alone = {}
        for task in part:
            net = fitted[task["seed"]]
            X64 = np.asarray(check_predict_X(net, data.X), dtype=np.float64)
            targets = encode_targets(net, data.y).astype(np.float64)
            module = copy.deepcopy(net.module_).to(torch.float64)
            result = minimize_gradient_norm(module, estimator_loss(net), X64, targets,
                                            tol=task["grad_tol"],
                                            max_steps=task["max_grad_steps"])
            alone[task["seed"]] = (result, hessian_eigenvalues(module, estimator_loss(net),
                                                               X64, targets))
        t_alone = time.process_time() - start
        steps = [alone[t["seed"]][0].n_steps for t in part]
        for seed, (result, values) in alone.items():
            mine, my_values = together[seed]
            differences += (mine.n_steps != result.n_steps
                            or minimal_ratio(my_values).ratio != minimal_ratio(values).ratio)
        total_alone, total_group = total_alone + t_alone, total_group + t_group
        print(f"group of {len(part)} runs ({sum(steps)} LM steps, at most {max(steps)}): "
              f"run by run {t_alone:6.2f} s, together {t_group:6.2f} s "
              f"({t_alone / t_group:.2f} x); {len(together)} of {len(part)} batched")
    print(f"MinimalRatioStudy, {n_runs} runs, gradient phase + Hessian spectra, process "
          f"time on one thread; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"run by run: {total_alone:7.2f} s; together: {total_group:7.2f} s; speed-up "
          f"{total_alone / total_group:.2f} x; runs whose step count or minimal ratio "
          f"differ: {differences}")


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
    parser.add_argument("--phase", action="store_true",
                        help="only time the post-training phase, run by run vs batched")
    parser.add_argument("--phase-runs", type=int, default=100)
    args = parser.parse_args()
    if args.phase:
        compare_phase(args.phase_runs)
        return
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
