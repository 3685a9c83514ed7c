"""Normalizing flows of Rezende & Mohamed (2015), Section 4.

A flow pushes samples of a simple base density q_0 through invertible maps f_1, ..., f_K;
the density of z_K = f_K o ... o f_1(z_0) follows from the change of variables (Eq. 13):

    log q_K(z_K) = log q_0(z_0) - sum_k log |det d f_k / d z_{k-1}|.

Two families are implemented:

* planar flows (Eq. 10-12), f(z) = z + u h(w^T z + b), with the invertibility
  reparameterization of Appendix A.1 (``constrain_u``);
* radial flows (Eq. 14), f(z) = z + beta h(alpha, r) (z - z_0).

Shapes follow one convention everywhere: a point is a tensor ``z`` of shape ``(..., D)``;
the parameters of one layer have shape ``(..., D)`` (``w``, ``u``, ``z0``) or ``(...)``
(``b``, ``alpha``, ``beta``) and broadcast against the leading dimensions of ``z``. A stack
of K layers stores them stacked along a layer axis: ``w`` of shape ``(K, D)`` when shared by
all samples, or ``(B, K, D)`` when a network emits one flow per example (amortized flows,
Parts 2-4 of the series).

The stacked pass (``planar_flow``) is written for speed, because a 2-D flow step is bound by
the overhead of each tensor operation, not by arithmetic: all ``u_hat`` at once, every layer's
log-det in a single ``log1p`` after the loop, and, when gradients are needed, a custom
``torch.autograd.Function`` whose forward runs three fused operations per layer and whose
backward runs one reverse loop with the analytic derivatives (``_PlanarStackShared`` for
parameters shared by all points, ``_PlanarStackPerExample`` for per-example parameters). On
the CPU the shared stack's two loops, the only part whose cost grows with K, run as NumPy
calls on the same memory (``NUMPY_LOOPS_ON_CPU``), a few times cheaper per call than torch's.
The Function also applies App. A.1 and, in ``NormalizingFlow.rsample``, draws from the
Gaussian base, so that a Part 1 training step records a single autograd node for q_K. Without
gradients (sampling, evaluation, figures) a plain loop runs. The plain per-layer computation
(``planar_transform`` + ``constrain_u``) is the reference the tests compare them with
(tests/test_flows_fast.py); ``benchmarks/flows.py`` measures them.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .runtime import keep_freed_memory

__all__ = [
    "planar_transform",
    "constrain_u",
    "planar_inverse",
    "planar_flow",
    "radial_transform",
    "constrain_radial",
    "radial_inverse",
    "radial_flow",
    "PlanarFlow",
    "RadialFlow",
    "NormalizingFlow",
    "free_energy",
    "annealed_beta",
    "planar_param_count",
    "split_planar_params",
    "make_flow",
]

#: Floor on softplus(w.u) in ``constrain_u``. In exact arithmetic m(x) = -1 + softplus(x) > -1
#: for every x, but softplus underflows to exactly 0 for x below about -17 (float32) or -37
#: (float64), which would make w.u_hat = -1 and the layer singular at w.z + b = 0. With the
#: floor, 1 + w.u_hat = max(softplus(w.u), 1e-4) >= 1e-4; the formula is unchanged for
#: w.u > -9.2. The log-dets take w.u_hat = m(w.u) from this formula, never from the rounded
#: dot product of w and u_hat (see ``constrain_u``).
SOFTPLUS_FLOOR = 1e-4


# --------------------------------------------------------------------------- checks


def _check_point(z: Tensor, name: str = "z", dim: int | None = None) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() < 1:
        raise ValueError(f"{name} must have shape (..., D) with D >= 1; received a scalar")
    if dim is not None and z.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape (..., {dim}) (last dimension D = {dim}); "
            f"received shape {tuple(z.shape)}"
        )


def _check_finite(**tensors: Tensor) -> None:
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{name} contains NaN or infinite values (shape {tuple(tensor.shape)}); "
                "check the inputs or lower the learning rate"
            )


def _check_vector_param(param: Tensor, name: str, dim: int) -> None:
    _check_point(param, name)
    if param.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape (..., {dim}) to match z's last dimension D = {dim}; "
            f"received shape {tuple(param.shape)}"
        )


def _check_broadcast(z: Tensor, **params: Tensor) -> None:
    """Leading dimensions of the parameters must broadcast against z.shape[:-1]."""
    batch_shape = z.shape[:-1]
    for name, param in params.items():
        lead = param.shape[:-1] if name in ("w", "u", "z0") else param.shape
        try:
            torch.broadcast_shapes(batch_shape, lead)
        except RuntimeError:
            suffix = " + (D,)" if name in ("w", "u", "z0") else ""
            raise ValueError(
                f"{name} of shape {tuple(param.shape)} does not broadcast against z of shape "
                f"{tuple(z.shape)}: expected leading shape broadcastable to "
                f"{tuple(batch_shape)}{suffix}"
            ) from None


# --------------------------------------------------------------------------- planar


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
    pre_activation = (z * w).sum(-1) + b
    h = torch.tanh(pre_activation)
    z_new = z + u * h.unsqueeze(-1)
    if w_dot_u is None:
        w_dot_u = (w * u).sum(-1)
    u_dot_psi = (1.0 - h * h) * w_dot_u
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


def _constrain_u(w: Tensor, u: Tensor) -> Tensor:
    return _constrain_u_and_dot(w, u)[0]


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


def planar_inverse(
    y: Tensor,
    w: Tensor,
    u_hat: Tensor,
    b: Tensor,
    tol: float | None = None,
    max_iter: int = 100,
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
        tol: stop when |g(a)| < tol everywhere (default: 1e-12 in float64, 1e-6 in float32).
        max_iter: iteration cap.

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
    w_dot_u = (w * u_hat).sum(-1)
    if bool((w_dot_u <= -1).any()):
        raise ValueError(
            "planar_inverse needs w.u_hat > -1 (an invertible layer); got min w.u_hat = "
            f"{float(w_dot_u.min()):.4f}. Pass u_hat = constrain_u(w, u)."
        )
    return _planar_inverse(y, w, u_hat, b, w_dot_u, tol, max_iter)


def _planar_inverse(y, w, u_hat, b, w_dot_u, tol, max_iter):
    if tol is None:
        tol = 1e-12 if y.dtype == torch.float64 else 1e-6
    w_dot_y = (w * y).sum(-1)
    w_dot_u, b = torch.broadcast_tensors(w_dot_u, b)
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


def planar_param_count(dim: int, num_layers: int) -> int:
    """Number of free parameters of K planar layers in dimension D: K (2D + 1)."""
    return num_layers * (2 * dim + 1)


def split_planar_params(flat: Tensor, dim: int, num_layers: int) -> tuple[Tensor, Tensor, Tensor]:
    """Split a network's output into per-example planar parameters.

    Args:
        flat: shape (..., K (2D + 1)), e.g. the last layer of an encoder or amortizer.
        dim: D. num_layers: K.

    Returns:
        (w, u, b) of shapes (..., K, D), (..., K, D), (..., K); ``u`` is unconstrained
        (``planar_flow`` applies ``constrain_u``).
    """
    expected = planar_param_count(dim, num_layers)
    if flat.shape[-1] != expected:
        raise ValueError(
            f"expected flow parameters of shape (..., {expected}) = (..., K(2D+1)) for K = "
            f"{num_layers}, D = {dim}; received shape {tuple(flat.shape)}"
        )
    lead = flat.shape[:-1]
    w, u, b = torch.split(flat, [num_layers * dim, num_layers * dim, num_layers], dim=-1)
    return (
        w.reshape(*lead, num_layers, dim),
        u.reshape(*lead, num_layers, dim),
        b,
    )


def planar_flow(
    z: Tensor,
    w: Tensor,
    u: Tensor,
    b: Tensor,
    constrain: bool = True,
    return_layers: bool = False,
) -> tuple[Tensor, Tensor] | tuple[list[Tensor], Tensor]:
    """K planar layers in sequence (Eq. 10, 13), the fast stacked path.

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
    num_layers = w.shape[-2]
    if b.shape != w.shape[:-1]:
        raise ValueError(
            f"b must have shape {tuple(w.shape[:-1])} (w's shape without D); received "
            f"{tuple(b.shape)}"
        )
    if (
        not return_layers
        and num_layers > 0
        and torch.is_grad_enabled()
        and any(t.requires_grad for t in (z, w, u, b))
    ):
        # training: one autograd node for the whole stack, analytic backward (see below)
        if z.device.type == "cpu":
            keep_freed_memory()  # no page faults on the per-step buffers (see runtime.py)
        if w.dim() == 2 and z.dim() == 2:
            return _PlanarStackShared.apply(z, w, u, b, constrain)
        if w.dim() == 2:
            z_k, sum_log_det = _PlanarStackShared.apply(z.reshape(-1, dim), w, u, b, constrain)
            return z_k.reshape(z.shape), sum_log_det.reshape(z.shape[:-1])
        return _PlanarStackPerExample.apply(z, w, u, b, constrain)
    if constrain:
        u_hat, w_dot_u = _constrain_u_and_dot(w, u)
        return _planar_flow_eager(z, w, u_hat, b, constrain, return_layers, w_dot_u.squeeze(-1))
    return _planar_flow_eager(z, w, u, b, constrain, return_layers)


