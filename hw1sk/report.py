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
import time
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["build_report", "write_report", "contents_frame"]


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


def write_report(results, out_dir, title="hw1sk: Deep Learning HW1 report", meta=None):
    """Write every figure (PNG, SVG), table (CSV), ``report.html`` and ``report.md``.

    Parameters
    ----------
    results : list of hw1sk.experiments.ExperimentResult
    out_dir : str or Path
    title : str
    meta : dict, optional
        Run-wide settings shown at the top (profile, seed, n_jobs, ...).

    Returns
    -------
    paths : dict
        ``{"html": Path, "markdown": Path, "figures": [...], "tables": [...]}``.
    """
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    meta = dict(meta or {})
    figure_paths, table_paths = [], []
    html_parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}"
        "td,th{border:1px solid #bbb;padding:2px 6px}img{max-width:100%}"
        ".diverged{color:#b00;font-weight:bold}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    md_parts = [f"# {title}", ""]
    if meta:
        meta_frame = _settings_frame(meta)
        html_parts.append(meta_frame.to_html(index=False))
        md_parts += [_markdown_table(meta_frame), ""]
    if results:
        contents = contents_frame(results)
        html_parts += ["<h2>Contents</h2>", contents.to_html(index=False)]
        md_parts += ["## Contents", "", _markdown_table(contents, max_rows=len(contents)), ""]

    for res in results:
        anchor = res.id
        html_parts.append(f"<h2 id='{anchor}'>{html.escape(res.id)}: {html.escape(res.title)}</h2>")
        md_parts += [f"## {res.id}: {res.title}", ""]
        timing = f"Wall time: {res.wall_time:.1f} s."
        html_parts.append(f"<p>{html.escape(timing)}</p>")
        md_parts += [timing, ""]
        for note in res.notes:
            css = " class='diverged'" if res.error else ""
            html_parts.append(f"<p{css}>{html.escape(note)}</p>")
            md_parts += [f"**{note}**" if res.error else note, ""]
        if res.diverged is not None and len(res.diverged):
            msg = f"{len(res.diverged)} run(s) diverged (non-finite loss) and are left out of the figures:"
            html_parts.append(f"<p class='diverged'>{html.escape(msg)}</p>")
            html_parts.append(res.diverged.to_html(index=False))
            md_parts += [f"**{msg}**", "", _markdown_table(res.diverged), ""]
        settings = _settings_frame(res.settings)
        html_parts += ["<h3>Settings</h3>", settings.to_html(index=False)]
        md_parts += ["### Settings", "", _markdown_table(settings), ""]
        for name, fig in res.figures.items():
            stem = f"{res.id}_{name}"
            png = _png_bytes(fig)
            (out / "figures" / f"{stem}.png").write_bytes(png)
            fig.savefig(out / "figures" / f"{stem}.svg", format="svg", bbox_inches="tight")
            plt.close(fig)
            figure_paths += [out / "figures" / f"{stem}.png", out / "figures" / f"{stem}.svg"]
            data = base64.b64encode(png).decode("ascii")
            html_parts.append(f"<figure><img alt='{html.escape(stem)}' src='data:image/png;base64,{data}'>"
                              f"<figcaption>{html.escape(name)}</figcaption></figure>")
            md_parts += [f"![{stem}](figures/{stem}.png)", ""]
        for name, table in res.tables.items():
            stem = f"{res.id}_{name}"
            path = out / "tables" / f"{stem}.csv"
            table.to_csv(path, index=False)
            table_paths.append(path)
        if res.numbers is not None and len(res.numbers):
            html_parts += ["<h3>Measured</h3>", res.numbers.to_html(index=False, float_format=_fmt)]
            md_parts += ["### Measured", "", _markdown_table(res.numbers), ""]
        tables_note = ", ".join(f"tables/{res.id}_{n}.csv" for n in res.tables)
        if tables_note:
            html_parts.append(f"<p>Full tables: {html.escape(tables_note)}</p>")
            md_parts += [f"Full tables: {tables_note}", ""]
    html_parts.append("</body></html>")
    html_path, md_path = out / "report.html", out / "report.md"
    _atomic_write_text(html_path, "\n".join(html_parts))
    _atomic_write_text(md_path, "\n".join(md_parts))
    return {"html": html_path, "markdown": md_path, "figures": figure_paths, "tables": table_paths}


def build_report(out_dir, profile="quick", only=None, *, data_home=None, n_jobs=1,
                 device="cpu", seed=0, backend="loky", scheduler=None, cache_dir=None,
                 progress=True, overrides=None):
    """Run the selected experiments of a profile and write the report.

    Parameters
    ----------
    out_dir : str or Path
        Output folder (created).
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
    """
    from tqdm.auto import tqdm

    from .experiments import run_experiment, select_experiments

    ids = select_experiments(only)
    start = time.perf_counter()
    results = []
    bar = tqdm(ids, desc=f"hw1sk report ({profile})", unit="item", disable=not progress)
    with contextlib.ExitStack() as stack:
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
