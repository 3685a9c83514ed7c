"""The website as a reader opens it, in Debian's Chromium (headless), with no other host reachable.

The built site (``build/site/``, from ``make site``; built here if missing) is served on
127.0.0.1 by a ``http.server`` thread. Playwright drives ``/usr/bin/chromium`` with a fresh
profile (the approach of tests/test_browser.py), and every request to a host other than
127.0.0.1 is aborted and recorded: a page must need none. For each part's page the tests check
what a reader sees:

* the math is rendered by the site's own MathJax (its ``mjx-container`` elements are in the
  page, and no paragraph shows raw TeX such as ``$w^\\top \\hat u$``), no image is broken, and no
  request went to another host; a screenshot per page goes to ``.artifacts/screenshots/``;
* every slider moves: set to two positions, the figure changes, and the frame shown is the one
  drawn for that parameter (its ``data-value`` and the SHA-256 of the PNG it shows equal what
  ``build/site/assets/sliders.json`` recorded when the frames were drawn).

Skips only when Chromium or playwright is missing outside CI; with ``CI=true`` that is a failure.
Run alone: ``pytest tests/test_site_browser.py -m browser -s``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.server
import json
import re
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402
from test_browser import SCREENSHOTS, chromium_context  # noqa: E402

pytestmark = [pytest.mark.browser]
PAGES = [f"notebooks/{path.stem}.html" for path in build_site.NOTEBOOKS]
RAW_TEX = re.compile(r"\$[^$\s][^$]*\$|\\begin\{align|\\frac|\\mathcal")
VISIBLE_TEXT = """() => Array.from(document.querySelectorAll('article p, article li'))
    .filter(node => node.offsetParent !== null).map(node => node.innerText).join('\\n')"""
BROKEN_IMAGES = """() => Array.from(document.querySelectorAll('img'))
    .filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.src.slice(0, 80))"""


@pytest.fixture(scope="module")
def site_url():
    """Base URL of the built site, served from 127.0.0.1 on a free port; stopped afterwards."""
    if not (build_site.SITE / "index.html").exists():
        build_site.build()
    handler = functools.partial(_QuietHandler, directory=str(build_site.SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """(context, requests to other hosts it refused): a Chromium that reaches only 127.0.0.1."""
    refused: list[str] = []

    def local_only(route):
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with chromium_context(tmp_path_factory.mktemp("chromium-profile-site"), 1280, local_only) as context:
        yield context, refused


def _open(browser, site_url: str, page_path: str):
    """A new tab on ``page_path`` with its math typeset; (page, failed requests to the site)."""
    context, _ = browser
    page = context.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda request: request.url.startswith(site_url)
            and failed.append(f"{request.url} ({request.failure})"))
    response = page.goto(site_url + page_path, wait_until="load", timeout=120_000)
    assert response is not None and response.ok, f"{page_path}: HTTP {response and response.status}"
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")
    return page, failed


def _screenshot(target, filename: str, **options) -> None:
    """Save a screenshot of a page or an element as ``SCREENSHOTS / filename``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=str(SCREENSHOTS / filename), **options)


@contextlib.contextmanager
def _opened(browser, site_url: str, page_path: str, failure_png: str):
    """``_open``'s tab, closed at the end; when the checks fail, a full-page screenshot
    ``failure_png`` is saved first."""
    page, failed = _open(browser, site_url, page_path)
    try:
        yield page, failed
    except Exception:
        _screenshot(page, failure_png, full_page=True)
        raise
    finally:
        page.close()


def _manifest() -> dict:
    return json.loads((build_site.SITE / "assets" / "sliders.json").read_text())


@pytest.mark.parametrize("page_path", PAGES)
def test_page_reads_offline_math_rendered_no_broken_image(site_url, browser, page_path, capsys):
    _, refused = browser
    refused.clear()
    name = Path(page_path).stem
    with _opened(browser, site_url, page_path, f"site_{name}_failure.png") as (page, failed):
        notebook = build_site.load(build_site.ROOT / "notebooks" / f"{name}.ipynb")
        text = page.locator("article").first.inner_text()
        for words in (build_site.title(notebook), "Exercises", "References"):
            assert words in text, f"{page_path}: the rendered page lacks the text {words!r}"
        rendered = page.locator("article mjx-container").count()
        assert rendered >= 10, f"{page_path}: only {rendered} equations rendered by MathJax"
        raw = [line for line in page.evaluate(VISIBLE_TEXT).splitlines() if RAW_TEX.search(line)]
        assert not raw, f"{page_path}: paragraphs show raw TeX: {raw[:3]}"
        assert page.locator('img[alt="Open In Colab"]').count() == 1, f"{page_path}: no Colab badge"
        broken = page.evaluate(BROKEN_IMAGES)
        assert not broken, f"{page_path}: {len(broken)} images not decoded: {broken[:3]}"
        assert not refused, f"{page_path}: requested other hosts: {sorted(set(refused))[:5]}"
        assert not failed, f"{page_path}: requests to the site failed: {failed[:5]}"
        nav = page.locator("nav.md-nav--primary").first.inner_text()
        for part in ("Part 1", "Part 2", "Part 3", "Part 4", "For teachers"):
            assert part in nav, f"{page_path}: the side navigation lacks {part!r}"
        _screenshot(page, f"site_{name}.png")
        with capsys.disabled():
            print(f"\n[site] {page_path}: {rendered} equations rendered, no raw TeX, no broken image, "
                  f"no request to another host")


