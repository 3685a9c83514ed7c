"""The fast planar stack (nfutils.flows.fast_planar) against the reference (nfutils.flows.planar).

The reference is the plain loop of ``planar.planar_flow`` (run with
``fast_planar.use_fast_path(False)``) and, independently, one ``planar_transform`` per layer
on ``constrain_u``'s u_hat. The fast path must give the same values (z_K, log-dets, log q) to
1e-6 in float64 and the same gradients with respect to w, u, b and z, for shared and for
per-example parameters, on the NumPy stack (shared parameters on the CPU) and on the torch
one, on random inputs and on the App. A.1 extreme grid; its App. A.1 (NumPy and torch) must
equal ``constrain_u`` on that grid, float32 and float64, with the backward of autograd; its
analytic backward must pass ``torch.autograd.gradcheck``; and the switch must change nothing
outside the call.
"""

import numpy as np
import pytest
import torch
from test_flows import extreme_grid

from nfutils import flows
from nfutils.flows import PlanarFlow, constrain_u, fast_planar, planar_flow, planar_transform

F64 = dict(dtype=torch.float64)


@pytest.fixture(params=[True, False], ids=["numpy", "torch"])
def loop_backend(request, monkeypatch):
    """Run a test with shared parameters on the NumPy stack (the CPU default) and on the torch
    operations (what CUDA runs), so that both are checked against the reference."""
    monkeypatch.setattr(fast_planar, "NUMPY_ON_CPU", request.param)
    return "PlanarStackShared" if request.param else "PlanarStackPerExample"


def per_layer_log_q(log_q0, z, w, u, b, constrain=True):
    """log q_K = log q_0 - sum_k log|det_k| with one planar_transform per layer (Eq. 13)."""
    if constrain:  # w.u_hat = m(w.u) exactly (App. A.1), not the rounded dot product
        u_hat, w_dot_u = constrain_u(w, u, return_w_dot_u_hat=True)
    else:
        u_hat, w_dot_u = u, (w * u).sum(-1)
    log_q = log_q0
    for k in range(w.shape[-2]):
        z, log_det = planar_transform(z, w[..., k, :], u_hat[..., k, :], b[..., k],
                                      w_dot_u=w_dot_u[..., k])
        log_q = log_q - log_det
    return z, log_q


def leaf(*shape, scale=1.0):
    return (scale * torch.randn(*shape, **F64)).requires_grad_()


def fast_and_reference(inputs, loss_of_outputs, constrain=True):
    """planar_flow(*inputs) on both paths: (outputs, gradients) of each, the gradients of
    loss_of_outputs(z_K, sum_log_det) with respect to every input."""
    results = []
    for enabled in (True, False):
        with fast_planar.use_fast_path(enabled):
            outputs = planar_flow(*inputs, constrain=constrain)
        grads = torch.autograd.grad(loss_of_outputs(*outputs), inputs)
        results.append((outputs, grads))
    return results


def test_fast_path_is_the_one_used_when_training():
    flow = PlanarFlow(2, 3).double()
    z_k, _ = flow(torch.randn(5, 2, **F64))
    assert "PlanarStackShared" in type(z_k.grad_fn).__name__
    w, u, b = leaf(4, 3, 2), leaf(4, 3, 2), leaf(4, 3)
    z_k, _ = planar_flow(torch.randn(4, 2, **F64), w, u, b)
    assert "PlanarStackPerExample" in type(z_k.grad_fn).__name__
    with torch.no_grad():  # sampling and evaluation take the reference loop
        assert flow(torch.randn(5, 2, **F64))[0].grad_fn is None
    with fast_planar.use_fast_path(False):  # the switch: plain autograd through the loop
        z_k, _ = flow(torch.randn(5, 2, **F64))
        assert "PlanarStack" not in type(z_k.grad_fn).__name__
    assert fast_planar.ENABLED  # restored after the block


