"""The ``hw1sk`` command: ``hw1sk report`` reproduces the HW1 report, ``hw1sk list`` names its items."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

__all__ = ["main"]


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, no usage dump
        self.exit(2, f"hw1sk: error: {message}\n")


def _n_jobs(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--n-jobs must be an integer, got {text!r}") from None
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(
            f"--n-jobs must be a positive integer or -1 (all cores), got {value}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seed must be an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"--seed must be >= 0, got {value}")
    return value


def _add_run_options(rep, out_default, cache_default=None, profile_default="quick"):
    rep.add_argument("--profile", choices=("quick", "full"), default=profile_default,
                     help="quick: every item at reduced sizes (minutes); full: the assignment's sizes")
    rep.add_argument("--out", default=out_default, help=f"output folder (default: {out_default})")
    rep.add_argument("--n-jobs", type=_n_jobs, default=1, help="parallel runs (-1: all cores)")
    rep.add_argument("--backend", choices=("loky", "threading", "sequential", "dask"), default="loky")
    rep.add_argument("--scheduler", default=None, help="dask.distributed scheduler address")
    rep.add_argument("--cache-dir", default=cache_default,
                     help="per-run result cache: an interrupted run resumes from it "
                          f"(default: {cache_default})")
    rep.add_argument("--data-home", default=None,
                     help="folder holding MNIST/raw (default: $HW1SK_DATA or ~/hw1sk_data)")
    rep.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    rep.add_argument("--seed", type=_seed, default=0)
    rep.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    """The argument parser of the ``hw1sk`` command."""
    parser = _ArgumentParser(prog="hw1sk", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    rep = sub.add_parser("report", help="run the HW1 experiments and write the report")
    rep.add_argument("--only", nargs="+", metavar="ITEM",
                     help="experiment ids or prefixes, e.g. 1-2 or 1-3-sensitivity (see `hw1sk list`)")
    _add_run_options(rep, "hw1sk_output")
    sub.add_parser("list", help="list the experiments of the report")
    return parser


#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def _write_error(folder):
    """Why a file cannot be created in ``folder`` (None if it can): tried, not guessed.

    Permission bits alone do not say it (root ignores them, a read-only
    mount does not show in them), so a temporary file is created and removed.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".hw1sk-write-test-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.remove(tmp)
    return None


