"""Exact loss Hessian of a 572-parameter MLP on 1,000 points, and one minimal-ratio run.

Model: ``MLP(1, (21, 23), 1, activation="tanh")`` -- 572 parameters, the HW1
"minimal ratio" size (``mlp_for_budget(571)`` gives 571) -- on ``y = sin(5 pi
x) / (5 pi x)`` at 1,000 points of ``[-1, 1]``, MSE loss, float64, CPU, one
thread.  Timed in this process:

- ``loss_hessian`` (structured path: Hessian back-propagation), and its
  generic fallback (one Hessian-vector product per parameter);
- the baseline ``torch.autograd.functional.hessian`` on the same flat loss;
- one full minimal-ratio run: full-batch Adam training, the gradient-norm
  phase (:func:`hw1sk.critical_points.minimize_gradient_norm`), then the exact
  Hessian and its minimal ratio.

Run::

    python benchmarks/bench_hessian.py [--repeat 3] [--train-steps 2000]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch import nn

from hw1sk.critical_points import minimize_gradient_norm
from hw1sk.curvature import hessian_minimal_ratio, loss_hessian
from hw1sk.models import MLP
from hw1sk.parameters import count_params, functional_loss


def function_data(n=1000):
    X = torch.linspace(-1, 1, n, dtype=torch.float32)[:, None]
    return X, torch.sinc(5 * X)  # torch.sinc(t) = sin(pi t) / (pi t)


def timed(fn, repeat):
    best, value = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def baseline_hessian(module, criterion, X, y):
    """``torch.autograd.functional.hessian`` of the flat float64 loss."""
    work = copy.deepcopy(module).double()
    loss_fn, theta = functional_loss(work, criterion, X.double(), y.double())
    return torch.autograd.functional.hessian(loss_fn, theta)


def minimal_ratio_run(seed, X, y, train_steps):
    """Train, minimize the gradient norm, and take the minimal ratio; phase times."""
    torch.manual_seed(seed)
    module = MLP(1, (21, 23), 1, activation="tanh")
    criterion = nn.MSELoss()
    times = {}
    t0 = time.perf_counter()
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(train_steps):
        opt.zero_grad()
        criterion(module(X), y).backward()
        opt.step()
    times["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = minimize_gradient_norm(module, criterion, X, y, tol=1e-3)
    times["grad-norm phase"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ratio = hessian_minimal_ratio(module, criterion, X, y)
    times["Hessian + eigvalsh"] = time.perf_counter() - t0
    return times, result, ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    X, y = function_data()
    torch.manual_seed(0)
    module = MLP(1, (21, 23), 1, activation="tanh")
    criterion = nn.MSELoss()
    P = count_params(module)

    loss_hessian(module, criterion, X[:10], y[:10])  # warm-up
    t_ours, H_ours = timed(lambda: loss_hessian(module, criterion, X, y), args.repeat)
    t_hvp, H_hvp = timed(lambda: loss_hessian(module, criterion, X, y, method="hvp"), 1)
    t_base, H_base = timed(lambda: baseline_hessian(module, criterion, X, y), 1)
    scale = float(H_base.abs().max())

    print(f"model: MLP(1, (21, 23), 1, tanh), {P} parameters; 1000 points; MSE; float64; "
          f"{args.threads} thread(s)")
    print(f"loss_hessian (structured, best of {args.repeat}): {t_ours:.3f} s  "
          f"max |H - H_baseline| / max |H_baseline| = {float((H_ours - H_base).abs().max()) / scale:.1e}")
    print(f"loss_hessian (method='hvp'):              {t_hvp:.3f} s  "
          f"max rel. diff {float((H_hvp - H_base).abs().max()) / scale:.1e}")
    print(f"torch.autograd.functional.hessian:        {t_base:.3f} s")
    print(f"ratio ours / baseline = {t_ours / t_base:.3f}  (speed-up x{t_base / t_ours:.0f}); "
          f"hvp / baseline = {t_hvp / t_base:.3f}")

    times, result, ratio = minimal_ratio_run(0, X, y, args.train_steps)
    total = sum(times.values())
    print(f"one minimal-ratio run ({args.train_steps} full-batch Adam steps): {total:.2f} s  "
          + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    print(f"  grad norm {result.initial_grad_norm:.2e} -> {result.final_grad_norm:.2e} "
          f"in {result.n_steps} steps (converged={result.converged}); loss {result.loss:.3e}; "
          f"minimal ratio {ratio.ratio:.3f} ({ratio.n_positive}+ / {ratio.n_negative}- / "
          f"{ratio.n_zero} zero)")


if __name__ == "__main__":
    main()
