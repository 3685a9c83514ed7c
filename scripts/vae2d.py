"""The long runs behind Part 3 (notebooks/03_vae_2d_latent.ipynb), from the command line.

The notebook writes each of these computations out and loads what they saved; this program
runs them in resumable pieces (each subcommand picks up where an interrupted run stopped):

    python scripts/vae2d.py train            # train (or resume) vae2d_K0 and vae2d_K16
    python scripts/vae2d.py train --epochs 2 --time-budget 540   # a piece of < 10 minutes
    python scripts/vae2d.py train --flow-lengths 16 --paper-order  # flows on z_0 (the paper's form)
    python scripts/vae2d.py curves           # learning curves -> data/vae2d_learning_curves.json
    python scripts/vae2d.py curves --flow-lengths 16 --merge   # redo only K = 16's runs
    python scripts/vae2d.py gaps             # approximation / amortization gaps -> data/results/
    python scripts/vae2d.py gaps --table-only   # print the saved split

* ``train``: Part 4's recipe (Adam, a 500-step linear warm-up of the learning rate to 1e-3 and
  a cosine decay to 0 at the last step, beta = 1, flow layers that start at the identity,
  gradient norms clipped at 100) with ``vae_training.fit_vae``, whose full state (model,
  optimizer, random numbers, history) goes to ``outputs/runs/`` every 1,000 steps; a finished
  model is written in float16 to ``data/checkpoints/vae2d_K{K}.pt`` with its history, budget and
  recipe.
* ``curves``: figure (d), 12 short runs (K in {0, 16}, S in {1, 10}, seeds 0-2); each finished
  run is kept in ``outputs/runs/vae2d_curves.partial.json``, so a restart skips it.
* ``gaps``: the split of the inference gap (``nfutils.inference_gaps``) on the first 500 test
  images, saved per model with the SHA-256 of its checkpoint as soon as that model is done.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

# this checkout's nfutils first, also where another checkout is installed (a run from a
# git worktree pinned to a commit while the main checkout is being edited)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfutils import data, device, inference_gaps, training, vae, vae_training  # noqa: E402
from nfutils.results import save_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = ROOT / "data" / "checkpoints"
RUN_DIR = ROOT / "outputs" / "runs"
CURVES_PATH = ROOT / "data" / "vae2d_learning_curves.json"
GAPS_PATH = ROOT / "data" / "results" / "vae2d_gaps.json"

RECIPE = dict(num_epochs=30, batch_size=100, num_samples=1, lr=1e-3, anneal=False)
WARMUP_STEPS = 500
MAX_GRAD_NORM = 100.0
GAP_IMAGES = 500
CURVE_DEFAULTS = dict(num_epochs=10, train_size=10_000, test_size=2_000, batch_size=100,
                      lr=1e-3, flow_lengths=(0, 16), samples=(1, 10), seeds=(0, 1, 2))


def checkpoint_path(flow_length: int, paper_order: bool = False) -> Path:
    """The committed float16 checkpoint of the 2-D model with K = ``flow_length``."""
    suffix = "_paper_order" if paper_order and flow_length > 0 else ""
    return CHECKPOINT_DIR / f"vae2d_K{flow_length}{suffix}.pt"


def train_model(flow_length: int, num_epochs: int = RECIPE["num_epochs"],
                time_budget: float | None = None, seed: int = 0, progress: bool = True,
                run_dir: Path = RUN_DIR, out_path: Path | None = None,
                paper_order: bool = False) -> tuple[vae.VAE, training.History]:
    """Train (or resume) one model with the recipe; write its checkpoint once it has finished.

    Args:
        flow_length: K. num_epochs: the budget (the learning rate reaches 0 at its end).
        time_budget: seconds before a clean stop (run again to continue).
        run_dir: where the resumable full state lives. out_path: the finished model's file
            (default ``checkpoint_path``). paper_order: flows on z_0 instead of on eps.
    """
    dev = device()
    torch.manual_seed(seed)
    model = vae.VAE(latent_dim=2, flow_length=flow_length,
                    standardized_flow=not paper_order).to(dev)
    train_images, _ = data.load_mnist("train")
    test_images, _ = data.binarized_test_set()
    settings = {**RECIPE, "num_epochs": num_epochs}
    total_steps = num_epochs * math.ceil(train_images.shape[0] / settings["batch_size"])
    warmup_steps = min(WARMUP_STEPS, total_steps - 1)
    out_path = out_path or checkpoint_path(flow_length, paper_order)
    history = vae_training.fit_vae(
        model, train_images, test_images, **settings, seed=seed, progress=progress,
        checkpoint_path=Path(run_dir) / (out_path.stem + "_cosine.state.pt"),
        checkpoint_every=1000, time_budget=time_budget, max_grad_norm=MAX_GRAD_NORM,
        lr_schedule=lambda step: training.warmup_cosine(step, total_steps, warmup_steps))
    if history.finished:
        budget = {"steps": total_steps,
                  "epochs": len(history.epochs), "seconds": round(history.seconds, 1),
                  "device": str(dev), "cpu": platform.processor() or platform.machine(),
                  "threads": torch.get_num_threads()}
        recorded = dict(settings, schedule="warmup_cosine", warmup_steps=warmup_steps,
                        total_steps=total_steps, max_grad_norm=MAX_GRAD_NORM, init="identity")
        vae_training.save_vae(model, out_path, dtype=torch.float16, history=history.as_dict(),
                              budget=budget, settings=recorded)
    return model, history


def learning_curves(flow_lengths=CURVE_DEFAULTS["flow_lengths"],
                    num_epochs: int = CURVE_DEFAULTS["num_epochs"],
                    train_size: int = CURVE_DEFAULTS["train_size"],
                    test_size: int = CURVE_DEFAULTS["test_size"],
                    partial_path: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Figure (d): the test bound after every epoch for every (K, S, seed), beta = 1.

    Each run trains a fresh 2-D VAE on the first ``train_size`` training images and evaluates
    the ELBO (one sample per x) of the first ``test_size`` test images after every epoch. With
    ``partial_path``, every finished run is written there and a restart skips it.
    """
    dev = device()
    config = dict(num_epochs=num_epochs, train_size=train_size, test_size=test_size,
                  batch_size=CURVE_DEFAULTS["batch_size"], lr=CURVE_DEFAULTS["lr"], anneal=False,
                  optimizer="adam", flow_lengths=list(flow_lengths),
                  samples=list(CURVE_DEFAULTS["samples"]), seeds=list(CURVE_DEFAULTS["seeds"]))
    runs = []
    if partial_path is not None and partial_path.exists():
        saved = json.loads(partial_path.read_text())
        runs = saved["runs"] if saved["config"] == config else []
    done = {(r["flow_length"], r["num_samples"], r["seed"]) for r in runs}
    train_images = data.load_mnist("train")[0][:train_size]
    test_images = data.binarized_test_set()[0][:test_size]
    for flow_length in flow_lengths:
        for num_samples in config["samples"]:
            for seed in config["seeds"]:
                if (flow_length, num_samples, seed) in done:
                    continue
                torch.manual_seed(seed)
                model = vae.VAE(latent_dim=2, flow_length=flow_length).to(dev)
                history = vae_training.fit_vae(
                    model, train_images, test_images, num_epochs=num_epochs,
                    batch_size=config["batch_size"], num_samples=num_samples, lr=config["lr"],
                    anneal=False, seed=seed, progress=progress, log_every=10**9)
                runs.append({"flow_length": flow_length, "num_samples": num_samples,
                             "seed": seed, "epochs": history.epochs,
                             "test_elbo": history.test_elbo,
                             "train_elbo": history.epoch_train_elbo,
                             "seconds": round(history.seconds, 1)})
                if partial_path is not None:
                    save_json({"config": config, "runs": runs}, partial_path)
                print(f"K={flow_length} S={num_samples} seed={seed}: test ELBO "
                      f"{history.test_elbo[-1]:.2f} after {num_epochs} epochs, "
                      f"{history.seconds:.0f} s", flush=True)
    return {"config": config, "runs": runs, "device": str(dev),
            "threads": torch.get_num_threads()}


