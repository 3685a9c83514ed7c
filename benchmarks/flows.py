"""One Part 1 training step, timed side by side: normflows, a textbook flow, nfutils.

A step is what ``nfutils.training.fit_flow`` does each iteration: draw N = 1000 samples
z_K ~ q_K with log q_K (Eq. 13), the free energy F = mean(log q_K + U1(z_K)) (Eq. 15),
backward, one Adam step. Every implementation is a planar stack of K layers on a learnable
diagonal-Gaussian base, trained on the same target (``nfutils.potentials.U1``):

* ``normflows``: ``normflows.NormalizingFlow`` with K ``normflows.flows.Planar`` layers and a
  ``DiagGaussian`` base (the optional extra ``pip install -e ".[bench]"``), torch's default
  Adam; ``normflows + fused Adam``: the same with ``Adam(..., fused=True)``;
* ``textbook``: one ``nn.Module`` per layer with its own w, u, b, u_hat and log-det computed
  layer by layer, the way most tutorials write it (``nfutils.flows.PlanarLayer``);
* ``nfutils reference loop``: nfutils' stacked parameters run through the reference loop of
  ``nfutils.flows.planar`` (``fast_planar.use_fast_path(False)``; autograd records every
  operation);
* ``nfutils fast path, default Adam``: ``flows.make_flow("planar", 2, K)``, whose training
  path is one custom autograd Function with an analytic backward (in NumPy on the CPU);
* ``nfutils (as fit_flow runs it)``: the same with ``training.make_optimizer`` (fused Adam),
  which is what ``training.fit_flow`` and so the notebooks run; the targets apply to it;
* ``nfutils reference loop, torch.compile`` (with ``--compile``): the reference loop under
  ``torch.compile``; its compile time is reported separately, because a notebook pays it on
  every run.

Timings are interleaved round robin (see ``benchmarks.round_robin``) in turns of ``--block``
consecutive steps of one implementation (10; the first of each turn untimed, as it starts with
the caches another implementation filled, where a training loop runs its steps back to back;
``--block 1``: single steps, all timed), medians over ``--steps`` steps after ``--warmup``
steps, at K = 100 and K = 32, on 1 and 2 threads. Ratios are normflows' median over each
implementation's, measured in the same run, so that the load of other processes on a shared
machine affects both sides alike.

Run: ``python -m benchmarks.flows`` (about 75 s on an idle 2-core machine); the table of
benchmarks/README.md is ``benchmarks/results/flows_cpu.md``, written by this command.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import time
from typing import Callable

import torch
from torch import Tensor, nn

from benchmarks import load_average, machine_description, median_ms, round_robin
from nfutils import flows, training
from nfutils.flows import fast_planar
from nfutils.potentials import U1

NUM_SAMPLES = 1000
DIM = 2
TARGETS = {100: 10.0, 32: 8.0}  # targets: nfutils >= 10x faster than normflows at K = 100, 8x at 32


# --------------------------------------------------------------------------- textbook


class TextbookFlow(nn.Module):
    """A diagonal-Gaussian base and a ``ModuleList`` of K ``nfutils.flows.PlanarLayer``
    (one module per layer with its own w, u, b, the way most tutorials write it)."""

    def __init__(self, dim: int, flow_length: int):
        super().__init__()
        self.dim = dim
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_sigma = nn.Parameter(torch.zeros(dim))
        self.layers = nn.ModuleList(flows.PlanarLayer(dim) for _ in range(flow_length))

    def rsample(self, num_samples: int) -> tuple[Tensor, Tensor]:
        eps = torch.randn(num_samples, self.dim)
        z = self.mu + torch.exp(self.log_sigma) * eps
        log_q = flows.gaussian_log_prob(eps, self.log_sigma)
        for layer in self.layers:
            z, log_det = layer(z)
            log_q = log_q - log_det
        return z, log_q


# --------------------------------------------------------------------------- nfutils reference


def reference_rsample(model: flows.NormalizingFlow, num_samples: int) -> tuple[Tensor, Tensor]:
    """``model.rsample`` with the fast path switched off: the reference loop of
    ``nfutils.flows.planar``, autograd recording every operation."""
    with fast_planar.use_fast_path(False):
        return model.rsample(num_samples)


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


def build_steps(flow_length: int, lr: float, compile_step: bool) -> tuple[dict, dict]:
    """The implementations' step functions (same seed for each), and compile seconds."""
    steps: dict[str, Callable[[], None]] = {}
    notes: dict[str, float] = {}
    if normflows_version() is not None:
        import normflows as nf

        for fused in (False, True):
            torch.manual_seed(0)
            model = nf.NormalizingFlow(nf.distributions.DiagGaussian(DIM),
                                       [nf.flows.Planar((DIM,)) for _ in range(flow_length)])
            name = "normflows + fused Adam" if fused else "normflows"
            steps[name] = make_step(lambda m=model: m.sample(NUM_SAMPLES),
                                    torch.optim.Adam(model.parameters(), lr=lr, fused=fused))
    torch.manual_seed(0)
    textbook = TextbookFlow(DIM, flow_length)
    steps["textbook (per-layer modules)"] = make_step(
        lambda: textbook.rsample(NUM_SAMPLES), torch.optim.Adam(textbook.parameters(), lr=lr))
    torch.manual_seed(0)
    reference = flows.make_flow("planar", DIM, flow_length)
    steps["nfutils reference loop"] = make_step(
        lambda: reference_rsample(reference, NUM_SAMPLES),
        torch.optim.Adam(reference.parameters(), lr=lr))
    torch.manual_seed(0)
    fast = flows.make_flow("planar", DIM, flow_length)
    steps["nfutils fast path, default Adam"] = make_step(
        lambda: fast.rsample(NUM_SAMPLES), torch.optim.Adam(fast.parameters(), lr=lr))
    torch.manual_seed(0)
    notebook = flows.make_flow("planar", DIM, flow_length)
    steps[NOTEBOOK_ROW] = make_step(
        lambda: notebook.rsample(NUM_SAMPLES),
        training.make_optimizer(notebook.parameters(), "adam", lr))
    if compile_step:
        torch.manual_seed(0)
        compiled_model = flows.make_flow("planar", DIM, flow_length)

        @torch.compile
        def compiled_sample():
            return reference_rsample(compiled_model, NUM_SAMPLES)

        step = make_step(compiled_sample,
                         training.make_optimizer(compiled_model.parameters(), "adam", lr))
        start = time.perf_counter()
        step()
        step()
        notes["nfutils reference loop, torch.compile"] = time.perf_counter() - start
        steps["nfutils reference loop, torch.compile"] = step
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
    parser.add_argument("--block", type=int, default=10,
                        help="consecutive steps per turn, the first untimed (1: single steps)")
    parser.add_argument("--flow-lengths", type=int, nargs="+", default=[100, 32],
                        help="K values")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--compile", action="store_true",
                        help="also time the reference loop under torch.compile (minutes)")
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
    turns = (f"in turns of {args.block} consecutive steps, the first of each untimed"
             if args.block > 1 else "one step at a time")
    print(f"Median of {args.steps} steps after {args.warmup} warm-up steps, implementations "
          f"interleaved round robin in one process ({turns}); in brackets: {baseline}'s "
          "median / this median (how many times faster).\n")

    results: dict[tuple[int, int], dict[str, dict[str, float]]] = {}
    compile_seconds: dict[int, float] = {}
    for flow_length in args.flow_lengths:
        for threads in args.threads:
            torch.set_num_threads(threads)
            steps, notes = build_steps(flow_length, lr=1e-3, compile_step=args.compile)
            compile_seconds.update({flow_length: s for s in notes.values()})
            load_before = load_average()
            times = round_robin(steps, args.steps, args.warmup, args.block)
            results[(flow_length, threads)] = {
                name: {clock: median_ms(t[clock]) for clock in ("wall", "cpu")}
                for name, t in times.items()}
            print(f"- K = {flow_length}, {threads} thread(s): load average {load_before} -> "
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
        for (flow_length, threads), row in results.items():
            target = TARGETS.get(flow_length)
            if target is None:
                continue
            verdicts = []
            for clock in ("wall", "cpu"):
                ratio = row["normflows"][clock] / row[NOTEBOOK_ROW][clock]
                verdict = "met" if ratio >= target else f"MISSED by {target / ratio:.2f}x"
                verdicts.append(f"{clock} {ratio:.1f}x ({verdict})")
            print(f"- K = {flow_length}, {threads} thread(s), target >= {target:.0f}x: "
                  + ", ".join(verdicts))
    print(f"\nLoad average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
