"""Running a notebook of the series on Google Colab.

A notebook opened on Colab from GitHub runs alone in ``/content``: no ``nfutils``, no MNIST
files, no checkpoints. The first lines of every notebook's setup cell (``CELL``, kept identical
in all four notebooks by ``tools/colab_bootstrap.py``) therefore do, on Colab only:

1. clone the repository (``git clone --depth 1``) into ``/content/vi-normalizing-flows``:
   ``nfutils``, MNIST (``data/mnist``) and the checkpoints (``data/checkpoints``) all come with
   it; ``NFUTILS_SOURCE`` names another repository to clone (a fork: a git URL, optionally
   prefixed ``git+``, or a path);
2. put the clone on ``sys.path`` and call ``setup``, which installs ``nfutils`` from the clone
   and moves into the clone's ``notebooks/`` folder.

Outside Colab the cell does nothing, and running it again (or after "Restart session") is safe:
inside the clone it is skipped, an existing clone is not cloned again and an importable
``nfutils`` is not reinstalled.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

#: The repository a notebook on Colab clones (``[project.urls] Repository`` of pyproject.toml).
REPOSITORY = "https://github.com/nf-series/vi-normalizing-flows"
#: The folder the clone goes to, beside the notebook (``/content`` on Colab).
CLONE = "vi-normalizing-flows"

#: The notebooks' Colab lines: the start of every setup cell (``tools/colab_bootstrap.py``
#: writes it into the notebooks and checks that they agree).
CELL = f'''\
import os, subprocess, sys
if "google.colab" in sys.modules and not os.path.exists("../pyproject.toml"):
    # On Colab: clone the repository (nfutils, MNIST, checkpoints), install nfutils from it
    source = os.environ.get("NFUTILS_SOURCE", "{REPOSITORY}")
    if not os.path.isdir("{CLONE}"):
        subprocess.run(["git", "clone", "-q", "--depth", "1", source.removeprefix("git+"), "{CLONE}"], check=True)
    sys.path.insert(0, os.path.abspath("{CLONE}"))
    import nfutils.colab; nfutils.colab.setup("{CLONE}", source)'''


def setup(clone: str | Path = CLONE, source: str = REPOSITORY) -> Path:
    """Make a fresh Colab runtime work like a local checkout of the repository.

    Installs ``nfutils`` from ``clone`` with ``pip install -e`` unless it is installed already
    (editable, so ``nfutils.data`` finds ``data/mnist`` beside the package exactly as in a
    local checkout, and other processes import it too; pip keeps Colab's own torch, which
    satisfies ``torch>=2.1``), then changes into the clone's ``notebooks/`` folder, so that the
    repository root is found by walking up to ``pyproject.toml`` and figures go to ``imgs/``.

    Args:
        clone: the cloned repository.
        source: what was cloned (only printed).

    Returns:
        The new working folder, ``clone/notebooks``.
    """
    clone = Path(clone).resolve()
    if not (clone / "pyproject.toml").is_file():
        raise FileNotFoundError(f"{clone} is not a clone of the repository (no pyproject.toml)")
    if not _installed():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "-e", str(clone)],
                       check=True)
    notebooks = clone / "notebooks"
    os.chdir(notebooks)
    print("Colab: nfutils from", source, "| working in", os.getcwd())
    return notebooks


def _installed() -> bool:
    """Whether pip has installed the ``nfutils`` distribution (a new process would import it)."""
    try:
        importlib.metadata.distribution("nfutils")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


__all__ = ["CELL", "CLONE", "REPOSITORY", "setup"]
