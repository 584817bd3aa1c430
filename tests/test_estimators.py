"""Tests for hw1sk.estimators: sklearn contract, checks, seeding, fast iterator, divergence."""

import io
import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from skorch.history import History
from torch.utils.data import DataLoader, Subset

from hw1sk.callbacks import GradNormTrace, WeightTrace
from hw1sk.estimators import (
    DivergenceWarning,
    NeuralClassifier,
    NeuralRegressor,
    TensorBatchIterator,
    TrainingHistory,
)
from hw1sk.models import CNN, MLP, RowRNN
from hw1sk.parameters import flatten_parameters
from hw1sk.seeding import spawn_seeds, torch_generator


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny nets: extra threads only add start-up and contention costs
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def blobs():
    rng = np.random.RandomState(0)
    X = rng.randn(90, 4)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 1).astype(int)
    return X, y


@pytest.fixture
def wave():
    X = np.linspace(-2, 2, 64)[:, None]
    return X, np.sin(2 * X[:, 0])


@pytest.fixture
def images():
    """Dark images are class 0, bright images class 1."""
    rng = np.random.RandomState(0)
    y = np.arange(48) % 2
    X = rng.rand(48, 1, 8, 8).astype(np.float32) * 0.3 + 0.7 * y[:, None, None, None]
    return X.astype(np.float32), y


class BatchRecorder(Callback):
    """Remembers the targets of every training batch."""

    def initialize(self):
        self.batches_ = []
        return self

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        if training:
            self.batches_.append(batch[1].detach().clone())


# ------------------------------------------------------------------ contract
def test_defaults_are_stored_unchanged():
    clf, reg = NeuralClassifier(), NeuralRegressor()
    params = clf.get_params()
    assert params["module"] == "mlp"
    assert params["criterion"] is torch.nn.CrossEntropyLoss
    assert reg.get_params()["criterion"] is torch.nn.MSELoss
    assert params["optimizer"] is torch.optim.Adam
    assert (params["lr"], params["max_epochs"], params["batch_size"]) == (1e-3, 10, 64)
    assert params["train_split"] is None and params["random_state"] is None
    assert params["verbose"] == 0 and params["device"] == "cpu"
    assert not any(k.startswith("_") for k in params)


def test_set_params_and_clone(blobs):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(3,), max_epochs=2, random_state=1)
    est.set_params(module__hidden=(5,), lr=0.05)
    assert est.get_params()["module__hidden"] == (5,) and est.lr == 0.05
    est.fit(X, y)
    assert est.module_.hidden == (5,)
    twin = clone(est)
    assert twin.get_params()["module__hidden"] == (5,) and twin.lr == 0.05
    assert not hasattr(twin, "module_")
    with pytest.raises(NotFittedError):
        twin.predict(X)
    # set_params on a fitted net rebuilds the module with the new widths
    est.set_params(module__hidden=(7,))
    assert est.module_.hidden == (7,)


def test_grid_search_over_module_and_lr(blobs):
    X, y = blobs
    grid = {"module__hidden": [(4,), (8,)], "lr": [1e-3, 3e-2]}
    search = GridSearchCV(NeuralClassifier(max_epochs=3, random_state=0), grid, cv=2).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    best = search.best_estimator_
    assert best.module_.hidden == search.best_params_["module__hidden"]
    assert best.lr == search.best_params_["lr"]
    assert best.predict(X).shape == (len(X),)


def test_pipeline_scales_before_regressor(wave):
    X, y = wave
    X = 1000.0 * X + 5.0
    pipe = make_pipeline(StandardScaler(),
                         NeuralRegressor(module__hidden=(8,), max_epochs=3, random_state=0))
    pipe.fit(X, y)
    scaled = pipe[0].transform(X)
    np.testing.assert_allclose(pipe.predict(X), pipe[-1].predict(scaled))
    assert abs(pipe[-1].history_["train_loss"].iloc[0]) < 10  # trained on scaled inputs


