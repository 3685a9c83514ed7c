"""scripts/part1_annealing.py: its --help, its result lines, and that a second run resumes."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.scripts  # end to end in subprocesses: run with the e2e tests

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "part1_annealing.py"
LINE = re.compile(r"^U1 K=2 steps=20 frac=0\.5 lr=0\.002 seed=(\d): KL (-?\d+\.\d{3}) left (\d\.\d\d) \(\d+s\)$")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_help_names_the_arguments():
    usage = run("--help")
    assert usage.returncode == 0, usage.stderr
    for word in ("steps", "fraction", "potentials", "seeds", "flow_length", "--out"):
        assert word in usage.stdout


def test_bad_potential_is_refused_with_the_choices():
    refused = run("20", "0.5", "2e-3", "U9", "0")
    assert refused.returncode == 2 and "U9" in refused.stderr and "U1" in refused.stderr


def test_a_second_run_skips_the_fits_the_results_file_holds(tmp_path):
    out = tmp_path / "runs.txt"
    first = run("20", "0.5", "2e-3", "U1", "0,1", "2", "--out", str(out))
    assert first.returncode == 0, first.stderr
    lines = out.read_text().splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["0", "1"]
    assert lines == first.stdout.splitlines()
    again = run("20", "0.5", "2e-3", "U1", "0,1,2", "2", "--out", str(out))
    assert again.returncode == 0, again.stderr
    printed = again.stdout.splitlines()
    assert printed[:2] == [line + f" (from {out})" for line in lines]  # not fitted again
    assert out.read_text().splitlines()[:2] == lines and len(out.read_text().splitlines()) == 3
    assert LINE.match(printed[2]).group(1) == "2"
