"""Write the website's "Reproduction notes" page, ``docs/reproduction.md``, from ``data/results/``.

    python tools/reproduction_notes.py            # rewrite docs/reproduction.md
    python tools/reproduction_notes.py --check    # exit 1 if docs/reproduction.md is out of date

The page holds the evidence that made Part 4's results robust, which the lesson itself only
summarizes: the short runs that settled the training recipe, how far S = 200 importance samples
are from S = 5000, and the learning-rate and budget checks of the frozen-decoder experiment.
Every number on it is read from the committed result files (so it is the files' number), and
each section names the command that recomputes it. ``tools/build_site.py`` writes the page into
the staged site the same way, so the site never shows numbers older than the files.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nfutils import checkpoints  # noqa: E402

RESULTS = ROOT / "data" / "results"
PAGE = ROOT / "docs" / "reproduction.md"
FLOW_LENGTHS = (0, 2, 10, 20, 40, 80)
BLEW_UP_NORM = 1e4  # a gradient norm above this: the run blew up


def mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the mean of per-image values."""
    values = values.double()
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def recipe_section(results: Path = RESULTS) -> list[str]:
    """The recipe log, command by command, as it was written by its runs."""
    lines = (results / "mnist40_recipe.txt").read_text().splitlines()
    about = [line.lstrip("# ").rstrip() for line in lines if line.startswith("#")]
    out = ["## The training recipe: short runs at K = 80", "",
           " ".join(about), "",
           "| command | result |", "|---|---|"]
    command, results_by_run = None, {}
    for line in lines:
        if line.startswith("$ "):
            command = line[2:].strip()
        elif line.strip() and not line.startswith("#") and command is not None:
            run, result = line.split(":", 1) if ":" in line else ("", line)
            results_by_run[run.split(",")[0].strip()] = result
            out.append(f"| `{command}` | {result.strip().replace('|', chr(92) + '|')} |")
            command = None
    out += ["", clipping_conclusion(results_by_run) + " The identity start is kept because every "
            "K then starts from the same posterior. The log is "
            "`data/results/mnist40_recipe.txt`; each line's command recomputes it.", ""]
    return out


def annealing_section(results: Path = RESULTS) -> list[str]:
    """The annealing log: the paper's schedule against beta = 1, command by command."""
    lines = (results / "mnist40_annealing.txt").read_text().splitlines()
    about = [line.lstrip("# ").rstrip() for line in lines if line.startswith("#")]
    out = ["## Annealing: the paper's schedule against beta = 1 at K = 80", "", " ".join(about), "",
           "| command | step | test -ELBO | gradient norm (median, max) |", "|---|---:|---:|---:|"]
    command, last, largest = None, {}, 0.0
    for line in lines:
        if line.startswith("$ "):
            command = line[2:].strip()
        elif line.strip() and not line.startswith("#") and command is not None:
            numbers = re.search(r"step (\d+): test -ELBO ([\d.]+); gradient norm median ([\d.]+), "
                                r"max ([\d.]+)", line)
            step, elbo, median, largest_norm = numbers.groups()
            out.append(f"| `{command}` | {step} | {elbo} | {median}, {largest_norm} |")
            last[command], largest = (int(step), float(elbo)), max(largest, float(largest_norm))
    (step, annealed), (_, plain) = (value for command, value in sorted(
        last.items(), key=lambda item: "--anneal-steps 0" in item[0]))
    worse = annealed > plain
    out += ["", f"After {step} steps the annealed run's bound is {abs(annealed - plain):.1f} nats "
            f"{'worse' if worse else 'better'} ({annealed:.1f} against {plain:.1f}; "
            f"{'no run blew up, ' if largest <= BLEW_UP_NORM else ''}largest gradient norm "
            f"{largest:.0f})" + (": annealing delays the full objective, so Part 4 trains with "
                                 "beta = 1 throughout. " if worse else ". ")
            + "Whether annealing pays off over a full training run was not measured. "
            "The log is "
            "`data/results/mnist40_annealing.txt`; each command recomputes its lines.", ""]
    return out


