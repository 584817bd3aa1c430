"""Data sets of the homework: MNIST, CIFAR-10, 1-D function regression, label corruption.

The image loaders return plain numpy arrays, ``X`` as float32 in ``[0, 1]`` and
``y`` as int64, ready for the estimators.  Files live under a data home chosen
like scikit-learn's (:func:`get_data_home`): the ``data_home`` argument, else
the ``HW1SK_DATA`` environment variable, else ``~/hw1sk_data``.  The on-disk
layout is torchvision's (``<data_home>/MNIST/raw``,
``<data_home>/cifar-10-batches-py``) and torchvision downloads missing files;
reading is done here with numpy, which keeps a load free of network access and
of the torchvision import once the files are present.
"""

from __future__ import annotations

import functools
import os
import pickle
import shutil
from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import column_or_1d

__all__ = [
    "DataNotFoundError",
    "FUNCTIONS",
    "get_data_home",
    "load_mnist",
    "load_cifar10",
    "make_function_dataset",
    "target_function",
    "random_labels",
    "add_label_noise",
]

#: Environment variable naming the default data home.
DATA_HOME_ENV = "HW1SK_DATA"

#: The four uncompressed IDX files that ``<data_home>/MNIST/raw`` must hold.
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

#: The pickled batches of ``<data_home>/cifar-10-batches-py``.
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILES = ("test_batch",)


class DataNotFoundError(FileNotFoundError):
    """A data set is not on disk and could not (or may not) be downloaded."""


def get_data_home(data_home=None, create=True) -> str:
    """The folder that holds the data sets; created if missing (unless ``create=False``).

    Parameters
    ----------
    data_home : str or path-like, default=None
        The folder.  ``None`` takes the ``HW1SK_DATA`` environment variable,
        else ``~/hw1sk_data``.  ``~`` is expanded.
    create : bool, default=True
        Create the folder when it is missing; ``False`` only names it (for
        messages and checks that must leave nothing behind).

    Returns
    -------
    data_home : str

    Examples
    --------
    >>> import tempfile
    >>> from hw1sk.datasets import get_data_home
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     get_data_home(tmp) == tmp
    True
    """
    data_home = _resolve_data_home(data_home)
    if create:
        os.makedirs(data_home, exist_ok=True)
    return data_home


def _resolve_data_home(data_home=None) -> str:
    """The data home :func:`get_data_home` names, without creating it."""
    if data_home is None:
        data_home = os.environ.get(DATA_HOME_ENV) or os.path.join("~", "hw1sk_data")
    return os.path.expanduser(os.fspath(data_home))