def _planar_flow_eager(
    z: Tensor, w: Tensor, u_hat: Tensor, b: Tensor, constrain: bool, return_layers: bool,
    w_dot_u: Tensor | None = None,
) -> tuple[Tensor, Tensor] | tuple[list[Tensor], Tensor]:
    """``planar_flow`` as a plain loop of tensor operations (autograd records each one); used
    without gradients (sampling, evaluation, figures) and kept for the benchmark. ``w_dot_u``
    (..., K): w_k.u_hat_k when known exactly (App. A.1's m(w.u)), else the dot product."""
    num_layers = w.shape[-2]
    if w_dot_u is None:
        w_dot_u = (w * u_hat).sum(-1)  # (..., K)
    layers = [z] if return_layers else None
    activations = []
    shared = w.dim() == 2
    if shared and z.dim() == 2:
        # one BLAS-1/2 call per step: a = z w_k + b_k; z += tanh(a) u_k^T
        for k in range(num_layers):
            h = torch.tanh(torch.addmv(b[k], z, w[k]))
            z = torch.addr(z, h, u_hat[k])
            activations.append(h)
            if return_layers:
                layers.append(z)
    else:
        for k in range(num_layers):
            w_k = w[..., k, :]
            h = torch.tanh((z * w_k).sum(-1) + b[..., k])
            z = z + h.unsqueeze(-1) * u_hat[..., k, :]
            activations.append(h)
            if return_layers:
                layers.append(z)
    if num_layers == 0:
        sum_log_det = z.new_zeros(z.shape[:-1])
    else:
        h_all = torch.stack(activations, dim=-1)  # (..., K)
        u_dot_psi = (1.0 - h_all * h_all) * w_dot_u
        if constrain:  # 1 + u.psi > 0 is guaranteed by w.u_hat > -1
            sum_log_det = torch.log1p(u_dot_psi).sum(-1)
        else:
            sum_log_det = torch.log(torch.abs(1.0 + u_dot_psi)).sum(-1)
    return (layers if return_layers else z), sum_log_det


