"""scripts/compare_activations.py: its --help, its budget check, and that an activation stopped
mid-epoch by a time budget resumes, and a finished one is kept, to the uninterrupted lines."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.scripts  # end to end in subprocesses: run with the e2e tests

ROOT = Path(__file__).resolve().parents[1]
SETTING = ["--steps", "4", "--eval-every", "2", "relu", "tanh"]


def run(*args: str, code: int = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_activations.py"),
                           *args], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == code, done.stderr
    return done


def printed(*args: str) -> list[str]:
    """The printed lines without the timing (ms/step) and the file a kept line comes from."""
    return [re.sub(r" +\d+\.\d ms/step|( \(from .*\))$", "", line)
            for line in run(*args).stdout.splitlines()]


def test_help_and_the_budget_check():
    usage = run("--help").stdout
    for word in ("--seconds", "--steps", "--no-anneal", "--checkpoint-dir", "--time-budget"):
        assert word in usage
    assert "exactly one of --seconds and --steps" in run("relu", code=2).stderr


def test_a_stopped_activation_resumes_and_a_finished_one_is_kept(tmp_path):
    straight = printed(*SETTING)
    assert [line.split()[:3] for line in straight] == [["relu", "steps", "4"],
                                                       ["tanh", "steps", "4"]]
    assert all(re.search(r"curve \[\d+\.\d+, \d+\.\d+\]$", line) for line in straight)
    resume = [*SETTING, "--checkpoint-dir", str(tmp_path)]
    first = printed(*resume, "--time-budget", "1e-9")  # relu: one step, then a clean stop
    assert len(first) == 1 and "activation=relu" in first[0] and "after 1 of 4 steps" in first[0]
    assert printed(*resume) == straight  # relu from step 1 (batch 2 of its epoch), then tanh
    kept = run(*resume).stdout.splitlines()  # both finished: printed from their files
    assert all(line.endswith(".txt)") for line in kept) and len(kept) == 2
