"""Every classification study on labels other than 0..k-1: {3, 7}, strings, a declared order.

Each study is fitted on a tiny two-class problem whose labels are ``{3, 7}``,
``{"three", "seven"}`` or ``{3, 7}`` with the classes declared in the
non-sorted order ``[7, 3]`` (the estimator's ``classes``).  The losses and
accuracies it reports must equal a hand computation: the softmax
cross-entropy computed with numpy from the trained module's logits, each
label mapped to its position in the classes by ``list.index``, and, where the
study keeps the fitted estimator, its ``score``.  (MinimalRatioStudy is a
regression study and takes no class labels.)
"""

import copy

import numpy as np
import pytest
import torch
from sklearn.base import clone

from hw1sk.estimators import NeuralClassifier
from hw1sk.parameters import assign_flat_parameters
from hw1sk.studies.deep_shallow import DeepShallowStudy
from hw1sk.studies.error_surface import ErrorSurfaceStudy
from hw1sk.studies.interpolation import InterpolationStudy
from hw1sk.studies.optimization import OptimizationStudy
from hw1sk.studies.param_count import ParamCountStudy
from hw1sk.studies.random_labels import RandomLabelStudy
from hw1sk.studies.sensitivity import SensitivityStudy
from hand_scoring import hand_scores

#: label values and the declared classes (None: the sorted labels, as classifiers infer them)
LABELS = {
    "digits": ((3, 7), None),
    "strings": (("three", "seven"), None),
    "declared": ((3, 7), [7, 3]),
}

REL = 1e-5  # float32 forward passes; the hand computation is float64 from the same logits


@pytest.fixture(scope="module", params=list(LABELS))
def labelled(request):
    """``(X, y, X_test, y_test, classes, declared)``: 80 + 40 samples in 6-D, two classes."""
    values, declared = LABELS[request.param]
    rng = np.random.RandomState(0)
    X = rng.randn(120, 6).astype(np.float32)
    positive = X @ rng.randn(6) > 0
    y = np.where(positive, values[1], values[0])
    classes = np.asarray(declared) if declared is not None else np.unique(y)
    return X[:80], y[:80], X[80:], y[80:], classes, declared


def _classifier(declared, **params):
    kwargs = dict(module="mlp", module__hidden=(4,))
    if declared is not None:
        kwargs["classes"] = declared
    kwargs.update(params)
    return NeuralClassifier(**kwargs)


def _assert_scores(loss, accuracy, module, classes, X, y, net=None):
    hand_loss, hand_accuracy = hand_scores(module, classes, X, y)
    assert loss == pytest.approx(hand_loss, rel=REL)
    assert accuracy == pytest.approx(hand_accuracy)
    if net is not None:
        assert accuracy == pytest.approx(net.score(X, y))


# --------------------------------------------------------------------------- HW1-1
def test_deep_shallow_study(labelled):
    X, y, X_test, y_test, classes, declared = labelled
    study = DeepShallowStudy(models={"narrow": {"module": "mlp", "module__hidden": (4,)}},
                             estimator=_classifier(declared), max_epochs=2, batch_size=16,
                             plateau_patience=None, backend="sequential").fit(X, y, X_test, y_test)
    row = study.summary_.iloc[0]
    (module,) = study.modules_.values()
    _assert_scores(row["train_loss"], row["train_acc"], module, classes, X, y)
    _assert_scores(row["test_loss"], row["test_acc"], module, classes, X_test, y_test)
    last = study.results_.iloc[-1]
    assert last["test_loss"] == pytest.approx(row["test_loss"], rel=REL)


# --------------------------------------------------------------------------- HW1-2
def test_optimization_study(labelled):
    X, y, X_test, y_test, classes, declared = labelled
    study = OptimizationStudy(_classifier(declared), n_runs=1, every=1, max_epochs=2,
                              batch_size=16, backend="sequential").fit(X, y, X_test, y_test)
    row = study.summary_.iloc[0]
    module = study.modules_[0]
    _assert_scores(row["train_loss"], row["train_accuracy"], module, classes, X, y)
    _assert_scores(row["test_loss"], row["test_accuracy"], module, classes, X_test, y_test)
    # every snapshot is scored with the module's criterion: the initial weights too
    snapshots = study.results_[study.results_["scope"] == "model"].set_index("epoch")
    initial = copy.deepcopy(module)
    assign_flat_parameters(initial, torch.as_tensor(study.trajectories_[0][0]))
    _assert_scores(snapshots.loc[0, "loss"], snapshots.loc[0, "accuracy"], initial, classes,
                   X, y)
    _assert_scores(snapshots.loc[2, "loss"], snapshots.loc[2, "accuracy"], module, classes,
                   X, y)


def test_error_surface_study(labelled):
    X, y, _, _, classes, declared = labelled
    study = ErrorSurfaceStudy(_classifier(declared), directions="random", max_epochs=2,
                              batch_size=16, n_eval=None, line_points=3, surface_points=3,
                              backend="sequential").fit(X, y)
    module = study.module_
    line = study.line_.set_index("alpha")
    _assert_scores(study.summary_["train_loss"].iloc[0], line.loc[0.0, "accuracy"], module,
                   classes, X, y)
    _assert_scores(line.loc[0.0, "loss"], line.loc[0.0, "accuracy"], module, classes, X, y)
    hand_loss, _ = hand_scores(module, classes, X, y)
    assert study.summary_["center_loss"].iloc[0] == pytest.approx(hand_loss, rel=REL)
    assert study.trajectory_coords_["loss"].iloc[-1] == pytest.approx(hand_loss, rel=REL)


