"""The report page as a person sees it: its structure, and headless Chromium screenshots of it.

The screenshot tests need a ``chromium`` binary (``.ci/run`` installs the Debian package);
without one they are skipped, saying so.
"""

import base64
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from hw1sk.experiments import ExperimentResult
from hw1sk.findings import Finding
from hw1sk.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium): "
                             "the report page screenshots are not taken")


def _lines_figure(n_lines=3, title="loss"):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.linspace(0, 10, 50)
    for k in range(n_lines):
        ax.plot(x, np.exp(-x / (k + 1)), label=f"run {k}")
    ax.set_title(title)
    ax.legend()
    return fig


def _page_results():
    wide = pd.DataFrame({f"column {k}": np.arange(3) * k for k in range(25)})
    ok = ExperimentResult(
        id="1-1-simulate", title="Simulate a function",
        figures={"training loss": _lines_figure(), "prediction": _lines_figure(2, "fit")},
        tables={"results": wide}, settings={"model": "MLP 1-5-1 <shallow>", "lr": 0.01},
        numbers=wide, wall_time=3.0,
        findings=[Finding("1-1-simulate", "The deeper model fits better.", "Deeper fits.",
                          "HW1-1", "reproduced", "loss 0.01 < 0.05", "ratio 0.2 < 0.9")])
    other = ExperimentResult(
        id="1-2-visualize", title="Visualize the optimization",
        figures={"PCA of the weights": _lines_figure(4, "PCA")},
        settings={"epochs": 30}, wall_time=2.0,
        findings=[Finding("1-2-visualize", "Runs end apart.", "Apart.", "HW1-2",
                          "inconclusive", "n = 3", "only 3 runs: at least 5")])
    skipped = ExperimentResult(id="1-3-cifar", title="No data", skipped=True,
                               notes=["CIFAR-10 is not here; this item was skipped."])
    return [ok, other, skipped]


class _Page(HTMLParser):
    """Start tags in document order, with the text of each ``<summary>``."""

    def __init__(self):
        super().__init__()
        self.tags, self.summaries, self._in_summary = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_summary = tag == "summary"

    def handle_endtag(self, tag):
        if tag == "summary":
            self._in_summary = False

    def handle_data(self, data):
        if self._in_summary:
            self.summaries.append(data.strip())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(_page_results(), out, meta={"profile": "quick", "seed": 0})
    page = _Page()
    page.feed(paths["html"].read_text(encoding="utf-8"))
    return paths, page


def _not_blank(pixels, threshold=5.0):
    pixels = np.asarray(pixels, dtype=float)
    if pixels.max() <= 1.0:
        pixels = pixels * 255
    return pixels[..., :3].std() > threshold


def test_the_page_is_self_contained(report):
    paths, page = report
    text = paths["html"].read_text(encoding="utf-8")
    assert "<script" not in text
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", text)  # nothing fetched
    assert "<link" not in text and "@import" not in text and "url(" not in text
    assert "name='viewport'" in text and "@media print" in text
    assert "&lt;shallow&gt;" in text and "<shallow>" not in text  # settings escaped


def test_the_page_has_a_sidebar_the_summary_first_and_folded_settings(report):
    paths, page = report
    items = [res for res in _page_results()]
    plt.close("all")
    tags = [tag for tag, _ in page.tags]
    # a contents sidebar: one link per item, each to that item's heading
    nav = tags.index("nav")
    assert page.tags[nav][1].get("class") == "toc"
    item_links = [attrs["href"] for tag, attrs in page.tags
                  if tag == "a" and attrs.get("class") == "toc-item"]
    assert item_links == [f"#{res.id}" for res in items]
    ids = [attrs["id"] for tag, attrs in page.tags if tag == "h2" and "id" in attrs]
    assert ids == [res.id for res in items]
    # the findings summary table comes before the first item's section
    position = {(tag, attrs.get("id") or attrs.get("class")): i
                for i, (tag, attrs) in enumerate(page.tags)}
    assert (position[("nav", "toc")] < position[("section", "findings")]
            < position[("table", "findings-summary")] < position[("h2", items[0].id)])
    # per item: figures, findings, then settings and tables folded away
    assert page.summaries.count("Settings") == sum(bool(res.settings) for res in items) == 2
    assert "Measured" in page.summaries and "Full tables" in page.summaries
    text = paths["html"].read_text(encoding="utf-8")
    first = text[text.index(f"id='{items[0].id}'"):text.index(f"id='{items[1].id}'")]
    assert (first.index("<figure>") < first.index("<h3>Findings</h3>")
            < first.index("<details><summary>Settings</summary>"))
    # every table sits in a block that scrolls sideways
    assert text.count("<table") == text.count("<div class='table-wrap'><table")


def test_every_image_is_an_embedded_png_that_is_not_blank(report):
    from PIL import Image

    paths, page = report
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == 3
    for attrs in images:
        assert attrs.get("alt")
        src = attrs["src"]
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert _not_blank(Image.open(io.BytesIO(data)).convert("RGB"))


def test_the_markdown_keeps_the_order_of_the_page(report):
    paths, _ = report
    md = paths["markdown"].read_text(encoding="utf-8")
    assert md.index("## Findings") < md.index("## 1-1-simulate")
    item = md[md.index("## 1-1-simulate"):md.index("## 1-2-visualize")]
    assert (item.index("](figures/1-1-simulate_training_loss.png)")
            < item.index("](figures/1-1-simulate_prediction.png)") < item.index("### Findings")
            < item.index("### Settings") < item.index("### Measured"))


def _chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


@needs_chromium
@pytest.mark.parametrize("width,height", [(1280, 900), (390, 844)], ids=["laptop", "phone"])
def test_chromium_shows_the_page(report, tmp_path, width, height):
    from PIL import Image

    paths, _ = report
    shot = tmp_path / f"page-{width}.png"
    _chromium(tmp_path, f"--screenshot={shot}", f"--window-size={width},{height}",
              paths["html"].resolve().as_uri())
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (height, width)
    assert _not_blank(pixels)
    sidebar = pixels[height - 20, 5]  # bottom-left corner: the fixed sidebar, or the page
    if width >= 1000:
        assert tuple(sidebar) == (246, 248, 250)
    else:  # on a phone the contents are a block on top: the bottom-left is not the sidebar
        assert tuple(sidebar) != (246, 248, 250) or tuple(pixels[5, 5]) == (246, 248, 250)


@needs_chromium
def test_chromium_prints_the_page_to_pdf(report, tmp_path):
    paths, _ = report
    pdf = tmp_path / "page.pdf"
    _chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer",
              paths["html"].resolve().as_uri())
    data = pdf.read_bytes()
    assert data[:5] == b"%PDF-" and len(data) > 10_000
    assert len(re.findall(rb"/Type\s*/Page[^s]", data)) >= 2
