"""Planar flows, Rezende & Mohamed (2015), Section 4.1 and Appendix A.1: the reference.

One planar layer moves every point along a fixed direction u by an amount that depends on
which side of the hyperplane w^T z + b = 0 it lies (Eq. 10):

    f(z) = z + u h(w^T z + b),   h = tanh.

Its Jacobian is I + u psi(z)^T with psi(z) = h'(w^T z + b) w (Eq. 11), a rank-one update of
the identity, so the matrix determinant lemma gives the log-det in O(D) (Eq. 12):

    log |det df/dz| = log |1 + u^T psi(z)|.

The layer is invertible when w^T u >= -1; Appendix A.1 guarantees it by replacing u with

    u_hat = u + [m(w^T u) - w^T u] w / ||w||^2,   m(x) = -1 + softplus(x),

so that w^T u_hat = m(w^T u) > -1 (``constrain_u``). A flow of K layers is a loop over them
(``planar_flow``), with log q_K from Eq. (13) (``base.py``).

Read in this order: ``planar_transform`` (one layer, Eq. 10-12), ``constrain_u`` (App. A.1),
``PlanarLayer`` (the two together as a module), ``planar_flow`` and ``PlanarFlow`` (K layers
with stacked parameters), ``planar_inverse`` and ``planar_flow_inverse`` (the way back).

Parameters of one layer have shape ``(..., D)`` (``w``, ``u``) or ``(...)`` (``b``) and
broadcast against the leading dimensions of ``z`` (..., D). A stack of K layers stores them
along a layer axis: ``w`` of shape ``(K, D)`` when shared by all points, or ``(B, K, D)``
when a network emits one flow per example (amortized flows, Parts 2-4).

Speed: when gradients are needed, ``planar_flow`` hands the stack to ``fast_planar`` (one
custom autograd Function with the same values and gradients, tested equal to this code);
``fast_planar.use_fast_path(False)`` runs the loop below instead. Everything in this module
is plain torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    _check_broadcast,
    _check_finite,
    _check_point,
    _check_vector_param,
    invert_stack,
)

__all__ = [
    "SOFTPLUS_FLOOR",
    "planar_transform",
    "constrain_u",
    "PlanarLayer",
    "planar_flow",
    "PlanarFlow",
    "planar_inverse",
    "planar_flow_inverse",
    "planar_param_count",
    "split_planar_params",
]

#: Floor on softplus(w.u) in ``constrain_u``. In exact arithmetic m(x) = -1 + softplus(x) > -1
#: for every x, but softplus underflows to exactly 0 for x below about -17 (float32) or -37
#: (float64), which would make w.u_hat = -1 and the layer singular at w.z + b = 0. With the
#: floor, 1 + w.u_hat = max(softplus(w.u), 1e-4) >= 1e-4; the formula is unchanged for
#: w.u > -9.2. The log-dets take w.u_hat = m(w.u) from this formula, never from the rounded
#: dot product of w and u_hat (see ``constrain_u``).
SOFTPLUS_FLOOR = 1e-4


# --------------------------------------------------------------------------- one layer


def planar_transform(z: Tensor, w: Tensor, u: Tensor, b: Tensor,
                     w_dot_u: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One planar layer, Eq. (10)-(12).

    f(z) = z + u tanh(w^T z + b),
    log |det df/dz| = log |1 + u^T psi(z)|,  psi(z) = (1 - tanh^2(w^T z + b)) w,

    the determinant by the matrix determinant lemma (Eq. 12). No constraint is applied to
    ``u`` here: pass ``constrain_u(w, u)`` for a layer that is guaranteed invertible.

    Args:
        z: points, shape (..., D).
        w: normal of the hyperplane, shape (..., D), broadcast against z.
        u: direction of the displacement, shape (..., D), broadcast against z.
        b: offset, shape (...), broadcast against z.shape[:-1] (a Python float works too).
        w_dot_u: w^T u, shape (...), when it is known more exactly than the dot product of
            the rounded vectors (``constrain_u(w, u, return_w_dot_u_hat=True)``); default
            (w * u).sum(-1).

    Returns:
        (z_new, log_abs_det): shapes (..., D) and (...).

    Raises:
        ValueError: if a last dimension differs from z's, shapes do not broadcast or a
            value is not finite.
    """
    _check_point(z, "z")
    dim = z.shape[-1]
    _check_vector_param(w, "w", dim)
    _check_vector_param(u, "u", dim)
    b = torch.as_tensor(b, dtype=z.dtype, device=z.device)
    _check_broadcast(z, w=w, u=u, b=b)
    _check_finite(z=z, w=w, u=u, b=b)
    h = torch.tanh((z * w).sum(-1) + b)
    z_new = z + u * h.unsqueeze(-1)
    if w_dot_u is None:
        w_dot_u = (w * u).sum(-1)
    u_dot_psi = (1.0 - h * h) * w_dot_u  # u^T psi(z), Eq. (11)
    log_abs_det = torch.log(torch.abs(1.0 + u_dot_psi))
    return z_new, log_abs_det


