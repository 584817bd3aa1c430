"""SeedEnsemble (all seeds in one vectorized pass) against the loop of separate fits.

Both sides fit the same estimator on the same data for the same seeds, in one
process with a fixed number of torch threads:

* ``loop``: ``clone(estimator).set_params(random_state=s).fit(X, y)`` per seed;
* ``ensemble``: :class:`hw1sk.ensemble.SeedEnsemble` over the same seeds.

Cases:

* ``func-571-d1``, ``-d4``, ``-d7``: 32 seeds of ``mlp_for_budget(571,
  depth)`` (1-190-1, 1-12-13-13-13-1, 1-9-8-9-9-9-9-11-1) on 1000 points of a
  1-D function, full batch, Adam, 2000 epochs (``--quick``: 200);
* ``one-input-passes`` (only when named in ``--cases``): the 1-190-1 full-batch
  fit, 32 seeds, 300 epochs, by the sorted pass it takes
  (``_SortedOneInputReLU``) and by the mask pass (``_OneInputReLU``) in its
  place, alternated in this process; prints the ratio mask / sorted;
* ``mask-layouts`` (only when named in ``--cases``): the 1-190-1 mask pass
  (the pass of batches per seed: mini-batches of 500) in both product layouts
  of :func:`hw1sk.batched_modules._samples_as_rows` (MKL's fast ones on Intel
  and on AMD processors), 32 seeds, 300 epochs, alternated in this process;
  prints the ratio samples-first / samples-last;
* ``loop-rounding`` (only when named in ``--cases``): for each of
  ``--depths``, the 571-parameter full-batch fit of 32 seeds, 200 epochs,
  by the loop, by ``SeedEnsemble(rounding="batched")`` and by
  ``rounding="loop"`` (the per-seed pass, each seed rounding as its own
  fit); prints the ratios loop / each, the largest relative difference of
  the losses from the loop's and how many seeds end with the loop's weights
  bit for bit; and, as the float32 floor, the loop on the same rows in
  reverse order (the same full-batch loss, summed in another order);
* ``mnist-mlp``: 8 seeds of the trajectory MLP 784-64-32-10 on the 60k MNIST
  training images (``--quick``: 10k), batch 128, one epoch, Adam;
* ``mnist-cnn-100`` (memory): 100 seeds of the 1-1 MNIST CNN
  (``cnn_for_budget_flat(8000, depth=1)``: one 4-channel convolution and a
  flattening head, 7,890 parameters), batch 128, one epoch on
  ``--cnn-samples`` images (default 6000), run in a subprocess that reports
  its peak resident memory (``ru_maxrss``) above what it held before the fit,
  with ``chunk_size="auto"``.  Its loop time is measured on ``--cnn-loop-seeds``
  seeds (default 5) and scaled to 100.

For each case the script prints the wall and CPU (``time.process_time``)
times, the ratio loop / ensemble of both (on a shared machine the CPU-time
ratio is the steadier one), the largest relative difference of the seeds'
final training losses, the ensemble's ``pass_`` and ``chunk_size_``, and the
achieved GFLOP/s of each side (6 flops per multiply-add of the Linear and
Conv2d layers per sample per step: the forward and both backward products)
as a fraction of a large float32 matrix product's rate measured in the same
process.  Over 2000 float32 Adam epochs the seeds' final losses can differ
from the loop's widely (~10% on an Intel machine; on an AMD EPYC a few seeds
of depth 4 and 7 end at 0.04 to 5.5 times the loop's final loss), neither side
lower more often (the line ``final train_loss, ensemble / loop`` counts the
seeds that end lower and prints the median ratio and the mean losses):
batched and single matrix products round differently, and late training
amplifies it; over the first 200 epochs they
agree to ~1e-6 for most seeds, which ``tests/test_ensemble.py`` checks, but a
few of 32 seeds of depth 4 and 7 reach 1e-3 at epoch 200.  That is the float32
rounding of either side amplified by training, not an error of the ensemble:
against float64 training from the same weights, the float32 loop's epoch-200
losses differ by as much (32 seeds of depth 4: loop 4.3e-3, ensemble 1.3e-3;
the ensemble's one-step gradients are closer to float64's than the loop's,
2e-7 against 1e-6 relative), and in float64 the two agree to 1e-9
(``--float64-reference`` prints these differences).  MNIST is read with
``load_mnist(download=False)`` from ``HW1SK_DATA`` (or ``--data-home``).

Run::

    python benchmarks/bench_seed_ensemble.py            # full, ~ 10 minutes at 1 thread
    python benchmarks/bench_seed_ensemble.py --quick    # smaller
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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


def mnist_data(data_home, n_samples, flatten=True):
    from hw1sk.datasets import get_data_home, load_mnist

    X, y = load_mnist(get_data_home(data_home, create=False), train=True, n_samples=n_samples,
                      flatten=flatten, random_state=0, download=False)
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


def multiply_adds(est, X, y):
    """Multiply-adds of the Linear and Conv2d layers for one sample of ``X``."""
    net = clone(est).set_params(random_state=0)
    net._validate_training_data(X[:2], y[:2], reset=True)
    net.initialize()
    total = [0]

    def count(layer, inputs, out):
        if isinstance(layer, nn.Linear):
            total[0] += layer.in_features * layer.out_features
        elif isinstance(layer, nn.Conv2d):
            total[0] += layer.weight.numel() * out.shape[-1] * out.shape[-2]

    handles = [m.register_forward_hook(count) for m in net.module_.modules()]
    with torch.no_grad():
        net.module_(torch.as_tensor(X[:1]))
    for h in handles:
        h.remove()
    return total[0]


def warm_up(est, X, y):
    """One short untimed fit, so that neither side pays the process's first-use costs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clone(est).set_params(random_state=0, max_epochs=1).fit(X[:256], y[:256])


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def mlp_budget_float64(n_params=571, depth=1, n_in=1, n_out=1):
    """``mlp_for_budget`` in float64: the reference of the float32 rounding."""
    from hw1sk.models import mlp_for_budget

    return mlp_for_budget(n_params, depth, n_in=n_in, n_out=n_out).double()


