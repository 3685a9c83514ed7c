"""scripts/mnist40_recipe.py: its --help, and that a variant stopped by a time budget resumes,
and a finished one is not trained again, to the lines of an uninterrupted run."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.scripts  # end to end in subprocesses: run with the e2e tests

ROOT = Path(__file__).resolve().parents[1]
SETTING = ["--flow-length", "2", "--steps", "4", "--warmup", "1", "--variants", "identity",
           "zero_u"]


def run(*args: str) -> list[str]:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "mnist40_recipe.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def result(line: str) -> str:
    """The line without its timing and without the file a recorded line comes from."""
    return re.sub(r"; \d+ s( \(from .*\))?$", "", line)


def test_help_names_the_variants_and_the_resume_options():
    usage = "\n".join(run("--help"))
    for word in ("identity", "zero_u", "constant_lr", "--checkpoint-dir", "--time-budget"):
        assert word in usage


def test_a_stopped_variant_resumes_and_a_finished_one_is_kept(tmp_path):
    straight = run(*SETTING)
    assert [line.split(":")[0] for line in straight] == [
        "K= 2 identity, 4 steps", "K= 2 zero_u, 4 steps"]
    assert all("test -ELBO (2,000 images)" in line for line in straight)
    resume = [*SETTING, "--checkpoint-dir", str(tmp_path)]
    first = run(*resume, "--time-budget", "1e-9")  # identity: one step, then a clean stop
    assert len(first) == 1 and "identity" in first[0] and "after 1 of 4 steps" in first[0]
    second = run(*resume)  # identity from step 1, then zero_u
    assert [result(line) for line in second] == [result(line) for line in straight]
    third = run(*resume)  # both finished: printed from their results files
    assert all(line.endswith(".txt)") for line in third)
    assert [result(line) for line in third] == [result(line) for line in straight]
