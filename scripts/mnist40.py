"""Part 4's experiment from the command line (the code is ``nfutils.experiments.mnist40``).

    python scripts/mnist40.py train --flow-lengths 80 10 0 --threads 1 &   # two processes,
    python scripts/mnist40.py train --flow-lengths 40 20 2 --threads 1 &   # one core each
    python scripts/mnist40.py extend --epochs 50                # a later sitting: 50 more epochs
    python scripts/mnist40.py evaluate --flow-lengths 80 10 0   # -> data/results/mnist40_eval_K*.pt
    python scripts/mnist40.py frozen --flow-lengths 80 0        # -> data/results/mnist40_frozen_decoder_K*.pt
    python scripts/mnist40.py frozen-lr                         # K = 40 and 80 at two learning rates
    python scripts/mnist40.py frozen-budget --flow-lengths 80   # K = 40 and 80 at growing budgets
    python scripts/mnist40.py readme                            # rewrite the README's Part 4 table
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# this checkout's nfutils first, also where another checkout is installed (a run from a
# git worktree pinned to a commit while the main checkout is being edited)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfutils import data
from nfutils.experiments.mnist40 import (EXTEND_LR, FLOW_LENGTHS, FROZEN_BUDGET_CHECK,
                                         FROZEN_LR_PATH,
                                         PLANNED_EPOCHS, README_PATH, ROOT, checkpoint_path,
                                         eval_path, evaluate_checkpoint,
                                         frozen_budget_check, frozen_budget_path,
                                         frozen_decoder_experiment, frozen_lr_check, frozen_path,
                                         load_evaluations, load_frozen_budget_check,
                                         results_table, save_evaluation,
                                         save_frozen, save_frozen_budget_check,
                                         save_frozen_lr_check, summary_rows,
                                         train_sweep, update_readme)


def main() -> None:
    parser = argparse.ArgumentParser(description="Part 4: 40-D VAE with planar flows, K = 0..80")
    parser.add_argument("what", choices=["train", "extend", "evaluate", "frozen", "frozen-lr",
                                         "frozen-budget", "readme"])
    parser.add_argument("--flow-lengths", type=int, nargs="+", default=list(FLOW_LENGTHS))
    parser.add_argument("--epochs", type=int, default=PLANNED_EPOCHS,
                        help="train: epochs per K; the learning rate decays to 0 at the last")
    parser.add_argument("--hours", type=float, default=None, help="train: total wall-time budget")
    parser.add_argument("--chunk-minutes", type=float, default=None,
                        help="train: stop after this many minutes (resume by running again)")
    parser.add_argument("--lr", type=float, default=EXTEND_LR,
                        help="extend: peak learning rate of the continuation stage")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.what in ("train", "extend"):
        train_sweep(args.flow_lengths, args.epochs, args.hours, args.chunk_minutes,
                    extend=args.what == "extend", peak_lr=args.lr if args.what == "extend" else None)
    elif args.what == "evaluate":  # one file per K: run several processes with different Ks
        test_images = data.binarized_test_set()[0]
        for flow_length in args.flow_lengths:
            result = evaluate_checkpoint(checkpoint_path(flow_length), test_images)
            save_evaluation(result, eval_path(flow_length))
            row = summary_rows({flow_length: result})[0]
            print(f"K={flow_length:2d}: -ELBO {row['neg_elbo']:.2f}, -ln p(x) S=200 "
                  f"{row['nll_paper']:.2f}, S=1000 {row['nll_paired']:.2f}, S=5000 "
                  f"{row['nll_subset']:.2f}; {result['eval_seconds']:.0f} s -> "
                  f"{eval_path(flow_length).relative_to(ROOT)}", flush=True)
    elif args.what == "frozen":
        result = frozen_decoder_experiment(checkpoint_path(0), data.binarized_test_set()[0],
                                           args.flow_lengths, progress=True)
        save_frozen(result)
        print(f"wrote {', '.join(str(frozen_path(k).relative_to(ROOT)) for k in args.flow_lengths)}")
    elif args.what == "frozen-lr":
        result = frozen_lr_check(checkpoint_path(0), data.binarized_test_set()[0], progress=True)
        save_frozen_lr_check(result)
        print(f"wrote {FROZEN_LR_PATH.relative_to(ROOT)}")
    elif args.what == "frozen-budget":  # one file per K: run one process per K
        flow_lengths = [k for k in args.flow_lengths if k in FROZEN_BUDGET_CHECK["flow_lengths"]]
        if not flow_lengths:
            parser.error(f"frozen-budget checks K in {FROZEN_BUDGET_CHECK['flow_lengths']}")
        try:  # budgets already fitted (same images, settings and decoder) are kept
            previous = load_frozen_budget_check(flow_lengths)
        except (FileNotFoundError, ValueError):
            previous = None
        result = frozen_budget_check(checkpoint_path(0), data.binarized_test_set()[0],
                                     flow_lengths, progress=True, previous=previous)
        save_frozen_budget_check(result)
        print(f"wrote {', '.join(str(frozen_budget_path(k).relative_to(ROOT)) for k in flow_lengths)}")
    else:
        rows = summary_rows(load_evaluations())
        update_readme(rows)
        print(results_table(rows))
        print(f"updated the Part 4 table in {README_PATH.relative_to(ROOT)}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