class _PlanarStackShared(torch.autograd.Function):
    """K planar layers with parameters shared by all N points, as one autograd node.

    Forward (Eq. 10), per layer: a_k = z_{k-1} w_k + b_k (``addmv``), h_k = tanh(a_k),
    z_k = z_{k-1} + u_k h_k (``addr``), with the points stored as (D, N) so that both
    operations stream along N. Then log|det_k| = log(1 + (w_k.u_k)(1 - h_k^2)) (Eq. 12) for all
    layers at once.

    Backward, with g_k = dL/dz_k, s_k = 1 - h_k^2, c_k = w_k.u_k, d_k = 1 + c_k s_k and
    gamma = dL/d(sum_k log|det_k|):

        dL/da_k    = s_k (g_k.u_k) - 2 gamma c_k h_k s_k / d_k
        g_{k-1}    = g_k + w_k dL/da_k
        dL/dw_k    = sum_n dL/da_k z_{k-1} + dL/dc_k u_k,   dL/dc_k = sum_n gamma s_k / d_k
        dL/du_k    = sum_n h_k g_k + dL/dc_k w_k,           dL/db_k = sum_n dL/da_k

    one reverse loop of three operations per layer (``addmv``, ``mul_``, ``addr``); the sums
    over points are batched after the loop. On the CPU both loops run as three NumPy calls per
    layer on the same memory (``_shared_forward_loop_numpy``, ``_shared_backward_loop_numpy``;
    ``NUMPY_LOOPS_ON_CPU``), the rest as torch operations. With ``constrain``,
    u_hat = u + beta w / ||w||^2, beta = m(w.u) - w.u (App. A.1), is computed inside too, and
    the gradient with respect to u_hat, G, is carried back to the free parameters by hand, with
    t = G.w:

        dL/du = G + beta' t w / ||w||^2,
        dL/dw += beta G / ||w||^2 + beta' t u / ||w||^2 - 2 beta t w / ||w||^4,
        beta' = sigmoid(w.u) - 1

    (0 where a floor of ``_constrain_u`` is active, as autograd's clamp). With a base
    (``mu``, ``log_sigma`` given), ``z`` holds eps ~ N(0, I), z_0 = mu + exp(log_sigma) eps,
    and the second output is log q_K = log q_0(z_0) - sum_k log|det_k| (Eq. 13), with
    dL/dmu = sum_n g_0 and dL/dlog_sigma = sigma sum_n g_0 eps - sum_n dL/dlog q_K.

    Checked against autograd by ``gradcheck`` in tests/test_flows_fast.py.

    Inputs: z (N, D) (eps with a base), w and u (K, D), b (K,), constrain (True: u is free
    and u_hat comes from App. A.1, log-dets by log1p; False: u is used as it is, log-dets
    log|1 + u.psi|), mu and log_sigma (D,) or None. Outputs: z_K (N, D) and sum_log_det (N,),
    or log q_K (N,) with a base.
    """

    @staticmethod
    def forward(ctx, z, w, u, b, constrain, mu=None, log_sigma=None):
        num_layers, dim = w.shape
        num_points = z.shape[0]
        # columns[k] holds (1, z_k^T, h_{k+1}) as rows: (K + 1, D + 2, N); the row of ones and
        # h next to z let the NumPy loop do a layer in three calls (see its docstring)
        columns = z.new_empty(num_layers + 1, dim + 2, num_points)
        z_all = columns[:, 1:dim + 1]  # z_all[k] = z_k^T, (K + 1, D, N)
        h_all = columns[:num_layers, dim + 1]  # h_all[k] = h_{k+1}, (K, N)
        with_base = mu is not None
        if with_base:  # z_0 = mu + sigma eps
            sigma = torch.exp(log_sigma)
            torch.addcmul(mu.unsqueeze(-1), sigma.unsqueeze(-1), z.t(), out=z_all[0])
        else:
            sigma = None
            z_all[0].copy_(z.t())
        if constrain:
            u_hat, constrain_coefs, w_dot_u = _constrain_u_with_coefs(w, u)
        else:
            u_hat, constrain_coefs = u, None
            w_dot_u = (w * u_hat).sum(-1, keepdim=True)
        if _numpy_loops(columns):
            columns[:, 0].fill_(1.0)
            _shared_forward_loop_numpy(columns.numpy(), w.detach().numpy(),
                                       u_hat.detach().numpy(), b.detach().numpy())
        else:
            z_rows, h_rows = z_all.unbind(0), h_all.unbind(0)
            z_cols = z_all.transpose(1, 2).unbind(0)  # the same memory seen as (N, D)
            w_rows, u_rows, b_rows = w.unbind(0), u_hat.unbind(0), b.unbind(0)
            for k in range(num_layers):
                torch.addmv(b_rows[k], z_cols[k], w_rows[k], out=h_rows[k])
                h_rows[k].tanh_()
                torch.addr(z_rows[k], u_rows[k], h_rows[k], out=z_rows[k + 1])
        # c_k = w_k.u_k, (K, 1): with constrain, m(w_k.u_k) exactly (App. A.1)
        # s_k = 1 - h_k^2 and u.psi_k = c_k s_k (Eq. 11), (K, N), both kept for the backward
        slope = torch.addcmul(h_all.new_ones(()), h_all, h_all, value=-1.0)
        u_dot_psi = slope * w_dot_u
        if constrain:  # 1 + u.psi > 0 is guaranteed by w.u_hat > -1
            log_det = torch.log1p(u_dot_psi)
        else:
            log_det = torch.add(u_dot_psi, 1.0).abs_().log_()
        sum_log_det = log_det.sum(0)
        ctx.constrain_coefs = constrain_coefs
        ctx.with_base = with_base
        ctx.save_for_backward(z_all, h_all, slope, u_dot_psi, w, u, u_hat, w_dot_u,
                              z if with_base else None, sigma)
        z_k = z_all[num_layers].t().contiguous()
        if not with_base:
            return z_k, sum_log_det
        log_q = torch.linalg.vecdot(z, z).mul_(-0.5)
        log_q.sub_(log_sigma.sum() + 0.5 * dim * math.log(2 * math.pi)).sub_(sum_log_det)
        return z_k, log_q

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z, grad_second):
        z_all, h_all, slope, u_dot_psi, w, u, u_hat, w_dot_u, eps, sigma = ctx.saved_tensors
        num_layers, dim = w.shape
        # grad_columns[k] holds ((dL/dz_k)^T, dL/da_k) as rows: (K + 1, D + 1, N)
        grad_columns = z_all.new_empty(num_layers + 1, dim + 1, z_all.shape[-1])
        grad_z_all = grad_columns[:, :dim]  # grad_z_all[k] = (dL/dz_k)^T
        grad_a = grad_columns[1:, dim]  # grad_a[k] = dL/da_{k+1}, (K, N)
        # with a base the second output is log q_K = log q_0 - sum log|det|
        grad_log_det = -grad_second if ctx.with_base else grad_second
        gamma_over_det = torch.add(u_dot_psi, 1.0)  # d_k = 1 + c_k s_k
        gamma_over_det.reciprocal_().mul_(grad_log_det)  # gamma / d_k, (K, N)
        grad_w_dot_u = torch.linalg.vecdot(gamma_over_det, slope).unsqueeze(-1)  # (K, 1)
        # dL/da_k starts as the log-det's share, -2 gamma c_k h_k s_k / d_k (s_k: in the loop)
        torch.mul(gamma_over_det.mul_(h_all), -2.0 * w_dot_u, out=grad_a)
        grad_z_all[num_layers].copy_(grad_z.t())
        if _numpy_loops(grad_columns):
            _shared_backward_loop_numpy(grad_columns.numpy(), slope.numpy(),
                                        w.detach().numpy(), u_hat.detach().numpy())
        else:
            g_rows, ga_rows = grad_z_all.unbind(0), grad_a.unbind(0)
            g_cols = grad_z_all.transpose(1, 2).unbind(0)
            s_rows, w_rows, u_rows = slope.unbind(0), w.unbind(0), u_hat.unbind(0)
            for k in range(num_layers - 1, -1, -1):
                ga_rows[k].addmv_(g_cols[k + 1], u_rows[k]).mul_(s_rows[k])
                torch.addr(g_rows[k + 1], w_rows[k], ga_rows[k], out=g_rows[k])
        grad_w = torch.linalg.vecdot(z_all[:-1], grad_a.unsqueeze(1)) + grad_w_dot_u * u_hat
        grad_u = torch.linalg.vecdot(grad_z_all[1:], h_all.unsqueeze(1)) + grad_w_dot_u * w
        if ctx.constrain_coefs is not None:
            grad_w, grad_u = _constrain_u_backward(w, u, grad_w, grad_u, ctx.constrain_coefs)
        grad_b = grad_a.sum(1)
        if not ctx.with_base:
            return grad_z_all[0].t(), grad_w, grad_u, grad_b, None, None, None
        grad_z0 = grad_z_all[0]  # (D, N)
        grad_mu = grad_z0.sum(1)
        grad_log_sigma = torch.linalg.vecdot(grad_z0, eps.t())
        grad_log_sigma.mul_(sigma).sub_(grad_second.sum())
        return None, grad_w, grad_u, grad_b, None, grad_mu, grad_log_sigma


