"""Torch modules and factories: MLP, CNN, row-RNN, and parameter-budget solvers.

Every module here maps a batch of inputs to raw outputs (logits for
classification, values for regression); the estimators add the loss.
"""

from __future__ import annotations

import copy
import math
from numbers import Integral

import numpy as np
import torch
from torch import nn

from .parameters import count_params

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "CNN",
    "RowRNN",
    "mlp_for_budget",
    "cnn_for_budget",
    "mlp_n_params",
    "count_params",
    "cnn_for_budget_flat",
    "make_module",
    "MODEL_ZOO",
    "parameter_matched_models",
    "holds_images",
    "n_weight_layers",
    "reinitialized_copy",
]

#: Activation names accepted by the zoo.
ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}


def _activation(activation) -> nn.Module:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}."
            )
        return ACTIVATIONS[activation]()
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    if isinstance(activation, nn.Module):
        return activation
    raise ValueError(f"activation must be a name or an nn.Module, got {activation!r}.")


def _check_positive_int(value, name):
    if not isinstance(value, Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


class MLP(nn.Module):
    """Fully connected network: ``n_in -> hidden[0] -> … -> hidden[-1] -> n_out``.

    Inputs of any shape ``(n, ...)`` are flattened to ``(n, n_in)`` first, so the
    same module takes tabular data and images.

    Parameters
    ----------
    n_in : int, default=1
        Number of input features (``28*28`` for MNIST).
    hidden : sequence of int, default=(5, 10, 5)
        Widths of the hidden layers; empty gives a linear model.
    n_out : int, default=1
        Number of outputs.
    activation : str or nn.Module class, default="relu"
        One of :data:`ACTIVATIONS`.

    Examples
    --------
    >>> from hw1sk.models import MLP, count_params
    >>> count_params(MLP(1, (190,), 1))
    571
    """

    def __init__(self, n_in=1, hidden=(5, 10, 5), n_out=1, activation="relu"):
        super().__init__()
        n_in = _check_positive_int(n_in, "n_in")
        n_out = _check_positive_int(n_out, "n_out")
        hidden = tuple(_check_positive_int(w, "hidden width") for w in hidden)
        self.n_in, self.hidden, self.n_out = n_in, hidden, n_out
        layers: list[nn.Module] = [nn.Flatten()]
        prev = n_in
        for width in hidden:
            layers += [nn.Linear(prev, width), _activation(activation)]
            prev = width
        layers.append(nn.Linear(prev, n_out))
        self.net = nn.Sequential(*layers)

    def forward(self, X):
        return self.net(X)


def mlp_n_params(n_in: int, hidden, n_out: int) -> int:
    """Parameter count of :class:`MLP` ``(n_in, hidden, n_out)`` without building it.

    Parameters
    ----------
    n_in : int
    hidden : sequence of int
    n_out : int

    Returns
    -------
    n_params : int
    """
    widths = [n_in, *hidden, n_out]
    return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:]))


