"""Shared test fixtures: where MNIST lives, a small MNIST split, a small regression set.

Session-scoped arrays are shared by all tests: copy them before editing in place.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import settings
from skorch.callbacks import Callback

from hw1sk.datasets import DATA_HOME_ENV, MNIST_FILES, load_mnist, make_function_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tests use tiny tensors, where intra-op threads only add overhead, and the suite runs
# on small shared machines (and under pytest-xdist): one thread per process avoids
# oversubscribing the cores.  Results do not depend on the thread count.
torch.set_num_threads(1)

# Timing deadlines flake on loaded machines; the size of each example is bounded instead.
settings.register_profile("hw1sk", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hw1sk"))


def _default_data_home() -> Path:
    """``HW1SK_DATA`` if set, else ``../shared/data`` next to the repository."""
    env = os.environ.get(DATA_HOME_ENV)
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist_data_home() -> str:
    """The data home holding ``MNIST/raw``; fails (never skips) when the files are missing."""
    home = _default_data_home()
    raw = home / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing:
        pytest.fail(
            f"MNIST files {missing} are missing from {raw}. Put the four uncompressed "
            f"IDX files there, or set {DATA_HOME_ENV} to a folder holding MNIST/raw.",
            pytrace=False,
        )
    return str(home)


class MNISTSplit(NamedTuple):
    """Flattened MNIST subsets, in ``train_test_split`` order."""

    X_train: np.ndarray
    X_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


@pytest.fixture(scope="session")
def mnist_small(mnist_data_home) -> MNISTSplit:
    """2000 training and 500 test images, flattened to (n, 784), stratified, fixed seeds."""
    X_train, y_train = load_mnist(mnist_data_home, train=True, n_samples=2000,
                                  flatten=True, random_state=0, download=False)
    X_test, y_test = load_mnist(mnist_data_home, train=False, n_samples=500,
                                flatten=True, random_state=1, download=False)
    return MNISTSplit(X_train, X_test, y_train, y_test)


@pytest.fixture(scope="session")
def sinc_data():
    """200 noiseless samples ``(X, y)`` of sinc on [-1, 1], each of shape (200, 1) float32."""
    return make_function_dataset("sinc", n_samples=200, random_state=0)


@pytest.fixture(scope="session")
def write_tiny_cifar10():
    """A function that writes a tiny CIFAR-10 (see :func:`_write_tiny_cifar10`)."""
    return _write_tiny_cifar10


def _write_tiny_cifar10(home, n_per_batch=6, n_test=10, seed=0):
    """Write a CIFAR-10 of random images in torchvision's on-disk layout under ``home``.

    Five training batches of ``n_per_batch`` images and a test batch of
    ``n_test`` (labels cycle through the ten classes); no md5 matches, of
    course.  Returns the batches as written.
    """
    folder = Path(home) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(n, first_label):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [(first_label + i) % 10 for i in range(n)]
        return {"batch_label": "tiny", "data": data, "labels": labels, "filenames": [""] * n}

    batches = {f"data_batch_{i}": batch(n_per_batch, first_label=n_per_batch * (i - 1))
               for i in range(1, 6)}
    batches["test_batch"] = batch(n_test, first_label=3)
    batches["batches.meta"] = {"label_names": [f"class{i}" for i in range(10)],
                               "num_cases_per_batch": n_per_batch, "num_vis": 3072}
    for name, content in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(content, f, protocol=2)
    return batches


@pytest.fixture(scope="session", autouse=True)
def private_config_dir(tmp_path_factory):
    """Keep the cache-signing secret of the suite out of the user's ``~/.config/hw1sk``.

    Set in ``os.environ`` so that the CLI's subprocesses and the sweep workers see it too.
    """
    previous = os.environ.get("HW1SK_CONFIG_DIR")
    os.environ["HW1SK_CONFIG_DIR"] = str(tmp_path_factory.mktemp("hw1sk_config"))
    yield
    if previous is None:
        os.environ.pop("HW1SK_CONFIG_DIR", None)
    else:
        os.environ["HW1SK_CONFIG_DIR"] = previous


class RecordTraining(Callback):
    """A skorch callback that records the settings a run actually trained with.

    Used by the tests that check a study trains with exactly the given estimator's
    settings (optimizer and its arguments, lr, epochs, batch size, module).
    """

    def on_train_begin(self, net, **kwargs):
        group = net.optimizer_.param_groups[0]
        self.seen_ = {
            "optimizer": type(net.optimizer_).__name__,
            "lr": group["lr"],
            "weight_decay": group.get("weight_decay"),
            "momentum": group.get("momentum"),
            "max_epochs": net.max_epochs,
            "batch_size": net.batch_size,
            "module": type(net.module_).__name__,
        }
        self.epochs_ = 0

    def on_epoch_end(self, net, **kwargs):
        self.epochs_ += 1


@pytest.fixture
def record_training():
    """A fresh :class:`RecordTraining` callback."""
    return RecordTraining()
