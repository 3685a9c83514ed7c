"""Check the built website as a reader's browser would load it: ``python tools/check_site.py``.

Every ``href`` and ``src`` of every HTML page under ``build/site/`` that points inside the site
(a relative link, or an absolute one under the site's URL) must name an existing file, and every
in-page anchor (``page.html#section``) an existing ``id``; every image must be a non-empty file or
a ``data:`` URI that decodes to an image. Links to other sites are counted, not fetched (no
network); but nothing a page loads when it opens (an image, a script, a style sheet, a frame)
may come from another host: the site must read the same offline. No page may exceed
``PAGE_LIMIT_BYTES`` (its HTML, frames of its sliders included). Exits 1 and lists what is broken.
"""

from __future__ import annotations

import base64
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from build_site import SITE, pages_url  # noqa: E402

PAGE_LIMIT_BYTES = 8_000_000  # 8 MB a page: the sliders' frames are embedded in it
# what a browser loads when a page opens: (tag, attribute), and the <link> kinds that load
LOADED = {("img", "src"), ("script", "src"), ("iframe", "src"), ("source", "src"), ("video", "src"),
          ("audio", "src"), ("embed", "src"), ("link", "href")}
LOADING_LINKS = {"stylesheet", "icon", "preload", "modulepreload", "manifest", "prefetch"}
IMAGE_MAGIC = (b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"<svg", b"<?xml", b"RIFF")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []   # (tag, url)
        self.loads: list[tuple[str, str]] = []   # (tag, url) the browser fetches when the page opens
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name"):
            if attrs.get(name) and (name == "id" or tag == "a"):
                self.ids.add(attrs[name])
        for name in ("href", "src"):
            if attrs.get(name) is not None and not (tag == "link" and attrs.get("rel") in ("canonical",)):
                self.links.append((tag, attrs[name]))
            if (tag, name) in LOADED and attrs.get(name) and (
                    tag != "link" or LOADING_LINKS & set((attrs.get("rel") or "").split())):
                self.loads.append((tag, attrs[name]))


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    return parser


def check(site: Path = SITE, base_url: str | None = None,
          page_limit: int = PAGE_LIMIT_BYTES) -> tuple[list[str], dict[str, int]]:
    """(problems, counts) for the site in ``site``; pages over ``page_limit`` bytes are problems."""
    base_url = base_url or pages_url()
    pages = sorted(site.rglob("*.html"))
    parsed = {page: _parse(page) for page in pages}
    problems: list[str] = []
    counts = {"pages": len(pages), "internal links": 0, "anchors": 0, "images": 0, "external links": 0}
    for page, links in parsed.items():
        where = page.relative_to(site)
        if page.stat().st_size > page_limit:
            problems.append(f"{where}: {page.stat().st_size / 1e6:.1f} MB, over the "
                            f"{page_limit / 1e6:g} MB a page may have")
        for tag, url in links.loads:
            if urlsplit(url).netloc and not url.startswith(base_url):
                problems.append(f"{where}: <{tag}> loads {url} from another host (the page must read offline)")
        for tag, url in links.links:
            if url == "" and tag in ("img", "script"):
                problems.append(f"{where}: <{tag}> with an empty src")
                continue
            if url.startswith("data:"):
                if tag == "img":
                    counts["images"] += 1
                    header, _, payload = url.partition(",")
                    try:
                        data = base64.b64decode(payload) if header.endswith(";base64") else unquote(payload).encode()
                    except ValueError:
                        data = b""
                    if not data.lstrip().startswith(IMAGE_MAGIC):
                        problems.append(f"{where}: inline image that is not a PNG/GIF/JPEG/SVG ({header[:40]})")
                continue
            if url.startswith(base_url):
                url = urlsplit(base_url).path + url[len(base_url):]
            parts = urlsplit(url)
            if parts.scheme or parts.netloc:
                counts["external links"] += 1
                continue
            if parts.scheme == "" and url.startswith(("mailto:", "javascript:")):
                continue
            path, fragment = urldefrag(url)
            if path.startswith("/"):  # root-absolute: under the site's path on its host (404.html)
                site_path = urlsplit(base_url).path
                if not path.startswith(site_path):
                    problems.append(f"{where}: {url} is outside the site's path {site_path}")
                    continue
                target = site / unquote(path[len(site_path):])
            elif path:
                target = page.parent / unquote(path)
            else:
                target = page
            target = target.resolve()
            if target.is_dir():
                target = target / "index.html"
            if tag == "img":
                counts["images"] += 1
            else:
                counts["internal links"] += 1
            if site.resolve() not in target.parents and target != site.resolve():
                problems.append(f"{where}: {url} points outside the site")
            elif not target.is_file():
                problems.append(f"{where}: {'image' if tag == 'img' else 'link'} {url} -> missing {target.relative_to(site.resolve()) if site.resolve() in target.parents else target}")
            elif tag == "img" and target.stat().st_size == 0:
                problems.append(f"{where}: image {url} is empty")
            elif fragment and target.suffix == ".html":
                counts["anchors"] += 1
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(fragment) not in ids:
                    problems.append(f"{where}: anchor #{fragment} not found in {target.relative_to(site.resolve())}")
    return problems, counts


if __name__ == "__main__":
    if not SITE.is_dir():
        sys.exit(f"{SITE.relative_to(ROOT)}/ does not exist: run `make site` first")
    problems, counts = check()
    print("link check of " + f"{SITE.relative_to(ROOT)}/: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    for problem in problems:
        print("BROKEN:", problem)
    print(f"{len(problems)} broken" if problems else "no broken internal links or missing images")
    sys.exit(1 if problems else 0)