def _budget_widths(n_params, depth, n_in, n_out, min_width=2):
    """Hidden widths for ``depth`` layers whose count is nearest ``n_params``.

    The widths are ``[a, b, ..., b, b + 1, ..., b + 1, c]``: the first and last
    hidden widths (a, c) are free and the ``depth - 2`` middle layers take
    width b, the last few of them b + 1 (a fine step in the count that a single
    shared middle width lacks).  The count is linear in c, so c is solved for;
    a, b and the number of b + 1 layers are searched (vectorised over a).
    Among the widths within 1% of the budget, the most uniform ones win.
    """
    if depth == 1:
        coef = n_in + 1 + n_out  # each hidden unit: weights from input, bias, weights to out
        w = round((n_params - n_out) / coef)
        if w < min_width:
            raise ValueError(
                f"No MLP of depth 1 with widths >= {min_width} fits a budget of "
                f"{n_params} parameters (n_in={n_in}, n_out={n_out}); the smallest "
                f"has {min_width * coef + n_out}."
            )
        return [w]

    n_middle = depth - 2
    # upper bound for a searched width: the budget spent on one layer alone
    a = np.arange(min_width, max(min_width + 1, int(n_params / (n_in + 1)) + 1) + 1)
    if n_middle == 0:
        middles = [[]]
    else:
        b_max = max(min_width + 1, int(math.sqrt(n_params / n_middle)) + 2)
        # all-b first, then more and more trailing b + 1 layers (n_middle >= 2 only)
        middles = [[b] * (n_middle - q) + [b + 1] * q
                   for b in range(min_width, b_max + 1)
                   for q in range(n_middle if n_middle >= 2 else 1)]
    found = []  # per middle: (diff, spread, a, c, middle index) of the feasible candidates
    for k, middle in enumerate(middles):
        if middle:
            inner = sum((w1 + 1) * w2 for w1, w2 in zip(middle[:-1], middle[1:]))
            # count with c = 0, minus the output bias term
            fixed = (n_in + 1) * a + (a + 1) * middle[0] + inner
            coef = np.full_like(a, middle[-1] + 1 + n_out)  # cost of one unit of c
            lo, hi = min(middle), max(middle)
        else:
            fixed = (n_in + 1) * a
            coef = a + 1 + n_out
            lo, hi = np.inf, 0
        c = np.round((n_params - fixed - n_out) / coef).astype(np.int64)
        ok = c >= min_width
        if not ok.any():
            continue
        a_ok, c_ok = a[ok], c[ok]
        diff = np.abs(fixed[ok] + c_ok * coef[ok] + n_out - n_params)
        spread = (np.maximum(np.maximum(a_ok, c_ok), hi)
                  / np.minimum(np.minimum(a_ok, c_ok), lo))
        found.append((diff, spread, a_ok, c_ok, np.full_like(a_ok, k)))
    if not found:
        raise ValueError(
            f"No MLP of depth {depth} with widths >= {min_width} fits a budget of "
            f"{n_params} parameters (n_in={n_in}, n_out={n_out})."
        )
    diff, spread, a_all, c_all, k_all = (np.concatenate(x) for x in zip(*found))
    tolerance = max(int(diff.min()), n_params // 100)  # diff <= 1% of the budget, exactly
    good = np.flatnonzero(diff <= tolerance)
    # nearest first (the exact count whenever a layout has it), then most uniform;
    # lexsort is stable, so ties keep the search order
    best = good[np.lexsort((spread[good], diff[good]))[0]]
    return [int(a_all[best]), *middles[k_all[best]], int(c_all[best])]


def mlp_for_budget(n_params=571, depth=1, n_in=1, n_out=1, activation="relu", min_width=2):
    """An :class:`MLP` of ``depth`` hidden layers with about ``n_params`` parameters.

    The widths are chosen so that the count is as near the budget as the
    layout allows (exactly the budget whenever a layout of the searched
    family has it, e.g. 571 at depths 1 to 8) and, among the nearest, as
    uniform as possible; no hidden layer is narrower than ``min_width`` (no
    width-1 bottleneck).  For ``depth >= 2`` the count is
    within 1% of the budget (checked for budgets 300..20000, depths 2..8 and
    ``n_in, n_out <= 10``).  With one hidden layer the count moves in steps of
    ``n_in + n_out + 1``, so it is the nearest reachable one, within 1% once
    ``n_params >= 50 * (n_in + n_out + 1)``.

    Parameters
    ----------
    n_params : int, default=571
        Parameter budget.
    depth : int, default=1
        Number of hidden layers.
    n_in, n_out : int, default=1
        Input and output sizes.
    activation : str, default="relu"
    min_width : int, default=2
        Narrowest hidden layer allowed.

    Returns
    -------
    model : MLP

    Raises
    ------
    ValueError
        If no network of that depth with widths ``>= min_width`` comes near
        the budget (the budget is too small).

    Examples
    --------
    >>> from hw1sk.models import mlp_for_budget, count_params
    >>> [count_params(mlp_for_budget(571, d)) for d in range(1, 9)]
    [571, 571, 571, 571, 571, 571, 571, 571]
    """
    n_params = _check_positive_int(n_params, "n_params")
    depth = _check_positive_int(depth, "depth")
    min_width = _check_positive_int(min_width, "min_width")
    if min_width < 2:
        raise ValueError("min_width must be at least 2 (no width-1 bottleneck).")
    n_in = _check_positive_int(n_in, "n_in")
    n_out = _check_positive_int(n_out, "n_out")
    widths = _budget_widths(n_params, depth, n_in, n_out, min_width)
    return MLP(n_in=n_in, hidden=tuple(widths), n_out=n_out, activation=activation)


class CNN(nn.Module):
    """Convolutional classifier whose depth and channel counts scale.

    Each block is ``Conv2d(kernel_size, padding='same') -> activation``,
    followed by a 2x2 max-pool while the feature map is at least 4 pixels
    wide.  A global average pool and a linear head follow (plus optional
    hidden dense layers).

    Parameters
    ----------
    in_channels : int, default=1
        1 for MNIST, 3 for CIFAR-10.
    image_size : int, default=28
        Height (= width) of the input images.
    channels : sequence of int, default=(16, 32)
        Output channels of each convolution; its length is the depth.
    n_out : int, default=10
    kernel_size : int, default=3
    hidden : sequence of int, default=()
        Widths of dense layers between the pooled features and the output.
    activation : str, default="relu"
    global_pool : bool, default=True
        Average-pool the last feature map to 1x1 (parameter count independent
        of image size); ``False`` flattens it instead.
    """

    def __init__(self, in_channels=1, image_size=28, channels=(16, 32), n_out=10,
                 kernel_size=3, hidden=(), activation="relu", global_pool=True):
        super().__init__()
        in_channels = _check_positive_int(in_channels, "in_channels")
        image_size = _check_positive_int(image_size, "image_size")
        channels = tuple(_check_positive_int(c, "channel count") for c in channels)
        kernel_size = _check_positive_int(kernel_size, "kernel_size")
        hidden = tuple(_check_positive_int(w, "hidden width") for w in hidden)
        if not channels:
            raise ValueError("channels must name at least one convolution.")
        self.in_channels, self.image_size = in_channels, image_size
        layers: list[nn.Module] = []
        prev, size = in_channels, image_size
        for c in channels:
            layers += [nn.Conv2d(prev, c, kernel_size, padding="same"), _activation(activation)]
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            prev = c
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = []
        if global_pool:
            head += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            n_feat = prev
        else:
            head += [nn.Flatten()]
            n_feat = prev * size * size
        for width in hidden:
            head += [nn.Linear(n_feat, width), _activation(activation)]
            n_feat = width
        head.append(nn.Linear(n_feat, _check_positive_int(n_out, "n_out")))
        self.head = nn.Sequential(*head)

    def forward(self, X):
        if X.ndim != 4:  # flattened (n, C*H*W) or grey (n, H, W) images; reshape copes with strides
            expected = self.in_channels * self.image_size ** 2
            if X[0].numel() != expected:
                raise ValueError(
                    f"CNN(in_channels={self.in_channels}, image_size={self.image_size}) takes "
                    f"images of {expected} values, got samples of shape {tuple(X.shape[1:])}. "
                    "Pass images shaped (n, C, H, W) (or flattened C*H*W with matching "
                    "module__in_channels / module__image_size), or use an MLP for data "
                    "that are not images.")
            X = X.reshape(X.shape[0], self.in_channels, self.image_size, self.image_size)
        return self.head(self.features(X))


def cnn_for_budget(n_params, depth, in_channels=1, image_size=28, n_out=10,
                   kernel_size=3, activation="relu"):
    """A :class:`CNN` of ``depth`` equal-width convolutions nearest ``n_params``.

    Parameters
    ----------
    n_params : int
        Parameter budget.
    depth : int
        Number of convolutions.
    in_channels, image_size, n_out, kernel_size, activation
        As in :class:`CNN`.

    Returns
    -------
    model : CNN
    """
    n_params = _check_positive_int(n_params, "n_params")
    depth = _check_positive_int(depth, "depth")
    in_channels = _check_positive_int(in_channels, "in_channels")
    n_out = _check_positive_int(n_out, "n_out")
    k2 = _check_positive_int(kernel_size, "kernel_size") ** 2

    def count(c):  # closed form of CNN(..., channels=(c,)*depth) with global pooling
        first = (in_channels * k2 + 1) * c
        rest = (depth - 1) * (c * k2 + 1) * c
        return first + rest + (c + 1) * n_out

    best = min(range(1, 4096), key=lambda c: abs(count(c) - n_params))
    return CNN(in_channels=in_channels, image_size=image_size, channels=(best,) * depth,
               n_out=n_out, kernel_size=kernel_size, activation=activation)


class RowRNN(nn.Module):
    """Recurrent classifier that reads an image one row per time step.

    Parameters
    ----------
    row_size : int, default=28
        Pixels per row (the input size of each step).
    n_rows : int, default=28
        Number of rows (time steps).
    hidden_size : int, default=64
    n_layers : int, default=1
    n_out : int, default=10
    cell : {"lstm", "gru", "rnn"}, default="lstm"
    in_channels : int, default=1
        Channels are concatenated along the row (``row_size * in_channels``
        features per step).
    """

    _CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

    def __init__(self, row_size=28, n_rows=28, hidden_size=64, n_layers=1, n_out=10,
                 cell="lstm", in_channels=1):
        super().__init__()
        if cell not in self._CELLS:
            raise ValueError(f"cell must be one of {sorted(self._CELLS)}, got {cell!r}.")
        self.row_size = _check_positive_int(row_size, "row_size")
        self.n_rows = _check_positive_int(n_rows, "n_rows")
        self.in_channels = _check_positive_int(in_channels, "in_channels")
        self.rnn = self._CELLS[cell](
            input_size=self.row_size * self.in_channels,
            hidden_size=_check_positive_int(hidden_size, "hidden_size"),
            num_layers=_check_positive_int(n_layers, "n_layers"),
            batch_first=True,
        )
        self.head = nn.Linear(hidden_size, _check_positive_int(n_out, "n_out"))

    def forward(self, X):
        n = X.shape[0]
        # any layout (flat, (n, H, W), (n, C, H, W)) -> (n, C, H, W) -> (n, H, C*W), so a
        # flattened multi-channel image gives the same steps as the 4-D one
        X = X.reshape(n, self.in_channels, self.n_rows, self.row_size)
        X = X.permute(0, 2, 1, 3).reshape(n, self.n_rows, self.in_channels * self.row_size)
        out, _ = self.rnn(X)
        return self.head(out[:, -1])


#: Zoo names accepted wherever a module is expected, as in ``NeuralClassifier(module="mlp")``.
MODEL_ZOO = {
    "mlp": MLP,
    "mlp_budget": mlp_for_budget,
    "cnn": CNN,
    "cnn_budget": cnn_for_budget,
    "rnn": RowRNN,
}


def make_module(name, **params) -> nn.Module:
    """Build a zoo module by name.

    Parameters
    ----------
    name : str
        A key of :data:`MODEL_ZOO`.
    **params
        Passed to the class or factory.

    Returns
    -------
    module : torch.nn.Module
    """
    return resolve_module(name)(**params)


def resolve_module(module):
    """Map a zoo name to its class or factory; anything else is returned unchanged.

    Parameters
    ----------
    module : str, nn.Module class, factory or instance

    Returns
    -------
    module : class, factory or instance
    """
    if isinstance(module, str):
        if module not in MODEL_ZOO:
            raise ValueError(f"Unknown model {module!r}; choose one of {sorted(MODEL_ZOO)}.")
        return MODEL_ZOO[module]
    return module


def cnn_for_budget_flat(n_params=8000, depth=1, in_channels=1, image_size=28, n_out=10,
                        kernel_size=3, activation="relu"):
    """A :class:`~hw1sk.models.CNN` of ``depth`` equal-width convolutions and a flattening head.

    Unlike :func:`hw1sk.models.cnn_for_budget` (global average pooling, so a
    shallow net must spend its budget on very wide convolutions), the last
    feature map is flattened into the linear output layer: a one-convolution
    network stays narrow and cheap, and shallow and deep nets of one budget
    cost about the same to train.

    Parameters
    ----------
    n_params : int, default=8000
        Parameter budget; the channel count whose parameter count is nearest
        it is chosen.
    depth : int, default=1
        Number of convolutions.
    in_channels, image_size, n_out, kernel_size, activation
        As in :class:`~hw1sk.models.CNN`.

    Examples
    --------
    >>> from hw1sk.models import cnn_for_budget_flat
    >>> from hw1sk.models import count_params
    >>> [count_params(cnn_for_budget_flat(8000, d)) for d in (1, 2, 4)]
    [7890, 8044, 7630]
    """
    if not isinstance(n_params, Integral) or isinstance(n_params, bool) or n_params < 1:
        raise ValueError(f"n_params must be a positive integer, got {n_params!r}.")
    if not isinstance(depth, Integral) or isinstance(depth, bool) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}.")
    kwargs = {"in_channels": in_channels, "image_size": image_size, "n_out": n_out,
              "kernel_size": kernel_size, "activation": activation, "global_pool": False}

    def count(c):
        # built on the meta device: shapes only, no memory, no initialisation
        with torch.device("meta"):
            return count_params(CNN(channels=(c,) * depth, **kwargs))

    lo, hi = 1, 1
    while count(hi) < n_params:  # the count grows with the channels: bracket, then bisect
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < n_params else (lo, mid)
    best = min((lo, hi), key=lambda c: (abs(count(c) - n_params), c))
    return CNN(channels=(best,) * depth, **kwargs)