def _check_folder(option, folder):
    """Raise ValueError unless ``folder`` is a writable folder, or one that can be created.

    Nothing is created: a missing folder is judged by the nearest folder
    above it that exists.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    if os.path.isfile(path):
        raise ValueError(f"{option} {folder} is a file, not a folder")
    if os.path.lexists(path) and not os.path.isdir(path):  # a broken link, a device...
        raise ValueError(f"{option} {folder} exists and is not a folder")
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(f"{option} {folder} cannot be created: {existing} is not a folder")
    error = _write_error(existing)
    if error is not None:
        where = "" if existing == path else f" (in {existing})"
        raise ValueError(f"{option} {folder} is not writable{where}: {error}")


def _check_folders(args):
    """The output, cache and data folders: usable, or one line saying why not."""
    from .datasets import get_data_home

    _check_folder("--out", args.out)
    for sub in ("figures", "tables"):  # a file in the way of the report's own folders
        if os.path.lexists(os.path.join(args.out, sub)):
            _check_folder("--out", os.path.join(args.out, sub))
    if args.cache_dir is not None:
        _check_folder("--cache-dir", args.cache_dir)
    home = get_data_home(args.data_home, create=False)
    if os.path.lexists(home) and not os.path.isdir(home):
        name = "--data-home" if args.data_home is not None else "the data home"
        raise ValueError(f"{name} {home} is a file, not a folder")


def _check_environment(args, ids):
    """Fail early, in one line, on a device or folder that cannot work; create nothing."""
    import torch

    from .experiments import EXPERIMENTS

    _check_folders(args)
    if args.scheduler is not None and args.backend != "dask":
        raise ValueError(f"--scheduler needs --backend dask (got --backend {args.backend})")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: CUDA is not available on this machine")
    try:
        torch.device(args.device)
    except RuntimeError:
        raise ValueError(f"--device {args.device!r} is not a torch device") from None
    if any(EXPERIMENTS[i].needs_mnist for i in ids):
        from .datasets import get_data_home, load_mnist

        try:
            # downloads MNIST when it is missing; a failed download leaves no folders behind
            load_mnist(args.data_home, train=False, n_samples=10, random_state=0)
        except (OSError, RuntimeError, ValueError) as exc:
            home = get_data_home(args.data_home, create=False)
            raise ValueError(f"MNIST is not available under {home}: {str(exc).splitlines()[0]}") from None


def main(argv=None):
    """Entry point of the ``hw1sk`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from .experiments import EXPERIMENTS, select_experiments

    if args.command == "list":
        for exp_id in select_experiments(None):
            print(f"{exp_id:22s} {EXPERIMENTS[exp_id].title}")
        return 0

    return _run_report(args, args.only)


def _count_cached(cache_dir):
    """The finished runs in a cache: its files, less the ``*.tmp`` of runs cut short."""
    return sum(1 for path in Path(cache_dir).rglob("*") if path.is_file()
               and not path.name.endswith(".tmp") and not path.name.startswith("."))


def _interrupted_message(cache_dir):
    """The one line a Ctrl-C leaves on stderr: what was kept, and how to go on."""
    if cache_dir is None:
        return ("hw1sk: interrupted; nothing was kept (no --cache-dir); "
                "rerun with --cache-dir DIR to make runs resumable")
    return (f"hw1sk: interrupted; {_count_cached(cache_dir)} finished run(s) are kept in the "
            f"cache {cache_dir}; run the same command again to resume")


def _run_report(args, only, overrides=None):
    """Check the arguments, run the report and return the exit status.

    0: written, every item ok; 1: written, some item failed; 2: bad
    arguments or folders (nothing run, nothing created); 130: interrupted
    by Ctrl-C (no report written; finished runs stay in ``--cache-dir``).
    """
    try:
        return _checked_report(args, only, overrides)
    except KeyboardInterrupt:
        print(_interrupted_message(args.cache_dir), file=sys.stderr)
        return EXIT_INTERRUPTED


def _checked_report(args, only, overrides):
    from .experiments import select_experiments
    from .report import build_report

    try:
        ids = select_experiments(only)
        _check_environment(args, ids)
    except ValueError as exc:
        print(f"hw1sk: error: {exc}", file=sys.stderr)
        return 2
    paths = build_report(
        args.out, profile=args.profile, only=ids, data_home=args.data_home, n_jobs=args.n_jobs,
        device=args.device, seed=args.seed, backend=args.backend, scheduler=args.scheduler,
        cache_dir=args.cache_dir, progress=not args.quiet, overrides=overrides)
    if not args.quiet:
        print(f"report: {paths['html']} ({paths['wall_time']:.1f} s, profile {args.profile}, "
              f"{len(ids)} item(s), {len(paths['figures']) // 2} figure(s))")
    failed = [res for res in paths["results"] if res.error]
    for res in failed:
        print(f"hw1sk: error: {res.id} failed: {res.error.splitlines()[0]}", file=sys.stderr)
    return 1 if failed else 0


def sweep_main(part, overrides=None, argv=None, description=None):
    """Entry point of the sweep scripts in ``studies/``: one HW1 part, resumable.

    Same options as ``hw1sk report`` (without ``--only``), but the profile is
    ``full`` by default and the per-run cache is on by default (``.sweep_cache``), so a re-run after an interruption redoes
    only the runs that had not finished.

    Parameters
    ----------
    part : str
        Experiment id prefix, e.g. ``"1-2"``.
    overrides : dict, optional
        ``{experiment id: {study parameter: value}}`` on top of the profile.
    argv : list of str, optional
    description : str, optional

    Returns
    -------
    status : int
        As ``hw1sk report``: 0 ok, 1 some item failed, 2 bad arguments,
        130 interrupted by Ctrl-C (the finished runs stay in the cache).
    """
    args = _sweep_parser(part, description).parse_args(argv)
    return _run_report(args, [part], overrides)


def _sweep_parser(part, description=None):
    """The options of a sweep script: the report's, with the full profile and a cache."""
    parser = _ArgumentParser(description=description)
    _add_run_options(parser, f"hw1sk_output/hw{part.replace('-', '_')}", ".sweep_cache", "full")
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
