"""Tests for hw1sk.report: what the report files hold, for ok, diverged, skipped and failed items."""

import base64
import re

import matplotlib.pyplot as plt
import pandas as pd

from hw1sk.experiments import ExperimentResult
from hw1sk.report import contents_frame, write_report


def _figure():
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return fig


def _results():
    ok = ExperimentResult(
        id="1-x-ok", title="An item", figures={"curve": _figure()},
        tables={"results": pd.DataFrame({"run": [0, 1], "loss": [0.5, 0.25]})},
        settings={"model": "MLP 1-5-1", "lr": 0.01, "batch_sizes": (64, 1024)},
        numbers=pd.DataFrame({"loss": [0.25]}), wall_time=1.25)
    diverged = ExperimentResult(
        id="1-x-diverged", title="Some runs diverged", figures={"curve": _figure()},
        tables={"results": pd.DataFrame({"run": [0]})},
        diverged=pd.DataFrame({"run": [1], "lr": [10.0],
                               "message": ["training loss became non-finite at epoch 2"]}))
    skipped = ExperimentResult(id="1-x-skipped", title="No data", skipped=True,
                               notes=["CIFAR-10 is not under /nowhere; this item was skipped."])
    failed = ExperimentResult(id="1-x-failed", title="Broken", error="RuntimeError: boom",
                              notes=["This item failed and has no results: RuntimeError: boom"])
    return [ok, diverged, skipped, failed]


def test_contents_gives_each_items_status():
    contents = contents_frame(_results())
    assert contents["status"].tolist() == ["ok", "1 run(s) diverged", "skipped", "failed"]
    assert contents["figures"].tolist() == [1, 1, 0, 0]
    assert contents["wall time (s)"].tolist()[0] == 1.2


def test_write_report_files(tmp_path):
    paths = write_report(_results(), tmp_path, meta={"profile": "quick", "seed": 0})
    html = paths["html"].read_text()
    md = paths["markdown"].read_text()
    # figures: PNG and SVG each, embedded in the HTML, linked from the Markdown
    assert sorted(p.name for p in paths["figures"]) == [
        "1-x-diverged_curve.png", "1-x-diverged_curve.svg", "1-x-ok_curve.png", "1-x-ok_curve.svg"]
    for path in paths["figures"]:
        assert path.stat().st_size > 500
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(embedded) == 2
    assert base64.b64decode(embedded[0])[:4] == b"\x89PNG"
    assert "](figures/1-x-ok_curve.png)" in md
    # tables as CSV, identical to the frames
    table = pd.read_csv(tmp_path / "tables" / "1-x-ok_results.csv")
    pd.testing.assert_frame_equal(table, _results()[0].tables["results"])
    # settings and measured numbers of each item, the run-wide settings at the top
    for doc in (html, md):
        assert "MLP 1-5-1" in doc and "(64, 1024)" in doc or "[64, 1024]" in doc
        assert "Measured" in doc and "quick" in doc
    # a diverged run is reported with its settings, never silently dropped
    assert "1 run(s) diverged (non-finite loss)" in md
    assert "training loss became non-finite at epoch 2" in html
    assert "class='diverged'" in html
    # skipped and failed items say so
    assert "this item was skipped" in md
    assert "**This item failed and has no results: RuntimeError: boom**" in md
    assert "| 1-x-failed | Broken | failed |" in md
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no leftovers


def test_write_report_closes_its_figures(tmp_path):
    results = _results()
    before = len(plt.get_fignums())
    write_report(results, tmp_path)
    assert len(plt.get_fignums()) == before - 2


def test_markdown_keeps_integer_columns_integers(tmp_path):
    res = ExperimentResult(id="1-x", title="t", numbers=pd.DataFrame(
        {"seed": [1610069010], "loss": [0.123456789]}))
    md = write_report([res], tmp_path)["markdown"].read_text()
    assert "| 1610069010 | 0.1235 |" in md
