"""The fast path of the planar stack: the same values and gradients as ``planar.planar_flow``'s
loop, computed with fewer, cheaper calls. Nothing here is needed to understand the flows.

Why: a training step of a 2-D flow (N = 1000 points, K = 32-100 layers) is bound by
the fixed cost of each tensor operation and of each node autograd records, not by arithmetic.
The reference loop records about ten autograd nodes per layer; here the whole stack is one
node, a custom ``torch.autograd.Function``:

* forward: all u_hat at once (App. A.1), then a few fused operations per layer, then every
  layer's log-det (Eq. 12) at once;
* backward: one reverse loop with the derivatives of Eq. (10)-(12) and App. A.1 derived by
  hand (formulas in ``_PlanarStackShared``'s docstring), the sums over points batched after
  the loop.

``_PlanarStackShared`` serves parameters shared by all points, (K, D), on the CPU: it runs
entirely in NumPy on the tensors' memory (App. A.1 and its backward, both loops, the log-dets,
the gradient sums) and hands the results back by ``torch.from_numpy``, since a NumPy call on a
small array costs a fraction of a torch operation's dispatch (``NUMPY_ON_CPU``).
``_PlanarStackPerExample`` runs torch operations with broadcasting: per-example parameters,
(..., K, D), and shared ones where the NumPy stack does not apply (CUDA, other dtypes). Both
compute App. A.1 with the same function, ``_constrain_u_with_coefs``, written once for NumPy
arrays and torch tensors.

The switch: importing this module (the package does) installs ``planar.FAST_STACK``, which
``planar.planar_flow`` calls; it runs ``planar_flow`` here when ``applies(z, w, u, b)``: the
fast path is enabled (the default), the stack has K >= 1 layers and gradients are being
recorded for one of the inputs. Without gradients (sampling, evaluation, figures) the
reference loop runs. This module depends on the reference, never the other way round. To run
the reference everywhere, for instance to compare or to debug:

    from nfutils.flows import fast_planar
    with fast_planar.use_fast_path(False):
        z_k, log_q = model.rsample(1000)      # and its backward: plain autograd

or set ``fast_planar.ENABLED = False``. Nothing else in the process changes: no global torch,
NumPy or allocator setting is touched (NumPy's floating-point warnings are silenced only
inside the stack, as torch raises none). tests/test_flows_fast.py checks values and
gradients against the reference in float64 (NumPy and torch stacks), on random inputs and on
the App. A.1 extreme grid, and ``torch.autograd.gradcheck`` on the analytic backward;
benchmarks/flows.py measures the gain.
"""


from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from . import planar
from .planar_layer import SOFTPLUS_FLOOR

__all__ = ["ENABLED", "NUMPY_ON_CPU", "use_fast_path", "applies", "planar_flow"]

Array = np.ndarray | Tensor  # App. A.1 below serves both

#: The switch: ``planar.planar_flow`` uses this module when True (see ``use_fast_path``).
ENABLED = True

#: Run a stack with shared parameters on CPU tensors (float32 or float64) entirely in NumPy,
#: on the same memory (``_PlanarStackShared``). A 2-D training step is bound by the fixed cost
#: of each call, and a NumPy call on a small array costs about 0.5-1 us where a torch operation
#: costs 2-5 us (dispatch, output checks, autograd bookkeeping). Set to False to run the torch
#: operations of ``_PlanarStackPerExample`` instead (what CUDA runs).
NUMPY_ON_CPU = True


@contextlib.contextmanager
def use_fast_path(enabled: bool = True) -> Iterator[None]:
    """Within the block, ``planar.planar_flow`` takes the fast path (True) or the reference
    loop (False); the previous setting comes back afterwards."""
    global ENABLED
    previous, ENABLED = ENABLED, bool(enabled)
    try:
        yield
    finally:
        ENABLED = previous


def applies(z: Tensor, w: Tensor, u: Tensor, b: Tensor) -> bool:
    """Whether ``planar_flow`` here should run the stack: enabled, K >= 1, and autograd
    recording for one of the inputs (training)."""
    return (ENABLED and w.shape[-2] > 0 and torch.is_grad_enabled()
            and (z.requires_grad or w.requires_grad or u.requires_grad or b.requires_grad))