def _shown(panel) -> dict:
    """The frame a panel shows: its data attributes and the SHA-256 of the PNG it displays."""
    shown = panel.locator("img.nf-frame:not([hidden])")
    assert shown.count() == 1, f"{shown.count()} frames visible at once"
    src = shown.get_attribute("src")
    return {"index": shown.get_attribute("data-index"), "value": shown.get_attribute("data-value"),
            "sha256": shown.get_attribute("data-sha256"), "visible": shown.is_visible(),
            "png_sha256": hashlib.sha256(base64.b64decode(src.partition(",")[2])).hexdigest()}


def _check_frame(panel, recorded: dict, index: str, where: str) -> str:
    shown = _shown(panel)
    frame = recorded["frames"][index]
    assert shown["index"] == index and shown["visible"], f"{where}: frame {shown['index']} shown, not {index}"
    assert shown["value"] == frame["value"], f"{where}: shows the value {shown['value']}, drawn for {frame['value']}"
    assert shown["png_sha256"] == shown["sha256"] == frame["sha256"], (
        f"{where}: the image is not the frame drawn for {index}")
    return shown["png_sha256"]


@pytest.mark.parametrize("page_path", PAGES)
def test_every_slider_moves_its_figure(site_url, browser, page_path, capsys):
    manifest = _manifest()
    name = Path(page_path).stem
    with _opened(browser, site_url, page_path, f"site_{name}_slider_failure.png") as (page, _):
        figures = page.locator(".nf-slider")
        assert figures.count() >= 1, f"{page_path}: no slider on the page"
        moved = []
        for f in range(figures.count()):
            figure = figures.nth(f)
            widget = figure.get_attribute("data-widget")
            chooser = figure.locator(".nf-choice select")
            for key, recorded in manifest[widget].items():
                if chooser.count():
                    chooser.select_option(key)
                panel = figure.locator(f'.nf-panel[data-key="{key}"]')
                assert panel.is_visible(), f"{page_path}: {widget}/{key} not shown after choosing it"
                where = f"{page_path} {widget}/{key}"
                hashes = [_check_frame(panel, recorded, recorded["start"], where + " at the start")]
                inputs = panel.locator("input[type=range]")
                for position in (1, int(inputs.first.get_attribute("max"))):  # two positions
                    for i in range(inputs.count()):
                        inputs.nth(i).fill(str(position if i == 0 else 0))
                    index = ",".join([str(position)] + ["0"] * (inputs.count() - 1))
                    hashes.append(_check_frame(panel, recorded, index, f"{where} at {index}"))
                    readout = inputs.first.locator("xpath=following-sibling::output").inner_text()
                    assert readout == json.loads(inputs.first.get_attribute("data-values"))[position], where
                assert hashes[1] != hashes[2], f"{where}: the figure did not change between two positions"
                moved.append(f"{widget}/{key}")
            figure.scroll_into_view_if_needed()
            _screenshot(figure, f"site_{name}_slider_{f + 1}.png")
        with capsys.disabled():
            print(f"\n[site] {page_path}: sliders moved to two positions each, frames as drawn: {', '.join(moved)}")


def test_the_site_has_a_slider_for_each_widget_with_committed_fits():
    manifest = _manifest()
    expected = {"planar_layer_explorer", "theta_slider", "theta_radius_slider", "latent_slider",
                "flow_length_slider"}
    if (build_site.ROOT / "data" / "checkpoints" / "part1_fits.pt").is_file():
        expected.add("layer_slider")
    assert expected <= set(manifest), f"sliders missing from the site: {sorted(expected - set(manifest))}"
    assert sum(len(sliders) for sliders in manifest.values()) >= 5
