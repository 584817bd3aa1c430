"""Tests of hw1sk.datasets: image loaders, function data sets, label corruption."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hw1sk.datasets import (
    DATA_HOME_ENV,
    FUNCTIONS,
    DataNotFoundError,
    add_label_noise,
    get_data_home,
    load_cifar10,
    load_mnist,
    make_function_dataset,
    random_labels,
    target_function,
)

# ---------------------------------------------------------------------------
# fixtures


@pytest.fixture
def no_network(monkeypatch):
    """Refuse every connection and name lookup; returns the list of attempts."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture(scope="module")
def tiny_cifar_home(tmp_path_factory, write_tiny_cifar10):
    """A 6-per-batch CIFAR-10 in torchvision's on-disk layout (no md5 match, of course)."""
    home = tmp_path_factory.mktemp("cifar_home")
    batches = write_tiny_cifar10(home, n_per_batch=6, n_test=10)
    return str(home), batches


# ---------------------------------------------------------------------------
# data home


def test_get_data_home_argument_creates_folder(tmp_path):
    target = tmp_path / "a" / "b"
    assert get_data_home(target) == str(target)
    assert target.is_dir()


def test_get_data_home_env_and_default(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path / "from_env"))
    assert get_data_home() == str(tmp_path / "from_env")
    assert (tmp_path / "from_env").is_dir()
    monkeypatch.delenv(DATA_HOME_ENV)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_data_home() == str(tmp_path / "hw1sk_data")
    assert get_data_home("~/other") == str(tmp_path / "other")


# ---------------------------------------------------------------------------
# MNIST


def _raw_idx(path, offset, count, item_size):
    """Independent read of ``count`` items of an IDX file, straight from the bytes."""
    with open(path, "rb") as f:
        f.seek(offset)
        return np.frombuffer(f.read(count * item_size), dtype=np.uint8).reshape(count, -1)


