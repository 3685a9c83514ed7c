"""Every notebook points at the same repository, the one pyproject.toml names.

``[project.urls] Repository`` in pyproject.toml is the one place that names the repository; the
notebooks' "Open in Colab" badges and the default ``NFUTILS_SOURCE`` of their Colab bootstrap
(tools/colab_bootstrap.py) must follow it. Pure text checks: no kernel, no network.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nfutils import colab

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(ROOT.glob("notebooks/[0-9]*.ipynb"))
# a concrete link to a notebook (the README's template ".../notebooks/<name>.ipynb" is not one)
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/[\w./-]+?\.ipynb")
SOURCE_DEFAULT = re.compile(r'os\.environ\.get\("NFUTILS_SOURCE", "([^"]+)"\)')


def _load_bootstrap_tool():
    spec = importlib.util.spec_from_file_location("colab_bootstrap", ROOT / "tools" / "colab_bootstrap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bootstrap_tool = _load_bootstrap_tool()


def _repository() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _ids(paths):
    return [path.name for path in paths]


def test_repository_url_is_a_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", _repository()), _repository()
    assert bootstrap_tool.repository_url() == _repository()
    assert colab.REPOSITORY == _repository()


def test_there_are_notebooks_to_check():
    assert NOTEBOOKS, "no notebooks/[0-9]*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_header_has_the_colab_badge_of_this_notebook(path):
    owner_and_name = _repository().removeprefix("https://github.com/")
    expected = f"https://colab.research.google.com/github/{owner_and_name}/blob/main/notebooks/{path.name}"
    assert expected == bootstrap_tool.colab_badge_url(path.name)
    header = _cells(path)[0]
    assert header["cell_type"] == "markdown", f"{path.name}: the first cell must be the header"
    assert "colab-badge.svg" in _source(header) and expected in _source(header), (
        f"{path.name}: header lacks the badge link {expected}")
    # no other Colab link anywhere in the notebook points elsewhere
    for cell in _cells(path):
        for link in COLAB_LINK.findall(_source(cell)):
            assert link == expected, f"{path.name}: Colab link {link}, expected {expected}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_setup_cell_starts_with_the_bootstrap(path):
    setup = next(cell for cell in _cells(path) if cell["cell_type"] == "code")
    source = _source(setup)
    defaults = SOURCE_DEFAULT.findall(source)
    assert defaults == [_repository()], (
        f"{path.name}: NFUTILS_SOURCE default {defaults}, expected [{_repository()!r}] from pyproject.toml")
    assert source.startswith(bootstrap_tool.bootstrap_source() + "\n"), (
        f"{path.name}: the setup cell does not start with the current bootstrap; "
        "run `python tools/colab_bootstrap.py` and re-execute the notebook")


def test_readme_colab_links_point_at_existing_notebooks():
    for link in COLAB_LINK.findall((ROOT / "README.md").read_text()):
        name = link.rsplit("/", 1)[-1]
        assert link == bootstrap_tool.colab_badge_url(name), link
        assert (ROOT / "notebooks" / name).exists(), f"README links {link}, but notebooks/{name} is missing"


def test_every_colab_link_names_the_pyproject_repository():
    """Also template links such as the README's ".../notebooks/<name>.ipynb"."""
    owner_and_name = _repository().removeprefix("https://github.com/")
    texts = {"README.md": (ROOT / "README.md").read_text()}
    texts.update({path.name: path.read_text() for path in NOTEBOOKS})
    for name, text in texts.items():
        for named in re.findall(r"colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/", text):
            assert named == owner_and_name, f"{name}: Colab link names {named}, pyproject.toml {owner_and_name}"


def test_with_bootstrap_replaces_only_the_leading_block():
    old = 'import os, subprocess, sys\nNFUTILS_SOURCE = "old"\n\nimport torch\n'
    assert bootstrap_tool.with_bootstrap(old, "NEW") == "NEW\n\nimport torch\n"
    assert bootstrap_tool.with_bootstrap("import torch", "NEW") == "NEW\n\nimport torch"
    new = bootstrap_tool.with_bootstrap(old, "import os, subprocess, sys\nNEW")
    assert bootstrap_tool.with_bootstrap(new, "import os, subprocess, sys\nNEW") == new  # idempotent


def test_bootstrap_does_nothing_outside_colab(tmp_path):
    """Outside Colab the Colab lines neither clone, install nor change the folder."""
    env = {k: v for k, v in os.environ.items() if k != "NFUTILS_SOURCE"}
    script = tmp_path / "setup_cell.py"
    script.write_text(bootstrap_tool.bootstrap_source() + "\nprint('google.colab' in sys.modules)\n"
                      "print(os.getcwd())\nprint(sorted(os.listdir('.')))\n")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.splitlines() == ["False", str(tmp_path), "['setup_cell.py']"], result.stdout


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
                   cwd=cwd, check=True, capture_output=True)


def test_colab_lines_clone_and_move_into_the_clone_on_a_faked_colab(tmp_path):
    """On Colab (faked: a ``google.colab`` module) the lines clone ``NFUTILS_SOURCE``, import
    ``nfutils.colab`` from the clone and end in the clone's notebooks/ folder; run again there,
    they do nothing. (nfutils is installed in this environment, so nothing is pip-installed;
    tests/test_colab_bootstrap.py covers the install in a fresh environment.)"""
    source = tmp_path / "source"  # a small repository with this checkout's nfutils
    shutil.copytree(ROOT / "nfutils", source / "nfutils",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(ROOT / "pyproject.toml", source / "pyproject.toml")
    (source / "notebooks").mkdir()
    (source / "notebooks" / "README").write_text("notebooks\n")
    _git("init", "--quiet", cwd=source)
    _git("add", "--all", cwd=source)
    _git("commit", "--quiet", "-m", "snapshot", cwd=source)
    content = tmp_path / "content"
    content.mkdir()
    script = content / "setup_cell.py"
    script.write_text("import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
                      + bootstrap_tool.bootstrap_source() + "\n" + bootstrap_tool.bootstrap_source()
                      + "\nimport nfutils\nprint(nfutils.__file__)\nprint(os.getcwd())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["NFUTILS_SOURCE"] = f"git+file://{source}"
    result = subprocess.run([sys.executable, str(script)], cwd=content, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    clone = content / colab.CLONE
    lines = result.stdout.splitlines()
    assert lines == [f"Colab: nfutils from git+file://{source} | working in {clone / 'notebooks'}",
                     str(clone / "nfutils" / "__init__.py"), str(clone / "notebooks")], lines
    assert (clone / "notebooks" / "README").is_file()


def test_setup_installs_nfutils_from_the_clone_when_it_is_not_installed(tmp_path, monkeypatch):
    clone = tmp_path / colab.CLONE
    (clone / "notebooks").mkdir(parents=True)
    (clone / "pyproject.toml").write_text("[project]\nname = 'nfutils'\n")
    commands = []
    monkeypatch.setattr(colab.subprocess, "run", lambda command, **kwargs: commands.append(command))
    monkeypatch.setattr(colab, "_installed", lambda: False)
    monkeypatch.chdir(tmp_path)
    assert colab.setup(colab.CLONE) == clone / "notebooks"
    assert Path.cwd() == clone / "notebooks"
    assert commands == [[sys.executable, "-m", "pip", "install", "--quiet", "-e", str(clone)]]
    monkeypatch.setattr(colab, "_installed", lambda: True)
    commands.clear()
    colab.setup(clone)
    assert commands == []  # installed already: no second install
    with pytest.raises(FileNotFoundError, match="not a clone"):
        colab.setup(tmp_path)