def planar_flow(z: Tensor, w: Tensor, u: Tensor, b: Tensor, constrain: bool = True
                ) -> tuple[Tensor, Tensor]:
    """``planar.planar_flow(z, w, u, b, constrain)`` (arguments already checked there) as one
    autograd node: (z_K (..., D), sum_k log|det_k| (...))."""
    if not (w.dim() == 2 and NUMPY_ON_CPU and z.device.type == "cpu"
            and z.dtype in (torch.float32, torch.float64)
            and all(t.device == z.device and t.dtype == z.dtype for t in (w, u, b))):
        return _PlanarStackPerExample.apply(z, w, u, b, constrain)
    if z.dim() == 2:
        return _PlanarStackShared.apply(z, w, u, b, constrain)
    z_k, sum_log_det = _PlanarStackShared.apply(z.reshape(-1, z.shape[-1]), w, u, b, constrain)
    return z_k.reshape(z.shape), sum_log_det.reshape(z.shape[:-1])


def _planar_flow_where_it_applies(z: Tensor, w: Tensor, u: Tensor, b: Tensor,
                                  constrain: bool) -> tuple[Tensor, Tensor] | None:
    """``planar_flow`` here where ``applies`` says yes, else None: ``planar.FAST_STACK``."""
    return planar_flow(z, w, u, b, constrain) if applies(z, w, u, b) else None


planar.FAST_STACK = _planar_flow_where_it_applies  # the one place the reference learns of it


def _constrain_u_with_coefs(xp: ModuleType, w: Array, u: Array
                            ) -> tuple[Array, Array, tuple[Array, ...]]:
    """App. A.1 as ``planar_layer._constrain_u_and_dot`` computes it, for NumPy arrays
    (``xp = np``) and torch tensors (``xp = torch``), with what its backward needs.

    With x = w.u, the scale s = max_i |w_i| and v = w / s (||v||^2 in [1, D]),
    u_hat = u - (v.u / ||v||^2) v + m(x) v / (s ||v||^2), m(x) = max(softplus(x), 1e-4) - 1;
    a w with no normal-range entry (all |w_i| < tiny, e.g. w = 0) keeps u_hat = u.

    Returns:
        (u_hat (..., K, D), w.u_hat = m(x) (..., K, 1), coefs): coefs = (v, ||v||^2, s,
        beta = m(x) - x, beta' = dbeta/dx = sigmoid(x) - 1 = -exp(-softplus(x)), or -1 where
        the floor is active), with beta = beta' = 0 where w is left uncorrected (see
        ``_constrain_u_backward``).
    """
    scale = xp.amax(abs(w), -1, keepdims=True)
    corrected = scale >= xp.finfo(w.dtype).tiny
    scale = xp.where(corrected, scale, 1.0)
    v = w / scale
    v_norm_sq = xp.where(corrected, (v * v).sum(-1, keepdims=True), 1.0)
    v_dot_u = (v * u).sum(-1, keepdims=True)
    w_dot_u = scale * v_dot_u  # may be +-inf for finite w, u of large norm
    softplus = xp.where(w_dot_u > 20.0, w_dot_u, xp.log1p(xp.exp(w_dot_u)))  # as F.softplus
    m_w_dot_u = softplus.clip(min=SOFTPLUS_FLOOR) - 1.0
    u_hat = u - (v_dot_u / v_norm_sq) * v + (m_w_dot_u / (scale * v_norm_sq)) * v
    beta = xp.where(corrected, m_w_dot_u - w_dot_u, 0.0)
    beta_prime = xp.where(softplus < SOFTPLUS_FLOOR, -1.0, -xp.exp(-softplus))  # m' - 1
    beta_prime = xp.where(corrected, beta_prime, 0.0)
    return (xp.where(corrected, u_hat, u), xp.where(corrected, m_w_dot_u, w_dot_u),
            (v, v_norm_sq, scale, beta, beta_prime))


