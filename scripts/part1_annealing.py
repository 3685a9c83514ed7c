"""Part 1: how long to anneal. Planar flows fitted to U1-U4 or U8, several seeds, with the
notebook's fit (Adam, lr 2e-3, 1000 samples per step, beta_t = min(1, 0.01 + t / T) with
T = ``fraction`` x steps), printing the final KL and the share of samples in each mode.

    python scripts/part1_annealing.py 10000 0.5 2e-3 U8 0,1,2 100   # T = 5,000 (half the steps)
    python scripts/part1_annealing.py 10000 0.9 2e-3 U8 0,1,2 100   # T = 9,000
    python scripts/part1_annealing.py 10000 0.5 2e-3 U1 1,2,3,4 32

Arguments: steps, fraction, learning rate, potentials (comma-separated), seeds, flow length K
(default 32), initial scale of u (default 0.01). Seeds as in the notebook (seed 0 + run seed).
The KL is on 10^5 fresh samples; for U1 the share left of z1 = 0, for U8 the number of 45-degree sectors
around pi/8 + j pi/4 holding at least a quarter of their share (1/8), and the shares.
Outputs of the runs the notebook cites: scripts/results/part1_annealing.txt.
"""

import math
import sys
from pathlib import Path

import torch

# this checkout's nfutils first, also where another checkout is installed (a run from a
# git worktree pinned to a commit while the main checkout is being edited)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nfutils import flows, potentials, training

torch.set_num_threads(1)
steps, frac, lr = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
names, seeds = sys.argv[4].split(","), [int(s) for s in sys.argv[5].split(",")]
flow_length = int(sys.argv[6]) if len(sys.argv) > 6 else 32
init = float(sys.argv[7]) if len(sys.argv) > 7 else 0.01
for name in names:
    energy = potentials.POTENTIALS[name]
    log_Z = potentials.log_partition(energy, extent=6.0, resolution=1000)
    for s in seeds:
        torch.manual_seed(s)
        model = flows.NormalizingFlow(2, flows.PlanarFlow(2, flow_length, init_scale=init))
        history = training.fit_flow(model, energy, num_steps=steps, num_samples=1000, lr=lr, anneal=True,
                                    anneal_steps=int(frac * steps), log_Z=log_Z,
                                    generator=torch.Generator().manual_seed(s))
        with torch.no_grad():
            z, log_q = model.rsample(100_000, generator=torch.Generator().manual_seed(s + 1))
            kl = float((log_q + energy(z)).mean()) + log_Z
            if name == "U1":
                modes = f"left {float((z[:, 0] < 0).double().mean()):.2f}"
            elif name == "U8":
                sector = (torch.atan2(z[:, 1], z[:, 0]) % (2 * math.pi) // (math.pi / 4)).long().clamp(0, 7)
                share = torch.bincount(sector, minlength=8).double() / len(z)
                modes = f"lobes {int((share >= 0.25 / 8).sum())} {[round(x, 2) for x in share.tolist()]}"
            else:
                modes = ""
        print(f"{name} K={flow_length} steps={steps} frac={frac} lr={lr} seed={s}: KL {kl:.3f} {modes} "
              f"({history.seconds:.0f}s)", flush=True)
