"""One Part 1 training step, timed side by side: normflows, a textbook flow, nfutils.

A step is what ``nfutils.training.fit_flow`` does each iteration: draw N = 1000 samples
z_K ~ q_K with log q_K (Eq. 13), the free energy F = mean(log q_K + U1(z_K)) (Eq. 15),
backward, one Adam step. Every implementation is a planar stack of K layers on a learnable
diagonal-Gaussian base, trained on the same target (``nfutils.potentials.U1``):

* ``normflows``: ``normflows.NormalizingFlow`` with K ``normflows.flows.Planar`` layers and a
  ``DiagGaussian`` base (the optional extra ``pip install -e ".[bench]"``), torch's default
  Adam; ``normflows + fused Adam``: the same with ``Adam(..., fused=True)``;
* ``textbook``: one ``nn.Module`` per layer with its own w, u, b, u_hat and log-det computed
  layer by layer, the way most tutorials write it (defined here, not in nfutils);
* ``nfutils eager stacked loop``: nfutils' stacked parameters run as a plain loop of tensor
  operations (``flows._planar_flow_eager``; autograd records every operation);
* ``nfutils fast path, default Adam``: ``flows.make_flow("planar", 2, K)``, whose training
  path is one custom autograd Function with an analytic backward (its per-layer loops in NumPy
  on the CPU);
* ``nfutils (as fit_flow runs it)``: the same with ``training.make_optimizer`` (fused Adam),
  which is what ``training.fit_flow`` and so the notebooks run; the targets apply to it;
* ``nfutils eager loop, torch.compile`` (with ``--compile``): the eager stacked loop under
  ``torch.compile``; its compile time is reported separately, because a notebook pays it on
  every run.

Timings are interleaved round robin (see ``benchmarks.round_robin``), medians over
``--steps`` steps after ``--warmup`` steps, at K = 100 and K = 32, on 1 and 2 threads. Ratios
are normflows' median over each implementation's, measured in the same run, so that the load
of other processes on a shared machine affects both sides alike.

Run: ``python -m benchmarks.flows`` (about 75 s on an idle 2-core machine); the README's table
is ``benchmarks/results/flows_cpu.md``, written by this command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import time
from typing import Callable

import torch
from torch import Tensor, nn

from benchmarks import load_average, machine_description, median_ms, round_robin
from nfutils import flows, training
from nfutils.potentials import U1

NUM_SAMPLES = 1000
DIM = 2
TARGETS = {100: 10.0, 32: 8.0}  # targets: nfutils >= 10x faster than normflows at K = 100, 8x at 32


# --------------------------------------------------------------------------- textbook


class TextbookPlanarLayer(nn.Module):
    """One planar layer with its own parameters: f(z) = z + u_hat tanh(w.z + b) (Eq. 10),
    u_hat from App. A.1, log|det| = log|1 + u_hat.psi(z)| (Eq. 11-12)."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.u = nn.Parameter(0.01 * torch.randn(dim))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        w_dot_u = self.w @ self.u
        u_hat = self.u + (-1.0 + nn.functional.softplus(w_dot_u) - w_dot_u) * self.w / (self.w @ self.w)
        h = torch.tanh(z @ self.w + self.b)
        z_new = z + u_hat * h.unsqueeze(-1)
        psi = (1.0 - h * h).unsqueeze(-1) * self.w
        log_det = torch.log(torch.abs(1.0 + psi @ u_hat))
        return z_new, log_det


class TextbookFlow(nn.Module):
    """A diagonal-Gaussian base and a ``ModuleList`` of K ``TextbookPlanarLayer``."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.dim = dim
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_sigma = nn.Parameter(torch.zeros(dim))
        self.layers = nn.ModuleList(TextbookPlanarLayer(dim) for _ in range(num_layers))

    def rsample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        eps = torch.randn(num_samples, self.dim)
        z = self.mu + torch.exp(self.log_sigma) * eps
        log_q = (-0.5 * (eps ** 2).sum(-1) - self.log_sigma.sum()
                 - 0.5 * self.dim * math.log(2 * math.pi))
        for layer in self.layers:
            z, log_det = layer(z)
            log_q = log_q - log_det
        return z, log_q


# --------------------------------------------------------------------------- nfutils eager


class EagerPlanarFlow(flows.PlanarFlow):
    """nfutils' ``PlanarFlow`` forced onto the plain stacked loop (no custom autograd)."""

    def forward(self, z: Tensor, w=None, u=None, b=None) -> tuple[Tensor, Tensor]:
        u_hat = flows._constrain_u(self.w, self.u)
        return flows._planar_flow_eager(z, self.w, u_hat, self.b, True, False)


# --------------------------------------------------------------------------- steps


def make_step(sample: Callable[[], tuple[Tensor, Tensor]], optimizer: torch.optim.Optimizer
              ) -> Callable[[], None]:
    """One training step of Part 1: sample, free energy on U1 (Eq. 15), backward, Adam."""

    def step() -> None:
        z_k, log_q = sample()
        loss = flows.free_energy(log_q, U1(z_k))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def normflows_version() -> str | None:
    try:
        import normflows  # noqa: F401
    except ImportError:
        return None
    return importlib.metadata.version("normflows")


NOTEBOOK_ROW = "nfutils (as fit_flow runs it)"


