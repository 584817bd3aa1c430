"""Wall time of one report item with its seed groups trained together vs apart.

The item's study (``--item``, profile ``--profile``, ``--n-restarts`` restarts
or seeds where the item has them) is fitted at ``--n-jobs`` with
``vectorize=False`` (every run its own sweep task) and with
``vectorize=True`` (runs differing only in their seed trained together by
:class:`hw1sk.ensemble.SeedEnsemble`, plateau and target stops replayed per
seed; ``"auto"`` keeps runs with such stops apart), in this process; the
ratio of the wall times is printed with the largest relative difference of
the final train losses (float32 trajectories drift apart over thousands of
epochs, and a drifted seed may stop on its plateau at another epoch).

Run::

    python benchmarks/bench_grouped_restarts.py --item 1-1-functions --profile quick
    python benchmarks/bench_grouped_restarts.py --item 1-1-mnist --n-restarts 3
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from hw1sk.experiments import _load_registry, build_experiment_study


def timed(item, profile, n_jobs, overrides):
    study, fit = build_experiment_study(item, profile, n_jobs=n_jobs,
                                        data_home=os.environ.get("HW1SK_DATA"),
                                        overrides=overrides)
    start = time.perf_counter()
    fit()
    return time.perf_counter() - start, study


def final_losses(study):
    summary = getattr(study, "summary_", None)
    for column in ("final_train_loss", "train_loss"):
        if summary is not None and column in summary:
            return summary[column].to_numpy(float)
    return np.array([])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--item", default="1-1-functions")
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--n-restarts", type=int, default=3)
    args = parser.parse_args()
    _load_registry()
    extra = {"n_restarts": args.n_restarts} if args.item.startswith("1-1") else {}
    # warm-up: start the workers, load the data once
    timed(args.item, args.profile, args.n_jobs, {**extra, "vectorize": False})
    load = os.getloadavg()[0]
    t_apart, apart = timed(args.item, args.profile, args.n_jobs, {**extra, "vectorize": False})
    t_group, group = timed(args.item, args.profile, args.n_jobs, {**extra, "vectorize": True})
    a, b = final_losses(apart), final_losses(group)
    diff = float(np.max(np.abs(a - b) / np.abs(a))) if len(a) and len(a) == len(b) else np.nan
    print(f"{args.item} ({args.profile}, {args.n_restarts} restarts, n_jobs={args.n_jobs}); "
          f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"vectorize=False : {t_apart:8.2f} s")
    print(f"vectorize=True  : {t_group:8.2f} s")
    print(f"speed-up        : {t_apart / t_group:8.2f} x")
    print(f"final train loss, largest relative difference: {diff:.2e}")


if __name__ == "__main__":
    main()
