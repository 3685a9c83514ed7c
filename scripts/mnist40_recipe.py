"""Short runs that settle Part 4's training recipe (40-D latent, planar flows amortized per x).

Each variant trains one K from scratch for ``--steps`` updates (one thread, batch 100, Adam,
beta = 1) and prints the test -ELBO on the first 2,000 images of the fixed binarized test set,
the largest gradient norm seen, and the mean total log-det of the flow at the start and end
(how far the K layers are from the identity).

    python scripts/mnist40_recipe.py --flow-length 80 --steps 1200 --variants identity zero_u
    python scripts/mnist40_recipe.py --flow-length 80 --steps 1200 --variants constant_lr

Variants:
    identity      flow layers start at the identity (u_hat = 0), warm-up 500 + cosine to 0
    zero_u        u = 0 at the start, so every layer has w.u_hat = m(0) = -0.31 (a
                  contraction), and x-dependent flow parameters (weights scaled by 0.1);
                  same schedule
    constant_lr   identity start, constant learning rate, no warm-up
    identity_random_weights
                  identity start with x-dependent flow parameters (weights as zero_u's)

Each variant trains with ``vae_training.fit_vae`` (the series' one loop, ``training.run_steps``).
Resumable: ``--checkpoint-dir DIR`` keeps each variant's training state and, once finished, its
printed line; the same command again goes on where an interrupted run stopped and skips the
variants already done, e.g. in pieces of at most 9 minutes:

    python scripts/mnist40_recipe.py --checkpoint-dir outputs/runs/recipe --time-budget 540
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

# this checkout's nfutils first, also where another checkout is installed (a run from a
# git worktree pinned to a commit while the main checkout is being edited)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfutils import data, training, vae, vae_training  # noqa: E402

import resumable  # noqa: E402  (scripts/resumable.py, beside this file)


def build(flow_length: int, variant: str, seed: int, standardized: bool = False) -> vae.VAE:
    torch.manual_seed(seed)
    model = vae.VAE(latent_dim=40, flow_length=flow_length, standardized_flow=standardized)
    if variant == "zero_u" and model.encoder_flow is not None:
        with torch.no_grad():
            torch.nn.init.kaiming_uniform_(model.encoder_flow.weight, a=math.sqrt(5))
            model.encoder_flow.weight.mul_(0.1)
            num_w = flow_length * 40
            model.encoder_flow.bias.zero_()
            model.encoder_flow.bias[:num_w].copy_(torch.randn(num_w) / math.sqrt(40))
    if variant == "identity_random_weights" and model.encoder_flow is not None:
        with torch.no_grad():
            torch.nn.init.kaiming_uniform_(model.encoder_flow.weight, a=math.sqrt(5))
            model.encoder_flow.weight.mul_(0.1)
    return model


@torch.no_grad()
def mean_log_det(model: vae.VAE, images: torch.Tensor) -> float:
    """E[sum_k log|det_k|] over one posterior sample per image (0 for an identity flow)."""
    generator = torch.Generator().manual_seed(0)
    mu, log_sigma, flow_params = model.encode(images)
    if flow_params is None:
        return 0.0
    eps = torch.randn(mu.shape, generator=generator)
    _, log_q = model.posterior_sample(images, 1, generator=torch.Generator().manual_seed(0))
    log_q0 = (-0.5 * (eps * eps).sum(-1) - log_sigma.sum(-1)
              - 0.5 * model.latent_dim * math.log(2 * math.pi))
    return float((log_q0 - log_q[0]).mean())


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = resumable.argument_parser(__doc__)
    parser.add_argument("--flow-length", type=int, default=80)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--variants", nargs="+", default=["identity", "zero_u", "constant_lr"],
                        choices=["identity", "zero_u", "constant_lr", "identity_random_weights"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-grad-norm", type=float, default=float("inf"),
                        help="clip the gradient norm (default: no clipping, norms recorded)")
    parser.add_argument("--standardized", action="store_true",
                        help="z_K = mu + sigma f(eps) instead of the paper's f(mu + sigma eps)")
    args = parser.parse_args(argv)
    resumable.check_options(parser, args)
    return args


def fit_variant(model: vae.VAE, variant: str, train_images: torch.Tensor,
                test_images: torch.Tensor, args: argparse.Namespace,
                state_path: Path | None, time_budget: float | None
                ) -> tuple[str | None, float, int]:
    """Train one variant with ``fit_vae`` (resuming from ``state_path`` when it exists).

    Returns:
        the result's text (None after a time-budget stop), the training seconds summed over
        the run's pieces, and the steps done.
    """
    steps_per_epoch = 600
    if variant == "constant_lr":
        schedule = None
    else:
        def schedule(step: int) -> float:
            return training.warmup_cosine(step, args.steps, args.warmup)
    epochs = math.ceil(args.steps / steps_per_epoch)
    seconds_before, progress = resumable.trained_seconds(state_path), {"done": 0}

    def count(done: int, elbo: float) -> None:
        progress["done"] = done

    start = time.perf_counter()
    try:
        history = vae_training.fit_vae(
            model, train_images[: args.steps * 100 // epochs], test_images,
            num_epochs=epochs, lr=args.lr, anneal=False, lr_schedule=schedule,
            max_grad_norm=args.max_grad_norm, seed=args.seed, progress=False,
            checkpoint_path=state_path, checkpoint_every=args.checkpoint_every,
            time_budget=time_budget, callback=count)
    except training.NonFiniteLossError as error:
        return f"stopped: {error}", seconds_before + time.perf_counter() - start, progress["done"]
    if not history.finished:
        return None, history.seconds, progress["done"]
    return (f"test -ELBO (2,000 images) {-history.test_elbo[-1]:8.2f}; "
            f"max grad norm {max(history.epoch_max_grad_norm):9.1f}, "
            f"{sum(history.epoch_clipped_steps)} steps clipped"), history.seconds, args.steps


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    torch.set_num_threads(1)
    runs = resumable.RunFolder(args.checkpoint_dir, args.time_budget)
    train_images = data.load_mnist("train")[0]
    test_images = data.binarized_test_set()[0][:2000]
    for variant in args.variants:
        name = resumable.run_name(
            "mnist40_recipe", K=args.flow_length, variant=variant, steps=args.steps,
            lr=args.lr, warmup=args.warmup, seed=args.seed, clip=args.max_grad_norm,
            standardized=args.standardized)
        if runs.print_recorded(name):  # finished before: its lines, not trained again
            continue
        time_left = runs.time_left()
        model = build(args.flow_length, variant, args.seed, args.standardized)
        start_log_det = mean_log_det(model, test_images[:500])
        result, seconds, steps_done = fit_variant(model, variant, train_images, test_images,
                                                  args, runs.state_path(name), time_left)
        if result is None:
            print(resumable.stopped_message(name, steps_done, args.steps), flush=True)
            return
        start = time.perf_counter()
        label = f"{variant}{' standardized' if args.standardized else ''}"
        if math.isfinite(args.max_grad_norm):
            label += f" clip {args.max_grad_norm:g}"
        end_log_det = mean_log_det(model, test_images[:500])
        seconds += time.perf_counter() - start
        line = (f"K={args.flow_length:2d} {label}, {args.steps} steps: {result}; "
                f"mean sum log|det| {start_log_det:+.2f} -> {end_log_det:+.2f}; {seconds:.0f} s")
        print(line, flush=True)
        runs.record(name, [line])


if __name__ == "__main__":
    main()
