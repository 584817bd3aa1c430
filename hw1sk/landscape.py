"""Loss landscapes: directions in parameter space and losses along lines and planes.

Pure functions, no plotting.  Directions and points live in the flat layout of
:mod:`hw1sk.parameters`.  Losses are evaluated in eval mode through
:func:`torch.func.functional_call` (many grid points at once with
:func:`torch.func.vmap`), so the caller's module is never written to.
Random directions are filter-normalized, and the PCA plane of a trajectory
is built, as in Li et al. [1]_.

References
----------
.. [1] Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of
   Neural Nets", NeurIPS 2018.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_array
from torch.func import vmap

from ._inputs import (
    check_batch_size,
    check_module,
    eval_mode,
    module_and_data,
    module_device,
    module_dtype,
)
from .parameters import flatten_parameters, functional_loss, parameter_slices
from .seeding import torch_generator

__all__ = [
    "random_direction",
    "loss_along_line",
    "loss_surface",
    "pca_directions",
    "project_onto_plane",
    "PCADirections",
]


def random_direction(module, filter_normalize=True, random_state=None, ignore_bias_bn=True):
    """A Gaussian direction in parameter space, filter-normalized as in Li et al.

    Every entry is drawn from a standard normal.  With ``filter_normalize``,
    each filter of a weight with two or more dimensions (a row ``W[i]``: one
    output neuron of a Linear layer, one output channel of a convolution) is
    rescaled to the norm of the same filter of the module's parameters,
    :math:`d_i \\leftarrow d_i \\|\\theta_i\\| / \\|d_i\\|`, which removes the
    scale invariance of ReLU networks from the picture.  One-dimensional
    parameters (biases, BatchNorm scales and shifts) are set to zero when
    ``ignore_bias_bn`` (the convention of Li et al.); otherwise, with
    ``filter_normalize``, they are set equal to the parameters themselves (as
    in their code) and, without it, keep their Gaussian draw.

    Parameters
    ----------
    module : torch.nn.Module
    filter_normalize : bool, default=True
    random_state : int, RandomState or None, default=None
        The same value gives the same direction (drawn on the CPU).
    ignore_bias_bn : bool, default=True
        Zero the direction on 1-D parameters.

    Returns
    -------
    direction : torch.Tensor of shape (n_params,)
        On the module's device, in its dtype.

    References
    ----------
    .. [1] Li et al. (2018), Section 4.

    Examples
    --------
    >>> import torch
    >>> from hw1sk.landscape import random_direction
    >>> layer = torch.nn.Linear(3, 2)
    >>> d = random_direction(layer, random_state=0)
    >>> bool(torch.allclose(d[:6].view(2, 3).norm(dim=1), layer.weight.norm(dim=1)))
    True
    """
    check_module(module)
    theta = flatten_parameters(module).to(module_dtype(module))
    generator = torch_generator(random_state)
    direction = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
    theta = theta.cpu()
    shapes = {name: p.shape for name, p in module.named_parameters()}
    for name, sl in parameter_slices(module).items():
        shape = shapes[name]
        if len(shape) <= 1:
            if ignore_bias_bn:
                direction[sl] = 0
            elif filter_normalize:
                direction[sl] = theta[sl]
            continue
        if filter_normalize:
            d = direction[sl].view(shape[0], -1)
            w = theta[sl].view(shape[0], -1)
            # the tiny constant keeps an all-zero filter at zero instead of NaN
            d.mul_(w.norm(dim=1, keepdim=True) / (d.norm(dim=1, keepdim=True) + 1e-10))
    return direction.to(module_device(module))


def _as_flat(vector, n_params, dtype, device, name):
    if isinstance(vector, torch.Tensor):
        vector = vector.detach()
    else:
        vector = torch.as_tensor(check_array(vector, ensure_2d=False, dtype=None,
                                             input_name=name))
    if vector.ndim != 1 or vector.numel() != n_params:
        raise ValueError(
            f"{name} has shape {tuple(vector.shape)}, expected ({n_params},) "
            "(one entry per parameter of the module)."
        )
    return vector.to(device=device, dtype=dtype)


def _as_grid(values, name):
    values = check_array(values, ensure_2d=False, dtype=np.float64, input_name=name)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}.")
    return values


def _check_points_per_call(n_points_per_call):
    if (not isinstance(n_points_per_call, Integral) or isinstance(n_points_per_call, bool)
            or n_points_per_call < 1):
        raise ValueError(
            f"n_points_per_call must be a positive integer, got {n_points_per_call!r}."
        )
    return int(n_points_per_call)


def _losses_at(module, criterion, X, y, origin, directions, coefficients, accuracy,
               batch_size, n_points_per_call):
    """Full-data loss (and accuracy) at ``origin + coefficients @ directions``.

    Points are evaluated ``n_points_per_call`` at a time with ``vmap`` over the
    parameter vector; if the module has no batching rule for that (e.g. LSTM),
    one at a time.  The full-data loss is the size-weighted mean of the chunk
    losses, exact for criteria that average over samples.
    """
    if accuracy:
        def scored(out, target):  # loss and accuracy from one forward pass
            hits = (out.argmax(dim=-1) == target).to(out.dtype).mean()
            return torch.stack([criterion(out, target), hits])
    else:
        def scored(out, target):
            return criterion(out, target).reshape(1)

    n = X.shape[0]
    chunks = [(X[s:s + batch_size], y[s:s + batch_size], min(batch_size, n - s) / n)
              for s in range(0, n, batch_size)]

    def evaluate(thetas, batched):
        total = 0.0
        for xb, yb, weight in chunks:
            loss_fn = functional_loss(module, scored, xb, yb)[0]
            values = vmap(loss_fn)(thetas) if batched else torch.stack(
                [loss_fn(t) for t in thetas])
            total = total + values * weight
        return total

    results = []
    batched = n_points_per_call > 1
    coefficients = torch.as_tensor(coefficients, dtype=origin.dtype, device=origin.device)
    with eval_mode(module), torch.no_grad():
        for start in range(0, coefficients.shape[0], n_points_per_call):
            thetas = origin + coefficients[start:start + n_points_per_call] @ directions
            if batched:
                try:
                    results.append(evaluate(thetas, True))
                    continue
                except RuntimeError:  # no vmap batching rule for some layer
                    batched = False
            results.append(evaluate(thetas, False))
    values = torch.cat(results).double().cpu().numpy()
    return values[:, 0], (values[:, 1] if accuracy else None)


def _check_accuracy_inputs(module, X, y):
    if y.is_floating_point():
        raise ValueError("accuracy=True needs integer class labels y, got real targets.")
    with eval_mode(module), torch.no_grad():
        out = module(X[:1])
    if out.ndim != 2 or out.shape[1] < 2:
        raise ValueError(
            "accuracy=True needs outputs of shape (n_samples, n_classes) with n_classes >= 2, "
            f"got {tuple(out.shape)}."
        )


def loss_along_line(module, criterion, X, y, direction, alphas, accuracy=False,
                    batch_size=1024, n_points_per_call=16, device=None):
    """Full-data loss at :math:`\\theta + \\alpha d` for each ``alpha``.

    Parameters
    ----------
    module : torch.nn.Module
        Gives :math:`\\theta` (its parameters); evaluated in eval mode.
    criterion : callable
        ``criterion(output, y) -> scalar``, averaging over samples.
    X : array-like or torch.Tensor of shape (n_samples, ...)
    y : array-like or torch.Tensor of shape (n_samples, ...)
    direction : torch.Tensor or array-like of shape (n_params,)
        E.g. from :func:`random_direction`, or ``theta_end - theta_start`` for
        a linear interpolation between two solutions.
    alphas : array-like of shape (n_alphas,)
    accuracy : bool, default=False
        Also report the accuracy (outputs' argmax against integer labels).
    batch_size : int or None, default=1024
        Samples per forward pass; ``None`` for all at once.
    n_points_per_call : int, default=16
        Points evaluated together under :func:`torch.func.vmap`; memory grows
        with it, ``1`` is a plain loop.
    device : str, torch.device or None, default=None

    Returns
    -------
    line : pandas.DataFrame
        Columns ``alpha``, ``loss`` and, with ``accuracy``, ``accuracy``.

    Examples
    --------
    >>> import torch
    >>> from hw1sk.landscape import loss_along_line, random_direction
    >>> net = torch.nn.Linear(2, 1)
    >>> X, y = torch.randn(8, 2), torch.randn(8, 1)
    >>> line = loss_along_line(net, torch.nn.MSELoss(), X, y,
    ...                        random_direction(net, random_state=0), [-1, 0, 1])
    >>> list(line.columns)
    ['alpha', 'loss']
    """
    alphas = _as_grid(alphas, "alphas")
    work, device, X, y = module_and_data(module, X, y, device)
    batch_size = check_batch_size(batch_size, X.shape[0])
    n_points_per_call = _check_points_per_call(n_points_per_call)
    theta = flatten_parameters(work).to(device)
    direction = _as_flat(direction, theta.numel(), theta.dtype, device, "direction")
    if accuracy:
        _check_accuracy_inputs(work, X, y)
    losses, accuracies = _losses_at(work, criterion, X, y, theta, direction[None],
                                    alphas[:, None], accuracy, batch_size, n_points_per_call)
    line = {"alpha": alphas, "loss": losses}
    if accuracy:
        line["accuracy"] = accuracies
    return pd.DataFrame(line)


def loss_surface(module, criterion, X, y, direction1, direction2, alphas, betas,
                 batch_size=1024, n_points_per_call=16, device=None):
    """Full-data loss on the plane :math:`\\theta + \\alpha d_1 + \\beta d_2`.

    Parameters
    ----------
    module : torch.nn.Module
        Gives :math:`\\theta`; evaluated in eval mode.
    criterion : callable
        ``criterion(output, y) -> scalar``, averaging over samples.
    X : array-like or torch.Tensor of shape (n_samples, ...)
    y : array-like or torch.Tensor of shape (n_samples, ...)
    direction1, direction2 : torch.Tensor or array-like of shape (n_params,)
    alphas : array-like of shape (n_alphas,)
    betas : array-like of shape (n_betas,)
    batch_size : int or None, default=1024
    n_points_per_call : int, default=16
        Grid points evaluated together under :func:`torch.func.vmap`.
    device : str, torch.device or None, default=None

    Returns
    -------
    alphas : numpy.ndarray of shape (n_alphas,)
    betas : numpy.ndarray of shape (n_betas,)
    losses : numpy.ndarray of shape (n_alphas, n_betas)
        ``losses[i, j]`` is the loss at ``theta + alphas[i] d1 + betas[j] d2``
        (``"ij"`` indexing; transpose for ``matplotlib.contour(alphas, betas, .)``).

    Examples
    --------
    >>> import torch
    >>> from hw1sk.landscape import loss_surface, random_direction
    >>> net = torch.nn.Linear(2, 1)
    >>> X, y = torch.randn(8, 2), torch.randn(8, 1)
    >>> d1, d2 = (random_direction(net, random_state=s) for s in (0, 1))
    >>> a, b, losses = loss_surface(net, torch.nn.MSELoss(), X, y, d1, d2,
    ...                             [-1, 0, 1], [0, 1])
    >>> losses.shape
    (3, 2)
    """
    alphas, betas = _as_grid(alphas, "alphas"), _as_grid(betas, "betas")
    work, device, X, y = module_and_data(module, X, y, device)
    batch_size = check_batch_size(batch_size, X.shape[0])
    n_points_per_call = _check_points_per_call(n_points_per_call)
    theta = flatten_parameters(work).to(device)
    d1 = _as_flat(direction1, theta.numel(), theta.dtype, device, "direction1")
    d2 = _as_flat(direction2, theta.numel(), theta.dtype, device, "direction2")
    grid = np.stack(np.meshgrid(alphas, betas, indexing="ij"), axis=-1).reshape(-1, 2)
    losses, _ = _losses_at(work, criterion, X, y, theta, torch.stack([d1, d2]), grid,
                           False, batch_size, n_points_per_call)
    return alphas, betas, losses.reshape(len(alphas), len(betas))


@dataclass
class PCADirections:
    """The plane of a weight trajectory found by :func:`pca_directions`.

    Attributes
    ----------
    directions : numpy.ndarray of shape (n_components, n_params)
        Orthonormal principal directions.
    coordinates : numpy.ndarray of shape (n_snapshots, n_components)
        Each snapshot minus the final one, projected on ``directions``
        (the final snapshot is at the origin).
    explained_variance : numpy.ndarray of shape (n_components,)
    explained_variance_ratio : numpy.ndarray of shape (n_components,)
    origin : numpy.ndarray of shape (n_params,)
        The final snapshot, centre of the plane.
    """

    directions: np.ndarray
    coordinates: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    origin: np.ndarray


def _as_trajectory(trajectory):
    if isinstance(trajectory, torch.Tensor):
        trajectory = trajectory.detach().cpu().numpy()
    elif isinstance(trajectory, (list, tuple)) and trajectory and all(
            isinstance(t, torch.Tensor) for t in trajectory):
        trajectory = torch.stack([t.detach().cpu() for t in trajectory]).numpy()
    return check_array(trajectory, dtype=np.float64, input_name="trajectory")


def pca_directions(trajectory, n_components=2):
    """Principal directions of a weight trajectory around its final point.

    As in Li et al. (2018), Section 7: with snapshots
    :math:`\\theta_0, \\dots, \\theta_n`, PCA (:class:`sklearn.decomposition.PCA`,
    which centres the rows) is fitted to the differences
    :math:`\\theta_i - \\theta_n`, ``i < n``; the trajectory's coordinates are
    the projections of :math:`\\theta_i - \\theta_n` on the components.

    Parameters
    ----------
    trajectory : array-like or torch.Tensor of shape (n_snapshots, n_params)
        Flat parameter vectors in time order (a list of flat tensors works).
    n_components : int, default=2
        At most ``n_snapshots - 1``.

    Returns
    -------
    plane : PCADirections

    See Also
    --------
    project_onto_plane : Coordinates of other points in a plane.

    Examples
    --------
    >>> import numpy as np
    >>> from hw1sk.landscape import pca_directions
    >>> t = np.linspace(0, 1, 6)[:, None]
    >>> plane = pca_directions(np.hstack([t, t ** 2, 0 * t]), n_components=2)
    >>> plane.coordinates.shape, bool(np.allclose(plane.coordinates[-1], 0))
    ((6, 2), True)
    """
    trajectory = _as_trajectory(trajectory)
    if (not isinstance(n_components, Integral) or isinstance(n_components, bool)
            or n_components < 1):
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}.")
    n_snapshots, n_params = trajectory.shape
    if n_components > min(n_snapshots - 1, n_params):
        raise ValueError(
            f"n_components={n_components} needs at least {n_components + 1} snapshots and "
            f"{n_components} parameters; trajectory has shape {trajectory.shape}."
        )
    origin = trajectory[-1]
    differences = trajectory - origin
    pca = PCA(n_components=n_components, svd_solver="full").fit(differences[:-1])
    return PCADirections(
        directions=pca.components_,
        coordinates=differences @ pca.components_.T,
        explained_variance=pca.explained_variance_,
        explained_variance_ratio=pca.explained_variance_ratio_,
        origin=origin,
    )


def project_onto_plane(points, origin, d1, d2):
    """Least-squares coordinates of points in the plane ``origin + a d1 + b d2``.

    Parameters
    ----------
    points : array-like or torch.Tensor of shape (n_points, n_params) or (n_params,)
    origin, d1, d2 : array-like or torch.Tensor of shape (n_params,)
        ``d1`` and ``d2`` need not be orthogonal or normalized, only independent.

    Returns
    -------
    coordinates : numpy.ndarray of shape (n_points, 2) or (2,)
        ``(a, b)`` minimizing ``||point - origin - a d1 - b d2||``.

    Examples
    --------
    >>> from hw1sk.landscape import project_onto_plane
    >>> project_onto_plane([[2.0, 3.0, 1.0]], [0, 0, 0], [1, 0, 0], [1, 1, 0])
    array([[-1.,  3.]])
    """
    def as_array(v, name):
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
        return check_array(v, ensure_2d=False, dtype=np.float64, input_name=name)

    points = as_array(points, "points")
    single = points.ndim == 1
    points = np.atleast_2d(points)
    basis = np.stack([as_array(d1, "d1"), as_array(d2, "d2")], axis=1)
    origin = as_array(origin, "origin")
    if basis.ndim != 2 or origin.shape != (points.shape[1],) or basis.shape[0] != points.shape[1]:
        raise ValueError(
            f"origin, d1 and d2 must be 1-D of length {points.shape[1]} (the points' length); "
            f"got {origin.shape}, {basis.shape[:1]}."
        )
    if np.linalg.matrix_rank(basis) < 2:
        raise ValueError("d1 and d2 must be linearly independent.")
    coordinates = np.linalg.lstsq(basis, (points - origin).T, rcond=None)[0].T
    return coordinates[0] if single else coordinates
