"""Figures and tables of the experiments -> an output folder, ``report.html`` and ``report.md``.

This module only renders: the science is in the studies, which
:mod:`hw1sk.experiments` runs.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
import platform
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["build_report", "write_report", "contents_frame"]


#: The file in a report folder that lists the figures and tables hw1sk wrote there.
MANIFEST_NAME = ".hw1sk_manifest.json"

#: What the report writes: ``figures/<stem>.png|svg`` and ``tables/<stem>.csv``.
_OUTPUT_FILE = re.compile(r"(figures/[A-Za-z0-9_-][A-Za-z0-9._-]*\.(png|svg)"
                          r"|tables/[A-Za-z0-9_-][A-Za-z0-9._-]*\.csv)")


def _atomic_write_text(path: Path, text: str):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _fmt(value):
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def _markdown_table(frame: pd.DataFrame, max_rows=40) -> str:
    frame = frame.head(max_rows)
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    # itertuples keeps each column's type (iterrows would turn int seeds into floats)
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines)


def _settings_frame(settings: dict) -> pd.DataFrame:
    rows = [{"setting": k, "value": v if isinstance(v, str) else json.dumps(v, default=str)}
            for k, v in settings.items()]
    return pd.DataFrame(rows, columns=["setting", "value"])


def _safe_stem(text) -> str:
    """``text`` with every character outside ``[A-Za-z0-9._-]`` replaced by ``_``.

    A leading dot becomes ``_`` too, so that a stem never names a hidden file,
    ``.`` or ``..``: the stem is a plain file name inside its folder.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", str(text))
    return re.sub(r"^\.", "_", stem) or "_"


def _anchor(exp_id) -> str:
    """The HTML ``id`` of an item's heading: its safe stem, escaped for an attribute."""
    return html.escape(_safe_stem(exp_id), quote=True)


def _output_stems(results) -> list:
    """Per result, ``{"figures": {name: stem}, "tables": {name: stem}}`` with unique stems.

    Two items whose ids differ only in unsafe characters would share a stem;
    the later one gets a ``-2`` (``-3``, ...) suffix instead of overwriting.
    """
    used = {"figures": set(), "tables": set()}
    stems = []
    for res in results:
        entry = {}
        for kind, names in (("figures", res.figures), ("tables", res.tables)):
            entry[kind] = {}
            for name in names:
                base = stem = _safe_stem(f"{res.id}_{name}")
                n = 1
                while stem in used[kind]:
                    n += 1
                    stem = f"{base}-{n}"
                used[kind].add(stem)
                entry[kind][name] = stem
        stems.append(entry)
    return stems


def _listed_files(stems) -> set:
    """The paths, relative to the report folder, of every figure and table file."""
    files = set()
    for entry in stems:
        files |= {f"figures/{s}.{ext}" for s in entry["figures"].values() for ext in ("png", "svg")}
        files |= {f"tables/{s}.csv" for s in entry["tables"].values()}
    return files