def clipping_conclusion(results_by_run: dict[str, str]) -> str:
    """What the unclipped and the clipped identity runs of the recipe log say about clipping."""
    def elbo_and_norm(run: str) -> tuple[float, float]:
        numbers = re.search(r"test -ELBO \(2,000 images\)\s+([\d.]+); max grad norm\s+([\d.]+)",
                            results_by_run[run])
        return float(numbers.group(1)), float(numbers.group(2))

    (plain, plain_norm), (clipped, _) = elbo_and_norm("K=80 identity"), elbo_and_norm("K=80 identity clip 100")
    if plain_norm > BLEW_UP_NORM or plain > clipped + 10:
        return (f"Without gradient clipping the identity start blew up (largest gradient norm "
                f"{plain_norm:,.0f}, test -ELBO {plain:.2f}); clipped at norm 100 it trained "
                f"({clipped:.2f}).")
    return (f"The identity start trained with and without gradient clipping ({clipped:.2f} and "
            f"{plain:.2f} nats; largest gradient norm unclipped {plain_norm:,.1f}): at this budget "
            "clipping at norm 100 is a guard against the spikes that 80 layers can produce, not a "
            "measured gain.")


def sample_bias_rows(results: Path = RESULTS) -> list[dict]:
    """Per K: -ln p(x) at S = 200 and at S = 5000 on the same first images, and their paired
    difference (mean, standard error)."""
    rows = []
    for k in FLOW_LENGTHS:
        evaluation = checkpoints.load_checkpoint(results / f"mnist40_eval_K{k}.pt",
                                                 required=("values", "settings"))
        values, settings = evaluation["values"], evaluation["settings"]
        subset = values["log_px_subset"].double()
        paper = values["log_px_paper"][: subset.numel()].double()
        difference, stderr = mean_and_stderr(subset - paper)  # -ln p(x): S=200 minus S=5000
        rows.append({"flow_length": k, "images": subset.numel(),
                     "samples_paper": settings["samples_paper"],
                     "samples_subset": settings["samples_subset"],
                     "nll_paper": -float(paper.mean()), "nll_subset": -float(subset.mean()),
                     "difference": difference, "stderr": stderr})
    return rows


def sample_bias_section(results: Path = RESULTS) -> list[str]:
    rows = sample_bias_rows(results)
    first = rows[0]
    out = [f"## Importance sampling: S = {first['samples_paper']} against "
           f"S = {first['samples_subset']}", "",
           f"The paper's Table 2 estimates -ln p(x) with S = {first['samples_paper']} samples. "
           f"Both estimates are lower bounds on log p(x) in expectation, so more samples can only "
           f"lower -ln p(x); how much shows how far S = {first['samples_paper']} is from "
           f"convergence, and a better proposal needs fewer samples. The first "
           f"{first['images']} test images, each model's own evaluation (paired: the same images).",
           "", f"| K | -ln p(x), S = {first['samples_paper']} | -ln p(x), "
           f"S = {first['samples_subset']} | difference (paired) |", "|---:|---:|---:|---:|"]
    for row in rows:
        out.append(f"| {row['flow_length']} | {row['nll_paper']:.2f} | {row['nll_subset']:.2f} | "
                   f"{row['difference']:.2f} ± {row['stderr']:.2f} |")
    falls = rows[-1]["difference"] < rows[0]["difference"]
    out += ["", f"From K = {rows[0]['flow_length']} to K = {rows[-1]['flow_length']} the part "
            f"that S = {first['samples_paper']} leaves {'falls' if falls else 'rises'} from "
            f"{rows[0]['difference']:.2f} to {rows[-1]['difference']:.2f} nats"
            + (": the longer flow is the better proposal. " if falls else ". ") + "Recompute: `python scripts/mnist40.py evaluate` (one file per K, "
            "`data/results/mnist40_eval_K*.pt`).", ""]
    return out