@pytest.mark.parametrize("dump", ["pickle", "joblib"])
def test_pickle_and_joblib_keep_model_history_and_traces(blobs, dump):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(6,), max_epochs=4, random_state=0,
                           callbacks=[("weights", WeightTrace(every=2)),
                                      ("grads", GradNormTrace())]).fit(X, y)
    if dump == "pickle":
        loaded = pickle.loads(pickle.dumps(est))
    else:
        buffer = io.BytesIO()
        joblib.dump(est, buffer)
        buffer.seek(0)
        loaded = joblib.load(buffer)
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    pd.testing.assert_frame_equal(loaded.history_, est.history_)
    old, new = dict(est.callbacks_), dict(loaded.callbacks_)
    np.testing.assert_array_equal(new["weights"].to_array(), old["weights"].to_array())
    assert new["grads"].grad_norms_ == old["grads"].grad_norms_
    assert loaded.diverged_ is False
    loaded.partial_fit(X, y)  # a loaded net keeps training
    assert len(loaded.history) == 8 and len(new["grads"].grad_norms_) == 16


# ------------------------------------------------------------------- history
def test_history_frame_one_row_per_epoch(blobs):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(6,), max_epochs=3, batch_size=32,
                           random_state=0).fit(X, y)
    frame = est.history_
    assert isinstance(frame, pd.DataFrame) and "batches" not in frame
    assert frame["epoch"].tolist() == [1, 2, 3]
    assert frame["train_batch_count"].tolist() == [3, 3, 3]
    for row, (_, rec) in zip(est.history, frame.iterrows()):
        losses = [b["train_loss"] for b in row["batches"]]
        sizes = [b["train_batch_size"] for b in row["batches"]]
        assert sizes == [32, 32, 26]
        assert rec["train_loss"] == pytest.approx(np.average(losses, weights=sizes))
    best = frame["train_loss"].cummin() == frame["train_loss"]
    assert frame["train_loss_best"].tolist() == best.tolist()
    assert not frame["diverged"].any()
    # skorch's multi-level indexing still works on the fast history
    assert est.history[:, "train_loss"] == frame["train_loss"].tolist()
    assert est.history[-1, "batches", -1, "train_batch_size"] == 26


def test_training_history_matches_skorch_history():
    rows = [{"epoch": 1, "batches": [{"a": 1}]}, {"epoch": 2, "batches": []}]
    fast, slow = TrainingHistory([dict(r) for r in rows]), History([dict(r) for r in rows])
    assert fast[-1] == slow[-1] and fast[0] == slow[0]
    for h in (fast, slow):
        h.new_batch()
        h.record_batch("b", 3)
        h.record("c", 4)
    assert list(fast) == list(slow)
    assert fast[:, "epoch"] == slow[:, "epoch"]
    with pytest.raises(ValueError, match="new_epoch"):
        TrainingHistory().record("x", 1)


def test_history_before_fit_is_not_fitted():
    with pytest.raises(NotFittedError, match="no history"):
        NeuralRegressor().history_


def test_running_train_accuracy_counts_batch_predictions(blobs):
    X, y = blobs
    est = NeuralClassifier(module__hidden=(6,), max_epochs=1, batch_size=-1, lr=0.0,
                           random_state=0).fit(X, y)
    # lr=0: the trained module is the one the full batch saw
    acc = (est.predict(X) == y).mean()
    assert est.history_["train_acc"].iloc[0] == pytest.approx(acc)
    assert est.score(X, y) == pytest.approx(acc)


def test_predefined_validation_loss_equals_loss_of_final_module(wave):
    X, y = wave
    Xv, yv = X[::4] + 0.05, y[::4]
    est = NeuralRegressor(module__hidden=(8,), max_epochs=2, random_state=0,
                          train_split=predefined_split(
                              Dataset(Xv.astype(np.float32), yv[:, None].astype(np.float32))))
    est.fit(X, y)
    mse = float(np.mean((est.predict(Xv) - yv) ** 2))
    assert est.history_["valid_loss"].iloc[-1] == pytest.approx(mse, rel=1e-5)
    assert est.history_["valid_batch_count"].tolist() == [1, 1]