def build_steps(num_layers: int, lr: float, compile_step: bool) -> tuple[dict, dict]:
    """The implementations' step functions (same seed for each), and compile seconds."""
    steps: dict[str, Callable[[], None]] = {}
    notes: dict[str, float] = {}
    if normflows_version() is not None:
        import normflows as nf

        for fused in (False, True):
            torch.manual_seed(0)
            model = nf.NormalizingFlow(nf.distributions.DiagGaussian(DIM),
                                       [nf.flows.Planar((DIM,)) for _ in range(num_layers)])
            name = "normflows + fused Adam" if fused else "normflows"
            steps[name] = make_step(lambda m=model: m.sample(NUM_SAMPLES),
                                    torch.optim.Adam(model.parameters(), lr=lr, fused=fused))
    torch.manual_seed(0)
    textbook = TextbookFlow(DIM, num_layers)
    steps["textbook (per-layer modules)"] = make_step(
        lambda: textbook.rsample(NUM_SAMPLES), torch.optim.Adam(textbook.parameters(), lr=lr))
    torch.manual_seed(0)
    eager = flows.NormalizingFlow(DIM, EagerPlanarFlow(DIM, num_layers))
    steps["nfutils eager stacked loop"] = make_step(
        lambda: eager.rsample(NUM_SAMPLES), torch.optim.Adam(eager.parameters(), lr=lr))
    torch.manual_seed(0)
    fast = flows.make_flow("planar", DIM, num_layers)
    steps["nfutils fast path, default Adam"] = make_step(
        lambda: fast.rsample(NUM_SAMPLES), torch.optim.Adam(fast.parameters(), lr=lr))
    torch.manual_seed(0)
    notebook = flows.make_flow("planar", DIM, num_layers)
    steps[NOTEBOOK_ROW] = make_step(
        lambda: notebook.rsample(NUM_SAMPLES),
        training.make_optimizer(notebook.parameters(), "adam", lr))
    if compile_step:
        torch.manual_seed(0)
        compiled_model = flows.NormalizingFlow(DIM, EagerPlanarFlow(DIM, num_layers))

        @torch.compile
        def compiled_sample():
            return compiled_model.rsample(NUM_SAMPLES)

        step = make_step(compiled_sample,
                         training.make_optimizer(compiled_model.parameters(), "adam", lr))
        start = time.perf_counter()
        step()
        step()
        notes["nfutils eager loop, torch.compile"] = time.perf_counter() - start
        steps["nfutils eager loop, torch.compile"] = step
    return steps, notes


def markdown_table(results: dict, baseline: str, clock: str) -> str:
    """Rows: implementations; columns: (K, threads); cells: median ms (baseline / it)."""
    configs = list(results)
    names = list(results[configs[0]])
    lines = ["| implementation | " + " | ".join(
        f"K = {k}, {t} thread{'s' if t > 1 else ''}" for k, t in configs) + " |",
        "|---|" + "---:|" * len(configs)]
    for name in names:
        cells = []
        for config in configs:
            ms = results[config][name][clock]
            cells.append(f"{ms:.2f} ms ({results[config][baseline][clock] / ms:.1f}x)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="timed steps (median over them)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first")
    parser.add_argument("--layers", type=int, nargs="+", default=[100, 32], help="K values")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--compile", action="store_true",
                        help="also time the eager stacked loop under torch.compile (minutes)")
    args = parser.parse_args(argv)

    version = normflows_version()
    print("# Part 1 training step: N = 1000 samples, free energy on U1, backward, Adam\n")
    print(f"Machine: {machine_description()}.")
    if version is None:
        print("\n**normflows is not installed**: install the optional extra with\n"
              '`pip install -e ".[bench]" torch==2.13.0` to compare with it. Ratios below are '
              "against the textbook implementation instead, and no target is checked.\n")
        baseline = "textbook (per-layer modules)"
    else:
        print(f"normflows {version}.")
        baseline = "normflows"
    print(f"Median of {args.steps} steps after {args.warmup} warm-up steps, implementations "
          f"interleaved round robin in one process; in brackets: {baseline}'s median / this "
          "median (how many times faster).\n")

    results: dict[tuple[int, int], dict[str, dict[str, float]]] = {}
    compile_seconds: dict[int, float] = {}
    for num_layers in args.layers:
        for threads in args.threads:
            torch.set_num_threads(threads)
            steps, notes = build_steps(num_layers, lr=1e-3, compile_step=args.compile)
            compile_seconds.update({num_layers: s for s in notes.values()})
            load_before = load_average()
            times = round_robin(steps, args.steps, args.warmup)
            results[(num_layers, threads)] = {
                name: {clock: median_ms(t[clock]) for clock in ("wall", "cpu")}
                for name, t in times.items()}
            print(f"- K = {num_layers}, {threads} thread(s): load average {load_before} -> "
                  f"{load_average()}", flush=True)

    print("\nWall-clock time per step (what a notebook waits):\n")
    print(markdown_table(results, baseline, "wall"))
    print("\nCPU time per step (process_time, all threads; less sensitive to other processes "
          "on a shared machine):\n")
    print(markdown_table(results, baseline, "cpu"))
    if compile_seconds:
        print("\ntorch.compile: the first two steps (compilation) took "
              + ", ".join(f"{s:.0f} s at K = {k}" for k, s in compile_seconds.items())
              + " (the last thread setting's build).")

    if version is not None:
        print(f"\nTargets, {NOTEBOOK_ROW} against normflows:")
        for (num_layers, threads), row in results.items():
            target = TARGETS.get(num_layers)
            if target is None:
                continue
            verdicts = []
            for clock in ("wall", "cpu"):
                ratio = row["normflows"][clock] / row[NOTEBOOK_ROW][clock]
                verdict = "met" if ratio >= target else f"MISSED by {target / ratio:.2f}x"
                verdicts.append(f"{clock} {ratio:.1f}x ({verdict})")
            print(f"- K = {num_layers}, {threads} thread(s), target >= {target:.0f}x: "
                  + ", ".join(verdicts))
    print(f"\nLoad average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
