"""Cost of the sensitivity measures against one forward+backward pass.

On the 10,000 MNIST test images and a 784-128-64-10 MLP, times
:func:`hw1sk.generalization.input_jacobian_norm` (softmax Jacobian, default
method and ``method="jacrev"``) and
:func:`hw1sk.generalization.loss_input_gradient_norm`, and prints each time as
a ratio to one forward+backward pass of the cross-entropy over the same
images at the same batch size (the baseline, measured in this process).
Target: sensitivity within 3x the baseline.  Each figure is the best of
``--repeats`` interleaved runs.

Run: ``python benchmarks/bench_sensitivity.py [--threads 1] [--repeats 5] [--data-home DIR]``
"""

import argparse
import time

import numpy as np
import torch
from torch import nn

from hw1sk.datasets import get_data_home
from hw1sk.generalization import input_jacobian_norm, loss_input_gradient_norm
from hw1sk.models import MLP


def load_test_images(data_home=None):
    """(X, y): 10,000 MNIST test images as float32 (n, 1, 28, 28) in [0, 1], int64 labels.

    ``data_home``: see :func:`hw1sk.datasets.get_data_home` (``None``: ``HW1SK_DATA``,
    else ``~/hw1sk_data``).
    """
    data_home = get_data_home(data_home)
    try:
        from hw1sk.datasets import load_mnist
    except ImportError:
        load_mnist = None
    if load_mnist is not None:
        X, y = load_mnist(data_home, train=False, download=False)[:2]
        X = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        if X.max() > 1:
            X = X / 255.0
        return X.reshape(-1, 1, 28, 28), torch.as_tensor(np.asarray(y), dtype=torch.int64)
    from torchvision.datasets import MNIST

    test = MNIST(root=data_home, train=False, download=False)
    return test.data.unsqueeze(1).float() / 255.0, test.targets.long()


def forward_backward(module, criterion, X, y, batch_size):
    for start in range(0, len(X), batch_size):
        module.zero_grad(set_to_none=True)
        criterion(module(X[start:start + batch_size]), y[start:start + batch_size]).backward()
    module.zero_grad(set_to_none=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--data-home", default=None,
                        help="folder with MNIST/raw (default: $HW1SK_DATA, else ~/hw1sk_data)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    X, y = load_test_images(args.data_home)
    torch.manual_seed(0)
    module = MLP(784, (128, 64), 10)
    criterion = nn.CrossEntropyLoss()
    bs = args.batch_size

    candidates = {
        "forward+backward (baseline)": lambda: forward_backward(module, criterion, X, y, bs),
        "input_jacobian_norm (auto)": lambda: input_jacobian_norm(module, X, batch_size=bs),
        "input_jacobian_norm (jacrev)": lambda: input_jacobian_norm(
            module, X, batch_size=bs, method="jacrev"),
        "loss_input_gradient_norm": lambda: loss_input_gradient_norm(
            module, criterion, X, y, batch_size=bs),
    }
    best = {name: float("inf") for name in candidates}
    for fn in candidates.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)

    base = best["forward+backward (baseline)"]
    print(f"MNIST test images: {len(X)}, MLP 784-128-64-10, batch_size={bs}, "
          f"threads={torch.get_num_threads()}, best of {args.repeats}")
    for name, seconds in best.items():
        print(f"{name:32s} {seconds * 1e3:9.1f} ms   ratio {seconds / base:5.2f}x")
    auto = input_jacobian_norm(module, X, batch_size=bs)
    jacrev = input_jacobian_norm(module, X, batch_size=bs, method="jacrev")
    print(f"mean sensitivity: auto {auto:.6g}, jacrev {jacrev:.6g} "
          f"(rel. diff {abs(auto - jacrev) / jacrev:.1e})")


if __name__ == "__main__":
    main()
