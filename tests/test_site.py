"""The website's pieces, without building it (tools/build_site.py, tools/check_site.py,
tools/page_links.py): the pages' URL, each notebook header's link to its page, the reading and
run times of the table of parts, the static widget figures, and the link checker itself on a
small site with known faults. ``make site-check`` builds the real site and checks it."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402
import check_site  # noqa: E402
import page_links  # noqa: E402

NOTEBOOKS = build_site.NOTEBOOKS
IDS = [path.name for path in NOTEBOOKS]


def test_pages_url_is_the_github_pages_of_the_repository():
    urls = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]
    owner, name = urls["Repository"].removeprefix("https://github.com/").split("/")
    assert build_site.pages_url() == f"https://{owner}.github.io/{name}/"
    assert build_site.page_url("01_planar_flows_2d.ipynb") == (
        f"https://{owner}.github.io/{name}/notebooks/01_planar_flows_2d.html")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_header_links_its_web_page_beside_the_colab_badge(path):
    header = "".join(json.loads(path.read_text())["cells"][0]["source"])
    expected = page_links.page_link(path.name)
    badge_line = next((line for line in header.splitlines() if "colab-badge.svg" in line), "")
    assert expected in badge_line, (
        f"{path.name}: the header's Colab badge line lacks {expected}; run `python tools/page_links.py {path}`")
    assert page_links.with_page_link(header, path.name) == header  # nothing left to change


def test_with_page_link_is_idempotent_and_replaces_an_old_link():
    header = "# Part 9\n\n[![Open In Colab](https://c/badge.svg)](https://c/nb.ipynb)\n\nText.\n"
    once = page_links.with_page_link(header, "09_x.ipynb")
    assert once == header.replace("nb.ipynb)\n", f"nb.ipynb) · {page_links.page_link('09_x.ipynb')}\n")
    assert page_links.with_page_link(once, "09_x.ipynb") == once
    old = once.replace(build_site.pages_url(), "https://elsewhere.example/")
    assert page_links.with_page_link(old, "09_x.ipynb") == once
    with pytest.raises(ValueError):
        page_links.with_page_link("# no badge\n", "09_x.ipynb")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_header_states_run_times_and_reading_time_is_counted(path):
    notebook = build_site.load(path)
    times = build_site.run_times(notebook, path.name)
    assert set(times) == {"quick", "full"}
    assert 5 <= build_site.reading_minutes(notebook) <= 240
    assert build_site.title(notebook).startswith(f"Part {int(path.name[:2])} ")


def test_run_times_are_read_from_the_header_or_the_build_fails():
    header = lambda text: {"cells": [{"cell_type": "markdown", "source": text}]}  # noqa: E731
    assert build_site.run_times(header("quick mode: 13 s wall; full mode 3.0 minutes")) == {
        "quick": "13 s", "full": "3.0 min"}
    with pytest.raises(ValueError, match="full-mode"):
        build_site.run_times(header("quick mode 6 s"))
    words = {"cells": [{"cell_type": "markdown", "source": "word " * 400},
                       {"cell_type": "code", "source": "x " * 100, "outputs": []}]}
    assert build_site.reading_minutes(words) == 3  # 400 / 200 + 100 / 100


def test_parts_table_lists_the_parts_in_order():
    rows = build_site.parts_table().splitlines()[2:]
    assert len(rows) == len(NOTEBOOKS)
    for row, path in zip(rows, NOTEBOOKS):
        assert f"(notebooks/{path.stem}.ipynb)" in row and "min" in row


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_interactive_figure_becomes_its_still_image(path):
    notebook = build_site.load(path)
    static = build_site.static_notebook(notebook)
    assert "widgets" not in static["metadata"]
    sliders = 0
    for before, after in zip(notebook["cells"], static["cells"]):
        for output in before.get("outputs", []):
            plain = "".join(output.get("data", {}).get("text/plain", ""))
            if build_site.WIDGET_VIEW in output.get("data", {}) and plain.startswith("interactive("):
                sliders += 1
                assert any("image/png" in o.get("data", {}) for o in after["outputs"]), (
                    f"{path.name}: an interactive figure has no still image on the website")
        assert not any(build_site.WIDGET_VIEW in o.get("data", {}) for o in after.get("outputs", []))
    assert sliders >= 1, f"{path.name}: no interactive figure found"


def _page(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<html><body>{body}</body></html>")


def test_link_check_finds_broken_links_anchors_and_images(tmp_path):
    png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    _page(tmp_path / "index.html", '<a href="notebooks/a.html#intro">A</a> <img src="imgs/x.png">'
          f'<img src="{png}"> <a href="https://arxiv.org/abs/1505.05770">paper</a>'
          '<a href="/site/notebooks/a.html">root-absolute</a>')
    _page(tmp_path / "notebooks" / "a.html", '<h2 id="intro">Intro</h2><a href="../index.html">home</a>')
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "x.png").write_bytes(b"\x89PNG....")
    problems, counts = check_site.check(tmp_path, "https://example.org/site/")
    assert problems == [], problems
    assert counts["images"] == 2 and counts["external links"] == 1 and counts["anchors"] == 1

    _page(tmp_path / "broken.html", '<a href="notebooks/missing.html">x</a> <a href="notebooks/a.html#nowhere">y</a>'
          '<img src="imgs/gone.png"> <img src="data:image/png;base64,AAAA"> <script src=""></script>'
          '<a href="https://example.org/site/teachers.html">z</a>')
    problems, _ = check_site.check(tmp_path, "https://example.org/site/")
    text = "\n".join(problems)
    for fault in ("missing.html", "#nowhere", "gone.png", "not a PNG", "empty src", "teachers.html"):
        assert fault in text, f"{fault!r} not reported:\n{text}"
    assert len(problems) == 6, text


def test_home_and_teachers_pages_have_the_table_of_parts():
    for page in ("index.md", "teachers.md"):
        assert build_site.TABLE_MARKER in (ROOT / "docs" / page).read_text(), page
