"""Part 4: the paper's MNIST experiment (Sec. 6.2, Table 2, Fig. 4) — 40-D latent, planar flows of
length K in {0, 2, 10, 20, 40, 80} amortized per data point.

    python scripts/mnist40.py train --hours 1.2           # round robin over K, epoch by epoch
    python scripts/mnist40.py train --epochs 50 --chunk-minutes 9   # resumable < 10 min pieces
    python scripts/mnist40.py evaluate                     # -> data/results/mnist40.json
    python scripts/mnist40.py readme                       # rewrite the README's Part 4 table

``train`` keeps each K's full training state (model, optimizer, RNG, history) under
``outputs/runs/`` (not committed) and resumes from it, so a long budget can be spread over
many runs (each under 10 minutes with ``--chunk-minutes``) on a borrowed GPU or the CPU. The
Ks advance in lockstep, one epoch at a time, so at any stop every K has had the same number
of updates; after every round the small float16 checkpoints ``data/checkpoints/mnist40_K{K}.pt``
(weights only, with history and budget: updates, epochs, wall time, device) are rewritten.

``evaluate`` measures, for every checkpoint, the test -ELBO (Eq. 20, one sample per x, the whole
fixed binarized test set) and -ln p(x) by importance sampling with the flow posterior as
proposal: S = 200 (the paper's setting) on the whole test set and S = 5000 on a subset, with
the paired difference S=200 - S=5000 on that subset. The notebook
``notebooks/04_vae_40d_latent.ipynb`` runs the same ``evaluate_checkpoint`` (with a small S in
quick mode) and draws its table and figure from that evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from pathlib import Path
from typing import Any

import torch

from nfutils import data, device, training, vae

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = ROOT / "data" / "checkpoints"
RUN_DIR = ROOT / "outputs" / "runs"
RESULTS_PATH = ROOT / "data" / "results" / "mnist40.json"
README_PATH = ROOT / "README.md"

FLOW_LENGTHS = (0, 2, 10, 20, 40, 80)
LATENT_DIM = 40
#: The training recipe (each choice tried in short runs first: ``scripts/mnist40_recipe.py``;
#: the numbers are in the notebook's "training recipe" section and the README).
#: * The paper's batch size (100), 400-unit layers and order z_K = f(mu + sigma eps).
#: * Adam at a peak learning rate of 1e-3 instead of the paper's RMSprop with momentum.
#: * A linear warm-up over the first 500 steps, then a cosine decay to 0 at the last step of
#:   the planned epochs (``training.warmup_cosine``): at a constant 1e-3 the test -ELBO of
#:   the flows stalls above K = 0's, and the decay is what lets the longer flows pull ahead.
#: * beta = 1 throughout (no annealing of log p(x, z)): the paper's beta_t = min(1, 0.01 + t/10^4)
#:   blew up at K = 80 with lr 1e-3 (``scripts/mnist40_annealing.py``); the learning-rate
#:   warm-up is the warm-up here.
#: * Flow layers start at the identity (``vae.identity_planar_params``), so q_K = q_0 at step 0
#:   (with u = 0 each layer is a contraction, and K = 80 of them shrink q_0 by ~19 nats).
#: * Gradient-norm clipping at 100. Short runs at K = 80 (1,200 steps, the warm-up above) with
#:   an identity start: without clipping one run blew up (gradient norms up to 3e7, w.u_hat
#:   driven to App. A.1's limit -1, test -ELBO 525 nats); with clipping at 100 it trained
#:   (130.3 nats; 46 of 1,200 steps clipped, the largest norm 784). The checkpoints' histories
#:   count the clipped steps of every epoch (``epoch_clipped_steps``).
TRAIN_SETTINGS = dict(batch_size=100, num_samples=1, lr=1e-3, optimizer="adam", anneal=False)
WARMUP_STEPS = 500
MAX_GRAD_NORM = 100.0
#: Epochs of the cosine schedule: the learning rate reaches 0 at the end of the last one.
PLANNED_EPOCHS = 100
#: The per-epoch test -ELBO in the training history uses the first 2,000 images of the fixed
#: binarized test set (the whole set is evaluated by ``evaluate``).
HISTORY_TEST_IMAGES = 2000
STEPS_PER_EPOCH = 600


#: -ln p(x) on the binarized MNIST test set, Table 2 of the paper (K = 2 is not in the table).
PAPER_NLL = {0: 89.9, 10: 87.5, 20: 86.5, 40: 85.7, 80: 85.1}
#: The best public reproduction we know of (same K values).
REPRODUCTION_NLL = {0: 92.58, 10: 88.95, 20: 88.09, 40: 87.45, 80: 87.09}


def checkpoint_path(flow_length: int) -> Path:
    """The committed small checkpoint of the 40-D model with K = ``flow_length``."""
    return CHECKPOINT_DIR / f"mnist40_K{flow_length}.pt"


def state_path(flow_length: int, run_dir: Path = RUN_DIR) -> Path:
    """The full training state (model, optimizer, RNG), resumed from; not committed."""
    return Path(run_dir) / f"mnist40_K{flow_length}.state.pt"


def device_name(dev: torch.device) -> str:
    """'cuda (NVIDIA H100 ...)' or 'cpu (x86_64, N threads)'."""
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def train_epoch(flow_length: int, target_epochs: int, seed: int = 0, progress: bool = False,
                time_budget: float | None = None, run_dir: Path = RUN_DIR,
                planned_epochs: int = PLANNED_EPOCHS) -> training.VAEHistory:
    """Train (or resume) the model with K = ``flow_length`` up to ``target_epochs`` epochs of a
    schedule planned over ``planned_epochs``, then export its float16 checkpoint with history,
    budget and the position in the schedule."""
    dev = device()
    torch.manual_seed(seed + 1000 * flow_length)
    model = vae.VAE(latent_dim=LATENT_DIM, flow_length=flow_length,
                    standardized_flow=False).to(dev)  # the paper's order z_K = f(mu + sigma eps)
    train_images, _ = data.load_mnist("train")
    test_images = data.binarized_test_set()[0][:HISTORY_TEST_IMAGES]
    total_steps = planned_epochs * STEPS_PER_EPOCH

    def schedule(step: int) -> float:
        return training.warmup_cosine(step, total_steps, WARMUP_STEPS)

    history = training.fit_vae(
        model, train_images, test_images, num_epochs=target_epochs, seed=seed,
        checkpoint_path=state_path(flow_length, run_dir), checkpoint_every=STEPS_PER_EPOCH,
        time_budget=time_budget, progress=progress, **TRAIN_SETTINGS,
        lr_schedule=schedule, max_grad_norm=MAX_GRAD_NORM,
    )
    steps = len(history.epochs) * STEPS_PER_EPOCH
    budget = {"updates": steps, "epochs": len(history.epochs),
              "seconds": round(history.seconds, 1), "device": device_name(dev)}
    settings = dict(TRAIN_SETTINGS, max_grad_norm=MAX_GRAD_NORM, init="identity",
                    history_test_images=HISTORY_TEST_IMAGES)
    schedule_state = {"kind": "warmup_cosine", "warmup_steps": WARMUP_STEPS,
                      "total_steps": total_steps, "planned_epochs": planned_epochs,
                      "step": steps, "lr_multiplier_next": schedule(steps)}
    training.save_vae(model, checkpoint_path(flow_length), dtype=torch.float16,
                      history=history.as_dict(), budget=budget, settings=settings,
                      schedule=schedule_state)
    return history


def train_sweep(flow_lengths=FLOW_LENGTHS, max_epochs: int = PLANNED_EPOCHS,
                hours: float | None = None,
                chunk_minutes: float | None = None, seed: int = 0,
                run_dir: Path = RUN_DIR) -> None:
    """Advance every K one epoch at a time (round robin) until ``max_epochs``, until the wall
    time ``hours`` would be exceeded by another round, or until a chunk of ``chunk_minutes``
    is used up (then run again to continue: everything resumes from the saved states)."""
    start = time.perf_counter()
    limit = None if hours is None else hours * 3600
    chunk = None if chunk_minutes is None else chunk_minutes * 60
    round_seconds = 0.0
    stopped: set[int] = set()
    while True:
        done = {k: _epochs_done(k, run_dir) for k in flow_lengths if k not in stopped}
        if not done:
            print("every K stopped on a non-finite loss", flush=True)
            return
        target = min(done.values()) + 1
        if target > max_epochs:
            print(f"all K trained for {max_epochs} epochs", flush=True)
            return
        elapsed = time.perf_counter() - start
        for budget_seconds in (limit, chunk):
            if budget_seconds is not None and elapsed + round_seconds > budget_seconds:
                print(f"stopping before epoch {target}: another round (~{round_seconds:.0f} s) "
                      f"would pass the budget ({elapsed:.0f} s used)", flush=True)
                return
        round_start = time.perf_counter()
        for flow_length in flow_lengths:
            if flow_length in stopped or done[flow_length] >= target:
                continue
            epoch_start = time.perf_counter()
            try:
                history = train_epoch(flow_length, target, seed=seed, run_dir=run_dir,
                                      planned_epochs=max_epochs)
            except training.NonFiniteLossError as error:  # the other Ks go on
                print(f"epoch {target:3d}  K={flow_length:2d}  STOPPED: {error}", flush=True)
                stopped.add(flow_length)
                continue
            print(f"epoch {target:3d}  K={flow_length:2d}  test -ELBO {-history.test_elbo[-1]:7.2f}"
                  f"  epoch {time.perf_counter() - epoch_start:5.1f} s wall"
                  f"  clipped {history.epoch_clipped_steps[-1]:3d} steps"
                  f"  ({history.seconds:6.0f} s of training so far)", flush=True)
        round_seconds = time.perf_counter() - round_start


def _epochs_done(flow_length: int, run_dir: Path) -> int:
    path = state_path(flow_length, run_dir)
    if not path.is_file():
        return 0
    state = training.load_checkpoint(path)
    return len(state["history"]["epochs"])


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_checkpoint(path: Path, test_images: torch.Tensor, samples_full: int = 200,
                        samples_subset: int = 5000, subset: int = 1000, seed: int = 0,
                        dev: torch.device | None = None) -> dict[str, Any]:
    """Evaluate one checkpoint on the fixed binarized test set.

    Returns a dict with K, the budget stored in the checkpoint, and (nats, means over images):
    ``neg_elbo`` (whole set, 1 sample per x), ``nll_full`` (-ln p(x), S = ``samples_full``,
    whole set), ``nll_subset_low`` and ``nll_subset_high`` (S = ``samples_full`` and
    ``samples_subset`` on the first ``subset`` images, same images), ``posterior_gap``
    (their paired difference), and the evaluation's wall time.
    """
    dev = dev or device()
    model, state = training.load_vae(path, dev)
    start = time.perf_counter()
    generator = torch.Generator(device=dev).manual_seed(seed)
    neg_elbo = -training.evaluate_elbo(model, test_images, num_samples=1, seed=seed)
    log_px = vae.log_likelihood(model, test_images, num_samples=samples_full,
                                generator=generator)
    images_subset = test_images[:subset]
    log_px_subset_high = vae.log_likelihood(model, images_subset, num_samples=samples_subset,
                                            generator=generator)
    log_px_subset_low = log_px[:subset]
    gap = (log_px_subset_high - log_px_subset_low)
    return {
        "flow_length": int(state["config"]["flow_length"]),
        "budget": state.get("budget", {}),
        "test_images": int(test_images.shape[0]),
        "neg_elbo": float(neg_elbo),
        "samples_full": samples_full,
        "nll_full": float(-log_px.mean()),
        "nll_full_stderr": float(log_px.std() / math.sqrt(log_px.numel())),
        "subset": int(images_subset.shape[0]),
        "samples_subset": samples_subset,
        "nll_subset_low": float(-log_px_subset_low.mean()),
        "nll_subset_high": float(-log_px_subset_high.mean()),
        "posterior_gap": float(gap.mean()),
        "posterior_gap_stderr": float(gap.std() / math.sqrt(gap.numel())) if gap.numel() > 1 else 0.0,
        "eval_seconds": round(time.perf_counter() - start, 1),
        "eval_device": device_name(dev),
    }


def evaluate_all(flow_lengths=FLOW_LENGTHS, samples_full: int = 200, samples_subset: int = 5000,
                 subset: int = 1000, test_size: int | None = None,
                 progress: bool = True) -> list[dict[str, Any]]:
    """``evaluate_checkpoint`` for every K whose checkpoint exists (in order of K)."""
    test_images = data.binarized_test_set()[0]
    if test_size is not None:
        test_images = test_images[:test_size]
    rows = []
    for flow_length in flow_lengths:
        path = checkpoint_path(flow_length)
        if not path.is_file():
            print(f"K={flow_length}: no checkpoint at {path.relative_to(ROOT)}; skipped")
            continue
        row = evaluate_checkpoint(path, test_images, samples_full, samples_subset,
                                  min(subset, test_images.shape[0]))
        rows.append(row)
        if progress:
            print(f"K={flow_length:2d}: -ELBO {row['neg_elbo']:.2f}, -ln p(x) S={samples_full} "
                  f"{row['nll_full']:.2f}, S={samples_subset} on {row['subset']} images "
                  f"{row['nll_subset_high']:.2f} (gap {row['posterior_gap']:.2f}); "
                  f"{row['eval_seconds']:.0f} s", flush=True)
    return rows


def results_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of evaluated rows next to the paper's and the reproduction's values."""
    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    if not rows:
        return "(no evaluated checkpoints)"
    samples_full, samples_subset = rows[0]["samples_full"], rows[0]["samples_subset"]
    subset, test_count = rows[0]["subset"], rows[0]["test_images"]
    lines = [
        f"| K | test -ELBO | -ln p(x), S={samples_full} | -ln p(x), S={samples_subset}"
        f" ({subset} images) | S={samples_full} − S={samples_subset} (same images) | paper"
        " -ln p(x) | reproduction -ln p(x) | training budget |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        k = row["flow_length"]
        budget = row["budget"]
        hours = budget.get("seconds", float("nan")) / 3600
        lines.append(
            f"| {k} | {row['neg_elbo']:.2f} | {row['nll_full']:.2f} ± {row['nll_full_stderr']:.2f}"
            f" | {row['nll_subset_high']:.2f} | {row['posterior_gap']:.2f} |"
            f" {cell(PAPER_NLL.get(k))} | {cell(REPRODUCTION_NLL.get(k))} |"
            f" {budget.get('updates', '?'):,} updates ({budget.get('epochs', '?')} epochs),"
            f" {hours:.2f} h on {budget.get('device', '?')} |"
        )
    lines.append("")
    lines.append(f"All numbers in nats on the {test_count:,} images of the fixed binarized test "
                 "set (± one standard error over images); -ELBO with one sample per image.")
    return "\n".join(lines)


def save_results(rows: list[dict[str, Any]], path: Path = RESULTS_PATH) -> None:
    """Write the evaluation as JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps({"rows": rows, "torch": torch.__version__}, indent=1))
    tmp.replace(path)


def load_results(path: Path = RESULTS_PATH) -> list[dict[str, Any]]:
    """The rows written by ``save_results`` (FileNotFoundError says how to make them)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python scripts/mnist40.py evaluate`")
    return json.loads(path.read_text())["rows"]


README_BEGIN = "<!-- mnist40-table:begin (generated by `python scripts/mnist40.py readme`) -->"
README_END = "<!-- mnist40-table:end -->"


def update_readme(rows: list[dict[str, Any]], path: Path = README_PATH) -> None:
    """Replace the README's generated Part 4 table (between the two markers) with ``rows``."""
    text = path.read_text()
    block = f"{README_BEGIN}\n{results_table(rows)}\n{README_END}"
    pattern = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path} has no Part 4 table markers ({README_BEGIN} ... {README_END})")
    path.write_text(pattern.sub(lambda _: block, text))


def main() -> None:
    parser = argparse.ArgumentParser(description="Part 4: 40-D VAE with planar flows, K = 0..80")
    parser.add_argument("what", choices=["train", "evaluate", "readme"])
    parser.add_argument("--flow-lengths", type=int, nargs="+", default=list(FLOW_LENGTHS))
    parser.add_argument("--epochs", type=int, default=PLANNED_EPOCHS,
                        help="train: epochs per K; the learning rate decays to 0 at the last")
    parser.add_argument("--hours", type=float, default=None, help="train: total wall-time budget")
    parser.add_argument("--chunk-minutes", type=float, default=None,
                        help="train: stop after this many minutes (resume by running again)")
    parser.add_argument("--samples", type=int, nargs=2, default=[200, 5000],
                        help="evaluate: S on the whole test set and S on the subset")
    parser.add_argument("--subset", type=int, default=1000, help="evaluate: images for large S")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.what == "train":
        train_sweep(args.flow_lengths, args.epochs, args.hours, args.chunk_minutes)
    elif args.what == "evaluate":
        rows = evaluate_all(args.flow_lengths, *args.samples, subset=args.subset)
        save_results(rows)
        print(results_table(rows))
        print(f"wrote {RESULTS_PATH.relative_to(ROOT)}")
    else:
        update_readme(load_results())
        print(f"updated the Part 4 table in {README_PATH.relative_to(ROOT)}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
