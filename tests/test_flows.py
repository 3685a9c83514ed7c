"""Flows: analytic log-dets against autograd Jacobians, constraints, inverses, stacks."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from nfutils import flows
from nfutils.flows import (
    NormalizingFlow,
    PlanarFlow,
    RadialFlow,
    annealed_beta,
    constrain_radial,
    constrain_u,
    free_energy,
    planar_flow,
    planar_inverse,
    planar_transform,
    radial_flow,
    radial_inverse,
    radial_transform,
    split_planar_params,
)

DIMS = [2, 5, 40]
torch_f64 = dict(dtype=torch.float64)


def autograd_log_det(f, z):
    """log|det J| of a map (D,) -> (D,) at a single point, by autograd + slogdet."""
    jac = jacobian(f, z)
    return torch.linalg.slogdet(jac).logabsdet


def random_planar(dim, lead=(), constrained=True):
    w = torch.randn(*lead, dim, **torch_f64)
    u = torch.randn(*lead, dim, **torch_f64)
    b = torch.randn(lead, **torch_f64)
    return w, (constrain_u(w, u) if constrained else u), b


# ---------------------------------------------------------------- single layers


@pytest.mark.parametrize("dim", DIMS)
def test_planar_log_det_matches_autograd_shared_params(dim):
    w, u_hat, b = random_planar(dim)
    z = torch.randn(6, dim, **torch_f64)
    _, log_det = planar_transform(z, w, u_hat, b)
    for i in range(z.shape[0]):
        expected = autograd_log_det(lambda x: planar_transform(x, w, u_hat, b)[0], z[i])
        assert abs(float(log_det[i] - expected)) < 1e-5


@pytest.mark.parametrize("dim", DIMS)
def test_planar_log_det_matches_autograd_per_example_params(dim):
    batch = 5
    w, u_hat, b = random_planar(dim, lead=(batch,))
    z = torch.randn(batch, dim, **torch_f64)
    z_new, log_det = planar_transform(z, w, u_hat, b)
    for i in range(batch):
        f = lambda x: planar_transform(x, w[i], u_hat[i], b[i])[0]  # noqa: E731
        assert abs(float(log_det[i] - autograd_log_det(f, z[i]))) < 1e-5
        assert torch.allclose(z_new[i], f(z[i]))


@pytest.mark.parametrize("dim", DIMS)
def test_planar_unconstrained_log_det_uses_absolute_value(dim):
    # u = -3 w/||w||^2 makes 1 + u.psi negative near the hyperplane: log|det| still correct
    w = torch.randn(dim, **torch_f64)
    u = -3.0 * w / (w @ w)
    b = torch.tensor(0.0, **torch_f64)
    z = 1e-3 * torch.randn(3, dim, **torch_f64)
    _, log_det = planar_transform(z, w, u, b)
    for i in range(3):
        expected = autograd_log_det(lambda x: planar_transform(x, w, u, b)[0], z[i])
        assert abs(float(log_det[i] - expected)) < 1e-5


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("per_example", [False, True])
def test_radial_log_det_matches_autograd(dim, per_example):
    lead = (4,) if per_example else ()
    z0 = torch.randn(*lead, dim, **torch_f64)
    alpha, beta = constrain_radial(torch.randn(lead, **torch_f64), torch.randn(lead, **torch_f64))
    z = torch.randn(4, dim, **torch_f64)
    z_new, log_det = radial_transform(z, z0, alpha, beta)
    for i in range(4):
        params = (z0[i], alpha[i], beta[i]) if per_example else (z0, alpha, beta)
        f = lambda x: radial_transform(x, *params)[0]  # noqa: E731
        assert abs(float(log_det[i] - autograd_log_det(f, z[i]))) < 1e-5
        assert torch.allclose(z_new[i], f(z[i]))


# ---------------------------------------------------------------- constraints


def test_w_dot_u_hat_above_minus_one_random_and_adversarial():
    dim = 5
    w = torch.randn(10_000, dim, **torch_f64)
    u = torch.randn(10_000, dim, **torch_f64)
    # adversarial: u = -c w with c up to 1e3, and tiny / huge w
    c = torch.logspace(-2, 3, 2_500, **torch_f64).unsqueeze(-1)
    u[:2_500] = -c * w[:2_500]
    w[2_500:3_000] *= 1e-6
    u[3_000:3_500] *= 1e4
    u_hat = constrain_u(w, u)
    w_dot_u_hat = (w * u_hat).sum(-1)
    assert torch.isfinite(u_hat).all()
    assert bool((w_dot_u_hat > -1).all()), float(w_dot_u_hat.min())


def extreme_grid(dtype):
    """Pairs (w, u) in 2-D over |w| from 1e-30 to 1e15 and w.u from -1e30 to 1e30, with a
    component of u orthogonal to w from 0 to 1e3 times the part along w (all finite)."""
    norms = [1e-30, 1e-20, 1e-19, 1e-10, 1e-3, 0.1, 1.0, 3.0, 10.0, 1e5, 1e15]
    dots = [-1e30, -1e20, -1e8, -1e6, -5e3, -1e3, -300.0, -273.0, -40.0, -17.0, -9.0, -1.0,
            0.0, 1.0, 30.0, 1e6, 1e20]
    angles = torch.linspace(0.0, 6.2, 7, dtype=torch.float64)
    ws, us = [], []
    for norm in norms:
        for dot in dots:
            for angle in angles:
                for perp in [0.0, 1e-3, 1.0, 1e3]:
                    w_dir = torch.stack([torch.cos(angle), torch.sin(angle)])
                    along = dot / norm  # u's length along w
                    if not abs(along) < 1e35 or not abs(along * perp) < 1e35:
                        continue
                    perp_dir = torch.stack([-w_dir[1], w_dir[0]])
                    ws.append(norm * w_dir)
                    us.append(along * w_dir + perp * abs(along) * perp_dir)
    w, u = torch.stack(ws).to(dtype), torch.stack(us).to(dtype)
    keep = torch.isfinite(w).all(-1) & torch.isfinite(u).all(-1) & (w.abs().amax(-1) > 0)
    return w[keep], u[keep]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_app_a1_guarantee_holds_on_extreme_grid(dtype):
    """1 + w.u_hat >= 1e-4 (up to rounding), finite u_hat and finite log-dets for every finite
    (w, u), on the reference (constrain_u + planar_transform) and on the stacks (reference
    loop and fast path); a naive float32 App. A.1 gives w.u_hat <= -1 from w.u ~ -300 on."""
    w, u = extreme_grid(dtype)
    assert w.shape[0] > 1000
    u_hat, w_dot_u_hat = constrain_u(w, u, return_w_dot_u_hat=True)
    assert torch.isfinite(u_hat).all()
    assert float((1 + w_dot_u_hat).min()) >= 0.99 * flows.SOFTPLUS_FLOOR
    # the example of the report: w = (1, 0), u = (-1e6, 0) gave w.u_hat = -1.0 in float32
    u_hat_1 = constrain_u(torch.tensor([1.0, 0.0], dtype=dtype),
                          torch.tensor([-1e6, 0.0], dtype=dtype))
    assert float(u_hat_1[0]) > -1 and float(u_hat_1[0]) == pytest.approx(-1 + 1e-4, abs=1e-6)
    # the log-det of one layer at the steepest point (w.z + b = 0), where 1 + u.psi is smallest
    z = torch.zeros_like(w)
    b = torch.zeros(w.shape[0], dtype=dtype)
    _, log_det_ref = planar_transform(z, w, u_hat, b, w_dot_u=w_dot_u_hat)
    assert torch.isfinite(log_det_ref).all()
    assert float(log_det_ref.min()) >= math.log(0.99 * flows.SOFTPLUS_FLOOR)
    # the stacks: one layer per (w, u), per-example parameters (B, 1, D)
    w_s, u_s, b_s = w.unsqueeze(1), u.unsqueeze(1), b.unsqueeze(1)
    with torch.no_grad():
        _, log_det_loop = planar_flow(z, w_s, u_s, b_s)
    w_g, u_g, b_g = (t.clone().requires_grad_() for t in (w_s, u_s, b_s))
    _, log_det_fast = planar_flow(z, w_g, u_g, b_g)
    for log_det in (log_det_loop, log_det_fast.detach()):
        assert torch.isfinite(log_det).all()
        assert torch.allclose(log_det, log_det_ref, atol=1e-5, rtol=1e-5)
    # the shared stack's fast path (NumPy loops on the CPU), one layer (K = 1) at a time
    for row in range(0, w.shape[0], 5):
        w_k, u_k = w[row : row + 1].clone().requires_grad_(), u[row : row + 1].clone().requires_grad_()
        _, log_det = planar_flow(z[:2], w_k, u_k, torch.zeros(1, dtype=dtype))
        assert torch.allclose(log_det.detach(), log_det_ref[row].expand(2), atol=1e-5, rtol=1e-5)


def test_constrain_u_matches_formula_and_keeps_valid_u():
    w = torch.randn(100, 3, **torch_f64)
    u = torch.randn(100, 3, **torch_f64)
    w_dot_u = (w * u).sum(-1, keepdim=True)
    m = -1 + torch.log1p(torch.exp(w_dot_u))
    expected = u + (m - w_dot_u) * w / (w * w).sum(-1, keepdim=True)
    assert torch.allclose(constrain_u(w, u), expected, atol=1e-12)
    # the component of u orthogonal to w is untouched
    residual = constrain_u(w, u) - u
    cross = residual - (residual * w).sum(-1, keepdim=True) * w / (w * w).sum(-1, keepdim=True)
    assert cross.abs().max() < 1e-12


def test_radial_beta_at_least_minus_alpha():
    alpha, beta = constrain_radial(10 * torch.randn(10_000, **torch_f64), 10 * torch.randn(10_000, **torch_f64))
    assert bool((alpha > 0).all()) and bool((beta >= -alpha).all())


# ---------------------------------------------------------------- inverses


@pytest.mark.parametrize("dim", DIMS)
def test_planar_inverse_round_trip(dim):
    w, u_hat, b = random_planar(dim, lead=(50,))
    w = 3 * w  # steep layers
    u_hat = constrain_u(w, 5 * torch.randn(50, dim, **torch_f64))
    z = torch.randn(50, dim, **torch_f64)
    y, _ = planar_transform(z, w, u_hat, b)
    assert torch.allclose(planar_inverse(y, w, u_hat, b), z, atol=1e-9)


def test_planar_inverse_solves_the_scalar_equation_along_w():
    w, u_hat, b = random_planar(2)
    y = torch.randn(100, 2, **torch_f64)
    z = planar_inverse(y, w, u_hat, b)
    # f(z) = y means w.z solves a + (w.u_hat) tanh(a + b) = w.y
    a = z @ w
    assert torch.allclose(a + (w @ u_hat) * torch.tanh(a + b), y @ w, atol=1e-10)


def test_planar_inverse_rejects_non_invertible_layer():
    w = torch.tensor([1.0, 0.0], **torch_f64)
    u = torch.tensor([-2.0, 0.0], **torch_f64)
    with pytest.raises(ValueError, match="w.u_hat > -1"):
        planar_inverse(torch.zeros(3, 2, **torch_f64), w, u, torch.tensor(0.0, **torch_f64))


@pytest.mark.parametrize("dim", DIMS)
def test_radial_inverse_round_trip(dim):
    z0 = torch.randn(dim, **torch_f64)
    alpha, beta = constrain_radial(torch.randn(20, **torch_f64), torch.randn(20, **torch_f64) - 2)
    z = torch.randn(20, dim, **torch_f64)
    y, _ = radial_transform(z, z0, alpha, beta)
    assert torch.allclose(radial_inverse(y, z0, alpha, beta), z, atol=1e-9)


# ---------------------------------------------------------------- stacks


def per_layer_reference(z, w, u, b):
    """Plain per-layer loop with planar_transform: the independent computation."""
    total = torch.zeros(z.shape[:-1], **torch_f64)
    u_hat, w_dot_u = constrain_u(w, u, return_w_dot_u_hat=True)
    for k in range(w.shape[-2]):
        z, log_det = planar_transform(z, w[..., k, :], u_hat[..., k, :], b[..., k],
                                      w_dot_u=w_dot_u[..., k])
        total = total + log_det
    return z, total


@pytest.mark.parametrize("dim", DIMS)
def test_planar_stack_shared_equals_sum_over_layers(dim):
    flow = PlanarFlow(dim, 7).double()
    with torch.no_grad():
        flow.u.normal_()
        flow.b.normal_()
    z = torch.randn(30, dim, **torch_f64)
    z_k, sum_log_det = flow(z)
    z_ref, ref = per_layer_reference(z, flow.w, flow.u, flow.b)
    assert torch.allclose(z_k, z_ref, atol=1e-10)
    assert torch.allclose(sum_log_det, ref, atol=1e-10)


@pytest.mark.parametrize("dim", DIMS)
def test_planar_stack_per_example_parameters(dim):
    batch, layers = 6, 4
    flat = torch.randn(batch, layers * (2 * dim + 1), **torch_f64)
    w, u, b = split_planar_params(flat, dim, layers)
    assert w.shape == (batch, layers, dim) and b.shape == (batch, layers)
    z = torch.randn(batch, dim, **torch_f64)
    z_k, sum_log_det = planar_flow(z, w, u, b)
    z_ref, ref = per_layer_reference(z, w, u, b)
    assert torch.allclose(z_k, z_ref, atol=1e-10) and torch.allclose(sum_log_det, ref, atol=1e-10)
    ref_single = ref
    # several samples per example: z (S, B, D) against parameters (B, K, D)
    z_many = torch.randn(3, batch, dim, **torch_f64)
    z_k_many, log_det_many = planar_flow(z_many, w, u, b)
    for s in range(3):
        z_ref, ref = per_layer_reference(z_many[s], w, u, b)
        assert torch.allclose(z_k_many[s], z_ref, atol=1e-10)
        assert torch.allclose(log_det_many[s], ref, atol=1e-10)
    # the module accepts the same per-example parameters
    module = PlanarFlow(dim, layers).double()
    z_module, log_det_module = module(z, w, u, b)
    z_ref, _ = per_layer_reference(z, w, u, b)
    assert torch.allclose(z_module, z_ref, atol=1e-10)
    assert torch.allclose(log_det_module, ref_single, atol=1e-10)


def random_stack(flow, parameter: str):
    """``flow`` in float64 with ``parameter`` drawn from N(0, 1), away from its start."""
    flow = flow.double()
    with torch.no_grad():
        getattr(flow, parameter).normal_()
    return flow


@pytest.mark.parametrize("dim", [2, 5])
def test_whole_stack_log_det_matches_autograd(dim):
    flow = random_stack(PlanarFlow(dim, 5), "u")
    z = torch.randn(3, dim, **torch_f64)
    _, sum_log_det = flow(z)
    for i in range(3):
        expected = autograd_log_det(lambda x: flow(x.unsqueeze(0))[0][0], z[i])
        assert abs(float(sum_log_det[i].detach() - expected)) < 1e-5


@pytest.mark.parametrize("dim", DIMS)
def test_radial_stack_equals_sum_over_layers(dim):
    flow = random_stack(RadialFlow(dim, 5), "beta_raw")
    z = torch.randn(10, dim, **torch_f64)
    z_k, sum_log_det = flow(z)
    alpha, beta = constrain_radial(flow.alpha_raw, flow.beta_raw)
    total = torch.zeros(10, **torch_f64)
    x = z
    for k in range(5):
        x, log_det = radial_transform(x, flow.z0[k], alpha[k], beta[k])
        total += log_det
    assert torch.allclose(z_k, x) and torch.allclose(sum_log_det, total)


@pytest.mark.parametrize("kind", ["planar", "radial"])
def test_normalizing_flow_log_q_and_exact_log_prob(kind):
    dim = 2
    model = flows.make_flow(kind, dim, 6).double()
    with torch.no_grad():
        model.mu.normal_()
        model.log_sigma.normal_(0, 0.3)
        for p in model.flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    z_k, log_q = model.rsample(200)
    assert z_k.shape == (200, 2) and log_q.shape == (200,)
    # Eq. 13 by hand: recover z_0 through the inverse, log q_0 - sum log det
    assert torch.allclose(model.log_prob(z_k), log_q, atol=1e-8)
    layers = model.sample_layers(50)
    assert len(layers) == 7 and all(layer.shape == (50, 2) for layer in layers)


def test_normalizing_flow_density_integrates_to_one():
    from nfutils.potentials import density_grid

    model = flows.make_flow("planar", 2, 4).double()
    with torch.no_grad():
        model.flow.u.normal_()
    points, area = density_grid(8.0, 400)
    with torch.no_grad():
        total = torch.exp(model.log_prob(points.reshape(-1, 2))).sum() * area
    assert abs(float(total) - 1.0) < 1e-3


def test_rsample_is_differentiable():
    model = flows.make_flow("planar", 2, 3)
    z_k, log_q = model.rsample(64)
    (z_k.sum() + log_q.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------- objective


def test_free_energy_and_annealing():
    log_q = torch.tensor([1.0, 2.0])
    energy_values = torch.tensor([3.0, 5.0])
    assert float(free_energy(log_q, energy_values)) == pytest.approx(5.5)
    assert float(free_energy(log_q, energy_values, beta=0.5)) == pytest.approx(1.5 + 2.0)
    energy_values.requires_grad_()
    (grad,) = torch.autograd.grad(free_energy(log_q, energy_values, beta=0.3), energy_values)
    assert torch.allclose(grad, torch.full((2,), 0.3 / 2))  # d/dU mean(log_q + beta U)
    assert annealed_beta(0) == pytest.approx(0.01)
    assert annealed_beta(5_000) == pytest.approx(0.51)
    assert annealed_beta(9_900) == 1.0 and annealed_beta(50_000) == 1.0


# ---------------------------------------------------------------- bad input


def test_bad_input_names_expected_shape():
    z = torch.randn(10, 3)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        planar_transform(z, torch.randn(2), torch.randn(3), torch.tensor(0.0))
    with pytest.raises(ValueError, match="u must have shape"):
        planar_transform(z, torch.randn(3), torch.randn(4), torch.tensor(0.0))
    with pytest.raises(ValueError, match="does not broadcast"):
        planar_transform(z, torch.randn(7, 3), torch.randn(7, 3), torch.zeros(7))
    with pytest.raises(ValueError, match="NaN"):
        planar_transform(torch.full((4, 3), float("nan")), torch.randn(3), torch.randn(3), 0.0)
    with pytest.raises(ValueError, match="infinite"):
        radial_transform(z, torch.full((3,), float("inf")), 1.0, 0.0)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        PlanarFlow(2, 3)(torch.randn(5, 3))
    with pytest.raises(ValueError, match="K\\(2D\\+1\\)"):
        split_planar_params(torch.randn(4, 10), 2, 3)
    with pytest.raises(ValueError, match="same shape"):
        free_energy(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="kind"):
        flows.make_flow("affine", 2, 3)


# ---------------------------------------------------------------- argument checks


def test_flow_of_another_dimension_is_refused():
    with pytest.raises(ValueError, match="D = 3 dimensions but the base density has dim = 2"):
        NormalizingFlow(2, PlanarFlow(3, 2))
    with pytest.raises(ValueError, match="dim = 2"):
        NormalizingFlow(2, RadialFlow(5, 2))


def test_make_flow_refuses_negative_length():
    with pytest.raises(ValueError, match=r"flow_length \(the flow length K.*>= 0; got -1"):
        flows.make_flow("planar", 2, -1)
    assert flows.make_flow("radial", 2, 0).flow_length == 0
    assert flows.make_flow("planar", 2, 3).flow_length == 3


# ---------------------------------------------------------------- every flow, one generic check


def _scrambled(module, scale=0.5, seed=0):
    """The module in float64 with every parameter moved away from its (near identity) init."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


