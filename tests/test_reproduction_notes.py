"""tools/reproduction_notes.py: the Reproduction notes page is up to date, and its numbers are the
numbers of data/results/, recomputed here from the files by an independent read (torch.load and
numpy, not the tool's code)."""

import math
import re
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "data" / "results"
sys.path.insert(0, str(ROOT / "tools"))
import reproduction_notes  # noqa: E402

PAGE = (ROOT / "docs" / "reproduction.md").read_text()


def read(name):
    return torch.load(RESULTS / name, weights_only=True)


def mean_se(values):
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), values.std(ddof=1) / math.sqrt(values.size)


def table_row(first_cell):
    """The cells of the page's table row that starts with ``first_cell``, all tables."""
    rows = [line for line in PAGE.splitlines() if line.startswith(f"| {first_cell} |")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_the_committed_page_is_what_the_files_give():
    assert PAGE == reproduction_notes.page()


def test_the_sample_bias_table_matches_the_evaluation_files():
    for k in (0, 2, 10, 20, 40, 80):
        values = read(f"mnist40_eval_K{k}.pt")["values"]
        subset = values["log_px_subset"].double().numpy()
        paper = values["log_px_paper"].double().numpy()[: subset.size]
        difference, se = mean_se(subset - paper)
        expected = [str(k), f"{-paper.mean():.2f}", f"{-subset.mean():.2f}",
                    f"{difference:.2f} ± {se:.2f}"]
        assert expected in table_row(k), (k, table_row(k))
    assert "S = 200 against S = 5000" in PAGE and "first 500 test images" in PAGE


def test_the_learning_rate_table_matches_its_file():
    check = read("mnist40_frozen_decoder_lr_check.pt")
    for lr in (0.002, 0.005):
        per_k = check["elbo"][lr]
        difference, se = mean_se((per_k[40] - per_k[80]).double().numpy())
        expected = [f"{lr:g}", f"{-float(per_k[40].double().mean()):.3f}",
                    f"{-float(per_k[80].double().mean()):.3f}", f"{difference:+.3f} ± {se:.3f}"]
        assert expected in table_row(f"{lr:g}")


def test_the_budget_table_matches_its_files():
    k40, k80 = read("mnist40_frozen_decoder_budget_K40.pt"), read("mnist40_frozen_decoder_budget_K80.pt")
    budgets = k40["check"]["budgets"]
    assert len(budgets) == len(k80["elbo"]) == 5
    for index, budget in enumerate(budgets):
        difference, se = mean_se((k40["elbo"][index] - k80["elbo"][index]).double().numpy())
        cells = f"| {budget['num_steps']:,} | {budget['num_samples']} |"
        line = next(l for l in PAGE.splitlines() if l.startswith(cells)
                    and f"{difference:+.3f} ± {se:.3f}" in l)
        assert f"{-float(k40['elbo'][index].double().mean()):.3f}" in line
        assert f"{k80['seconds'][index]:.0f} s |" in line


def test_the_recipe_log_is_on_the_page_and_every_check_names_its_command():
    log = (RESULTS / "mnist40_recipe.txt").read_text()
    for number in re.findall(r"test -ELBO \(2,000 images\)\s+([\d.]+)", log):
        assert number in PAGE
    for command in ("scripts/mnist40_recipe.py", "scripts/mnist40.py evaluate",
                    "scripts/mnist40.py frozen-lr", "scripts/mnist40.py frozen-budget"):
        assert command in PAGE


def test_the_annealing_log_is_on_the_page_with_its_commands():
    log = (RESULTS / "mnist40_annealing.txt").read_text()
    runs = re.findall(r"^\$ (.+)$", log, flags=re.M)
    assert len(runs) == 2 and any("--anneal-steps 0" in run for run in runs)
    rows = re.findall(r"step (\d+): test -ELBO ([\d.]+); gradient norm median ([\d.]+), max ([\d.]+)", log)
    assert len(rows) == 6
    for step, elbo, median, largest in rows:
        assert f"| {step} | {elbo} | {median}, {largest} |" in PAGE
    annealed, plain = float(rows[2][1]), float(rows[5][1])
    assert f"{annealed - plain:.1f} nats worse ({annealed:.1f} against {plain:.1f}" in PAGE
    assert f"largest gradient norm {max(float(row[3]) for row in rows):.0f})" in PAGE


def test_the_clipping_conclusion_follows_the_recipe_log():
    log = (RESULTS / "mnist40_recipe.txt").read_text()
    unclipped = re.search(r"K=80 identity, .*max grad norm\s+([\d.]+)", log).group(1)
    blew_up = float(unclipped) > 1e4
    assert ("blew up" in PAGE.split("## Annealing")[0]) == blew_up
    assert f"{float(unclipped):,.1f}" in PAGE or blew_up


def test_the_budget_sentence_is_read_from_the_budgets():
    def budget(steps, samples, fraction):
        return {"num_steps": steps, "num_samples": samples, "average_fraction": fraction}

    rows = [budget(100, 8, 0.0), budget(100, 8, 0.25), budget(100, 16, 0.25),
            budget(300, 16, 0.25), budget(900, 16, 0.25)]
    assert reproduction_notes.budget_changes(rows) == (
        "the main setting; the mean of the last 25% of the iterates instead of the last iterate "
        "(Polyak averaging); twice the samples per step; three times the steps, twice")
    fits = read("mnist40_frozen_decoder_budget_K40.pt")["check"]["budgets"]
    assert reproduction_notes.budget_changes(fits) + ". Learning rate" in PAGE
