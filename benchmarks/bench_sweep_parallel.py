"""Speed-up of ``run_sweep`` with 2 pinned workers over 1, and dask equivalence.

A sweep of CPU-bound seeded torch fits (small MLPs, full-batch Adam, about
1-2 s each on one thread) is timed with ``n_jobs=1`` and with ``n_jobs=2``
(loky, one torch/BLAS thread per worker) in this process; the ratio is the
speed-up.  The same sweep on a dask ``LocalCluster`` must give bit-identical
numbers.  Target on an idle 2-core machine: speed-up >= 1.7.

Run::

    python benchmarks/bench_sweep_parallel.py [--n-tasks 12] [--n-steps 150]
"""

import argparse
import os
import time

import distributed
import numpy as np
import torch

from hw1sk.models import MLP
from hw1sk.parameters import flatten_parameters
from hw1sk.seeding import seed_everything, torch_generator
from hw1sk.sweep import run_sweep, start_local_cluster


def fit_mlp(seed, n_steps=150, n_samples=2048, width=128):
    """Full-batch Adam fit of a 2-hidden-layer MLP on a seeded regression problem."""
    gen = torch_generator(seed)
    X = torch.randn(n_samples, 32, generator=gen)
    y = torch.sin(X[:, :1]) + X[:, 1:2] * X[:, 2:3]
    seed_everything(seed)
    model = MLP(n_in=32, hidden=(width, width), n_out=1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(n_steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        loss.backward()
        opt.step()
    return float(loss.detach()), flatten_parameters(model).numpy()


def _same(a, b):
    return all(la == lb and np.array_equal(pa, pb) for (la, pa), (lb, pb) in zip(a, b))


def _timed(tasks, **kwargs):
    start = time.perf_counter()
    results = run_sweep(fit_mlp, tasks, threads_per_worker=1, **kwargs)
    return time.perf_counter() - start, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-tasks", type=int, default=12)
    parser.add_argument("--n-steps", type=int, default=150)
    args = parser.parse_args()
    tasks = [{"seed": seed, "n_steps": args.n_steps} for seed in range(args.n_tasks)]
    n_cpu = os.cpu_count()
    load_before = os.getloadavg()[0]

    # start the loky workers (and their torch import) outside the timed region
    t_warm, _ = _timed(tasks[:2], backend="loky", n_jobs=2)
    _timed(tasks[:1], backend="loky", n_jobs=1)  # and warm this process up the same way
    t_seq, seq = _timed(tasks, backend="loky", n_jobs=1)
    t_par, par = _timed(tasks, backend="loky", n_jobs=2)
    start = time.perf_counter()
    with start_local_cluster(2) as cluster, distributed.Client(cluster) as client:
        _timed(tasks[:2], backend="dask", scheduler=client)  # workers import torch
        t_dask_start = time.perf_counter() - start
        t_dask, dsk = _timed(tasks, backend="dask", scheduler=client)
    load_after = os.getloadavg()[0]

    print(f"{args.n_tasks} tasks x {args.n_steps} Adam steps, cpus={n_cpu}")
    print(f"n_jobs=1                : {t_seq:7.2f} s  ({t_seq / len(tasks):.2f} s/task)")
    print(f"n_jobs=2 loky (warm)    : {t_par:7.2f} s  (pool start-up {t_warm:.2f} s, not counted)")
    print(f"speed-up n_jobs=2 / 1   : {t_seq / t_par:7.2f} x  (target >= 1.7 on an idle 2-core machine)")
    print(f"dask LocalCluster(2)    : {t_dask:7.2f} s  (start-up {t_dask_start:.2f} s, not counted)")
    print(f"loky == n_jobs=1        : {_same(par, seq)}")
    print(f"dask == local           : {_same(dsk, seq)}")
    print(f"load average (1 min)    : {load_before:.2f} before, {load_after:.2f} after")
    # other busy processes before we start mean our workers get a fraction of a core each
    if load_before > 0.5 * n_cpu:
        print("WARNING: machine was loaded by other processes; the speed-up is not meaningful.")


if __name__ == "__main__":  # dask spawns workers that re-import this script
    main()
