"""Tests for hw1sk.sweep: order, backend equivalence, cache/resume, divergence, validation."""

import errno
import functools
import os
import pickle
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch

from hw1sk.cache_signing import CacheSigner, config_dir, secret_path
from hw1sk.models import MLP
from hw1sk.parameters import flatten_parameters
from hw1sk.seeding import seed_everything, torch_generator
from hw1sk.sweep import (
    CacheWarning,
    DivergedRun,
    RunDiverged,
    read_cache_file,
    run_sweep,
    start_local_cluster,
)

# loky keeps its workers between calls with the same settings, so every loky
# test uses these to pay the worker start-up once
LOKY = dict(backend="loky", n_jobs=2, threads_per_worker=1)


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    """A fresh per-test config folder, so the cache secret never touches ~/.config."""
    folder = tmp_path / "config"
    monkeypatch.setenv("HW1SK_CONFIG_DIR", str(folder))
    return folder


# -- task functions: module level, so loky and dask workers can import them --


def _mark(marker_dir, x):
    """Leave one file per call, so calls made in other processes can be counted."""
    if marker_dir is not None:
        Path(marker_dir, f"{x}-{os.getpid()}-{uuid.uuid4().hex}").touch()


def square_after(x, delay=0.0, marker_dir=None):
    _mark(marker_dir, x)
    time.sleep(delay)
    return x * x


_GLOBAL_RNG_LOCK = threading.Lock()


