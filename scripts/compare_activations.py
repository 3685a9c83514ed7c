"""Compare the VAE's hidden-layer activations on MNIST at a small CPU budget (nfutils.vae's choice).

Each activation trains the same architecture (784-400-400 encoder, 400-400-784 decoder, batch
100, Adam 1e-3 with fused kernel, dynamic binarization, one posterior sample per x) from the
same seed, and reports the -ELBO of the first 2,000 images of the fixed binarized test set.

    python scripts/compare_activations.py --seconds 90             # equal wall time, annealed
    python scripts/compare_activations.py --steps 4000 --no-anneal # equal steps, beta = 1

Prints one line per activation: steps, test -ELBO (nats) and ms per step. Single thread by
default (the project's shared 2-core machine); timings depend on the load of the machine.
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

from nfutils import data, vae
from nfutils.flows import annealed_beta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None, help="wall-time budget per run")
    parser.add_argument("--steps", type=int, default=None, help="step budget per run")
    parser.add_argument("--no-anneal", action="store_true", help="beta = 1 from the start")
    parser.add_argument("--latent", type=int, default=40)
    parser.add_argument("--flow-length", type=int, default=0)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("activations", nargs="*", default=list(vae.ACTIVATIONS))
    args = parser.parse_args()
    if (args.seconds is None) == (args.steps is None):
        parser.error("give exactly one of --seconds and --steps")
    torch.set_num_threads(args.threads)
    train, _ = data.load_mnist("train")
    test = data.binarized_test_set()[0][:2000]

    def test_nelbo(model: vae.VAE) -> float:
        with torch.no_grad():
            terms = vae.bound(model, test, 1, generator=torch.Generator().manual_seed(1))
        return round(-float(terms.elbo.mean()), 2)

    for activation in args.activations:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model = vae.VAE(latent_dim=args.latent, flow_length=args.flow_length,
                        activation=activation)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        start, step, curve = time.perf_counter(), 0, []

        def done() -> bool:
            if args.steps is not None:
                return step >= args.steps
            return time.perf_counter() - start >= args.seconds

        while not done():
            for images in data.batches(train, 100, generator=generator):
                x = data.binarize(images, generator=generator)
                beta = 1.0 if args.no_anneal else annealed_beta(step)
                loss = vae.bound(model, x, 1, beta, generator).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                step += 1
                if args.steps is not None and step % args.eval_every == 0:
                    curve.append(test_nelbo(model))
                if done():
                    break
        ms = (time.perf_counter() - start) / step * 1000
        print(f"{activation:9s} steps {step:6d}  test -ELBO {test_nelbo(model):7.2f}  "
              f"{ms:5.1f} ms/step" + (f"  curve {curve}" if curve else ""), flush=True)


if __name__ == "__main__":
    main()