def test_classifier_validation_accuracy_and_verbose_log(blobs, capsys):
    X, y = blobs
    Xv, yv = X[:30].astype(np.float32), y[:30]
    clf = NeuralClassifier(module__hidden=(6,), max_epochs=2, random_state=0,
                           train_split=predefined_split(Dataset(Xv, yv))).fit(X, y)
    assert capsys.readouterr().out == ""  # verbose=0 prints nothing
    assert clf.history_["valid_acc"].iloc[-1] == pytest.approx((clf.predict(Xv) == yv).mean())
    clf.set_params(verbose=1).fit(X, y)
    log = capsys.readouterr().out
    epoch_rows = [line for line in log.splitlines() if line.strip()[:1].isdigit()]
    assert "train_loss" in log and "valid_acc" in log and len(epoch_rows) == 2


# ------------------------------------------------------------------- seeding
def test_random_state_reproducible_and_leaves_global_rng(blobs):
    X, y = blobs
    before = torch.get_rng_state()
    fits = [NeuralClassifier(module__hidden=(6,), max_epochs=3, batch_size=16,
                             random_state=7).fit(X, y) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), before)
    np.testing.assert_array_equal(fits[0].predict_proba(X), fits[1].predict_proba(X))
    assert torch.equal(flatten_parameters(fits[0].module_), flatten_parameters(fits[1].module_))
    other = NeuralClassifier(module__hidden=(6,), max_epochs=3, batch_size=16,
                             random_state=8).fit(X, y)
    assert not torch.equal(flatten_parameters(other.module_), flatten_parameters(fits[0].module_))
    # refitting the same estimator starts again from the same seed
    refit = clone(fits[0]).fit(X, y).fit(X, y)
    np.testing.assert_array_equal(refit.predict_proba(X), fits[0].predict_proba(X))


def test_tensor_and_float64_inputs_give_the_same_fit(blobs):
    X, y = blobs
    a = NeuralClassifier(module__hidden=(6,), max_epochs=2, random_state=3).fit(X, y)
    b = NeuralClassifier(module__hidden=(6,), max_epochs=2, random_state=3).fit(
        torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y))
    assert next(a.module_.parameters()).dtype == torch.float32
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(torch.from_numpy(X)))


# -------------------------------------------------------------------- inputs
def test_bad_inputs_raise_clear_errors(blobs):
    X, y = blobs
    clf = NeuralClassifier(module__hidden=(4,), max_epochs=1, random_state=0)
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.fit(bad, y)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        clf.fit(bad, y)
    with pytest.raises(ValueError, match="NaN or infinity"):
        clf.fit(torch.from_numpy(bad), y)
    huge = np.full_like(X, 3e38)  # finite, though its float32 sum overflows: accepted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # training on it diverges, of course
        clf.fit(huge, y)
    read_only = X.copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no "not writable" warning from torch
        clf.fit(read_only, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        clf.fit(X, y + 0.5)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        clf.fit(X, y[:-1])
    with pytest.raises(ValueError, match="requires y"):
        clf.fit(X, None)
    with pytest.raises(ValueError, match=r"not in classes_ \[0, 1\]"):
        NeuralClassifier(classes=[0, 1], max_epochs=1).fit(X, y)
    clf.fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but NeuralClassifier is "
                                         "expecting 4 features as input"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="Expected 2D array"):
        clf.predict(X[0])


def test_image_shape_mismatch_names_both_shapes(images):
    X, y = images
    clf = NeuralClassifier(module="cnn", module__channels=(2,), max_epochs=1,
                           random_state=0).fit(X, y)
    assert clf.input_shape_ == (1, 8, 8) and clf.n_features_in_ == 64
    with pytest.raises(ValueError, match=r"samples of shape \(1, 6, 6\), but NeuralClassifier"
                                         r" is expecting samples of shape \(1, 8, 8\)"):
        clf.predict(X[:, :, :6, :6])


