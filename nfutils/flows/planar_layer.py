"""One planar layer, Rezende & Mohamed (2015), Section 4.1 and Appendix A.1: the reference.

A planar layer moves every point along a fixed direction u by an amount that depends on which
side of the hyperplane w^T z + b = 0 it lies (Eq. 10):

    f(z) = z + u h(w^T z + b),   h = tanh.

Its Jacobian is I + u psi(z)^T with psi(z) = h'(w^T z + b) w (Eq. 11), a rank-one update of
the identity, so the matrix determinant lemma gives the log-det in O(D) (Eq. 12):

    log |det df/dz| = log |1 + u^T psi(z)|.

The layer is invertible when w^T u >= -1; Appendix A.1 guarantees it by replacing u with

    u_hat = u + [m(w^T u) - w^T u] w / ||w||^2,   m(x) = -1 + softplus(x),

so that w^T u_hat = m(w^T u) > -1 (``constrain_u``). Its inverse is a scalar equation along w
(``planar_inverse``). K layers stacked, with log q_K by Eq. (13), are in ``planar.py``.

Read in this order: ``planar_transform`` (Eq. 10-12), ``constrain_u`` (App. A.1),
``PlanarLayer`` (the two together as a module), ``planar_inverse`` (the way back).

Parameters have shape ``(..., D)`` (``w``, ``u``) or ``(...)`` (``b``) and broadcast against
the leading dimensions of ``z`` (..., D).
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import (
    _check_broadcast,
    _check_count,
    _check_finite,
    _check_point,
    _check_vector_param,
)

__all__ = ["SOFTPLUS_FLOOR", "planar_transform", "constrain_u", "PlanarLayer", "planar_inverse"]

#: Floor on softplus(w.u) in ``constrain_u``. In exact arithmetic m(x) = -1 + softplus(x) > -1
#: for every x, but softplus underflows to exactly 0 for x below about -17 (float32) or -37
#: (float64), which would make w.u_hat = -1 and the layer singular at w.z + b = 0. With the
#: floor, 1 + w.u_hat = max(softplus(w.u), 1e-4) >= 1e-4; the formula is unchanged for
#: w.u > -9.2. The log-dets take w.u_hat = m(w.u) from this formula, never from the rounded
#: dot product of w and u_hat (see ``constrain_u``).
SOFTPLUS_FLOOR = 1e-4


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
        dim = _check_count(dim, "dim", 1, "the dimension D")
        self.w = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.u = nn.Parameter(init_scale * torch.randn(dim))
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z (..., D) -> (f(z) (..., D), log|det df/dz| (...))."""
        _check_point(z, "z", self.w.shape[-1])
        u_hat, w_dot_u_hat = constrain_u(self.w, self.u, return_w_dot_u_hat=True)  # App. A.1
        h = torch.tanh(z @ self.w + self.b)
        z_new = z + u_hat * h.unsqueeze(-1)  # Eq. (10)
        log_det = torch.log1p((1.0 - h * h) * w_dot_u_hat)  # Eq. (11)-(12); 1 + ... > 0
        return z_new, log_det


# --------------------------------------------------------------------------- the way back


