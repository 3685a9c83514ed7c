"""The website as a reader opens it: Part 1's page in Debian's Chromium (headless, no network).

The built site (``build/site/``, from ``make site``; built here if missing) is served on
127.0.0.1 by a ``http.server`` thread. Playwright drives ``/usr/bin/chromium`` with a fresh
profile (the approach of tests/test_browser.py). The test opens Part 1's page and checks what a
reader sees: the title and the paper's words rendered as text, the Colab badge, a figure (an
``<img>`` the browser decoded: ``naturalWidth > 0``), the TeX of the equations kept in the page,
and the navigation to the other parts. MathJax comes from a CDN when a page opens with a network;
here there is none, so the test checks the TeX, not its rendering. A screenshot goes to
``.artifacts/screenshots/site_part1.png``.

Skips only when Chromium or playwright is missing outside CI; with ``CI=true`` that is a failure.
Run alone: ``pytest tests/test_site_browser.py -m browser -s``.
"""

from __future__ import annotations

import json

import functools
import http.server
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_site  # noqa: E402
from test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, _require  # noqa: E402

pytestmark = [pytest.mark.browser]
PART1 = "notebooks/01_planar_flows_2d.html"


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
def page(tmp_path_factory):
    _require(CHROMIUM.exists(), f"{CHROMIUM} not found (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _require(False, "the playwright package is not installed (pip install -e '.[dev]')")
    profile = tmp_path_factory.mktemp("chromium-profile-site")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(profile), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1000})
        try:
            yield context.new_page()
        finally:
            context.close()


def test_part1_page_shows_text_figure_and_equations(site_url, page, capsys):
    failed_local: list[str] = []
    page.on("requestfailed", lambda request: request.url.startswith(site_url)
            and failed_local.append(f"{request.url} ({request.failure})"))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOTS / "site_part1.png"
    try:
        response = page.goto(site_url + PART1, wait_until="load", timeout=120_000)
        assert response is not None and response.ok, f"{PART1}: HTTP {response and response.status}"
        content = page.locator("article")
        content.first.wait_for(timeout=60_000)
        text = content.first.inner_text()
        notebook_title = json.loads((ROOT / "notebooks" / "01_planar_flows_2d.ipynb").read_text())[
            "cells"][0]["source"][0].lstrip("# ").strip()  # the notebook's own first heading
        for words in (notebook_title, "Prerequisites", "Exercises", "References"):
            assert words in text, f"{PART1}: the rendered page lacks the text {words!r}"
        assert page.locator('img[alt="Open In Colab"]').count() == 1, f"{PART1}: no Colab badge"

        # a figure of the notebook (an output image), decoded by the browser
        figures = page.locator(".jp-OutputArea-output img, .output_png img")
        count = figures.count()
        assert count >= 5, f"{PART1}: only {count} figures in the page"
        figure = figures.nth(0)
        figure.scroll_into_view_if_needed()
        figure.evaluate("img => img.decode()")
        width = figure.evaluate("img => img.naturalWidth")
        assert width > 0, f"{PART1}: the first figure was not decoded (naturalWidth = {width})"
        decoded = page.evaluate("""() => Array.from(document.querySelectorAll('article img'))
            .filter(img => img.src.startsWith('data:') && img.complete && img.naturalWidth > 0).length""")
        assert decoded == count, f"{PART1}: {decoded} of {count} figures decoded"

        # the equations are in the page as TeX (MathJax renders them when there is a network)
        html = page.content()
        assert r"\begin{align}" in html and r"\log" in html, f"{PART1}: the TeX of the equations is missing"
        assert page.locator('script[src*="mathjax"]').count() >= 1, f"{PART1}: MathJax is not loaded"

        # the other parts and the teachers' page are one click away
        nav = page.locator("nav.md-nav--primary").first.inner_text()
        for part in ("Part 2", "Part 3", "Part 4", "For teachers"):
            assert part in nav, f"{PART1}: the side navigation lacks {part!r}"
        assert not failed_local, f"{PART1}: requests to the site failed: {failed_local[:5]}"

        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(screenshot))
        figure.screenshot(path=str(SCREENSHOTS / "site_part1_figure.png"))
        with capsys.disabled():
            print(f"\n[site] {PART1}: {count} figures decoded (first {width} px wide), TeX kept, "
                  f"navigation to Parts 2-4 and the teachers' page")
            print(f"[site] screenshot: {screenshot.relative_to(ROOT)}")
    except Exception:
        page.screenshot(path=str(SCREENSHOTS / "site_part1_failure.png"), full_page=True)
        raise