def float64_reference(est, X, y, seeds, loop, ens, early):
    """Print how far each float32 side's epoch-``early + 1`` losses are from float64's.

    The float64 side is the ensemble (it agrees with a float64 loop to 1e-9,
    ``tests/test_ensemble.py``), from the same initial weights.
    """
    ref = clone(est).set_params(module=mlp_budget_float64, max_epochs=early + 1)
    exact = SeedEnsemble(ref, seeds=seeds[:len(loop)]).fit(X, y).estimators_
    c = np.array([e.history_["train_loss"].iloc[early] for e in exact])
    for side, fits in (("loop", loop), ("ensemble", ens.estimators_[:len(loop)])):
        a = np.array([e.history_["train_loss"].iloc[early] for e in fits])
        print(f"  float32 {side} against float64 at epoch {early + 1}: max relative "
              f"difference of train_loss {np.max(np.abs(a - c) / np.abs(c)):.2e}")


def run_case(name, est, X, y, seeds, peak, loop_seeds=None, reference=False):
    loop_seeds = seeds if loop_seeds is None else loop_seeds
    scale = len(seeds) / len(loop_seeds)
    warm_up(est, X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loop, w_loop, c_loop = timed(lambda: [clone(est).set_params(random_state=s).fit(X, y)
                                              for s in loop_seeds])
    w_loop, c_loop = w_loop * scale, c_loop * scale
    ens, w_ens, c_ens = timed(lambda: SeedEnsemble(est, seeds=seeds).fit(X, y))
    assert ens.vectorized_, ens.fallback_reason_
    a = np.array([e.history_["train_loss"].iloc[-1] for e in ens.estimators_[:len(loop)]])
    b = np.array([e.history_["train_loss"].iloc[-1] for e in loop])
    early = min(200, est.max_epochs) - 1  # the tests' horizon
    a200 = np.array([e.history_["train_loss"].iloc[early] for e in ens.estimators_[:len(loop)]])
    b200 = np.array([e.history_["train_loss"].iloc[early] for e in loop])
    flops = 6 * multiply_adds(est, X, y) * len(X) * est.max_epochs * len(seeds)
    print(f"{name}: {len(seeds)} seeds, {est.max_epochs} epochs, batch {est.batch_size}, "
          f"{len(X)} samples; ensemble pass_={ens.pass_!r}, chunk_size_={ens.chunk_size_}")
    note = "" if scale == 1 else f"  (measured on {len(loop_seeds)} seeds, scaled)"
    for side, wall, cpu in (("loop", w_loop, c_loop), ("ensemble", w_ens, c_ens)):
        print(f"  {side:9s} wall {wall:8.2f} s  cpu {cpu:8.2f} s  {flops / cpu / 1e9:7.3f} "
              f"GFLOP/s per CPU second ({flops / cpu / 1e9 / peak:.2%} of matmul)"
              f"{note if side == 'loop' else ''}")
    print(f"  ratio loop/ensemble: wall {w_loop / w_ens:.2f}x, cpu {c_loop / c_ens:.2f}x; "
          f"max relative difference of train_loss: final "
          f"{np.max(np.abs(a - b) / np.abs(b)):.2e}, epoch {early + 1} "
          f"{np.max(np.abs(a200 - b200) / np.abs(b200)):.2e}")
    ratio = a / b
    print(f"  final train_loss, ensemble / loop: lower for {int((ratio < 1).sum())} of "
          f"{len(ratio)} seeds, median {np.median(ratio):.5f}, range [{ratio.min():.3g}, "
          f"{ratio.max():.3g}]; means {a.mean():.4g} and {b.mean():.4g}", flush=True)
    if reference:
        float64_reference(est, X, y, seeds, loop, ens, early)
    return ens


def alternate(fits, repeats):
    """Median wall time of each of ``fits`` (name -> callable), run in turns."""
    times = {name: [] for name in fits}
    names = list(fits)
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(timed(fits[name])[1])
    return {name: float(np.median(t)) for name, t in times.items()}


def passes_case(X, y, epochs, repeats=4):
    """The 1-190-1 full-batch fit by the sorted pass and by the mask pass, alternated."""
    from hw1sk import batched_modules

    class MaskPass:  # the mask pass where the sorted pass would run
        @staticmethod
        def apply(xt, w1, b1, w2, b2, xs, perm, workspace):
            return batched_modules._OneInputReLU.apply(xt, w1, b1, w2, b2, True, workspace)

    est = NeuralRegressor(module="mlp_budget", module__n_params=571, module__depth=1,
                          batch_size=-1, max_epochs=epochs)
    warm_up(est, X, y)
    sorted_pass = batched_modules._SortedOneInputReLU

    def fit(cls):
        batched_modules._SortedOneInputReLU = cls
        try:
            return SeedEnsemble(est, seeds=range(32)).fit(X, y)
        finally:
            batched_modules._SortedOneInputReLU = sorted_pass

    fit(MaskPass), fit(sorted_pass)  # warm both
    t = alternate({"sorted": lambda: fit(sorted_pass), "mask": lambda: fit(MaskPass)},
                  repeats)
    print(f"one-input-passes: 32 seeds, depth 1, full batch, {epochs} epochs, {repeats} "
          f"alternating repeats\n  sorted {t['sorted']:.2f} s, mask {t['mask']:.2f} s: "
          f"ratio mask / sorted {t['mask'] / t['sorted']:.2f}")


def layout_case(X, y, epochs, repeats=4):
    """The 1-190-1 mask pass in both product layouts (Intel's and AMD's), alternated.

    ``hw1sk.batched_modules._samples_as_rows`` picks one by the processor
    vendor; this times 32 seeds of the depth-1 fit with each, in turns, and
    prints the ratio of the medians (samples-first / samples-last).
    """
    from hw1sk import batched_modules

    est = NeuralRegressor(module="mlp_budget", module__n_params=571, module__depth=1,
                          batch_size=500, max_epochs=epochs)
    chosen = batched_modules._samples_as_rows
    warm_up(est, X, y)
    SeedEnsemble(clone(est).set_params(max_epochs=5), seeds=range(32)).fit(X, y)

    def fit(flag):
        batched_modules._samples_as_rows = lambda: flag
        try:
            return SeedEnsemble(est, seeds=range(32)).fit(X, y)
        finally:
            batched_modules._samples_as_rows = chosen

    t = alternate({True: lambda: fit(True), False: lambda: fit(False)}, repeats)
    first, last = t[True], t[False]
    print(f"mask-layouts: 32 seeds, depth 1, batch 500, {epochs} epochs, {repeats} "
          "alternating repeats; "
          f"this processor's choice: {'samples-first' if chosen() else 'samples-last'}")
    print(f"  samples-last {last:.2f} s, samples-first {first:.2f} s: "
          f"ratio first / last {first / last:.2f}")


def rounding_case(X, y, epochs, depths=(4,), n_seeds=32):
    """``rounding="loop"`` (the per-seed pass) against ``"batched"`` and the loop of fits.

    For each depth: the 571-parameter full-batch fit of ``n_seeds`` seeds,
    each way once in this process; prints the times, the ratios loop / each
    pass, and how far each pass's losses are from the loop's (the largest
    relative difference over every epoch, and the number of seeds whose
    final weights are the loop's, bit for bit).
    """
    for depth in depths:
        est = NeuralRegressor(module="mlp_budget", module__n_params=571, module__depth=depth,
                              batch_size=-1, max_epochs=epochs)
        warm_up(est, X, y)
        seeds = list(range(n_seeds))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loop, t_loop, _ = timed(lambda: [clone(est).set_params(random_state=s).fit(X, y)
                                             for s in seeds])
        losses = np.array([f.history_["train_loss"].to_numpy() for f in loop])
        print(f"loop-rounding: {n_seeds} seeds, depth {depth}, full batch, {epochs} epochs; "
              f"loop {t_loop:.2f} s")
        # The float32 floor: the same fits on the rows in reverse order (the same loss and
        # gradients in exact arithmetic, summed in another order).
        X_rev, y_rev = np.ascontiguousarray(X[::-1]), np.ascontiguousarray(y[::-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reversed_ = np.array([clone(est).set_params(random_state=s).fit(X_rev, y_rev)
                                  .history_["train_loss"].to_numpy() for s in seeds])
        print(f"  loop on the rows reversed: {_drift_text(reversed_, losses)}")
        for rounding in ("batched", "loop"):
            ens, t, _ = timed(lambda: SeedEnsemble(est, seeds=seeds, rounding=rounding).fit(X, y))
            other = np.array([f.history_["train_loss"].to_numpy() for f in ens.estimators_])
            same = sum(all(torch.equal(p, q) for p, q in zip(a.module_.parameters(),
                                                              b.module_.parameters()))
                       for a, b in zip(ens.estimators_, loop))
            print(f"  rounding={rounding!r} (pass {ens.pass_}): {t:.2f} s, ratio loop / "
                  f"ensemble {t_loop / t:.2f}x; {_drift_text(other, losses)}; "
                  f"final weights bit for bit the loop's: {same} of {n_seeds} seeds",
                  flush=True)


def _drift_text(losses, reference, bar=1e-4):
    """How far per-seed loss curves are from the loop's: largest relative difference over
    every epoch, at the last epoch, and the seeds beyond ``bar`` there."""
    rel = np.abs(losses - reference) / np.abs(reference)
    return (f"largest relative difference of train_loss from the loop's {rel.max():.2e} "
            f"(last epoch {rel[:, -1].max():.2e}, {int((rel[:, -1] > bar).sum())} of "
            f"{len(rel)} seeds beyond {bar:g})")


def memory_child(args):
    """In a fresh process: fit 100 CNN seeds, print a JSON line with peak memory."""
    import resource

    from hw1sk.models import cnn_for_budget_flat

    torch.set_num_threads(args.threads)
    X, y = mnist_data(args.data_home, args.cnn_samples, flatten=False)
    est = NeuralClassifier(module=cnn_for_budget_flat, module__n_params=8000, module__depth=1,
                           batch_size=128, max_epochs=1, lr=1e-3, device=args.device)
    warm_up(est, X, y)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ens, wall, cpu = timed(lambda: SeedEnsemble(est, n_seeds=100).fit(X, y))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_kib": before, "peak_kib": after, "wall": wall, "cpu": cpu,
                      "chunk_size_": ens.chunk_size_, "pass_": ens.pass_,
                      "diverged": len(ens.diverged_seeds_)}))