# --------------------------------------------------------------------------- HW1-3 generalization
def test_random_label_study(labelled):
    X, y, X_test, y_test, classes, declared = labelled
    study = RandomLabelStudy(_classifier(declared, module__hidden=(8,)), n_train=None,
                             n_test=None, max_epochs=2, batch_size=16,
                             backend="sequential").fit(X, y, X_test, y_test)
    net = study.estimator_
    assert list(net.classes_) == list(classes)
    np.testing.assert_array_equal(np.sort(study.random_labels_), np.sort(y))  # a permutation
    summary = study.summary_.iloc[0]
    assert summary["chance_accuracy"] == 0.5
    _assert_scores(summary["train_loss"], summary["train_accuracy"], net.module_, classes, X,
                   study.random_labels_, net)
    _assert_scores(summary["test_loss"], summary["test_accuracy"], net.module_, classes,
                   X_test, y_test, net)
    last_test = study.results_[study.results_["split"] == "test"].iloc[-1]
    assert last_test["loss"] == pytest.approx(summary["test_loss"], rel=REL)


def test_random_label_study_uniform_labels_are_drawn_from_the_classes(labelled):
    X, y, X_test, y_test, classes, declared = labelled
    study = RandomLabelStudy(_classifier(declared), n_train=None, n_test=None, max_epochs=1,
                             label_method="uniform", backend="sequential").fit(X, y, X_test,
                                                                                y_test)
    assert set(study.random_labels_.tolist()) == set(classes.tolist())
    assert study.settings_["n_classes"] == 2


def test_param_count_study(labelled):
    X, y, X_test, y_test, classes, declared = labelled
    study = ParamCountStudy(_classifier(declared), widths=(2, 4), max_epochs=2, batch_size=16,
                            n_train=None, backend="sequential").fit(X, y, X_test, y_test)
    for _, row in study.results_.iterrows():
        # the same training by hand (ParamCountStudy keeps no estimators)
        net = _classifier(declared, module__hidden=(int(row["width"]),), lr=1e-3,
                          batch_size=16, max_epochs=2, random_state=int(row["seed"])).fit(X, y)
        _assert_scores(row["train_loss"], row["train_accuracy"], net.module_, classes, X, y,
                       net)
        _assert_scores(row["test_loss"], row["test_accuracy"], net.module_, classes, X_test,
                       y_test, net)
    last = study.histories_.groupby("width").tail(1).set_index("width")
    np.testing.assert_allclose(last["test_loss"], study.results_["test_loss"], rtol=REL)


# --------------------------------------------------------------------------- HW1-3 flatness
def test_interpolation_study(labelled):
    X, y, X_test, y_test, classes, declared = labelled
    study = InterpolationStudy(_classifier(declared, batch_size=16), pairs="lr", max_epochs=2,
                               alphas=[0, 0.5, 1], backend="sequential").fit(X, y, X_test,
                                                                            y_test)
    results = study.results_.set_index(["alpha", "split"])
    nets = {0.0: study.estimators_[("lr", 1)], 1.0: study.estimators_[("lr", 2)],
            0.5: study.interpolators_["lr"].interpolate(0.5)}
    for alpha, net in nets.items():
        for split, Xs, ys in (("train", X, y), ("test", X_test, y_test)):
            got = results.loc[(alpha, split)]
            _assert_scores(got["loss"], got["accuracy"], net.module_, classes, Xs, ys, net)


def test_sensitivity_study(labelled):
    X, y, X_test, y_test, classes, declared = labelled
    estimator = _classifier(declared)
    study = SensitivityStudy(estimator, batch_sizes=(16,), max_epochs=2, n_eval=20,
                             sharpness_steps=1, sharpness_restarts=1, hessian_max_iter=3,
                             backend="sequential").fit(X, y, X_test, y_test)
    row = study.results_.iloc[0]
    net = clone(estimator).set_params(batch_size=16, lr=1e-3, max_epochs=2,
                                      random_state=int(row["seed"])).fit(X, y)
    _assert_scores(row["train_loss"], row["train_accuracy"], net.module_, classes, X, y, net)
    _assert_scores(row["test_loss"], row["test_accuracy"], net.module_, classes, X_test,
                   y_test, net)
    # the loss-gradient sensitivity takes the labels' class indices, by autograd here
    idx = study.eval_indices_["sensitivity"]
    x = torch.as_tensor(X_test[idx]).requires_grad_(True)
    target = torch.as_tensor([list(classes).index(label) for label in y_test[idx]])
    log_proba = torch.log_softmax(net.module_.eval()(x), dim=1)
    (grad,) = torch.autograd.grad(-log_proba[torch.arange(len(idx)), target].sum(), x)
    assert row["loss_input_gradient_norm"] == pytest.approx(float(grad.norm(dim=1).mean()),
                                                            rel=1e-4)
    assert np.isfinite(row[["sensitivity", "sharpness", "top_hessian_eigenvalue"]]
                       .to_numpy(float)).all()
