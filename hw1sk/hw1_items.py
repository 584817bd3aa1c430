"""The HW1 items of the report: each one's study, data, profiles and figures.

Every item is registered with :func:`hw1sk.experiments.register` under an id
(``"1-2-minimal-ratio"``) with two profiles of study parameters: ``quick``
(every item at reduced sizes, the whole report in a few minutes on a laptop
CPU) and ``full`` (the assignment's sizes).  A *build* function turns the
profile's settings and the run context (data home, ``n_jobs``, backend,
seed, ...) into an unfitted study and the arguments of its fit; a *render*
function turns the fitted study into figures and tables.  Nothing here
computes science: the studies do, and the plotting functions draw.
"""

from __future__ import annotations

import functools

import pandas as pd

from . import findings
from .registry import Experiment, ExperimentSkipped, register
from .studies.deep_shallow import DeepShallowStudy
from .studies.error_surface import ErrorSurfaceStudy
from .studies.hessian_spectrum import HessianSpectrumStudy
from .studies.interpolation import InterpolationStudy
from .studies.minimal_ratio import MinimalRatioStudy
from .studies.optimization import OptimizationStudy
from .studies.param_count import ParamCountStudy
from .studies.random_labels import RandomLabelStudy
from .studies.sensitivity import SensitivityStudy

__all__ = ["estimator_from_spec"]

# study parameters every study takes from the run context
_CONTEXT_KEYS = ("n_jobs", "backend", "scheduler", "cache_dir", "progress", "device",
                 "random_state")


def estimator_from_spec(spec):
    """The estimator a profile names: ``{"kind": "classifier" | "regressor", **parameters}``.

    The parameters are the estimator's own (``module``, ``module__hidden``,
    ``lr``, ``max_epochs``, ``batch_size``, ``optimizer__weight_decay``, ...);
    ``optimizer`` is the name of a ``torch.optim`` class (``"Adam"``,
    ``"SGD"``), so that a profile stays plain, printable data.

    Examples
    --------
    >>> from hw1sk.hw1_items import estimator_from_spec
    >>> est = estimator_from_spec({"kind": "regressor", "optimizer": "SGD",
    ...                            "optimizer__momentum": 0.9, "lr": 0.1})
    >>> type(est).__name__, est.optimizer.__name__, est.optimizer__momentum
    ('NeuralRegressor', 'SGD', 0.9)
    """
    import torch

    from .estimators import NeuralClassifier, NeuralRegressor

    params = dict(spec)
    kind = params.pop("kind", "classifier")
    if kind not in ("classifier", "regressor"):
        raise ValueError(f"an estimator spec's kind must be 'classifier' or 'regressor', "
                         f"got {kind!r}.")
    if isinstance(params.get("optimizer"), str):
        name = params["optimizer"]
        if not isinstance(getattr(torch.optim, name, None), type):
            raise ValueError(f"optimizer {name!r} is not a torch.optim class.")
        params["optimizer"] = getattr(torch.optim, name)
    return (NeuralClassifier if kind == "classifier" else NeuralRegressor)(**params)


def _study_kwargs(settings, context):
    """The profile's study parameters (its estimator built) plus the run context (context wins)."""
    kwargs = {k: v for k, v in settings.items() if not k.startswith("data_")}
    if isinstance(kwargs.get("estimator"), dict):
        kwargs["estimator"] = estimator_from_spec(kwargs["estimator"])
    kwargs.update({k: context[k] for k in _CONTEXT_KEYS})
    return kwargs


def _spec(kind, **params):
    """An estimator spec of a profile (Adam unless ``optimizer`` says otherwise)."""
    return {"kind": kind, "optimizer": "Adam", **params}


# the networks of the items, by the studies that use them (the studies' defaults)
_TRAJECTORY = {"module": "mlp", "module__hidden": (64, 32), "lr": 1e-3, "batch_size": 128}
_RANDOM_LABEL = {"module": "mlp", "module__hidden": (512, 512), "lr": 1e-3, "batch_size": 128}
_PARAM_COUNT = {"module": "mlp", "lr": 1e-3, "batch_size": 128}
_FLATNESS = {"module": "mlp", "module__hidden": (128,), "lr": 1e-3, "batch_size": 64}
_MINIMAL_RATIO = {"module": "mlp", "module__hidden": (20, 20), "module__activation": "tanh",
                  "lr": 1e-2, "batch_size": -1}