def lr_check_rows(results: Path = RESULTS) -> tuple[dict, list[dict]]:
    check = checkpoints.load_checkpoint(results / "mnist40_frozen_decoder_lr_check.pt",
                                        required=("check", "elbo"))
    shorter, longer = check["check"]["flow_lengths"]
    rows = []
    for lr, per_k in check["elbo"].items():
        difference, stderr = mean_and_stderr(per_k[shorter] - per_k[longer])
        rows.append({"lr": float(lr), "neg_elbo_shorter": -float(per_k[shorter].double().mean()),
                     "neg_elbo_longer": -float(per_k[longer].double().mean()),
                     "difference": difference, "stderr": stderr})
    return check, rows


def lr_check_section(results: Path = RESULTS) -> list[str]:
    check, rows = lr_check_rows(results)
    shorter, longer = check["check"]["flow_lengths"]
    settings = check["settings"]
    out = ["## Frozen decoder: the learning-rate check", "",
           f"A K = {longer} flow contains every K = {shorter} flow (set {longer - shorter} of its "
           f"layers to the identity), so its best bound is at least as tight; which of the two "
           f"ends ahead after a fixed number of steps is a question about the optimizer. Both "
           f"are refitted on the first {check['check']['images']} test images against the frozen "
           f"decoder `{check['decoder']}` at each learning rate, all else as in the main "
           f"experiment ({settings['num_steps']:,} Adam steps, {settings['num_samples']} samples "
           f"per image and step, ELBO with {settings['elbo_samples']} samples).", "",
           f"| learning rate | -ELBO, K = {shorter} | -ELBO, K = {longer} | "
           f"K = {longer} minus K = {shorter} (paired) |", "|---:|---:|---:|---:|"]
    for row in rows:
        out.append(f"| {row['lr']:g} | {row['neg_elbo_shorter']:.3f} | "
                   f"{row['neg_elbo_longer']:.3f} | {row['difference']:+.3f} ± "
                   f"{row['stderr']:.3f} |")
    signs = {row["difference"] > 0 for row in rows}
    verdict = (f"Which of the two longest flows ends ahead depends on the learning rate: the sign "
               f"of the paired difference changes between the rates above, so a fixed budget "
               f"does not decide K = {shorter} against K = {longer}; the budget check below fits "
               "them further." if len(signs) > 1 else
               f"K = {longer} ends {'behind' if signs == {True} else 'ahead of'} K = {shorter} at "
               "every rate above.")
    out += ["", verdict + " Recompute: `python scripts/mnist40.py frozen-lr` "
            "(`data/results/mnist40_frozen_decoder_lr_check.pt`).", ""]
    return out


def budget_check_rows(results: Path = RESULTS) -> tuple[dict, list[dict]]:
    parts = {k: checkpoints.load_checkpoint(results / f"mnist40_frozen_decoder_budget_K{k}.pt",
                                             required=("check", "elbo", "seconds"))
             for k in (40, 80)}
    shorter, longer = parts[40]["check"]["flow_lengths"]
    rows = []
    for index, budget in enumerate(parts[shorter]["check"]["budgets"]):
        elbo_shorter = parts[shorter]["elbo"][index].double()
        elbo_longer = parts[longer]["elbo"][index].double()
        difference, stderr = mean_and_stderr(elbo_shorter - elbo_longer)
        rows.append(dict(budget, neg_elbo_shorter=-float(elbo_shorter.mean()),
                         neg_elbo_longer=-float(elbo_longer.mean()), difference=difference,
                         stderr=stderr, seconds_longer=parts[longer]["seconds"][index]))
    return parts[shorter], rows