def test_load_mnist_full_train(mnist_data_home):
    X, y = load_mnist(mnist_data_home, download=False)
    assert X.shape == (60000, 1, 28, 28) and X.dtype == np.float32
    assert y.shape == (60000,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 60000 and len(counts) == 10 and counts.min() > 5000
    raw = os.path.join(mnist_data_home, "MNIST", "raw")
    first = _raw_idx(os.path.join(raw, "train-images-idx3-ubyte"), 16, 3, 784)
    np.testing.assert_array_equal(X[:3].reshape(3, -1), first.astype(np.float32) / 255)
    last_labels = _raw_idx(os.path.join(raw, "train-labels-idx1-ubyte"), 8 + 59990, 10, 1)
    np.testing.assert_array_equal(y[-10:], last_labels.ravel())


def test_load_mnist_test_split_matches_torchvision(mnist_data_home):
    from torchvision.datasets import MNIST

    X, y = load_mnist(mnist_data_home, train=False, download=False)
    reference = MNIST(mnist_data_home, train=False, download=False)
    assert X.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(X[:, 0], reference.data.numpy().astype(np.float32) / 255)
    np.testing.assert_array_equal(y, reference.targets.numpy())
    assert set(np.unique(y)) == set(range(10))


def test_load_mnist_flatten(mnist_data_home):
    X4, y4 = load_mnist(mnist_data_home, train=False, n_samples=50, random_state=3)
    X2, y2 = load_mnist(mnist_data_home, train=False, n_samples=50, random_state=3,
                        flatten=True)
    assert X2.shape == (50, 784)
    np.testing.assert_array_equal(X2, X4.reshape(50, -1))
    np.testing.assert_array_equal(y2, y4)


@pytest.mark.parametrize("stratify", [True, False])
def test_load_mnist_subset_reproducible_and_real_rows(mnist_data_home, stratify):
    X_full, y_full = load_mnist(mnist_data_home, train=False, flatten=True)
    kwargs = dict(train=False, n_samples=300, flatten=True, stratify=stratify)
    X_a, y_a = load_mnist(mnist_data_home, random_state=7, **kwargs)
    X_b, y_b = load_mnist(mnist_data_home, random_state=7, **kwargs)
    X_c, _ = load_mnist(mnist_data_home, random_state=8, **kwargs)
    np.testing.assert_array_equal(X_a, X_b)
    np.testing.assert_array_equal(y_a, y_b)
    assert not np.array_equal(X_a, X_c)
    # every drawn row is a row of the full split, with its own label, and none twice
    rows = {X_full[i].tobytes(): y_full[i] for i in range(len(X_full))}
    drawn = [X_a[i].tobytes() for i in range(len(X_a))]
    assert len(set(drawn)) == 300
    assert [rows[key] for key in drawn] == y_a.tolist()


def test_load_mnist_stratified_shares(mnist_data_home):
    _, y_full = load_mnist(mnist_data_home, train=False)
    share = np.bincount(y_full, minlength=10) / len(y_full)
    for n in (10, 137, 1000):
        _, y = load_mnist(mnist_data_home, train=False, n_samples=n, random_state=0)
        counts = np.bincount(y, minlength=10)
        assert counts.sum() == n
        assert np.all(np.abs(counts - n * share) < 1)  # largest remainders: off by < 1


def test_load_mnist_all_samples_is_file_order(mnist_data_home):
    X, y = load_mnist(mnist_data_home, train=False, flatten=True)
    X_n, y_n = load_mnist(mnist_data_home, train=False, flatten=True, n_samples=10000,
                          random_state=0)
    np.testing.assert_array_equal(X_n, X)
    np.testing.assert_array_equal(y_n, y)


def test_load_mnist_returns_fresh_arrays(mnist_data_home):
    X, y = load_mnist(mnist_data_home, train=False, n_samples=20, random_state=0)
    X[:] = 5.0
    y[:] = -1
    X2, y2 = load_mnist(mnist_data_home, train=False, n_samples=20, random_state=0)
    assert X2.max() <= 1.0 and y2.min() >= 0


@pytest.mark.parametrize("n_samples", [0, 10001, 2.5, True, "10"])
def test_load_mnist_bad_n_samples(mnist_data_home, n_samples):
    with pytest.raises(ValueError, match="n_samples"):
        load_mnist(mnist_data_home, train=False, n_samples=n_samples)


def test_load_mnist_env_var(mnist_data_home, monkeypatch):
    monkeypatch.setenv(DATA_HOME_ENV, mnist_data_home)
    X, y = load_mnist(train=False, n_samples=10, random_state=0, download=False)
    X_ref, y_ref = load_mnist(mnist_data_home, train=False, n_samples=10, random_state=0)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, y_ref)


def test_load_mnist_missing_no_download(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_HOME_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(download=False)
    assert isinstance(info.value, DataNotFoundError)
    message = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert DATA_HOME_ENV in message and "train-images-idx3-ubyte" in message


def test_load_mnist_missing_download_fails_offline(tmp_path, no_network):
    with pytest.raises(DataNotFoundError, match="downloading them failed") as info:
        load_mnist(tmp_path, download=True)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)
    assert no_network, "the download should have been attempted (and refused)"


def test_load_mnist_present_files_never_touch_network(mnist_data_home, no_network):
    X, _ = load_mnist(mnist_data_home, train=False, n_samples=5, random_state=0,
                      download=True)
    assert X.shape == (5, 1, 28, 28)
    assert no_network == []


def _write_idx(path, array):
    """Write ``array`` (uint8) as an uncompressed IDX file, the MNIST format."""
    array = np.asarray(array, dtype=np.uint8)
    header = b"\x00\x00\x08" + bytes([array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.tobytes())


def _write_tiny_mnist(home, test_labels=(1, 2, 3)):
    """Four tiny IDX files in ``home/MNIST/raw``: 4 training images, one per test label."""
    raw = home / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 256, (4, 28, 28)))
    _write_idx(raw / "train-labels-idx1-ubyte", [0, 1, 2, 3])
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 256, (len(test_labels), 28, 28)))
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_labels)
    return raw


def test_load_mnist_tiny_idx_files(tmp_path):
    _write_tiny_mnist(tmp_path, test_labels=(0, 9, 5))
    X, y = load_mnist(tmp_path, train=False, download=False)
    assert X.shape == (3, 1, 28, 28)
    np.testing.assert_array_equal(y, [0, 9, 5])


