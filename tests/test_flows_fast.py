"""The fast planar stack (custom autograd Functions in flows.py) against the plain computation.

The reference here is the textbook one: one ``planar_transform`` per layer on
``constrain_u``'s u_hat, log-dets summed, gradients by ordinary autograd through it. The fast
path must give the same log q (Eq. 13) to 1e-6 in float64 and the same gradients, and its
analytic backward must pass ``torch.autograd.gradcheck``.
"""

import pytest
import torch

from nfutils import flows
from nfutils.flows import PlanarFlow, constrain_u, planar_flow, planar_transform

F64 = dict(dtype=torch.float64)


@pytest.fixture(params=[True, False], ids=["numpy-loops", "torch-loops"])
def loop_backend(request, monkeypatch):
    """Run a test with the shared stack's per-layer loops in NumPy (the CPU default) and in
    torch (what CUDA runs), so that both are checked against the reference."""
    monkeypatch.setattr(flows, "NUMPY_LOOPS_ON_CPU", request.param)
    return request.param


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


def test_fast_path_is_the_one_used_when_training():
    flow = PlanarFlow(2, 3).double()
    z_k, sum_log_det = flow(torch.randn(5, 2, **F64))
    assert "PlanarStackShared" in type(z_k.grad_fn).__name__
    w, u, b = leaf(4, 3, 2), leaf(4, 3, 2), leaf(4, 3)
    z_k, _ = planar_flow(torch.randn(4, 2, **F64), w, u, b)
    assert "PlanarStackPerExample" in type(z_k.grad_fn).__name__
    with torch.no_grad():  # sampling and evaluation take the plain loop
        assert flow(torch.randn(5, 2, **F64))[0].grad_fn is None


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


@pytest.mark.parametrize("z_shape, param_lead", [((6, 3), (6,)), ((2, 6, 3), (6,)),
                                                  ((6, 4, 3), (6, 1))])
def test_per_example_log_q_and_gradients_equal_per_layer_computation(z_shape, param_lead):
    # (B, D) points with (B, K, D) parameters (Parts 3-4, S = 1), (S, B, D) with (B, K, D)
    # (several samples per example) and (B, n, D) with (B, 1, K, D) (Part 2's amortizer)
    layers, dim = 5, z_shape[-1]
    w, u, b = leaf(*param_lead, layers, dim), leaf(*param_lead, layers, dim), leaf(*param_lead, layers)
    z = leaf(*z_shape)
    z_k, sum_log_det = planar_flow(z, w, u, b)
    z_ref, neg_log_det = per_layer_log_q(torch.zeros(()), z, w, u, b)
    assert z_k.shape == z_ref.shape and sum_log_det.shape == neg_log_det.shape
    assert (sum_log_det + neg_log_det).abs().max() < 1e-6
    assert (z_k - z_ref).abs().max() < 1e-6
    weights = torch.randn(z_k.shape, **F64)
    loss_fast = (weights * z_k).sum() + (sum_log_det ** 2).sum()
    loss_ref = (weights * z_ref).sum() + (neg_log_det ** 2).sum()
    for g_fast, g_ref in zip(torch.autograd.grad(loss_fast, (z, w, u, b)),
                             torch.autograd.grad(loss_ref, (z, w, u, b))):
        assert g_fast.shape == g_ref.shape
        assert torch.allclose(g_fast, g_ref, atol=1e-10, rtol=1e-8)


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


def test_gradcheck_shared_with_base(loop_backend):
    # NormalizingFlow.rsample's training path: base N(mu, sigma^2) and stack in one node
    eps = torch.randn(8, 3, **F64)
    w, b, mu, log_sigma = leaf(5, 3), leaf(5), leaf(3), leaf(3, scale=0.3)
    u = constrain_u(w.detach(), torch.randn(5, 3, **F64)).requires_grad_()

    def fused(w, u, b, mu, log_sigma):
        return flows._PlanarStackShared.apply(eps, w, u, b, True, mu, log_sigma)

    assert torch.autograd.gradcheck(fused, (w, u, b, mu, log_sigma))


def test_rsample_training_path_draws_the_same_samples_as_sampling():
    model = flows.make_flow("planar", 2, 6).double()
    with torch.no_grad():
        model.flow.u.normal_()
    z_k, log_q = model.rsample(40, generator=torch.Generator().manual_seed(5))
    assert "PlanarStackShared" in type(log_q.grad_fn).__name__
    with torch.no_grad():
        z_plain, log_q_plain = model.rsample(40, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(z_k, z_plain, atol=1e-12) and torch.allclose(log_q, log_q_plain, atol=1e-12)


def test_numpy_and_torch_loops_agree_in_float32(monkeypatch):
    # the training dtype: both loop backends give the same samples, log q and gradients
    model = flows.make_flow("planar", 2, 32)
    with torch.no_grad():
        model.flow.u.normal_()
        model.flow.b.normal_()
    results = []
    for numpy_loops in (True, False):
        monkeypatch.setattr(flows, "NUMPY_LOOPS_ON_CPU", numpy_loops)
        z_k, log_q = model.rsample(500, generator=torch.Generator().manual_seed(2))
        loss = (log_q + (z_k ** 2).sum(-1)).mean()
        results.append((z_k, log_q, *torch.autograd.grad(loss, list(model.parameters()))))
    for numpy_value, torch_value in zip(*results):
        assert torch.allclose(numpy_value, torch_value, rtol=1e-5, atol=1e-5)