def seeded_fit(seed, n_steps=25):
    """A small seeded full-batch MLP fit; returns final loss and flat parameters."""
    gen = torch_generator(seed)
    X = torch.randn(32, 4, generator=gen)
    y = X[:, :1] ** 2 - X[:, 1:2]
    with _GLOBAL_RNG_LOCK:  # threading backend: tasks share torch's global generator
        seed_everything(seed)
        model = MLP(n_in=4, hidden=(16, 8), n_out=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(n_steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        loss = torch.nn.functional.mse_loss(model(X), y)
    return float(loss), flatten_parameters(model).numpy()


def diverge_on_odd(x, marker_dir=None):
    _mark(marker_dir, x)
    if x % 2:
        raise RunDiverged(f"loss is nan for x={x}", info={"losses": [1.0, float("nan")]})
    return x


def thread_settings():
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def malloc_trim_setting():
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _calls(marker_dir, pid=None):
    names = [p.name for p in Path(marker_dir).iterdir()]
    if pid is not None:
        names = [n for n in names if n.split("-")[1] == str(pid)]
    return sorted(int(n.split("-")[0]) for n in names)


def _cache_file(cache_dir, func, task):
    """The documented cache path, ``<cache_dir>/<module.qualname>/<joblib.hash>.pkl``."""
    name = f"{func.__module__}.{func.__qualname__}"
    return Path(cache_dir) / name / f"{joblib.hash((name, task))}.pkl"


# ------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "kwargs",
    [dict(backend="sequential"), dict(backend="threading", n_jobs=3), LOKY],
    ids=["sequential", "threading", "loky"],
)
def test_results_in_task_order(kwargs):
    # later tasks are faster, so in parallel they finish first
    tasks = [{"x": x, "delay": 0.05 * (5 - x)} for x in range(6)]
    assert run_sweep(square_after, tasks, **kwargs) == [x * x for x in range(6)]
    assert run_sweep(square_after, [], **kwargs) == []


def test_backends_give_identical_numbers():
    tasks = [{"seed": s} for s in (0, 1, 2)]
    expected = [seeded_fit(**t) for t in tasks]  # plain calls, no runner
    # the computation is not trivial: seeds differ and training moved the loss
    assert expected[0][0] != expected[1][0]
    assert expected[0][0] != seeded_fit(0, n_steps=0)[0]
    runs = {
        "sequential": run_sweep(seeded_fit, tasks, backend="sequential", threads_per_worker=1),
        "threading": run_sweep(seeded_fit, tasks, backend="threading", n_jobs=2, threads_per_worker=1),
        "loky": run_sweep(seeded_fit, tasks, **LOKY),
    }
    for name, results in runs.items():
        _assert_same_fits(results, expected, name)


def _assert_same_fits(results, expected, name):
    assert len(results) == len(expected), name
    for (loss, params), (loss_ref, params_ref) in zip(results, expected):
        assert loss == loss_ref, name
        np.testing.assert_array_equal(params, params_ref, err_msg=name)


def test_thread_pinning_in_workers_and_restored_in_process():
    before = torch.get_num_threads()
    assert run_sweep(thread_settings, [{}], backend="sequential", threads_per_worker=1)[0][0] == 1
    assert torch.get_num_threads() == before
    got = run_sweep(thread_settings, [{}, {}], **LOKY)
    assert got == [(1, "1"), (1, "1")]


def test_dask_backend(monkeypatch, tmp_path):
    pytest.importorskip("distributed")
    import hw1sk.sweep

    tasks = [{"seed": s} for s in (0, 1, 2)]
    expected = [seeded_fit(**t) for t in tasks]
    hashseed = os.environ.get("PYTHONHASHSEED")  # the nanny sets it to spawn workers
    # one cluster for the whole test: worker start-up is the slow part
    with start_local_cluster(2, threads_per_worker=2) as cluster:
        assert os.environ.get("PYTHONHASHSEED") == hashseed  # this process is left as it was
        by_address = run_sweep(
            seeded_fit, tasks, backend="dask", scheduler=cluster.scheduler_address, threads_per_worker=1
        )
        _assert_same_fits(by_address, expected, "dask")
        order = [{"x": x, "delay": 0.05 * (3 - x)} for x in range(4)]
        assert run_sweep(square_after, order, backend="dask", scheduler=cluster) == [0, 1, 4, 9]
        # the workers sign the cache files with the secret handed to them with the task
        cached = run_sweep(square_after, order, backend="dask", scheduler=cluster,
                           cache_dir=tmp_path / "cache")
        assert cached == [0, 1, 4, 9]
        assert read_cache_file(_cache_file(tmp_path / "cache", square_after, order[3]))["result"] == 9
        # dask's default would be "1": the worker environment comes from start_local_cluster
        got = run_sweep(thread_settings, [{}], backend="dask", scheduler=cluster, threads_per_worker=2)
        assert got == [(2, "2")]
        # dask's default fixed trim threshold slows torch allocations down
        assert run_sweep(malloc_trim_setting, [{}], backend="dask", scheduler=cluster) == [None]

        # without a scheduler, run_sweep starts its own cluster and closes it after
        started = []

        def start_spy(n_workers, threads_per_worker):
            started.append((n_workers, threads_per_worker))
            return cluster

        monkeypatch.setattr(hw1sk.sweep, "start_local_cluster", start_spy)
        own = run_sweep(seeded_fit, tasks, backend="dask", n_jobs=2, threads_per_worker=1)
        _assert_same_fits(own, expected, "dask, own cluster")
        assert started == [(2, 1)]
        assert cluster.status.name == "closed"
    with pytest.raises(ValueError, match="n_workers must be a positive integer or -1, got 0"):
        start_local_cluster(0)


def test_cache_second_run_calls_nothing(tmp_path):
    markers, cache = tmp_path / "markers", tmp_path / "cache"
    markers.mkdir()
    tasks = [{"x": x, "marker_dir": str(markers)} for x in range(5)]
    first = run_sweep(square_after, tasks, cache_dir=cache, **LOKY)
    assert _calls(markers) == list(range(5))
    second = run_sweep(square_after, tasks, cache_dir=cache, **LOKY)
    assert second == first == [x * x for x in range(5)]
    assert _calls(markers) == list(range(5))  # no new calls
    # one file per task, at the documented path, holding the task for inspection
    payload = read_cache_file(_cache_file(cache, square_after, tasks[3]))
    assert payload["task"] == tasks[3] and payload["result"] == 9
    assert len(list(_cache_file(cache, square_after, tasks[0]).parent.glob("*.pkl"))) == 5
    # a new task is the only one computed
    run_sweep(square_after, tasks + [{"x": 7, "marker_dir": str(markers)}], cache_dir=cache, backend="sequential")
    assert _calls(markers) == [0, 1, 2, 3, 4, 7]
    # arguments frozen in a partial are part of the key
    slow = functools.partial(square_after, delay=0.01)
    assert run_sweep(slow, tasks[:2], cache_dir=cache, backend="sequential") == [0, 1]
    assert _calls(markers) == [0, 0, 1, 1, 2, 3, 4, 7]


def test_resume_after_sigkill(tmp_path):
    markers, cache = tmp_path / "markers", tmp_path / "cache"
    markers.mkdir()
    tasks = [{"x": x, "delay": 0.4, "marker_dir": str(markers)} for x in range(8)]
    code = (
        "import importlib\n"
        "from hw1sk.sweep import run_sweep\n"
        f"mod = importlib.import_module({square_after.__module__!r})\n"
        f"run_sweep(mod.square_after, {tasks!r}, backend='sequential', cache_dir={str(cache)!r})\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    folder = _cache_file(cache, square_after, tasks[0]).parent
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.pkl"))) < 2:
        assert proc.poll() is None, "sweep subprocess ended before it was killed"
        assert time.monotonic() < deadline, "sweep subprocess too slow"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = {x for x in range(8) if _cache_file(cache, square_after, tasks[x]).exists()}
    assert 2 <= len(done) < 8

    results = run_sweep(square_after, tasks, backend="sequential", cache_dir=cache)
    assert results == [x * x for x in range(8)]
    # exactly the unfinished tasks were run again, each once
    assert _calls(markers, pid=os.getpid()) == sorted(set(range(8)) - done)


def test_truncated_and_temp_files_are_recomputed(tmp_path):
    markers, cache = tmp_path / "markers", tmp_path / "cache"
    markers.mkdir()
    tasks = [{"x": x, "marker_dir": str(markers)} for x in range(4)]
    run_sweep(square_after, tasks, backend="sequential", cache_dir=cache)
    truncated = _cache_file(cache, square_after, tasks[1])
    truncated.write_bytes(truncated.read_bytes()[:20])
    # a crash mid-write leaves only a temp file: it must not count as done
    crashed = _cache_file(cache, square_after, tasks[2])
    crashed.unlink()
    Path(str(crashed) + ".tmp").write_bytes(b"garbage")
    Path(str(crashed) + ".abc123.tmp").write_bytes(pickle.dumps({"result": -1})[:10])
    with pytest.raises(ValueError, match="is truncated"):  # really unreadable now
        read_cache_file(truncated)

    with pytest.warns(CacheWarning, match=f"{truncated} is truncated"):
        results = run_sweep(square_after, tasks, backend="sequential", cache_dir=cache)
    assert results == [0, 1, 4, 9]
    assert _calls(markers) == [0, 1, 1, 2, 2, 3]
    assert read_cache_file(truncated)["result"] == 1


def test_diverged_run_recorded_cached_and_retried(tmp_path):
    markers, cache = tmp_path / "markers", tmp_path / "cache"
    markers.mkdir()
    tasks = [{"x": x, "marker_dir": str(markers)} for x in range(4)]
    results = run_sweep(diverge_on_odd, tasks, cache_dir=cache, **LOKY)
    assert results[0] == 0 and results[2] == 2
    for x in (1, 3):
        run = results[x]
        assert isinstance(run, DivergedRun) and run.diverged and not run
        assert run.task == tasks[x]
        assert run.message == f"loss is nan for x={x}"
        assert run.info["losses"][0] == 1.0 and np.isnan(run.info["losses"][1])
    assert [bool(r) for r in results] == [False, False, True, False]  # 0 is falsy too

    again = run_sweep(diverge_on_odd, tasks, cache_dir=cache, backend="sequential")
    assert [r.message if isinstance(r, DivergedRun) else r for r in again] == [
        0, "loss is nan for x=1", 2, "loss is nan for x=3"]
    assert _calls(markers) == [0, 1, 2, 3]  # diverged runs are not retried by default
    run_sweep(diverge_on_odd, tasks, cache_dir=cache, backend="sequential", retry_diverged=True)
    assert _calls(markers) == [0, 1, 1, 2, 3, 3]

    with pytest.raises(RunDiverged, match="loss is nan for x=1"):
        run_sweep(diverge_on_odd, tasks, backend="sequential", on_diverged="raise")
    with pytest.raises(RunDiverged, match="loss is nan for x=1"):  # from the cache
        run_sweep(diverge_on_odd, tasks, cache_dir=cache, backend="sequential", on_diverged="raise")


def test_progress_bar_counts_cached_tasks(tmp_path, capsys):
    tasks = [{"x": x} for x in range(3)]
    run_sweep(square_after, tasks[:2], backend="sequential", cache_dir=tmp_path)
    run_sweep(square_after, tasks, backend="sequential", cache_dir=tmp_path, progress=True, desc="widths")
    err = capsys.readouterr().err
    assert "widths" in err and "2/3" in err and "3/3" in err
    run_sweep(square_after, tasks, backend="sequential")
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_jobs=0), ValueError, "n_jobs must be a positive integer or -1, got 0"),
        (dict(n_jobs=-2), ValueError, "got -2"),
        (dict(n_jobs=1.5), ValueError, "got 1.5"),
        (dict(n_jobs=True), ValueError, "got True"),
        (dict(backend="spark"), ValueError, r"backend must be one of \['loky', 'threading', 'sequential', 'dask'\], got 'spark'"),
        (dict(on_diverged="ignore"), ValueError, "on_diverged must be one of"),
        (dict(scheduler="tcp://127.0.0.1:8786"), ValueError, "scheduler is only used with backend='dask'"),
        (dict(threads_per_worker=0), ValueError, "threads_per_worker must be a positive integer"),
        (dict(tasks={"x": 1}), TypeError, "tasks must be a list of dicts, got dict"),
        (dict(tasks=[{"x": 1}, 2]), TypeError, "task 1 is 2"),
        (dict(func=3), TypeError, "func must be callable"),
    ],
)
def test_validation_errors(kwargs, error, match):
    args = dict(func=square_after, tasks=[{"x": 1}])
    args.update(kwargs)
    with pytest.raises(error, match=match):
        run_sweep(args.pop("func"), args.pop("tasks"), **args)