FLOW_FACTORIES = {
    "planar": lambda dim, length: flows.PlanarFlow(dim, length),
    "planar-unconstrained": lambda dim, length: flows.PlanarFlow(dim, length, constrain=False),
    "radial": lambda dim, length: flows.RadialFlow(dim, length),
    "nice": lambda dim, length: flows.NICEFlow(dim, length, hidden=8),
}


@pytest.mark.parametrize("kind", sorted(FLOW_FACTORIES))
@pytest.mark.parametrize("dim, flow_length", [(2, 1), (2, 6), (5, 3)])
def test_every_flow_shapes_log_det_inverse_and_density(kind, dim, flow_length):
    """One check over every flow (normflows' flow_test.py style): shapes and dtype, the
    log-det against autograd's Jacobian, the inverse round trip where one exists, and
    NormalizingFlow's log q of its own samples equal to log_prob at them (Eq. 13)."""
    flow = _scrambled(FLOW_FACTORIES[kind](dim, flow_length))
    assert flow.flow_length == flow_length and flow.dim == dim
    for lead in [(7,), (3, 4)]:
        z = torch.randn(*lead, dim, **torch_f64)
        z_k, log_det = flow(z)
        assert z_k.shape == z.shape and log_det.shape == lead
        assert z_k.dtype == log_det.dtype == torch.float64
        layers = flow.layers(z)
        assert layers[0] is z or torch.equal(layers[0], z)
        assert torch.allclose(layers[-1], z_k, atol=1e-12)
    z = torch.randn(4, dim, **torch_f64)
    _, log_det = flow(z)
    for i in range(4):
        expected = autograd_log_det(lambda x: flow(x.unsqueeze(0))[0][0], z[i])
        assert abs(float(log_det[i].detach() - expected)) < 1e-8
    if kind == "planar-unconstrained":  # no guarantee of invertibility: no inverse
        with pytest.raises(ValueError, match="constrain=True"):
            flow.inverse(z)
        return
    with torch.no_grad():
        z_k, log_det = flow(z)
        z_back, log_det_back = flow.inverse(z_k)
    assert torch.allclose(z_back, z, atol=1e-8)
    assert torch.allclose(log_det_back, log_det, atol=1e-8)
    model = flows.NormalizingFlow(dim, flow).double()
    with torch.no_grad():
        model.mu.normal_()
        model.log_sigma.normal_(0, 0.3)
    z_k, log_q = model.rsample(50, generator=torch.Generator().manual_seed(1))
    assert z_k.shape == (50, dim) and log_q.shape == (50,)
    assert torch.allclose(model.log_prob(z_k.detach()), log_q.detach(), atol=1e-8)
    assert model.flow_length == flow_length


