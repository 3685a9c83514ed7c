"""The long runs of Part 4 (Sec. 6.2, Table 2, Fig. 4): a 40-D latent and planar flows of
length K in {0, 2, 10, 20, 40, 80} amortized per data point. The notebook
``notebooks/04_vae_40d_latent.ipynb`` loads what this script writes; it shows the training, the
evaluation and the frozen-decoder fits itself, on small budgets, with the same nfutils blocks.

    python scripts/mnist40.py train --flow-lengths 80 10 0 --threads 1 &   # two processes,
    python scripts/mnist40.py train --flow-lengths 40 20 2 --threads 1 &   # one core each
    python scripts/mnist40.py extend --epochs 100               # a later sitting: 100 more epochs
    python scripts/mnist40.py evaluate --flow-lengths 80 10 0   # -> data/results/mnist40_eval_K*.pt
    python scripts/mnist40.py frozen --flow-lengths 80 0        # -> data/results/mnist40_frozen_decoder_K*.pt
    python scripts/mnist40.py frozen-lr                         # K = 40 and 80 at two learning rates
    python scripts/mnist40.py frozen-budget --flow-lengths 80   # K = 40 and 80 at growing budgets
    python scripts/mnist40.py readme                            # rewrite the README's Part 4 table

Every run resumes: training from the full states under ``outputs/runs/`` (not committed),
``frozen-budget`` keeps the budgets already fitted, and the other commands write one file per K
(run again for the Ks that are missing).

Training (``train_sweep``, ``train_epoch``) runs the recipe of ``TRAIN_SETTINGS`` for a planned
number of epochs per K: the learning rate warms up and then decays to 0 at the last epoch. The
Ks of one process advance in lockstep, one epoch at a time; after every epoch the small float16
checkpoint ``data/checkpoints/mnist40_K{K}.pt`` (weights, history, budget, position in the
schedule) is rewritten. A continuation stage (``extend``) starts from those committed
checkpoints (fresh Adam, short re-warm-up, a new cosine decay), so the budget can grow beyond
one sitting; every stage's record stays in the checkpoint.

Evaluation (``evaluate_checkpoint``) measures every K on the fixed binarized test set, per
image (``EVAL_SETTINGS``): the bound split into reconstruction and KL, and -ln p(x) by
importance sampling with the flow posterior as proposal at S = 200 (all images, the paper's
setting), S = 1000 (the first 2,000, for paired comparisons) and S = 5000 (the first 500).
``frozen_decoder_experiment`` fits per-image posteriors of every K against one frozen decoder,
so that only the bound can differ between the Ks; ``frozen_lr_check`` and
``frozen_budget_check`` refit the two longest flows at other learning rates and budgets.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

# this checkout's nfutils first, also where another checkout is installed (a run from a
# git worktree pinned to a commit while the main checkout is being edited)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfutils import bounds, checkpoints, data, device, local_posteriors, training, vae, vae_training

ROOT = Path(__file__).resolve().parents[1]  # the repository root
CHECKPOINT_DIR = ROOT / "data" / "checkpoints"
RUN_DIR = ROOT / "outputs" / "runs"
RESULTS_DIR = ROOT / "data" / "results"
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
#: A continuation stage (``train_epoch(extend=True)``) starts a fresh Adam from the committed
#: weights: a short re-warm-up, then its own cosine decay from ``EXTEND_LR`` to 0.
REWARMUP_STEPS = 200
EXTEND_LR = 3e-4
MAX_GRAD_NORM = 100.0
#: Epochs of the cosine schedule: the learning rate reaches 0 at the end of the last one.
PLANNED_EPOCHS = 100
#: The per-epoch test -ELBO in the training history uses the first 2,000 images of the fixed
#: binarized test set (the whole set is evaluated by ``evaluate``).
HISTORY_TEST_IMAGES = 2000


#: -ln p(x) of the paper's Table 2 and of the best public reproduction (a data file, read by the
#: notebook too): {"paper": {K: nats}, "reproduction": {K: nats}, "reproduction_note": str}.
REFERENCE_PATH = RESULTS_DIR / "mnist40_reference_nll.json"
_REFERENCE = json.loads(REFERENCE_PATH.read_text())
PAPER_NLL = {int(k): v for k, v in _REFERENCE["paper"].items()}
REPRODUCTION_NLL = {int(k): v for k, v in _REFERENCE["reproduction"].items()}
REPRODUCTION_NOTE = _REFERENCE["reproduction_note"]


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


def extend_state_path(flow_length: int, run_dir: Path = RUN_DIR) -> Path:
    """The training state of a continuation stage (see ``train_epoch(extend=True)``)."""
    return Path(run_dir) / f"mnist40_K{flow_length}.extend.state.pt"


def _stage_info_path(flow_length: int, run_dir: Path) -> Path:
    return Path(run_dir) / f"mnist40_K{flow_length}.extend.stages.pt"


def _stage_record(checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """The completed stages of a committed checkpoint (one, for a checkpoint without a list)."""
    if checkpoint.get("stages"):
        return list(checkpoint["stages"])
    return [{"history": checkpoint.get("history", {}), "budget": checkpoint.get("budget", {}),
             "schedule": checkpoint.get("schedule", {}), "settings": checkpoint.get("settings", {})}]


def combine_stages(stages: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """One history and one budget over consecutive stages (epochs and steps numbered on)."""
    per_step, per_epoch = ("train_elbo",), ("epoch_train_elbo", "test_elbo",
                                            "epoch_max_grad_norm", "epoch_clipped_steps")
    history: dict[str, Any] = {name: [] for name in ("steps", "epochs") + per_step + per_epoch}
    updates = epochs = 0
    seconds = 0.0
    for stage in stages:
        own = stage["history"]
        history["steps"] += [step + updates for step in own.get("steps", [])]
        history["epochs"] += [epoch + epochs for epoch in own.get("epochs", [])]
        for name in per_step + per_epoch:
            history[name] += list(own.get(name, []))
        updates += int(stage["budget"].get("updates", 0))
        epochs += int(stage["budget"].get("epochs", 0))
        seconds += float(stage["budget"].get("seconds", 0.0))
    history["seconds"] = seconds
    last = stages[-1].get("schedule", {})  # finished: the last stage reached its last step
    history["finished"] = bool(last) and last.get("step") == last.get("total_steps")
    budget = {"updates": updates, "epochs": epochs, "seconds": round(seconds, 1),
              "device": stages[-1]["budget"].get("device", "?"), "stages": len(stages)}
    return history, budget


def train_epoch(flow_length: int, target_epochs: int, seed: int = 0, progress: bool = False,
                time_budget: float | None = None, run_dir: Path = RUN_DIR,
                planned_epochs: int = PLANNED_EPOCHS, extend: bool = False,
                peak_lr: float | None = None, warmup_steps: int | None = None,
                train_images: torch.Tensor | None = None,
                test_images: torch.Tensor | None = None) -> training.History:
    """Train (or resume) one stage of the model with K = ``flow_length`` up to ``target_epochs``
    epochs of a warm-up + cosine schedule planned over ``planned_epochs``, then export its
    float16 checkpoint with the history and budget of all stages and the schedule's position.

    Stage one (``extend=False``) starts from a new model. A continuation stage
    (``extend=True``, e.g. in a later sitting when the full training state is gone) starts from
    the committed float16 weights with a fresh Adam, a short re-warm-up (``warmup_steps``) to
    ``peak_lr`` and its own cosine decay to 0; the checkpoint keeps every stage's record.
    Either way the state under ``run_dir`` makes the stage resumable after an interruption.
    """
    dev = device()
    train_images = data.load_mnist("train")[0] if train_images is None else train_images
    if test_images is None:
        test_images = data.binarized_test_set()[0][:HISTORY_TEST_IMAGES]
    batch_size = TRAIN_SETTINGS["batch_size"]
    steps_per_epoch = math.ceil(train_images.shape[0] / batch_size)
    total_steps = planned_epochs * steps_per_epoch
    peak_lr = TRAIN_SETTINGS["lr"] if peak_lr is None else peak_lr
    warmup_steps = (WARMUP_STEPS if not extend else REWARMUP_STEPS) if warmup_steps is None \
        else warmup_steps
    if not extend:
        torch.manual_seed(seed + 1000 * flow_length)
        model = vae.VAE(latent_dim=LATENT_DIM, flow_length=flow_length,
                        standardized_flow=False).to(dev)  # the paper's order z_K = f(mu + sigma eps)
        previous: list[dict[str, Any]] = []
        state = state_path(flow_length, run_dir)
    else:
        state, info = extend_state_path(flow_length, run_dir), _stage_info_path(flow_length, run_dir)
        model, checkpoint = vae_training.load_vae(checkpoint_path(flow_length), dev)
        model.train()
        if state.is_file() and info.is_file():  # resuming this stage: the stages before it
            previous = checkpoints.load_checkpoint(info, required=("previous",))["previous"]
        else:  # a new stage from the committed weights
            previous = _stage_record(checkpoint)
            checkpoints.save_checkpoint({"previous": previous}, info)

    def schedule(step: int) -> float:
        return training.warmup_cosine(step, total_steps, warmup_steps)

    settings = dict(TRAIN_SETTINGS, lr=peak_lr)
    history = vae_training.fit_vae(
        model, train_images, test_images, num_epochs=target_epochs, seed=seed + len(previous),
        checkpoint_path=state, checkpoint_every=steps_per_epoch, time_budget=time_budget,
        progress=progress, **settings, lr_schedule=schedule, max_grad_norm=MAX_GRAD_NORM,
    )
    steps = len(history.epochs) * steps_per_epoch
    record = {
        "history": history.as_dict(),
        "budget": {"updates": steps, "epochs": len(history.epochs),
                   "seconds": round(history.seconds, 1), "device": device_name(dev)},
        "schedule": {"kind": "warmup_cosine", "start": "committed weights" if extend else "new",
                     "peak_lr": peak_lr, "warmup_steps": warmup_steps,
                     "total_steps": total_steps, "planned_epochs": planned_epochs,
                     "step": steps, "lr_multiplier_next": schedule(steps)},
        "settings": dict(settings, max_grad_norm=MAX_GRAD_NORM, init="identity",
                         history_test_images=int(test_images.shape[0])),
    }
    stages = previous + [record]
    combined_history, budget = combine_stages(stages)
    vae_training.save_vae(model, checkpoint_path(flow_length), dtype=torch.float16,
                      history=combined_history, budget=budget, settings=record["settings"],
                      schedule=record["schedule"], stages=stages)
    return history


def train_sweep(flow_lengths=FLOW_LENGTHS, max_epochs: int = PLANNED_EPOCHS,
                hours: float | None = None,
                chunk_minutes: float | None = None, seed: int = 0,
                run_dir: Path = RUN_DIR, extend: bool = False,
                peak_lr: float | None = None) -> None:
    """Advance every K one epoch at a time (round robin) until ``max_epochs``, until the wall
    time ``hours`` would be exceeded by another round, or until a chunk of ``chunk_minutes``
    is used up (then run again to continue: everything resumes from the saved states).
    ``extend``: a continuation stage from the committed checkpoints (``train_epoch``)."""
    start = time.perf_counter()
    limit = None if hours is None else hours * 3600
    chunk = None if chunk_minutes is None else chunk_minutes * 60
    round_seconds = 0.0
    stopped: set[int] = set()
    while True:
        done = {k: _epochs_done(k, run_dir, extend) for k in flow_lengths if k not in stopped}
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
                                      planned_epochs=max_epochs, extend=extend,
                                      peak_lr=peak_lr)
            except training.NonFiniteLossError as error:  # the other Ks go on
                print(f"epoch {target:3d}  K={flow_length:2d}  STOPPED: {error}", flush=True)
                stopped.add(flow_length)
                continue
            print(f"epoch {target:3d}  K={flow_length:2d}  test -ELBO {-history.test_elbo[-1]:7.2f}"
                  f"  epoch {time.perf_counter() - epoch_start:5.1f} s wall"
                  f"  clipped {history.epoch_clipped_steps[-1]:3d} steps"
                  f"  ({history.seconds:6.0f} s of training so far)", flush=True)
        round_seconds = time.perf_counter() - round_start


def _epochs_done(flow_length: int, run_dir: Path, extend: bool = False) -> int:
    path = (extend_state_path if extend else state_path)(flow_length, run_dir)
    if not path.is_file():
        return 0
    state = checkpoints.load_checkpoint(path)
    return len(state["history"]["epochs"])


# --------------------------------------------------------------------------- evaluation

#: What ``evaluate`` measures for every K, on the fixed binarized test set (the same images, the
#: same binarization and the same random-number streams for every K, so differences are paired):
#: the bound split into reconstruction and KL (``elbo_samples`` samples per image, all images);
#: -ln p(x) by importance sampling with S = 200 on all images (the paper's Table 2 setting),
#: S = 1000 on the first ``paired_images`` (the paired comparison of the Ks) and S = 5000 on the
#: first ``subset_images`` (how far S = 200 is from convergence).
EVAL_SETTINGS = dict(test_images=10_000, elbo_samples=10, samples_paper=200,
                     samples_paired=1000, paired_images=2000, samples_subset=5000,
                     subset_images=500)


def eval_path(flow_length: int, results_dir: Path = RESULTS_DIR) -> Path:
    """The per-image values of one K (``save_evaluation`` writes it), one small file each."""
    return Path(results_dir) / f"mnist40_eval_K{flow_length}.pt"


def evaluate_checkpoint(path: Path, test_images: torch.Tensor,
                        settings: dict[str, int] | None = None, seed: int = 0,
                        dev: torch.device | None = None) -> dict[str, Any]:
    """Load one checkpoint and evaluate it on the first ``test_images`` images
    (``bounds.evaluate_per_image``): ``reconstruction`` and ``kl`` (``elbo_samples`` samples),
    ``log_px_paper``, ``log_px_paired`` and ``log_px_subset`` (S = samples_paper on all of them,
    S = samples_paired on the first paired_images, S = samples_subset on the first
    subset_images). The result also holds K, the checkpoint's budget, the settings and the
    evaluation's wall time."""
    settings = dict(EVAL_SETTINGS if settings is None else settings)
    settings["test_images"] = min(settings["test_images"], test_images.shape[0])
    settings["paired_images"] = min(settings["paired_images"], settings["test_images"])
    settings["subset_images"] = min(settings["subset_images"], settings["test_images"])
    dev = dev or device()
    model, state = vae_training.load_vae(path, dev)
    start = time.perf_counter()
    model.eval()
    values = bounds.evaluate_per_image(
        model, test_images[: settings["test_images"]], settings["elbo_samples"],
        {"log_px_paper": (settings["samples_paper"], settings["test_images"]),
         "log_px_paired": (settings["samples_paired"], settings["paired_images"]),
         "log_px_subset": (settings["samples_subset"], settings["subset_images"])}, seed)
    return {"flow_length": int(state["config"]["flow_length"]),
            "budget": state.get("budget", {}), "settings": settings, "values": values,
            "eval_seconds": round(time.perf_counter() - start, 1), "eval_device": device_name(dev)}