#: Budget and depths of the parameter-matched models of each task (HW1-1).
PARAMETER_MATCHED = {"regression": {"n_params": 571, "depths": (1, 4, 7)},
                     "classification": {"n_params": 8000, "depths": (1, 2, 4)}}


def parameter_matched_models(task, n_params=None, depths=None):
    """Parameter-matched MLPs (and CNNs for classification) of several depths.

    ``n_params`` and ``depths`` (hidden layers or convolutions) default to
    571 and ``(1, 4, 7)`` for ``task="regression"``, 8000 and ``(1, 2, 4)``
    for ``"classification"``.  Returns name -> estimator parameters:
    ``"MLP-<depth>"`` (:func:`mlp_for_budget`) and, for classification,
    ``"CNN-<depth>"`` (:func:`cnn_for_budget_flat`); input size and number
    of classes come from the data.

    Examples
    --------
    >>> from hw1sk.models import parameter_matched_models
    >>> sorted(parameter_matched_models("regression"))
    ['MLP-1', 'MLP-4', 'MLP-7']
    """
    if task not in PARAMETER_MATCHED:
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
    n_params = PARAMETER_MATCHED[task]["n_params"] if n_params is None else n_params
    depths = tuple(PARAMETER_MATCHED[task]["depths"] if depths is None else depths)
    if not isinstance(n_params, Integral) or isinstance(n_params, bool) or n_params < 1:
        raise ValueError(f"n_params must be a positive integer, got {n_params!r}.")
    if not depths or not all(isinstance(d, Integral) and not isinstance(d, bool) and d >= 1
                             for d in depths):
        raise ValueError(
            f"depths must be a non-empty sequence of positive integers, got {depths!r}.")
    families = {"MLP": "mlp_budget"}
    if task == "classification":
        families = {"CNN": cnn_for_budget_flat, **families}
    return {f"{family}-{d}": {"module": zoo, "module__n_params": int(n_params),
                              "module__depth": int(d)}
            for family, zoo in families.items() for d in depths}


def holds_images(X):
    """Whether the samples of ``X`` are images the budget CNNs take.

    ``(H, W)`` or ``(C, H, W)`` samples with square ``H == W``, or flat
    samples of ``H * H`` (grey) values, like flattened MNIST.
    """
    shape = X.shape[1:]
    if len(shape) == 1:
        side = int(round(np.sqrt(shape[0])))
        return shape[0] > 1 and side * side == shape[0]
    return len(shape) in (2, 3) and shape[-1] == shape[-2]


def n_weight_layers(module):
    """Number of linear and convolutional layers of ``module`` (the output layer included)."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return sum(isinstance(m, kinds) for m in module.modules())


def reinitialized_copy(module):
    """A deep copy of ``module`` whose layers are re-initialised (under the caller's seed)."""
    fresh = copy.deepcopy(module)
    for sub in fresh.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return fresh