def _constrain_u_backward(u: Array, grad_w: Array, grad_u_hat: Array, coefs: tuple[Array, ...]
                          ) -> tuple[Array, Array]:
    """Carry G = dL/du_hat back through App. A.1 to (dL/dw, dL/du) (NumPy or torch), adding
    to ``grad_w`` the part of dL/dw that goes through u_hat. With p = G.v / ||v||^2 and
    ``coefs`` of ``_constrain_u_with_coefs`` (the formulas of ``_PlanarStackShared`` with
    w = s v, ||w||^2 = s^2 ||v||^2, so that nothing overflows that the result does not):

        dL/du = G + beta' p v,
        dL/dw += [(beta / s) (G - 2 p v) + beta' (G.v) u] / (s ||v||^2).
    """
    v, v_norm_sq, scale, beta, beta_prime = coefs
    g_dot_v = (grad_u_hat * v).sum(-1, keepdims=True)
    p = g_dot_v / v_norm_sq
    grad_w = grad_w + ((beta / scale) * (grad_u_hat - 2.0 * p * v)
                       + (beta_prime * g_dot_v) * u) / (scale * v_norm_sq)
    return grad_w, grad_u_hat + (beta_prime * p) * v


class _PlanarStackShared(torch.autograd.Function):
    """K planar layers with parameters shared by all N points, as one autograd node, in NumPy
    on the CPU tensors' memory (float32 or float64).

    Forward (Eq. 10), per layer: a_k = z_{k-1} w_k + b_k, h_k = tanh(a_k),
    z_k = z_{k-1} + u_k h_k, with the points stored as (D, N) so that every call streams along
    N (``_shared_forward_loop_numpy``). Then log|det_k| = log(1 + (w_k.u_k)(1 - h_k^2))
    (Eq. 12) for all layers at once.

    Backward, with g_k = dL/dz_k, s_k = 1 - h_k^2, c_k = w_k.u_k, d_k = 1 + c_k s_k and
    gamma = dL/d(sum_k log|det_k|):

        dL/da_k    = s_k (g_k.u_k) - 2 gamma c_k h_k s_k / d_k
        g_{k-1}    = g_k + w_k dL/da_k
        dL/dw_k    = sum_n dL/da_k z_{k-1} + dL/dc_k u_k,   dL/dc_k = sum_n gamma s_k / d_k
        dL/du_k    = sum_n h_k g_k + dL/dc_k w_k,           dL/db_k = sum_n dL/da_k

    one reverse loop of three calls per layer (``_shared_backward_loop_numpy``); the sums over
    points are batched after the loop (``np.vecdot``). With ``constrain``, u_hat = u + beta w /
    ||w||^2, beta = m(w.u) - w.u (App. A.1), is computed inside too, and the gradient with
    respect to u_hat, G, is carried back to the free parameters by hand, with t = G.w:

        dL/du = G + beta' t w / ||w||^2,
        dL/dw += beta G / ||w||^2 + beta' t u / ||w||^2 - 2 beta t w / ||w||^4,
        beta' = sigmoid(w.u) - 1

    (sigmoid replaced by 0, so beta' = -1, where the floor of App. A.1 is active, as autograd's
    clamp; 0 for a w that App. A.1 leaves uncorrected). ``_constrain_u_backward`` computes
    these with w = s v, s = max_i |w_i|.

    Checked against autograd by ``gradcheck`` in tests/test_flows_fast.py.

    Inputs: z (N, D), w and u (K, D), b (K,), constrain (True: u is free and u_hat comes
    from App. A.1, log-dets by log1p; False: u is used as it is, log-dets log|1 + u.psi|).
    Outputs: z_K (N, D) and sum_log_det (N,).
    """

    @staticmethod
    def forward(ctx, z, w, u, b, constrain):
        z_0, w_, u_, b_ = (t.detach().numpy() for t in (z, w, u, b))
        flow_length, dim = w_.shape
        with np.errstate(all="ignore"):  # torch warns of no overflow; neither does the stack
            if constrain:
                u_hat, w_dot_u, coefs = _constrain_u_with_coefs(np, w_, u_)
            else:
                u_hat, w_dot_u, coefs = u_, (w_ * u_).sum(-1, keepdims=True), None
            # columns[k] holds (1, z_k^T, h_{k+1}) as rows: (K + 1, D + 2, N), for a layer in
            # three calls of the loop; large arrays from torch's allocator (with NumPy's, a step
            # at K = 100 ran up to 2x longer in a process that had run other models)
            columns = z.new_empty(flow_length + 1, dim + 2, z_0.shape[0]).numpy()
            columns[:, 0] = 1.0
            columns[0, 1:dim + 1] = z_0.T
            _shared_forward_loop_numpy(columns, w_, u_hat, b_)
            h_all = columns[:flow_length, dim + 1]  # h_all[k] = h_{k+1}, (K, N)
            # s_k = 1 - h_k^2 and u.psi_k = c_k s_k (Eq. 11), (K, N), kept for the backward;
            # c_k = w_k.u_k, with constrain m(w_k.u_k) exactly (App. A.1)
            slope, u_dot_psi, log_det = z.new_empty(3, *h_all.shape).numpy()
            np.subtract(1.0, np.multiply(h_all, h_all, out=slope), out=slope)
            np.multiply(slope, w_dot_u, out=u_dot_psi)
            if constrain:  # 1 + u.psi > 0 is guaranteed by w.u_hat > -1
                np.log1p(u_dot_psi, out=log_det)
            else:
                np.log(np.abs(np.add(u_dot_psi, 1.0, out=log_det), out=log_det), out=log_det)
        ctx.save_for_backward(w, u)
        ctx.arrays = columns, slope, u_dot_psi, u_hat, w_dot_u, coefs
        z_k = np.ascontiguousarray(columns[flow_length, 1:dim + 1].T)
        return torch.from_numpy(z_k), torch.from_numpy(log_det.sum(0))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z, grad_log_det):
        w, u = (t.detach().numpy() for t in ctx.saved_tensors)
        columns, slope, u_dot_psi, u_hat, w_dot_u, coefs = ctx.arrays
        flow_length, dim = w.shape
        h_all = columns[:flow_length, dim + 1]
        with np.errstate(all="ignore"):
            gamma_over_det = np.add(u_dot_psi, 1.0, out=grad_z.new_empty(slope.shape).numpy())
            np.divide(grad_log_det.numpy(), gamma_over_det, out=gamma_over_det)
            grad_w_dot_u = np.vecdot(gamma_over_det, slope)[:, None]  # dL/dc_k, (K, 1)
            # grad_columns[k] holds ((dL/dz_k)^T, dL/da_k) as rows: (K + 1, D + 1, N)
            grad_columns = grad_z.new_empty(flow_length + 1, dim + 1, columns.shape[-1]).numpy()
            grad_z_all = grad_columns[:, :dim]  # grad_z_all[k] = (dL/dz_k)^T
            grad_a = grad_columns[1:, dim]  # grad_a[k] = dL/da_{k+1}, (K, N)
            grad_z_all[flow_length] = grad_z.numpy().T
            # dL/da_k starts as gamma h_k / d_k, of the log-det's share -2 c_k s_k gamma h_k / d_k
            np.multiply(gamma_over_det, h_all, out=grad_a)
            _shared_backward_loop_numpy(grad_columns, slope, w, u_hat, w_dot_u)
            # (sum_n dL/da_k, sum_n dL/da_k z_{k-1}) = (dL/db_k, dL/dw_k but for dL/dc_k u_k)
            grad_b_and_w = np.vecdot(columns[:-1, :dim + 1], grad_a[:, None])  # (K, D + 1)
            grad_w = grad_b_and_w[:, 1:] + grad_w_dot_u * u_hat
            grad_u = np.vecdot(grad_z_all[1:], h_all[:, None]) + grad_w_dot_u * w
            if coefs is not None:
                grad_w, grad_u = _constrain_u_backward(u, grad_w, grad_u, coefs)
            grads = grad_z_all[0].T, grad_w, grad_u, grad_b_and_w[:, 0]
        return (*(torch.from_numpy(g) for g in grads), None)