def planar_inverse(
    y: Tensor,
    w: Tensor,
    u_hat: Tensor,
    b: Tensor,
    tol: float | None = None,
    max_iter: int = 100,
    w_dot_u_hat: Tensor | None = None,
    layer: str = "the planar layer",
) -> Tensor:
    """Inverse of one planar layer with w^T u_hat > -1.

    Write a = w^T z. Since y = z + u_hat tanh(a + b), projecting on w gives the scalar equation

        g(a) = a + (w^T u_hat) tanh(a + b) - w^T y = 0,

    with g'(a) = 1 + (w^T u_hat)(1 - tanh^2(a + b)) > 0: g is strictly increasing and has one
    root, which lies in [w^T y - |w^T u_hat|, w^T y + |w^T u_hat|]. It is found by Newton's
    method safeguarded by bisection on that bracket (batched), and then
    z = y - u_hat tanh(a + b). The work is done in float64 whatever the dtype of ``y``, and z
    cast back: where the layer is nearly flat (1 + w^T u_hat ~ 1e-4) the inverse amplifies
    rounding errors 10^4-fold, which float32 would turn into an error in a of 1e-3.

    Args:
        y: points after the layer, shape (..., D).
        w, u_hat: shape (..., D), broadcast against y; ``u_hat`` must satisfy w^T u_hat > -1
            (use ``constrain_u``).
        b: shape (...).
        tol: stop when |g(a)| < tol (1 + |w^T y|) everywhere (default 1e-12).
        max_iter: iteration cap.
        w_dot_u_hat: w^T u_hat, shape (...), when known exactly (App. A.1's m(w^T u) from
            ``constrain_u(..., return_w_dot_u_hat=True)``); default the dot product.
        layer: the layer's name in the warning, e.g. "layer 3 of 8".

    Returns:
        z with f(z) = y, shape (..., D), in y's dtype.

    Raises:
        ValueError: if w^T u_hat <= -1 somewhere (the layer is not invertible there).

    Warns:
        RuntimeWarning: if |g(a)| is still above the tolerance after ``max_iter`` iterations;
            names the layer and the largest residual.
    """
    _check_point(y, "y")
    dim = y.shape[-1]
    _check_vector_param(w, "w", dim)
    _check_vector_param(u_hat, "u_hat", dim)
    dtype, device = y.dtype, y.device
    b = torch.as_tensor(b, dtype=dtype, device=device)
    y, w, u_hat, b = _in_float64(y, w, u_hat, b)
    w_dot_u = (w * u_hat).sum(-1) if w_dot_u_hat is None else _in_float64(w_dot_u_hat)[0]
    if bool((w_dot_u <= -1).any()):
        raise ValueError(
            "planar_inverse needs w.u_hat > -1 (an invertible layer); got min w.u_hat = "
            f"{float(w_dot_u.min()):.4f}. Pass u_hat = constrain_u(w, u)."
        )
    w_dot_y = (w * y).sum(-1)
    a = _solve_along_w(w_dot_y, w_dot_u, b, 1e-12 if tol is None else tol, max_iter, layer)
    return (y - u_hat * torch.tanh(a + b).unsqueeze(-1)).to(device, dtype)


def _in_float64(*tensors: Tensor) -> list[Tensor]:
    """The tensors in float64 (unchanged if they are already), on the CPU for a device that
    has no float64 (Apple's MPS)."""
    device = "cpu" if tensors[0].device.type == "mps" else tensors[0].device
    return [t.to(device, torch.float64) for t in tensors]


def _solve_along_w(w_dot_y: Tensor, w_dot_u: Tensor, b: Tensor, tol: float, max_iter: int,
                   layer: str) -> Tensor:
    """The root a of g(a) = a + (w.u_hat) tanh(a + b) - w.y (``planar_inverse``), batched."""
    w_dot_y, w_dot_u, b = torch.broadcast_tensors(w_dot_y, w_dot_u, b)
    lower, upper = w_dot_y - w_dot_u.abs(), w_dot_y + w_dot_u.abs()
    a, last_step = w_dot_y.clone(), upper - lower
    for _ in range(max_iter):
        h = torch.tanh(a + b)
        g = a + w_dot_u * h - w_dot_y
        if bool((g.abs() < tol * (1.0 + w_dot_y.abs())).all()):
            return a
        # shrink the bracket with the sign of g (g increasing)
        lower = torch.where(g < 0, a, lower)
        upper = torch.where(g > 0, a, upper)
        slope = 1.0 + w_dot_u * (1.0 - h * h)
        newton = a - g / slope
        # Newton where it stays in the bracket and is at most half the last step, else bisect
        # (the safeguard of rtsafe, Numerical Recipes Sec. 9.4): steps shrink geometrically, so
        # a Newton iteration that crawls towards one end (a nearly saturated tanh) cannot stall
        newton_ok = (newton > lower) & (newton < upper) & (2.0 * g.abs() <= (last_step * slope).abs())
        a_next = torch.where(newton_ok, newton, 0.5 * (lower + upper))
        last_step, a = (a_next - a).abs(), a_next
    residual = (a + w_dot_u * torch.tanh(a + b) - w_dot_y).abs() / (1.0 + w_dot_y.abs())
    if not bool((residual < tol).all()):
        warnings.warn(
            f"planar_inverse: the root find of {layer} did not converge in {max_iter} "
            f"iterations: largest residual {float(residual.max()):.3g} (|g(a)| / (1 + |w.y|), "
            f"tolerance {tol:.3g}); the points it returns are not exact preimages. Raise "
            "max_iter, or check the inputs for NaN or infinite values.",
            RuntimeWarning, stacklevel=3)
    return a

