"""A diagonal Gaussian followed by planar layers with parameters of their own per example.

The posterior of the VAE, of the per-image fits and of the conditional flow is one family:

    z_0 = mu + sigma * eps, eps ~ N(0, I),   z_K = f_K o ... o f_1(z_0)   (the paper's order),
    log q_K(z_K) = log N(eps; 0, I) - sum_j log sigma_j - sum_k log|det df_k/dz_{k-1}|  (Eq. 13),

or, in the standardized order, z_K = mu + sigma * f_K o ... o f_1(eps), the same family of
densities (see ``vae.VAE``). ``sample`` maps drawn noise to (z_K, log q_K); ``log_prob`` gives
log q_K at any point by inverting the layers (``flows.planar_flow_inverse``).

Shapes: ``mu``, ``log_sigma`` (..., D) broadcast against the noise or points (..., D); the
layers' (w, u, b) are (..., K, D), (..., K, D), (..., K), as ``flows.planar_flow`` takes them
(u unconstrained; App. A.1 is applied there), or None for K = 0.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .flows import gaussian_log_prob, planar_flow, planar_flow_inverse

__all__ = ["sample", "log_prob"]


def sample(mu: Tensor, log_sigma: Tensor, flow_params: tuple[Tensor, Tensor, Tensor] | None,
           eps: Tensor, standardized: bool = False) -> tuple[Tensor, Tensor]:
    """(z_K, log q_K(z_K)) for the noise ``eps`` (reparameterized: differentiable in the
    parameters), by Eq. (13)."""
    sigma = torch.exp(log_sigma)
    log_q = gaussian_log_prob(eps, log_sigma)
    if flow_params is None:
        return mu + sigma * eps, log_q
    if standardized:  # z_K = mu + sigma * f(eps)
        eps_k, sum_log_det = planar_flow(eps, *flow_params)
        return mu + sigma * eps_k, log_q - sum_log_det
    z_k, sum_log_det = planar_flow(mu + sigma * eps, *flow_params)  # z_K = f(mu + sigma eps)
    return z_k, log_q - sum_log_det


def log_prob(z_k: Tensor, mu: Tensor, log_sigma: Tensor,
             flow_params: tuple[Tensor, Tensor, Tensor] | None,
             standardized: bool = False) -> Tensor:
    """Exact log q_K(z_K) at arbitrary points: z_0 = f_1^{-1} o ... o f_K^{-1}(z_K) layer by
    layer (each a monotone scalar equation along w, as w.u_hat > -1), then
    log q_K = log N(z_0; mu, sigma^2) - sum_k log|det df_k/dz_{k-1}| (Eq. 13); in the
    standardized order the layers act on (z - mu) / sigma."""
    z = (z_k - mu) * torch.exp(-log_sigma) if standardized else z_k
    sum_log_det = z.new_zeros(z.shape[:-1])
    if flow_params is not None:
        z, sum_log_det = planar_flow_inverse(z, *flow_params)
    eps = z if standardized else (z - mu) * torch.exp(-log_sigma)
    return gaussian_log_prob(eps, log_sigma) - sum_log_det
