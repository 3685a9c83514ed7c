"""Put the link to a notebook's web page beside its Colab badge, in the header cell.

    python tools/page_links.py notebooks/01_planar_flows_2d.ipynb [...]

The line ``[![Open In Colab](...)](...)`` of the header becomes
``[![Open In Colab](...)](...) · [Read it as a web page](https://.../notebooks/<name>.html)``,
the URL from pyproject.toml (``[project.urls] Documentation``) via tools/build_site.py. Only the
header's source changes (no output, no execution count); running it again changes nothing.
tests/test_site.py checks every notebook's header for this link.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_site import page_url  # noqa: E402

LINK_TEXT = "Read it as a web page"
BADGE_LINE = re.compile(r"^(\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\))(?: · \[" + re.escape(LINK_TEXT) + r"\]\([^)]*\))?[ \t]*$",
                        re.MULTILINE)


def page_link(notebook_name: str) -> str:
    return f"[{LINK_TEXT}]({page_url(notebook_name)})"


def with_page_link(header: str, notebook_name: str) -> str:
    """The header's markdown with the page link after the Colab badge (replacing an older one)."""
    new, count = BADGE_LINE.subn(lambda match: f"{match.group(1)} · {page_link(notebook_name)}", header, count=1)
    if count != 1:
        raise ValueError(f"{notebook_name}: no line with the Colab badge in the header")
    return new


def add_page_link(path: Path) -> bool:
    """Edit the notebook file in place; True if it changed."""
    raw = path.read_text(encoding="utf-8")
    notebook = json.loads(raw)
    header = notebook["cells"][0]
    source = "".join(header["source"]) if isinstance(header["source"], list) else header["source"]
    new = with_page_link(source, path.name)
    if new == source:
        return False
    header["source"] = new.splitlines(keepends=True)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return True


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        changed = add_page_link(Path(argument))
        print(f"{argument}: {'page link added' if changed else 'already up to date'}")
