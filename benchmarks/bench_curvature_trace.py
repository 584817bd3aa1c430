"""Overhead of CurvatureTrace on MNIST training.

An MLP 784-128-64-10 (:class:`hw1sk.estimators.NeuralClassifier`) is
trained for a few epochs on the 60,000 MNIST training images (batch 128),
with and without a :class:`hw1sk.callbacks.CurvatureTrace` that measures
once per epoch with its defaults: on a 512-sample subset, 20 Lanczos
products give the top eigenvalue, and the trace is exact, in closed form
(the MLP is a chain of Linear layers and activations: standard error 0;
``hessian_top_eigenvalue_and_trace(method="auto")``).  Any other module
gets 20 Lanczos products for the top eigenvalue and a Krylov space on which
the trace is exact, and 10 probes of its complement for the rest of the
trace with its standard error; ``PYTHONPATH`` pointing at an older hw1sk
(one whose ``"auto"`` did that for every net over 2,000 parameters) measures
that path on the same MLP.

Prints the measurements, and the time ratio with / without the callback
(bar: <= 1.30) in wall-clock and in process CPU time: the best of
``--repeats`` fits each, alternating, after one warm-up fit of each kind
that pays the one-time costs (imports, allocator).  With one thread the
two clocks agree on an idle machine; on a shared one, other processes
inflate the wall clock of both fits unevenly, and the CPU time is the
figure to read.  Checks that the final weights are equal.  Then, less
noisy than a difference of fits, the median CPU time of one measurement in
isolation on the trained net, by each path: the shared Krylov estimate
(``method="krylov"``) and the closed-form trace (``method="auto"``).

    OMP_NUM_THREADS=1 HW1SK_DATA=/work/shared/data python benchmarks/bench_curvature_trace.py
"""

import argparse
import time

import numpy as np
import torch

from hw1sk.callbacks import CurvatureTrace
from hw1sk.datasets import get_data_home, load_mnist
from hw1sk.estimators import NeuralClassifier
from hw1sk.parameters import flatten_parameters
from hw1sk.stochastic_curvature import hessian_top_eigenvalue_and_trace


def fit(X, y, epochs, callbacks):
    net = NeuralClassifier(module__hidden=(128, 64), max_epochs=epochs, batch_size=128,
                           callbacks=callbacks, random_state=0, verbose=0)
    wall, cpu = time.perf_counter(), time.process_time()
    net.fit(X, y)
    return (time.perf_counter() - wall, time.process_time() - cpu,
            flatten_parameters(net.module_).detach(), net)


def isolated_costs(net, cb, X, y, max_iter, repeats=15):
    """Median CPU seconds of one measurement by each path, on the trained net and the subset.

    The shared Krylov estimate (``max_iter`` Lanczos products and 10 probes,
    what ``"auto"`` gives a module that is not a chain) against the top
    eigenvalue with the closed-form trace (what it gives this MLP); the same
    Lanczos start, so the same top eigenvalue.
    """
    Xs, ys = torch.as_tensor(X[cb.indices_]), torch.as_tensor(y[cb.indices_])

    def criterion(output, target):
        return net.get_loss(output, target)

    for method in ("krylov", "auto"):
        times, last = [], None
        for seed in range(repeats):
            cpu = time.process_time()
            last = hessian_top_eigenvalue_and_trace(net.module_, criterion, Xs, ys,
                                                    n_iter=max_iter, n_probes=10,
                                                    random_state=seed, method=method)
            times.append(time.process_time() - cpu)
        top, est = last
        print(f"  method={method!r:8s} ({est.method}, {est.n_matvecs} products): "
              f"{np.median(times):.4f} s CPU per measurement; top {top:.4f}, trace "
              f"{est.value:.3f} +- {est.std_error:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=60_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-samples", type=int, default=512)
    parser.add_argument("--n-matvecs", type=int, default=None,
                        help="CurvatureTrace's n_matvecs (default: its own)")
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--trace-method", default="auto")
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    X, y = load_mnist(get_data_home(args.data_home), train=True, n_samples=args.n_images,
                      flatten=True, random_state=0, download=False)
    print(f"MNIST {X.shape}, MLP 784-128-64-10, batch 128, {args.epochs} epochs, "
          f"torch threads {torch.get_num_threads()}; CurvatureTrace n_samples={args.n_samples}, "
          f"n_matvecs={args.n_matvecs}, max_iter={args.max_iter}, "
          f"trace_method={args.trace_method}")

    def callback():
        return CurvatureTrace(n_samples=args.n_samples, n_matvecs=args.n_matvecs,
                              max_iter=args.max_iter, trace_method=args.trace_method,
                              random_state=0)

    fit(X[:2000], y[:2000], 1, [])  # warm-up: one-time costs are not per-measurement costs
    fit(X[:2000], y[:2000], 1, [callback()])
    plain, traced, last = [], [], None
    for _ in range(args.repeats):
        *t, w_plain, _ = fit(X, y, args.epochs, [])
        plain.append(t)
        cb = callback()
        *t, w_traced, net = fit(X, y, args.epochs, [cb])
        traced.append(t)
        last = cb
    frame = last.to_frame()
    print(frame.to_string(index=False))
    rel = frame["trace_std_error"] / frame["trace"].abs()
    print(f"trace standard error / trace: {', '.join(f'{r:.1%}' for r in rel)}")
    plain, traced = np.array(plain), np.array(traced)
    for col, clock in enumerate(("wall", "cpu")):
        base, with_cb = plain[:, col].min(), traced[:, col].min()
        per = (with_cb - base) / args.epochs
        print(f"{clock:4s}: without {base:.3f} s   with {with_cb:.3f} s   "
              f"({per:.3f} s per measurement, {base / args.epochs:.3f} s per epoch)   "
              f"ratio {with_cb / base:.3f}   (all fits: without {np.round(plain[:, col], 2)}, "
              f"with {np.round(traced[:, col], 2)})")
    print(f"seconds inside the callback per measurement (wall): "
          f"{', '.join(f'{s:.3f}' for s in frame['seconds'])}")
    print(f"weights equal: {bool(torch.equal(w_plain, w_traced))}")
    if args.trace_method == "auto":
        print("one measurement in isolation, on the trained net and the subset:")
        isolated_costs(net, last, X, y, args.max_iter)
    ratio = traced[:, 1].min() / plain[:, 1].min()
    print(f"ratio with/without CurvatureTrace (CPU time): {ratio:.2f}  (bar <= 1.30: "
          f"{'PASS' if ratio <= 1.30 else 'FAIL'})")


if __name__ == "__main__":
    main()