def _constrain_u_and_dot(w: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """(u_hat, w.u_hat) of App. A.1, shapes (..., D) and (..., 1), finite for finite inputs.

    With x = w.u, the scale s = max_i |w_i| and v = w / s (so that ||v||^2 in [1, D] neither
    underflows nor overflows), u_hat = u_perp + m(x) w / ||w||^2 where
    u_perp = u - (v.u / ||v||^2) v is u's part orthogonal to w: the part along w is set to
    m(x) directly instead of adding [m(x) - x] to a large x, which would cancel in float32.
    w.u_hat is returned as m(x) itself. A w with no normal-range entry (all |w_i| below
    ``torch.finfo(dtype).tiny``, e.g. w = 0) is left uncorrected: u_hat = u, w.u_hat = w.u.
    """
    tiny = torch.finfo(w.dtype).tiny
    scale = w.abs().amax(-1, keepdim=True)
    corrected = scale >= tiny
    scale = torch.where(corrected, scale, torch.ones_like(scale))
    v = w / scale
    v_norm_sq = (v * v).sum(-1, keepdim=True)
    v_dot_u = (v * u).sum(-1, keepdim=True)
    w_dot_u = scale * v_dot_u  # may be +-inf for finite w, u of large norm
    m_w_dot_u = F.softplus(w_dot_u).clamp_min(SOFTPLUS_FLOOR) - 1.0
    u_perp = u - (v_dot_u / v_norm_sq) * v
    u_hat = u_perp + (m_w_dot_u / (scale * v_norm_sq)) * v
    u_hat = torch.where(corrected, u_hat, u)
    return u_hat, torch.where(corrected, m_w_dot_u, (w * u).sum(-1, keepdim=True))


def constrain_u(w: Tensor, u: Tensor, return_w_dot_u_hat: bool = False
                ) -> Tensor | tuple[Tensor, Tensor]:
    """Invertibility reparameterization of a planar layer, Appendix A.1.

    u_hat = u + [m(w^T u) - w^T u] w / ||w||^2,  m(x) = -1 + softplus(x),

    so that w^T u_hat = m(w^T u) > -1, which makes f(z) = z + u_hat tanh(w^T z + b) invertible
    (its derivative along w, 1 + w^T u_hat tanh', stays positive). Note the *squared* norm.
    softplus is floored at ``SOFTPLUS_FLOOR`` where it would underflow to 0, so that
    1 + w^T u_hat >= 1e-4.

    In floating point the dot product of w with the rounded u_hat can differ from m(w^T u)
    by about eps |w| |u| (in float32 w^T u_hat <= -1 for w^T u ~ -1e3 half the time if it is
    recomputed), so the log-det of a constrained layer must use m(w^T u) itself: ask for it
    with ``return_w_dot_u_hat`` and pass it to ``planar_transform``. The computation works on
    w / max_i |w_i|, so that ||w||^2 neither underflows nor overflows.

    Args:
        w: shape (..., D).
        u: shape (..., D), same shape as w (or broadcastable).
        return_w_dot_u_hat: also return w^T u_hat = m(w^T u), shape (...).

    Returns:
        u_hat, shape of ``u`` broadcast with ``w``; with ``return_w_dot_u_hat``,
        (u_hat, w_dot_u_hat).
    """
    _check_point(w, "w")
    _check_vector_param(u, "u", w.shape[-1])
    u_hat, w_dot_u_hat = _constrain_u_and_dot(w, u)
    return (u_hat, w_dot_u_hat.squeeze(-1)) if return_w_dot_u_hat else u_hat


class PlanarLayer(nn.Module):
    """One planar layer with its own parameters, Eq. (10)-(12) with App. A.1:

        u_hat = constrain_u(w, u),   h = tanh(w^T z + b),   f(z) = z + u_hat h,
        log|det df/dz| = log(1 + (1 - h^2) w^T u_hat)     (u_hat^T psi(z), psi = h' w).

    The layer as most tutorials write it; a flow of K of them is ``nn.ModuleList`` of layers
    applied in turn. ``PlanarFlow`` computes the same with the K layers' parameters stacked.

    Args:
        dim: D. init_scale: standard deviation of the initial ``u`` (w has std 1/sqrt(D)).
    """

    def __init__(self, dim: int, init_scale: float = 0.01):
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.u = nn.Parameter(init_scale * torch.randn(dim))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (..., D) -> (f(z) (..., D), log|det df/dz| (...))."""
        u_hat, w_dot_u_hat = constrain_u(self.w, self.u, return_w_dot_u_hat=True)  # App. A.1
        h = torch.tanh(z @ self.w + self.b)
        z_new = z + u_hat * h.unsqueeze(-1)  # Eq. (10)
        log_det = torch.log1p((1.0 - h * h) * w_dot_u_hat)  # Eq. (11)-(12); 1 + ... > 0
        return z_new, log_det


# --------------------------------------------------------------------------- K layers


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
    from . import fast_planar  # the speed code; this module is the reference it is tested on

    if not return_layers and fast_planar.applies(z, w, u, b):
        return fast_planar.planar_flow(z, w, u, b, constrain)
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
    return flow_length * (2 * dim + 1)


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
        if dim < 1 or flow_length < 0:
            raise ValueError(f"need dim >= 1 and flow_length >= 0; got {dim}, {flow_length}")
        self.dim = dim
        self.flow_length = flow_length
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


# --------------------------------------------------------------------------- the way back


def planar_inverse(
    y: Tensor,
    w: Tensor,
    u_hat: Tensor,
    b: Tensor,
    tol: float | None = None,
    max_iter: int = 100,
    w_dot_u_hat: Tensor | None = None,
) -> Tensor:
    """Inverse of one planar layer with w^T u_hat > -1.

    Write a = w^T z. Since y = z + u_hat tanh(a + b), projecting on w gives the scalar equation

        g(a) = a + (w^T u_hat) tanh(a + b) - w^T y = 0,

    with g'(a) = 1 + (w^T u_hat)(1 - tanh^2(a + b)) > 0: g is strictly increasing and has one
    root, which lies in [w^T y - |w^T u_hat|, w^T y + |w^T u_hat|]. It is found by Newton's
    method safeguarded by bisection on that bracket (batched), and then
    z = y - u_hat tanh(a + b).

    Args:
        y: points after the layer, shape (..., D).
        w, u_hat: shape (..., D), broadcast against y; ``u_hat`` must satisfy w^T u_hat > -1
            (use ``constrain_u``).
        b: shape (...).
        tol: stop when |g(a)| < tol (1 + |w^T y|) everywhere (default: 1e-12 in float64, 1e-6
            in float32).
        max_iter: iteration cap.
        w_dot_u_hat: w^T u_hat, shape (...), when known exactly (App. A.1's m(w^T u) from
            ``constrain_u(..., return_w_dot_u_hat=True)``); default the dot product.

    Returns:
        z with f(z) = y, shape (..., D).

    Raises:
        ValueError: if w^T u_hat <= -1 somewhere (the layer is not invertible there).
    """
    _check_point(y, "y")
    dim = y.shape[-1]
    _check_vector_param(w, "w", dim)
    _check_vector_param(u_hat, "u_hat", dim)
    b = torch.as_tensor(b, dtype=y.dtype, device=y.device)
    w_dot_u = (w * u_hat).sum(-1) if w_dot_u_hat is None else w_dot_u_hat
    if bool((w_dot_u <= -1).any()):
        raise ValueError(
            "planar_inverse needs w.u_hat > -1 (an invertible layer); got min w.u_hat = "
            f"{float(w_dot_u.min()):.4f}. Pass u_hat = constrain_u(w, u)."
        )
    if tol is None:
        tol = 1e-12 if y.dtype == torch.float64 else 1e-6
    w_dot_y = (w * y).sum(-1)
    w_dot_y, w_dot_u, b = torch.broadcast_tensors(w_dot_y, w_dot_u, b)
    lower = w_dot_y - w_dot_u.abs()
    upper = w_dot_y + w_dot_u.abs()
    a = w_dot_y.clone()
    for _ in range(max_iter):
        h = torch.tanh(a + b)
        g = a + w_dot_u * h - w_dot_y
        if bool((g.abs() < tol * (1.0 + w_dot_y.abs())).all()):
            break
        # shrink the bracket with the sign of g (g increasing)
        lower = torch.where(g < 0, a, lower)
        upper = torch.where(g > 0, a, upper)
        slope = 1.0 + w_dot_u * (1.0 - h * h)
        newton = a - g / slope
        inside = (newton > lower) & (newton < upper)
        a = torch.where(inside, newton, 0.5 * (lower + upper))
    return y - u_hat * torch.tanh(a + b).unsqueeze(-1)


def planar_flow_inverse(z_k: Tensor, w: Tensor, u: Tensor, b: Tensor,
                        tol: float | None = None, max_iter: int = 100
                        ) -> tuple[Tensor, Tensor]:
    """Invert K constrained planar layers (the inverse of ``planar_flow``), last to first.

    z_{k-1} = f_k^{-1}(z_k) by ``planar_inverse``, and the log-det of each layer at the
    recovered point, log(1 + (1 - h_k^2) m(w_k^T u_k)), h_k = tanh(w_k^T z_{k-1} + b_k)
    (Eq. 12 with App. A.1's w^T u_hat = m(w^T u)), so that
    log q_K(z_K) = log q_0(z_0) - sum_k log|det_k| (Eq. 13).

    Args:
        z_k: points after the K-th layer, shape (..., D).
        w, u: stacked parameters (K, D) or (..., K, D), ``u`` unconstrained (App. A.1 is
            applied here, as in ``planar_flow``); leading dimensions broadcast against z's.
        b: (K,) or (..., K).
        tol, max_iter: as in ``planar_inverse``.

    Returns:
        (z_0, sum_k log|det df_k/dz_{k-1}|), shapes (..., D) and (...).
    """
    u_hat, w_dot_u = constrain_u(w, u, return_w_dot_u_hat=True)

    def inverse_step(z: Tensor, k: int) -> tuple[Tensor, Tensor]:
        w_k, b_k, c_k = w[..., k, :], b[..., k], w_dot_u[..., k]
        z = planar_inverse(z, w_k, u_hat[..., k, :], b_k, tol, max_iter, w_dot_u_hat=c_k)
        h = torch.tanh((z * w_k).sum(-1) + b_k)
        return z, torch.log1p((1.0 - h * h) * c_k)

    return invert_stack(z_k, inverse_step, w.shape[-2])