def save_evaluation(result: dict[str, Any], path: Path) -> None:
    """Write one K's evaluation atomically (read back with ``load_evaluations``)."""
    checkpoints.save_checkpoint({**result, "values": {k: v.float() for k, v in
                                                       result["values"].items()},
                                 "torch": str(torch.__version__)}, path)


def _read_result(path: Path, command: str, required: tuple[str, ...]) -> dict[str, Any]:
    """A results file of this module (``checkpoints.load_checkpoint``: weights only, checksum
    verified), or FileNotFoundError naming the ``scripts/mnist40.py`` command that writes it."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path} not found: run `python scripts/mnist40.py {command}`")
    result = checkpoints.load_checkpoint(path, required=required)
    result.pop("checksum", None)
    return result


def _read_per_k(path_of, flow_lengths, command: str, required: tuple[str, ...],
                same: dict[str, str]) -> dict[int, dict[str, Any]]:
    """K -> that K's results file (``_read_result``), checked to agree on the keys of ``same``
    (key -> what a difference means, for the error)."""
    parts: dict[int, dict[str, Any]] = {}
    for flow_length in flow_lengths:
        path = path_of(flow_length)
        part = _read_result(path, f"{command} --flow-lengths {flow_length}", required)
        reference = next(iter(parts.values()), part)  # the first K's file
        for key, meaning in same.items():
            if part.get(key) != reference.get(key):
                raise ValueError(f"{path} was made with {meaning} than the other Ks (its {key} "
                                 f"differs); rerun `python scripts/mnist40.py {command}` for "
                                 f"every K")
        parts[flow_length] = part
    return parts


def load_evaluations(flow_lengths=FLOW_LENGTHS, results_dir: Path = RESULTS_DIR
                     ) -> dict[int, dict[str, Any]]:
    """K -> the evaluation written by ``evaluate`` (FileNotFoundError says how to make it)."""
    results = {}
    for flow_length in flow_lengths:
        result = _read_result(eval_path(flow_length, results_dir),
                              f"evaluate --flow-lengths {flow_length}", ("values",))
        result["values"] = {k: v.double() for k, v in result["values"].items()}
        results[flow_length] = result
    return results


def _mean_and_stderr(values: torch.Tensor) -> tuple[float, float]:
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def summary_rows(results: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per K: means and standard errors over images (nats; -ln p(x) and -ELBO positive),
    and the paired S = 1000 differences against K = 0 and against the next shorter K."""
    rows, previous = [], None
    flow_lengths = sorted(results)
    base = results[flow_lengths[0]]["values"]["log_px_paired"]
    for flow_length in flow_lengths:
        values = results[flow_length]["values"]
        elbo = values["reconstruction"] - values["kl"]
        row = {"flow_length": flow_length, "budget": results[flow_length]["budget"],
               "settings": results[flow_length]["settings"]}
        row["neg_elbo"], row["neg_elbo_stderr"] = _mean_and_stderr(-elbo)
        row["reconstruction"] = float(-values["reconstruction"].mean())
        row["kl"] = float(values["kl"].mean())
        row["nll_paper"], row["nll_paper_stderr"] = _mean_and_stderr(-values["log_px_paper"])
        row["nll_paired"], row["nll_paired_stderr"] = _mean_and_stderr(-values["log_px_paired"])
        row["nll_subset"], _ = _mean_and_stderr(-values["log_px_subset"])
        subset = values["log_px_subset"].numel()
        row["nll_subset_paper"] = float(-values["log_px_paper"][:subset].mean())
        row["vs_first"], row["vs_first_stderr"] = _mean_and_stderr(
            base - values["log_px_paired"])  # K minus K = 0 in -ln p(x): negative = better
        if previous is None:
            row["vs_previous"], row["vs_previous_stderr"] = 0.0, 0.0
        else:
            row["vs_previous"], row["vs_previous_stderr"] = _mean_and_stderr(
                previous - values["log_px_paired"])
        previous = values["log_px_paired"]
        rows.append(row)
    return rows