def memory_case(args, peak):
    """The mnist-cnn-100 case: peak memory from a subprocess, loop time from a few seeds."""
    from hw1sk.models import cnn_for_budget_flat

    cmd = [sys.executable, __file__, "--memory-child", "--threads", str(args.threads),
           "--cnn-samples", str(args.cnn_samples), "--device", args.device]
    if args.data_home:
        cmd += ["--data-home", args.data_home]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    report = json.loads(out.stdout.strip().splitlines()[-1])
    X, y = mnist_data(args.data_home, args.cnn_samples, flatten=False)
    est = NeuralClassifier(module=cnn_for_budget_flat, module__n_params=8000, module__depth=1,
                           batch_size=128, max_epochs=1, lr=1e-3, device=args.device)
    warm_up(est, X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, w_loop, c_loop = timed(lambda: [clone(est).set_params(random_state=s).fit(X, y)
                                           for s in range(args.cnn_loop_seeds)])
    scale = 100 / args.cnn_loop_seeds
    flops = 6 * multiply_adds(est, X, y) * len(X) * 100
    print(f"mnist-cnn-100: 100 seeds of cnn_for_budget_flat(8000, depth=1), batch 128, "
          f"1 epoch, {len(X)} samples; pass_={report['pass_']!r}, chunk_size_="
          f"{report['chunk_size_']} (auto)")
    print(f"  peak resident memory of the fitting process {report['peak_kib'] / 1024:.0f} MiB, "
          f"{(report['peak_kib'] - report['before_kib']) / 1024:.0f} MiB above its "
          f"{report['before_kib'] / 1024:.0f} MiB before the fit")
    print(f"  loop      wall {w_loop * scale:8.2f} s  cpu {c_loop * scale:8.2f} s  "
          f"{flops / (c_loop * scale) / 1e9:7.3f} GFLOP/s per CPU second "
          f"(measured on {args.cnn_loop_seeds} seeds, scaled)")
    print(f"  ensemble  wall {report['wall']:8.2f} s  cpu {report['cpu']:8.2f} s  "
          f"{flops / report['cpu'] / 1e9:7.3f} GFLOP/s per CPU second "
          f"({flops / report['cpu'] / 1e9 / peak:.2%} of matmul)")
    print(f"  ratio loop/ensemble: wall {w_loop * scale / report['wall']:.2f}x, "
          f"cpu {c_loop * scale / report['cpu']:.2f}x", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs and samples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--data-home", default=None, help="folder holding MNIST/raw")
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--cases", default="func,mnist-mlp,mnist-cnn",
                        help="comma-separated subset of func, mnist-mlp, mnist-cnn, "
                             "one-input-passes, mask-layouts, loop-rounding")
    parser.add_argument("--depths", default="1,4,7", help="depths of the 571 model")
    parser.add_argument("--cnn-samples", type=int, default=6000)
    parser.add_argument("--cnn-loop-seeds", type=int, default=5)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help="the estimators' device")
    parser.add_argument("--float64-reference", action="store_true",
                        help="func cases: also compare both sides' epoch-200 losses with "
                             "float64 training from the same weights")
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    torch.set_num_threads(args.threads)
    peak = matmul_gflops(args.device)
    print(f"torch {torch.__version__}, {args.threads} thread(s), device {args.device}; "
          f"float32 matmul: {peak:.1f} GFLOP/s; load average {os.getloadavg()[0]:.1f}")

    cases = args.cases.split(",")
    X, y = function_data(1000)
    for depth in (int(d) for d in args.depths.split(",") if "func" in cases):
        est = NeuralRegressor(module="mlp_budget", module__n_params=571, module__depth=depth,
                              batch_size=-1, max_epochs=200 if args.quick else 2000,
                              device=args.device)
        run_case(f"func-571-d{depth}", est, X, y, list(range(32)), peak,
                 reference=args.float64_reference)

    if "one-input-passes" in cases:
        passes_case(X, y, 100 if args.quick else 300)
    if "mask-layouts" in cases:
        layout_case(X, y, 100 if args.quick else 300)
    if "loop-rounding" in cases:
        rounding_case(X, y, 100 if args.quick else 200,
                      depths=[int(d) for d in args.depths.split(",")])

    if not args.skip_mnist and "mnist-mlp" in cases:
        X, y = mnist_data(args.data_home, 10_000 if args.quick else None)
        est = NeuralClassifier(module="mlp", module__hidden=(64, 32), batch_size=128,
                               max_epochs=1, device=args.device)
        run_case("mnist-mlp", est, X, y, list(range(8)), peak)
    if not args.skip_mnist and "mnist-cnn" in cases:
        memory_case(args, peak)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
