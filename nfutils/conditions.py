"""A family of 2-D targets and the features by which a network sees its condition.

A *family* of targets p(z | c) ∝ exp(-U(z; c)): here U1's ring (``potentials.U1``) rotated by
an angle theta, and optionally scaled to a radius r (``ring_energy``). A conditional flow
(``amortized.AmortizedPlanarFlow``) reads the condition c through a feature map:

* ``angle_features``: theta -> (cos theta, sin theta). theta = -pi and theta = pi are the same
  target, and these features make the network's input (and hence its output) the same there;
* ``angle_radius_features``: (theta, r) -> (cos theta, sin theta, r - 2);
* ``raw_angle_features``: theta -> theta / pi, the naive encoding, which sees the two ends of
  [-pi, pi] as far apart (for comparison only).

Shapes: a batch of B conditions is ``condition`` (B, C); energies take samples (B, n, D), one
row of n samples per condition, and return (B, n).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from .potentials import rotated_U1

__all__ = ["angle_features", "angle_radius_features", "raw_angle_features", "FEATURES",
           "ring_energy", "ConditionalEnergy", "as_condition"]

#: An energy of a family of targets: U(z; c), (B, n, D) and (B, C) -> (B, n).
ConditionalEnergy = Callable[[Tensor, Tensor], Tensor]


def as_condition(condition: Tensor, condition_dim: int) -> Tensor:
    """(B,) or (B, C) -> (B, C); a clear ValueError otherwise."""
    if not isinstance(condition, Tensor):
        raise TypeError(f"condition must be a torch.Tensor, got {type(condition).__name__}")
    if condition.dim() == 1 and condition_dim == 1:
        condition = condition.unsqueeze(-1)
    if condition.dim() != 2 or condition.shape[-1] != condition_dim:
        raise ValueError(
            f"condition must have shape (B, {condition_dim})"
            + (" or (B,)" if condition_dim == 1 else "")
            + f"; received shape {tuple(condition.shape)}")
    if not bool(torch.isfinite(condition).all()):
        raise ValueError(f"condition contains NaN or infinite values (shape {tuple(condition.shape)})")
    return condition


def angle_features(condition: Tensor) -> Tensor:
    """(theta) -> (cos theta, sin theta): a periodic encoding of the angle.

    theta and theta + 2 pi give the same features, so the amortizer's output is continuous
    across theta = ±pi, like the family of targets itself.

    Args:
        condition: angles in radians, shape (B, 1) (or (B,)).

    Returns:
        features, shape (B, 2).
    """
    theta = as_condition(condition, 1)[:, 0]
    return torch.stack([torch.cos(theta), torch.sin(theta)], dim=-1)


def angle_radius_features(condition: Tensor) -> Tensor:
    """(theta, r) -> (cos theta, sin theta, r - 2): angle and ring radius.

    Args:
        condition: shape (B, 2), columns (angle in radians, radius).

    Returns:
        features, shape (B, 3); the radius is centred on U1's radius 2.
    """
    condition = as_condition(condition, 2)
    theta, radius = condition[:, 0], condition[:, 1]
    return torch.stack([torch.cos(theta), torch.sin(theta), radius - 2.0], dim=-1)


def raw_angle_features(condition: Tensor) -> Tensor:
    """(theta) -> theta / pi: the naive encoding (for comparison only).

    theta = -pi and theta = pi, one and the same target, map to -1 and +1: the network must
    learn a map that jumps back at the seam, which a smooth network cannot do exactly.

    Args:
        condition: shape (B, 1) (or (B,)).

    Returns:
        features, shape (B, 1).
    """
    return as_condition(condition, 1) / math.pi


#: feature maps by name: name -> (function, condition_dim C, number of features F)
FEATURES: dict[str, tuple[Callable[[Tensor], Tensor], int, int]] = {
    "angle": (angle_features, 1, 2),
    "angle_radius": (angle_radius_features, 2, 3),
    "raw_angle": (raw_angle_features, 1, 1),
}


def ring_energy(z: Tensor, condition: Tensor) -> Tensor:
    """U(z; c) of the family of rotated rings: ``potentials.rotated_U1`` per condition.

    U1's ring with its two lobes along the angle theta; with a second column, the ring's
    radius r (default 2, U1 itself):

        U(z; theta, r) = 0.5 ((||z|| - r) / 0.4)^2
                         - log(exp(-0.5 ((a - r) / 0.6)^2) + exp(-0.5 ((a + r) / 0.6)^2)),
        a = z1 cos theta + z2 sin theta.

    Args:
        z: samples, shape (B, n, 2), one row of n samples per condition.
        condition: shape (B, 1) (theta) or (B, 2) (theta, r).

    Returns:
        U, shape (B, n).
    """
    if z.dim() != 3 or z.shape[-1] != 2:
        raise ValueError(f"z must have shape (B, n, 2); received shape {tuple(z.shape)}")
    if condition.dim() != 2 or condition.shape[0] != z.shape[0] or condition.shape[1] not in (1, 2):
        raise ValueError(
            f"condition must have shape ({z.shape[0]}, 1) or ({z.shape[0]}, 2) to match z of "
            f"shape {tuple(z.shape)}; received shape {tuple(condition.shape)}")
    angle = condition[:, 0:1]
    radius = condition[:, 1:2] if condition.shape[1] == 2 else 2.0
    return rotated_U1(z, angle, radius=radius)
