"""What makes the scripts' short training runs resumable: a folder of runs, and its options.

A script that trains several runs in turn (one per activation, variant, ...) keeps, in the
folder given by ``--checkpoint-dir``, for each run:

    NAME.state.pt   the training state of ``training.run_steps`` (model, optimizer, random
                    numbers, history, step), written every ``--checkpoint-every`` steps and at a
                    ``--time-budget`` stop, so that a second invocation goes on from there;
    NAME.txt        the run's printed result, written once the run has finished, so that a
                    second invocation prints it again instead of training the run again.

NAME holds every setting that changes the run (``run_name``), so another setting is another
run (but not the code: delete the folder to recompute after a change of the code). Without
``--checkpoint-dir`` nothing is written and an interrupted run starts over.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from nfutils.checkpoints import load_checkpoint

OPTIONS_HELP = """resuming: with --checkpoint-dir DIR each run's training state is kept in
DIR/NAME.state.pt and its result lines, once it has finished, in DIR/NAME.txt (NAME names the
run's settings); running the same command again resumes an interrupted run and prints a
finished run's lines again (marked "(from DIR/NAME.txt)") without training it; delete DIR
to recompute after a change of the code. Without --checkpoint-dir (the default) nothing is
written and an interrupted run starts over."""


def argument_parser(doc: str, checkpoint_every: int = 500) -> argparse.ArgumentParser:
    """A parser whose --help shows the script's docstring as it is written and how to resume,
    with ``--checkpoint-dir``, ``--checkpoint-every`` and ``--time-budget`` (check them after
    parsing with ``check_options``)."""
    parser = argparse.ArgumentParser(description=doc, epilog=OPTIONS_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint-dir", type=Path, default=None,
                        help="keep each run's state and result here and resume from them "
                             "(default: none, an interrupted run starts over)")
    parser.add_argument("--checkpoint-every", type=int, default=checkpoint_every,
                        help=f"steps between checkpoints (default {checkpoint_every})")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="stop cleanly after this many seconds of training (all runs of "
                             "this command together), with a checkpoint (needs "
                             "--checkpoint-dir); the same command again goes on")
    return parser


def check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a time budget without a folder to resume from, and a count below 1."""
    if args.time_budget is not None and args.checkpoint_dir is None:
        parser.error("--time-budget needs --checkpoint-dir (where the stopped run is kept)")
    if args.checkpoint_every < 1:
        parser.error(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")


def run_name(prefix: str, **settings: object) -> str:
    """``prefix`` and every setting, as a file name: ``recipe_K=80_variant=identity_...``."""
    text = "_".join([prefix] + [f"{name}={value}" for name, value in settings.items()])
    return re.sub(r"[^A-Za-z0-9_.=+-]", "-", text)


class RunFolder:
    """The runs of one invocation: where each keeps its state and its result, and the time
    left of the invocation's budget.

    Args:
        directory: the folder (created when needed); None keeps nothing.
        time_budget: seconds this invocation may train, over all its runs, counted from the
            first ``time_left`` call (the start of the first training; None: no limit).
    """

    def __init__(self, directory: Path | None, time_budget: float | None = None):
        self.directory, self.time_budget, self.deadline = directory, time_budget, None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def state_path(self, name: str) -> Path | None:
        """The run's training-state file (None without a folder)."""
        return None if self.directory is None else self.directory / f"{name}.state.pt"

    def time_left(self) -> float | None:
        """Seconds left of the budget, at least 0 (None: no budget); the first call starts the
        clock. (A run started with 0 s left takes one step, then stops with a checkpoint.)"""
        if self.time_budget is None:
            return None
        if self.deadline is None:
            self.deadline = time.perf_counter() + self.time_budget
            return self.time_budget
        return max(0.0, self.deadline - time.perf_counter())

    def print_recorded(self, name: str) -> bool:
        """Print a finished run's result lines, marked with the file they come from; True when
        there were some (the run is not trained again), False otherwise or without a folder."""
        path = None if self.directory is None else self.directory / f"{name}.txt"
        if path is None or not path.is_file():
            return False
        for line in path.read_text().splitlines():
            print(f"{line} (from {path})", flush=True)
        return True

    def record(self, name: str, lines: list[str]) -> None:
        """Keep a finished run's result lines (atomically: a file is complete or absent)."""
        if self.directory is None:
            return
        path = self.directory / f"{name}.txt"
        partial = path.with_suffix(".txt.partial")
        partial.write_text("".join(line + "\n" for line in lines))
        os.replace(partial, path)


def trained_seconds(state_path: Path | None) -> float:
    """The training seconds that a run's earlier pieces spent, from its state file (0 without
    one): what a run on a wall-time budget has used, or what a resumed run's timing adds."""
    if state_path is None or not state_path.is_file():
        return 0.0
    return float(load_checkpoint(state_path)["history"]["seconds"])


def stopped_message(name: str, done: int, total: int | None) -> str:
    """What a time-budget stop prints: where run ``name`` stopped (after ``done`` of ``total``
    steps; ``total`` None: a run on a wall-time budget) and how to go on."""
    where = f"after {done}" + ("" if total is None else f" of {total}") + " steps"
    return (f"{name}: time budget reached {where}; checkpoint written, run the same command "
            "again to go on")


if __name__ == "__main__":
    sys.exit(f"{Path(__file__).name} holds what the other scripts share; it is not a program of "
             "its own. Run one of them, e.g. `python scripts/mnist40_recipe.py --help`.")
