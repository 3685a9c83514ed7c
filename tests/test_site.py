"""The website's pieces, without building it (tools/build_site.py, tools/check_site.py,
tools/page_links.py, tools/site_sliders.py): the pages' URL, each notebook header's link to its
page, the reading and run times of the table of parts, the static widget figures and the sliders
that replace them, the local badges, and the link checker itself on a small site with known
faults. ``make site-check`` builds the real site and checks it; tests/test_site_frames.py checks
the frames; tests/test_site_browser.py moves the sliders in Chromium."""

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
import site_frames  # noqa: E402
import site_sliders  # noqa: E402

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


def _one_slider_set(widget: str) -> site_frames.SliderSet:
    """Two frames over one control and four over two, with PNGs that differ."""
    png = lambda n: b"\x89PNG" + bytes([n])  # noqa: E731
    one = site_frames.Slider("a", "A", [("k", ["0", "1"])], (1,),
                             {(0,): site_frames.Frame("0", png(0)), (1,): site_frames.Frame("1", png(1))})
    two = site_frames.Slider("b", "B", [("z1", ["-1", "+1"]), ("z2", ["-1", "+1"])], (0, 1),
                             {(i, j): site_frames.Frame(f"({i}, {j})", png(2 + 2 * i + j))
                              for i in (0, 1) for j in (0, 1)})
    return site_frames.SliderSet(widget, "A title", [one, two], "drawn by a test")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_each_widget_with_frames_becomes_its_slider_and_the_rest_stay_still(path):
    notebook = build_site.load(path)
    called = [build_site._widget_call(cell) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    called = [name for name in called if name]
    assert called, f"{path.name}: no cell calls a widget of nfutils.widgets"
    sliders = {name: f'<div class="nf-slider" data-widget="{name}"></div>' for name in called}
    static = build_site.static_notebook(notebook, sliders)
    html_outputs = [o["data"]["text/html"] for cell in static["cells"] for o in cell.get("outputs", [])
                    if "text/html" in o.get("data", {}) and "nf-slider" in o["data"]["text/html"]]
    assert sorted(html_outputs) == sorted(set(sliders[name] for name in called)), path.name
    # a cell that calls no widget keeps its outputs
    still = build_site.static_notebook(notebook, {})
    for cell, kept in zip(static["cells"], still["cells"]):
        if build_site._widget_call(cell) is None:
            assert cell.get("outputs") == kept.get("outputs")


def test_widget_cells_are_found_by_the_function_they_call():
    cell = lambda source: {"cell_type": "code", "source": source, "outputs": []}  # noqa: E731
    assert build_site._widget_call(cell("widgets.layer_slider(layers, colours)")) == "layer_slider"
    assert build_site._widget_call(cell("s = widgets.theta_slider(amortizer, ring_energy, seed=0)")) == "theta_slider"
    assert build_site._widget_call(cell("widgets.theta_slider(model, energy, radius=2.25)")) == "theta_radius_slider"
    assert build_site._widget_call(cell("plotting.plot_layer_samples(ax, z, c)")) is None


def test_badges_become_the_sites_own_images_and_the_link_stays():
    header = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.x/nb.ipynb)"
    local = build_site.local_badges(header)
    assert local == "[![Open In Colab](../assets/badges/colab-badge.svg)](https://colab.x/nb.ipynb)"
    for url, target in build_site.LOCAL_BADGES.items():
        assert (ROOT / "docs" / target).read_bytes().lstrip().startswith(b"<svg"), target
    for path in NOTEBOOKS:
        static = build_site.static_notebook(build_site.load(path))
        assert not any(url in "".join(cell["source"]) for cell in static["cells"] for url in build_site.LOCAL_BADGES)


def test_slider_html_shows_the_start_frame_and_records_each_frames_identity():
    slider_set = _one_slider_set("layer_slider")
    page = site_sliders.slider_set_html(slider_set)
    assert page.count('class="nf-frame"') == 6
    assert page.count("<select") == 1 and page.count('type="range"') == 3  # one slider, then two
    visible = [frame for frame in page.split("<img")[1:] if " hidden>" not in frame.split(">")[0] + ">"]
    assert len(visible) == 2 and 'data-index="1"' in visible[0] and 'data-index="0,1"' in visible[1]
    manifest = site_sliders.manifest(slider_set)
    assert manifest["a"]["start"] == "1" and manifest["b"]["start"] == "0,1"
    for key, slider in zip("ab", slider_set.sliders):
        for position, frame in slider.frames.items():
            recorded = manifest[key]["frames"][site_sliders.frame_index(position)]
            assert recorded == {"value": frame.value, "sha256": frame.sha256}
            assert f'data-sha256="{frame.sha256}"' in page
    assert len({f.sha256 for s in slider_set.sliders for f in s.frames.values()}) == 6


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
          '<a href="https://example.org/site/teachers.html">z</a>'
          '<script src="https://cdn.example.com/mathjax.js"></script> <img src="https://badges.example.com/b.svg">'
          '<link rel="stylesheet" href="https://fonts.example.com/x.css">')
    problems, _ = check_site.check(tmp_path, "https://example.org/site/")
    text = "\n".join(problems)
    for fault in ("missing.html", "#nowhere", "gone.png", "not a PNG", "empty src", "teachers.html",
                  "cdn.example.com", "badges.example.com", "fonts.example.com"):
        assert fault in text, f"{fault!r} not reported:\n{text}"
    assert len(problems) == 9, text
    problems, _ = check_site.check(tmp_path, "https://example.org/site/", page_limit=100)
    too_large = sorted(str(page.relative_to(tmp_path)) for page in tmp_path.rglob("*.html")
                       if page.stat().st_size > 100)
    assert too_large and sorted(p.split(":")[0] for p in problems if "over the" in p) == too_large, problems


def test_home_and_teachers_pages_have_the_table_of_parts():
    for page in ("index.md", "teachers.md"):
        assert build_site.TABLE_MARKER in (ROOT / "docs" / page).read_text(), page
