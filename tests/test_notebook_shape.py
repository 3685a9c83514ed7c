"""Every part has the shape of a lesson (shared/STYLE.md): a short header, no overlong markdown
cell, a closing Take-aways cell of 3-5 bullets before the exercises, and committed outputs
that a default Run All gives (sequential execution counts, under 3 MB). Pure text checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(ROOT.glob("notebooks/[0-9]*.ipynb"))
HEADER_WORDS = 120
CELL_WORDS = 300
MAX_BYTES = 3 * 1024 * 1024


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _words(text: str) -> int:
    """Words a reader reads: markdown links and image targets count as their text only."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    return len(text.split())


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_header_is_short_and_states_the_run_time(path):
    header = _source(_cells(path)[0])
    assert _words(header) <= HEADER_WORDS, f"{path.name}: header has {_words(header)} words (at most {HEADER_WORDS})"
    assert re.search(r"full mode:?\s+[\d.]+\s*(s|min)", header), f"{path.name}: header states no full-mode run time"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_no_markdown_cell_is_too_long(path):
    long = [(index, _words(_source(cell))) for index, cell in enumerate(_cells(path))
            if cell["cell_type"] == "markdown" and _words(_source(cell)) > CELL_WORDS]
    assert not long, f"{path.name}: markdown cells over {CELL_WORDS} words (cell, words): {long}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_takeaways_close_the_lesson_before_the_exercises(path):
    cells = _cells(path)
    headings = [(index, _source(cell).lstrip().splitlines()[0]) for index, cell in enumerate(cells)
                if cell["cell_type"] == "markdown" and _source(cell).lstrip().startswith("#")]
    takeaways = [index for index, line in headings if re.match(r"#+\s*Take-aways", line)]
    exercises = [index for index, line in headings if re.match(r"#+\s*Exercises", line)]
    assert len(takeaways) == 1, f"{path.name}: expected one 'Take-aways' cell, found {len(takeaways)}"
    assert exercises and takeaways[0] < exercises[0], f"{path.name}: Take-aways must come before the Exercises"
    bullets = [line for line in _source(cells[takeaways[0]]).splitlines() if re.match(r"\s*[-*] ", line)]
    assert 3 <= len(bullets) <= 5, f"{path.name}: Take-aways has {len(bullets)} bullets (3-5)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_outputs_are_one_run_top_to_bottom(path):
    assert path.stat().st_size <= MAX_BYTES, f"{path.name}: {path.stat().st_size / 2**20:.1f} MB (at most 3 MB)"
    counts = [cell.get("execution_count") for cell in _cells(path) if cell["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: execution counts are not 1, 2, 3, ...: {counts}"
