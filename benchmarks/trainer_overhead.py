"""The Part 4 trainer's own cost per epoch, against the raw training steps it runs.

An epoch of ``scripts/mnist40.py train`` is 600 steps plus the trainer's bookkeeping: building
the model, resuming the full training state, the per-epoch test -ELBO (2,000 images), the
state's checkpoint and the float16 export. This benchmark times, in one process and one thread,
interleaved, (a) 600 raw steps as ``benchmarks/vae.py`` times them (binarize, Eq. (20)'s loss,
backward, clipping, fused Adam; nothing else) and (b) one epoch of ``mnist40.train_epoch`` on
the same 60,000 training images (resuming from the state the previous epoch wrote), and reports
the overhead (b - a) / a, median over the repetitions.

Run: ``python -m benchmarks.trainer_overhead`` (about 4 minutes on an idle 2-core CPU).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import load_average, machine_description
from nfutils import data, training, vae
import importlib.util

_spec = importlib.util.spec_from_file_location(
    "mnist40", Path(__file__).resolve().parents[1] / "scripts" / "mnist40.py")
mnist40 = importlib.util.module_from_spec(_spec)  # the long runs' script, loaded as a module
_spec.loader.exec_module(mnist40)


def raw_steps(model: vae.VAE, optimizer: torch.optim.Optimizer, images: torch.Tensor,
              generator: torch.Generator, num_steps: int) -> float:
    """Seconds for ``num_steps`` bare training steps (what the trainer's loop runs per step)."""
    start = time.perf_counter()
    for step in range(num_steps):
        batch = images[(step * 100) % images.shape[0]:][:100]
        x = data.binarize(batch, generator=generator)
        loss = vae.bound(model, x, 1, generator=generator).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), mnist40.MAX_GRAD_NORM)
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flow-lengths", type=int, nargs="+", default=[0, 80])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train_images = data.load_mnist("train")[0]
    test_images = data.binarized_test_set()[0][: mnist40.HISTORY_TEST_IMAGES]
    print("# Part 4 trainer: its own cost per epoch against the raw steps\n")
    print(f"Machine: {machine_description()}; 1 thread.\n")
    print("| K | 600 raw steps | one trainer epoch (600 steps) | overhead |")
    print("|---:|---:|---:|---:|")
    for flow_length in args.flow_lengths:
        torch.manual_seed(0)
        model = vae.VAE(latent_dim=40, flow_length=flow_length, standardized_flow=False)
        optimizer = training.make_optimizer(model.parameters(), "adam", 1e-4)
        generator = torch.Generator().manual_seed(0)
        raw, trainer = [], []
        with tempfile.TemporaryDirectory() as folder:
            mnist40.CHECKPOINT_DIR = Path(folder) / "checkpoints"
            run_dir = Path(folder) / "runs"
            mnist40.train_epoch(flow_length, 1, run_dir=run_dir)  # epoch 1 (warm caches)
            for repeat in range(args.repeats):
                raw.append(raw_steps(model, optimizer, train_images, generator, 600))
                start = time.perf_counter()
                mnist40.train_epoch(flow_length, repeat + 2, run_dir=run_dir)
                trainer.append(time.perf_counter() - start)
        raw_s, trainer_s = statistics.median(raw), statistics.median(trainer)
        print(f"| {flow_length} | {raw_s:.2f} s | {trainer_s:.2f} s | "
              f"{100 * (trainer_s - raw_s) / raw_s:+.1f}% |", flush=True)
    print(f"\nMedians of {args.repeats} interleaved repetitions; load average {load_average()} "
          "at the end. Target: overhead under 15%.")


if __name__ == "__main__":
    main()