def test_dask_missing_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"pip install hw1sk\[dask\]"):
        run_sweep(square_after, [{"x": 1}], backend="dask")


def count_trainable(estimator, module, marker_dir=None):
    """A task holding a fitted estimator and a module (as the interpolation study's do)."""
    _mark(marker_dir, 0)
    return sum(p.numel() for p in estimator.module_.parameters()) + sum(
        p.numel() for p in module.parameters())


def test_cache_keys_of_modules_and_fitted_estimators_are_stable(tmp_path):
    from hw1sk.estimators import NeuralClassifier
    from hw1sk.sweep import _cache_key

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    net = NeuralClassifier(module__hidden=(4,), max_epochs=2, random_state=0).fit(X, y)
    module = MLP(n_in=3, hidden=(5,), n_out=2)
    task = {"estimator": net, "module": module}
    # two unpickled copies (another process, a later run) have the same key
    first, second = pickle.loads(pickle.dumps(task)), pickle.loads(pickle.dumps(task))
    assert _cache_key(count_trainable, first) == _cache_key(count_trainable, second)
    assert _cache_key(count_trainable, first) == _cache_key(count_trainable, task)
    # ... and any change of a weight changes it
    with torch.no_grad():
        next(second["module"].parameters())[0, 0] += 1e-6
    assert _cache_key(count_trainable, first) != _cache_key(count_trainable, second)
    refit = NeuralClassifier(module__hidden=(4,), max_epochs=3, random_state=0).fit(X, y)
    assert _cache_key(count_trainable, {**task, "estimator": refit}) != \
        _cache_key(count_trainable, task)

    # a second sweep over unpickled copies of the tasks runs nothing
    markers, cache = tmp_path / "markers", tmp_path / "cache"
    markers.mkdir()
    tasks = [{**task, "marker_dir": str(markers)}]
    results = run_sweep(count_trainable, tasks, backend="sequential", cache_dir=cache)
    again = run_sweep(count_trainable, pickle.loads(pickle.dumps(tasks)), backend="sequential",
                      cache_dir=cache)
    assert again == results and _calls(markers) == [0]


