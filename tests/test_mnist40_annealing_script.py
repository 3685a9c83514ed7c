"""scripts/mnist40_annealing.py: its --help, and that a run cut by time budgets resumes to the
lines of an uninterrupted run (timings apart)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.scripts  # end to end in subprocesses: run with the e2e tests

ROOT = Path(__file__).resolve().parents[1]
SETTING = ["--flow-length", "2", "--anneal-steps", "3", "--steps", "3", "--every", "1"]


def run(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "mnist40_annealing.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def without_timing(lines: list[str]) -> list[str]:
    return [re.sub(r"; \d+ s( \(from .*\))?$", "", line) for line in lines]


def test_help_names_the_resume_options():
    usage = "\n".join(run("--help"))
    missing = [word for word in ("--anneal-steps", "--clip", "--checkpoint-dir", "--time-budget",
                                 "resumes") if word not in usage]
    assert not missing, usage


def test_a_stopped_run_resumes_to_the_uninterrupted_lines(tmp_path):
    straight = run(*SETTING)
    assert [line.split(":")[0] for line in straight] == [
        f"K=2 T=3 lr=0.001 clip=0 step {step}" for step in (1, 2, 3)]
    resume = [*SETTING, "--checkpoint-dir", str(tmp_path)]
    first = run(*resume, "--time-budget", "1e-9")  # one step, its line, then a clean stop
    assert without_timing(first[:1]) == without_timing(straight[:1])
    assert len(first) == 2 and "after 1 of 3 steps" in first[1]
    second = run(*resume)  # the line kept in the checkpoint, then steps 2 and 3
    assert second[0].endswith(".state.pt)") and without_timing(second) == without_timing(straight)
    again = run(*resume)  # finished: printed from the results file, nothing trained
    assert all(line.endswith(".txt)") for line in again)
    assert without_timing(again) == without_timing(straight)