def _identity_and(vectors: np.ndarray) -> np.ndarray:
    """The matrices [I, v_k] of shape (K, D, D + 1) for vectors v of shape (K, D)."""
    flow_length, dim = vectors.shape
    matrices = np.zeros((flow_length, dim, dim + 1), dtype=vectors.dtype)
    matrices.reshape(flow_length, -1)[:, ::dim + 2] = 1.0  # the diagonal of each I
    matrices[:, :, dim] = vectors
    return matrices


def _shared_forward_loop_numpy(columns: np.ndarray, w: np.ndarray, u_hat: np.ndarray,
                               b: np.ndarray) -> None:
    """The forward loop of ``_PlanarStackShared``, in place, three calls per layer.
    ``columns[k]`` has the rows (1, z_k^T, h_{k+1}), shape (K + 1, D + 2, N), with the
    ones and z_0 filled in:

        h_k = tanh([b_k, w_k^T] (1; z_{k-1}))      (one dot, one tanh)
        z_k = [I, u_k] (z_{k-1}; h_k)               (one dot: z_{k-1} + u_k h_k)
    """
    flow_length, dim = w.shape
    bias_and_w = np.empty((flow_length, dim + 1), dtype=w.dtype)
    bias_and_w[:, 0], bias_and_w[:, 1:] = b, w
    identity_and_u = _identity_and(u_hat)  # (K, D, D + 1)
    dot, tanh = np.dot, np.tanh
    for one_z, z_h, h, z_next, bias_and_w_k, identity_and_u_k in zip(  # views of layer k
            columns[:-1, :dim + 1], columns[:-1, 1:], columns[:-1, dim + 1],
            columns[1:, 1:dim + 1], bias_and_w, identity_and_u):
        dot(bias_and_w_k, one_z, h)
        tanh(h, h)
        dot(identity_and_u_k, z_h, z_next)


