"""The ``hw1sk`` command: ``hw1sk report`` reproduces the HW1 report, ``hw1sk list`` names its items."""

from __future__ import annotations

import argparse
import os
import sys

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


def _check_environment(args, ids):
    """Fail early, in one line, on a device or data folder that cannot work."""
    import torch

    from .experiments import EXPERIMENTS

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
            load_mnist(args.data_home, train=False, n_samples=10, random_state=0)
        except (OSError, RuntimeError) as exc:
            home = get_data_home(args.data_home)
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


def _run_report(args, only, overrides=None):
    from .experiments import select_experiments
    from .report import build_report

    try:
        ids = select_experiments(only)
        _check_environment(args, ids)
    except ValueError as exc:
        print(f"hw1sk: error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
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