#: Run the per-layer loops of ``_PlanarStackShared`` in NumPy, on the same memory, for CPU
#: tensors. A 2-D training step is bound by the fixed cost of each call, and a NumPy call on
#: 1000 numbers costs about 0.6-1 us where a torch operation costs 2-3 us (dispatch, output
#: checks): 3.1 against 10.1 us per forward layer at N = 1000, D = 2 (three NumPy calls
#: against torch's three). Set to False to run the torch loop everywhere (as on CUDA).
NUMPY_LOOPS_ON_CPU = True


def _numpy_loops(t: Tensor) -> bool:
    return (NUMPY_LOOPS_ON_CPU and t.device.type == "cpu"
            and t.dtype in (torch.float32, torch.float64))


def _identity_and(vectors: np.ndarray) -> np.ndarray:
    """The matrices [I, v_k] of shape (K, D, D + 1) for vectors v of shape (K, D)."""
    num_layers, dim = vectors.shape
    matrices = np.zeros((num_layers, dim, dim + 1), dtype=vectors.dtype)
    matrices.reshape(num_layers, -1)[:, ::dim + 2] = 1.0  # the diagonal of each I
    matrices[:, :, dim] = vectors
    return matrices


def _shared_forward_loop_numpy(columns: np.ndarray, w: np.ndarray, u_hat: np.ndarray,
                               b: np.ndarray) -> None:
    """The forward loop of ``_PlanarStackShared`` on NumPy views, in place, three calls per
    layer. ``columns[k]`` has the rows (1, z_k^T, h_{k+1}), shape (K + 1, D + 2, N), with the
    ones and z_0 filled in:

        h_k = tanh([b_k, w_k^T] (1; z_{k-1}))      (one dot, one tanh)
        z_k = [I, u_k] (z_{k-1}; h_k)               (one dot: z_{k-1} + u_k h_k)
    """
    num_layers, dim = w.shape
    bias_and_w = np.empty((num_layers, dim + 1), dtype=w.dtype)
    bias_and_w[:, 0], bias_and_w[:, 1:] = b, w
    identity_and_u = _identity_and(u_hat)  # (K, D, D + 1)
    dot, tanh = np.dot, np.tanh
    for k in range(w.shape[0]):
        block = columns[k]
        h = block[dim + 1]
        dot(bias_and_w[k], block[:dim + 1], out=h)
        tanh(h, out=h)
        dot(identity_and_u[k], block[1:], out=columns[k + 1, 1:dim + 1])


