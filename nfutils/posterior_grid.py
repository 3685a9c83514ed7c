"""The true posterior of a 2-D latent VAE on a grid, beside its flow posterior.

For a 2-D latent, p(z|x) ∝ p(x|z) p(z) can be computed on a fine grid and normalized by
quadrature; q_K(z|x) is exact at every point (``bounds.log_q_at``). The two side by side, and
KL(q || p(.|x)) by quadrature, show what a flow posterior captures of the true one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .bounds import log_q_at

if TYPE_CHECKING:
    from .vae import VAE

__all__ = ["GridPosterior", "grid_posterior", "lattice_points"]


@dataclass
class GridPosterior:
    """The true posterior and q on a fine grid of a 2-D latent plane, for one x.

    Densities are arrays (R, R) indexed [row = z2, column = z1] over ``extent`` =
    (z1_min, z1_max, z2_min, z2_max) (the convention of ``nfutils.plotting``).

    Attributes:
        extent: the square the grid covers.
        log_posterior: log p(z|x) = log p(x|z) + log p(z) - log p(x), (R, R).
        log_q: log q_K(z|x), (R, R).
        log_px: log p(x) by quadrature on the grid (exact up to grid error, 2-D only).
        kl: KL(q || p(.|x)) in nats, by quadrature: sum_i q_i (log q_i - log p_i) dA.
        q_mass: the mass of q inside the grid (close to 1 when the grid covers q; p(.|x) is
            normalized on the grid, so compare ``log_px`` with an importance-sampled estimate
            to check that the grid covers the posterior).
    """

    extent: tuple[float, float, float, float]
    log_posterior: Tensor
    log_q: Tensor
    log_px: float
    kl: float
    q_mass: float


def lattice_points(extent, resolution: int, dtype) -> tuple[Tensor, float]:
    """The points of a grid of ``resolution`` points per axis whose first and last points lie
    on the edges of ``extent`` (z1_min, z1_max, z2_min, z2_max), row-major over (z2, z1), and
    the area dA of one cell: the quadrature grid of log p(x) = logsumexp_i [...] + log dA."""
    z1 = torch.linspace(extent[0], extent[1], resolution, dtype=dtype)
    z2 = torch.linspace(extent[2], extent[3], resolution, dtype=dtype)
    rows, cols = torch.meshgrid(z2, z1, indexing="ij")
    points = torch.stack([cols, rows], dim=-1).reshape(-1, 2)  # row-major over (z2, z1)
    cell = float((z1[1] - z1[0]) * (z2[1] - z2[0]))
    return points, cell


@torch.no_grad()
def grid_posterior(model: VAE, x: Tensor, resolution: int = 200, coarse_extent: float = 6.0, coarse_resolution: int = 121,
                   threshold: float = 1e-4, batch: int = 20_000) -> list[GridPosterior]:
    """True posterior p(z|x) ∝ p(x|z) p(z) and q_K(z|x) on a grid, with KL(q || p) in nats.

    For a 2-D latent the evidence is a 2-D integral, computed by quadrature:
    log p(x) = logsumexp_i [log p(x|z_i) + log p(z_i)] + log dA. The grid is fitted to each
    x: a coarse pass over [-coarse_extent, coarse_extent]^2 finds the cells
    where p(.|x) or q exceeds ``threshold`` times its maximum, and the fine grid covers their
    bounding box with a margin of 25%.

    Args:
        model: a ``VAE`` with latent_dim = 2. x: (B, data_dim).
        resolution: R, points per axis of the fine grid.
        batch: grid points per decoder call.

    Returns:
        one ``GridPosterior`` per row of x.
    """
    if model.latent_dim != 2:
        raise ValueError(f"grid_posterior needs a 2-D latent; the model has {model.latent_dim}")
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    results = []
    for i in range(x.shape[0]):
        x_i = x[i : i + 1].to(device)

        def log_densities(points: Tensor) -> tuple[Tensor, Tensor]:
            log_joint, log_q = [], []
            for start in range(0, points.shape[0], batch):
                z = points[start : start + batch].to(device).unsqueeze(1)  # (G, 1, 2)
                log_joint.append(model.log_prob_x_given_z(x_i, z)[:, 0] + model.log_prior(z)[:, 0])
                log_q.append(log_q_at(model, x_i, z)[:, 0])
            return torch.cat(log_joint).cpu(), torch.cat(log_q).cpu()

        box = (-coarse_extent, coarse_extent, -coarse_extent, coarse_extent)
        points, _ = lattice_points(box, coarse_resolution, dtype)
        log_joint, log_q = log_densities(points)
        keep = ((log_joint > log_joint.max() + math.log(threshold))
                | (log_q > log_q.max() + math.log(threshold)))
        low, high = points[keep].min(0).values, points[keep].max(0).values
        step = 2 * coarse_extent / (coarse_resolution - 1)
        margin = 0.25 * (high - low) + 2 * step
        fine = (float(low[0] - margin[0]), float(high[0] + margin[0]),
                float(low[1] - margin[1]), float(high[1] + margin[1]))
        points, cell = lattice_points(fine, resolution, dtype)
        log_joint, log_q = log_densities(points)
        log_px = torch.logsumexp(log_joint.double(), 0) + math.log(cell)
        log_post = log_joint.double() - log_px
        log_q = log_q.double()
        q_cell = torch.exp(log_q) * cell
        kl = float((q_cell * (log_q - log_post)).sum())
        results.append(GridPosterior(
            extent=fine,
            log_posterior=log_post.reshape(resolution, resolution),
            log_q=log_q.reshape(resolution, resolution),
            log_px=float(log_px), kl=kl, q_mass=float(q_cell.sum()),
        ))
    return results
