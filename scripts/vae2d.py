"""Part 3's experiments from the command line (the code is ``nfutils.experiments.vae2d``).

    python scripts/vae2d.py train            # train (or resume) vae2d_K0 and vae2d_K16
    python scripts/vae2d.py curves           # learning curves -> data/vae2d_learning_curves.json
    python scripts/vae2d.py curves --flow-lengths 16 --merge   # redo only K = 16's runs
    python scripts/vae2d.py train --epochs 2 --time-budget 540   # a piece of < 10 minutes
    python scripts/vae2d.py train --flow-lengths 16 --paper-order  # flows on z_0 (the paper's form)
    python scripts/vae2d.py gaps             # approximation / amortization gaps -> data/results/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

# this checkout's nfutils first, also where another checkout is installed (a run from a
# git worktree pinned to a commit while the main checkout is being edited)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfutils import data, device, training, vae_training
from nfutils.experiments.vae2d import (CURVE_DEFAULTS, CURVES_PATH, GAP_IMAGES, GAPS_PATH, ROOT,
                                       TRAIN_DEFAULTS, checkpoint_path, gap_split, gap_table,
                                       learning_curves, load_gaps, merge_curves, save_curves,
                                       save_gaps, train_model)


def main() -> None:
    parser = argparse.ArgumentParser(description="Part 3's 2-D VAE experiments")
    parser.add_argument("what", choices=["train", "curves", "gaps"])
    parser.add_argument("--flow-lengths", type=int, nargs="+", default=[0, 16])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds per model before a clean stop (train only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--paper-order", action="store_true",
                        help="train: flows on z_0 = mu + sigma eps (the paper's form) instead of on eps")
    parser.add_argument("--images", type=int, default=GAP_IMAGES,
                        help="gaps: the first N test images")
    parser.add_argument("--table-only", action="store_true",
                        help="gaps: print the table of the saved results, compute nothing")
    parser.add_argument("--merge", action="store_true",
                        help="curves: replace only these flow lengths' runs in the existing JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.what == "train":
        for flow_length in args.flow_lengths:
            _, history = train_model(flow_length, args.epochs or TRAIN_DEFAULTS["num_epochs"],
                                     time_budget=args.time_budget,
                                     standardized_flow=not args.paper_order)
            state = "finished" if history.finished else "stopped (time budget); run again"
            print(f"K={flow_length}: {state}; epochs {len(history.epochs)}, test ELBO "
                  f"{history.test_elbo[-1] if history.test_elbo else float('nan'):.2f}, "
                  f"{history.seconds:.0f} s", flush=True)
    elif args.what == "gaps":
        paths = {K: checkpoint_path(K) for K in args.flow_lengths}
        models = {K: vae_training.load_vae(path, device())[0] for K, path in paths.items()}
        images = data.binarized_test_set()[0][: args.images]
        if not args.table_only:
            save_gaps(gap_split(models, images, progress=True), paths)
            print(f"wrote {GAPS_PATH.relative_to(ROOT)}")
        results = load_gaps(paths)
        if results is None:
            raise SystemExit(f"{GAPS_PATH.relative_to(ROOT)} is missing or belongs to other checkpoints")
        print(gap_table(results))
    else:
        result = learning_curves(num_epochs=args.epochs or CURVE_DEFAULTS["num_epochs"],
                                 flow_lengths=tuple(args.flow_lengths))
        if args.merge and CURVES_PATH.exists():
            try:
                result = merge_curves(json.loads(CURVES_PATH.read_text()), result)
            except ValueError as error:
                raise SystemExit(f"--merge: {error}") from None
        save_curves(result)
        print(f"wrote {CURVES_PATH.relative_to(ROOT)}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
