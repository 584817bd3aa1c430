"""Tests for hw1sk.report: what the report files hold, for ok, diverged, skipped and failed items."""

import base64
import json
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
    assert "1 run(s) diverged (a non-finite loss, or one far above the starting loss)" in md
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


# ---------------------------------------------------------------------------
# file names, anchors and a reused report folder

EVIL_ID = "1-x'><script>alert(1)</script>/../../evil"


def _item(exp_id, figure="curve", table="results"):
    return ExperimentResult(id=exp_id, title="t", figures={figure: _figure()},
                            tables={table: pd.DataFrame({"a": [1]})})


def _report_files(out):
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}


def test_ids_are_escaped_in_anchors_and_sanitized_in_file_names(tmp_path):
    out = tmp_path / "out"
    paths = write_report([_item(EVIL_ID, figure="../curve", table="a/b")], out)
    html = paths["html"].read_text()
    assert "<script" not in html and "'><script" not in html
    assert "<h2 id='1-x___script_alert_1___script__.._.._evil'>" in html
    # every file stays in its folder, under a name of safe characters only
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    written = paths["figures"] + paths["tables"]
    assert written and all(p.parent.parent == out for p in written)
    for path in written:
        assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*", path.name), path.name
    md = paths["markdown"].read_text()
    assert f"](figures/{paths['figures'][0].name})" in md
    assert f"tables/{paths['tables'][0].name}" in md


def test_ids_that_sanitize_alike_do_not_overwrite_each_other(tmp_path):
    paths = write_report([_item("1-x/a"), _item("1-x?a")], tmp_path)
    names = sorted(p.name for p in paths["tables"])
    assert names == ["1-x_a_results-2.csv", "1-x_a_results.csv"]
    assert len(set(paths["figures"])) == 4


def test_a_reused_folder_holds_exactly_what_its_report_lists(tmp_path):
    first = write_report([_item("1-x-old"), _item("1-x-kept")], tmp_path)
    assert (tmp_path / "figures" / "1-x-old_curve.png").is_file()
    # files of the user's own in the report's folders are never touched
    (tmp_path / "figures" / "mine.png").write_bytes(b"user")
    (tmp_path / "tables" / "1-x-old_notes.csv").write_text("user")
    (tmp_path / "notes.txt").write_text("user")
    second = write_report([_item("1-x-kept"), _item("1-x-new")], tmp_path)
    listed = {p.relative_to(tmp_path).as_posix() for p in second["figures"] + second["tables"]}
    user = {"figures/mine.png", "tables/1-x-old_notes.csv", "notes.txt"}
    assert _report_files(tmp_path) == listed | user | {
        "report.html", "report.md", ".hw1sk_manifest.json"}
    assert not any("1-x-old" in p for p in listed)
    assert first["figures"][0].name == "1-x-old_curve.png"
    manifest = json.loads((tmp_path / ".hw1sk_manifest.json").read_text())
    assert set(manifest["files"]) == listed
    # an empty report removes every figure and table it wrote, and only those
    write_report([], tmp_path)
    assert _report_files(tmp_path) == user | {"report.html", "report.md", ".hw1sk_manifest.json"}


def test_a_manifest_never_deletes_outside_the_report_naming(tmp_path):
    out = tmp_path / "out"
    (out / "figures").mkdir(parents=True)
    victims = [tmp_path / "victim.png", out / "keep.csv", out / "figures" / "a.txt",
               out / "figures" / ".hidden.png"]
    for path in victims:
        path.write_text("user")
    (out / ".hw1sk_manifest.json").write_text(json.dumps({"files": [
        "../victim.png", "figures/../../victim.png", str(tmp_path / "victim.png"),
        "keep.csv", "figures/a.txt", "figures/.hidden.png", 7]}))
    write_report([_item("1-x")], out)
    assert all(path.read_text() == "user" for path in victims)
    (out / ".hw1sk_manifest.json").write_text("not json")
    write_report([_item("1-x")], out)  # an unreadable manifest is a manifest of nothing
    assert all(path.read_text() == "user" for path in victims)


# ---------------------------------------------------------------------------
# findings: a summary table first, each item's findings at its end

