"""Unnormalized 2-D target densities p(z) = exp(-U(z)) / Z of Rezende & Mohamed (2015), Table 1.

U is the target's energy (an ``Energy``: a function z -> U(z)); the paper's Table 1 calls
these functions potentials, hence the module's name and ``POTENTIALS``.

With the helper functions

    w1(z) = sin(2 pi z1 / 4),
    w2(z) = 3 exp(-0.5 ((z1 - 1) / 0.6)^2),
    w3(z) = 3 sigmoid((z1 - 1) / 0.3),

the four energies of Table 1 are

    U1(z) = 0.5 ((||z|| - 2) / 0.4)^2 - log(exp(-0.5 ((z1 - 2) / 0.6)^2) + exp(-0.5 ((z1 + 2) / 0.6)^2))
    U2(z) = 0.5 ((z2 - w1(z)) / 0.4)^2
    U3(z) = -log(exp(-0.5 ((z2 - w1(z)) / 0.35)^2) + exp(-0.5 ((z2 - w1(z) + w2(z)) / 0.35)^2))
    U4(z) = -log(exp(-0.5 ((z2 - w1(z)) / 0.4)^2) + exp(-0.5 ((z2 - w1(z) + w3(z)) / 0.35)^2))

U2-U4 do not depend on z1 except through the wiggle, so exp(-U) is not integrable along z1;
``tapered`` multiplies them by a smooth box (the paper's figures show the window [-4, 4]^2).
Every function takes z of shape (..., 2) and returns U of shape (...). The sums of
exponentials are computed with ``logaddexp``, which is exact and never overflows.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Energy", "U1", "U2", "U3", "U4", "U8", "tapered", "rotated_U1", "gaussian_energy",
           "log_partition", "square_extent", "density_grid", "POTENTIALS"]

#: An energy U: points z (..., 2) -> U(z) (...); the target density is exp(-U) / Z.
Energy = Callable[[Tensor], Tensor]


def _check_2d(z: Tensor) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor of shape (..., 2), got {type(z).__name__}")
    if z.dim() < 1 or z.shape[-1] != 2:
        raise ValueError(f"z must have shape (..., 2); received shape {tuple(z.shape)}")


def _w1(z1: Tensor) -> Tensor:
    return torch.sin(2.0 * math.pi * z1 / 4.0)


def _w2(z1: Tensor) -> Tensor:
    return 3.0 * torch.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)


def _w3(z1: Tensor) -> Tensor:
    return 3.0 * torch.sigmoid((z1 - 1.0) / 0.3)


def _ring(z: Tensor, radius: float, angle: Tensor | float = 0.0) -> Tensor:
    """U1's two-lobed ring of radius r, its lobes along the direction ``angle`` (Table 1):

        0.5 ((||z|| - r) / 0.4)^2 - log(exp(-0.5 ((a - r) / 0.6)^2) + exp(-0.5 ((a + r) / 0.6)^2)),

    with a = z projected on that direction (a = z1 for U1).
    """
    norm = torch.linalg.vector_norm(z, dim=-1)
    if isinstance(angle, (int, float)):  # a fixed direction: fewer tensor operations
        along = z[..., 0] if angle == 0 else z[..., 0] * math.cos(angle) + z[..., 1] * math.sin(angle)
    else:
        angle = torch.as_tensor(angle, dtype=z.dtype, device=z.device)
        along = z[..., 0] * torch.cos(angle) + z[..., 1] * torch.sin(angle)
    ring = 0.5 * ((norm - radius) / 0.4) ** 2
    lobes = -torch.logaddexp(-0.5 * ((along - radius) / 0.6) ** 2,
                             -0.5 * ((along + radius) / 0.6) ** 2)
    return ring + lobes


def U1(z: Tensor) -> Tensor:
    """Table 1, U1: a ring of radius 2 with two lobes on the z1 axis. z: (..., 2) -> (...)."""
    _check_2d(z)
    return _ring(z, 2.0)


def U2(z: Tensor) -> Tensor:
    """Table 1, U2: a sine-shaped ridge, 0.5 ((z2 - w1) / 0.4)^2. z: (..., 2) -> (...)."""
    _check_2d(z)
    z1, z2 = z[..., 0], z[..., 1]
    return 0.5 * ((z2 - _w1(z1)) / 0.4) ** 2


def U3(z: Tensor) -> Tensor:
    """Table 1, U3: the sine ridge split by the bump w2. z: (..., 2) -> (...)."""
    _check_2d(z)
    z1, z2 = z[..., 0], z[..., 1]
    w1 = _w1(z1)
    return -torch.logaddexp(
        -0.5 * ((z2 - w1) / 0.35) ** 2, -0.5 * ((z2 - w1 + _w2(z1)) / 0.35) ** 2)


def U4(z: Tensor) -> Tensor:
    """Table 1, U4: the sine ridge and a copy shifted by the step w3. z: (..., 2) -> (...)."""
    _check_2d(z)
    z1, z2 = z[..., 0], z[..., 1]
    w1 = _w1(z1)
    return -torch.logaddexp(
        -0.5 * ((z2 - w1) / 0.4) ** 2, -0.5 * ((z2 - w1 + _w3(z1)) / 0.35) ** 2)


def U8(z: Tensor) -> Tensor:
    """A custom eight-lobed target: U1's ring pattern with radius 3, rotated by 0, pi/4, pi/2
    and 3 pi/4, and the four energies summed,

        U8(z) = sum_{j=0}^{3} U_ring(z; radius 3, lobes along angle j pi/4).

    Summing energies multiplies the four densities: a point is likely only where it is
    likely under every copy, which leaves eight lobes on the ring of radius 3, centred
    half-way between the copies' lobe directions (at pi/8 + j pi/4). (Summing the densities
    instead would give an almost uniform ring: neighbouring lobes 45 degrees apart overlap.)

    z: (..., 2) -> (...).
    """
    _check_2d(z)
    return sum(_ring(z, 3.0, j * math.pi / 4) for j in range(4))


def rotated_U1(z: Tensor, angle: Tensor | float, radius: float = 2.0) -> Tensor:
    """A family of targets: U1's ring with its two lobes along the direction ``angle``.

    rotated_U1(z, 0, 2) equals U1(z); rotated_U1(z, theta) = U1(R(-theta) z).

    Args:
        z: (..., 2).
        angle: radians, a float or a tensor broadcastable to z.shape[:-1] (one angle per
            point or per row: batched over angles).
        radius: the ring's radius (and the lobes' distance from the origin).

    Returns:
        U, shape broadcast of z.shape[:-1] and angle's shape.
    """
    _check_2d(z)
    angle = torch.as_tensor(angle, dtype=z.dtype, device=z.device)
    try:
        torch.broadcast_shapes(z.shape[:-1], angle.shape)
    except RuntimeError:
        raise ValueError(
            f"angle of shape {tuple(angle.shape)} must broadcast against z.shape[:-1] = "
            f"{tuple(z.shape[:-1])}"
        ) from None
    return _ring(z, radius, angle)


def gaussian_energy(mean: Tensor, std: Tensor) -> Energy:
    """U(z) = 0.5 ||(z - mean) / std||^2, an unnormalized Gaussian; log Z is known in closed
    form (sum log std + (D/2) log 2 pi), which makes it a test case for ``log_partition``."""

    def energy(z: Tensor) -> Tensor:
        return 0.5 * (((z - mean) / std) ** 2).sum(-1)

    energy.__name__ = "gaussian"
    return energy


def tapered(energy: Energy, radius: float = 4.0, width: float = 0.1) -> Energy:
    """Make an energy U normalizable by a smooth box mask.

    U_tapered(z) = U(z) - log m(z),  m(z) = prod_i sigmoid((radius - |z_i|) / width),

    so -log m(z) = sum_i softplus((|z_i| - radius) / width): about 0 inside |z|_inf < radius
    (below 5e-5 at |z_i| = radius - 1 with the defaults) and growing linearly outside, so
    exp(-U) decays exponentially beyond the box.

    Args:
        energy: U, (..., 2) -> (...).
        radius: half-width of the box. width: length over which the mask falls.
    """
    if radius <= 0 or width <= 0:
        raise ValueError(f"radius and width must be > 0, got {radius}, {width}")

    def tapered_energy(z: Tensor) -> Tensor:
        barrier = F.softplus((z.abs() - radius) / width).sum(-1)
        return energy(z) + barrier

    name = getattr(energy, "__name__", "U")
    tapered_energy.__name__ = f"tapered_{name}"
    tapered_energy.__doc__ = f"{name} tapered outside |z|_inf < {radius}."
    return tapered_energy


def square_extent(extent) -> tuple[float, float, float, float]:
    """(xmin, xmax, ymin, ymax) from a half-width ``e`` ([-e, e]^2) or a 4-tuple."""
    if isinstance(extent, (int, float)):
        if extent <= 0:
            raise ValueError(f"a half-width extent must be > 0, got {extent}")
        return (-float(extent), float(extent), -float(extent), float(extent))
    if len(extent) != 4:
        raise ValueError(f"extent must be a half-width or (xmin, xmax, ymin, ymax); got {extent}")
    return tuple(float(e) for e in extent)  # type: ignore[return-value]


def density_grid(extent=4.0, resolution: int = 200, dtype=torch.float64, device=None
                 ) -> tuple[Tensor, float]:
    """Cell centres of a square grid, for quadrature and images.

    Args:
        extent: a half-width (grid on [-e, e]^2) or a box (xmin, xmax, ymin, ymax).
        resolution: cells per side.

    Returns:
        (points of shape (resolution, resolution, 2) indexed [row = z2, column = z1], the
        area of one cell).
    """
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    xmin, xmax, ymin, ymax = square_extent(extent)
    dx = (xmax - xmin) / resolution
    dy = (ymax - ymin) / resolution
    xs = torch.linspace(xmin + dx / 2, xmax - dx / 2, resolution, dtype=dtype, device=device)
    ys = torch.linspace(ymin + dy / 2, ymax - dy / 2, resolution, dtype=dtype, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1), dx * dy


#: ``log_partition`` warns when the outermost ring of grid cells holds more than this
#: fraction of exp(-U)'s mass on the grid: the grid then cuts off part of the mass.
EDGE_MASS_WARNING = 1e-6


def log_partition(energy: Energy, extent=6.0, resolution: int = 1000) -> float:
    """log Z = log of the integral of exp(-U(z)) dz, by the midpoint rule on a grid (float64).

    log Z ~ log sum_i exp(-U(z_i)) + log dA over the cell centres z_i of area dA.

    With it a notebook reports KL(q || p) = F + log Z in nats (``flows.free_energy``).
    The midpoint rule converges fast for these smooth energies: 1000 cells per side on
    [-6, 6]^2 agree with 2000 to better than 1e-3 (a test checks this).

    Args:
        energy: U, (..., 2) -> (...); +inf where the density is 0.
        extent: half-width or (xmin, xmax, ymin, ymax); must hold all but a negligible part
            of the mass.
        resolution: cells per side.

    Returns:
        log Z as a Python float.

    Raises:
        ValueError: if U is NaN or -inf somewhere on the grid, or +inf everywhere.

    Warns:
        UserWarning: if the outermost ring of cells holds more than ``EDGE_MASS_WARNING`` of
            the mass (the grid misses mass beyond it: log Z is too small; widen ``extent``).
    """
    points, cell_area = density_grid(extent, resolution)
    with torch.no_grad():
        energies = energy(points.reshape(-1, 2))
    if energies.shape != (resolution * resolution,):
        raise ValueError(f"U must map points (n, 2) to energies (n,); received shape "
                         f"{tuple(energies.shape)} for n = {resolution * resolution}")
    energies = energies.double()
    bad = torch.isnan(energies) | (energies == -math.inf)
    if bool(bad.any()):
        where = points.reshape(-1, 2)[bad.nonzero()[0, 0]].tolist()
        raise ValueError(
            f"U is NaN or -inf at {int(bad.sum())} of {energies.numel()} grid points (e.g. at "
            f"z = ({where[0]:.3g}, {where[1]:.3g})); expected finite energies or +inf")
    if not bool(torch.isfinite(energies).any()):
        raise ValueError("U is not finite anywhere on the grid; check the extent")
    log_density = -energies.reshape(resolution, resolution)
    log_mass = torch.logsumexp(log_density.flatten(), dim=0)
    ring = torch.cat([log_density[0], log_density[-1], log_density[1:-1, 0],
                      log_density[1:-1, -1]])
    edge_fraction = float(torch.exp(torch.logsumexp(ring, dim=0) - log_mass))
    if edge_fraction > EDGE_MASS_WARNING:
        warnings.warn(
            f"log_partition: the outermost cells of the grid hold {edge_fraction:.2g} of the "
            f"mass (expected below {EDGE_MASS_WARNING:g}); exp(-U) is cut off at the edge "
            f"of extent={extent!r} and log Z is underestimated: widen the extent",
            stacklevel=2,
        )
    return float(log_mass) + math.log(cell_area)


#: The paper's four energies (U2-U4 tapered to [-4, 4]^2) and the custom U8, by name.
POTENTIALS: dict[str, Energy] = {
    "U1": U1,
    "U2": tapered(U2),
    "U3": tapered(U3),
    "U4": tapered(U4),
    "U8": U8,
}
