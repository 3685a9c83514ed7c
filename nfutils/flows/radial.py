"""Radial flows, Rezende & Mohamed (2015), Section 4.1, Eq. (14), and Appendix A.2.

A radial layer contracts or expands space around a centre z0:

    f(z) = z + beta h(alpha, r) (z - z0),   r = ||z - z0||,   h(alpha, r) = 1 / (alpha + r),

    log |det df/dz| = (D - 1) log|1 + beta h| + log|1 + beta h + beta h'(r) r|,

with h'(r) = -1 / (alpha + r)^2. It is invertible for alpha > 0 and beta >= -alpha
(App. A.2; ``constrain_radial``), and its inverse has a closed form (``radial_inverse``).
Parameters of one layer: ``z0`` (..., D), ``alpha`` and ``beta`` (...), broadcast against
z (..., D); a stack of K layers stores them along a layer axis, ``z0`` (K, D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    _check_broadcast,
    _check_count,
    _check_finite,
    _check_point,
    _check_vector_param,
    invert_stack,
)

__all__ = ["constrain_radial", "radial_transform", "radial_inverse", "radial_flow", "RadialFlow"]


def constrain_radial(alpha_raw: Tensor, beta_raw: Tensor) -> tuple[Tensor, Tensor]:
    """Map free parameters to a radial layer that is invertible (App. A.2).

    alpha = softplus(alpha_raw) > 0,  beta = -alpha + softplus(beta_raw) >= -alpha.
    """
    alpha = F.softplus(alpha_raw)
    beta = -alpha + F.softplus(beta_raw)
    return alpha, beta


def radial_transform(
    z: Tensor, z0: Tensor, alpha: Tensor, beta: Tensor
) -> tuple[Tensor, Tensor]:
    """One radial layer, Eq. (14).

    f(z) = z + beta h(alpha, r) (z - z0),  h = 1 / (alpha + r),  r = ||z - z0||,
    log |det df/dz| = (D - 1) log|1 + beta h| + log|1 + beta h + beta h'(r) r|,
    h'(r) = -1 / (alpha + r)^2.

    Args:
        z: points, shape (..., D).
        z0: centre, shape (..., D), broadcast against z.
        alpha: shape (...), > 0. beta: shape (...); the layer is invertible for
            beta >= -alpha (see ``constrain_radial``).

    Returns:
        (z_new, log_abs_det): shapes (..., D) and (...).
    """
    _check_point(z, "z")
    dim = z.shape[-1]
    _check_vector_param(z0, "z0", dim)
    alpha = torch.as_tensor(alpha, dtype=z.dtype, device=z.device)
    beta = torch.as_tensor(beta, dtype=z.dtype, device=z.device)
    _check_broadcast(z, z0=z0, alpha=alpha, beta=beta)
    _check_finite(z=z, z0=z0, alpha=alpha, beta=beta)
    if bool((alpha <= 0).any()):
        raise ValueError("alpha must be > 0; map free parameters with constrain_radial")
    return _radial_step(z, z0, alpha, beta)


def _radial_step(z, z0, alpha, beta):
    dim = z.shape[-1]
    diff = z - z0
    r = torch.linalg.vector_norm(diff, dim=-1)
    h = 1.0 / (alpha + r)
    beta_h = beta * h
    z_new = z + beta_h.unsqueeze(-1) * diff
    # 1 + beta h + beta h'(r) r = 1 + beta alpha / (alpha + r)^2
    log_abs_det = (dim - 1) * torch.log(torch.abs(1.0 + beta_h)) + torch.log(
        torch.abs(1.0 + beta * alpha * h * h)
    )
    return z_new, log_abs_det


def radial_inverse(y: Tensor, z0: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
    """Inverse of one radial layer with alpha > 0, beta >= -alpha, in closed form.

    With d = y - z0 and s = ||d||, the preimage lies on the same ray from z0 at distance r
    solving r (1 + beta / (alpha + r)) = s, i.e. r^2 + (alpha + beta - s) r - alpha s = 0,
    whose non-negative root is taken; then z = z0 + d r / s.

    Args:
        y: shape (..., D). z0: (..., D). alpha, beta: (...).

    Returns:
        z, shape (..., D).
    """
    d = y - z0
    s = torch.linalg.vector_norm(d, dim=-1)
    c = alpha + beta - s
    r = 0.5 * (-c + torch.sqrt(c * c + 4.0 * alpha * s))
    scale = torch.where(s > 0, r / s.clamp_min(torch.finfo(y.dtype).tiny), torch.ones_like(s))
    return z0 + d * scale.unsqueeze(-1)


def radial_flow(
    z: Tensor,
    z0: Tensor,
    alpha_raw: Tensor,
    beta_raw: Tensor,
    return_layers: bool = False,
) -> tuple[Tensor, Tensor] | tuple[list[Tensor], Tensor]:
    """K radial layers in sequence, parameters stacked: z0 (K, D) or (..., K, D),
    alpha_raw and beta_raw (K,) or (..., K), mapped by ``constrain_radial``.

    Returns:
        (z_K, sum_log_det), or ([z_0, ..., z_K], sum_log_det) with ``return_layers``.
    """
    dim = z.shape[-1]
    if z0.dim() < 2 or z0.shape[-1] != dim:
        raise ValueError(
            f"z0 must have shape (K, {dim}) or (..., K, {dim}); received {tuple(z0.shape)}"
        )
    alpha, beta = constrain_radial(alpha_raw, beta_raw)
    layers = [z]
    sum_log_det = z.new_zeros(z.shape[:-1])
    for k in range(z0.shape[-2]):
        z, log_det = _radial_step(z, z0[..., k, :], alpha[..., k], beta[..., k])
        sum_log_det = sum_log_det + log_det
        if return_layers:
            layers.append(z)
    return (layers if return_layers else z), sum_log_det


class RadialFlow(nn.Module):
    """A stack of K radial layers (Eq. 14), parameters stacked: ``z0`` (K, D),
    ``alpha_raw`` (K,), ``beta_raw`` (K,), mapped by ``constrain_radial``.

    Args:
        dim: D. flow_length: K. init_scale: standard deviation of the initial centres.
    """

    def __init__(self, dim: int, flow_length: int, init_scale: float = 1.0):
        super().__init__()
        self.dim = _check_count(dim, "dim", 1, "the dimension D")
        self.flow_length = flow_length = _check_count(flow_length, "flow_length", 0,
                                                      "the flow length K")
        self.z0 = nn.Parameter(init_scale * torch.randn(flow_length, dim))
        self.alpha_raw = nn.Parameter(torch.zeros(flow_length))
        # alpha_raw = beta_raw = 0 gives alpha = log 2, beta = 0: the identity map
        self.beta_raw = nn.Parameter(0.01 * torch.randn(flow_length))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z_0 (..., D) -> (z_K, sum_k log|det_k|)."""
        _check_point(z, "z", self.dim)
        return radial_flow(z, self.z0, self.alpha_raw, self.beta_raw)

    def layers(self, z: Tensor) -> list[Tensor]:
        """[z_0, ..., z_K] for figures."""
        _check_point(z, "z", self.dim)
        return radial_flow(z, self.z0, self.alpha_raw, self.beta_raw, return_layers=True)[0]

    def inverse(self, z_k: Tensor) -> tuple[Tensor, Tensor]:
        """z_K -> (z_0, sum_k log|det_k|), closed-form layer inverses (``invert_stack``)."""
        _check_point(z_k, "z_k", self.dim)
        alpha, beta = constrain_radial(self.alpha_raw, self.beta_raw)

        def inverse_step(z: Tensor, k: int) -> tuple[Tensor, Tensor]:
            z = radial_inverse(z, self.z0[k], alpha[k], beta[k])
            return z, _radial_step(z, self.z0[k], alpha[k], beta[k])[1]

        return invert_stack(z_k, inverse_step, self.flow_length)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, flow_length={self.flow_length}"
