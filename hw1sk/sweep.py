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
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any

import joblib
from joblib.hashing import NumpyHasher

from .cache_signing import CacheWarning, UntrustedCacheFile, load_signer, secret_path

__all__ = [
    "run_sweep",
    "start_local_cluster",
    "read_cache_file",
    "RunDiverged",
    "DivergedRun",
    "CacheWarning",
    "BACKENDS",
]

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


def _load_cached(path, key, signer):
    """The payload cached at ``path`` for task ``key``, or ``None`` if there is none.

    The file is unpickled only after ``signer`` has checked that it was
    written, whole and unchanged, for this very key by this user's hw1sk.

    Raises
    ------
    UntrustedCacheFile
        If the file exists but must not be loaded (the message says why).
    """
    try:
        blob = Path(path).read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # not computed, or no cache folder
        return None
    except OSError as exc:
        raise UntrustedCacheFile(f"could not be read ({exc})") from None
    data = signer.verify(blob, key)
    try:
        payload = pickle.loads(data)
    except Exception as exc:  # signed by us, but e.g. a class it needs was renamed
        raise UntrustedCacheFile(
            f"is signed but could not be unpickled ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(payload, dict) or "result" not in payload:
        raise UntrustedCacheFile("holds no result")
    return payload


def read_cache_file(path):
    """Read back one file of a :func:`run_sweep` cache, after checking its signature.

    Use it to inspect a cache: the file's name is the key of its task, and it
    is unpickled only if it was written for that key by this user's hw1sk
    (see :doc:`/user_guide/cache`).

    Parameters
    ----------
    path : str or path-like
        A ``<cache_dir>/<module.qualname>/<key>.pkl`` file.

    Returns
    -------
    payload : dict
        With keys ``"func"`` (the run function's name), ``"task"`` (its
        keyword arguments) and ``"result"``.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``path``.
    ValueError
        If the file must not be trusted; the message says why.
    """
    path = Path(path)
    try:
        payload = _load_cached(path, path.stem, load_signer())
    except UntrustedCacheFile as exc:
        raise ValueError(f"The cache file {path} {exc}.") from None
    if payload is None:
        raise FileNotFoundError(f"No cache file at {path}.")
    return payload


def _write_cached(path, key, payload, signer):
    """Write ``payload``, pickled and signed for task ``key``, atomically to ``path``."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    _write_atomic(path, (signer.header(key, data), data))


def _write_atomic(path, chunks):
    """Write the bytes ``chunks`` so that ``path`` is absent or complete, never partial."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
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


def _open_cache(func, tasks, cache_dir):
    """``(path, key, signer)`` of every task, or ``None`` each if nothing can be signed."""
    try:
        signer = load_signer()
    except OSError as exc:
        warnings.warn(
            f"The cache secret {secret_path()} can be neither read nor created ({exc}), "
            f"so cache_dir={str(cache_dir)!r} is not used: every run is computed and "
            "nothing is cached. Set HW1SK_CONFIG_DIR to a writable folder to use it.",
            CacheWarning,
            stacklevel=3,
        )
        return [None] * len(tasks)
    folder = Path(cache_dir) / _func_name(func)
    keys = [_cache_key(func, task) for task in tasks]
    return [(folder / f"{key}.pkl", key, signer) for key in keys]


def _read_cache(caches, results, retry_diverged, on_diverged):
    """Fill ``results`` from the trusted cache files; return the indices to run.

    Files that exist but are not trusted are recomputed (and overwritten),
    with one :class:`CacheWarning` for the whole sweep that names them.
    """
    pending, untrusted = [], []
    for i, cache in enumerate(caches):
        try:
            payload = None if cache is None else _load_cached(*cache)
        except UntrustedCacheFile as exc:
            untrusted.append(f"{cache[0]} {exc}")
            payload = None
        if payload is None or (
            retry_diverged and isinstance(payload["result"], DivergedRun)
        ):
            pending.append(i)
            continue
        if on_diverged == "raise" and isinstance(payload["result"], DivergedRun):
            raise RunDiverged(payload["result"].message, payload["result"].info)
        results[i] = payload["result"]
    if untrusted:
        shown = "; ".join(f"the cache file {line}" for line in untrusted[:5])
        more = f"; and {len(untrusted) - 5} more" if len(untrusted) > 5 else ""
        warnings.warn(
            f"{len(untrusted)} cache file(s) cannot be trusted and are not loaded: "
            f"{shown}{more}. Their runs are recomputed and the files overwritten.",
            CacheWarning,
            stacklevel=3,
        )
    return pending


def _collect(finished, results, caches, bar):
    """Store the ``(index, result, write error)`` of ``finished`` runs in ``results``.

    The first failed cache write issues one :class:`CacheWarning`; the sweep
    goes on and every result is returned all the same.
    """
    warned = False
    for i, result, write_error in finished:
        results[i] = result
        bar.update(1)
        if write_error is not None and not warned:
            warned = True
            warnings.warn(
                f"Could not write the cache file {caches[i][0]} ({write_error}). "
                "The sweep goes on and returns every result, but runs whose file "
                "could not be written are not cached and an interrupted sweep will "
                "recompute them; check that cache_dir is a writable folder with "
                "free space.",
                CacheWarning,
                stacklevel=3,
            )


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


def _run_one(index, func, task, n_threads, cache, on_diverged):
    """Run one task (in whatever process the backend chose) and cache its result.

    ``cache`` is ``None`` or the ``(path, key, signer)`` of the task.  Returns
    ``(index, result, write_error)``: a failed cache write (full disk,
    read-only folder) does not fail the task, its message goes back to the
    calling process, which warns once per sweep.
    """
    with _pinned_threads(n_threads):
        try:
            result = func(**task)
        except RunDiverged as exc:
            if on_diverged == "raise":
                raise
            result = DivergedRun(task=dict(task), message=exc.message, info=exc.info)
    write_error = None
    if cache is not None:
        path, key, signer = cache
        payload = {"func": _func_name(func), "task": task, "result": result}
        try:
            _write_cached(path, key, payload, signer)
        except OSError as exc:
            write_error = str(exc)
    return index, result, write_error


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
        the same key in every process); the file also holds the task
        (read it with :func:`read_cache_file`).  Tasks whose file exists
        are loaded instead of rerun, so a killed sweep resumes where it
        stopped.  Files are signed: a file is unpickled only if it records
        this task's key and an HMAC-SHA256 made with this user's secret
        (``~/.config/hw1sk/cache_secret``, see
        :doc:`/user_guide/cache`); any other file (copied from another
        task, changed, truncated, crafted, written by an older hw1sk) is
        recomputed and overwritten.  If a file cannot be written (full
        disk, read-only folder, ``cache_dir`` a file), the sweep goes on
        and returns every result uncached.
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

    Warns
    -----
    CacheWarning
        Once per sweep if cache files exist that cannot be trusted (naming
        them and why; they are recomputed), once if a cache file cannot be
        written, and if the cache secret is not private (it is replaced) or
        cannot be created (nothing is cached).

    See Also
    --------
    start_local_cluster : a dask cluster to share between sweeps.
    read_cache_file : inspect one file of the cache.
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
    caches = [None] * len(tasks)
    if cache_dir is not None:
        caches = _open_cache(func, tasks, cache_dir)
    pending = _read_cache(caches, results, retry_diverged, on_diverged)

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
            calls = [(i, func, tasks[i], None, caches[i], on_diverged) for i in pending]
            with _pinned_threads(n_threads):
                if backend == "sequential":
                    finished = (_run_one(*args) for args in calls)
                else:
                    finished = _run_joblib(calls, "threading", n_jobs, None)
                _collect(finished, results, caches, bar)
            return results
        calls = [(i, func, tasks[i], n_threads, caches[i], on_diverged) for i in pending]
        if backend == "loky":
            finished = _run_joblib(calls, "loky", n_jobs, n_threads)
        else:
            finished = _run_dask(calls, scheduler, n_jobs, n_threads)
        _collect(finished, results, caches, bar)
    return results
