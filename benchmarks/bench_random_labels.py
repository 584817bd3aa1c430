"""Does the default random-label study memorize within 10 minutes on this machine?

Times :class:`hw1sk.studies.random_labels.RandomLabelStudy` with its default
settings (5,000 MNIST training images with shuffled labels, 2,000 test
images, MLP 784-512-512-10, Adam lr 1e-3, batch 128, 60 epochs) in this
process and checks the bar: final train accuracy (on the random labels)
>= 90% and test accuracy (true labels) <= 15%, in at most 10 minutes of wall
time.  Prints the wall time, its ratio to the 10-minute budget, the final
accuracies and PASS/FAIL.

As a reference for the training overhead, a hand-written PyTorch loop
(same data, labels, network, optimizer, batch size, epochs and per-epoch
test scoring) is timed in the same process, and the study's time is printed
as a ratio to it (skip it with ``--no-baseline``).  The load average is
printed too: on a shared machine the absolute times vary a lot.

Run: ``python benchmarks/bench_random_labels.py [--threads N] [--no-baseline]``
"""

import argparse
import os
import time

import torch
from torch import nn

from hw1sk.datasets import get_data_home, load_mnist
from hw1sk.models import MLP
from hw1sk.seeding import spawn_seeds
from hw1sk.studies._base import THREADS_PER_RUN, prepare_data
from hw1sk.studies.random_labels import RandomLabelStudy

BUDGET_S = 600.0
MIN_TRAIN_ACCURACY = 0.90
MAX_TEST_ACCURACY = 0.15


def hand_written_loop(X, y, X_test, y_test, hidden, lr, batch_size, epochs, seed):
    """Plain PyTorch training, test scored every epoch; returns (seconds, train acc, test acc)."""
    torch.manual_seed(seed)
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    X_test, y_test = torch.from_numpy(X_test), torch.from_numpy(y_test)
    start = time.perf_counter()
    module = MLP(X.shape[1], hidden, 10)
    optimizer = torch.optim.Adam(module.parameters(), lr=lr)
    criterion = nn.CrossEntropyLoss()
    for _ in range(epochs):
        module.train()
        perm = torch.randperm(len(X))
        for i in range(0, len(X), batch_size):
            idx = perm[i:i + batch_size]
            optimizer.zero_grad()
            criterion(module(X[idx]), y[idx]).backward()
            optimizer.step()
        module.eval()
        with torch.no_grad():
            criterion(module(X_test), y_test)
    with torch.no_grad():
        train_acc = float((module(X).argmax(1) == y).float().mean())
        test_acc = float((module(X_test).argmax(1) == y_test).float().mean())
    return time.perf_counter() - start, train_acc, test_acc


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the baseline loop (default: as many as each "
                             "study run gets, hw1sk.studies._base.THREADS_PER_RUN)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the hand-written PyTorch loop")
    parser.add_argument("--data-home", default=None,
                        help="folder with MNIST/raw (default: $HW1SK_DATA, else ~/hw1sk_data)")
    args = parser.parse_args()
    # like with like: the study trains its run on THREADS_PER_RUN threads
    torch.set_num_threads(args.threads or THREADS_PER_RUN or torch.get_num_threads())

    data_home = get_data_home(args.data_home)
    X, y = load_mnist(data_home, flatten=True)
    X_test, y_test = load_mnist(data_home, train=False, flatten=True)
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    study = RandomLabelStudy()
    start = time.perf_counter()
    study.fit(X, y, X_test, y_test)
    wall = time.perf_counter() - start
    s = study.summary_.iloc[0]
    passed = (wall <= BUDGET_S and s["train_accuracy"] >= MIN_TRAIN_ACCURACY
              and s["test_accuracy"] <= MAX_TEST_ACCURACY)
    print(f"RandomLabelStudy defaults: {study.settings_['model']}, "
          f"{study.settings_['n_params']:,} parameters, n_train={int(s['n_train'])}, "
          f"n_test={int(s['n_test'])}, {int(s['n_epochs'])} epochs")
    print(f"  wall time            {wall:8.1f} s   ratio to the 10-minute budget: "
          f"{wall / BUDGET_S:.3f}")
    print(f"  final train accuracy {s['train_accuracy']:8.4f}   (random labels; bar >= "
          f"{MIN_TRAIN_ACCURACY:.2f})")
    print(f"  final test accuracy  {s['test_accuracy']:8.4f}   (true labels; bar <= "
          f"{MAX_TEST_ACCURACY:.2f}; chance {s['chance_accuracy']:.2f})")
    print(f"  final train / test loss {s['train_loss']:.4f} / {s['test_loss']:.4f}")
    print(f"  bar: {'PASS' if passed else 'FAIL'}")

    if not args.no_baseline:
        # the study's subsets (the seeds it derives from random_state) and its net's settings
        data_seed, _, run_seed = spawn_seeds(study.random_state, 3)
        data = prepare_data(X, y, X_test, y_test, n_train=study.n_train, n_test=study.n_test,
                            seeds=spawn_seeds(data_seed, 3))
        net = study.estimator_
        base, train_acc, test_acc = hand_written_loop(
            data.X, study.random_labels_, data.X_test, data.y_test, net.module_.hidden, net.lr,
            net.batch_size, net.max_epochs, run_seed)
        print(f"hand-written PyTorch loop, same settings ({torch.get_num_threads()} threads): "
              f"{base:.1f} s, train acc {train_acc:.4f}, test acc {test_acc:.4f}")
        print(f"  study / hand-written loop: {wall / base:.2f}x")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
