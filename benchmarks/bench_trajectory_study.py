"""Wall time of the HW1-2 trajectory study on full MNIST against its 10-minute budget.

Runs :class:`hw1sk.studies.optimization.OptimizationStudy` with its defaults
(8 runs of a 784-64-32-10 MLP, Adam, batch 128, snapshots every 3 epochs,
gradient norm at every step, every snapshot scored on the 60,000 training
images) with ``--n-jobs`` workers, and prints

* the wall time against the 600 s budget (target: ratio <= 1), extrapolated
  linearly to 30 epochs when ``--epochs`` is smaller;
* the wall time against an ideal measured in this process: one plain
  training epoch of the same estimator (no tracing callbacks, no study, one
  thread) times ``n_runs * epochs / n_jobs``, i.e. what the study costs over
  bare training (tracing, snapshot scoring, PCA, worker start-up).

Run: ``python benchmarks/bench_trajectory_study.py [--epochs 30] [--n-jobs 2]``
"""

import argparse
import os
import time

import torch

from hw1sk.datasets import get_data_home, load_mnist
from hw1sk.studies.optimization import OptimizationStudy, default_trajectory_estimator

BUDGET_S = 600.0
FULL_EPOCHS = 30


def plain_epoch_time(X, y, batch_size, repeats=2):
    """Seconds per epoch of the default estimator alone (best of ``repeats`` one-epoch fits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        est = default_trajectory_estimator().set_params(max_epochs=1, batch_size=batch_size,
                                                         random_state=0)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            est.fit(X, y)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=FULL_EPOCHS)
    parser.add_argument("--n-runs", type=int, default=8)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-home", "--data", dest="data_home", default=None,
                        help="folder with MNIST/raw (default: $HW1SK_DATA, else ~/hw1sk_data)")
    args = parser.parse_args()

    X, y = load_mnist(get_data_home(args.data_home), train=True, flatten=True, download=False)
    print(f"MNIST train {X.shape}, {args.n_runs} runs x {args.epochs} epochs, "
          f"batch {args.batch_size}, n_jobs={args.n_jobs}, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    per_epoch = plain_epoch_time(X, y, args.batch_size)
    ideal = per_epoch * args.n_runs * args.epochs / args.n_jobs
    print(f"baseline: plain training epoch {per_epoch:.2f} s -> ideal study time "
          f"{ideal:.1f} s")

    study = OptimizationStudy(n_runs=args.n_runs, max_epochs=args.epochs,
                              batch_size=args.batch_size, n_jobs=args.n_jobs, random_state=0)
    start = time.perf_counter()
    study.fit(X, y)
    wall = time.perf_counter() - start
    epoch_s = study.history_["dur"].mean()
    print(f"study: {wall:.1f} s wall ({epoch_s:.2f} s per traced epoch in the workers); "
          f"final train accuracy {study.summary_['train_accuracy'].mean():.4f} (mean of runs)")
    print(f"ratio study / ideal (overhead of tracing, scoring, PCA, workers): {wall / ideal:.2f}")
    full = wall * FULL_EPOCHS / args.epochs
    note = "" if args.epochs == FULL_EPOCHS else (
        f" (extrapolated linearly from {args.epochs} epochs)")
    print(f"30-epoch study: {full:.1f} s vs budget {BUDGET_S:.0f} s -> ratio "
          f"{full / BUDGET_S:.2f}{note}")


if __name__ == "__main__":
    main()