def _read_manifest(out: Path) -> set:
    """The files a previous report wrote in ``out``, from its manifest (empty if none).

    Only entries of the report's own naming (``figures/*.png``, ``*.svg``,
    ``tables/*.csv``, safe names) are kept, so an edited manifest cannot
    point outside those two folders.
    """
    try:
        listed = json.loads((out / MANIFEST_NAME).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    if not isinstance(listed, list):
        return set()
    return {f for f in listed if isinstance(f, str) and _OUTPUT_FILE.fullmatch(f)}


def _write_manifest(out: Path, files):
    _atomic_write_text(out / MANIFEST_NAME, json.dumps(
        {"written_by": "hw1sk report", "files": sorted(files)}, indent=1) + "\n")


def _remove_stale(out: Path, files):
    """Delete the listed files (written by an earlier report) that are still there."""
    for rel in sorted(files):
        path = out / rel
        if path.is_file() or path.is_symlink():
            path.unlink()


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _status(res) -> str:
    if res.error:
        return "failed"
    if res.skipped:
        return "skipped"
    if res.diverged is not None and len(res.diverged):
        return f"{len(res.diverged)} run(s) diverged"
    return "ok"


def contents_frame(results) -> pd.DataFrame:
    """One row per experiment: id, title, status (ok, n diverged, skipped, failed), wall time.

    Parameters
    ----------
    results : list of hw1sk.experiments.ExperimentResult

    Returns
    -------
    contents : pandas.DataFrame
        Columns ``item``, ``title``, ``status``, ``figures``, ``wall time (s)``.
    """
    return pd.DataFrame([{"item": r.id, "title": r.title, "status": _status(r),
                          "figures": len(r.figures), "wall time (s)": round(r.wall_time, 1)}
                         for r in results],
                        columns=["item", "title", "status", "figures", "wall time (s)"])


#: The columns of the findings summary that opens the report.
_SUMMARY_COLUMNS = ["item", "claim", "verdict", "evidence"]


def _verdict_class(verdict) -> str:
    return "v-" + re.sub(r"[^a-z]+", "-", str(verdict).lower()).strip("-")


def _verdict_badge(verdict) -> str:
    return (f"<span class='verdict {_verdict_class(verdict)}'>"
            f"{html.escape(str(verdict))}</span>")


def _wrap_table(table_html: str) -> str:
    """A table inside a block that scrolls sideways, so a wide table never widens the page."""
    return f"<div class='table-wrap'>{table_html}</div>"


def _frame_html(frame: pd.DataFrame, **kwargs) -> str:
    return _wrap_table(frame.to_html(index=False, border=0, **kwargs))


def _findings_summary(results):
    """HTML and Markdown parts of the table of every item's findings (empty when none)."""
    from .findings import VERDICTS, findings_frame

    found = [f for res in results for f in res.findings]
    if not found:
        return [], []
    frame = findings_frame(found)[_SUMMARY_COLUMNS]
    counts = frame["verdict"].value_counts()
    tally = ", ".join(f"{int(counts.get(v, 0))} {v}" for v in VERDICTS) + "."
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _SUMMARY_COLUMNS)
    rows = []
    for row in frame.itertuples(index=False):
        item, claim, verdict, evidence = (str(v) for v in row)
        rows.append(f"<tr><td><a href='#{_anchor(item)}'>{html.escape(item)}</a></td>"
                    f"<td>{html.escape(claim)}</td><td>{_verdict_badge(verdict)}</td>"
                    f"<td>{html.escape(evidence)}</td></tr>")
    table = (f"<table class='findings-summary'><thead><tr>{head}</tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    return (["<section id='findings'>", "<h2>Findings</h2>", f"<p>{html.escape(tally)}</p>",
             _wrap_table(table), "</section>"],
            ["## Findings", "", tally, "", _markdown_table(frame, max_rows=len(frame)), ""])


def _item_findings(findings):
    """HTML and Markdown parts of one item's findings section (empty when none)."""
    if not findings:
        return [], []
    html_parts = ["<h3>Findings</h3>", "<ul class='findings'>"]
    md_parts = ["### Findings", ""]
    for f in findings:
        lines = [("Expected", f"{f.expectation} ({f.reference})"), ("Evidence", f.evidence),
                 ("Reason", f.reason)]
        html_parts.append(
            f"<li class='{_verdict_class(f.verdict)}'><b>{html.escape(f.verdict)}</b>: "
            f"{html.escape(f.claim)}"
            + "".join(f"<br>{k}: {html.escape(v)}" for k, v in lines) + "</li>")
        md_parts.append(f"- **{f.verdict}**: {f.claim}")
        md_parts += [f"  - {k}: {v}" for k, v in lines]
    return html_parts + ["</ul>"], md_parts + [""]


def _folded(summary, body_html) -> str:
    """A ``<details>`` block: closed on screen, opened when printed (see ``_CSS``)."""
    return f"<details><summary>{html.escape(summary)}</summary>{body_html}</details>"


