"""Part 1: how long to anneal. Planar flows fitted to U1-U4 or U8, several seeds, with the
notebook's fit (Adam, lr 2e-3, 1000 samples per step, beta_t = min(1, 0.01 + t / T) with
T = ``fraction`` x steps), printing the final KL and the share of samples in each mode.

    python scripts/part1_annealing.py 10000 0.5 2e-3 U8 0,1,2 100   # T = 5,000 (half the steps)
    python scripts/part1_annealing.py 10000 0.9 2e-3 U8 0,1,2 100   # T = 9,000
    python scripts/part1_annealing.py 10000 0.5 2e-3 U1 1,2,3,4 32

Arguments: steps, fraction, learning rate, potentials (comma-separated), seeds, flow length K
(default 32), initial scale of u (default 0.01). Seeds as in the notebook (seed 0 + run seed).
The KL is on 10^5 fresh samples; for U1 the share left of z1 = 0, for U8 the number of 45-degree
sectors around pi/8 + j pi/4 holding at least a quarter of their share (1/8), and the shares.

Resumable: with ``--out FILE`` every finished fit is appended to FILE as one line, and a run
that is started again skips the fits FILE already holds (one fit takes 15-100 s on one CPU
thread), so an interrupted sweep goes on where it stopped. Outputs of the runs the notebook
cites: scripts/results/part1_annealing.txt (written with ``--out``).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

# this checkout's nfutils first, also where another checkout is installed (a run from a
# git worktree pinned to a commit while the main checkout is being edited)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfutils import flows, potentials, training  # noqa: E402
from nfutils import kl as kl_estimate  # noqa: E402


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Part 1: planar flows fitted with a given annealing length, over seeds.",
        epilog="Example: python scripts/part1_annealing.py 10000 0.9 2e-3 U8 0,1,2 100 "
               "--out scripts/results/part1_annealing.txt")
    parser.add_argument("steps", type=int, help="Adam steps of each fit, e.g. 10000")
    parser.add_argument("fraction", type=float,
                        help="annealing length T as a fraction of the steps, e.g. 0.5")
    parser.add_argument("lr", type=float, help="learning rate, e.g. 2e-3")
    parser.add_argument("potentials", help="comma-separated names, e.g. U1,U2 or U8")
    parser.add_argument("seeds", help="comma-separated run seeds, e.g. 0,1,2")
    parser.add_argument("flow_length", type=int, nargs="?", default=32,
                        help="planar layers K (default 32)")
    parser.add_argument("init_scale", type=float, nargs="?", default=0.01,
                        help="initial scale of u (default 0.01)")
    parser.add_argument("--out", type=Path, default=None,
                        help="append each finished fit to this file and skip fits it holds")
    args = parser.parse_args(argv)
    unknown = [name for name in args.potentials.split(",") if name not in potentials.POTENTIALS]
    if unknown:
        parser.error(f"unknown potential(s) {unknown}; choose from {sorted(potentials.POTENTIALS)}")
    if args.steps < 1 or not 0 < args.fraction <= 1 or not args.lr > 0 or args.flow_length < 0:
        parser.error("need steps >= 1, 0 < fraction <= 1, lr > 0 and flow_length >= 0")
    return args


def run_label(name: str, flow_length: int, steps: int, fraction: float, lr: float,
              seed: int) -> str:
    """The start of a fit's result line: what identifies the fit in a results file."""
    return f"{name} K={flow_length} steps={steps} frac={fraction} lr={lr} seed={seed}:"


def mode_summary(name: str, z: torch.Tensor) -> str:
    """U1: the share of samples left of z1 = 0; U8: how many of the 8 sectors hold >= 1/32."""
    if name == "U1":
        return f"left {float((z[:, 0] < 0).double().mean()):.2f}"
    if name == "U8":
        sector = (torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi) // (math.pi / 4)).long().clamp(0, 7)
        share = torch.bincount(sector, minlength=8).double() / len(z)
        return f"lobes {int((share >= 0.25 / 8).sum())} {[round(x, 2) for x in share.tolist()]}"
    return ""


def fit_one(name: str, seed: int, args: argparse.Namespace) -> str:
    """Fit one flow and return its result line."""
    energy = potentials.POTENTIALS[name]
    log_Z = potentials.log_partition(energy, extent=6.0, resolution=1000)
    torch.manual_seed(seed)
    model = flows.NormalizingFlow(2, flows.PlanarFlow(2, args.flow_length,
                                                      init_scale=args.init_scale))
    history = training.fit_flow(model, energy, num_steps=args.steps, num_samples=1000,
                                lr=args.lr, anneal=True,
                                anneal_steps=int(args.fraction * args.steps), log_Z=log_Z,
                                generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        z, log_q = model.rsample(100_000, generator=torch.Generator().manual_seed(seed + 1))
        kl = float(kl_estimate.monte_carlo_kl(log_q, energy(z))[0]) + log_Z
    label = run_label(name, args.flow_length, args.steps, args.fraction, args.lr, seed)
    return f"{label} KL {kl:.3f} {mode_summary(name, z)} ({history.seconds:.0f}s)"


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    torch.set_num_threads(1)
    done = args.out.read_text().splitlines() if args.out is not None and args.out.exists() else []
    for name in args.potentials.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            label = run_label(name, args.flow_length, args.steps, args.fraction, args.lr, seed)
            recorded = [line for line in done if line.startswith(label)]
            if recorded:
                print(recorded[-1] + " (from " + str(args.out) + ")", flush=True)
                continue
            line = fit_one(name, seed, args)
            print(line, flush=True)
            if args.out is not None:
                with open(args.out, "a") as out:
                    out.write(line + "\n")


if __name__ == "__main__":
    main()