def merge_curves(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s runs in place of ``old``'s runs of the same flow lengths (the others kept).

    Raises:
        ValueError: the two were made with different budgets (anything in ``config`` other
            than ``flow_lengths``), so their curves would not be comparable.
    """
    def budget(result: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in result["config"].items() if k != "flow_lengths"}

    if budget(old) != budget(new):
        raise ValueError("merging needs the same budget as the existing curves")
    replaced = {run["flow_length"] for run in new["runs"]}
    kept = [run for run in old["runs"] if run["flow_length"] not in replaced]
    runs = sorted(kept + new["runs"], key=lambda r: (r["flow_length"], r["num_samples"], r["seed"]))
    config = dict(new["config"], flow_lengths=sorted({r["flow_length"] for r in runs}))
    return {**new, "config": config, "runs": runs}


def compute_gaps(checkpoints: dict[int, Path], images: torch.Tensor, settings: dict[str, Any],
                 path: Path = GAPS_PATH, seed: int = 0) -> dict[int, inference_gaps.InferenceGaps]:
    """The split for every model on the same images, saved after each model; models already
    saved for their current checkpoint and these images are kept, not recomputed."""
    results = {k: gaps for k, gaps in inference_gaps.load_gaps(path, checkpoints).items()
               if gaps.settings.get("images") == images.shape[0]}
    for flow_length, checkpoint in checkpoints.items():
        if flow_length in results:
            print(f"K={flow_length}: kept from {path.name}", flush=True)
            continue
        model = vae_training.load_vae(checkpoint, device())[0]
        results[flow_length] = inference_gaps.inference_gaps(model, images, settings, seed=seed,
                                                             progress=True)
        inference_gaps.save_gaps(path, results, checkpoints, device=str(device()),
                                 threads=torch.get_num_threads())
        gaps = results[flow_length]
        print(f"K={flow_length}: approximation {float(gaps.approximation.mean()):.3f}, "
              f"amortization {float(gaps.amortization.mean()):.3f} nats ({gaps.seconds})",
              flush=True)
    return {k: results[k] for k in checkpoints}


def gap_table(results: dict[int, inference_gaps.InferenceGaps]) -> str:
    """A markdown table of the split (mean ± standard error, median, per model) and the paired
    decomposition of the difference between the first and the last model."""
    rows = ["| model | -ln p(x) (quadrature) | -ELBO (encoder) | inference gap | approximation gap "
            "| amortization gap |", "|---|---|---|---|---|---|"]
    for flow_length, gaps in results.items():
        cells = []
        for values in (-gaps.log_px, -gaps.elbo_encoder, gaps.inference, gaps.approximation,
                       gaps.amortization):
            s = inference_gaps.gap_summary(values)
            cells.append(f"{s['mean']:.2f} ± {s['se']:.2f} (median {s['median']:.2f})")
        rows.append(f"| K = {flow_length} | " + " | ".join(cells) + " |")
    keys = list(results)
    if len(keys) >= 2:
        small, large = results[keys[0]], results[keys[-1]]
        parts = [("-ELBO", -(large.elbo_encoder - small.elbo_encoder)),
                 ("-ln p(x)", -(large.log_px - small.log_px)),
                 ("approximation gap", large.approximation - small.approximation),
                 ("amortization gap", large.amortization - small.amortization)]
        summaries = [(name, inference_gaps.gap_summary(d)) for name, d in parts]
        text = ", ".join(f"{name} {s['mean']:+.2f} ± {s['se']:.2f}" for name, s in summaries)
        rows += ["", f"Paired, K = {keys[-1]} minus K = {keys[0]} (nats, mean ± one standard "
                     f"error over {small.log_px.numel()} images): {text}."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
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
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.what == "train":
        for flow_length in args.flow_lengths:
            _, history = train_model(flow_length, args.epochs or RECIPE["num_epochs"],
                                     time_budget=args.time_budget, paper_order=args.paper_order)
            state = "finished" if history.finished else "stopped (time budget); run again"
            print(f"K={flow_length}: {state}; epochs {len(history.epochs)}, test ELBO "
                  f"{history.test_elbo[-1] if history.test_elbo else float('nan'):.2f}, "
                  f"{history.seconds:.0f} s", flush=True)
    elif args.what == "gaps":
        paths = {K: checkpoint_path(K) for K in args.flow_lengths}
        if args.table_only:
            results = inference_gaps.load_gaps(GAPS_PATH, paths)
            if set(results) != set(paths):
                raise SystemExit(f"{GAPS_PATH.relative_to(ROOT)} is missing or belongs to other "
                                 "checkpoints: run `python scripts/vae2d.py gaps`")
        else:
            images = data.binarized_test_set()[0][: args.images]
            results = compute_gaps(paths, images, dict(inference_gaps.DEFAULT_SETTINGS))
            print(f"wrote {GAPS_PATH.relative_to(ROOT)}")
        print(gap_table(results))
    else:
        result = learning_curves(tuple(args.flow_lengths),
                                 args.epochs or CURVE_DEFAULTS["num_epochs"],
                                 partial_path=RUN_DIR / "vae2d_curves.partial.json")
        if args.merge and CURVES_PATH.exists():
            try:
                result = merge_curves(json.loads(CURVES_PATH.read_text()), result)
            except ValueError as error:
                raise SystemExit(f"--merge: {error}") from None
        save_json(result, CURVES_PATH)
        (RUN_DIR / "vae2d_curves.partial.json").unlink(missing_ok=True)
        print(f"wrote {CURVES_PATH.relative_to(ROOT)}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