@functools.lru_cache(maxsize=8)
def _mnist_split(data_home, train, n_samples, flatten, random_state):
    from .datasets import load_mnist

    # shared between the items of one report (the studies never write to their inputs);
    # not made read-only, since torch warns on every non-writable array it wraps
    return load_mnist(data_home, train=train, n_samples=n_samples, flatten=flatten,
                      random_state=random_state)


def _mnist(settings, context, flatten, with_test=True):
    """MNIST train and test arrays at the profile's sizes (``data_n_train``, ``data_n_test``).

    The subsets are stratified draws seeded by the run's seed; None keeps the
    whole split.
    """
    seed = context["random_state"]
    X, y = _mnist_split(context["data_home"], True, settings.get("data_n_train"), flatten, seed)
    if not with_test:
        return X, y, None, None
    X_test, y_test = _mnist_split(context["data_home"], False, settings.get("data_n_test"),
                                  flatten, seed + 1)
    return X, y, X_test, y_test


def _tables(study, **extra):
    """``results`` and ``summary`` of a study, plus ``extra`` frames; only DataFrames."""
    tables = {"results": study.results_, "summary": getattr(study, "summary_", None), **extra}
    return {name: frame for name, frame in tables.items() if isinstance(frame, pd.DataFrame)}


def _mnist_builder(study_class, flatten, with_test=True, **fit_extra):
    """A build function that fits ``study_class`` on MNIST.

    ``flatten`` gives the study (n, 784) rows instead of (n, 1, 28, 28)
    images; ``with_test`` passes the test split to the fit too; ``fit_extra``
    are further fit arguments (such as the data set's name).
    """

    def build(settings, context):
        X, y, X_test, y_test = _mnist(settings, context, flatten=flatten, with_test=with_test)
        fit = {"X": X, "y": y, **({"X_test": X_test, "y_test": y_test} if with_test else {}),
               **fit_extra}
        return study_class(**_study_kwargs(settings, context)), fit

    return build


# --------------------------------------------------------------------- 1-1
def _build_functions(settings, context):

    fit = {k[len("data_"):]: v for k, v in settings.items() if k.startswith("data_")}
    return DeepShallowStudy(**_study_kwargs(settings, context)), fit


def _render_functions(study):
    from .plotting.deep_shallow import plot_loss_curves, plot_predictions

    figures = {"loss_curves": plot_loss_curves(study, restarts="all"),
               "predictions": plot_predictions(study)}
    return figures, _tables(study, predictions=study.predictions_)


register(
    Experiment("1-1-functions", "Deep vs shallow: fitting 1-D functions with "
               "parameter-matched MLPs", needs_mnist=False, build=_build_functions,
               render=_render_functions, fit_method="fit_functions",
               findings=findings.deep_shallow_findings),
    quick={"depths": (1, 4, 7), "n_restarts": 2, "plateau_patience": 500,
           "estimator": _spec("regressor", lr=1e-2, max_epochs=4000, batch_size=-1), "data_functions": ("sinc", "sign"),
           "data_n_samples": 300, "data_n_grid": 400},
    full={"depths": (1, 4, 7), "n_restarts": 3, "plateau_patience": 1000,
          "estimator": _spec("regressor", lr=1e-3, max_epochs=20000, batch_size=-1), "data_functions": ("sinc", "sign"),
          "data_n_samples": 1000, "data_n_grid": 1000},
)


def _render_training(study):
    from .plotting.deep_shallow import plot_training_curves

    return {"training_curves": plot_training_curves(study)}, _tables(study)


register(
    Experiment("1-1-mnist", "Deep vs shallow: shallow and deep CNNs and DNNs of similar "
               "size on MNIST", needs_mnist=True,
               build=_mnist_builder(DeepShallowStudy, False,
                                    name="MNIST"),
               render=_render_training, findings=findings.deep_shallow_findings),
    quick={"depths": (1, 2, 4),
           "estimator": _spec("classifier", lr=3e-3, max_epochs=4, batch_size=64),
           "data_n_train": 6000, "data_n_test": 2000},
    full={"depths": (1, 2, 4), "n_restarts": 3,
          "estimator": _spec("classifier", lr=1e-3, max_epochs=10, batch_size=128),
          "data_n_train": None, "data_n_test": None},
)