def results_table(rows: list[dict[str, Any]]) -> str:
    """Table 2 as a markdown table: our -ELBO (with its split), -ln p(x) at S = 200 on all test
    images and at S = 1000 on the paired images with the paired differences, next to the
    paper's and the reproduction's -ln p(x) and every model's training budget."""
    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    if not rows:
        return "(no evaluated checkpoints)"
    settings = rows[0]["settings"]
    first = rows[0]["flow_length"]
    lines = [
        f"| K | -ELBO (= rec. + KL) | -ln p(x), S={settings['samples_paper']} |"
        f" -ln p(x), S={settings['samples_paired']} | minus K={first} (paired) |"
        f" minus previous K (paired) | paper -ln p(x) | reproduction -ln p(x) | training budget |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        k, budget = row["flow_length"], row["budget"]
        hours = budget.get("seconds", float("nan")) / 3600
        paired = (lambda name: "—" if row is rows[0] else
                  f"{row[name]:+.2f} ± {row[name + '_stderr']:.2f}")
        lines.append(
            f"| {k} | {row['neg_elbo']:.2f} (= {row['reconstruction']:.2f} + {row['kl']:.2f}) |"
            f" {row['nll_paper']:.2f} ± {row['nll_paper_stderr']:.2f} |"
            f" {row['nll_paired']:.2f} | {paired('vs_first')} | {paired('vs_previous')} |"
            f" {cell(PAPER_NLL.get(k))} | {cell(REPRODUCTION_NLL.get(k))} |"
            f" {budget.get('updates', '?'):,} updates ({budget.get('epochs', '?')} epochs),"
            f" {hours:.2f} h on {budget.get('device', '?')} |"
        )
    lines.append("")
    lines.append(
        f"Nats, means over the fixed binarized test set ± one standard error over images: -ELBO "
        f"({settings['elbo_samples']} samples per image) and S={settings['samples_paper']} on all "
        f"{settings['test_images']:,} images; S={settings['samples_paired']} and the paired "
        f"differences (negative: lower -ln p(x) than the other K) on the first "
        f"{settings['paired_images']:,}. Paper: Table 2. Reproduction: {REPRODUCTION_NOTE}")
    return "\n".join(lines)


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


# --------------------------------------------------------------------------- frozen decoder

#: The frozen-decoder experiment: K = 0's decoder, per-image posteriors for every K fitted with
#: the same budget (``nfutils.local_posteriors``), on the first ``images`` test images.
FROZEN_SETTINGS = dict(images=100, num_steps=4000, num_samples=8, lr=5e-3, warmup_steps=100,
                       elbo_samples=1000, is_samples=5000)


def frozen_path(flow_length: int, results_dir: Path = RESULTS_DIR) -> Path:
    """One K's part of the frozen-decoder experiment (``frozen`` writes it)."""
    return Path(results_dir) / f"mnist40_frozen_decoder_K{flow_length}.pt"


def frozen_decoder_experiment(decoder_checkpoint: Path, test_images: torch.Tensor,
                              flow_lengths=FLOW_LENGTHS, settings: dict[str, Any] | None = None,
                              seed: int = 0, dev: torch.device | None = None,
                              progress: bool = False) -> dict[str, Any]:
    """Fit per-image flow posteriors of every K against one frozen decoder.

    Returns a dict with the settings and, per K, the per-image ELBO (``elbo``, S =
    elbo_samples) and the importance-sampled log p(x) with the fitted q as proposal
    (``log_px``, S = is_samples); float64 (B,) tensors, plus each K's fitting time.
    """
    settings = dict(FROZEN_SETTINGS if settings is None else settings)
    dev = dev or device()
    model, _ = vae_training.load_vae(decoder_checkpoint, dev)
    images = test_images[: settings["images"]].to(dev)
    result = {"settings": settings, "decoder": Path(decoder_checkpoint).name,
              "decoder_sha256": checkpoints.file_sha256(decoder_checkpoint), "elbo": {},
              "log_px": {}, "seconds": {}}
    for flow_length in flow_lengths:
        start = time.perf_counter()
        generator = torch.Generator(device=dev).manual_seed(seed)
        q = local_posteriors.fit_local_posteriors(
            model, images, flow_length, num_steps=settings["num_steps"],
            num_samples=settings["num_samples"], lr=settings["lr"],
            warmup_steps=settings["warmup_steps"], generator=generator,
            average_fraction=settings.get("average_fraction", 0.0))
        result["seconds"][flow_length] = round(time.perf_counter() - start, 1)
        eval_generator = torch.Generator(device=dev).manual_seed(seed + 1)
        result["elbo"][flow_length] = local_posteriors.local_elbo(
            model, q, images, settings["elbo_samples"], generator=eval_generator)
        result["log_px"][flow_length] = local_posteriors.local_log_likelihood(
            model, q, images, settings["is_samples"], generator=eval_generator)
        if progress:
            print(f"frozen decoder, K={flow_length:2d}: -ELBO "
                  f"{-float(result['elbo'][flow_length].mean()):.2f}, -ln p(x) "
                  f"{-float(result['log_px'][flow_length].mean()):.2f} "
                  f"({result['seconds'][flow_length]:.0f} s)", flush=True)
    return result


def save_frozen(result: dict[str, Any], results_dir: Path = RESULTS_DIR) -> None:
    """Write each K of a ``frozen_decoder_experiment`` result to its own file, atomically."""
    for flow_length in result["elbo"]:
        checkpoints.save_checkpoint({"settings": result["settings"], "decoder": result["decoder"],
                                     "decoder_sha256": result["decoder_sha256"],
                                     "elbo": result["elbo"][flow_length].float(),
                                     "log_px": result["log_px"][flow_length].float(),
                                     "seconds": result["seconds"][flow_length]},
                                    frozen_path(flow_length, results_dir))


def load_frozen(flow_lengths=FLOW_LENGTHS, results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    """The files of ``save_frozen``, combined as ``frozen_decoder_experiment`` returns them."""
    parts = _read_per_k(lambda k: frozen_path(k, results_dir), flow_lengths, "frozen",
                        ("settings", "elbo", "log_px"),
                        {"settings": "other settings", "decoder_sha256": "another decoder"})
    first = next(iter(parts.values()))
    return {"settings": first["settings"], "decoder": first["decoder"],
            "decoder_sha256": first.get("decoder_sha256"),
            "elbo": {k: part["elbo"].double() for k, part in parts.items()},
            "log_px": {k: part["log_px"].double() for k, part in parts.items()},
            "seconds": {k: part["seconds"] for k, part in parts.items()}}


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (what ``torch.load(weights_only=True)`` reads back)."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {name: _plain(item) for name, item in value.items()}
    return value


#: The learning-rate check of the frozen-decoder experiment: the two longest flows on the first
#: ``images`` test images, fitted with each of ``lrs`` (everything else as ``FROZEN_SETTINGS``).
#: A K = 80 flow contains every K = 40 flow (40 identity layers), so its best bound is at least
#: as tight; which of the two ends ahead after a fixed number of steps is a question about the
#: optimizer, and this check asks it at two learning rates.
FROZEN_LR_CHECK = dict(flow_lengths=(40, 80), images=25, lrs=(2e-3, 5e-3))
FROZEN_LR_PATH = RESULTS_DIR / "mnist40_frozen_decoder_lr_check.pt"


def frozen_lr_check(decoder_checkpoint: Path, test_images: torch.Tensor,
                    check: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
                    seed: int = 0, dev: torch.device | None = None,
                    progress: bool = False) -> dict[str, Any]:
    """Run ``frozen_decoder_experiment`` for ``check["flow_lengths"]`` on the first
    ``check["images"]`` images once per learning rate in ``check["lrs"]``.

    Returns a dict with ``check``, the base ``settings``, the ``decoder`` (name and SHA-256)
    and ``elbo``:
    {learning rate: {K: per-image ELBO (images,) float64}}.
    """
    check = dict(FROZEN_LR_CHECK if check is None else check)
    base = dict(FROZEN_SETTINGS if settings is None else settings)
    result: dict[str, Any] = {"check": check, "settings": base, "elbo": {}}
    for lr in check["lrs"]:
        run = frozen_decoder_experiment(decoder_checkpoint, test_images, check["flow_lengths"],
                                        dict(base, images=check["images"], lr=lr), seed=seed,
                                        dev=dev, progress=progress)
        result["elbo"][float(lr)] = {k: run["elbo"][k] for k in check["flow_lengths"]}
        result["decoder"], result["decoder_sha256"] = run["decoder"], run["decoder_sha256"]
    return result


def save_frozen_lr_check(result: dict[str, Any], path: Path = FROZEN_LR_PATH) -> None:
    """Write a ``frozen_lr_check`` result atomically (float32 per-image values)."""
    checkpoints.save_checkpoint(dict(result, check=_plain(result["check"]),
                                     elbo={lr: {k: values.float() for k, values in per_k.items()}
                                           for lr, per_k in result["elbo"].items()}), path)


def load_frozen_lr_check(path: Path = FROZEN_LR_PATH) -> dict[str, Any]:
    """The file of ``save_frozen_lr_check``, per-image values as float64."""
    result = _read_result(path, "frozen-lr", ("check", "elbo"))
    result["elbo"] = {lr: {k: values.double() for k, values in per_k.items()}
                      for lr, per_k in result["elbo"].items()}
    return result


#: The budget check of the frozen-decoder experiment: the two longest flows on the first
#: ``images`` test images, fitted at growing optimization budgets (each a change of
#: ``FROZEN_SETTINGS``): the main setting; the mean of the last half's iterates instead of the
#: last iterate; four times the samples per step; four times the steps, twice. If K = 80 is behind
#: K = 40 only because it is fitted less well, the gap between them must shrink as the fits
#: improve.
FROZEN_BUDGET_CHECK = dict(flow_lengths=(40, 80), images=25, budgets=(
    dict(num_steps=4000, num_samples=8, average_fraction=0.0),
    dict(num_steps=4000, num_samples=8, average_fraction=0.5),
    dict(num_steps=4000, num_samples=32, average_fraction=0.5),
    dict(num_steps=16000, num_samples=32, average_fraction=0.5),
    dict(num_steps=64000, num_samples=32, average_fraction=0.5),
))


def frozen_budget_path(flow_length: int, results_dir: Path = RESULTS_DIR) -> Path:
    """One K's part of the budget check (``frozen-budget`` writes it)."""
    return Path(results_dir) / f"mnist40_frozen_decoder_budget_K{flow_length}.pt"


def frozen_budget_check(decoder_checkpoint: Path, test_images: torch.Tensor,
                        flow_lengths=None, check: dict[str, Any] | None = None,
                        settings: dict[str, Any] | None = None, seed: int = 0,
                        dev: torch.device | None = None, progress: bool = False,
                        previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``frozen_decoder_experiment`` on the first ``check["images"]`` images once per
    budget in ``check["budgets"]``, for ``flow_lengths`` (default ``check["flow_lengths"]``).

    ``previous``: an earlier result (``load_frozen_budget_check``) whose budgets begin the same
    way, with the same images, settings and decoder; its budgets are kept, not refitted, so a
    check that gains a larger budget only fits that one.

    Returns a dict with ``check``, the base ``settings``, the ``decoder`` (name and SHA-256),
    ``elbo``: {K: [per-image ELBO (images,) float64, one per budget]} and ``seconds``:
    {K: [fitting seconds, one per budget]}.
    """
    check = dict(FROZEN_BUDGET_CHECK if check is None else check)
    base = dict(FROZEN_SETTINGS if settings is None else settings)
    flow_lengths = check["flow_lengths"] if flow_lengths is None else flow_lengths
    result: dict[str, Any] = {"check": check, "settings": base,
                              "decoder": Path(decoder_checkpoint).name,
                              "decoder_sha256": checkpoints.file_sha256(decoder_checkpoint),
                              "elbo": {k: [] for k in flow_lengths},
                              "seconds": {k: [] for k in flow_lengths}}
    reusable = 0
    if (previous is not None and previous["settings"] == _plain(base)
            and previous["decoder_sha256"] == result["decoder_sha256"]
            and previous["check"]["images"] == check["images"]
            and all(k in previous["elbo"] for k in flow_lengths)):
        for done, budget in zip(previous["check"]["budgets"], check["budgets"]):
            if done != _plain(dict(budget)):
                break
            reusable += 1
    for index, budget in enumerate(check["budgets"]):
        if index < reusable:
            for k in flow_lengths:
                result["elbo"][k].append(previous["elbo"][k][index])
                result["seconds"][k].append(previous["seconds"][k][index])
            continue
        run = frozen_decoder_experiment(decoder_checkpoint, test_images, flow_lengths,
                                        dict(base, images=check["images"], **budget), seed=seed,
                                        dev=dev, progress=progress)
        for k in flow_lengths:
            result["elbo"][k].append(run["elbo"][k])
            result["seconds"][k].append(run["seconds"][k])
    return result


def save_frozen_budget_check(result: dict[str, Any], results_dir: Path = RESULTS_DIR) -> None:
    """Write each K of a ``frozen_budget_check`` result to its own file, atomically."""
    for flow_length, values in result["elbo"].items():
        checkpoints.save_checkpoint({"check": _plain(result["check"]),
                                     "settings": result["settings"], "decoder": result["decoder"],
                                     "decoder_sha256": result["decoder_sha256"],
                                     "elbo": [v.float() for v in values],
                                     "seconds": list(result["seconds"][flow_length])},
                                    frozen_budget_path(flow_length, results_dir))


def load_frozen_budget_check(flow_lengths=FROZEN_BUDGET_CHECK["flow_lengths"],
                             results_dir: Path = RESULTS_DIR) -> dict[str, Any]:
    """The files of ``save_frozen_budget_check``, combined; per-image values as float64."""
    parts = _read_per_k(lambda k: frozen_budget_path(k, results_dir), flow_lengths,
                        "frozen-budget", ("check", "settings", "elbo"),
                        {"check": "another list of budgets", "settings": "other settings",
                         "decoder_sha256": "another decoder"})
    first = next(iter(parts.values()))
    return {"check": first["check"], "settings": first["settings"], "decoder": first["decoder"],
            "decoder_sha256": first["decoder_sha256"],
            "elbo": {k: [v.double() for v in part["elbo"]] for k, part in parts.items()},
            "seconds": {k: part["seconds"] for k, part in parts.items()}}


# --------------------------------------------------------------------------- command line

def main() -> None:
    parser = argparse.ArgumentParser(
        description="Part 4's long runs: 40-D VAE with planar flows, K = 0..80",
        epilog="Every command resumes where an interrupted run stopped.")
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