def test_load_mnist_labels_outside_0_9_name_the_file(tmp_path):
    raw = _write_tiny_mnist(tmp_path, test_labels=(1, 12, 255))
    with pytest.raises(ValueError, match="labels outside 0-9") as info:
        load_mnist(tmp_path, train=False, download=False)
    message = str(info.value)
    assert str(raw / "t10k-labels-idx1-ubyte") in message and "[12, 255]" in message
    # the training split of the same folder is fine
    assert load_mnist(tmp_path, train=True, download=False)[1].tolist() == [0, 1, 2, 3]


def test_load_mnist_labels_not_1d_name_the_file(tmp_path):
    raw = _write_tiny_mnist(tmp_path)
    _write_idx(raw / "t10k-labels-idx1-ubyte", [[1, 2, 3]])
    with pytest.raises(ValueError, match="1-D array of labels") as info:
        load_mnist(tmp_path, train=False, download=False)
    assert "t10k-labels-idx1-ubyte" in str(info.value)


@pytest.mark.parametrize("loader", [load_mnist, load_cifar10])
def test_data_home_that_is_a_file_is_a_clear_error(tmp_path, loader):
    home = tmp_path / "home"
    home.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder") as info:
        loader(home, download=True)
    assert str(home) in str(info.value)
    assert home.read_text() == "not a folder"


@pytest.mark.parametrize("loader", [load_mnist, load_cifar10])
def test_failed_download_leaves_no_folders_behind(tmp_path, no_network, loader):
    missing = tmp_path / "missing" / "home"
    with pytest.raises(DataNotFoundError, match="downloading them failed"):
        loader(missing, download=True)
    assert not (tmp_path / "missing").exists()
    # an existing data home is kept as it was, without the data set's folder
    with pytest.raises(DataNotFoundError):
        loader(tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DataNotFoundError, match="download=False"):
        loader(missing, download=False)
    assert not (tmp_path / "missing").exists()
    assert no_network


# ---------------------------------------------------------------------------
# CIFAR-10 (tiny data set in torchvision's layout)


def test_load_cifar10_tiny(tiny_cifar_home):
    home, batches = tiny_cifar_home
    X, y = load_cifar10(home, download=False)
    assert X.shape == (30, 3, 32, 32) and X.dtype == np.float32 and y.dtype == np.int64
    raw = np.vstack([batches[f"data_batch_{i}"]["data"] for i in range(1, 6)])
    np.testing.assert_array_equal(X.reshape(30, -1), raw.astype(np.float32) / 255)
    np.testing.assert_array_equal(y, np.arange(30) % 10)
    X_flat, _ = load_cifar10(home, flatten=True, download=False)
    assert X_flat.shape == (30, 3072)
    np.testing.assert_array_equal(X_flat, X.reshape(30, -1))
    X_test, y_test = load_cifar10(home, train=False, download=False)
    assert X_test.shape == (10, 3, 32, 32)
    np.testing.assert_array_equal(y_test, (3 + np.arange(10)) % 10)
    assert 0.0 <= X.min() and X.max() <= 1.0