def _build_cifar10(settings, context):
    from .datasets import DataNotFoundError, get_data_home, load_cifar10

    seed = context["random_state"]
    try:
        X, y = load_cifar10(context["data_home"], train=True,
                            n_samples=settings.get("data_n_train"), random_state=seed,
                            download=False)
        X_test, y_test = load_cifar10(context["data_home"], train=False,
                                      n_samples=settings.get("data_n_test"),
                                      random_state=seed + 1, download=False)
    except DataNotFoundError:
        raise ExperimentSkipped(
            f"CIFAR-10 is not under {get_data_home(context['data_home'], create=False)} "
            "(cifar-10-batches-py); this item was skipped. Put the data there to run it."
        ) from None
    study = DeepShallowStudy(**_study_kwargs(settings, context))
    return study, {"X": X, "y": y, "X_test": X_test, "y_test": y_test, "name": "CIFAR-10"}


register(
    Experiment("1-1-cifar10", "Deep vs shallow: shallow and deep CNNs and DNNs on "
               "CIFAR-10 (when its data is there)", needs_mnist=False,
               build=_build_cifar10, render=_render_training,
               findings=findings.deep_shallow_findings),
    quick={"depths": (1, 2, 4), "n_params": 30000,
           "estimator": _spec("classifier", lr=3e-3, max_epochs=2, batch_size=64),
           "data_n_train": 2000, "data_n_test": 1000},
    full={"depths": (1, 2, 4), "n_params": 30000,
          "estimator": _spec("classifier", lr=1e-3, max_epochs=20, batch_size=128),
          "data_n_train": None, "data_n_test": None},
)


# --------------------------------------------------------------------- 1-2
def _render_trajectory(study):
    from .plotting.optimization import plot_trajectories

    figures = {"trajectories_loss": plot_trajectories(study, scope="both", annotate="loss"),
               "trajectories_accuracy": plot_trajectories(study, scope="both",
                                                          annotate="accuracy")}
    return figures, _tables(study, history=study.history_)


register(
    Experiment("1-2-trajectory", "Optimization: weight trajectories of 8 runs under one "
               "joint PCA (whole model and one layer)", needs_mnist=True,
               build=_mnist_builder(OptimizationStudy, True,
                                    with_test=False), render=_render_trajectory,
               findings=findings.trajectory_findings),
    quick={"n_runs": 8, "every": 3,
           "estimator": _spec("classifier", **_TRAJECTORY, max_epochs=15),
           "data_n_train": 6000},
    full={"n_runs": 8, "every": 3,
          "estimator": _spec("classifier", **_TRAJECTORY, max_epochs=30),
          "data_n_train": None},
)


def _build_gradient_norm(settings, context):
    from .datasets import make_function_dataset

    X, y = make_function_dataset(settings["data_function"], n_samples=settings["data_n_samples"],
                                 random_state=context["random_state"])
    return OptimizationStudy(**_study_kwargs(settings, context)), {"X": X, "y": y}


def _render_gradient_norm(study):
    from .plotting.optimization import plot_gradient_norm

    return ({"gradient_norm": plot_gradient_norm(study, run=0)},
            _tables(study, grad_norms=study.grad_norms_))


register(
    Experiment("1-2-gradient-norm", "Optimization: gradient norm and loss per iteration",
               needs_mnist=False, build=_build_gradient_norm, render=_render_gradient_norm,
               findings=findings.gradient_norm_findings),
    quick={"n_runs": 1, "every": 100,
           "estimator": _spec("regressor", module="mlp", module__hidden=(16, 16), lr=3e-3,
                              batch_size=-1, max_epochs=3000),
           "data_function": "sinc", "data_n_samples": 200},
    full={"n_runs": 3, "every": 100,
          "estimator": _spec("regressor", module="mlp", module__hidden=(16, 16), lr=3e-3,
                             batch_size=-1, max_epochs=5000),
          "data_function": "sinc", "data_n_samples": 1000},
)


def _build_minimal_ratio(settings, context):

    return MinimalRatioStudy(**_study_kwargs(settings, context)), {}


