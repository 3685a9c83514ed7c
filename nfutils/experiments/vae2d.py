"""Part 3's experiments: the 2-D-latent VAEs (K = 0 and K = 16), the learning curves of
figure (d) and the split of the inference gap into approximation and amortization.

The notebook ``notebooks/03_vae_2d_latent.ipynb`` and the command line ``scripts/vae2d.py``
both call the functions here, so a model retrained in the notebook and one trained from the
command line come from the same code:

    python scripts/vae2d.py train            # train (or resume) vae2d_K0 and vae2d_K16
    python scripts/vae2d.py curves           # learning curves -> data/vae2d_learning_curves.json
    python scripts/vae2d.py gaps             # approximation / amortization gaps -> data/results/

``train_model`` keeps the full training state (model, optimizer, RNG, history) under
``outputs/runs/`` (not committed) and resumes from it; when a model has finished it writes the
small float16 checkpoint ``data/checkpoints/vae2d_K{K}.pt`` that the notebook loads, with the
history and the budget (steps, epochs, wall time, device, threads) inside.

``gap_split`` splits each model's inference gap (``nfutils.inference_gaps``) on the first 500
test images; ``save_gaps`` writes the per-image numbers with the SHA-256 of the checkpoint
they belong to, so that ``load_gaps`` never pairs results with another model.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from nfutils import data, device, inference_gaps, training, vae, vae_training
from nfutils.checkpoints import file_sha256

ROOT = Path(__file__).resolve().parents[2]  # the repository root
CHECKPOINT_DIR = ROOT / "data" / "checkpoints"
RUN_DIR = ROOT / "outputs" / "runs"
CURVES_PATH = ROOT / "data" / "vae2d_learning_curves.json"
GAPS_PATH = ROOT / "data" / "results" / "vae2d_gaps.json"

#: The full-run budget of the two models of Part 3 (the notebook's parameters cell repeats it),
#: trained with Part 4's recipe (``nfutils.experiments.mnist40``): Adam with a linear
#: learning-rate warm-up over ``WARMUP_STEPS`` steps, then a cosine decay to 0 at the last step
#: of ``num_epochs`` (``training.warmup_cosine``); beta = 1 throughout (the warm-up of the
#: learning rate replaces the annealing of log p(x, z)); the flow layers start at the identity
#: (``vae.VAE``'s initialization, q_K = q_0 at step 0); gradient norms clipped at
#: ``MAX_GRAD_NORM``.
TRAIN_DEFAULTS = dict(num_epochs=30, batch_size=100, num_samples=1, lr=1e-3, anneal=False)
WARMUP_STEPS = 500
MAX_GRAD_NORM = 100.0
#: The gap split of ``gaps``: test images, and the budget of ``inference_gaps.inference_gaps``.
GAP_IMAGES = 500
GAP_SETTINGS = dict(inference_gaps.DEFAULT_SETTINGS)
#: The learning-curve budget of figure (d): a 10,000-image training subset, 100 steps an epoch.
CURVE_DEFAULTS = dict(num_epochs=10, train_size=10_000, test_size=2_000, batch_size=100,
                      lr=1e-3, flow_lengths=(0, 16), samples=(1, 10), seeds=(0, 1, 2))


def checkpoint_path(flow_length: int) -> Path:
    """The committed small checkpoint of the 2-D model with K = ``flow_length``."""
    return CHECKPOINT_DIR / f"vae2d_K{flow_length}.pt"


def _budget(history: training.History, dev: torch.device) -> dict[str, Any]:
    return {"steps": history.steps[-1] if history.steps else 0, "epochs": len(history.epochs),
            "seconds": round(history.seconds, 1), "device": str(dev),
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def train_model(flow_length: int, num_epochs: int = TRAIN_DEFAULTS["num_epochs"],
                time_budget: float | None = None, seed: int = 0, progress: bool = True,
                run_dir: Path = RUN_DIR, out_path: Path | None = None,
                standardized_flow: bool = True,
                **fit_kwargs: Any) -> tuple[vae.VAE, training.History]:
    """Train (or resume) the 2-D VAE with K = ``flow_length`` on binarized MNIST with the recipe
    of ``TRAIN_DEFAULTS`` (the learning rate reaches 0 at the end of ``num_epochs``).

    Returns the model and its history; when the run has finished, also writes the float16
    checkpoint (``out_path``, default ``checkpoint_path(flow_length)``; with
    ``standardized_flow=False``, the paper's order of flow and affine map, the file name ends
    in ``_paper_order``).
    """
    dev = device()
    torch.manual_seed(seed)
    model = vae.VAE(latent_dim=2, flow_length=flow_length,
                    standardized_flow=standardized_flow).to(dev)
    suffix = "" if standardized_flow or flow_length == 0 else "_paper_order"
    if out_path is None and suffix:
        out_path = CHECKPOINT_DIR / f"vae2d_K{flow_length}{suffix}.pt"
    train_images, _ = data.load_mnist("train")
    test_images, _ = data.binarized_test_set()
    settings = {**TRAIN_DEFAULTS, "num_epochs": num_epochs, **fit_kwargs}
    total_steps = settings["num_epochs"] * math.ceil(train_images.shape[0] / settings["batch_size"])
    warmup_steps = min(WARMUP_STEPS, total_steps - 1)

    def schedule(step: int) -> float:
        return training.warmup_cosine(step, total_steps, warmup_steps)

    history = vae_training.fit_vae(
        model, train_images, test_images, **settings, seed=seed, progress=progress,
        checkpoint_path=Path(run_dir) / f"vae2d_K{flow_length}{suffix}_cosine.state.pt",
        checkpoint_every=1000, time_budget=time_budget, lr_schedule=schedule,
        max_grad_norm=MAX_GRAD_NORM,
    )
    if history.finished:
        recorded = dict(settings, schedule="warmup_cosine", warmup_steps=warmup_steps,
                        total_steps=total_steps, max_grad_norm=MAX_GRAD_NORM, init="identity")
        vae_training.save_vae(model, out_path or checkpoint_path(flow_length), dtype=torch.float16,
                          history=history.as_dict(), budget=_budget(history, dev),
                          settings=recorded)
    return model, history


def describe_training(checkpoint: dict[str, Any]) -> str:
    """One line on how a checkpoint's model was trained (from its stored settings)."""
    settings = checkpoint.get("settings", {})
    if settings.get("schedule") == "warmup_cosine":
        return (f"Adam, learning rate warmed up over {settings['warmup_steps']} steps to "
                f"{settings['lr']:g}, then cosine-decayed to 0 at step {settings['total_steps']:,}; "
                f"beta = 1; flow layers started at the identity; gradient norms clipped at "
                f"{settings['max_grad_norm']:g}")
    beta = "the annealed beta_t" if settings.get("anneal") else "beta = 1"
    return f"Adam at a constant learning rate {settings.get('lr', float('nan')):g}; {beta}"