def test_gaussian_log_prob_matches_torch_distributions():
    mu, log_sigma = torch.randn(3, **torch_f64), 0.5 * torch.randn(3, **torch_f64)
    z = torch.randn(10, 3, **torch_f64)
    eps = (z - mu) / torch.exp(log_sigma)
    expected = torch.distributions.Normal(mu, torch.exp(log_sigma)).log_prob(z).sum(-1)
    assert torch.allclose(flows.gaussian_log_prob(eps, log_sigma), expected, atol=1e-12)
    standard = torch.distributions.Normal(0.0, 1.0).log_prob(z.double()).sum(-1)
    assert torch.allclose(flows.gaussian_log_prob(z), standard, atol=1e-12)
    # per-condition standard deviations (B, 1, D) against n points per condition (B, n, D)
    log_sigma_b = 0.3 * torch.randn(4, 1, 3, **torch_f64)
    eps_b = torch.randn(4, 6, 3, **torch_f64)
    expected_b = torch.distributions.Normal(0.0, torch.exp(log_sigma_b)).log_prob(
        eps_b * torch.exp(log_sigma_b)).sum(-1)
    assert torch.allclose(flows.gaussian_log_prob(eps_b, log_sigma_b), expected_b, atol=1e-12)


@pytest.mark.parametrize("w_lead, z_shape", [((), (20, 3)), ((6,), (6, 3)), ((6,), (4, 6, 3)),
                                             ((6, 1), (6, 5, 3))])