def _render_minimal_ratio(study):
    from .plotting.curvature import plot_hessian_spectrum, plot_minimal_ratio

    figures = {"minimal_ratio_vs_loss": plot_minimal_ratio(study),
               "hessian_spectrum": plot_hessian_spectrum(study, run=0)}
    return figures, _tables(study)


register(
    Experiment("1-2-minimal-ratio", "Optimization: minimal ratio of the Hessian at points "
               "of near-zero gradient, against the loss", needs_mnist=False,
               build=_build_minimal_ratio, render=_render_minimal_ratio,
               findings=findings.minimal_ratio_findings),
    quick={"n_runs": 20, "estimator": _spec("regressor", **_MINIMAL_RATIO, max_epochs=1000)},
    full={"n_runs": 100, "estimator": _spec("regressor", **_MINIMAL_RATIO, max_epochs=1000)},
)


def _render_error_surface(study):
    from .plotting.optimization import plot_error_surface

    return ({"error_surface": plot_error_surface(study)},
            _tables(study, line=study.line_, trajectory=study.trajectory_coords_))


register(
    Experiment("1-2-error-surface", "Optimization (bonus): the error surface around a "
               "trained model, with its trajectory", needs_mnist=True,
               build=_mnist_builder(ErrorSurfaceStudy, True,
                                    with_test=False), render=_render_error_surface,
               findings=findings.error_surface_findings),
    quick={"directions": "pca", "n_eval": 2000, "surface_points": 21, "line_points": 41,
           "estimator": _spec("classifier", **_TRAJECTORY, max_epochs=10),
           "data_n_train": 6000},
    full={"directions": "pca", "n_eval": 10000, "surface_points": 31, "line_points": 61,
          "estimator": _spec("classifier", **_TRAJECTORY, max_epochs=30),
          "data_n_train": None},
)


def _render_hessian_spectrum(study):
    from .plotting.spectrum import plot_spectral_density

    return {"spectral_density": plot_spectral_density(study)}, _tables(study)


_SPECTRUM = {"module": "mlp", "module__hidden": (32,), "lr": 1e-3, "batch_size": 128}

register(
    Experiment("1-2-hessian-spectrum", "Curvature: the Hessian spectral density (SLQ) at "
               "initialization, mid-training and the end: bulk and outliers",
               needs_mnist=True,
               build=_mnist_builder(HessianSpectrumStudy, True, with_test=False),
               render=_render_hessian_spectrum, findings=findings.hessian_spectrum_findings),
    quick={"n_hessian": 500, "n_probes": 5, "n_iter": 40, "n_seeds": 2,
           "estimator": _spec("classifier", **_SPECTRUM, max_epochs=3),
           "data_n_train": 3000},
    full={"n_hessian": 2000, "n_probes": 10, "n_iter": 80, "n_seeds": 3,
          "estimator": _spec("classifier", **_SPECTRUM, max_epochs=10),
          "data_n_train": None},
)


# --------------------------------------------------------------------- 1-3
def _render_random_labels(study):
    from .plotting.generalization import plot_random_labels

    return {"random_labels": plot_random_labels(study)}, _tables(study)


register(
    Experiment("1-3-random-labels", "Generalization: fitting random labels (memorization)",
               needs_mnist=True,
               build=_mnist_builder(RandomLabelStudy, True),
               render=_render_random_labels, findings=findings.random_label_findings),
    quick={"n_train": 2000, "n_test": 1000, "n_seeds": 1,
           "estimator": _spec("classifier", **_RANDOM_LABEL, max_epochs=40)},
    full={"n_train": 5000, "n_test": 2000, "n_seeds": 3,
          "estimator": _spec("classifier", **_RANDOM_LABEL, max_epochs=60)},
)


def _render_param_count(study):
    from .plotting.generalization import plot_param_count

    figures = {"loss_vs_params": plot_param_count(study, metric="loss"),
               "accuracy_vs_params": plot_param_count(study, metric="accuracy")}
    return figures, _tables(study)


register(
    Experiment("1-3-param-count", "Generalization: number of parameters vs train and test "
               "loss and accuracy", needs_mnist=True,
               build=_mnist_builder(ParamCountStudy, True),
               render=_render_param_count, findings=findings.param_count_findings),
    quick={"widths": (2, 4, 6, 8, 12, 16, 32, 64, 128, 256), "n_train": 3000, "n_test": 2000,
           "n_seeds": 2, "estimator": _spec("classifier", **_PARAM_COUNT, max_epochs=10)},
    full={"widths": None, "n_train": 10000, "n_test": None, "n_seeds": 3,
          "estimator": _spec("classifier", **_PARAM_COUNT, max_epochs=20)},
)