def _with_findings():
    from hw1sk.findings import Finding

    results = _results()
    results[0].findings = [
        Finding("1-x-ok", "The loss falls 2x <b>fast</b>.", "The loss falls.", "HW1-x",
                "reproduced", "loss 0.5 -> 0.25", "the ratio 0.5 is below 0.9"),
        Finding("1-x-ok", "The gap grows (rho = 0.3, n = 4).", "The gap grows.", "Paper 2017",
                "inconclusive", "rho = 0.3, p = 0.7, n = 4", "only 4 points: at least 5"),
    ]
    results[1].findings = [Finding("1-x-diverged", "Runs end apart.", "Apart.", "HW1-y",
                                   "not reproduced", "min distance 0.01", "close")]
    return results


def test_the_report_opens_with_a_summary_of_every_finding(tmp_path):
    paths = write_report(_with_findings(), tmp_path, meta={"profile": "quick"})
    html, md = paths["html"].read_text(), paths["markdown"].read_text()
    assert md.index("## Findings") < md.index("## Contents") < md.index("## 1-x-ok")
    assert "1 reproduced, 1 not reproduced, 1 inconclusive." in md
    assert "| item | claim | verdict | evidence |" in md
    assert "| 1-x-ok | The gap grows (rho = 0.3, n = 4). | inconclusive | rho = 0.3, p = 0.7, n = 4 |" in md
    assert "| 1-x-diverged | Runs end apart. | not reproduced | min distance 0.01 |" in md
    assert html.index("<h2>Findings</h2>") < html.index("<h2>Contents</h2>")
    # claims are escaped in the summary table and in the item's section
    assert "<b>fast</b>" not in html and html.count("&lt;b&gt;fast&lt;/b&gt;") == 2


def test_each_item_shows_figures_then_findings_then_settings(tmp_path):
    paths = write_report(_with_findings(), tmp_path)
    md, html = paths["markdown"].read_text(), paths["html"].read_text()
    ok = md[md.index("## 1-x-ok"):md.index("## 1-x-diverged")]
    assert "- Reason: only 4 points: at least 5" in ok
    assert "- **reproduced**: The loss falls 2x <b>fast</b>." in ok
    assert "  - Expected: The loss falls. (HW1-x)" in ok and "  - Evidence: loss 0.5 -> 0.25" in ok
    assert (ok.index("](figures/1-x-ok_curve.png)") < ok.index("### Findings")
            < ok.index("### Settings") < ok.index("### Measured") < ok.index("Full tables:"))
    item = html[html.index("id='1-x-ok'"):html.index("id='1-x-diverged'")]
    assert (item.index("<figure>") < item.index("<h3>Findings</h3>")
            < item.index("<summary>Settings</summary>") < item.index("<summary>Measured</summary>"))
    section = html[html.index("id='1-x-diverged'"):html.index("id='1-x-skipped'")]
    assert ("<li class='v-not-reproduced'><b>not reproduced</b>: Runs end apart."
            "<br>Expected: Apart. (HW1-y)") in section
    # an item without findings (skipped, failed) has no findings section, no summary rows
    skipped = md[md.index("## 1-x-skipped"):]
    assert "### Findings" not in skipped


def test_a_report_without_findings_has_no_findings_table(tmp_path):
    md = write_report(_results(), tmp_path)["markdown"].read_text()
    assert "## Findings" not in md and "### Findings" not in md


def test_a_long_report_keeps_no_more_than_one_items_figures_open(tmp_path, monkeypatch):
    import warnings

    import hw1sk.experiments as experiments
    from hw1sk.report import build_report

    def fake_run(exp_id, profile, **kwargs):  # 4 figures per item, 8 items: 32 in all
        return ExperimentResult(id=exp_id, title=exp_id,
                                figures={f"f{i}": _figure() for i in range(4)})

    ids = [f"1-x-{i}" for i in range(8)]
    monkeypatch.setattr(experiments, "run_experiment", fake_run)
    monkeypatch.setattr(experiments, "select_experiments", lambda only: ids)
    plt.close("all")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # matplotlib's >20 figures warning
        paths = build_report(out_dir=tmp_path, progress=False)
    assert plt.get_fignums() == []
    pngs = sorted((tmp_path / "figures").glob("*.png"))
    assert len(pngs) == 32 and all(p.stat().st_size > 1000 for p in pngs)
    assert paths["html"].read_text().count("<figure>") == 32