# ------------------------------------------------ cache integrity and failures


def seeded_draw(seed, marker_dir=None):
    """One number that depends on the seed, so a result served for the wrong seed shows."""
    _mark(marker_dir, seed)
    return float(np.random.default_rng(seed).random())


class _Payload:
    """What a crafted cache file unpickles to: ``__reduce__`` runs code (creates a file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _cache_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, CacheWarning)]


def _seeded_sweep(tmp_path, seeds=(0, 1, 2)):
    markers, cache = tmp_path / "markers", tmp_path / "cache"
    markers.mkdir(exist_ok=True)
    tasks = [{"seed": s, "marker_dir": str(markers)} for s in seeds]
    files = [_cache_file(cache, seeded_draw, t) for t in tasks]
    return tasks, cache, markers, files


def test_cache_file_copied_from_another_task_is_recomputed(tmp_path):
    tasks, cache, markers, files = _seeded_sweep(tmp_path)
    expected = [seeded_draw(t["seed"]) for t in tasks]
    run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache)
    files[2].write_bytes(files[0].read_bytes())  # seed 0's result, filed under seed 2
    with pytest.warns(CacheWarning) as record:
        results = run_sweep(seeded_draw, tasks, cache_dir=cache, **LOKY)
    assert results == expected  # not seed 0's number in seed 2's slot
    (message,) = _cache_warnings(record)
    assert f"{files[2]} was written for another task" in message
    assert _calls(markers) == [0, 1, 2, 2]
    assert read_cache_file(files[2])["result"] == expected[2]  # overwritten


def _flip_bit(blob, key, marker):
    blob = bytearray(blob)
    blob[-2] ^= 0x01  # inside the pickled payload
    return bytes(blob)


def _crafted_pickle(blob, key, marker):
    return pickle.dumps({"func": "x", "task": {}, "result": _Payload(marker)})


def _crafted_with_foreign_secret(blob, key, marker):  # a valid header, a forged HMAC
    data = pickle.dumps({"result": _Payload(marker)})
    return CacheSigner(b"\0" * 32).header(key, data) + data


def _old_format(blob, key, marker):  # what hw1sk wrote before cache files were signed
    return pickle.dumps({"func": "seeded_draw", "task": {}, "result": -1.0})


@pytest.mark.parametrize(
    "tamper, reason",
    [
        (_flip_bit, "does not match its signature"),
        (_crafted_pickle, "is not a signed hw1sk cache file"),
        (_crafted_with_foreign_secret, "does not match its signature"),
        (_old_format, "is not a signed hw1sk cache file"),
        (lambda blob, key, marker: b"", "is empty"),
        (lambda blob, key, marker: blob[: len(blob) // 2], "does not match its signature"),
        (lambda blob, key, marker: blob[:14], "is truncated"),
    ],
    ids=["flipped-bit", "crafted-pickle", "crafted-foreign-secret", "old-format", "empty",
         "truncated-payload", "truncated-header"],
)
def test_untrusted_cache_file_is_recomputed_not_loaded(tmp_path, tamper, reason):
    tasks, cache, markers, files = _seeded_sweep(tmp_path)
    expected = run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache)
    marker = tmp_path / "code-was-run"
    files[1].write_bytes(tamper(files[1].read_bytes(), files[1].stem, marker))
    with pytest.warns(CacheWarning) as record:
        results = run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache)
    assert not marker.exists()  # the crafted pickle was never loaded
    assert results == expected
    (message,) = _cache_warnings(record)
    assert f"{files[1]} {reason}" in message and "recomputed" in message
    assert _calls(markers) == [0, 1, 1, 2]
    assert read_cache_file(files[1])["result"] == expected[1]
    # the overwritten file is trusted again: nothing is recomputed, nothing warned
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        assert run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache) == expected
    assert _calls(markers) == [0, 1, 1, 2]


def test_untrusted_files_give_one_warning_per_sweep(tmp_path):
    tasks, cache, markers, files = _seeded_sweep(tmp_path, seeds=range(4))
    expected = run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache)
    files[0].write_bytes(b"")
    files[3].write_bytes(files[2].read_bytes())
    with pytest.warns(CacheWarning) as record:
        assert run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache) == expected
    (message,) = _cache_warnings(record)
    assert message.startswith("2 cache file(s) cannot be trusted")
    assert f"{files[0]} is empty" in message and f"{files[3]} was written for another" in message


def test_read_cache_file_checks_the_signature(tmp_path):
    tasks, cache, markers, files = _seeded_sweep(tmp_path, seeds=[5])
    (value,) = run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache)
    assert read_cache_file(files[0]) == {
        "func": f"{seeded_draw.__module__}.seeded_draw", "task": tasks[0], "result": value}
    renamed = files[0].with_name("0" * 32 + ".pkl")
    renamed.write_bytes(files[0].read_bytes())
    with pytest.raises(ValueError, match=f"The cache file {renamed} was written for another"):
        read_cache_file(renamed)
    with pytest.raises(FileNotFoundError, match="No cache file at"):
        read_cache_file(tmp_path / "missing.pkl")
    assert "<secret hidden>" in repr(CacheSigner(b"k" * 32))


def _fail_pkl_writes(monkeypatch, err):
    """Make every cache write fail in this process as a full or read-only disk would."""
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(".pkl"):
            raise OSError(err, os.strerror(err), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("failure", ["file-as-folder", "full-disk", "read-only"])
def test_cache_write_failure_warns_once_and_returns_all_results(tmp_path, monkeypatch, failure):
    markers = tmp_path / "markers"
    markers.mkdir()
    tasks = [{"x": x, "marker_dir": str(markers)} for x in range(4)]
    kwargs = dict(backend="sequential")
    cache = tmp_path / "cache"
    if failure == "file-as-folder":  # the lookup must not crash, the writes fail in workers
        cache.write_text("not a folder")
        kwargs = LOKY
    elif failure == "full-disk":
        _fail_pkl_writes(monkeypatch, errno.ENOSPC)
    else:
        _fail_pkl_writes(monkeypatch, errno.EROFS)
    for n_runs in (1, 2):  # nothing was cached, so the second sweep recomputes
        with pytest.warns(CacheWarning) as record:
            assert run_sweep(square_after, tasks, cache_dir=cache, **kwargs) == [0, 1, 4, 9]
        (message,) = _cache_warnings(record)
        assert message.startswith("Could not write the cache file ")
        assert "returns every result" in message
        assert _calls(markers) == sorted(list(range(4)) * n_runs)
    assert not list(tmp_path.rglob("*.tmp"))  # failed writes leave no temp file


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0,
                    reason="permissions do not stop root (or Windows) from writing")
def test_read_only_cache_dir_warns_once(tmp_path):
    cache = tmp_path / "cache"
    (cache / f"{square_after.__module__}.{square_after.__qualname__}").mkdir(parents=True)
    for folder in (cache / f"{square_after.__module__}.{square_after.__qualname__}", cache):
        folder.chmod(0o500)
    try:
        with pytest.warns(CacheWarning) as record:
            results = run_sweep(square_after, [{"x": x} for x in range(3)], cache_dir=cache, **LOKY)
    finally:
        for folder in [cache, *cache.rglob("*")]:  # the parent first, so its children are reachable
            folder.chmod(0o700)
    assert results == [0, 1, 4] and len(_cache_warnings(record)) == 1


def test_cache_secret_is_private_and_replaced_when_not(tmp_path, config_home):
    tasks, cache, markers, files = _seeded_sweep(tmp_path, seeds=[0, 1])
    expected = run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache)
    secret = config_home / "cache_secret"
    assert secret_path() == secret
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_home.stat().st_mode) == 0o700
    key = secret.read_text()
    assert len(bytes.fromhex(key)) == 32
    assert not [p for p in config_home.iterdir() if p != secret]  # no temp file left
    run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache)
    assert secret.read_text() == key and _calls(markers) == [0, 1]  # reused, all cached

    secret.chmod(0o644)  # others may have read it: files signed with it are not trusted
    with pytest.warns(CacheWarning) as record:
        assert run_sweep(seeded_draw, tasks, backend="sequential", cache_dir=cache) == expected
    replaced, untrusted = _cache_warnings(record)
    assert f"The cache secret {secret} has mode 0o644" in replaced
    assert "2 cache file(s) cannot be trusted" in untrusted
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() != key
    assert _calls(markers) == [0, 0, 1, 1]


def test_secret_created_once_by_concurrent_first_uses(tmp_path, config_home):
    from hw1sk.cache_signing import _create_secret, _read_secret

    path = config_home / "cache_secret"
    first = _create_secret(path, replace=False)
    # a second process that also found no secret gets the one already there
    assert _create_secret(path, replace=False) == first == _read_secret(path)


def test_config_dir_location(monkeypatch, tmp_path):
    assert config_dir() == tmp_path / "config"  # HW1SK_CONFIG_DIR, from the fixture
    monkeypatch.delenv("HW1SK_CONFIG_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert secret_path() == tmp_path / "xdg" / "hw1sk" / "cache_secret"
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config_dir() == tmp_path / "home" / ".config" / "hw1sk"


def test_unusable_config_dir_runs_uncached(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    monkeypatch.setenv("HW1SK_CONFIG_DIR", str(not_a_folder / "hw1sk"))
    with pytest.warns(CacheWarning, match="can be neither read nor created") as record:
        assert run_sweep(square_after, [{"x": 2}], backend="sequential",
                         cache_dir=tmp_path / "cache") == [4]
    assert len(_cache_warnings(record)) == 1
    assert not (tmp_path / "cache").exists()
