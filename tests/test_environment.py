"""environment.yml, pyproject.toml and the Makefile describe the same environment."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _environment_yml():
    text = (ROOT / "environment.yml").read_text()
    lines = [line.split("#")[0].rstrip() for line in text.splitlines()]
    conda = [l.strip()[2:].strip() for l in lines if re.match(r"^  - ", l)]
    pip = [l.strip()[2:].strip() for l in lines if re.match(r"^ {6}- ", l)]
    return conda, pip


def _makefile_torch_pin():
    match = re.search(r"^TORCH_PIN\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert match, "Makefile must define TORCH_PIN"
    return match.group(1)


def test_environment_matches_pyproject_and_makefile():
    conda, pip = _environment_yml()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "python=3.11" in conda
    minimum = re.search(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"]).group(1)
    assert int(minimum) <= 11
    # the package with the dev extra, which carries every tool the tests need
    assert "-e .[dev]" in pip
    assert {"pytest", "nbval", "papermill", "jupyterlab", "ipywidgets", "tqdm"} <= {
        re.split(r"[<>=\[ ]", req)[0] for req in pyproject["project"]["optional-dependencies"]["dev"]
    }
    # torch pinned identically, and the pin satisfies pyproject's lower bound
    pin = _makefile_torch_pin()
    assert pin in pip, f"environment.yml must pin {pin} like the Makefile"
    torch_req = next(r for r in pyproject["project"]["dependencies"] if r.startswith("torch"))
    lower = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", torch_req).group(1).split("."))
    pinned = tuple(int(x) for x in pin.split("==")[1].split("."))
    assert pinned >= lower


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and re.search(r"^make test$", ci, re.M)