# The flatness items compare batch sizes at equal epochs and at equal train loss (each
# model trained until its running train loss reaches target_loss, at most max_epochs_cap
# epochs).  Measured (MLP 784-128-10, Adam 1e-3, one thread, the issue-11 report): on the
# 60,000 MNIST training images the loss 0.1 is reached at epoch 7 (batch 256), 15 (1024,
# all three full-profile seeds) and 40-41 (4096, three seeds, 0.5-2.2 s an epoch); batch 16
# is at 0.11 after epoch 2 (12 s an epoch).  The cap of 60 leaves a third spare.  On the quick
# profile's 6,000 images 0.3 is reached at epoch 3 (16), 4 (64), 7 (256), 18 (1024), and
# batch 4096 (two steps an epoch) is at 0.5 after the cap of 20: flagged in the figures and
# findings.  The quick profile keeps one seed: the train_loss control already adds about
# 10 s to the two items' quick report (51 s -> 62 s wall).
_FLATNESS_QUICK = {"n_seeds": 1, "controls": ("epochs", "train_loss"), "target_loss": 0.3,
                   "max_epochs_cap": 20}
_FLATNESS_FULL = {"n_seeds": 3, "controls": ("epochs", "train_loss"), "target_loss": 0.1,
                  "max_epochs_cap": 60}


def _controls(study):
    """The training controls in a flatness study's results, each with its figure-name suffix
    (none for "epochs", so that a study with one control keeps its figure names)."""
    if not len(study.results_):
        return [(None, "")]
    return [(c, "" if c == "epochs" else f"_{c}") for c in pd.unique(study.results_["control"])]


def _render_interpolation(study):
    from .plotting.flatness import plot_interpolation

    pairs = list(pd.unique(study.results_["pair"]))
    figures = {f"interpolation_{pair}{suffix}": plot_interpolation(study, pair=pair,
                                                                   control=control)
               for control, suffix in _controls(study) for pair in pairs}
    return figures, _tables(study, seed_summary=study.seed_summary_)


register(
    Experiment("1-3-interpolation", "Flatness vs generalization: interpolation between "
               "two minima (batch size and learning rate pairs)", needs_mnist=True,
               build=_mnist_builder(InterpolationStudy, False),
               render=_render_interpolation, findings=findings.interpolation_findings),
    quick={**_FLATNESS_QUICK, "estimator": _spec("classifier", **_FLATNESS, max_epochs=5),
           "data_n_train": 6000, "data_n_test": 2000},
    full={**_FLATNESS_FULL, "estimator": _spec("classifier", **_FLATNESS, max_epochs=5),
          "data_n_train": None, "data_n_test": None},
)


def _render_sensitivity(study):
    from .plotting.flatness import plot_sensitivity, plot_sharpness

    figures = {}
    for control, suffix in _controls(study):
        figures.update({
            f"sensitivity{suffix}": plot_sensitivity(study, control=control),
            f"loss_gradient_sensitivity{suffix}": plot_sensitivity(
                study, measure="loss_input_gradient_norm", control=control),
            f"sharpness{suffix}": plot_sharpness(study, control=control)})
    return figures, _tables(study)


register(
    Experiment("1-3-sensitivity", "Flatness vs generalization: sensitivity and sharpness "
               "vs batch size", needs_mnist=True,
               build=_mnist_builder(SensitivityStudy, False),
               render=_render_sensitivity, findings=findings.sensitivity_findings),
    quick={**_FLATNESS_QUICK, "n_eval": 500, "sharpness_steps": 10, "sharpness_restarts": 2,
           "hessian_max_iter": 30, "estimator": _spec("classifier", **_FLATNESS, max_epochs=5),
           "data_n_train": 6000, "data_n_test": 2000},
    full={**_FLATNESS_FULL, "n_eval": 1000,
          "estimator": _spec("classifier", **_FLATNESS, max_epochs=5),
          "data_n_train": None, "data_n_test": None},
)