def _shared_backward_loop_numpy(grad_columns: np.ndarray, slope: np.ndarray, w: np.ndarray,
                                u_hat: np.ndarray, w_dot_u: np.ndarray) -> None:
    """The reverse loop of ``_PlanarStackShared``'s backward, in place, three calls per
    layer. ``grad_columns[k]`` has the rows (g_k^T, dL/da_k), shape (K + 1, D + 1, N), with g_K
    and r_k = gamma h_k / d_k in place of each dL/da_k filled in (see the Function's
    docstring); c_k = ``w_dot_u``, (K, 1):

        dL/da_k = s_k ([u_k^T, -2 c_k] (g_k; r_k))     (one dot, one multiply)
        g_{k-1} = [I, w_k] (g_k; dL/da_k)               (one dot: g_k + w_k dL/da_k)
    """
    flow_length, dim = w.shape
    u_and_c = np.empty((flow_length, dim + 1), dtype=w.dtype)
    u_and_c[:, :dim], u_and_c[:, dim:] = u_hat, -2.0 * w_dot_u
    identity_and_w = _identity_and(w)  # (K, D, D + 1)
    dot, multiply = np.dot, np.multiply
    u_dot_g = np.empty_like(slope[0])
    for block, grad_a, grad_z_prev, slope_k, u_and_c_k, identity_and_w_k in zip(  # k = K..1
            grad_columns[:0:-1], grad_columns[:0:-1, dim], grad_columns[-2::-1, :dim],
            slope[::-1], u_and_c[::-1], identity_and_w[::-1]):
        dot(u_and_c_k, block, u_dot_g)
        multiply(u_dot_g, slope_k, grad_a)
        dot(identity_and_w_k, block, grad_z_prev)