def budget_changes(rows: list[dict]) -> str:
    """What each budget of the check changes from the one before it, read from the rows:
    "the main setting; ...; four times the steps, twice"."""
    def times(factor: float) -> str:
        return {2: "twice", 3: "three times", 4: "four times"}.get(factor, f"{factor:g} times")

    changes = []
    for before, after in zip(rows, rows[1:]):
        change = []
        if after["average_fraction"] != before["average_fraction"]:
            change.append(f"the mean of the last {after['average_fraction']:.0%} of the iterates"
                          " instead of the last iterate (Polyak averaging)"
                          if after["average_fraction"] else "the last iterate")
        if after["num_samples"] != before["num_samples"]:
            change.append(f"{times(after['num_samples'] / before['num_samples'])} the samples "
                          "per step")
        if after["num_steps"] != before["num_steps"]:
            change.append(f"{times(after['num_steps'] / before['num_steps'])} the steps")
        changes.append(" and ".join(change))
    phrases, counts = [], []  # a change made again in a row: "..., twice"
    for change in changes:
        if phrases and phrases[-1] == change:
            counts[-1] += 1
        else:
            phrases.append(change)
            counts.append(1)
    repeated = {2: ", twice", 3: ", three times"}
    return "; ".join(["the main setting"] + [
        phrase + (repeated.get(count, f", {count} times") if count > 1 else "")
        for phrase, count in zip(phrases, counts)])


def budget_check_section(results: Path = RESULTS) -> list[str]:
    check, rows = budget_check_rows(results)
    shorter, longer = check["check"]["flow_lengths"]
    out = ["## Frozen decoder: the budget check", "",
           f"If K = {longer} is behind K = {shorter} only because its layers are fitted less "
           f"well, the gap must close as both fits improve. Both are refitted on the first "
           f"{check['check']['images']} test images with growing budgets, one change at a time: "
           f"{budget_changes(rows)}. Learning rate {check['settings']['lr']}, decoder `{check['decoder']}`.", "",
           f"| steps | samples per step | parameters returned | -ELBO, K = {shorter} | "
           f"-ELBO, K = {longer} | K = {longer} minus K = {shorter} (paired) | "
           f"fitting time, K = {longer} |", "|---:|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        returned = (f"mean of the last {row['average_fraction']:.0%} of iterates"
                    if row["average_fraction"] else "last iterate")
        out.append(f"| {row['num_steps']:,} | {row['num_samples']} | {returned} | "
                   f"{row['neg_elbo_shorter']:.3f} | {row['neg_elbo_longer']:.3f} | "
                   f"{row['difference']:+.3f} ± {row['stderr']:.3f} | "
                   f"{row['seconds_longer']:.0f} s |")
    ahead = [i + 1 for i, row in enumerate(rows) if row["difference"] < -2 * row["stderr"]]
    behind = [i + 1 for i, row in enumerate(rows) if row["difference"] > 2 * row["stderr"]]
    gain = rows[0]["neg_elbo_shorter"] - rows[-1]["neg_elbo_shorter"]
    out += ["", f"Over the budgets above, K = {shorter}'s -ELBO falls by {gain:.3f} nats; "
            f"K = {longer} ends behind K = {shorter} by more than two paired standard errors at "
            f"budgets {behind or 'none'} (numbered from 1) and ahead at {ahead or 'none'}. "
            + (f"No budget turns the deficit into a lead: the bound does not tighten measurably "
               f"beyond K = {shorter}. " if not ahead else "") + "Recompute: "
            f"`python scripts/mnist40.py frozen-budget --flow-lengths {shorter}` and "
            f"`... --flow-lengths {longer}` (one process each; budgets already fitted are "
            "kept), `data/results/mnist40_frozen_decoder_budget_K*.pt`.", ""]
    return out


def page(results: Path = RESULTS) -> str:
    """The page's markdown."""
    lines = ["# Reproduction notes", "",
             "The evidence behind Part 4's results that the lesson only summarizes: how the "
             "training recipe was chosen (annealing included), how far the paper's importance-sampling estimate is "
             "from convergence, and whether the frozen-decoder result holds at other learning "
             "rates and budgets. This page is generated by `python tools/reproduction_notes.py` "
             "from the files in `data/results/`; each section names the command that recomputes "
             "its file.", ""]
    for section in (recipe_section, annealing_section, sample_bias_section, lr_check_section,
                    budget_check_section):
        lines += section(results)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/reproduction.md differs from what the files give")
    parser.add_argument("--output", type=Path, default=PAGE)
    args = parser.parse_args()
    text = page()
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date: run `python tools/reproduction_notes.py`")
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
