"""Keep the Colab lines at the start of every notebook's setup cell identical.

The lines themselves, and what they do on Colab, are ``nfutils.colab.CELL`` and
``nfutils.colab.setup``; outside Colab they do nothing.

Usage (from the repository root)::

    python tools/colab_bootstrap.py            # write the Colab lines into every notebook's setup cell
    python tools/colab_bootstrap.py --check    # exit 1 and list the notebooks that differ

Only the leading lines of the first code cell change (the Colab lines are the cell's first
block, up to its first blank line; a cell without one gets them prepended); outputs are kept.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_GLOB = "notebooks/[0-9]*.ipynb"
sys.path.insert(0, str(ROOT))  # this checkout's nfutils
from nfutils import colab  # noqa: E402


def repository_url(root: Path = ROOT) -> str:
    """``[project.urls] Repository`` of ``pyproject.toml``, without a trailing slash."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    return pyproject["project"]["urls"]["Repository"].rstrip("/")


def bootstrap_source() -> str:
    """The Colab lines of every setup cell (no trailing newline): ``nfutils.colab.CELL``."""
    return colab.CELL


def colab_badge_url(notebook_name: str, repository: str | None = None) -> str:
    """The "Open in Colab" link of ``notebooks/<notebook_name>`` on the main branch."""
    owner_and_name = (repository or repository_url()).removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{owner_and_name}/blob/main/notebooks/{notebook_name}"


def notebook_paths(root: Path = ROOT) -> list[Path]:
    """The numbered notebooks of the series, in order."""
    return sorted(root.glob(NOTEBOOKS_GLOB))


def with_bootstrap(cell_source: str, bootstrap: str) -> str:
    """``cell_source`` with its leading bootstrap block replaced by (or prefixed with) ``bootstrap``.

    The leading block counts as a bootstrap when it starts with ``import os, subprocess, sys``;
    it ends at the first blank line.
    """
    if cell_source.startswith("import os, subprocess, sys"):
        _, blank, rest = cell_source.partition("\n\n")
        return bootstrap + (blank + rest if blank else "")
    return bootstrap + "\n\n" + cell_source


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report notebooks that differ")
    args = parser.parse_args(argv)
    import nbformat  # only the script needs it; the tests read notebooks as JSON

    bootstrap = bootstrap_source()
    differing = []
    for path in notebook_paths():
        notebook = nbformat.read(path, as_version=4)
        setup_cell = next(cell for cell in notebook.cells if cell.cell_type == "code")
        new_source = with_bootstrap(setup_cell.source, bootstrap)
        if new_source == setup_cell.source:
            continue
        differing.append(path.relative_to(ROOT))
        if not args.check:
            setup_cell.source = new_source
            nbformat.write(notebook, path)
    verb = "differ" if args.check else "updated"
    print(f"{len(differing)} notebook(s) {verb}: " + ", ".join(map(str, differing)) if differing
          else "every notebook's setup cell starts with the current bootstrap")
    return 1 if (args.check and differing) else 0


if __name__ == "__main__":
    sys.exit(main())