def test_planar_flow_inverse_undoes_the_forward_pass(w_lead, z_shape):
    # shared (K, D) and per-example (B, K, D), (B, 1, K, D) parameters, as in Parts 1-4
    flow_length, dim = 8, z_shape[-1]
    w = torch.randn(*w_lead, flow_length, dim, **torch_f64)
    u = 2.0 * torch.randn(*w_lead, flow_length, dim, **torch_f64)  # far from invertible raw
    b = torch.randn(*w_lead, flow_length, **torch_f64)
    z_0 = torch.randn(*z_shape, **torch_f64)
    with torch.no_grad():
        z_k, sum_log_det = planar_flow(z_0, w, u, b)
    z_back, sum_log_det_back = flows.planar_flow_inverse(z_k, w, u, b)
    assert z_back.shape == z_0.shape and sum_log_det_back.shape == sum_log_det.shape
    assert torch.allclose(z_back, z_0, atol=1e-8)
    assert torch.allclose(sum_log_det_back, sum_log_det, atol=1e-8)


def test_planar_layer_equals_the_stack_and_the_formula():
    torch.manual_seed(2)
    dim, flow_length = 3, 5
    layers = [_scrambled(flows.PlanarLayer(dim), scale=1.0, seed=k) for k in range(flow_length)]
    z = torch.randn(40, dim, **torch_f64, requires_grad=True)
    x, total = z, 0.0
    for layer in layers:
        x, log_det = layer(x)
        total = total + log_det
    w = torch.stack([layer.w for layer in layers])
    u = torch.stack([layer.u for layer in layers])
    b = torch.stack([layer.b for layer in layers])
    z_stack, total_stack = planar_flow(z, w, u, b)  # the fast path (gradients on)
    assert torch.allclose(x, z_stack, atol=1e-12) and torch.allclose(total, total_stack, atol=1e-12)
    # Eq. 10-12 written out for the first layer, u_hat by App. A.1 as printed
    w0, u0, b0 = layers[0].w, layers[0].u, layers[0].b
    u_hat = u0 + (-1 + torch.nn.functional.softplus(w0 @ u0) - w0 @ u0) * w0 / (w0 @ w0)
    h = torch.tanh(z @ w0 + b0)
    z_1, log_det_1 = layers[0](z)
    assert torch.allclose(z_1, z + h.unsqueeze(-1) * u_hat, atol=1e-12)
    assert torch.allclose(log_det_1, torch.log(torch.abs(1 + (1 - h * h) * (u_hat @ w0))),
                          atol=1e-12)
    grads = torch.autograd.grad(total.sum() + x.sum(), [z, w0, u0, b0])
    grads_stack = torch.autograd.grad(total_stack.sum() + z_stack.sum(), [z, w0, u0, b0])
    for g, g_stack in zip(grads, grads_stack):
        assert torch.allclose(g, g_stack, atol=1e-10)