#: The page's only style sheet: a contents sidebar fixed on wide screens, a block on top of
#: the page on narrow ones, and a print layout without it, with every ``<details>`` open.
_CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1f2328;background:#fff}
a{color:#0b5cad}
nav.toc{position:fixed;top:0;left:0;bottom:0;width:17rem;overflow-y:auto;padding:1rem 1rem 2rem;
 background:#f6f8fa;border-right:1px solid #d0d7de;font-size:.9rem}
nav.toc .toc-title{font-weight:600;margin:0 0 .5rem}
nav.toc ol{list-style:none;margin:0;padding:0}
nav.toc li{margin:.15rem 0}
nav.toc a{display:block;padding:.15rem .4rem;border-radius:4px;text-decoration:none}
nav.toc a:hover{background:#e7ecf0}
nav.toc .status{display:block;font-size:.8em;color:#57606a}
nav.toc .status.bad{color:#b00}
main{margin-left:17rem;padding:1rem 2.5rem 4rem;max-width:calc(17rem + 62rem)}
h1{font-size:1.7rem;margin:.5rem 0 1rem;line-height:1.25}
h2{font-size:1.35rem;margin:2.5rem 0 .5rem;padding-top:.5rem;border-top:1px solid #d0d7de}
h3{font-size:1.05rem;margin:1.2rem 0 .4rem}
section.item{scroll-margin-top:1rem}
h2[id],section[id]{scroll-margin-top:1rem}
.table-wrap{overflow-x:auto;max-width:100%;margin:.5rem 0}
table{border-collapse:collapse;font-size:.85rem}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}
table.findings-summary td:nth-child(2){min-width:16rem}
figure{margin:1rem 0;break-inside:avoid;page-break-inside:avoid}
figure img{display:block;max-width:100%;height:auto}
figcaption{font-size:.9rem;color:#57606a;margin-top:.3rem}
details{margin:.5rem 0;border:1px solid #d0d7de;border-radius:6px;padding:.3rem .7rem}
summary{cursor:pointer;font-weight:600}
details[open] summary{margin-bottom:.3rem}
ul.findings{padding-left:1.2rem}
ul.findings li{margin:.4rem 0}
.verdict{display:inline-block;padding:0 .45em;border-radius:1em;font-size:.85em;white-space:nowrap}
.v-reproduced{background:#dafbe1}
.v-not-reproduced{background:#ffebe9}
.v-inconclusive{background:#fff8c5}
ul.findings li.v-reproduced,ul.findings li.v-not-reproduced,ul.findings li.v-inconclusive{
 background:none;border-left:4px solid #2da44e;padding-left:.5rem;list-style:none}
ul.findings li.v-not-reproduced{border-left-color:#cf222e}
ul.findings li.v-inconclusive{border-left-color:#d4a72c}
.diverged{color:#b00;font-weight:bold}
.meta{color:#57606a}
@media (max-width:900px){
 nav.toc{position:static;width:auto;max-height:none;border-right:0;border-bottom:1px solid #d0d7de}
 nav.toc ol{columns:2 12rem}
 main{margin-left:0;padding:1rem}
}
@media print{
 nav.toc{display:none}
 main{margin:0;padding:0;max-width:none}
 body{font-size:11pt}
 a{color:inherit;text-decoration:none}
 details{border:0;padding:0}
 details::details-content{content-visibility:visible;display:block;height:auto}
 details>summary{list-style:none}
 h2{break-before:auto;break-after:avoid}
 h3{break-after:avoid}
 figure,tr{break-inside:avoid}
 .table-wrap{overflow:visible}
 .table-wrap table{width:100%;table-layout:fixed;font-size:7pt}
 td,th{overflow-wrap:anywhere;padding:1px 3px}
}
"""


def _toc(results, has_findings) -> str:
    """The contents sidebar: the findings summary, then one link per item with its status."""
    links = []
    if has_findings:
        links.append("<li><a href='#findings'>Findings</a></li>")
    for res in results:
        status = _status(res)
        css = "status" if status == "ok" else "status bad"
        links.append(f"<li><a class='toc-item' href='#{_anchor(res.id)}'>"
                     f"{html.escape(res.id)}: {html.escape(res.title)}"
                     f"<span class='{css}'>{html.escape(status)}</span></a></li>")
    return ("<nav class='toc' aria-label='Contents'><p class='toc-title'>Contents</p>"
            f"<ol>{''.join(links)}</ol></nav>")


def write_report(results, out_dir, title="hw1sk: Deep Learning HW1 report", meta=None):
    """Write every figure (PNG, SVG), table (CSV), ``report.html`` and ``report.md``.

    Parameters
    ----------
    results : list of hw1sk.experiments.ExperimentResult
        Their ``findings`` open the report as one table (item, claim,
        verdict, evidence); each item's section then shows its figures,
        its findings in full, and its settings and tables.
    out_dir : str or Path
    title : str
    meta : dict, optional
        Run-wide settings shown at the top (profile, seed, n_jobs, ...).

    Returns
    -------
    paths : dict
        ``{"html": Path, "markdown": Path, "figures": [...], "tables": [...]}``.

    Notes
    -----
    ``report.html`` is one self-contained page (figures embedded as PNG,
    one inline style sheet, no script, nothing fetched): a contents sidebar
    (a block on top on narrow screens), the findings summary, then per item
    its figures, findings, and its settings and tables folded in
    ``<details>`` (opened when printed).  ``report.md`` keeps the same order.

    A report folder holds exactly what its report lists: the figures and
    tables an earlier report wrote in ``out_dir`` (named in its
    ``.hw1sk_manifest.json``) that this one does not list are deleted.  Other
    files, e.g. ones a user put there, are never touched.  Figure and table
    files are named ``<item id>_<name>`` with every character outside
    ``[A-Za-z0-9._-]`` replaced by ``_``.
    """
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    stems = _output_stems(results)
    listed, previous = _listed_files(stems), _read_manifest(out)
    # record what is about to be written first: an interrupted write leaves no untracked file
    _write_manifest(out, previous | listed)
    meta = dict(meta or {})
    figure_paths, table_paths = [], []
    summary_html, summary_md = _findings_summary(results)
    html_parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        _toc(results, bool(summary_html)),
        "<main>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    md_parts = [f"# {title}", ""]
    html_parts += summary_html
    md_parts += summary_md
    if meta:
        meta_frame = _settings_frame(meta)
        html_parts.append(_folded("Run settings", _frame_html(meta_frame)))
        md_parts += ["## Run settings", "", _markdown_table(meta_frame), ""]
    if results:
        contents = contents_frame(results)
        html_parts += ["<section id='contents'>", "<h2>Contents</h2>",
                       _frame_html(contents), "</section>"]
        md_parts += ["## Contents", "", _markdown_table(contents, max_rows=len(contents)), ""]

    # per item: what went wrong (if anything), figures, findings, then settings and tables folded
    for res, stem_of in zip(results, stems):
        html_parts += ["<section class='item'>",
                       f"<h2 id='{_anchor(res.id)}'>{html.escape(res.id)}: "
                       f"{html.escape(res.title)}</h2>"]
        md_parts += [f"## {res.id}: {res.title}", ""]
        timing = f"Wall time: {res.wall_time:.1f} s."
        html_parts.append(f"<p class='meta'>{html.escape(timing)}</p>")
        md_parts += [timing, ""]
        for note in res.notes:
            css = " class='diverged'" if res.error else ""
            html_parts.append(f"<p{css}>{html.escape(note)}</p>")
            md_parts += [f"**{note}**" if res.error else note, ""]
        if res.diverged is not None and len(res.diverged):
            msg = f"{len(res.diverged)} run(s) diverged (a non-finite loss, or one far above the starting loss) and are left out of the figures:"
            html_parts.append(f"<p class='diverged'>{html.escape(msg)}</p>")
            html_parts.append(_frame_html(res.diverged))
            md_parts += [f"**{msg}**", "", _markdown_table(res.diverged), ""]
        for name, fig in res.figures.items():
            stem = stem_of["figures"][name]
            png = _png_bytes(fig)
            (out / "figures" / f"{stem}.png").write_bytes(png)
            fig.savefig(out / "figures" / f"{stem}.svg", format="svg", bbox_inches="tight")
            plt.close(fig)
            figure_paths += [out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.svg"]
            data = base64.b64encode(png).decode("ascii")
            html_parts.append(f"<figure><img alt='{html.escape(f'{res.id}: {name}')}' "
                              f"src='data:image/png;base64,{data}'>"
                              f"<figcaption>{html.escape(f'{res.id}: {name}')}</figcaption></figure>")
            md_parts += [f"![{stem}](figures/{stem}.png)", "", f"*{res.id}: {name}*", ""]
        item_html, item_md = _item_findings(res.findings)
        html_parts += item_html
        md_parts += item_md
        if res.settings:
            settings = _settings_frame(res.settings)
            html_parts.append(_folded("Settings", _frame_html(settings)))
            md_parts += ["### Settings", "", _markdown_table(settings), ""]
        if res.numbers is not None and len(res.numbers):
            html_parts.append(_folded("Measured", _frame_html(res.numbers, float_format=_fmt)))
            md_parts += ["### Measured", "", _markdown_table(res.numbers), ""]
        for name, table in res.tables.items():
            stem = stem_of["tables"][name]
            path = out / "tables" / f"{stem}.csv"
            table.to_csv(path, index=False)
            table_paths.append(path)
        table_stems = list(stem_of["tables"].values())
        if table_stems:
            links = ", ".join(f"<a href='tables/{html.escape(stem, quote=True)}.csv'>"
                              f"tables/{html.escape(stem)}.csv</a>" for stem in table_stems)
            html_parts.append(_folded("Full tables", f"<p>CSV files next to this page: {links}</p>"))
            md_parts += ["Full tables: " + ", ".join(f"tables/{s}.csv" for s in table_stems), ""]
        html_parts.append("</section>")
    html_parts.append("</main></body></html>")
    html_path, md_path = out / "report.html", out / "report.md"
    _atomic_write_text(html_path, "\n".join(html_parts))
    _atomic_write_text(md_path, "\n".join(md_parts))
    _remove_stale(out, previous - listed)
    _write_manifest(out, listed)
    return {"html": html_path, "markdown": md_path, "figures": figure_paths, "tables": table_paths}


def build_report(out_dir, profile="quick", only=None, *, data_home=None, n_jobs=1,
                 device="cpu", seed=0, backend="loky", scheduler=None, cache_dir=None,
                 progress=True, overrides=None):
    """Run the selected experiments of a profile and write the report.

    Parameters
    ----------
    out_dir : str or Path
        Output folder, created when the report is written (after every run).
    profile : {"quick", "full"}, default="quick"
    only : list of str, optional
        Experiment ids or prefixes (``"1-2"``, ``"1-3-sensitivity"``); default all.
    data_home : str, optional
        MNIST folder (see :func:`hw1sk.datasets.get_data_home`).
    n_jobs, backend, scheduler, cache_dir
        Passed to every study's runs (see :func:`hw1sk.sweep.run_sweep`).
        With ``backend="dask"`` and no ``scheduler``, one dask
        ``LocalCluster`` of ``n_jobs`` workers serves every item.
    device : str, default="cpu"
    seed : int, default=0
    progress : bool, default=True
        A tqdm bar across experiments (and runs).
    overrides : dict, optional
        ``{experiment id: {study parameter: value}}`` on top of the profile.

    Returns
    -------
    paths : dict
        What :func:`write_report` returns, plus ``"results"`` (the experiment
        results; an item that raised has its ``error`` set and no figures)
        and ``"wall_time"`` (seconds).

    Raises
    ------
    KeyboardInterrupt
        On Ctrl-C, once the progress bar and the local dask cluster are
        closed: no report is written, and the runs that finished stay in
        ``cache_dir``.
    """
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from .experiments import run_experiment, select_experiments

    ids = select_experiments(only)
    start = time.perf_counter()
    results = []
    bar = tqdm(ids, desc=f"hw1sk report ({profile})", unit="item", disable=not progress)
    # a KeyboardInterrupt (Ctrl-C) travels up to the caller: nothing is written for it
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        if backend == "dask" and scheduler is None:
            # one LocalCluster for every item: its start-up is paid once, not per study
            from .sweep import start_local_cluster

            scheduler = stack.enter_context(start_local_cluster(n_jobs))
        for exp_id in bar:
            bar.set_postfix_str(exp_id)
            results.append(run_experiment(
                exp_id, profile, data_home=data_home, n_jobs=n_jobs, device=device, seed=seed,
                backend=backend, scheduler=scheduler, cache_dir=cache_dir, progress=progress,
                overrides=(overrides or {}).get(exp_id)))
            # the report holds the figures until it writes them: out of pyplot's registry
            # (they still save), so a long report opens no more than one item's figures
            for fig in results[-1].figures.values():
                plt.close(fig)
    total = time.perf_counter() - start
    meta = {
        "profile": profile, "experiments": ", ".join(ids), "seed": seed, "n_jobs": n_jobs,
        "backend": backend if not isinstance(scheduler, str) else f"{backend} ({scheduler})", "device": device, "total wall time (s)": round(total, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    paths = write_report(results, out_dir, meta=meta)
    paths["results"] = results
    paths["wall_time"] = total
    return paths