def _shared_backward_loop_numpy(grad_columns: np.ndarray, slope: np.ndarray, w: np.ndarray,
                                u_hat: np.ndarray) -> None:
    """The reverse loop of ``_PlanarStackShared``'s backward on NumPy views, in place, three
    calls per layer. ``grad_columns[k]`` has the rows (g_k^T, dL/da_k), shape (K + 1, D + 1, N),
    with g_K and the log-det's share of each dL/da_k filled in (see the Function's docstring):

        dL/da_k = s_k ([u_k^T, 1] (g_k; log-det share))     (one dot, one multiply)
        g_{k-1} = [I, w_k] (g_k; dL/da_k)                  (one dot: g_k + w_k dL/da_k)
    """
    num_layers, dim = w.shape
    u_and_one = np.empty((num_layers, dim + 1), dtype=w.dtype)
    u_and_one[:, :dim], u_and_one[:, dim] = u_hat, 1.0
    identity_and_w = _identity_and(w)  # (K, D, D + 1)
    dot, multiply = np.dot, np.multiply
    u_dot_g = np.empty_like(slope[0])
    for k in range(w.shape[0] - 1, -1, -1):
        block = grad_columns[k + 1]
        dot(u_and_one[k], block, out=u_dot_g)
        multiply(u_dot_g, slope[k], out=block[dim])
        dot(identity_and_w[k], block, out=grad_columns[k, :dim])


