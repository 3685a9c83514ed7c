"""Planar flows, Rezende & Mohamed (2015), Section 4.1: K planar layers, the reference.

A flow of K planar layers (one layer, Eq. 10-12 with App. A.1, in ``planar_layer.py``) is a
loop over them, z_k = z_{k-1} + u_hat_k tanh(w_k^T z_{k-1} + b_k), with

    log q_K(z_K) = log q_0(z_0) - sum_k log |1 + (1 - h_k^2) w_k^T u_hat_k|     (Eq. 12, 13),

(``planar_flow``, and ``PlanarFlow`` as a module); the way back undoes the layers last to
first (``planar_flow_inverse``). The parameters of the K layers are stacked along a layer
axis: ``w`` of shape ``(K, D)`` when shared by all points, or ``(B, K, D)`` when a network
emits one flow per example (amortized flows and the VAE; ``split_planar_params``).

Speed: ``fast_planar`` imports this module and installs ``FAST_STACK``, through which
``planar_flow`` hands a stack that is being trained to one custom autograd Function with the
same values and gradients (tested equal to this code); ``fast_planar.use_fast_path(False)``
runs the loop below instead. This module never imports the speed code and is plain torch.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .base import _check_count, _check_point, invert_stack
from .planar_layer import _in_float64, constrain_u, planar_inverse

__all__ = [
    "planar_flow",
    "PlanarFlow",
    "planar_flow_inverse",
    "planar_param_count",
    "split_planar_params",
]

#: The training path of ``planar_flow``, installed by ``fast_planar`` when the package is
#: imported: ``FAST_STACK(z, w, u, b, constrain)`` returns ``planar_flow``'s result as one
#: autograd node, or None where the fast path does not apply (it is off, K = 0, or no gradient
#: is recorded). None here: always the reference loop.
FAST_STACK: Callable[..., tuple[Tensor, Tensor] | None] | None = None


def planar_flow(
    z: Tensor,
    w: Tensor,
    u: Tensor,
    b: Tensor,
    constrain: bool = True,
    return_layers: bool = False,
) -> tuple[Tensor, Tensor] | tuple[list[Tensor], Tensor]:
    """K planar layers in sequence (Eq. 10, 13), parameters stacked along a layer axis.

    z_k = z_{k-1} + u_hat_k tanh(w_k^T z_{k-1} + b_k) for k = 1, ..., K, and
    sum_k log|det df_k/dz_{k-1}| = sum_k log|1 + (1 - h_k^2) w_k^T u_hat_k| (Eq. 12).

    Args:
        z: z_0, shape (..., D).
        w, u: stacked parameters, shape (K, D) shared by all points, or (..., K, D) per
            example, whose leading dimensions broadcast against z.shape[:-1].
        b: shape (K,) or (..., K).
        constrain: apply ``constrain_u`` (App. A.1) to all layers at once.
        return_layers: return the list [z_0, ..., z_K] instead of z_K.

    Returns:
        (z_K, sum_log_det) with shapes (..., D) and (...): sum_k log|det df_k/dz_{k-1}|.
        With ``return_layers``, the first element is the list [z_0, ..., z_K].
    """
    _check_point(z, "z")
    dim = z.shape[-1]
    if w.dim() < 2 or w.shape[-1] != dim or u.shape != w.shape:
        raise ValueError(
            f"w and u must both have shape (K, {dim}) or (..., K, {dim}) to match z of shape "
            f"{tuple(z.shape)}; received w {tuple(w.shape)}, u {tuple(u.shape)}"
        )
    if b.shape != w.shape[:-1]:
        raise ValueError(
            f"b must have shape {tuple(w.shape[:-1])} (w's shape without D); received "
            f"{tuple(b.shape)}"
        )
    if not return_layers and FAST_STACK is not None:
        fast = FAST_STACK(z, w, u, b, constrain)  # None unless a stack is being trained
        if fast is not None:
            return fast
    if constrain:
        u_hat, w_dot_u = constrain_u(w, u, return_w_dot_u_hat=True)  # (..., K, D), (..., K)
    else:
        u_hat, w_dot_u = u, (w * u).sum(-1)
    layers = [z]
    sum_log_det = z.new_zeros(z.shape[:-1])
    for k in range(w.shape[-2]):
        h = torch.tanh((z * w[..., k, :]).sum(-1) + b[..., k])
        z = z + h.unsqueeze(-1) * u_hat[..., k, :]
        u_dot_psi = (1.0 - h * h) * w_dot_u[..., k]
        # constrained: 1 + u.psi > 0 is guaranteed by w.u_hat > -1
        log_det = torch.log1p(u_dot_psi) if constrain else torch.log(torch.abs(1.0 + u_dot_psi))
        sum_log_det = sum_log_det + log_det
        if return_layers:
            layers.append(z)
    return (layers if return_layers else z), sum_log_det


def planar_param_count(dim: int, flow_length: int) -> int:
    """Number of free parameters of K planar layers in dimension D: K (2D + 1)."""
    dim = _check_count(dim, "dim", 1, "the dimension D")
    return _check_count(flow_length, "flow_length", 0, "the flow length K") * (2 * dim + 1)


def split_planar_params(flat: Tensor, dim: int, flow_length: int
                        ) -> tuple[Tensor, Tensor, Tensor]:
    """Split a network's output into per-example planar parameters.

    Args:
        flat: shape (..., K (2D + 1)), e.g. the last layer of an encoder or amortizer.
        dim: D. flow_length: K.

    Returns:
        (w, u, b) of shapes (..., K, D), (..., K, D), (..., K); ``u`` is unconstrained
        (``planar_flow`` applies ``constrain_u``).
    """
    expected = planar_param_count(dim, flow_length)
    if flat.shape[-1] != expected:
        raise ValueError(
            f"expected flow parameters of shape (..., {expected}) = (..., K(2D+1)) for K = "
            f"{flow_length}, D = {dim}; received shape {tuple(flat.shape)}"
        )
    lead = flat.shape[:-1]
    w, u, b = torch.split(flat, [flow_length * dim, flow_length * dim, flow_length], dim=-1)
    return w.reshape(*lead, flow_length, dim), u.reshape(*lead, flow_length, dim), b


class PlanarFlow(nn.Module):
    """A stack of K planar layers with all parameters in stacked tensors.

    Parameters: ``w`` (K, D), ``u`` (K, D) (unconstrained; ``u_hat`` is derived by
    ``constrain_u`` at every call), ``b`` (K,). ``forward`` can also take per-example
    parameters of shape (B, K, D) / (B, K) produced by a network (amortized flows); the
    module's own parameters are then ignored.

    Args:
        dim: D. flow_length: K. constrain: apply App. A.1 (default True).
        init_scale: standard deviation of the initial ``u`` (w has std 1/sqrt(D)).
    """

    def __init__(self, dim: int, flow_length: int, constrain: bool = True,
                 init_scale: float = 0.01):
        super().__init__()
        self.dim = dim = _check_count(dim, "dim", 1, "the dimension D")
        self.flow_length = flow_length = _check_count(flow_length, "flow_length", 0,
                                                      "the flow length K")
        self.constrain = constrain
        self.w = nn.Parameter(torch.randn(flow_length, dim) / math.sqrt(dim))
        self.u = nn.Parameter(init_scale * torch.randn(flow_length, dim))
        self.b = nn.Parameter(torch.zeros(flow_length))

    def _params(self, w, u, b):
        if w is None and u is None and b is None:
            return self.w, self.u, self.b
        if w is None or u is None or b is None:
            raise ValueError("pass all of w, u, b (per-example parameters) or none of them")
        if w.shape[-2:] != (self.flow_length, self.dim):
            raise ValueError(
                f"per-example w must have shape (..., {self.flow_length}, {self.dim}); "
                f"received {tuple(w.shape)}"
            )
        return w, u, b

    def forward(self, z: Tensor, w: Tensor | None = None, u: Tensor | None = None,
                b: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """z_0 (..., D) -> (z_K (..., D), sum_k log|det_k| (...))."""
        _check_point(z, "z", self.dim)
        return planar_flow(z, *self._params(w, u, b), constrain=self.constrain)

    def layers(self, z: Tensor, w: Tensor | None = None, u: Tensor | None = None,
               b: Tensor | None = None) -> list[Tensor]:
        """[z_0, ..., z_K] for figures."""
        _check_point(z, "z", self.dim)
        return planar_flow(z, *self._params(w, u, b), constrain=self.constrain,
                           return_layers=True)[0]

    def u_hat(self) -> Tensor:
        """The constrained directions, (K, D) (equal to ``u`` when constrain=False)."""
        return constrain_u(self.w, self.u) if self.constrain else self.u

    def inverse(self, z_k: Tensor) -> tuple[Tensor, Tensor]:
        """z_K (..., D) -> (z_0, sum_k log|det_k| evaluated along the way).

        Needs constrain=True (an unconstrained layer may not be invertible).
        """
        _check_point(z_k, "z_k", self.dim)
        if not self.constrain:
            raise ValueError("inverse needs constrain=True (App. A.1 guarantees invertibility)")
        return planar_flow_inverse(z_k, self.w, self.u, self.b)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, flow_length={self.flow_length}, constrain={self.constrain}"


def planar_flow_inverse(z_k: Tensor, w: Tensor, u: Tensor, b: Tensor,
                        tol: float | None = None, max_iter: int = 100
                        ) -> tuple[Tensor, Tensor]:
    """Invert K constrained planar layers (the inverse of ``planar_flow``), last to first.

    z_{k-1} = f_k^{-1}(z_k) by ``planar_inverse``, and the log-det of each layer at the
    recovered point, log(1 + (1 - h_k^2) m(w_k^T u_k)), h_k = tanh(w_k^T z_{k-1} + b_k)
    (Eq. 12 with App. A.1's w^T u_hat = m(w^T u)), so that
    log q_K(z_K) = log q_0(z_0) - sum_k log|det_k| (Eq. 13). Everything (App. A.1, the root
    finds, the log-dets) is computed in float64 and cast back to z_k's dtype: in float32 a
    nearly flat layer would put log q off by up to a nat.

    Args:
        z_k: points after the K-th layer, shape (..., D).
        w, u: stacked parameters (K, D) or (..., K, D), ``u`` unconstrained (App. A.1 is
            applied here, as in ``planar_flow``); leading dimensions broadcast against z's.
        b: (K,) or (..., K).
        tol, max_iter: as in ``planar_inverse`` (which warns if a layer's root find fails).

    Returns:
        (z_0, sum_k log|det df_k/dz_{k-1}|), shapes (..., D) and (...), in z_k's dtype.
    """
    _check_point(z_k, "z_k")
    dtype, device = z_k.dtype, z_k.device
    z_k, w, u, b = _in_float64(z_k, w, u, b)
    u_hat, w_dot_u = constrain_u(w, u, return_w_dot_u_hat=True)
    flow_length = w.shape[-2]

    def inverse_step(z: Tensor, k: int) -> tuple[Tensor, Tensor]:
        w_k, b_k, c_k = w[..., k, :], b[..., k], w_dot_u[..., k]
        z = planar_inverse(z, w_k, u_hat[..., k, :], b_k, tol, max_iter, w_dot_u_hat=c_k,
                           layer=f"layer {k + 1} of {flow_length}")
        h = torch.tanh((z * w_k).sum(-1) + b_k)
        return z, torch.log1p((1.0 - h * h) * c_k)

    z_0, sum_log_det = invert_stack(z_k, inverse_step, flow_length)
    return z_0.to(device, dtype), sum_log_det.to(device, dtype)
