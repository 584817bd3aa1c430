"""Tests for the ``hw1sk`` command and the sweep scripts' entry point (hw1sk.cli)."""

import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hw1sk.cli import build_parser, main, sweep_main

REPO_ROOT = Path(__file__).resolve().parents[1]

# one fast item, at sizes below its quick profile
FAST_ITEM = "1-2-minimal-ratio"
FAST_OVERRIDES = {FAST_ITEM: {"n_runs": 4, "hidden": (5,), "n_samples": 50, "train_epochs": 30}}


def _hw1sk(*args, env=None, timeout=120):
    """Run ``python -m hw1sk ARGS`` in a subprocess; return the completed process."""
    env = dict(os.environ, **(env or {}), PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "hw1sk", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=REPO_ROOT)


@pytest.mark.parametrize("args, message", [
    (["report", "--only", "1-9"], "unknown item '1-9'"),
    (["report", "--only", ""], "empty item ''"),
    (["report", "--n-jobs", "-2"], "--n-jobs must be a positive integer or -1"),
    (["report", "--n-jobs", "0"], "--n-jobs must be a positive integer or -1"),
    (["report", "--n-jobs", "two"], "--n-jobs must be an integer"),
    (["report", "--seed", "-1"], "--seed must be >= 0"),
    (["report", "--profile", "huge"], "invalid choice: 'huge'"),
    (["report", "--device", "cuda:0"], "CUDA is not available"),
    (["report", "--device", "gpu"], "is not a torch device"),
    (["report", "--backend", "spark"], "invalid choice: 'spark'"),
    (["report", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler needs --backend dask"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_end_with_one_line_and_non_zero_exit(args, message, tmp_path):
    if args[-1] == "cuda:0":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    proc = _hw1sk(*args, "--out", str(tmp_path / "out")) if args[0] == "report" else \
        _hw1sk(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("hw1sk: error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written on bad arguments


def test_data_home_without_mnist_is_one_line(tmp_path):
    proc = _hw1sk("report", "--only", "1-3-random-labels", "--data-home", str(tmp_path),
                  "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "MNIST is not available under" in lines[0]
    assert str(tmp_path) in lines[0] and "Traceback" not in proc.stderr


def test_items_without_mnist_need_no_data_home(tmp_path):
    # the function items never look for MNIST, so a data home without it is fine
    out = tmp_path / "out"
    proc = _hw1sk("report", "--only", "1-2-gradient-norm", "--data-home", str(tmp_path),
                  "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert (out / "report.html").stat().st_size > 0


def test_list_names_every_item(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for item in ("1-1-functions", "1-1-mnist", "1-2-trajectory", "1-2-gradient-norm",
                 "1-2-minimal-ratio", "1-2-error-surface", "1-3-random-labels",
                 "1-3-param-count", "1-3-interpolation", "1-3-sensitivity"):
        assert item in out


def test_report_only_one_item_writes_every_output(tmp_path, capsys, mnist_data_home):
    out = tmp_path / "out"
    status = sweep_main(FAST_ITEM, FAST_OVERRIDES,
                        argv=["--out", str(out), "--profile", "quick", "--backend",
                              "sequential", "--cache-dir", str(tmp_path / "cache"),
                              "--data-home", mnist_data_home])
    assert status == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed
    html = (out / "report.html").read_text()
    md = (out / "report.md").read_text()
    for name in ("minimal_ratio_vs_loss", "hessian_spectrum"):
        for ext in ("png", "svg"):
            path = out / "figures" / f"{FAST_ITEM}_{name}.{ext}"
            assert path.stat().st_size > 1000, path
        assert f"figures/{FAST_ITEM}_{name}.png" in md
    assert html.count("data:image/png;base64,") == 2  # self-contained
    for table in ("results", "summary"):
        frame = pd.read_csv(out / "tables" / f"{FAST_ITEM}_{table}.csv")
        assert len(frame)
    assert len(pd.read_csv(out / "tables" / f"{FAST_ITEM}_results.csv")) == 4
    # the settings of the experiment and its measured numbers are in both documents
    for doc in (html, md):
        assert "Settings" in doc and "Measured" in doc and "n_runs" in doc
        assert "1-1-functions" not in doc  # only the chosen item


def test_main_job_quick_profile_option_parsing():
    args = build_parser().parse_args(["report"])
    assert args.profile == "quick" and args.n_jobs == 1 and args.only is None
    assert args.out == "hw1sk_output" and not args.quiet
    args = build_parser().parse_args(["report", "--only", "1-2", "1-3-sensitivity",
                                      "--n-jobs", "-1", "--quiet", "--profile", "full"])
    assert args.only == ["1-2", "1-3-sensitivity"] and args.n_jobs == -1 and args.quiet


def _count_calls(func, counter):
    # functools.wraps keeps the module and qualname, so the cache key is the same
    @functools.wraps(func)
    def counted(*args, **kwargs):
        counter.append(kwargs.get("seed"))
        return func(*args, **kwargs)

    return counted


def test_sweep_killed_midway_resumes_without_redoing_finished_runs(tmp_path, monkeypatch,
                                                                   mnist_data_home):
    import hw1sk.studies.minimal_ratio as minimal_ratio

    cache, out = tmp_path / "cache", tmp_path / "out"
    # one cache file per run (vectorize=False): seed groups resume per group, tested in
    # tests/test_studies_seed_groups.py
    overrides = {FAST_ITEM: {**FAST_OVERRIDES[FAST_ITEM], "n_runs": 8,
                             "train_epochs": 600, "vectorize": False}}
    argv = ["--out", str(out), "--profile", "quick", "--backend", "sequential",
            "--cache-dir", str(cache), "--data-home", mnist_data_home, "--quiet"]
    code = ("import sys; from hw1sk.cli import sweep_main; "
            f"sys.exit(sweep_main({FAST_ITEM!r}, {overrides!r}, argv={argv!r}))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO_ROOT)
    folder = cache / f"{minimal_ratio.__name__}.minimal_ratio_run"
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.pkl"))) < 2:
        assert proc.poll() is None, "the sweep ended before it was killed"
        assert time.monotonic() < deadline, "the sweep is too slow"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.pkl")}
    assert 2 <= len(finished) < 8
    assert not (out / "report.html").exists()

    calls = []
    monkeypatch.setattr(minimal_ratio.MinimalRatioStudy, "_run_function",
                        staticmethod(_count_calls(minimal_ratio.minimal_ratio_run, calls)))
    assert sweep_main(FAST_ITEM, overrides, argv=argv) == 0
    # exactly the runs that had not finished were fitted, once each
    assert len(calls) == 8 - len(finished) and len(set(calls)) == len(calls)
    for name, mtime in finished.items():  # the finished results were read, not rewritten
        assert (folder / name).stat().st_mtime_ns == mtime
    assert len(list(folder.glob("*.pkl"))) == 8
    assert len(pd.read_csv(out / "tables" / f"{FAST_ITEM}_results.csv")) == 8

    # a third run fits nothing at all and gives the same table
    calls.clear()
    first = pd.read_csv(out / "tables" / f"{FAST_ITEM}_results.csv")
    assert sweep_main(FAST_ITEM, overrides, argv=argv) == 0
    assert calls == []
    pd.testing.assert_frame_equal(pd.read_csv(out / "tables" / f"{FAST_ITEM}_results.csv"),
                                  first)


def _args(out, data_home):
    return build_parser().parse_args(["report", "--out", str(out), "--quiet", "--data-home",
                                      data_home, "--backend", "sequential"])


def test_a_failing_item_is_reported_and_the_others_still_written(tmp_path, monkeypatch,
                                                                  capsys, mnist_data_home):
    from hw1sk.cli import _run_report
    from hw1sk.experiments import EXPERIMENTS

    def broken(study):
        raise RuntimeError("plotting exploded")

    exp = EXPERIMENTS["1-2-gradient-norm"]
    monkeypatch.setitem(EXPERIMENTS, "1-2-gradient-norm",
                        dataclasses.replace(exp, render=broken))
    out = tmp_path / "out"
    status = _run_report(_args(out, mnist_data_home), ["1-2-gradient-norm", FAST_ITEM],
                         {**FAST_OVERRIDES, "1-2-gradient-norm": {"max_epochs": 5}})
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["hw1sk: error: 1-2-gradient-norm failed: RuntimeError: plotting exploded"]
    html = (out / "report.html").read_text()
    assert "This item failed and has no results: RuntimeError: plotting exploded" in html
    assert (out / "figures" / f"{FAST_ITEM}_minimal_ratio_vs_loss.png").stat().st_size > 0


def test_every_run_diverged_is_a_failed_item_that_lists_the_runs(tmp_path, capsys,
                                                                  mnist_data_home):
    from hw1sk.cli import _run_report

    out = tmp_path / "out"
    # a learning rate of 1e6 makes the loss of the function fit non-finite at once
    status = _run_report(_args(out, mnist_data_home), ["1-2-gradient-norm"],
                         {"1-2-gradient-norm": {"max_epochs": 5, "lr": 1e6, "n_runs": 2}})
    assert status == 1
    assert "every run diverged" in capsys.readouterr().err
    md = (out / "report.md").read_text()
    assert "2 run(s) diverged (a non-finite loss, or one far above the starting loss)" in md
    assert "| 1-2-gradient-norm |" in md and "| failed |" in md


def test_dask_local_cluster_gives_the_numbers_of_the_local_run(tmp_path, mnist_data_home):
    pytest.importorskip("distributed")
    tables = {}
    for backend in ("sequential", "dask"):
        out = tmp_path / backend
        # a cache of its own for each backend, so that each one computes its numbers
        argv = ["--out", str(out), "--profile", "quick", "--backend", backend, "--n-jobs", "2",
                "--data-home", mnist_data_home, "--quiet", "--cache-dir", str(tmp_path / backend)]
        assert sweep_main(FAST_ITEM, FAST_OVERRIDES, argv=argv) == 0
        tables[backend] = pd.read_csv(out / "tables" / f"{FAST_ITEM}_results.csv")
    assert len(tables["dask"]) == 4
    # the four runs differ only in their seed: one group, trained together (vectorize)
    for backend in tables:
        assert len(list((tmp_path / backend).rglob("*.pkl"))) == 1
    pd.testing.assert_frame_equal(tables["dask"], tables["sequential"])


@pytest.mark.parametrize("script", ["hw1_1_deep_vs_shallow.py", "hw1_2_optimization.py",
                                    "hw1_3_generalization.py"])
def test_sweep_scripts_take_the_report_options(script):
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "studies" / script), "--help"],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert proc.returncode == 0, proc.stderr
    for option in ("--profile", "--n-jobs", "--backend", "--scheduler", "--cache-dir",
                   "--data-home", "--device", "--seed", "--quiet"):
        assert option in proc.stdout
    assert "(default: .sweep_cache)" in proc.stdout


def test_sweep_script_defaults_are_full_profile_with_a_cache():
    from hw1sk.cli import _sweep_parser

    args = _sweep_parser("1-3").parse_args([])
    assert args.profile == "full" and args.cache_dir == ".sweep_cache"
    assert args.out == "hw1sk_output/hw1_3"