def _constrain_u_with_coefs(w: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``_constrain_u_and_dot`` (App. A.1) and the coefficients its backward needs, (..., K, 3):
    beta / ||w||^2, beta' / ||w||^2 and 2 beta / ||w||^4 (see ``_PlanarStackShared``).

    Returns:
        (u_hat (..., K, D), coefs (..., K, 3), w_dot_u_hat (..., K, 1)).
    """
    u_hat, w_dot_u_hat = _constrain_u_and_dot(w, u)
    w_dot_u = (w * u).sum(-1, keepdim=True)
    softplus = F.softplus(w_dot_u)
    beta = softplus.clamp_min(SOFTPLUS_FLOOR).sub_(1.0).sub_(w_dot_u)
    w_norm_sq = (w * w).sum(-1, keepdim=True)
    tiny = torch.finfo(w.dtype).tiny
    inv_norm_sq = w_norm_sq.clamp_min(tiny).reciprocal_()
    beta_over_n = beta * inv_norm_sq
    beta_prime = torch.sigmoid(w_dot_u).masked_fill_(softplus < SOFTPLUS_FLOOR, 0.0).sub_(1.0)
    two_beta_over_n2 = (2.0 * beta_over_n * inv_norm_sq).masked_fill_(w_norm_sq < tiny, 0.0)
    coefs = torch.cat([beta_over_n, beta_prime * inv_norm_sq, two_beta_over_n2], dim=-1)
    return u_hat, coefs, w_dot_u_hat


def _constrain_u_backward(w: Tensor, u: Tensor, grad_w: Tensor, grad_u_hat: Tensor,
                          coefs: Tensor) -> tuple[Tensor, Tensor]:
    """Carry dL/du_hat back through ``_constrain_u`` (App. A.1) to (dL/dw, dL/du), adding
    to ``grad_w`` the part of dL/dw that goes through u_hat (formulas: ``_PlanarStackShared``;
    ``coefs`` from ``_constrain_u_with_coefs``)."""
    t = (grad_u_hat * w).sum(-1, keepdim=True)
    scaled = coefs * t  # (..., 3): beta t / n (unused), beta' t / n, 2 beta t / n^2
    grad_u = torch.addcmul(grad_u_hat, scaled[..., 1:2], w)
    grad_w = grad_w.addcmul_(coefs[..., 0:1], grad_u_hat).addcmul_(scaled[..., 1:2], u)
    grad_w.addcmul_(scaled[..., 2:3], w, value=-1.0)
    return grad_w, grad_u


class _PlanarStackPerExample(torch.autograd.Function):
    """K planar layers with per-example parameters, as one autograd node.

    The same forward and analytic backward as ``_PlanarStackShared`` (see its docstring, also
    for the App. A.1 constraint), with broadcasting instead of matrix-vector products: per
    layer ``vecdot``, ``add_``, ``tanh_``, ``addcmul`` forward and ``vecdot``, ``addcmul_``,
    ``addcmul`` backward. Gradients of parameters that were broadcast (e.g. (B, K, D) against
    points (S, B, D)) are summed back to their shapes.

    Inputs: z (..., D); w, u (..., K, D) and b (..., K) whose leading dimensions broadcast
    against z's; constrain as in ``_PlanarStackShared``. Outputs: z_K and sum_log_det with the
    broadcast leading shape.
    """

    @staticmethod
    def forward(ctx, z, w, u, b, constrain):
        num_layers, dim = w.shape[-2:]
        param_lead = tuple(w.shape[:-2])
        lead = torch.broadcast_shapes(z.shape[:-1], param_lead)
        # the parameters' leading shape right-aligned with ``lead``: (1, ..., 1, P...)
        padded = (1,) * (len(lead) - len(param_lead)) + param_lead
        if constrain:
            u_hat, constrain_coefs, w_dot_u = _constrain_u_with_coefs(w, u)
        else:
            u_hat, constrain_coefs = u, None
            w_dot_u = (w * u_hat).sum(-1, keepdim=True)
        z_all = z.new_empty(num_layers + 1, *lead, dim)
        h_all = z.new_empty(num_layers, *lead)
        z_all[0].copy_(z.expand(*lead, dim))
        z_rows, h_rows = z_all.unbind(0), h_all.unbind(0)
        w_rows, u_rows, b_rows = w.unbind(-2), u_hat.unbind(-2), b.unbind(-1)
        for k in range(num_layers):
            torch.linalg.vecdot(z_rows[k], w_rows[k], out=h_rows[k])
            h_rows[k].add_(b_rows[k]).tanh_()
            torch.addcmul(z_rows[k], h_rows[k].unsqueeze(-1), u_rows[k], out=z_rows[k + 1])
        w_dot_u = w_dot_u.squeeze(-1).movedim(-1, 0).reshape(num_layers, *padded)
        log_det = h_all * h_all
        log_det.mul_(-w_dot_u).add_(w_dot_u)  # u.psi_k = c_k (1 - h_k^2)
        if constrain:
            log_det.log1p_()
        else:
            log_det.add_(1.0).abs_().log_()
        ctx.save_for_backward(z_all, h_all, w, u, u_hat, w_dot_u)
        ctx.constrain_coefs = constrain_coefs
        ctx.shapes = (z.shape, padded)
        return z_rows[num_layers].clone(), log_det.sum(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z, grad_log_det):
        z_all, h_all, w, u, u_hat, w_dot_u = ctx.saved_tensors
        z_shape, padded = ctx.shapes
        num_layers, dim = w.shape[-2:]
        param_lead = tuple(w.shape[:-2])
        slope = h_all * h_all
        slope.neg_().add_(1.0)  # s_k = 1 - h_k^2, (K, ...)
        gamma_over_det = slope * w_dot_u
        gamma_over_det.add_(1.0).reciprocal_().mul_(grad_log_det)
        grad_w_dot_u = (gamma_over_det * slope).sum_to_size(num_layers, *padded)
        # the log-det's share of dL/da_k, -2 gamma c_k h_k s_k / d_k (independent of the loop)
        grad_a = gamma_over_det.mul_(h_all).mul_(slope).mul_(w_dot_u).mul_(-2.0)
        grad_z_all = torch.empty_like(z_all)
        grad_z_all[num_layers].copy_(grad_z)
        g_rows, ga_rows, s_rows = grad_z_all.unbind(0), grad_a.unbind(0), slope.unbind(0)
        w_rows, u_rows = w.unbind(-2), u_hat.unbind(-2)
        for k in range(num_layers - 1, -1, -1):
            ga_rows[k].addcmul_(torch.linalg.vecdot(g_rows[k + 1], u_rows[k]), s_rows[k])
            torch.addcmul(g_rows[k + 1], ga_rows[k].unsqueeze(-1), w_rows[k], out=g_rows[k])
        # parameter gradients in the layer-first layout (K, 1.., P.., D), summed over the
        # broadcast dimensions, then returned as views in the parameters' layout
        layer_first = (num_layers, *padded, dim)
        grad_w = (grad_a.unsqueeze(-1) * z_all[:-1]).sum_to_size(layer_first)
        grad_w.addcmul_(grad_w_dot_u.unsqueeze(-1), u_hat.movedim(-2, 0).reshape(layer_first))
        grad_u = (h_all.unsqueeze(-1) * grad_z_all[1:]).sum_to_size(layer_first)
        grad_u.addcmul_(grad_w_dot_u.unsqueeze(-1), w.movedim(-2, 0).reshape(layer_first))
        grad_w = grad_w.reshape(num_layers, *param_lead, dim).movedim(0, -2)
        grad_u = grad_u.reshape(num_layers, *param_lead, dim).movedim(0, -2)
        if ctx.constrain_coefs is not None:
            grad_w, grad_u = _constrain_u_backward(w, u, grad_w, grad_u, ctx.constrain_coefs)
        grad_b = grad_a.sum_to_size(num_layers, *padded).reshape(num_layers, *param_lead)
        return g_rows[0].sum_to_size(z_shape), grad_w, grad_u, grad_b.movedim(0, -1), None


# --------------------------------------------------------------------------- radial


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
    layers = [z] if return_layers else None
    sum_log_det = z.new_zeros(z.shape[:-1])
    for k in range(z0.shape[-2]):
        z, log_det = _radial_step(z, z0[..., k, :], alpha[..., k], beta[..., k])
        sum_log_det = sum_log_det + log_det
        if return_layers:
            layers.append(z)
    return (layers if return_layers else z), sum_log_det


# --------------------------------------------------------------------------- modules


class PlanarFlow(nn.Module):
    """A stack of K planar layers with all parameters in stacked tensors.

    Parameters: ``w`` (K, D), ``u`` (K, D) (unconstrained; ``u_hat`` is derived by
    ``constrain_u`` at every call), ``b`` (K,). ``forward`` can also take per-example
    parameters of shape (B, K, D) / (B, K) produced by a network (amortized flows); the
    module's own parameters are then ignored.

    Args:
        dim: D. num_layers: K. constrain: apply App. A.1 (default True).
        init_scale: standard deviation of the initial ``u`` (w has std 1/sqrt(D)).
    """

    def __init__(self, dim: int, num_layers: int, constrain: bool = True, init_scale: float = 0.01):
        super().__init__()
        if dim < 1 or num_layers < 0:
            raise ValueError(f"need dim >= 1 and num_layers >= 0; got {dim}, {num_layers}")
        self.dim = dim
        self.num_layers = num_layers
        self.constrain = constrain
        self.w = nn.Parameter(torch.randn(num_layers, dim) / math.sqrt(dim))
        self.u = nn.Parameter(init_scale * torch.randn(num_layers, dim))
        self.b = nn.Parameter(torch.zeros(num_layers))

    def _params(self, w, u, b):
        if w is None and u is None and b is None:
            return self.w, self.u, self.b
        if w is None or u is None or b is None:
            raise ValueError("pass all of w, u, b (per-example parameters) or none of them")
        if w.shape[-2:] != (self.num_layers, self.dim):
            raise ValueError(
                f"per-example w must have shape (..., {self.num_layers}, {self.dim}); "
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
        return _constrain_u(self.w, self.u) if self.constrain else self.u

    def inverse(self, z_k: Tensor) -> tuple[Tensor, Tensor]:
        """z_K (..., D) -> (z_0, sum_k log|det_k| evaluated along the way).

        Needs constrain=True (an unconstrained layer may not be invertible).
        """
        _check_point(z_k, "z_k", self.dim)
        if not self.constrain:
            raise ValueError("inverse needs constrain=True (App. A.1 guarantees invertibility)")
        u_hat, w_dot_u = _constrain_u_and_dot(self.w, self.u)
        w_dot_u = w_dot_u.squeeze(-1)
        z = z_k
        sum_log_det = z.new_zeros(z.shape[:-1])
        for k in reversed(range(self.num_layers)):
            z = _planar_inverse(z, self.w[k], u_hat[k], self.b[k], w_dot_u[k], None, 100)
            h = torch.tanh(z @ self.w[k] + self.b[k])
            sum_log_det = sum_log_det + torch.log1p((1.0 - h * h) * w_dot_u[k])
        return z, sum_log_det

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_layers={self.num_layers}, constrain={self.constrain}"


class RadialFlow(nn.Module):
    """A stack of K radial layers (Eq. 14), parameters stacked: ``z0`` (K, D),
    ``alpha_raw`` (K,), ``beta_raw`` (K,), mapped by ``constrain_radial``."""

    def __init__(self, dim: int, num_layers: int, init_scale: float = 1.0):
        super().__init__()
        if dim < 1 or num_layers < 0:
            raise ValueError(f"need dim >= 1 and num_layers >= 0; got {dim}, {num_layers}")
        self.dim = dim
        self.num_layers = num_layers
        self.z0 = nn.Parameter(init_scale * torch.randn(num_layers, dim))
        self.alpha_raw = nn.Parameter(torch.zeros(num_layers))
        # alpha_raw = beta_raw = 0 gives alpha = log 2, beta = 0: the identity map
        self.beta_raw = nn.Parameter(0.01 * torch.randn(num_layers))

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z_0 (..., D) -> (z_K, sum_k log|det_k|)."""
        _check_point(z, "z", self.dim)
        return radial_flow(z, self.z0, self.alpha_raw, self.beta_raw)

    def layers(self, z: Tensor) -> list[Tensor]:
        """[z_0, ..., z_K] for figures."""
        _check_point(z, "z", self.dim)
        return radial_flow(z, self.z0, self.alpha_raw, self.beta_raw, return_layers=True)[0]

    def inverse(self, z_k: Tensor) -> tuple[Tensor, Tensor]:
        """z_K -> (z_0, sum_k log|det_k|), closed-form layer inverses."""
        _check_point(z_k, "z_k", self.dim)
        alpha, beta = constrain_radial(self.alpha_raw, self.beta_raw)
        z = z_k
        sum_log_det = z.new_zeros(z.shape[:-1])
        for k in reversed(range(self.num_layers)):
            z = radial_inverse(z, self.z0[k], alpha[k], beta[k])
            sum_log_det = sum_log_det + _radial_step(z, self.z0[k], alpha[k], beta[k])[1]
        return z, sum_log_det

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_layers={self.num_layers}"


class NormalizingFlow(nn.Module):
    """A learnable diagonal Gaussian q_0 = N(mu, diag(sigma^2)) followed by a flow stack.

    ``rsample(n)`` draws z_0 = mu + sigma eps by the reparameterization trick, pushes it through
    the stack and returns z_K with log q_K(z_K) = log q_0(z_0) - sum_k log|det_k| (Eq. 13).

    Args:
        dim: D.
        flow: a ``PlanarFlow``/``RadialFlow`` (or any module mapping z -> (z, sum_log_det));
            ``None`` gives the plain Gaussian (K = 0).
    """

    def __init__(self, dim: int, flow: nn.Module | None = None):
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        flow_dim = getattr(flow, "dim", dim)
        if flow_dim != dim:
            raise ValueError(
                f"the flow acts on D = {flow_dim} dimensions but the base density has "
                f"dim = {dim}; expected a flow built with dim = {dim}"
            )
        self.dim = dim
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_sigma = nn.Parameter(torch.zeros(dim))
        self.flow = flow

    @property
    def num_layers(self) -> int:
        return 0 if self.flow is None else int(getattr(self.flow, "num_layers", 0))

    def base_log_prob(self, z_0: Tensor) -> Tensor:
        """log N(z_0; mu, diag(sigma^2)), shape (...)."""
        eps = (z_0 - self.mu) * torch.exp(-self.log_sigma)
        return -0.5 * (eps * eps).sum(-1) - self.log_sigma.sum() - 0.5 * self.dim * math.log(2 * math.pi)

    def _base_sample(self, num_samples: int, generator: torch.Generator | None):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        eps = torch.randn(num_samples, self.dim, generator=generator,
                          device=self.mu.device, dtype=self.mu.dtype)
        z_0 = torch.addcmul(self.mu, eps, torch.exp(self.log_sigma))
        log_q0 = (-0.5 * (eps * eps).sum(-1) - self.log_sigma.sum()
                  - 0.5 * self.dim * math.log(2 * math.pi))
        return z_0, log_q0

    def rsample(self, num_samples: int, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
        """Draw (z_K (n, D), log q_K(z_K) (n,)), differentiable in all parameters."""
        flow = self.flow
        if type(flow) is PlanarFlow and flow.num_layers > 0 and torch.is_grad_enabled():
            # training: base and stack in one autograd node (same draws as _base_sample)
            if num_samples < 1:
                raise ValueError(f"num_samples must be >= 1, got {num_samples}")
            if self.mu.device.type == "cpu":
                keep_freed_memory()
            eps = torch.randn(num_samples, self.dim, generator=generator,
                              device=self.mu.device, dtype=self.mu.dtype)
            return _PlanarStackShared.apply(eps, flow.w, flow.u, flow.b, flow.constrain,
                                            self.mu, self.log_sigma)
        z_0, log_q0 = self._base_sample(num_samples, generator)
        if self.flow is None:
            return z_0, log_q0
        z_k, sum_log_det = self.flow(z_0)
        return z_k, log_q0 - sum_log_det

    def sample_layers(self, num_samples: int, generator: torch.Generator | None = None
                      ) -> list[Tensor]:
        """[z_0, ..., z_K], each (n, D), for figures (no gradient)."""
        with torch.no_grad():
            z_0, _ = self._base_sample(num_samples, generator)
            if self.flow is None:
                return [z_0]
            return self.flow.layers(z_0)

    def log_prob(self, z_k: Tensor) -> Tensor:
        """Exact log q_K(z_K) at arbitrary points by inverting the stack layer by layer.

        log q_K(z_K) = log q_0(f^{-1}(z_K)) - sum_k log|det_k|, with the planar inverse of
        ``planar_inverse`` or the radial one of ``radial_inverse``.
        """
        _check_point(z_k, "z_k", self.dim)
        if self.flow is None:
            return self.base_log_prob(z_k)
        if not hasattr(self.flow, "inverse"):
            raise ValueError(f"{type(self.flow).__name__} has no inverse; cannot evaluate log q")
        z_0, sum_log_det = self.flow.inverse(z_k)
        return self.base_log_prob(z_0) - sum_log_det


# --------------------------------------------------------------------------- objective


def free_energy(log_q: Tensor, U_values: Tensor, beta: float = 1.0) -> Tensor:
    """Monte-Carlo free energy, Eq. (15): F = E_q[log q_K(z_K) + beta U(z_K)].

    For a target p(z) = exp(-U(z)) / Z, F = KL(q_K || p) - log Z when beta = 1, so
    KL = F + log Z >= 0 (see ``potentials.log_partition``).

    Args:
        log_q: log q_K(z_K) of the samples, shape (n,).
        U_values: U(z_K), shape (n,).
        beta: inverse temperature (annealing; ``annealed_beta``).

    Returns:
        scalar tensor: mean(log_q + beta U).
    """
    if log_q.shape != U_values.shape:
        raise ValueError(
            f"log_q and U_values must have the same shape (n,); received {tuple(log_q.shape)} "
            f"and {tuple(U_values.shape)}"
        )
    return torch.add(log_q, U_values, alpha=beta).mean()  # one operation for log_q + beta U


def annealed_beta(step: int, start: float = 0.01, num_steps: int = 10_000) -> float:
    """The paper's annealing schedule (Sec. 6.2): beta_t = min(1, 0.01 + t / 10_000)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(1.0, start + step / num_steps)


def make_flow(kind: str, dim: int, num_layers: int) -> NormalizingFlow:
    """A ``NormalizingFlow`` with a planar or radial stack (``kind`` in {"planar", "radial"})."""
    stacks: dict[str, Callable[[int, int], nn.Module]] = {"planar": PlanarFlow, "radial": RadialFlow}
    if kind not in stacks:
        raise ValueError(f"kind must be one of {sorted(stacks)}, got {kind!r}")
    if num_layers < 0 or dim < 1:
        raise ValueError(
            f"expected dim >= 1 and num_layers K >= 0 (K = 0: the plain Gaussian); received "
            f"dim = {dim}, num_layers = {num_layers}"
        )
    return NormalizingFlow(dim, stacks[kind](dim, num_layers) if num_layers > 0 else None)
