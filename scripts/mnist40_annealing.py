"""Why Part 4 trains without the paper's annealing: a short measurement on the 40-D model.

    python scripts/mnist40_annealing.py --flow-length 80 --anneal-steps 2000 --steps 600
    python scripts/mnist40_annealing.py --flow-length 80 --anneal-steps 2000 --clip 100
    python scripts/mnist40_annealing.py --flow-length 80 --anneal-steps 2000 --lr 3e-4
    python scripts/mnist40_annealing.py --flow-length 80 --anneal-steps 0     # beta = 1 throughout

Trains a fresh 40-D VAE (batch 100, Adam, dynamically binarized MNIST, one torch thread) for
``--steps`` updates with beta_t = min(1, 0.01 + t / T) (T = ``--anneal-steps``; 0 means beta = 1),
and every ``--every`` updates prints the test -ELBO on 500 fixed binarized test images and the
median and maximum gradient norm over the last ``--every`` updates. The loop is the series' one
loop, ``training.run_steps``.

Resumable: with ``--checkpoint-dir DIR`` the run's training state (and the lines printed so
far) is kept in DIR; the same command again prints those lines and goes on where an
interrupted run stopped (``--time-budget`` stops it cleanly, e.g. in pieces of 9 minutes).
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

from nfutils import data, flows, training, vae, vae_training  # noqa: E402

import resumable  # noqa: E402  (scripts/resumable.py, beside this file)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = resumable.argument_parser(__doc__, checkpoint_every=200)
    parser.add_argument("--flow-length", type=int, default=80)
    parser.add_argument("--anneal-steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--clip", type=float, default=0.0, help="gradient-norm clip (0: none)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--seed", type=int, default=80)
    args = parser.parse_args(argv)
    resumable.check_options(parser, args)
    if args.steps < 1 or args.every < 1 or args.anneal_steps < 0:
        parser.error("need --steps >= 1, --every >= 1 and --anneal-steps >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    torch.set_num_threads(1)
    runs = resumable.RunFolder(args.checkpoint_dir, args.time_budget)
    name = resumable.run_name("mnist40_annealing", K=args.flow_length, T=args.anneal_steps,
                              lr=args.lr, clip=args.clip, steps=args.steps, every=args.every,
                              seed=args.seed)
    if runs.print_recorded(name):  # finished before: its lines, not trained again
        return
    torch.manual_seed(args.seed)
    model = vae.VAE(latent_dim=40, flow_length=args.flow_length)
    optimizer = training.make_optimizer(model.parameters(), lr=args.lr)
    train_images = data.load_mnist("train")[0]
    test_images = data.binarized_test_set()[0][:500]
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(train_images.shape[0], generator=generator)
    # what a resume needs beside the common state: the norms since the last line, the lines
    window: dict[str, list] = {"norms": [], "lines": []}
    history, steps_done, clock = training.History(), [0], {"before": 0.0}
    checkpoint, state_path = None, runs.state_path(name)

    def on_resume(state: dict) -> None:
        window.update(norms=state["norms"], lines=state["lines"])
        clock["before"] = history.seconds  # what the earlier pieces took
        for line in window["lines"]:
            print(f"{line} (from {state_path})", flush=True)

    if state_path is not None:
        checkpoint = training.Checkpoint(state_path, generator, extra=lambda done: dict(window),
                                         on_resume=on_resume)

    def step_loss(step: int) -> torch.Tensor:
        first = (step * 100) % train_images.shape[0]
        x = data.binarize(train_images[order[first:first + 100]], generator)
        beta = flows.annealed_beta(step, num_steps=args.anneal_steps) if args.anneal_steps else 1.0
        return vae.bound(model, x, 1, beta, generator).loss

    def report(step: int, loss: torch.Tensor, grad_norm: float | None) -> None:
        window["norms"].append(grad_norm)
        steps_done[0] = step + 1
        if (step + 1) % args.every == 0:
            model.eval()
            neg_elbo = -vae_training.evaluate_elbo(model, test_images)
            model.train()
            recent = sorted(window["norms"])
            line = (f"K={args.flow_length} T={args.anneal_steps} lr={args.lr:g} "
                    f"clip={args.clip:g} step {step + 1}: test -ELBO {neg_elbo:.1f}; gradient "
                    f"norm median {recent[len(recent) // 2]:.1f}, max {recent[-1]:.1f}; "
                    f"{clock['before'] + time.perf_counter() - clock['started']:.0f} s")
            print(line, flush=True)
            window["norms"], window["lines"] = [], window["lines"] + [line]

    clock["started"] = time.perf_counter()
    training.run_steps(model, optimizer, step_loss, history, args.steps, args.lr,
                       max_grad_norm=args.clip if args.clip > 0 else float("inf"),
                       after_step=report, checkpoint=checkpoint,
                       checkpoint_every=args.checkpoint_every, time_budget=runs.time_left())
    if not history.finished:
        print(resumable.stopped_message(name, steps_done[0], args.steps), flush=True)
        return
    runs.record(name, window["lines"])


if __name__ == "__main__":
    main()