def test_string_and_offset_labels_round_trip(blobs):
    X, y = blobs
    names = np.array(["cat", "dog", "emu"])[y]
    clf = NeuralClassifier(module__hidden=(8,), max_epochs=30, lr=3e-2, random_state=0)
    clf.fit(X, names)
    assert clf.classes_.tolist() == ["cat", "dog", "emu"]
    assert clf.module_.net[-1].out_features == 3
    assert set(clf.predict(X)) <= set(clf.classes_)
    assert clf.score(X, names) > 0.8
    offset = NeuralClassifier(module__hidden=(8,), max_epochs=2, random_state=0).fit(X, y + 5)
    assert offset.classes_.tolist() == [5, 6, 7]
    # labels are encoded in classes_ order: the same fit as on 0..2
    plain = NeuralClassifier(module__hidden=(8,), max_epochs=2, random_state=0).fit(X, y)
    np.testing.assert_array_equal(offset.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("shape", [(64,), (64, 1), (64, 3)])
def test_regressor_target_shapes(wave, shape):
    X, y = wave
    Y = np.stack([y, -y, 2 * y], axis=1)[:, : (shape[1] if len(shape) == 2 else 1)]
    target = Y.reshape(shape)
    reg = NeuralRegressor(module__hidden=(4,), max_epochs=1, random_state=0).fit(X, target)
    assert reg.n_outputs_ == (shape[1] if len(shape) == 2 else 1)
    pred = reg.predict(X)
    assert pred.shape == shape and pred.dtype == np.float64
    assert not hasattr(reg, "predict_proba")


def test_classifier_probabilities_are_softmax_of_logits(blobs):
    X, y = blobs
    clf = NeuralClassifier(module__hidden=(6,), max_epochs=2, random_state=0).fit(X, y)
    with torch.no_grad():
        logits = clf.module_(torch.from_numpy(X.astype(np.float32))).double()
    expected = torch.softmax(logits, dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(clf.predict(X), expected.argmax(1))


# ---------------------------------------------------------------- zoo models
@pytest.mark.parametrize("name, params, cls", [
    ("mlp", {"module__hidden": (5,)}, MLP),
    ("mlp_budget", {"module__n_params": 200, "module__depth": 2}, MLP),
    ("cnn", {"module__channels": (3,)}, CNN),
    ("cnn_budget", {"module__n_params": 120, "module__depth": 1}, CNN),
    ("rnn", {"module__hidden_size": 4}, RowRNN),
])
def test_zoo_names_build_modules_sized_by_the_data(images, name, params, cls):
    X, y = images
    clf = NeuralClassifier(module=name, max_epochs=1, random_state=0, **params).fit(X, y)
    assert isinstance(clf.module_, cls)
    assert clf.predict_proba(X).shape == (len(X), 2)


def test_unknown_zoo_name():
    with pytest.raises(ValueError, match="Unknown model 'resnet'"):
        NeuralRegressor(module="resnet").fit(np.zeros((4, 2)), np.zeros(4))


def test_module_instance_and_class_are_accepted(wave):
    X, y = wave
    instance = MLP(1, (3,), 1)
    reg = NeuralRegressor(module=instance, max_epochs=1).fit(X, y)
    assert reg.module_ is instance
    reg = NeuralRegressor(module=MLP, module__hidden=(2,), max_epochs=1, random_state=0).fit(X, y)
    assert reg.module_.hidden == (2,)


def test_tiny_cnn_learns_bright_vs_dark_images(images):
    X, y = images
    clf = NeuralClassifier(module="cnn", module__channels=(4,), lr=3e-2, max_epochs=15,
                           batch_size=16, random_state=0).fit(X, y)
    assert clf.score(X, y) == 1.0
    np.testing.assert_allclose(clf.predict_proba(X).sum(1), 1.0, rtol=1e-6)


# ------------------------------------------------------------------ divergence
def test_divergence_stops_training_and_is_recorded(wave):
    X, y = wave
    reg = NeuralRegressor(module__hidden=(8,), optimizer=torch.optim.SGD, lr=1.0,
                          max_epochs=100, batch_size=-1, random_state=0,
                          callbacks=[GradNormTrace()])
    with pytest.warns(DivergenceWarning, match="diverged_ is True"):
        reg.fit(X, 1e6 * y)
    assert reg.diverged_ is True
    frame = reg.history_
    assert len(frame) < 100
    assert frame["diverged"].iloc[-1] and not frame["diverged"].iloc[:-1].any()
    last = frame["train_loss"].iloc[-1]
    assert not np.isfinite(last) or last > reg.divergence_factor * reg.initial_loss_
    assert "starting loss" in reg.divergence_reason_ or "became" in reg.divergence_reason_
    assert len(reg.callbacks[0].grad_norms_) == len(frame)
    healthy = NeuralRegressor(module__hidden=(8,), max_epochs=3, random_state=0).fit(X, y)
    assert healthy.diverged_ is False


# ------------------------------------------------------------ skorch routing
def test_skorch_routing_reaches_optimizer_iterator_and_callbacks(wave):
    X, y = wave
    recorder = BatchRecorder()
    reg = NeuralRegressor(module__hidden=(4,), optimizer=torch.optim.SGD,
                          optimizer__momentum=0.9, lr=0.01, max_epochs=2, batch_size=16,
                          iterator_train__shuffle=False,
                          callbacks=[("trace", WeightTrace()), ("rec", recorder)],
                          callbacks__trace__every=2, random_state=0).fit(X, y)
    assert reg.optimizer_.param_groups[0]["momentum"] == 0.9
    assert dict(reg.callbacks_)["trace"].epochs_ == [0, 2]
    expected = torch.from_numpy(y.astype(np.float32)).reshape(-1, 1).split(16)
    assert all(torch.equal(a, b) for a, b in zip(recorder.batches_, list(expected) * 2))


def test_partial_fit_and_warm_start_continue(wave):
    X, y = wave
    trace = WeightTrace()
    reg = NeuralRegressor(module__hidden=(4,), max_epochs=2, random_state=0, callbacks=[trace])
    reg.partial_fit(X, y)
    first = flatten_parameters(reg.module_)
    reg.partial_fit(X, y)
    assert reg.history_["epoch"].tolist() == [1, 2, 3, 4]
    assert trace.epochs_ == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(trace.snapshots_[2], first.numpy())
    reg.fit(X, y)  # fit re-initializes: history and trace start over
    assert reg.history_["epoch"].tolist() == [1, 2] and trace.epochs_ == [0, 1, 2]
    reg.set_params(warm_start=True).fit(X, y)
    assert reg.history_["epoch"].tolist() == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="X has 2 features"):
        reg.partial_fit(np.hstack([X, X]), y)


def test_classifier_partial_fit_with_classes(blobs):
    X, y = blobs
    clf = NeuralClassifier(module__hidden=(4,), max_epochs=1, random_state=0)
    clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert clf.classes_.tolist() == [0, 1, 2] and clf.module_.net[-1].out_features == 3
    clf.partial_fit(X, y)
    assert len(clf.history) == 2


def test_dataloader_iterator_and_dataset_input(blobs):
    X, y = blobs
    Xf = X.astype(np.float32)
    loader_fits = [NeuralClassifier(module__hidden=(4,), max_epochs=2, batch_size=16,
                                    iterator_train=DataLoader, random_state=5).fit(Xf, y)
                   for _ in range(2)]
    np.testing.assert_array_equal(loader_fits[0].predict_proba(X), loader_fits[1].predict_proba(X))
    # a Dataset goes to skorch unchecked; predictions still come out per sample
    ds_fit = NeuralClassifier(module__hidden=(4,), module__n_in=4, module__n_out=3,
                              max_epochs=1, random_state=5).fit(Dataset(Xf, y), None)
    assert ds_fit.predict(Dataset(Xf)).shape == (len(X),)


# --------------------------------------------------------------- the iterator
def _dataset(n):
    return Dataset(np.arange(2 * n, dtype=np.float32).reshape(n, 2), np.arange(n))


def test_iterator_visits_every_sample_once_per_epoch_reproducibly():
    it = TensorBatchIterator(_dataset(10), batch_size=3, shuffle=True,
                             generator=torch.Generator().manual_seed(0))
    epochs = [[yb.clone() for _, yb in it] for _ in range(2)]
    for batches in epochs:
        assert [len(b) for b in batches] == [3, 3, 3, 1] and len(it) == 4
        assert sorted(torch.cat(batches).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))  # reshuffled
    again = TensorBatchIterator(_dataset(10), batch_size=3, shuffle=True,
                                generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat([yb for _, yb in again]), torch.cat(epochs[0]))
    # the permutation is torch.randperm's, and X rows stay with their labels
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.cat(epochs[0]), perm)
    for Xb, yb in TensorBatchIterator(_dataset(10), batch_size=4, shuffle=True):
        assert torch.equal(Xb[:, 0], 2 * yb.float())


