"""Overhead of CurvatureTrace on MNIST training.

An MLP 784-128-64-10 (:class:`hw1sk.estimators.NeuralClassifier`) is
trained for a few epochs on 10,000 MNIST images (batch 128), with and
without a :class:`hw1sk.callbacks.CurvatureTrace` that measures once per
epoch (top eigenvalue and Hutch++ trace on its default 512-sample subset).
Prints the time ratio with / without the callback (bar: <= 1.30), the best
of ``--repeats`` fits each, and checks that the final weights are equal.

    OMP_NUM_THREADS=1 HW1SK_DATA=/work/shared/data python benchmarks/bench_curvature_trace.py
"""

import argparse
import time

import torch

from hw1sk.callbacks import CurvatureTrace
from hw1sk.datasets import get_data_home, load_mnist
from hw1sk.estimators import NeuralClassifier
from hw1sk.parameters import flatten_parameters


def fit(X, y, epochs, callbacks):
    net = NeuralClassifier(module__hidden=(128, 64), max_epochs=epochs, batch_size=128,
                           callbacks=callbacks, random_state=0, verbose=0)
    start = time.perf_counter()
    net.fit(X, y)
    return time.perf_counter() - start, flatten_parameters(net.module_).detach()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-samples", type=int, default=512)
    parser.add_argument("--n-matvecs", type=int, default=30)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--data-home", default=None)
    args = parser.parse_args()
    X, y = load_mnist(get_data_home(args.data_home), train=True, n_samples=args.n_images,
                      flatten=True, random_state=0, download=False)
    print(f"MNIST {X.shape}, MLP 784-128-64-10, batch 128, {args.epochs} epochs, "
          f"torch threads {torch.get_num_threads()}")
    plain, traced, last = [], [], None
    for _ in range(args.repeats):
        t, w_plain = fit(X, y, args.epochs, [])
        plain.append(t)
        cb = CurvatureTrace(n_samples=args.n_samples, n_matvecs=args.n_matvecs,
                            max_iter=args.max_iter, random_state=0)
        t, w_traced = fit(X, y, args.epochs, [cb])
        traced.append(t)
        last = cb
    print(last.to_frame().to_string(index=False))
    base, with_cb = min(plain), min(traced)
    per = (with_cb - base) / args.epochs
    print(f"without: {base:.3f} s   with: {with_cb:.3f} s   "
          f"({per:.3f} s per measurement, {base / args.epochs:.3f} s per epoch)")
    print(f"weights equal: {bool(torch.equal(w_plain, w_traced))}")
    ratio = with_cb / base
    print(f"ratio with/without CurvatureTrace: {ratio:.2f}  (bar <= 1.30: "
          f"{'PASS' if ratio <= 1.30 else 'FAIL'})")


if __name__ == "__main__":
    main()
