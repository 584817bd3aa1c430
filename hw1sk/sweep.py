"""The one runner for parallel runs: backends, thread pinning, per-run cache, divergence.

A *sweep* calls one top-level function once per task (a dict of plain,
picklable keyword arguments, typically including ``seed``) and returns the
results in task order.  Studies, sweep scripts and the ``hw1sk`` CLI all go
through :func:`run_sweep`, so every run in the project is parallelised,
cached and resumed the same way.
"""

from __future__ import annotations

import functools
import os
import pickle
import sys
import tempfile
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import joblib
from joblib.hashing import NumpyHasher

__all__ = ["run_sweep", "start_local_cluster", "RunDiverged", "DivergedRun", "BACKENDS"]

#: Backends accepted by :func:`run_sweep`.
BACKENDS = ("loky", "threading", "sequential", "dask")

_ON_DIVERGED = ("record", "raise")

# environment variables that size the native thread pools of a fresh process
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class RunDiverged(RuntimeError):
    """Raised by a run whose loss became NaN or infinite.

    :func:`run_sweep` turns it into a :class:`DivergedRun` in that task's slot
    (unless ``on_diverged="raise"``), so one unstable learning rate does not
    kill a sweep of a hundred runs.

    Parameters
    ----------
    message : str
        What diverged and when (e.g. ``"loss is nan at epoch 12"``).
    info : object, optional
        Picklable partial information, e.g. the loss history up to divergence.
    """

    def __init__(self, message, info=None):
        super().__init__(message)
        self.message = message
        self.info = info

    def __reduce__(self):
        # keep ``info`` when the exception travels back from a worker process
        return (type(self), (self.message, self.info))


@dataclass
class DivergedRun:
    """The result recorded for a task whose run raised :class:`RunDiverged`.

    It is falsy, so ``[r for r in results if r]`` keeps the finished runs.

    Attributes
    ----------
    task : dict
        The keyword arguments of the run.
    message : str
        The message of the :class:`RunDiverged` exception.
    info : object
        Its partial information (``None`` if none was given).
    diverged : bool
        Always ``True``.
    """

    task: dict
    message: str
    info: Any = None
    diverged: bool = field(default=True, init=False)

    def __bool__(self):
        return False


# ----------------------------------------------------------------- validation


def _check_n_jobs(n_jobs, name="n_jobs"):
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral) or not (
        n_jobs >= 1 or n_jobs == -1
    ):
        raise ValueError(f"{name} must be a positive integer or -1, got {n_jobs!r}.")
    return joblib.cpu_count() if n_jobs == -1 else int(n_jobs)


def _check_threads(threads_per_worker):
    if threads_per_worker is not None and (
        isinstance(threads_per_worker, bool)
        or not isinstance(threads_per_worker, Integral)
        or threads_per_worker < 1
    ):
        raise ValueError(
            f"threads_per_worker must be a positive integer or None, "
            f"got {threads_per_worker!r}."
        )
    return threads_per_worker


def _check_tasks(tasks):
    if not isinstance(tasks, (list, tuple)):
        raise TypeError(f"tasks must be a list of dicts, got {type(tasks).__name__}.")
    for i, task in enumerate(tasks):
        if not isinstance(task, Mapping) or not all(isinstance(k, str) for k in task):
            raise TypeError(
                f"tasks must be a list of dicts with str keys; task {i} is {task!r}."
            )
    return [dict(task) for task in tasks]


# --------------------------------------------------------------------- cache


def _func_name(func):
    """``module.qualname`` of ``func`` (of the wrapped function for a partial)."""
    base = func.func if isinstance(func, functools.partial) else func
    module = getattr(base, "__module__", None) or "unknown"
    qualname = getattr(base, "__qualname__", type(base).__qualname__)
    return f"{module}.{qualname}"