def gap_split(models: dict[int, vae.VAE], images: torch.Tensor,
              settings: dict[str, Any] | None = None, seed: int = 0,
              progress: bool = False) -> dict[int, inference_gaps.InferenceGaps]:
    """``inference_gaps.inference_gaps`` of every model on the same images (paired)."""
    results = {}
    for flow_length, model in models.items():
        results[flow_length] = inference_gaps.inference_gaps(
            model, images, settings or GAP_SETTINGS, seed=seed, progress=progress)
        if progress:
            gaps = results[flow_length]
            print(f"K={flow_length}: approximation {float(gaps.approximation.mean()):.3f}, "
                  f"amortization {float(gaps.amortization.mean()):.3f} nats "
                  f"({gaps.seconds})", flush=True)
    return results


def save_gaps(results: dict[int, inference_gaps.InferenceGaps], checkpoints: dict[int, Path],
              path: Path = GAPS_PATH) -> None:
    """Write the per-image gaps of every model with its checkpoint's SHA-256 (atomically)."""
    payload = {"models": {str(k): {"checkpoint": Path(checkpoints[k]).name,
                                   "sha256": file_sha256(checkpoints[k]),
                                   **gaps.as_dict()} for k, gaps in results.items()},
               "device": str(device()), "threads": torch.get_num_threads()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def gap_table(results: dict[int, inference_gaps.InferenceGaps]) -> str:
    """A markdown table of the split (mean, median, standard error per model) and the paired
    decomposition of the difference in the test bound between the first and the last model."""
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
        text = ", ".join(f"{name} {inference_gaps.gap_summary(d)['mean']:+.2f} ± "
                         f"{inference_gaps.gap_summary(d)['se']:.2f}" for name, d in parts)
        rows.append("")
        rows.append(f"Paired, K = {keys[-1]} minus K = {keys[0]} (nats, mean ± one standard error over "
                    f"{small.log_px.numel()} images): {text}.")
    return "\n".join(rows)


def load_gaps(checkpoints: dict[int, Path], path: Path = GAPS_PATH
              ) -> dict[int, inference_gaps.InferenceGaps] | None:
    """The saved gaps if they exist and belong to exactly these checkpoints, else None."""
    if not path.exists():
        return None
    saved = json.loads(path.read_text())["models"]
    results = {}
    for flow_length, checkpoint in checkpoints.items():
        entry = saved.get(str(flow_length))
        if entry is None or entry["sha256"] != file_sha256(checkpoint):
            return None
        results[flow_length] = inference_gaps.InferenceGaps.from_dict(entry)
    return results


def learning_curves(num_epochs: int = CURVE_DEFAULTS["num_epochs"],
                    train_size: int = CURVE_DEFAULTS["train_size"],
                    test_size: int = CURVE_DEFAULTS["test_size"],
                    batch_size: int = CURVE_DEFAULTS["batch_size"],
                    lr: float = CURVE_DEFAULTS["lr"],
                    flow_lengths=CURVE_DEFAULTS["flow_lengths"],
                    samples=CURVE_DEFAULTS["samples"], seeds=CURVE_DEFAULTS["seeds"],
                    progress: bool = True) -> dict[str, Any]:
    """Figure (d): the test bound per epoch for every (K, S, seed), beta = 1 throughout.

    Each run trains a 2-D VAE on the first ``train_size`` training images (dynamically
    binarized) and evaluates the ELBO (one sample per x) of the first ``test_size`` images of
    the fixed binarized test set after every epoch.

    Returns:
        {"config": ..., "runs": [{"flow_length", "num_samples", "seed", "epochs",
        "test_elbo", "train_elbo", "seconds"}, ...], "device", "threads"}.
    """
    dev = device()
    train_images = data.load_mnist("train")[0][:train_size]
    test_images = data.binarized_test_set()[0][:test_size]
    runs = []
    for flow_length in flow_lengths:
        for num_samples in samples:
            for seed in seeds:
                torch.manual_seed(seed)
                model = vae.VAE(latent_dim=2, flow_length=flow_length).to(dev)
                history = vae_training.fit_vae(
                    model, train_images, test_images, num_epochs=num_epochs,
                    batch_size=batch_size, num_samples=num_samples, lr=lr, anneal=False,
                    seed=seed, progress=progress, log_every=10**9)
                runs.append({"flow_length": flow_length, "num_samples": num_samples,
                             "seed": seed, "epochs": history.epochs,
                             "test_elbo": history.test_elbo,
                             "train_elbo": history.epoch_train_elbo,
                             "seconds": round(history.seconds, 1)})
                if progress:
                    print(f"K={flow_length} S={num_samples} seed={seed}: test ELBO "
                          f"{history.test_elbo[-1]:.2f} after {num_epochs} epochs, "
                          f"{history.seconds:.0f} s", flush=True)
    config = dict(num_epochs=num_epochs, train_size=train_size, test_size=test_size,
                  batch_size=batch_size, lr=lr, anneal=False, optimizer="adam",
                  flow_lengths=list(flow_lengths), samples=list(samples), seeds=list(seeds))
    return {"config": config, "runs": runs, "device": str(dev),
            "threads": torch.get_num_threads()}


def save_curves(result: dict[str, Any], path: Path = CURVES_PATH) -> None:
    """Write the curves as JSON (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.partial")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)


def merge_curves(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``'s runs in place of ``old``'s runs of the same flow lengths (the other runs kept).

    Raises:
        ValueError: when the two were made with different budgets (anything in ``config``
            other than ``flow_lengths``), since their curves would not be comparable.
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
