"""KL(q || p) by Monte Carlo, with its standard error, for a target known up to its normalizer.

For a target p(z) = exp(-U(z)) / Z and samples z_i ~ q, the free energy of Eq. (15) at beta = 1
is F = E_q[log q(z) + U(z)] = KL(q || p) - log Z, so

    KL(q || p) = E_q[log q(z) + U(z)] + log Z
               ~ (1/n) sum_i [log q(z_i) + U(z_i)] + log Z,

with standard error std_i[log q(z_i) + U(z_i)] / sqrt(n). When q = p the terms are all equal
to -log Z and the estimate is exactly 0 with zero spread: the closer q is to p, the fewer
samples the estimate needs.

``monte_carlo_kl`` is the estimator itself; ``flow_kl`` applies it to a flow q_K
(``flows.NormalizingFlow``) and ``conditional_kl`` to a conditional flow q(z | c)
(``amortized.AmortizedPlanarFlow``), one estimate per condition. The same estimator gives a
VAE's posterior gap: with U(z) = -log p(x, z) and log Z = log p(x),
KL(q(.|x) || p(.|x)) = log p(x) - E_q[log p(x, z) - log q(z|x)].

In two dimensions, where q's density is exact (a flow inverted), the same KL is also a sum over
the cells of a grid, ``quadrature_kl``: a check of the Monte-Carlo estimate with no sampling.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["monte_carlo_kl", "quadrature_kl", "flow_kl", "conditional_kl"]


def monte_carlo_kl(log_q: Tensor, energy_values: Tensor,
                   log_Z: Tensor | float = 0.0) -> tuple[Tensor, Tensor]:
    """KL(q || p) = E_q[log q + U] + log Z in nats, with its standard error, over the last axis.

    Args:
        log_q: log q(z_i) at samples z_i ~ q, shape (..., n).
        energy_values: U(z_i) at the same samples, shape (..., n).
        log_Z: log of the target's normalizer, a float or shape (...).

    Returns:
        (kl, standard_error), each of shape (...): the sample mean of log q + U, plus log Z,
        and the sample standard deviation of log q + U over sqrt(n) (0 when n = 1).

    Raises:
        ValueError: the two shapes differ.
    """
    if log_q.shape != energy_values.shape or log_q.dim() < 1:
        raise ValueError(f"log_q and energy_values must have the same shape (..., n); received "
                         f"{tuple(log_q.shape)} and {tuple(energy_values.shape)}")
    terms = log_q + energy_values
    num = terms.shape[-1]
    spread = terms.std(-1) if num > 1 else torch.zeros_like(terms[..., 0])
    return terms.mean(-1) + log_Z, spread / math.sqrt(num)


def quadrature_kl(log_q: Tensor, energy_values: Tensor, log_Z: float, cell_area: float
                  ) -> tuple[float, float]:
    """KL(q || p) by quadrature over the cells of a grid, for a q whose density is exact:

        KL = sum_cells q (log q + U + log Z) dA,   mass = sum_cells q dA,

    where p = exp(-U) / Z; cells where q underflows to 0 add nothing. The mass is close to 1
    when the grid covers q (a check of the grid, and of q's normalization).

    Args:
        log_q: exact log q at the cell centres. energy_values: U there, the same shape.
        log_Z: log of the target's normalizer. cell_area: dA.

    Returns:
        (kl, mass) as floats.
    """
    q = log_q.exp()
    terms = torch.where(q > 0, q * (log_q + energy_values + log_Z), torch.zeros_like(q))
    return float(terms.sum() * cell_area), float(q.sum() * cell_area)


@torch.no_grad()
def flow_kl(model, energy: Callable[[Tensor], Tensor], log_Z: float,
            num_samples: int = 10_000, generator: torch.Generator | None = None
            ) -> tuple[Tensor, Tensor]:
    """KL(q_K || p) in nats of a flow against the target exp(-U) / Z (Eq. 15 plus log Z).

    Args:
        model: a flow with ``rsample(n, generator=...) -> (z_K (n, D), log_q (n,))``, e.g.
            ``flows.NormalizingFlow``.
        energy: U, (n, D) -> (n,).
        log_Z: log Z of the target (e.g. ``potentials.log_partition``).
        num_samples: n (the model's ``rsample`` checks it). generator: random numbers of the
            samples.

    Returns:
        (kl, standard_error), two 0-d tensors.
    """
    z_k, log_q = model.rsample(num_samples, generator=generator)
    return monte_carlo_kl(log_q, energy(z_k), log_Z)


@torch.no_grad()
def conditional_kl(model, energy: Callable[[Tensor, Tensor], Tensor], condition: Tensor,
                   log_Z: Tensor | float, num_samples: int = 20_000,
                   generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """KL(q(.|c) || p(.|c)) in nats for each of B conditions, by Monte Carlo.

    Args:
        model: a conditional flow with ``rsample(condition, n, generator=...) ->
            (z_K (B, n, D), log_q (B, n))``, e.g. ``amortized.AmortizedPlanarFlow``.
        energy: U(z; c), (B, n, D) and (B, C) -> (B, n) (e.g. ``amortized.ring_energy``).
        condition: (B, C), or (B,) for a single number per condition.
        log_Z: log Z(c), a float or shape (B,).
        num_samples: n per condition (the model's ``rsample`` checks it). generator: random
            numbers of the samples.

    Returns:
        (kl, standard_error), each of shape (B,).
    """
    if condition.dim() == 1:
        condition = condition.unsqueeze(-1)
    z_k, log_q = model.rsample(condition, num_samples, generator=generator)
    return monte_carlo_kl(log_q, energy(z_k, condition), log_Z)
