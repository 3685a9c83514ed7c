"""The bound of Eq. (20) and the importance-sampled log-likelihood of a VAE.

The bound (negative free energy, Eq. 20), estimated with S samples z_0 ~ q_0(.|x) per x:

    -F(x) = E_q0[ log p(x|z_K) + log p(z_K) - log q_0(z_0|x) + sum_k log|det_k| ]
          = E[log p(x|z_K)]  -  E[log q_K(z_K|x) - log p(z_K)]
          = reconstruction   -  KL part (a Monte-Carlo estimate of KL(q_K(.|x) || p)).

During training the paper anneals the joint (Sec. 6.2): it minimizes
E[log q_K(z_K|x) - beta_t (log p(x|z_K) + log p(z_K))] with beta_t = min(1, 0.01 + t/10_000)
(``flows.annealed_beta``), so early on the posterior is pushed towards high entropy.

The log-likelihood is estimated by importance sampling with the flow posterior as proposal,

    log p(x) ~ log (1/S) sum_s p(x, z_s) / q_K(z_s|x),   z_s ~ q_K(.|x),

computed with logsumexp in chunks of samples so that S = 5000 fits in memory
(``log_likelihood``). It is a stochastic lower bound of log p(x) whose gap shrinks as S grows
(Burda et al., 2016); for S = 1 it is the ELBO. ``log_q_at`` gives the exact log q_K(z|x) at
any point, by inverting the flow. ``evaluate_per_image`` composes the two into the evaluation
that compares models paired: the same images and the same random streams for every model.

Every function takes a ``vae.VAE`` (or any module with its methods); this module does not
import the model, so ``vae`` can offer these functions under its own name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import gaussian_flow

if TYPE_CHECKING:
    from .vae import VAE

__all__ = ["BoundTerms", "bound", "evaluate_per_image", "log_likelihood", "log_q_at"]


@dataclass
class BoundTerms:
    """The bound of Eq. (20) per example, in nats, averaged over S samples.

    Attributes:
        elbo: -F(x) = reconstruction - kl, (B,).
        reconstruction: E[log p(x|z_K)], (B,).
        kl: E[log q_K(z_K|x) - log p(z_K)], (B,) (a Monte-Carlo estimate of KL(q_K || p)).
        loss: the scalar to minimize, mean over the batch of
            E[log q_K - beta (log p(x|z_K) + log p(z_K))] (equal to -mean(elbo) at beta = 1).
    """

    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor
    loss: Tensor


def bound(model: VAE, x: Tensor, num_samples: int = 1, beta: float = 1.0,
          generator: torch.Generator | None = None) -> BoundTerms:
    """The bound -F(x) of Eq. (20) with S samples per x, and the annealed training loss.

    -F(x) ~ (1/S) sum_s [log p(x|z_K^s) + log p(z_K^s) - log q_0(z_0^s|x) + sum_k log|det_k^s|]

    Args:
        model: a ``VAE`` (or any module with ``log_weights``).
        x: (B, data_dim) binary images.
        num_samples: S, samples z_0 ~ q_0(.|x) per x.
        beta: inverse temperature on log p(x|z_K) + log p(z_K) (Sec. 6.2; ``annealed_beta``).
        generator: random numbers of the samples.

    Returns:
        ``BoundTerms``; differentiable.
    """
    log_px_z, log_pz, log_q = model.log_weights(x, num_samples, generator)
    reconstruction = log_px_z.mean(0)
    kl = (log_q - log_pz).mean(0)
    elbo = reconstruction - kl
    if beta == 1.0:
        loss = -elbo.mean()
    else:
        loss = (log_q - beta * (log_px_z + log_pz)).mean()
    return BoundTerms(elbo=elbo, reconstruction=reconstruction, kl=kl, loss=loss)


@torch.no_grad()
def log_likelihood(model: VAE, x: Tensor, num_samples: int = 5000, batch: int = 100,
                   chunk: int | None = None, generator: torch.Generator | None = None,
                   return_elbo: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """Importance-sampled log p(x) with the flow posterior as proposal (Burda et al., 2016).

    log p(x) ~ logsumexp_s [log p(x|z_s) + log p(z_s) - log q_K(z_s|x)] - log S,  z_s ~ q_K(.|x).

    The S samples are drawn in chunks of ``chunk`` samples; each chunk's logsumexp is kept and
    the chunks are combined with one more logsumexp, so memory grows with ``chunk * batch``,
    not with S.

    Args:
        model: a ``VAE`` (evaluated as is; put it in eval mode yourself if it has dropout).
        x: (N, data_dim) binary images, on the model's device or the CPU.
        num_samples: S (the paper: 200 for Table 2; 5000 for a tighter estimate).
        batch: examples per forward pass.
        chunk: samples per forward pass (default: as many as keep chunk * batch <= 20_000).
        generator: random numbers (reproducible estimates).
        return_elbo: also return the ELBO estimated from the same samples (the mean log-weight).

    Returns:
        log p(x) estimates, (N,) on the CPU (float64); with ``return_elbo``, (log_px, elbo).
    """
    if num_samples < 1 or batch < 1:
        raise ValueError(f"need num_samples >= 1 and batch >= 1; got {num_samples}, {batch}")
    if x.dim() != 2 or x.shape[-1] != model.data_dim:
        raise ValueError(
            f"x must have shape (N, {model.data_dim}) (a batch of flattened images); received "
            f"{tuple(x.shape)}")
    if chunk is None:
        chunk = max(1, min(num_samples, 20_000 // batch))
    device = next(model.parameters()).device
    log_px_all, elbo_all = [], []
    for start in range(0, x.shape[0], batch):
        x_batch = x[start : start + batch].to(device)
        chunk_lse, chunk_sum = [], x_batch.new_zeros(x_batch.shape[0], dtype=torch.float64)
        remaining = num_samples
        while remaining > 0:
            size = min(chunk, remaining)
            log_px_z, log_pz, log_q = model.log_weights(x_batch, size, generator)
            log_w = (log_px_z + log_pz - log_q).double()  # (size, b)
            chunk_lse.append(torch.logsumexp(log_w, dim=0))
            chunk_sum += log_w.sum(0)
            remaining -= size
        log_px = torch.logsumexp(torch.stack(chunk_lse), dim=0) - math.log(num_samples)
        log_px_all.append(log_px.cpu())
        elbo_all.append((chunk_sum / num_samples).cpu())
    log_px = torch.cat(log_px_all)
    return (log_px, torch.cat(elbo_all)) if return_elbo else log_px


@torch.no_grad()
def evaluate_per_image(model: VAE, x: Tensor, elbo_samples: int,
                       estimates: dict[str, tuple[int, int]], seed: int = 0,
                       batch: int = 500) -> dict[str, Tensor]:
    """Per-image bound terms and importance-sampled log p(x) of one model, paired by its seeds.

    The free energy of Eq. (15), written for the flow in Eq. (20), with S = ``elbo_samples``
    (``bound``): -F(x) ~ (1/S) sum_s [log p(x|z_K^s) + log p(z_K^s) - log q_K(z_K^s|x)]
    = reconstruction - kl; and each estimate, with its own S (``log_likelihood``):
    log p(x) ~ log (1/S) sum_s w_s = logsumexp_s(log w_s) - log S, the log-mean-exp of weights.
    Stream i draws from a generator seeded ``seed * 10 + i``: i = 0 for the bound, 1, 2, ...
    for ``estimates`` in order, so every model is measured with the same random numbers.

    Args:
        model: a ``VAE``. x: (N, data_dim) binary images.
        elbo_samples: S of the bound (all N images, ``batch`` at a time).
        estimates: name -> (S, the first how many images) of each log p(x) estimate.
        seed: the seed of the streams.
        batch: images per call of ``bound``.

    Returns:
        ``reconstruction`` and ``kl`` (N,), and each estimate by its name; float64, on the CPU.
    """
    device = next(model.parameters()).device
    streams = [torch.Generator(device=device).manual_seed(seed * 10 + i)
               for i in range(len(estimates) + 1)]
    terms = [bound(model, x[start : start + batch].to(device), elbo_samples, generator=streams[0])
             for start in range(0, x.shape[0], batch)]
    values = {"reconstruction": torch.cat([t.reconstruction for t in terms]).double().cpu(),
              "kl": torch.cat([t.kl for t in terms]).double().cpu()}
    for index, (name, (num_samples, num_images)) in enumerate(estimates.items(), start=1):
        values[name] = log_likelihood(model, x[:num_images], num_samples, generator=streams[index])
    return values


@torch.no_grad()
def log_q_at(model: VAE, x: Tensor, z_k: Tensor) -> Tensor:
    """Exact log q_K(z_K|x) at arbitrary points, by inverting the per-example flow.

    z_0 = f_1^{-1} o ... o f_K^{-1}(z_K) (``flows.planar_flow_inverse``, layer by layer), then
    log q_K(z_K|x) = log N(z_0; mu(x), sigma(x)^2) - sum_k log|det df_k/dz_{k-1}| (Eq. 13)
    (with ``standardized_flow`` the layers act on (z - mu) / sigma instead).

    Args:
        model: a ``VAE``. x: (B, data_dim). z_k: (G, B, D) points (G per example).

    Returns:
        (G, B).
    """
    mu, log_sigma, flow_params = model.encode(x)
    if z_k.dim() != 3 or z_k.shape[1:] != mu.shape:
        raise ValueError(
            f"z_k must have shape (G, {mu.shape[0]}, {mu.shape[1]}) (G points per example); "
            f"received {tuple(z_k.shape)}")
    return gaussian_flow.log_prob(z_k, mu, log_sigma, flow_params, model.standardized_flow)