class _StableHasher(NumpyHasher):
    """joblib's hasher, with torch tensors and generators hashed by their content.

    A tensor pickles through ``torch.save`` bytes that differ between two
    equal copies, and an optimizer's state is keyed by parameter objects, so
    an unpickled module or fitted estimator hashed differently each time and
    tasks holding one never hit the cache.  Hashing dtype, shape and raw
    bytes (optimizers by their state dict, skorch nets by their attributes)
    gives equal keys for equal contents, in any process.
    """

    def save(self, obj):
        import torch

        if isinstance(obj, torch.Tensor):
            flat = obj.detach().cpu().contiguous().reshape(-1)
            obj = ("torch.Tensor", type(obj).__name__, str(obj.dtype), tuple(obj.shape),
                   obj.requires_grad, flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(obj, torch.Generator):
            obj = ("torch.Generator", str(obj.device), obj.get_state().numpy().tobytes())
        elif _is_skorch_net(obj):
            # its __getstate__ goes through torch.save: hash what it holds instead
            # (less the caches our estimators leave out of their pickles)
            transient = set(getattr(obj, "_TRANSIENT", ()))
            obj = ("skorch", f"{type(obj).__module__}.{type(obj).__qualname__}",
                   {k: v for k, v in vars(obj).items() if k not in transient})
        elif isinstance(obj, torch.optim.Optimizer):
            # its state is keyed by the parameter objects (ordered by id); the state
            # dict numbers them instead
            obj = ("torch.optim.Optimizer", type(obj).__qualname__, obj.state_dict())
        super().save(obj)


def _is_skorch_net(obj):
    skorch_net = sys.modules.get("skorch.net")
    return skorch_net is not None and isinstance(obj, skorch_net.NeuralNet)


def _hash(obj):
    if "torch" not in sys.modules:  # nothing to special-case: joblib's own hash
        return joblib.hash(obj)
    return _StableHasher(hash_name="md5").hash(obj)


def _cache_key(func, task):
    if isinstance(func, functools.partial):
        # arguments frozen in a partial change the result, so they are part of the key
        return _hash((_func_name(func), func.args, func.keywords, task))
    return _hash((_func_name(func), task))


def _load_cached(path):
    """The cached result at ``path``, or ``None`` if missing or unreadable."""
    try:
        with open(path, "rb") as f:
            payload = pickle.load(f)
    except FileNotFoundError:
        return None
    except Exception:  # truncated or garbage file: treat as not computed
        return None
    if not isinstance(payload, dict) or "result" not in payload:
        return None
    return payload


def _write_atomic(path, payload):
    """Write ``payload`` so that ``path`` is either absent or complete, never partial."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # a failed write leaves no temp file behind (a SIGKILL may; it is never read)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


# ------------------------------------------------------------ thread pinning


@contextmanager
def _pinned_threads(n_threads):
    """Limit torch and the BLAS/OpenMP pools to ``n_threads``; restore on exit."""
    if n_threads is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    old = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads):
            yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------- worker


def _run_one(index, func, task, n_threads, cache_path, on_diverged):
    """Run one task (in whatever process the backend chose) and cache its result."""
    with _pinned_threads(n_threads):
        try:
            result = func(**task)
        except RunDiverged as exc:
            if on_diverged == "raise":
                raise
            result = DivergedRun(task=dict(task), message=exc.message, info=exc.info)
    if cache_path is not None:
        _write_atomic(
            cache_path, {"func": _func_name(func), "task": task, "result": result}
        )
    return index, result


# ----------------------------------------------------------------- backends


def _run_joblib(calls, backend, n_jobs, n_threads):
    """Yield ``(index, result)`` as tasks finish, with loky or threads."""
    parallel_kwargs = {}
    if backend == "loky":
        # sizes OMP/MKL/OpenBLAS pools in the workers before they import torch
        parallel_kwargs["inner_max_num_threads"] = n_threads
    with joblib.parallel_config(backend=backend, n_jobs=n_jobs, **parallel_kwargs):
        parallel = joblib.Parallel(return_as="generator_unordered")
        yield from parallel(joblib.delayed(_run_one)(*args) for args in calls)


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "backend='dask' needs dask.distributed; install it with "
            "`pip install hw1sk[dask]`."
        ) from exc
    return distributed


def start_local_cluster(n_workers=None, threads_per_worker=1):
    """Start a dask ``LocalCluster`` of single-threaded worker processes for sweeps.

    :func:`run_sweep` starts one like this for ``backend="dask"`` without a
    ``scheduler``; start it yourself to share it (and its start-up time)
    between several sweeps.  Worker processes are spawned, so a script that
    calls this needs an ``if __name__ == "__main__":`` guard.

    Parameters
    ----------
    n_workers : int, optional
        Number of worker processes; defaults to the number of cores.
    threads_per_worker : int, default=1
        Size of the OpenMP/MKL/OpenBLAS pools of each worker, set in its
        environment before it starts (each worker runs one task at a time).

    Returns
    -------
    cluster : distributed.LocalCluster
        Use it as a context manager, or call ``cluster.close()``.

    Examples
    --------
    >>> with start_local_cluster(2) as cluster:  # doctest: +SKIP
    ...     results = run_sweep(fit, tasks, backend="dask", scheduler=cluster)
    """
    distributed = _import_distributed()
    import dask

    n_workers = -1 if n_workers is None else n_workers
    n_workers = _check_n_jobs(n_workers, "n_workers")
    threads_per_worker = _check_threads(threads_per_worker) or 1
    # dask's fixed malloc trim threshold turns off glibc's adaptive mmap
    # threshold, so every large torch tensor is a fresh mmap: fits ran 2x slower
    no_trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    saved = dict(os.environ)
    try:
        # the nanny copies these into os.environ before it spawns a worker
        os.environ.update({name: str(threads_per_worker) for name in _THREAD_ENV})
        with dask.config.set(no_trim):
            return distributed.LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
            )
    finally:
        # undo what the nanny wrote, so later subprocesses of ours are unaffected
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        os.environ.update(saved)


def _run_dask(calls, scheduler, n_jobs, n_threads):
    """Yield ``(index, result)`` as tasks finish on a dask.distributed cluster."""
    distributed = _import_distributed()
    cluster = None
    if isinstance(scheduler, distributed.Client):
        client, own_client = scheduler, False
    else:
        if scheduler is None:
            cluster = start_local_cluster(max(1, min(n_jobs, len(calls))), n_threads)
            scheduler = cluster
        client, own_client = distributed.Client(scheduler), True
    try:
        # pure=False: identical tasks still run (and count) once each
        futures = [client.submit(_run_one, *args, pure=False) for args in calls]
        for future in distributed.as_completed(futures):
            yield future.result()
    finally:
        if own_client:
            client.close()
        if cluster is not None:
            cluster.close()


# -------------------------------------------------------------------- public


def run_sweep(
    func,
    tasks,
    *,
    n_jobs=1,
    backend="loky",
    scheduler=None,
    cache_dir=None,
    threads_per_worker=None,
    progress=False,
    desc=None,
    on_diverged="record",
    retry_diverged=False,
):
    """Call ``func(**task)`` for every task, in parallel, cached and resumable.

    Parameters
    ----------
    func : callable
        A picklable top-level function (defined at module level in an
        importable module) taking the task's keys as keyword arguments.
    tasks : list of dict
        One dict of plain picklable parameters per run (e.g. ``{"seed": 3,
        "width": 64}``).
    n_jobs : int, default=1
        Number of worker processes (threads for ``backend="threading"``,
        local dask workers for ``backend="dask"``); ``-1`` uses all cores.
        Ignored by ``backend="sequential"``.
    backend : {"loky", "threading", "sequential", "dask"}, default="loky"
        ``"loky"``: joblib worker processes. ``"threading"``: joblib threads in
        this process; the threads share torch's *global* generator, so a task
        that seeds it (e.g. :func:`~hw1sk.seeding.seed_everything` before
        building a module) is reproducible only if it does so under a lock
        or draws from its own :func:`~hw1sk.seeding.torch_generator`; prefer
        ``"loky"`` for seeded training runs. ``"sequential"``: a plain loop
        in this process.
        ``"dask"``: dask.distributed, on ``scheduler`` if given, else on a
        ``LocalCluster`` of ``n_jobs`` single-threaded worker processes that
        is closed afterwards (needs ``pip install hw1sk[dask]``).
    scheduler : str, distributed.Client or cluster, optional
        Address of a running dask scheduler, a client connected to one, or a
        cluster object (e.g. from :func:`start_local_cluster`); only valid
        with ``backend="dask"``.
    cache_dir : str or path-like, optional
        If given, each finished task is written at once, atomically, to
        ``<cache_dir>/<module.qualname of func>/<key>.pkl`` with ``key =
        joblib.hash((func name, task))`` (torch tensors, generators,
        optimizers and skorch nets in the task are hashed by their
        content, so a task that holds a module or a fitted estimator gets
        the same key in every process); the file also holds the task.
        Tasks whose file exists are loaded instead of rerun, so a killed
        sweep resumes where it stopped.  Unreadable files are recomputed.
    threads_per_worker : int, optional
        Torch/BLAS/OpenMP threads per worker.  Defaults to
        ``max(1, cpu_count // n_jobs)`` (``cpu_count`` for ``"sequential"``,
        1 with an external dask ``scheduler``).  Settings of this process are
        restored after an in-process (sequential/threading) sweep.
    progress : bool, default=False
        Show a tqdm bar of finished tasks (cached tasks count as finished).
    desc : str, optional
        Label of the progress bar.
    on_diverged : {"record", "raise"}, default="record"
        What to do when a run raises :class:`RunDiverged`: record a
        :class:`DivergedRun` in its slot and go on, or re-raise.
    retry_diverged : bool, default=False
        Rerun tasks whose cached result is a :class:`DivergedRun`.

    Returns
    -------
    results : list
        ``results[i]`` is ``func(**tasks[i])`` (or a :class:`DivergedRun`).

    Raises
    ------
    ValueError
        For an invalid ``n_jobs``, ``backend``, ``threads_per_worker``,
        ``on_diverged`` or a ``scheduler`` without ``backend="dask"``.
    TypeError
        If ``tasks`` is not a list of dicts with string keys.
    RunDiverged
        With ``on_diverged="raise"``, from the first diverged run.

    See Also
    --------
    start_local_cluster : a dask cluster to share between sweeps.
    hw1sk.seeding.spawn_seeds : independent seeds for the tasks of a sweep.

    Notes
    -----
    Results are identical across backends for tasks that seed everything
    they draw from (see the ``"threading"`` caveat above) and run with the
    same ``threads_per_worker``.  Cache files are only ever replaced whole,
    so a killed sweep may leave ``*.tmp`` files next to them but never a
    partial ``.pkl``; the temp files are ignored and can be deleted.  With
    ``backend="dask"`` the worker processes are spawned and re-import the
    main script, so scripts need an ``if __name__ == "__main__":`` guard.

    Examples
    --------
    >>> from hw1sk.sweep import run_sweep
    >>> def square(x):
    ...     return x * x
    >>> run_sweep(square, [{"x": 2}, {"x": 3}], backend="sequential")
    [4, 9]
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    if on_diverged not in _ON_DIVERGED:
        raise ValueError(
            f"on_diverged must be one of {list(_ON_DIVERGED)}, got {on_diverged!r}."
        )
    if scheduler is not None and backend != "dask":
        raise ValueError(
            f"scheduler is only used with backend='dask', got backend={backend!r}."
        )
    _check_threads(threads_per_worker)
    if not callable(func):
        raise TypeError(f"func must be callable, got {func!r}.")
    n_jobs = _check_n_jobs(n_jobs)
    tasks = _check_tasks(tasks)
    if backend == "sequential":
        n_jobs = 1
    if threads_per_worker is None:
        external = backend == "dask" and scheduler is not None
        threads_per_worker = 1 if external else max(1, joblib.cpu_count() // n_jobs)
    n_threads = int(threads_per_worker)

    results = [None] * len(tasks)
    paths = [None] * len(tasks)
    pending = []
    if cache_dir is not None:
        folder = Path(cache_dir) / _func_name(func)
        for i, task in enumerate(tasks):
            paths[i] = folder / f"{_cache_key(func, task)}.pkl"
            payload = _load_cached(paths[i])
            if payload is None or (
                retry_diverged and isinstance(payload["result"], DivergedRun)
            ):
                pending.append(i)
                continue
            if on_diverged == "raise" and isinstance(payload["result"], DivergedRun):
                raise RunDiverged(payload["result"].message, payload["result"].info)
            results[i] = payload["result"]
    else:
        pending = list(range(len(tasks)))

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(tasks),
        initial=len(tasks) - len(pending),
        desc=desc,
        disable=not progress,
        leave=None,  # stays on screen unless nested under another bar (hw1sk report's)
    )
    with bar:
        if not pending:
            return results
        if backend in ("sequential", "threading"):
            # one in-process pin (restored at the end); per-task pinning would race
            calls = [(i, func, tasks[i], None, paths[i], on_diverged) for i in pending]
            with _pinned_threads(n_threads):
                if backend == "sequential":
                    finished = (_run_one(*args) for args in calls)
                else:
                    finished = _run_joblib(calls, "threading", n_jobs, None)
                for i, result in finished:
                    results[i] = result
                    bar.update(1)
            return results
        calls = [(i, func, tasks[i], n_threads, paths[i], on_diverged) for i in pending]
        if backend == "loky":
            finished = _run_joblib(calls, "loky", n_jobs, n_threads)
        else:
            finished = _run_dask(calls, scheduler, n_jobs, n_threads)
        for i, result in finished:
            results[i] = result
            bar.update(1)
    return results