def test_switch_is_restored_after_an_error():
    with pytest.raises(RuntimeError):
        with fast_planar.use_fast_path(False):
            assert not fast_planar.ENABLED
            raise RuntimeError("inside the block")
    assert fast_planar.ENABLED


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("constrain", [True, False])
def test_shared_log_q_and_gradients_equal_per_layer_computation(dim, constrain, loop_backend):
    torch.manual_seed(1)
    model = flows.make_flow("planar", dim, 12).double()
    model.flow.constrain = constrain
    with torch.no_grad():
        model.mu.normal_()
        model.log_sigma.normal_(0, 0.3)
        model.flow.u.normal_()  # far from the identity
        model.flow.b.normal_()
    if not constrain:  # keep 1 + u.psi away from 0 for an unconstrained stack
        with torch.no_grad():
            model.flow.u.copy_(constrain_u(model.flow.w, model.flow.u))
    gen = torch.Generator().manual_seed(3)
    z_k, log_q = model.rsample(64, generator=gen)
    assert loop_backend in type(z_k.grad_fn).__name__
    gen = torch.Generator().manual_seed(3)
    z_0, log_q0 = model._base_sample(64, gen)
    z_ref, log_q_ref = per_layer_log_q(log_q0, z_0, model.flow.w, model.flow.u, model.flow.b,
                                       constrain)
    assert (log_q - log_q_ref).abs().max() < 1e-6
    assert (z_k - z_ref).abs().max() < 1e-6
    # the same loss differentiated both ways
    loss_fast = (log_q + (z_k ** 2).sum(-1)).mean()
    loss_ref = (log_q_ref + (z_ref ** 2).sum(-1)).mean()
    params = list(model.parameters())
    grads_fast = torch.autograd.grad(loss_fast, params)
    grads_ref = torch.autograd.grad(loss_ref, params)
    for g_fast, g_ref in zip(grads_fast, grads_ref):
        assert torch.allclose(g_fast, g_ref, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("z_shape, param_lead", [((50, 3), ()), ((4, 50, 3), ()), ((6, 3), (6,)),
                                                  ((2, 6, 3), (6,)), ((6, 4, 3), (6, 1))])
@pytest.mark.parametrize("constrain", [True, False])
def test_fast_equals_reference_loop_values_and_gradients(z_shape, param_lead, constrain,
                                                         loop_backend):
    # shared (K, D) parameters with (N, D) and (S, N, D) points; per-example (B, K, D) with
    # (B, D), (S, B, D) and (B, n, D) points against (B, 1, K, D) (Part 2's amortizer)
    layers, dim = 7, z_shape[-1]
    w, b = leaf(*param_lead, layers, dim), leaf(*param_lead, layers)
    u = leaf(*param_lead, layers, dim)
    if not constrain:  # an invertible stack without App. A.1 inside
        u = constrain_u(w.detach(), u.detach()).requires_grad_()
    z = leaf(*z_shape)
    weights = torch.randn(torch.broadcast_shapes(z_shape, param_lead + (dim,)), **F64)

    def loss(z_k, sum_log_det):
        return (weights * z_k).sum() + (sum_log_det ** 2).sum()

    (fast_out, fast_grads), (ref_out, ref_grads) = fast_and_reference((z, w, u, b), loss,
                                                                      constrain)
    for fast, ref in zip(fast_out, ref_out):
        assert fast.shape == ref.shape
        assert (fast - ref).abs().max() < 1e-10
    for name, g_fast, g_ref in zip("zwub", fast_grads, ref_grads):
        assert g_fast.shape == g_ref.shape, name
        assert torch.allclose(g_fast, g_ref, atol=1e-10, rtol=1e-8), name


def rows_agree(fast, ref, rtol):
    """Per row (one (w, u) pair of the grid), max |fast - ref| <= rtol (1 + max |ref|): the
    gradient of w sums terms as large as |u| / |w| that cancel, so a component can only be
    compared against the size of the row."""
    fast, ref = fast.reshape(ref.shape[0], -1), ref.reshape(ref.shape[0], -1)
    scale = 1.0 + ref.abs().amax(-1)
    return (fast - ref).abs().amax(-1) <= rtol * scale


def test_fast_equals_reference_on_app_a1_extreme_grid(loop_backend):
    # every (w, u) of the grid as a one-layer flow: per-example parameters (B, 1, D), and the
    # shared stack one layer at a time (NumPy and torch); values and gradients of both paths
    # agree in float64
    w, u = extreme_grid(torch.float64)
    batch = w.shape[0]
    z = (0.5 * torch.randn(batch, 2, **F64)).requires_grad_()
    w_s, u_s = w.unsqueeze(1).requires_grad_(), u.unsqueeze(1).requires_grad_()
    b_s = torch.zeros(batch, 1, **F64).requires_grad_()
    weights = torch.randn(batch, 2, **F64)

    def loss(z_k, sum_log_det):
        return (weights * z_k).sum() + sum_log_det.sum()

    # where |w.z + b| is large, 1 - tanh^2 cancels and either path's log-det carries a relative
    # error of about 1e-16 / (1 - tanh^2); hence 1e-5 there, as in test_flows' grid test
    (fast_out, fast_grads), (ref_out, ref_grads) = fast_and_reference((z, w_s, u_s, b_s), loss)
    (z_fast, log_det_fast), (z_ref, log_det_ref) = fast_out, ref_out
    assert torch.isfinite(z_fast).all() and torch.isfinite(log_det_fast).all()
    assert torch.allclose(z_fast, z_ref, atol=1e-9, rtol=1e-9)
    assert torch.allclose(log_det_fast, log_det_ref, atol=1e-5, rtol=1e-5)
    # gradients: finite wherever autograd's are (which overflow for some |w| ~ 1e-30), and
    # equal up to rounding where |w.u| <= 1e8; beyond, the w-gradient's cancelling terms
    # reach |u| / |w| ~ 1e33 and neither path's rounding error is small against the result
    moderate = (w * u).sum(-1).abs() <= 1e8
    assert int(moderate.sum()) > 2000
    for name, g_fast, g_ref in zip("zwub", fast_grads, ref_grads):
        g_fast, g_ref = g_fast.reshape(batch, -1), g_ref.reshape(batch, -1)
        finite = torch.isfinite(g_ref).all(-1)
        assert finite.float().mean() > 0.9, name
        assert torch.isfinite(g_fast[finite]).all(), name
        rows = finite & moderate
        assert rows_agree(g_fast[rows], g_ref[rows], 1e-6).all(), name
    for row in moderate.nonzero().flatten()[::7].tolist():  # the shared stack, K = 1
        w_k, u_k = w[row:row + 1].clone().requires_grad_(), u[row:row + 1].clone().requires_grad_()
        inputs = (z[:3].detach().clone().requires_grad_(), w_k, u_k,
                  torch.zeros(1, **F64).requires_grad_())
        (fast_out, fast_grads), (ref_out, ref_grads) = fast_and_reference(
            inputs, lambda z_k, log_det: z_k.sum() + log_det.sum())
        assert torch.allclose(fast_out[0], ref_out[0], atol=1e-9, rtol=1e-9)
        assert torch.allclose(fast_out[1], ref_out[1], atol=1e-5, rtol=1e-5)
        for g_fast, g_ref in zip(fast_grads, ref_grads):
            assert bool(rows_agree(g_fast.reshape(1, -1), g_ref.reshape(1, -1), 1e-6)), row


@pytest.mark.parametrize("constrain", [True, False])
def test_gradcheck_shared(constrain, loop_backend):
    w, b = leaf(6, 3), leaf(6)
    u = constrain_u(w.detach(), torch.randn(6, 3, **F64)).requires_grad_()
    z = leaf(8, 3)
    assert torch.autograd.gradcheck(
        lambda z, w, u, b: planar_flow(z, w, u, b, constrain=constrain), (z, w, u, b)
    )


def test_gradcheck_per_example_broadcast():
    w, u, b = leaf(4, 5, 3), leaf(4, 5, 3), leaf(4, 5)
    z = leaf(2, 4, 3)
    assert torch.autograd.gradcheck(planar_flow, (z, w, u, b))


def test_no_grad_and_grad_paths_agree(loop_backend):
    flow = PlanarFlow(2, 20).double()
    with torch.no_grad():
        flow.u.normal_()
    z = torch.randn(50, 2, **F64)
    z_k, log_det = flow(z)
    with torch.no_grad():
        z_k_plain, log_det_plain = flow(z)
    assert torch.allclose(z_k, z_k_plain, atol=1e-12)
    assert torch.allclose(log_det, log_det_plain, atol=1e-12)


def test_rsample_draws_the_same_samples_on_both_paths():
    model = flows.make_flow("planar", 2, 6).double()
    with torch.no_grad():
        model.flow.u.normal_()
    z_k, log_q = model.rsample(40, generator=torch.Generator().manual_seed(5))
    assert "PlanarStackShared" in type(z_k.grad_fn).__name__
    with fast_planar.use_fast_path(False):
        z_ref, log_q_ref = model.rsample(40, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(z_k, z_ref, atol=1e-12) and torch.allclose(log_q, log_q_ref, atol=1e-12)
    params = list(model.parameters())
    for g_fast, g_ref in zip(torch.autograd.grad(log_q.sum() + z_k.sum(), params),
                             torch.autograd.grad(log_q_ref.sum() + z_ref.sum(), params)):
        assert torch.allclose(g_fast, g_ref, atol=1e-10, rtol=1e-8)


def test_numpy_and_torch_loops_agree_in_float32(monkeypatch):
    # the training dtype: both loop backends give the same samples, log q and gradients
    model = flows.make_flow("planar", 2, 32)
    with torch.no_grad():
        model.flow.u.normal_()
        model.flow.b.normal_()
    results = []
    for numpy_loops in (True, False):
        monkeypatch.setattr(fast_planar, "NUMPY_ON_CPU", numpy_loops)
        z_k, log_q = model.rsample(500, generator=torch.Generator().manual_seed(2))
        loss = (log_q + (z_k ** 2).sum(-1)).mean()
        results.append((z_k, log_q, *torch.autograd.grad(loss, list(model.parameters()))))
    for numpy_value, torch_value in zip(*results):
        assert torch.allclose(numpy_value, torch_value, rtol=1e-5, atol=1e-5)


def grid_with_uncorrected_rows(dtype):
    """The extreme grid and two w with no normal-range entry (0 and subnormal), which App. A.1
    leaves uncorrected (u_hat = u)."""
    w, u = extreme_grid(dtype)
    subnormal = torch.finfo(dtype).tiny / 4
    w_small = torch.tensor([[0.0, 0.0], [subnormal, -subnormal / 2]], dtype=dtype)
    return torch.cat([w, w_small]), torch.cat([u, torch.tensor([[3.0, -2.0]] * 2, dtype=dtype)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("xp", [np, torch], ids=["numpy", "torch"])
def test_app_a1_with_coefs_equals_constrain_u_on_extreme_grid(xp, dtype):
    # the NumPy and torch App. A.1 of the fast path against the reference constrain_u: u_hat
    # and w.u_hat = m(w.u), finite, and w with no normal-range entry left uncorrected
    w, u = grid_with_uncorrected_rows(dtype)
    u_hat_ref, w_dot_u_ref = constrain_u(w, u, return_w_dot_u_hat=True)
    args = (w.numpy(), u.numpy()) if xp is np else (w, u)
    with np.errstate(all="ignore"):
        u_hat, w_dot_u, _ = fast_planar._constrain_u_with_coefs(xp, *args)
    u_hat, w_dot_u = torch.as_tensor(u_hat), torch.as_tensor(w_dot_u)[:, 0]
    assert u_hat.dtype == dtype and torch.isfinite(u_hat).all() and torch.isfinite(w_dot_u).all()
    rtol = 1e-12 if dtype == torch.float64 else 1e-5
    assert rows_agree(u_hat, u_hat_ref, rtol).all()
    assert torch.allclose(w_dot_u, w_dot_u_ref, rtol=rtol, atol=rtol)
    assert torch.equal(u_hat[-2:], u[-2:]) and torch.equal(w_dot_u[-2:], (w * u).sum(-1)[-2:])
    assert float((1 + w_dot_u[:-2]).min()) >= 0.99 * flows.SOFTPLUS_FLOOR


@pytest.mark.parametrize("xp", [np, torch], ids=["numpy", "torch"])
def test_app_a1_backward_equals_autograd_on_extreme_grid(xp):
    # dL/dw and dL/du through u_hat by _constrain_u_backward against autograd through
    # constrain_u, float64, wherever autograd's are finite and |w.u| <= 1e8 (see the grid
    # test above), both sides of the floor of softplus; exactly (G, 0) where w is uncorrected
    w, u = grid_with_uncorrected_rows(torch.float64)
    w, u = w.clone().requires_grad_(), u.clone().requires_grad_()
    grad_u_hat = torch.randn(w.shape, **F64)
    grad_w_ref, grad_u_ref = torch.autograd.grad((grad_u_hat * constrain_u(w, u)).sum(), (w, u))
    w, u = w.detach(), u.detach()
    args = (w.numpy(), u.numpy(), grad_u_hat.numpy()) if xp is np else (w, u, grad_u_hat)
    with np.errstate(all="ignore"):
        coefs = fast_planar._constrain_u_with_coefs(xp, *args[:2])[2]
        grad_w, grad_u = fast_planar._constrain_u_backward(args[1], 0 * args[0], args[2], coefs)
    grad_w, grad_u = torch.as_tensor(grad_w), torch.as_tensor(grad_u)
    rows = ((w * u).sum(-1).abs() <= 1e8) & torch.isfinite(grad_w_ref).all(-1)
    rows[-2:] = False
    assert int(rows.sum()) > 2000
    assert int(((w * u).sum(-1)[rows] < -20).sum()) > 100  # where the floor is active
    assert rows_agree(grad_w[rows], grad_w_ref[rows], 1e-6).all()
    assert rows_agree(grad_u[rows], grad_u_ref[rows], 1e-6).all()
    assert torch.equal(grad_u[-2:], grad_u_hat[-2:]) and not grad_w[-2:].any()