def test_iterator_in_order_drop_last_full_batch_and_subset():
    ds = _dataset(10)
    ordered = [yb.tolist() for _, yb in TensorBatchIterator(ds, batch_size=4)]
    assert ordered == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = TensorBatchIterator(ds, batch_size=4, drop_last=True)
    assert [yb.tolist() for _, yb in dropped] == ordered[:2] and len(dropped) == 2
    full = TensorBatchIterator(ds, batch_size=10, shuffle=True)
    (Xb, yb), = list(full)
    assert Xb.data_ptr() == full.tensors_[0].data_ptr()  # the tensor itself, no copy
    sub = TensorBatchIterator(Subset(Subset(ds, [1, 3, 5, 7]), [0, 2]), batch_size=5)
    assert [yb.tolist() for _, yb in sub] == [[1, 5]]
    no_y = TensorBatchIterator(Dataset(ds.X), batch_size=6)
    assert [yb for _, yb in no_y] == [None, None]


def test_iterator_falls_back_to_dataloader_for_custom_datasets():
    class Squares(torch.utils.data.Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return torch.tensor([float(i)]), i * i

    it = TensorBatchIterator(Squares(), batch_size=3)
    assert it.loader_ is not None and len(it) == 3
    assert torch.cat([yb for _, yb in it]).tolist() == [i * i for i in range(7)]


def test_estimator_trains_on_the_seeded_permutations(wave):
    X, y = wave
    recorder = BatchRecorder()
    NeuralRegressor(module__hidden=(4,), max_epochs=2, batch_size=20, random_state=11,
                    callbacks=[recorder]).fit(X, y)
    generator = torch_generator(spawn_seeds(11, 2)[1])
    targets = torch.from_numpy(y.astype(np.float32)).reshape(-1, 1)
    expected = []
    for _ in range(2):
        perm = torch.randperm(len(y), generator=generator)
        expected += [targets[perm[i:i + 20]] for i in range(0, len(y), 20)]
    assert len(recorder.batches_) == len(expected) == 8
    assert all(torch.equal(a, b) for a, b in zip(recorder.batches_, expected))


# ------------------------------------------------------- parameter checks at fit
@pytest.mark.parametrize("name, value", [
    ("batch_size", 0), ("batch_size", -5), ("batch_size", 2.5), ("batch_size", True),
    ("max_epochs", 0), ("max_epochs", -3), ("max_epochs", 1.5), ("lr", -1e-3),
    ("divergence_factor", 0.5), ("device", "tpu"), ("device", 3),
])
def test_bad_training_parameters_fail_at_fit_naming_the_parameter(blobs, name, value):
    X, y = blobs
    clf = NeuralClassifier(module__hidden=(4,), max_epochs=2).set_params(**{name: value})
    with pytest.raises(ValueError, match=rf"'{name}' parameter of NeuralClassifier"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match=rf"'{name}' parameter of NeuralClassifier"):
        clf.partial_fit(X, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is there")
def test_cuda_without_cuda_is_a_clear_error(wave):
    with pytest.raises(ValueError, match="CUDA is not available"):
        NeuralRegressor(device="cuda", max_epochs=1).fit(*wave)


# ------------------------------------------------------------ divergence rule
def test_a_finite_but_exploding_loss_counts_as_diverged(blobs):
    X, y = blobs
    kw = dict(module__hidden=(16,), lr=1e6, max_epochs=30, batch_size=16, random_state=0)
    with pytest.warns(DivergenceWarning, match="times the starting loss"):
        clf = NeuralClassifier(**kw).fit(X, y)
    assert clf.diverged_ and len(clf.history_) < 30
    assert clf.history_["train_loss"].iloc[-1] < np.inf  # finite: only the rule caught it
    off = NeuralClassifier(**kw, divergence_factor=None).fit(X, y)
    assert not off.diverged_ and len(off.history_) == 30


def test_the_starting_loss_is_the_first_batch_loss(wave):
    X, y = wave
    reg = NeuralRegressor(module__hidden=(4,), batch_size=-1, max_epochs=3, random_state=0).fit(X, y)
    assert reg.initial_loss_ == pytest.approx(reg.history[0]["batches"][0]["train_loss"])
    assert not reg.diverged_


def test_a_study_lists_a_run_that_exploded(wave):
    from hw1sk.studies._base import train_run
    from hw1sk.sweep import RunDiverged

    X, y = wave
    est = NeuralRegressor(module__hidden=(16,), lr=1e6, max_epochs=50, batch_size=8,
                          divergence_factor=10.0)
    with pytest.warns(DivergenceWarning), pytest.raises(RunDiverged, match="starting loss"):
        train_run(est, X, 10 * y, seed=0)


# ----------------------------------------------------- NLLLoss and LogSoftmax
def _log_softmax_mlp(n_in=4, n_out=3):
    return torch.nn.Sequential(torch.nn.Linear(n_in, 8), torch.nn.Tanh(),
                               torch.nn.Linear(8, n_out), torch.nn.LogSoftmax(dim=1))


def test_log_softmax_module_with_nll_loss_trains_like_cross_entropy(blobs):
    X, y = blobs
    kw = dict(max_epochs=20, batch_size=-1, lr=1e-2, random_state=0)
    nll = NeuralClassifier(module=_log_softmax_mlp, criterion=torch.nn.NLLLoss, **kw).fit(X, y)
    assert np.isfinite(nll.history_["train_loss"]).all() and not nll.diverged_
    assert nll.history_["train_loss"].iloc[-1] < nll.history_["train_loss"].iloc[0]
    proba = nll.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    with torch.no_grad():
        log_p = nll.module_(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(proba, np.exp(log_p), rtol=1e-5)
    hand = -log_p[np.arange(len(y)), y].mean()  # the loss it reports is the NLL of log p
    last = nll.get_loss(torch.as_tensor(log_p), torch.as_tensor(y)).item()
    assert last == pytest.approx(hand, rel=1e-6)


def test_nll_loss_on_raw_scores_stops_at_once(blobs):
    X, y = blobs
    clf = NeuralClassifier(module__hidden=(8,), criterion=torch.nn.NLLLoss, max_epochs=3)
    with pytest.raises(ValueError, match="LogSoftmax"):
        clf.fit(X, y)


def test_nll_loss_on_probabilities_keeps_skorchs_convention(blobs):
    X, y = blobs

    def softmax_mlp(n_in=4, n_out=3):
        return torch.nn.Sequential(torch.nn.Linear(n_in, 8), torch.nn.Tanh(),
                                   torch.nn.Linear(8, n_out), torch.nn.Softmax(dim=1))

    clf = NeuralClassifier(module=softmax_mlp, criterion=torch.nn.NLLLoss, max_epochs=10,
                           batch_size=-1, lr=1e-2, random_state=0).fit(X, y)
    assert np.isfinite(clf.history_["train_loss"]).all()
    np.testing.assert_allclose(clf.predict_proba(X).sum(1), 1.0, rtol=1e-5)
