"""SeedEnsemble (all seeds in one vectorized pass) against the loop of separate fits.

Both sides fit the same estimator on the same data for the same seeds, in one
process with a fixed number of torch threads:

* ``loop``: ``clone(estimator).set_params(random_state=s).fit(X, y)`` per seed;
* ``ensemble``: :class:`hw1sk.ensemble.SeedEnsemble` over the same seeds.

Cases:

* ``func-571``: 32 seeds of ``mlp_for_budget(571, depth=1)`` on 1000 points of
  a 1-D function, full batch, Adam, 2000 epochs (``--quick``: 200);
* ``mnist-mlp``: 8 seeds of an MLP 784-64-32-10 on the 60k MNIST training
  images (``--quick``: 10k), batch 128, one epoch, Adam.

Over 2000 float32 Adam epochs the seeds' final losses can differ from the
loop's by up to ~10% (batched and single matrix products round differently,
and late training amplifies it); over the first 200 epochs they agree to
~1e-7, which ``tests/test_ensemble.py`` checks.

For each case the script prints the wall times, the ratio loop / ensemble,
the largest relative difference of the seeds' final training losses, and the
achieved GFLOP/s of each side (6 flops per weight per sample per step: the
forward and backward matrix products) as a fraction of a large float32
matrix product's rate measured in the same process.  MNIST is read with
``load_mnist(download=False)`` from ``HW1SK_DATA`` (or ``--data-home``).

Run::

    python benchmarks/bench_seed_ensemble.py            # full, ~ minutes at 1 thread
    python benchmarks/bench_seed_ensemble.py --quick    # smaller
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.base import clone
from torch import nn

from hw1sk.ensemble import SeedEnsemble
from hw1sk.estimators import NeuralClassifier, NeuralRegressor


def function_data(n):
    """``sinc``-like 1-D regression data (as in ``bench_training_overhead.py``)."""
    X = np.linspace(-5, 5, n, dtype=np.float32)[:, None]
    return X, np.sinc(X).astype(np.float32)


def mnist_data(data_home, n_samples):
    from hw1sk.datasets import get_data_home, load_mnist

    X, y = load_mnist(get_data_home(data_home, create=False), train=True, n_samples=n_samples,
                      flatten=True, random_state=0, download=False)
    return np.ascontiguousarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)


def matmul_gflops(device="cpu", n=2048, repeats=5):
    """The best rate of an ``n x n`` float32 matrix product, in GFLOP/s."""
    n = n if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def training_flops(est, n_samples, n_seeds):
    """6 flops per weight per sample per epoch (forward + both backward products)."""
    module = clone(est).set_params(random_state=0)
    X = np.zeros((1, 1 if isinstance(est, NeuralRegressor) else 784), dtype=np.float32)
    y = np.zeros(1, dtype=np.float32 if isinstance(est, NeuralRegressor) else np.int64)
    if isinstance(est, NeuralClassifier):
        module.set_params(classes=np.arange(10))
    module._validate_training_data(X, y, reset=True)
    module.initialize()
    weights = sum(m.weight.numel() for m in module.module_.modules() if isinstance(m, nn.Linear))
    return 6 * weights * n_samples * est.max_epochs * n_seeds


def run_case(name, est, X, y, seeds, peak):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop = [clone(est).set_params(random_state=s).fit(X, y) for s in seeds]
    t_loop = time.perf_counter() - start
    start = time.perf_counter()
    ens = SeedEnsemble(est, seeds=seeds).fit(X, y)
    t_ens = time.perf_counter() - start
    assert ens.vectorized_, ens.fallback_reason_
    a = np.array([e.history_["train_loss"].iloc[-1] for e in ens.estimators_])
    b = np.array([e.history_["train_loss"].iloc[-1] for e in loop])
    flops = training_flops(est, len(X), len(seeds))
    print(f"{name}: {len(seeds)} seeds, {est.max_epochs} epochs, batch {est.batch_size}, "
          f"{len(X)} samples, chunk_size_={ens.chunk_size_}")
    print(f"  loop      {t_loop:8.2f} s   {flops / t_loop / 1e9:7.3f} GFLOP/s "
          f"({flops / t_loop / 1e9 / peak:.2%} of matmul)")
    print(f"  ensemble  {t_ens:8.2f} s   {flops / t_ens / 1e9:7.3f} GFLOP/s "
          f"({flops / t_ens / 1e9 / peak:.2%} of matmul)")
    print(f"  ratio loop/ensemble = {t_loop / t_ens:.2f}x; max relative difference of final "
          f"train_loss = {np.max(np.abs(a - b) / np.abs(b)):.2e}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data-home", default=None, help="folder holding MNIST/raw")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--device", default="cpu", help="the estimators' device")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    peak = matmul_gflops(args.device)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}; "
          f"float32 matmul: {peak:.1f} GFLOP/s")

    X, y = function_data(1000)
    est = NeuralRegressor(module="mlp_budget", module__n_params=571, module__depth=1,
                          batch_size=-1, max_epochs=200 if args.quick else 2000,
                          device=args.device)
    run_case("func-571", est, X, y, list(range(32)), peak)

    if not args.skip_mnist:
        X, y = mnist_data(args.data_home, 10_000 if args.quick else None)
        est = NeuralClassifier(module="mlp", module__hidden=(64, 32), batch_size=128,
                               max_epochs=1, device=args.device)
        run_case("mnist-mlp", est, X, y, list(range(8)), peak)


if __name__ == "__main__":
    main()