class _PlanarStackPerExample(torch.autograd.Function):
    """K planar layers with per-example parameters, as one autograd node.

    The same forward and analytic backward as ``_PlanarStackShared`` (see its docstring, also
    for the App. A.1 constraint), with broadcasting instead of matrix-vector products: per
    layer ``vecdot``, ``add_``, ``tanh_``, ``addcmul`` forward and ``vecdot``, ``addcmul_``,
    ``addcmul`` backward. Gradients of parameters that were broadcast (e.g. (B, K, D) against
    points (S, B, D)) are summed back to their shapes. It also runs shared parameters (K, D)
    where ``_PlanarStackShared`` does not (CUDA, other dtypes, ``NUMPY_ON_CPU = False``).

    Inputs: z (..., D); w, u (..., K, D) and b (..., K) whose leading dimensions broadcast
    against z's; constrain as in ``_PlanarStackShared``. Outputs: z_K and sum_log_det with the
    broadcast leading shape.
    """

    @staticmethod
    def forward(ctx, z, w, u, b, constrain):
        flow_length, dim = w.shape[-2:]
        param_lead = tuple(w.shape[:-2])
        lead = torch.broadcast_shapes(z.shape[:-1], param_lead)
        # the parameters' leading shape right-aligned with ``lead``: (1, ..., 1, P...)
        padded = (1,) * (len(lead) - len(param_lead)) + param_lead
        if constrain:
            u_hat, w_dot_u, constrain_coefs = _constrain_u_with_coefs(torch, w, u)
        else:
            u_hat, constrain_coefs = u, None
            w_dot_u = (w * u_hat).sum(-1, keepdim=True)
        z_all = z.new_empty(flow_length + 1, *lead, dim)
        h_all = z.new_empty(flow_length, *lead)
        z_all[0].copy_(z.expand(*lead, dim))
        z_rows, h_rows = z_all.unbind(0), h_all.unbind(0)
        w_rows, u_rows, b_rows = w.unbind(-2), u_hat.unbind(-2), b.unbind(-1)
        for k in range(flow_length):
            torch.linalg.vecdot(z_rows[k], w_rows[k], out=h_rows[k])
            h_rows[k].add_(b_rows[k]).tanh_()
            torch.addcmul(z_rows[k], h_rows[k].unsqueeze(-1), u_rows[k], out=z_rows[k + 1])
        w_dot_u = w_dot_u.squeeze(-1).movedim(-1, 0).reshape(flow_length, *padded)
        log_det = h_all * h_all
        log_det.mul_(-w_dot_u).add_(w_dot_u)  # u.psi_k = c_k (1 - h_k^2)
        if constrain:
            log_det.log1p_()
        else:
            log_det.add_(1.0).abs_().log_()
        ctx.save_for_backward(z_all, h_all, w, u, u_hat, w_dot_u)
        ctx.constrain_coefs = constrain_coefs
        ctx.shapes = (z.shape, padded)
        return z_rows[flow_length].clone(), log_det.sum(0)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_z, grad_log_det):
        z_all, h_all, w, u, u_hat, w_dot_u = ctx.saved_tensors
        z_shape, padded = ctx.shapes
        flow_length, dim = w.shape[-2:]
        param_lead = tuple(w.shape[:-2])
        slope = h_all * h_all
        slope.neg_().add_(1.0)  # s_k = 1 - h_k^2, (K, ...)
        gamma_over_det = slope * w_dot_u
        gamma_over_det.add_(1.0).reciprocal_().mul_(grad_log_det)
        grad_w_dot_u = (gamma_over_det * slope).sum_to_size(flow_length, *padded)
        # the log-det's share of dL/da_k, -2 gamma c_k h_k s_k / d_k (independent of the loop)
        grad_a = gamma_over_det.mul_(h_all).mul_(slope).mul_(w_dot_u).mul_(-2.0)
        grad_z_all = torch.empty_like(z_all)
        grad_z_all[flow_length].copy_(grad_z)
        g_rows, ga_rows, s_rows = grad_z_all.unbind(0), grad_a.unbind(0), slope.unbind(0)
        w_rows, u_rows = w.unbind(-2), u_hat.unbind(-2)
        for k in range(flow_length - 1, -1, -1):
            ga_rows[k].addcmul_(torch.linalg.vecdot(g_rows[k + 1], u_rows[k]), s_rows[k])
            torch.addcmul(g_rows[k + 1], ga_rows[k].unsqueeze(-1), w_rows[k], out=g_rows[k])
        # parameter gradients in the layer-first layout (K, 1.., P.., D), summed over the
        # broadcast dimensions, then returned as views in the parameters' layout
        layer_first = (flow_length, *padded, dim)
        grad_w = (grad_a.unsqueeze(-1) * z_all[:-1]).sum_to_size(layer_first)
        grad_w.addcmul_(grad_w_dot_u.unsqueeze(-1), u_hat.movedim(-2, 0).reshape(layer_first))
        grad_u = (h_all.unsqueeze(-1) * grad_z_all[1:]).sum_to_size(layer_first)
        grad_u.addcmul_(grad_w_dot_u.unsqueeze(-1), w.movedim(-2, 0).reshape(layer_first))
        grad_w = grad_w.reshape(flow_length, *param_lead, dim).movedim(0, -2)
        grad_u = grad_u.reshape(flow_length, *param_lead, dim).movedim(0, -2)
        if ctx.constrain_coefs is not None:
            grad_w, grad_u = _constrain_u_backward(u, grad_w, grad_u, ctx.constrain_coefs)
        grad_b = grad_a.sum_to_size(flow_length, *padded).reshape(flow_length, *param_lead)
        return g_rows[0].sum_to_size(z_shape), grad_w, grad_u, grad_b.movedim(0, -1), None


