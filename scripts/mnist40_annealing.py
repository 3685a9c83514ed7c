"""Why Part 4 trains without the paper's annealing: a short measurement on the 40-D model.

    python scripts/mnist40_annealing.py --flow-length 80 --anneal-steps 2000 --steps 600
    python scripts/mnist40_annealing.py --flow-length 80 --anneal-steps 2000 --clip 100
    python scripts/mnist40_annealing.py --flow-length 80 --anneal-steps 2000 --lr 3e-4
    python scripts/mnist40_annealing.py --flow-length 80 --anneal-steps 0     # beta = 1 throughout

Trains a fresh 40-D VAE (batch 100, Adam, dynamically binarized MNIST, one torch thread) for
``--steps`` updates with beta_t = min(1, 0.01 + t / T) (T = ``--anneal-steps``; 0 means beta = 1),
and every ``--every`` updates prints the test -ELBO on 500 fixed binarized test images and the
median and maximum gradient norm over the last ``--every`` updates.
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

from nfutils import data, flows, training, vae, vae_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow-length", type=int, default=80)
    parser.add_argument("--anneal-steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip", type=float, default=0.0, help="gradient-norm clip (0: none)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = vae.VAE(latent_dim=40, flow_length=args.flow_length)
    optimizer = training.make_optimizer(model.parameters(), lr=args.lr)
    train_images = data.load_mnist("train")[0]
    test_images = data.binarized_test_set()[0][:500]
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(train_images.shape[0], generator=generator)
    norms: list[float] = []
    start = time.perf_counter()
    for step in range(args.steps):
        first = (step * 100) % train_images.shape[0]
        x = data.binarize(train_images[order[first:first + 100]], generator)
        beta = flows.annealed_beta(step, num_steps=args.anneal_steps) if args.anneal_steps else 1.0
        terms = vae.bound(model, x, 1, beta, generator)
        training.check_finite_loss(terms.loss, step)
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        limit = args.clip if args.clip > 0 else float("inf")
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), limit)))
        optimizer.step()
        if (step + 1) % args.every == 0:
            model.eval()
            neg_elbo = -vae_training.evaluate_elbo(model, test_images)
            model.train()
            recent = sorted(norms[-args.every:])
            print(f"K={args.flow_length} T={args.anneal_steps} lr={args.lr:g} clip={args.clip:g} "
                  f"step {step + 1}: test -ELBO {neg_elbo:.1f}; gradient norm median "
                  f"{recent[len(recent) // 2]:.1f}, max {recent[-1]:.1f}; "
                  f"{time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