def test_load_cifar10_matches_torchvision_layout(tiny_cifar_home, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    home, _ = tiny_cifar_home
    # the tiny files cannot match the md5 sums of the real ones: skip that check only
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    reference = tv_cifar.CIFAR10(home, train=True, download=False)
    X, y = load_cifar10(home, download=False)
    # torchvision stores HWC bytes; ours is CHW in [0, 1]
    np.testing.assert_array_equal(X, reference.data.transpose(0, 3, 1, 2) / np.float32(255))
    np.testing.assert_array_equal(y, reference.targets)


def test_load_cifar10_subset(tiny_cifar_home):
    home, _ = tiny_cifar_home
    X, y = load_cifar10(home, n_samples=10, random_state=0, download=False)
    X2, y2 = load_cifar10(home, n_samples=10, random_state=0, download=False)
    np.testing.assert_array_equal(X, X2)
    assert sorted(y.tolist()) == list(range(10))  # 3 of each class; stratified: one each


def test_load_cifar10_missing(tmp_path, no_network):
    folder = str(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataNotFoundError, match="download=False") as info:
        load_cifar10(tmp_path, download=False)
    assert folder in str(info.value) and DATA_HOME_ENV in str(info.value)
    with pytest.raises(DataNotFoundError, match="downloading them failed") as info:
        load_cifar10(tmp_path, download=True)
    assert folder in str(info.value)
    assert no_network


# ---------------------------------------------------------------------------
# function data sets


def test_function_values_known_points():
    x = np.array([0.0, 0.1, -0.1, 0.2, 0.3])
    np.testing.assert_allclose(FUNCTIONS["sinc"](x),
                               [1.0, 2 / np.pi, 2 / np.pi, 0.0, -2 / (3 * np.pi)], atol=1e-15)
    np.testing.assert_allclose(FUNCTIONS["sin"](x), [0.0, 1.0, -1.0, 0.0, -1.0], atol=1e-15)
    np.testing.assert_array_equal(FUNCTIONS["sign"](np.array([0.05, -0.05, 0.25, 0.0])),
                                  [1.0, -1.0, -1.0, 0.0])


def test_make_function_dataset_sinc_at_zero_and_grid():
    X, y = make_function_dataset("sinc", n_samples=201, grid=True)
    np.testing.assert_array_equal(X.ravel(), np.linspace(-1, 1, 201).astype(np.float32))
    assert X[100, 0] == 0.0 and y[100, 0] == 1.0
    assert X[0, 0] == -1.0 and X[-1, 0] == 1.0


def test_make_function_dataset_noise_statistics():
    X, y = make_function_dataset("sin", n_samples=20000, noise=0.3, random_state=0)
    residual = y[:, 0].astype(np.float64) - FUNCTIONS["sin"](X[:, 0].astype(np.float64))
    # mean and std of 20000 N(0, 0.3^2) draws: standard errors 0.0021 and 0.0015
    assert abs(residual.mean()) < 0.01
    assert abs(residual.std() - 0.3) < 0.01
    # x uniform on [-1, 1]: mean 0 (se 0.004), variance 1/3
    assert abs(X.mean()) < 0.02 and abs(X.var() - 1 / 3) < 0.02


def test_make_function_dataset_callable():
    X, y = make_function_dataset(lambda x: x ** 2, n_samples=50, domain=(0, 3), random_state=1)
    np.testing.assert_array_equal(y, (X.astype(np.float64) ** 2).astype(np.float32))
    assert target_function(np.cos) is np.cos
    assert target_function("sign") is FUNCTIONS["sign"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="sincc"), "Unknown function"),
    (dict(name=3), "Unknown function"),
    (dict(n_samples=0), "n_samples"),
    (dict(n_samples=2.0), "n_samples"),
    (dict(domain=(1.0, 1.0)), "domain"),
    (dict(domain=(0.0, np.inf)), "domain"),
    (dict(domain="ab"), "domain"),
    (dict(domain=(0, 1, 2)), "domain"),
    (dict(noise=-0.1), "noise"),
    (dict(noise=np.nan), "noise"),
    (dict(name=lambda x: x[:-1]), "must return"),
    (dict(name=lambda x: np.full_like(x, np.nan)), "non-finite"),
])
def test_make_function_dataset_invalid(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_function_dataset(**{"n_samples": 10, **kwargs})


@given(
    name=st.sampled_from(sorted(FUNCTIONS)),
    n_samples=st.integers(1, 300),
    low=st.floats(-10, 10),
    width=st.floats(1e-3, 20),
    seed=st.integers(0, 2**32 - 1),
    grid=st.booleans(),
)
def test_make_function_dataset_properties(name, n_samples, low, width, seed, grid):
    domain = (low, low + width)
    X, y = make_function_dataset(name, n_samples, domain=domain, random_state=seed, grid=grid)
    assert X.shape == y.shape == (n_samples, 1)
    assert X.dtype == y.dtype == np.float32
    # the domain holds up to the float32 rounding of its ends
    assert np.float32(domain[0]) <= X.min() and X.max() <= np.float32(domain[1])
    # noise=0: exactly f at the returned points, rounded to float32
    np.testing.assert_array_equal(
        y[:, 0], FUNCTIONS[name](X[:, 0].astype(np.float64)).astype(np.float32))
    X2, y2 = make_function_dataset(name, n_samples, domain=domain, random_state=seed,
                                   grid=grid)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)