def _check_data_home(root):
    """Raise :class:`NotADirectoryError` when ``root`` exists but is not a folder."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise NotADirectoryError(f"the data home {root} is a file, not a folder")


def _first_missing_folder(folder):
    """The outermost of ``folder`` and its parents that does not exist yet (None if it does)."""
    missing = None
    folder = os.path.abspath(folder)
    while not os.path.exists(folder):
        missing = folder
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _download(dataset_class, root, train, folder):
    """Download a torchvision data set into ``root``; on failure, remove the folders it made.

    Only folders that did not exist before the call are removed, so a failed
    download leaves the disk as it found it.
    """
    created = _first_missing_folder(folder)
    try:
        dataset_class(root=root, train=train, download=True)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _missing(folder, names):
    return [name for name in names if not os.path.isfile(os.path.join(folder, name))]


def _stamp(folder, names):
    """(name, mtime, size) of each file: the cache key changes when a file does."""
    stats = [os.stat(os.path.join(folder, name)) for name in names]
    return tuple((name, s.st_mtime_ns, s.st_size) for name, s in zip(names, stats))


def _not_found(dataset, folder, names, subfolder, download, error=None):
    why = f"downloading them failed ({error})" if download else "download=False"
    return DataNotFoundError(
        f"{dataset} not found: the folder {folder} must hold the files {list(names)}, "
        f"and {why}. Put the files there, or point data_home (or the "
        f"{DATA_HOME_ENV} environment variable) at a folder that holds {subfolder}."
    )


def _read_idx(path) -> np.ndarray:
    """Read an uncompressed IDX file of unsigned bytes (the MNIST format)."""
    with open(path, "rb") as f:
        header = f.read(4)
        if len(header) < 4 or header[:3] != b"\x00\x00\x08":
            raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
        ndim = header[3]
        shape = tuple(int.from_bytes(f.read(4), "big") for _ in range(ndim))
        data = np.fromfile(f, dtype=np.uint8)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: {data.size} bytes for shape {shape}.")
    return data.reshape(shape)


def _read_mnist_labels(path) -> np.ndarray:
    """The labels of an MNIST IDX file as int64, checked to be digits 0-9."""
    labels = _read_idx(path)
    if labels.ndim != 1:
        raise ValueError(f"{path} must hold a 1-D array of labels, got shape {labels.shape}.")
    bad = np.unique(labels[labels > 9])
    if bad.size:
        raise ValueError(f"{path} holds labels outside 0-9: {bad[:10].tolist()} "
                         f"({int(np.isin(labels, bad).sum())} of {labels.size}); "
                         "it is not an MNIST label file.")
    return labels.astype(np.int64)


@functools.lru_cache(maxsize=4)
def _read_mnist(raw_folder, train, stamp):
    """Images (n, 28, 28) uint8 and labels (n,) int64, read-only (cached)."""
    prefix = "train" if train else "t10k"
    images = _read_idx(os.path.join(raw_folder, f"{prefix}-images-idx3-ubyte"))
    labels = _read_mnist_labels(os.path.join(raw_folder, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3:
        raise ValueError(f"{raw_folder}: the {prefix} images must be a 3-D IDX array "
                         f"(n, rows, columns), got shape {images.shape}.")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{raw_folder}: {images.shape[0]} images but {labels.shape[0]} labels.")
    # the cache hands the same arrays to every caller: guard them against edits
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


@functools.lru_cache(maxsize=4)
def _read_cifar10(folder, train, stamp):
    """Images (n, 3, 32, 32) uint8 and labels (n,) int64, read-only (cached)."""
    data, labels = [], []
    for name in CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES:
        # the pickles of the original Python 2 release need latin1, as in torchvision
        with open(os.path.join(folder, name), "rb") as f:
            entry = pickle.load(f, encoding="latin1")
        data.append(np.asarray(entry["data"], dtype=np.uint8))
        labels.extend(entry["labels"])
    images = np.vstack(data).reshape(-1, 3, 32, 32)
    labels = np.asarray(labels, dtype=np.int64)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _subset_indices(y, n_samples, random_state, stratify):
    """Sorted indices of a random subset of ``n_samples`` rows (all rows if None)."""
    n = len(y)
    if n_samples is None:
        return None
    if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) \
            or not 1 <= n_samples <= n:
        raise ValueError(f"n_samples must be an integer in [1, {n}], got {n_samples!r}.")
    rng = check_random_state(random_state)
    if not stratify:
        return np.sort(rng.choice(n, size=int(n_samples), replace=False))
    classes, y_idx = np.unique(y, return_inverse=True)
    counts = np.bincount(y_idx, minlength=len(classes))
    # largest-remainder apportionment: per-class quotas summing to n_samples exactly
    exact = counts * (n_samples / n)
    quota = np.floor(exact).astype(np.int64)
    left = int(n_samples - quota.sum())
    if left:
        # random tie-break among equal remainders, then largest remainders first
        order = np.lexsort((rng.permutation(len(classes)), -(exact - quota)))
        quota[order[:left]] += 1
    chosen = [rng.choice(np.flatnonzero(y_idx == k), size=q, replace=False)
              for k, q in enumerate(quota) if q]
    return np.sort(np.concatenate(chosen))


def _finish_images(images, labels, n_samples, flatten, random_state, stratify):
    idx = _subset_indices(labels, n_samples, random_state, stratify)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    X = images.astype(np.float32)
    X /= 255  # division, not multiplication by 1/255: exactly the rounded byte / 255
    if flatten:
        X = X.reshape(len(X), -1)
    return X, labels.copy()


def load_mnist(data_home=None, *, train=True, n_samples=None, flatten=False,
               random_state=None, stratify=True, download=True):
    """Load MNIST as numpy arrays, downloading it on first use.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder that holds ``MNIST/raw``; see :func:`get_data_home`.
    train : bool, default=True
        The 60,000 training images, else the 10,000 test images.
    n_samples : int, default=None
        Draw this many images at random (without replacement); ``None`` takes
        all of them in file order.  The subset is returned in file order.
    flatten : bool, default=False
        Return ``X`` of shape ``(n, 784)`` instead of ``(n, 1, 28, 28)``.
    random_state : int, RandomState instance or None, default=None
        Seeds the subset draw; the same value gives the same subset.
    stratify : bool, default=True
        Draw the subset class by class, so each digit keeps its share of the
        split (up to rounding, largest remainders first); ``False`` draws the
        rows uniformly at random.
    download : bool, default=True
        Download the files (with torchvision) when they are missing.

    Returns
    -------
    X : ndarray of float32, shape (n, 1, 28, 28) or (n, 784)
        Pixel intensities ``byte / 255`` in ``[0, 1]``.
    y : ndarray of int64, shape (n,)
        Digits 0-9.

    Raises
    ------
    DataNotFoundError
        A :class:`FileNotFoundError` when the four files are not in
        ``<data_home>/MNIST/raw`` and ``download=False`` or the download failed
        (e.g. offline).  A failed download removes the folders it created, so
        a missing data home stays missing.
    NotADirectoryError
        When ``data_home`` is a file.
    ValueError
        When a file is not an MNIST IDX file: wrong header, truncated, or
        labels outside 0-9 (the message names the file).

    Notes
    -----
    The files are read once per process and kept (uint8, read-only) in a small
    cache keyed by folder, split and file modification times; each call returns
    fresh arrays that the caller may modify.

    Examples
    --------
    >>> from hw1sk.datasets import load_mnist
    >>> X, y = load_mnist(train=False, n_samples=100, flatten=True, random_state=0)
    ... # doctest: +SKIP
    >>> X.shape, X.dtype, y.dtype  # doctest: +SKIP
    ((100, 784), dtype('float32'), dtype('int64'))
    """
    root = _resolve_data_home(data_home)
    _check_data_home(root)
    raw = os.path.join(root, "MNIST", "raw")
    if _missing(raw, MNIST_FILES):
        if not download:
            raise _not_found("MNIST", raw, MNIST_FILES, "MNIST/raw", download=False)
        try:
            from torchvision.datasets import MNIST

            _download(MNIST, root, train, raw)
        except (RuntimeError, OSError) as error:  # torchvision wraps URL errors in RuntimeError
            raise _not_found("MNIST", raw, MNIST_FILES, "MNIST/raw", True, error) from error
        if _missing(raw, MNIST_FILES):
            raise _not_found("MNIST", raw, MNIST_FILES, "MNIST/raw", True, "files still missing")
    images, labels = _read_mnist(os.path.realpath(raw), bool(train), _stamp(raw, MNIST_FILES))
    return _finish_images(images[:, None], labels, n_samples, flatten, random_state, stratify)


def load_cifar10(data_home=None, *, train=True, n_samples=None, flatten=False,
                 random_state=None, stratify=True, download=True):
    """Load CIFAR-10 as numpy arrays, downloading it on first use.

    The batches are read as torchvision reads them (pickles in
    ``<data_home>/cifar-10-batches-py``) but without its md5 checks, so a
    smaller data set in the same layout loads too.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder that holds ``cifar-10-batches-py``; see :func:`get_data_home`.
    train : bool, default=True
        The five training batches (50,000 images), else the test batch (10,000).
    n_samples : int, default=None
        Draw this many images at random; see :func:`load_mnist`.
    flatten : bool, default=False
        Return ``X`` of shape ``(n, 3072)`` (channel-major, as ``X.reshape(n, -1)``
        of the 4-D array) instead of ``(n, 3, 32, 32)``.
    random_state : int, RandomState instance or None, default=None
        Seeds the subset draw.
    stratify : bool, default=True
        Keep each class's share in the subset; see :func:`load_mnist`.
    download : bool, default=True
        Download and extract the archive (with torchvision) when batches are missing.

    Returns
    -------
    X : ndarray of float32, shape (n, 3, 32, 32) or (n, 3072)
        Channels (R, G, B) of ``byte / 255`` in ``[0, 1]``.
    y : ndarray of int64, shape (n,)
        Classes 0-9 (airplane, automobile, ..., truck).

    Raises
    ------
    DataNotFoundError
        When the batches of the split are missing and ``download=False`` or
        the download failed (which removes the folders it created).
    NotADirectoryError
        When ``data_home`` is a file.
    """
    root = _resolve_data_home(data_home)
    _check_data_home(root)
    folder = os.path.join(root, "cifar-10-batches-py")
    names = CIFAR10_TRAIN_FILES if train else CIFAR10_TEST_FILES
    if _missing(folder, names):
        if not download:
            raise _not_found("CIFAR-10", folder, names, "cifar-10-batches-py", download=False)
        try:
            from torchvision.datasets import CIFAR10

            _download(CIFAR10, root, train, folder)
        except (RuntimeError, OSError) as error:  # URLError is an OSError
            raise _not_found("CIFAR-10", folder, names, "cifar-10-batches-py", True, error) from error
        if _missing(folder, names):
            raise _not_found("CIFAR-10", folder, names, "cifar-10-batches-py", True,
                             "files still missing")
    images, labels = _read_cifar10(os.path.realpath(folder), bool(train), _stamp(folder, names))
    return _finish_images(images, labels, n_samples, flatten, random_state, stratify)


# ---------------------------------------------------------------------------
# 1-D function regression


def _sinc(x):
    # numpy's sinc is sin(pi t) / (pi t) with the limit 1 at t = 0
    return np.sinc(5.0 * x)


def _sign(x):
    return np.sign(np.sin(5.0 * np.pi * x))


def _sin(x):
    return np.sin(5.0 * np.pi * x)


#: Ground-truth functions by name; each maps a float64 array elementwise.
#: ``sinc``: sin(5 pi x) / (5 pi x), 1 at x = 0; ``sign``: sign(sin(5 pi x)),
#: 0 where sin vanishes; ``sin``: sin(5 pi x).
FUNCTIONS = {"sinc": _sinc, "sign": _sign, "sin": _sin}


def target_function(name):
    """The ground-truth function ``f`` of a function data set, for plotting.

    Parameters
    ----------
    name : str or callable
        A key of :data:`FUNCTIONS`, or a vectorised ``f(x) -> y`` (returned as is).

    Returns
    -------
    f : callable
        Maps an array of ``x`` to an array of ``f(x)`` of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.datasets import target_function
    >>> f = target_function("sinc")
    >>> np.round(f(np.array([0.0, 0.1])), 4)  # sin(pi / 2) / (pi / 2) at x = 0.1
    array([1.    , 0.6366])
    """
    if callable(name):
        return name
    if not isinstance(name, str) or name not in FUNCTIONS:
        raise ValueError(
            f"Unknown function {name!r}; choose one of {sorted(FUNCTIONS)} or pass a callable."
        )
    return FUNCTIONS[name]


def _check_domain(domain):
    try:
        low, high = (float(v) for v in domain)
    except (TypeError, ValueError):
        raise ValueError(f"domain must be a pair (low, high) of numbers, got {domain!r}.")
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"domain must be finite with low < high, got {domain!r}.")
    return low, high


def make_function_dataset(name="sinc", n_samples=1000, domain=(-1.0, 1.0), noise=0.0,
                          random_state=None, grid=False):
    """Samples ``(x, f(x) + noise)`` of a 1-D function, for the deep-vs-shallow fits.

    Parameters
    ----------
    name : str or callable, default="sinc"
        ``"sinc"`` (sin(5 pi x) / (5 pi x), 1 at 0), ``"sign"``
        (sign(sin(5 pi x))), ``"sin"`` (sin(5 pi x)), or a vectorised callable
        mapping a float64 array of shape ``(n_samples,)`` to ``n_samples`` values.
    n_samples : int, default=1000
    domain : (float, float), default=(-1.0, 1.0)
        ``x`` lies in ``[low, high]`` (up to float32 rounding of the ends).
    noise : float, default=0.0
        Standard deviation of Gaussian noise added to ``y``.
    random_state : int, RandomState instance or None, default=None
        Seeds the draw of ``x`` and of the noise.
    grid : bool, default=False
        Evenly spaced ``x`` including both ends (for plots), instead of uniform draws.

    Returns
    -------
    X : ndarray of float32, shape (n_samples, 1)
    y : ndarray of float32, shape (n_samples, 1)
        ``f`` evaluated (in float64) at the float32 ``X``, plus noise: with
        ``noise=0`` exactly ``f(X)`` rounded to float32.

    Examples
    --------
    >>> from hw1sk.datasets import make_function_dataset
    >>> X, y = make_function_dataset("sinc", n_samples=3, grid=True)
    >>> X.shape, y.dtype, X.ravel().tolist(), float(y[1, 0])
    ((3, 1), dtype('float32'), [-1.0, 0.0, 1.0], 1.0)
    """
    f = target_function(name)
    if not isinstance(n_samples, Integral) or isinstance(n_samples, bool) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}.")
    low, high = _check_domain(domain)
    if not isinstance(noise, Real) or not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}.")
    rng = check_random_state(random_state)
    n = int(n_samples)
    x = np.linspace(low, high, n) if grid else rng.uniform(low, high, size=n)
    X = x.astype(np.float32).reshape(n, 1)
    # evaluate at the returned float32 points, so y is f(X) and not f of a nearby x
    y = np.asarray(f(X[:, 0].astype(np.float64)), dtype=np.float64)
    if y.shape not in ((n,), (n, 1)):
        raise ValueError(
            f"The function must return {n} values for {n} inputs, got shape {y.shape}."
        )
    y = y.reshape(n, 1)
    if not np.all(np.isfinite(y)):
        raise ValueError("The function returned non-finite values on the domain.")
    if noise > 0:
        y = y + noise * rng.standard_normal((n, 1))
    return X, y.astype(np.float32)


# ---------------------------------------------------------------------------
# label corruption for the generalization experiments


def _check_labels(y, n_classes):
    y = column_or_1d(y, warn=True)
    if y.size == 0:
        raise ValueError("y must hold at least one label.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}.")
    if y.min() < 0:
        raise ValueError(f"Class labels must be >= 0, got {y.min()}.")
    if n_classes is None:
        return y, int(y.max()) + 1
    if not isinstance(n_classes, Integral) or isinstance(n_classes, bool) \
            or n_classes <= y.max():
        raise ValueError(
            f"n_classes must be an integer greater than the largest label {y.max()}, "
            f"got {n_classes!r}."
        )
    return y, int(n_classes)


def random_labels(y, n_classes=None, random_state=None, method="shuffle"):
    """Labels with no relation to the inputs, for the random-label experiment.

    Parameters
    ----------
    y : array-like of int, shape (n_samples,)
        True labels in ``0 .. n_classes - 1``.
    n_classes : int, default=None
        Number of classes; ``None`` takes ``max(y) + 1``.
    random_state : int, RandomState instance or None, default=None
    method : {"shuffle", "uniform"}, default="shuffle"
        ``"shuffle"`` permutes ``y`` (the class histogram is kept exactly);
        ``"uniform"`` draws every label afresh, uniformly over the classes.

    Returns
    -------
    y_random : ndarray, shape (n_samples,)
        Same dtype as ``y``.

    Examples
    --------
    >>> from hw1sk.datasets import random_labels
    >>> import numpy as np
    >>> np.sort(random_labels([0, 1, 1, 2], random_state=0)).tolist()  # same histogram
    [0, 1, 1, 2]
    """
    y, n_classes = _check_labels(y, n_classes)
    rng = check_random_state(random_state)
    if method == "shuffle":
        return rng.permutation(y)
    if method == "uniform":
        return rng.randint(n_classes, size=y.shape[0]).astype(y.dtype)
    raise ValueError(f"method must be 'shuffle' or 'uniform', got {method!r}.")


def add_label_noise(y, fraction, n_classes=None, random_state=None):
    """Replace a fraction of the labels by a different class, drawn uniformly.

    Parameters
    ----------
    y : array-like of int, shape (n_samples,)
        True labels in ``0 .. n_classes - 1``.
    fraction : float in [0, 1]
        Share of labels to corrupt: exactly ``round(fraction * n_samples)``
        labels (round half to even) change, at positions drawn without replacement.
    n_classes : int, default=None
        Number of classes; ``None`` takes ``max(y) + 1``.  Must be at least 2
        when anything is corrupted.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    y_noisy : ndarray, shape (n_samples,)
        Same dtype as ``y``; ``y`` itself is not modified.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.datasets import add_label_noise
    >>> y = np.zeros(10, dtype=int)
    >>> int((add_label_noise(y, 0.3, n_classes=10, random_state=0) != y).sum())
    3
    """
    y, n_classes = _check_labels(y, n_classes)
    if isinstance(fraction, bool) or not isinstance(fraction, Real) \
            or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be a number in [0, 1], got {fraction!r}.")
    n_noisy = int(round(fraction * y.shape[0]))
    if n_noisy and n_classes < 2:
        raise ValueError(f"Label noise needs at least 2 classes, got n_classes={n_classes}.")
    rng = check_random_state(random_state)
    y_noisy = y.copy()
    where = rng.choice(y.shape[0], size=n_noisy, replace=False)
    # a shift in 1 .. n_classes - 1 modulo n_classes is uniform over the other classes
    shift = rng.randint(1, n_classes, size=n_noisy) if n_noisy else np.zeros(0, np.int64)
    y_noisy[where] = (y[where] + shift) % n_classes
    return y_noisy
