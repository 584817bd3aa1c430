"""Tests for the folders of the ``hw1sk`` command: --out, --cache-dir and --data-home.

Every folder is checked before anything trains: one ``hw1sk: error:`` line,
exit status 2, and nothing created.  A reused --out ends up holding what its
report lists (see also tests/test_report.py).
"""

import os
import socket
import stat
import sys
import tempfile

import pytest

import hw1sk.experiments
from hw1sk.cli import main

FAST_ITEM = "1-2-gradient-norm"  # a function item: no MNIST needed


@pytest.fixture
def no_training(monkeypatch):
    """Make any experiment run fail the test: the checks must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("an experiment ran before the folders were checked")

    monkeypatch.setattr(hw1sk.experiments, "run_experiment", refuse)


@pytest.fixture
def no_network(monkeypatch):
    """Refuse every connection and name lookup, so that a download fails at once."""
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def _tree(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def _report(capsys, *args, item=FAST_ITEM):
    """Run ``hw1sk report`` in-process; return (status, stderr lines)."""
    status = main(["report", "--only", item, "--quiet", "--backend", "sequential", *args])
    return status, capsys.readouterr().err.strip().splitlines()


def _assert_one_error(status, err, *fragments):
    assert status == 2
    assert len(err) == 1, err
    assert err[0].startswith("hw1sk: error: "), err
    for fragment in fragments:
        assert fragment in err[0], err


def test_out_that_is_a_file(tmp_path, capsys, no_training):
    out = tmp_path / "out.txt"
    out.write_text("mine")
    status, err = _report(capsys, "--out", str(out))
    _assert_one_error(status, err, f"--out {out} is a file, not a folder")
    assert out.read_text() == "mine" and _tree(tmp_path) == ["out.txt"]


def test_out_below_a_file(tmp_path, capsys, no_training):
    (tmp_path / "file").write_text("mine")
    status, err = _report(capsys, "--out", str(tmp_path / "file" / "out"))
    _assert_one_error(status, err, "cannot be created", f"{tmp_path / 'file'} is not a folder")
    assert _tree(tmp_path) == ["file"]


def test_out_whose_figures_folder_is_a_file(tmp_path, capsys, no_training):
    (tmp_path / "figures").write_text("mine")
    status, err = _report(capsys, "--out", str(tmp_path))
    _assert_one_error(status, err, f"--out {tmp_path / 'figures'} is a file")
    assert _tree(tmp_path) == ["figures"]


def test_out_that_cannot_be_written_is_found_by_trying(tmp_path, capsys, monkeypatch,
                                                       no_training):
    # as root, permission bits do not stop a write: simulate the refusal of a
    # read-only mount where the check tries it, in the folder itself
    out = tmp_path / "out"
    out.mkdir()
    real = tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir) == str(out):
            raise PermissionError(13, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    status, err = _report(capsys, "--out", str(out))
    _assert_one_error(status, err, f"--out {out} is not writable: Read-only file system")
    assert _tree(tmp_path) == ["out"]


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.path.isdir("/sys"),
                    reason="needs Linux's /sys, where no one may create files")
def test_out_on_a_folder_where_no_one_may_write(tmp_path, capsys, no_training):
    out = "/sys/hw1sk-test-out"
    status, err = _report(capsys, "--out", out)
    _assert_one_error(status, err, f"--out {out} is not writable (in /sys)")
    assert not os.path.exists(out)


def test_out_without_write_permission(tmp_path, capsys, no_training):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        probe = tmp_path / "locked" / "probe"
        try:
            probe.write_text("")
        except PermissionError:
            pass
        else:
            probe.unlink()
            pytest.skip("permission bits do not stop this user (root)")
        status, err = _report(capsys, "--out", str(out))
        _assert_one_error(status, err, f"--out {out} is not writable")
        status, err = _report(capsys, "--out", str(out / "sub"))
        _assert_one_error(status, err, f"--out {out / 'sub'} is not writable (in {out})")
    finally:
        out.chmod(stat.S_IRWXU)
    assert _tree(tmp_path) == ["locked"]


def test_cache_dir_that_is_a_file(tmp_path, capsys, no_training):
    cache = tmp_path / "cache"
    cache.write_text("mine")
    status, err = _report(capsys, "--out", str(tmp_path / "out"), "--cache-dir", str(cache))
    _assert_one_error(status, err, f"--cache-dir {cache} is a file, not a folder")
    assert _tree(tmp_path) == ["cache"]


@pytest.mark.parametrize("item", [FAST_ITEM, "1-3-random-labels"])
def test_data_home_that_is_a_file(tmp_path, capsys, no_training, item):
    home = tmp_path / "home"
    home.write_text("mine")
    status, err = _report(capsys, "--out", str(tmp_path / "out"), "--data-home", str(home),
                          item=item)
    _assert_one_error(status, err, f"--data-home {home} is a file, not a folder")
    assert _tree(tmp_path) == ["home"]


def test_missing_data_home_is_not_created(tmp_path, capsys, no_training, no_network):
    home = tmp_path / "no" / "data"
    status, err = _report(capsys, "--out", str(tmp_path / "out"), "--data-home", str(home),
                          "--cache-dir", str(tmp_path / "cache"), item="1-3-random-labels")
    _assert_one_error(status, err, f"MNIST is not available under {home}")
    assert _tree(tmp_path) == []  # no data home, no MNIST/raw, no --out, no cache


def test_existing_data_home_without_mnist_stays_empty(tmp_path, capsys, no_training,
                                                      no_network):
    status, err = _report(capsys, "--out", str(tmp_path / "out"), "--data-home", str(tmp_path),
                          item="1-3-random-labels")
    _assert_one_error(status, err, f"MNIST is not available under {tmp_path}")
    assert _tree(tmp_path) == []


def test_a_failed_check_leaves_a_missing_out_missing(tmp_path, capsys, no_training):
    status, err = _report(capsys, "--out", str(tmp_path / "a" / "out"), "--device", "gpu")
    _assert_one_error(status, err, "is not a torch device")
    assert _tree(tmp_path) == []


def test_a_reused_out_drops_the_figures_of_items_it_no_longer_lists(tmp_path, capsys,
                                                                    monkeypatch):
    import matplotlib.pyplot as plt
    import pandas as pd

    from hw1sk.experiments import ExperimentResult

    def fake_run(exp_id, profile, **kwargs):
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        return ExperimentResult(id=exp_id, title=exp_id, figures={"curve": fig},
                                tables={"results": pd.DataFrame({"a": [1]})})

    monkeypatch.setattr(hw1sk.experiments, "run_experiment", fake_run)
    out = tmp_path / "out"
    assert _report(capsys, "--out", str(out), item="1-2")[0] == 0
    assert (out / "figures" / "1-2-trajectory_curve.png").is_file()
    (out / "figures" / "my_notes.png").write_bytes(b"mine")
    assert _report(capsys, "--out", str(out), item="1-2-minimal-ratio")[0] == 0
    assert sorted(os.listdir(out / "figures")) == [
        "1-2-minimal-ratio_curve.png", "1-2-minimal-ratio_curve.svg", "my_notes.png"]
    assert os.listdir(out / "tables") == ["1-2-minimal-ratio_results.csv"]
