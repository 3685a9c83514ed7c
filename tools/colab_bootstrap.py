"""The Colab bootstrap: the first lines of every notebook's setup cell, kept in one place.

On Colab (``google.colab`` in ``sys.modules``) a notebook opened from GitHub runs alone in
``/content``, with no ``nfutils`` and none of the repository's data. The bootstrap then

1. clones the project's repository (``git clone --depth 1``) into ``./vi-normalizing-flows``:
   ``nfutils``, MNIST (``data/mnist``) and the checkpoints (``data/checkpoints``) all come with it;
2. installs ``nfutils`` from that clone with ``pip install -e`` (editable, so
   ``nfutils.data`` finds ``data/mnist`` beside the package exactly as in a local checkout; pip
   keeps Colab's own torch because it satisfies ``torch>=2.1``), and puts the clone on
   ``sys.path`` for the running kernel;
3. changes into the clone's ``notebooks/`` folder, so that everything after it (the repository
   root found by walking up to ``pyproject.toml``, figures saved under ``imgs/``) behaves as
   in a local checkout.

Outside Colab it does nothing. Running the cell again (or after "Restart session") is safe:
once inside the clone it is skipped; with the clone present it is not cloned again, and an
importable ``nfutils`` is not reinstalled.

``NFUTILS_SOURCE`` overrides what is cloned (a git URL, optionally prefixed ``git+``, or a
path to a git repository); ``NFUTILS_SIMULATE_COLAB=1`` takes the Colab branch anywhere (for
``tests/test_colab_bootstrap.py``). The default URL is ``[project.urls] Repository`` of
``pyproject.toml``, the one place that names the repository.

Usage (from the repository root)::

    python tools/colab_bootstrap.py            # write the bootstrap into every notebook's setup cell
    python tools/colab_bootstrap.py --check    # exit 1 and list the notebooks that differ

Only the leading lines of the first code cell change (the bootstrap is the cell's first block,
up to its first blank line; a cell without one gets it prepended); outputs are kept, so
re-executing the notebook afterwards is its owner's job.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_GLOB = "notebooks/[0-9]*.ipynb"

BOOTSTRAP_TEMPLATE = '''\
import os, subprocess, sys
# On Colab: clone the project's repository (nfutils, MNIST, checkpoints), install nfutils from
# the clone (Colab's torch is kept, never reinstalled) and work in the clone's notebooks/ folder,
# as in a local checkout. NFUTILS_SOURCE overrides what is cloned (a git URL or a path).
NFUTILS_SOURCE = os.environ.get("NFUTILS_SOURCE", "{repository}")
IN_COLAB = "google.colab" in sys.modules or os.environ.get("NFUTILS_SIMULATE_COLAB") == "1"
if IN_COLAB and not os.path.exists("../pyproject.toml"):  # not yet inside the clone
    clone = os.path.abspath("vi-normalizing-flows")
    if not os.path.isdir(clone):
        subprocess.run(["git", "clone", "--quiet", "--depth", "1",
                        NFUTILS_SOURCE.removeprefix("git+"), clone], check=True)
    try:
        import nfutils  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", clone], check=True)
        sys.path.insert(0, clone)
    os.chdir(os.path.join(clone, "notebooks"))
    print("Colab: nfutils from", NFUTILS_SOURCE, "| working in", os.getcwd())'''


def repository_url(root: Path = ROOT) -> str:
    """``[project.urls] Repository`` of ``pyproject.toml``, without a trailing slash."""
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    return pyproject["project"]["urls"]["Repository"].rstrip("/")


def bootstrap_source(repository: str | None = None) -> str:
    """The bootstrap lines (no trailing newline) with ``repository`` as NFUTILS_SOURCE's default."""
    return BOOTSTRAP_TEMPLATE.format(repository=repository or repository_url())


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
