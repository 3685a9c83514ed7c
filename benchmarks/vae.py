"""One VAE training step (Parts 3-4), timed side by side, and the IS log-likelihood's speed.

Sizes of the paper's MNIST experiment (Sec. 6.2): encoder 784-400-400 emitting the mean and
log standard deviation of q_0(z_0|x) and the K (2D + 1) parameters of K planar layers per
example, latent D = 40, decoder 40-400-400-784 (Bernoulli logits), minibatch of 100
dynamically binarized MNIST digits, one posterior sample per digit. A step is what
``nfutils.vae_training.fit_vae`` does: binarize, the annealed loss of Sec. 6.2
(E[log q_K - beta (log p(x|z_K) + log p(z_K))]), backward, one optimizer step.

Implementations, each at K = 0, 10 and 80:

* ``plain``: a self-contained reference written the usual way (``nn.Sequential`` MLPs, the
  flow as a per-layer loop with App. A.1 applied layer by layer, autograd through all of
  it), with torch's default Adam (which updates the parameters tensor by tensor);
* ``plain + fused Adam``: the same with ``torch.optim.Adam(..., fused=True)``;
* ``nfutils``: ``nfutils.vae.VAE`` trained as ``fit_vae`` trains it (``vae.bound`` with the
  stacked planar flow, ``training.make_optimizer``: fused Adam).

All use the same activation (``nfutils.vae.DEFAULT_ACTIVATION``) so that only the code
differs. Timings are interleaved round robin in one process (``benchmarks.round_robin``);
the ratio K = 80 / K = 0 of the same implementation is the target (<= 4x; the dense
arithmetic alone gives ~3.6x: 2.15 vs 0.60 GFLOP per step).

The importance-sampled log-likelihood (``vae.log_likelihood``, S = 5000 samples per digit,
evaluated in chunks of at most 20,000 sample-digit pairs, so that memory stays bounded at
about 63 MB of logits whatever S) is timed on a few test digits for K = 0, 10, 80.

Run: ``python -m benchmarks.vae`` (about 3 minutes on an idle 2-core CPU). The device is the CPU unless
``--device cuda`` is given.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks import load_average, machine_description, median_ms, round_robin
from nfutils import data, training, vae
from nfutils.flows import annealed_beta

LATENT_DIM = 40
HIDDEN = 400
BATCH = 100
DATA_DIM = 784
FLOW_LENGTHS = (0, 10, 80)
LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- plain reference


def _activation() -> nn.Module:
    return {"relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus,
            "tanh": nn.Tanh}[vae.DEFAULT_ACTIVATION]()


class PlainFlowVAE(nn.Module):
    """A reference VAE with an amortized planar-flow posterior, written layer by layer."""

    def __init__(self, latent_dim: int, flow_length: int):
        super().__init__()
        self.latent_dim, self.flow_length = latent_dim, flow_length
        self.encoder = nn.Sequential(nn.Linear(DATA_DIM, HIDDEN), _activation(),
                                     nn.Linear(HIDDEN, HIDDEN), _activation())
        self.to_gaussian = nn.Linear(HIDDEN, 2 * latent_dim)
        self.to_flow = (nn.Linear(HIDDEN, flow_length * (2 * latent_dim + 1))
                        if flow_length > 0 else None)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, HIDDEN), _activation(),
                                     nn.Linear(HIDDEN, HIDDEN), _activation(),
                                     nn.Linear(HIDDEN, DATA_DIM))

    def loss(self, x: Tensor, beta: float) -> Tensor:
        """E[log q_K(z_K|x) - beta (log p(x|z_K) + log p(z_K))], one sample per x."""
        features = self.encoder(x)
        mu, log_sigma = self.to_gaussian(features).chunk(2, dim=-1)
        eps = torch.randn_like(mu)
        z = mu + torch.exp(log_sigma) * eps
        log_q = -0.5 * (eps ** 2).sum(-1) - log_sigma.sum(-1) - 0.5 * self.latent_dim * LOG_2PI
        if self.to_flow is not None:
            dim, flow_length = self.latent_dim, self.flow_length
            w, u, b = self.to_flow(features).split(
                [flow_length * dim, flow_length * dim, flow_length], dim=-1)
            w = w.reshape(-1, flow_length, dim)
            u = u.reshape(-1, flow_length, dim)
            for k in range(flow_length):
                w_k, u_k, b_k = w[:, k], u[:, k], b[:, k]
                w_dot_u = (w_k * u_k).sum(-1, keepdim=True)
                u_hat = u_k + (F.softplus(w_dot_u) - 1.0 - w_dot_u) * w_k / (w_k ** 2).sum(
                    -1, keepdim=True)
                h = torch.tanh((z * w_k).sum(-1) + b_k)
                z = z + u_hat * h.unsqueeze(-1)
                psi_dot_u = (1.0 - h ** 2) * (w_k * u_hat).sum(-1)
                log_q = log_q - torch.log(torch.abs(1.0 + psi_dot_u))
        logits = self.decoder(z)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        log_pz = -0.5 * (z ** 2).sum(-1) - 0.5 * self.latent_dim * LOG_2PI
        return (log_q - beta * (log_px_z + log_pz)).mean()


# --------------------------------------------------------------------------- steps


def make_plain_step(flow_length: int, images: Tensor, fused: bool, device: torch.device):
    torch.manual_seed(0)
    model = PlainFlowVAE(LATENT_DIM, flow_length).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    state = {"step": 0}

    def step() -> None:
        start = (state["step"] * BATCH) % images.shape[0]
        x = torch.bernoulli(images[start:start + BATCH])
        loss = model.loss(x, annealed_beta(state["step"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        state["step"] += 1

    return step


def make_nfutils_step(flow_length: int, images: Tensor, device: torch.device):
    torch.manual_seed(0)
    model = vae.VAE(latent_dim=LATENT_DIM, flow_length=flow_length, hidden=HIDDEN).to(device)
    optimizer = training.make_optimizer(model.parameters(), "adam", 1e-3)
    generator = torch.Generator(device=device).manual_seed(0)
    state = {"step": 0}

    def step() -> None:  # the body of fit_vae's loop
        start = (state["step"] * BATCH) % images.shape[0]
        x = data.binarize(images[start:start + BATCH], generator=generator)
        terms = vae.bound(model, x, 1, annealed_beta(state["step"]), generator)
        training.check_finite_loss(terms.loss, state["step"])
        optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        optimizer.step()
        state["step"] += 1

    return step, model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed steps (median over them)")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--is-examples", type=int, default=10,
                        help="test digits for the S = 5000 log-likelihood timing (0: skip)")
    parser.add_argument("--is-samples", type=int, default=5000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--nfutils-only", action="store_true",
                        help="time nfutils alone (its K = 80 / K = 0 target), not the plain rows")
    args = parser.parse_args(argv)
    device = torch.device(args.device)

    print("# VAE training step (784-400-400 encoder, D = 40, 40-400-400-784 decoder, "
          "batch 100)\n")
    print(f"Machine: {machine_description()}; device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "") + ".")
    print(f"Activation {vae.DEFAULT_ACTIVATION!r}; median of {args.steps} steps after "
          f"{args.warmup} warm-up steps, all implementations interleaved round robin.\n")
    images = data.load_mnist("train")[0][:20_000].to(device)
    test_images = data.binarized_test_set()[0][: max(args.is_examples, 1)].to(device)

    for threads in args.threads:
        torch.set_num_threads(threads)
        steps, models = {}, {}
        for flow_length in FLOW_LENGTHS:
            if not args.nfutils_only:
                steps[f"plain, K = {flow_length}"] = make_plain_step(
                    flow_length, images, False, device)
                steps[f"plain + fused Adam, K = {flow_length}"] = make_plain_step(
                    flow_length, images, True, device)
            steps[f"nfutils, K = {flow_length}"], models[flow_length] = make_nfutils_step(
                flow_length, images, device)
        load_before = load_average()
        times = round_robin(steps, args.steps, args.warmup)
        print(f"## {threads} thread{'s' if threads > 1 else ''} (load average {load_before} -> "
              f"{load_average()})\n")
        print("| implementation | " + " | ".join(f"K = {k}" for k in FLOW_LENGTHS)
              + " | K = 80 / K = 0 |")
        print("|---|" + "---:|" * (len(FLOW_LENGTHS) + 1))
        variants = ("nfutils",) if args.nfutils_only else ("plain", "plain + fused Adam", "nfutils")
        for variant in variants:
            for clock in ("wall", "cpu"):
                row = {k: median_ms(times[f"{variant}, K = {k}"][clock]) for k in FLOW_LENGTHS}
                label = f"{variant} ({'wall' if clock == 'wall' else 'CPU'} time)"
                cells = [f"{row[k]:.1f} ms ({1000 * BATCH / row[k]:.0f} ex/s)" for k in FLOW_LENGTHS]
                print(f"| {label} | " + " | ".join(cells) + f" | {row[80] / row[0]:.2f}x |")
        verdicts = []
        for clock in ("wall", "cpu"):
            row = {k: median_ms(times[f"nfutils, K = {k}"][clock]) for k in FLOW_LENGTHS}
            ratio = row[80] / row[0]
            verdicts.append(f"{clock} {ratio:.2f}x ({'met' if ratio <= 4.0 else 'MISSED'})")
        print("\nTarget: nfutils' K = 80 step within 4x of its K = 0 step: "
              + ", ".join(verdicts) + ".\n")

        if args.is_examples > 0:
            print(f"Importance-sampled log p(x), S = {args.is_samples} samples per digit "
                  f"(vae.log_likelihood, default chunks), {args.is_examples} test digits:\n")
            print("| K | wall s | digits / s (wall) | CPU s | digits / CPU-s | "
                  "mean log p(x) (untrained model) |")
            print("|---:|---:|---:|---:|---:|---:|")
            for flow_length in FLOW_LENGTHS:
                model = models[flow_length].eval()
                generator = torch.Generator(device=device).manual_seed(1)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                cpu_start, start = time.process_time(), time.perf_counter()
                log_px = vae.log_likelihood(model, test_images[: args.is_examples],
                                            num_samples=args.is_samples, generator=generator)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start
                cpu = time.process_time() - cpu_start
                print(f"| {flow_length} | {seconds:.2f} | {args.is_examples / seconds:.2f} | "
                      f"{cpu:.2f} | {args.is_examples / cpu:.2f} | {float(log_px.mean()):.1f} |")
            print()
    print(f"Load average at the end: {load_average()}.")


if __name__ == "__main__":
    main()
