"""Compare the VAE's hidden-layer activations on MNIST at a small CPU budget (nfutils.vae's choice).

Each activation trains the same architecture (784-400-400 encoder, 400-400-784 decoder, batch
100, Adam 1e-3 with fused kernel, dynamic binarization, one posterior sample per x) from the
same seed, and reports the -ELBO of the first 2,000 images of the fixed binarized test set.

    python scripts/compare_activations.py --seconds 90             # equal wall time, annealed
    python scripts/compare_activations.py --steps 4000 --no-anneal # equal steps, beta = 1

Prints one line per activation: steps, test -ELBO (nats) and ms per step. Single thread by
default (the project's shared 2-core machine); timings depend on the load of the machine.

Each run goes through the series' one loop, ``training.run_steps``. Resumable: with
``--checkpoint-dir DIR`` each activation's training state is kept in DIR and, once it has
finished, its line; the same command again goes on where an interrupted run stopped and skips
the activations already done (with ``--seconds``, a resumed run trains for the seconds left).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Callable

import torch

# this checkout's nfutils first, also where another checkout is installed (a run from a
# git worktree pinned to a commit while the main checkout is being edited)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfutils import data, training, vae  # noqa: E402
from nfutils.flows import annealed_beta  # noqa: E402

import resumable  # noqa: E402  (scripts/resumable.py, beside this file)


class EpochBatches:
    """Minibatches of ``images`` one after another, reshuffled each epoch by ``generator`` (the
    run's one generator, which also binarizes), and the state a resume needs to go on in the
    middle of an epoch: the generator's state when the epoch's shuffle was drawn, and how many
    of its batches were taken."""

    def __init__(self, images: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.images, self.batch_size, self.generator = images, batch_size, generator
        self.epoch_state, self.index, self.iterator = None, 0, iter(())

    def next(self) -> torch.Tensor:
        batch = next(self.iterator, None)
        if batch is None:  # a new epoch: its shuffle is the generator's next draw
            self.epoch_state, self.index = self.generator.get_state(), 0
            self.iterator = data.batches(self.images, self.batch_size, generator=self.generator)
            batch = next(self.iterator)
        self.index += 1
        return batch

    def state(self) -> dict:
        return {"epoch_generator": self.epoch_state, "epoch_index": self.index}

    def restore(self, state: dict) -> None:
        """Go on after batch ``epoch_index`` of the epoch whose shuffle was drawn from
        ``epoch_generator`` (the shuffle is drawn again from a copy; the run's generator is
        restored by the checkpoint)."""
        self.epoch_state, self.index = state["epoch_generator"], state["epoch_index"]
        replay = torch.Generator().set_state(self.epoch_state)
        self.iterator = itertools.islice(
            data.batches(self.images, self.batch_size, generator=replay), self.index, None)


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = resumable.argument_parser(__doc__)
    parser.add_argument("--seconds", type=float, default=None, help="wall-time budget per run")
    parser.add_argument("--steps", type=int, default=None, help="step budget per run")
    parser.add_argument("--no-anneal", action="store_true", help="beta = 1 from the start")
    parser.add_argument("--latent", type=int, default=40)
    parser.add_argument("--flow-length", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("activations", nargs="*", default=list(vae.ACTIVATIONS))
    args = parser.parse_args(argv)
    resumable.check_options(parser, args)
    if (args.seconds is None) == (args.steps is None):
        parser.error("give exactly one of --seconds and --steps")
    if (args.seconds or 1) <= 0 or (args.steps or 1) < 1 or args.eval_every < 1:
        parser.error("need --seconds > 0, --steps >= 1 and --eval-every >= 1")
    return args


def train_activation(activation: str, train: torch.Tensor,
                     test_nelbo: Callable[[vae.VAE], float], args: argparse.Namespace,
                     state_path: Path | None, time_left: float | None
                     ) -> tuple[vae.VAE, training.History, list[float], int, bool]:
    """Train one activation from seed 0 (resuming from ``state_path`` when it exists).

    Returns:
        the model, its history, the test -ELBO curve, the steps done, and whether the run
        has finished (False after a stop on the invocation's time budget).
    """
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = vae.VAE(latent_dim=args.latent, flow_length=args.flow_length, activation=activation)
    optimizer = training.make_optimizer(model.parameters(), lr=1e-3)
    batches, curve, history = EpochBatches(train, 100, generator), [], training.History()
    progress = [0]  # the steps done

    def on_resume(state: dict) -> None:
        curve.extend(state["curve"])
        batches.restore(state)
        progress[0] = state["step"]

    checkpoint = None if state_path is None else training.Checkpoint(
        state_path, generator, extra=lambda done: {"curve": curve, **batches.state()},
        on_resume=on_resume)

    def step_loss(step: int) -> torch.Tensor:
        x = data.binarize(batches.next(), generator=generator)
        beta = 1.0 if args.no_anneal else annealed_beta(step)
        return vae.bound(model, x, 1, beta, generator).loss

    def record(step: int, loss: torch.Tensor, grad_norm: float | None) -> None:
        progress[0] = step + 1
        if args.steps is not None and (step + 1) % args.eval_every == 0:
            curve.append(test_nelbo(model))

    if args.steps is not None:
        num_steps, budget = args.steps, time_left
    else:  # an equal wall time: the seconds left of this run's, or of the invocation's
        num_steps = sys.maxsize
        budget = args.seconds - resumable.trained_seconds(state_path)
        budget = budget if time_left is None else min(budget, time_left)
    if budget is None or budget > 0:
        training.run_steps(model, optimizer, step_loss, history, num_steps, 1e-3,
                           after_step=record, checkpoint=checkpoint,
                           checkpoint_every=args.checkpoint_every, time_budget=budget)
    elif checkpoint is not None:  # nothing left to train: the state as it was left
        checkpoint.resume(model, optimizer, history, 1e-3)
    finished = history.finished if args.steps is not None else history.seconds >= args.seconds
    return model, history, curve, progress[0], finished


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    torch.set_num_threads(args.threads)
    runs = resumable.RunFolder(args.checkpoint_dir, args.time_budget)
    train, _ = data.load_mnist("train")
    test = data.binarized_test_set()[0][:2000]

    def test_nelbo(model: vae.VAE) -> float:
        with torch.no_grad():
            terms = vae.bound(model, test, 1, generator=torch.Generator().manual_seed(1))
        return round(-float(terms.elbo.mean()), 2)

    for activation in args.activations:
        budget = f"steps={args.steps}" if args.steps is not None else f"seconds={args.seconds:g}"
        name = resumable.run_name(
            "compare_activations", activation=activation, budget=budget,
            anneal=not args.no_anneal, latent=args.latent, K=args.flow_length,
            eval_every=args.eval_every, threads=args.threads)
        if runs.print_recorded(name):  # finished before: its lines, not trained again
            continue
        model, history, curve, step, finished = train_activation(
            activation, train, test_nelbo, args, runs.state_path(name), runs.time_left())
        if not finished:
            print(resumable.stopped_message(name, step, args.steps), flush=True)
            return
        ms = history.seconds / step * 1000
        line = (f"{activation:9s} steps {step:6d}  test -ELBO {test_nelbo(model):7.2f}  "
                f"{ms:5.1f} ms/step" + (f"  curve {curve}" if curve else ""))
        print(line, flush=True)
        runs.record(name, [line])


if __name__ == "__main__":
    main()