@given(seed=st.integers(0, 2**32 - 1), noise=st.floats(1e-3, 2.0))
def test_make_function_dataset_noise_seeded(seed, noise):
    X1, y1 = make_function_dataset("sinc", 30, noise=noise, random_state=seed)
    X2, y2 = make_function_dataset("sinc", 30, noise=noise, random_state=seed)
    np.testing.assert_array_equal(y1, y2)
    X0, y0 = make_function_dataset("sinc", 30, noise=0.0, random_state=seed)
    # the noise is drawn after x, so the points do not depend on it
    np.testing.assert_array_equal(X1, X0)
    assert not np.array_equal(y1, y0)


# ---------------------------------------------------------------------------
# random labels and label noise


def test_random_labels_shuffle():
    y = np.repeat(np.arange(10), [5, 15, 25, 35, 45, 55, 65, 75, 85, 95])
    y_a = random_labels(y, random_state=0)
    np.testing.assert_array_equal(y_a, random_labels(y, random_state=0))
    np.testing.assert_array_equal(np.bincount(y_a), np.bincount(y))
    assert y_a.dtype == y.dtype
    assert (y_a != y).mean() > 0.5  # a shuffle moves most labels of a sorted vector
    assert not np.array_equal(y_a, random_labels(y, random_state=1))


def test_random_labels_uniform():
    y = np.zeros(50000, dtype=np.int64)
    y_u = random_labels(y, n_classes=10, random_state=0, method="uniform")
    np.testing.assert_array_equal(y_u, random_labels(y, n_classes=10, random_state=0,
                                                     method="uniform"))
    counts = np.bincount(y_u, minlength=10)
    assert len(counts) == 10
    # each count is Binomial(50000, 0.1): standard deviation 67
    assert np.all(np.abs(counts - 5000) < 5 * 67)
    # without n_classes, the classes are 0 .. max(y)
    assert set(random_labels(np.array([0, 3] * 200), random_state=0, method="uniform")) \
        == {0, 1, 2, 3}


@pytest.mark.parametrize("y, kwargs, match", [
    ([0, 1, -1], {}, ">= 0"),
    ([0.0, 1.0], {}, "integer"),
    ([], {}, "at least one"),
    ([0, 1, 2], dict(n_classes=2), "n_classes"),
    ([0, 1, 2], dict(n_classes=3.0), "n_classes"),
    ([0, 1, 2], dict(method="permute"), "method"),
])
def test_random_labels_invalid(y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        random_labels(np.asarray(y), **kwargs)


@given(
    n=st.integers(1, 400),
    fraction=st.floats(0.0, 1.0),
    n_classes=st.integers(2, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_add_label_noise_exact_fraction(n, fraction, n_classes, seed):
    y = np.random.default_rng(seed).integers(0, n_classes, size=n)
    y_before = y.copy()
    y_noisy = add_label_noise(y, fraction, n_classes=n_classes, random_state=seed)
    np.testing.assert_array_equal(y, y_before)  # input untouched
    changed = y_noisy != y
    assert changed.sum() == round(fraction * n)
    assert y_noisy.min() >= 0 and y_noisy.max() < n_classes
    np.testing.assert_array_equal(
        y_noisy, add_label_noise(y, fraction, n_classes=n_classes, random_state=seed))


def test_add_label_noise_other_classes_uniform():
    y = np.zeros(40000, dtype=np.int64)
    y_noisy = add_label_noise(y, 1.0, n_classes=5, random_state=0)
    counts = np.bincount(y_noisy, minlength=5)
    assert counts[0] == 0
    # each other class is Binomial(40000, 1/4): standard deviation 87
    assert np.all(np.abs(counts[1:] - 10000) < 5 * 87)
    np.testing.assert_array_equal(add_label_noise(y, 0.0, random_state=0), y)


@pytest.mark.parametrize("fraction", [-0.1, 1.1, np.nan, True, "0.5"])
def test_add_label_noise_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        add_label_noise(np.array([0, 1, 2]), fraction)


def test_add_label_noise_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        add_label_noise(np.zeros(10, dtype=int), 0.5)
    # nothing to corrupt: a single class is fine
    np.testing.assert_array_equal(add_label_noise(np.zeros(10, dtype=int), 0.0), np.zeros(10))
