"""Amortized planar flows: shapes, agreement with per-target flows, exact densities,
training, schedules and checkpoints (nfutils/amortized.py)."""

import math
import os

import pytest
import torch

from nfutils import amortized
from nfutils import conditions
from nfutils.amortized import (AmortizedPlanarFlow, fit_amortized, load_amortized, ring_energy,
                               schedule_factor)
from nfutils.conditions import angle_features, angle_radius_features, raw_angle_features
from nfutils.checkpoints import CheckpointError
from nfutils.kl import conditional_kl, monte_carlo_kl
from nfutils.flows import constrain_u, planar_transform
from nfutils.potentials import U1, density_grid, rotated_U1
from nfutils.training import NonFiniteLossError


def scrambled(model: AmortizedPlanarFlow, scale: float = 0.5) -> AmortizedPlanarFlow:
    """Give the output layer random weights and bias, so every condition gets a different,
    far-from-identity flow (the initial amortizer is a near-identity flow for all c)."""
    with torch.no_grad():
        model.head.weight.normal_(0.0, scale)
        model.head.bias.normal_(0.0, scale)
        model.head.weight[: 2 * model.dim] = 0.0  # base N(mu, sigma^2) from the bias alone:
        model.head.bias[model.dim:2 * model.dim] = -0.3  # a compact base (log sigma = -0.3)
    return model


def test_shapes():
    model = AmortizedPlanarFlow(dim=2, flow_length=5)
    theta = torch.linspace(-3, 3, 7)
    params = model.flow_params(theta)
    assert params.mu.shape == (7, 2) and params.log_sigma.shape == (7, 2)
    assert params.w.shape == (7, 5, 2) and params.u.shape == (7, 5, 2) and params.b.shape == (7, 5)
    z_k, log_q = model.rsample(theta.unsqueeze(-1), 11)
    assert z_k.shape == (7, 11, 2) and log_q.shape == (7, 11)
    assert model.log_prob(z_k.detach(), theta).shape == (7, 11)
    assert angle_features(theta).shape == (7, 2)
    assert raw_angle_features(theta).shape == (7, 1)
    two = torch.stack([theta, torch.full_like(theta, 2.5)], -1)
    assert angle_radius_features(two).shape == (7, 3)
    model_r = AmortizedPlanarFlow(dim=2, flow_length=3, features="angle_radius")
    assert model_r.rsample(two, 4)[0].shape == (7, 4, 2)
    assert ring_energy(z_k, theta.unsqueeze(-1)).shape == (7, 11)


def test_log_q_equals_per_target_flow_with_the_same_parameters():
    torch.manual_seed(1)
    model = scrambled(AmortizedPlanarFlow(dim=2, flow_length=6).double())
    theta = torch.tensor([0.7], dtype=torch.float64)
    z_k, log_q = model.rsample(theta, 50, generator=torch.Generator().manual_seed(3))

    # 1) the same parameters in a flows.NormalizingFlow, same base noise
    flow = model.to_flow(theta)
    z_ref, log_q_ref = flow.rsample(50, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(z_k[0], z_ref, atol=1e-12)
    assert torch.allclose(log_q[0], log_q_ref, atol=1e-12)

    # 2) independently, layer by layer with planar_transform (Eq. 10-13)
    params = model.flow_params(theta)
    eps = torch.randn(1, 50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)[0]
    sigma = params.log_sigma[0].exp()
    z = params.mu[0] + sigma * eps
    log_q_manual = (torch.distributions.Normal(params.mu[0], sigma).log_prob(z)).sum(-1)
    for k in range(6):
        w, u, b = params.w[0, k], params.u[0, k], params.b[0, k]
        z, log_det = planar_transform(z, w, constrain_u(w, u), b)
        log_q_manual = log_q_manual - log_det
    assert torch.allclose(z_k[0], z, atol=1e-10)
    assert torch.allclose(log_q[0], log_q_manual, atol=1e-10)


def test_exact_log_prob_inverts_the_samples():
    torch.manual_seed(2)
    model = scrambled(AmortizedPlanarFlow(dim=2, flow_length=8).double())
    theta = torch.tensor([-2.0, 0.1, 3.0], dtype=torch.float64)
    with torch.no_grad():
        z_k, log_q = model.rsample(theta, 40)
        exact = model.log_prob(z_k, theta)
        per_target = model.to_flow(theta[1]).log_prob(z_k[1])
    assert torch.allclose(exact, log_q, atol=1e-8)
    assert torch.allclose(exact[1], per_target, atol=1e-8)


def test_exact_density_integrates_to_one():
    torch.manual_seed(3)
    model = scrambled(AmortizedPlanarFlow(dim=2, flow_length=4).double(), scale=0.4)
    theta = torch.tensor([-1.0, 2.5], dtype=torch.float64)
    points, cell_area = density_grid(extent=9.0, resolution=300)
    with torch.no_grad():
        grid = points.reshape(1, -1, 2).expand(2, -1, -1)
        log_q = model.log_prob(grid, theta)
    mass = log_q.exp().sum(-1) * cell_area
    assert torch.allclose(mass, torch.ones(2, dtype=torch.float64), atol=2e-3), mass


def test_angle_features_are_periodic_raw_angle_is_not():
    model = AmortizedPlanarFlow(dim=2, flow_length=3)
    ends = torch.tensor([-math.pi, math.pi])
    params = model.flow_params(ends)
    for tensor in params:
        assert torch.allclose(tensor[0], tensor[1], atol=1e-6)
    assert torch.allclose(angle_features(ends + 2 * math.pi), angle_features(ends), atol=1e-6)
    raw = raw_angle_features(ends)
    assert float(raw[1] - raw[0]) == pytest.approx(2.0)


def test_ring_energy_matches_rotated_U1_and_hand_values():
    z = torch.randn(3, 10, 2, dtype=torch.float64)
    theta = torch.tensor([[0.0], [1.0], [-2.0]], dtype=torch.float64)
    assert torch.allclose(ring_energy(z[:1], theta[:1]), U1(z[:1]))
    for i in range(3):
        assert torch.allclose(ring_energy(z, theta)[i], rotated_U1(z[i], float(theta[i])))
    # on a lobe of a ring of radius r at angle theta: ring term 0, lobes -log(1 + exp(-0.5 (2r/0.6)^2))
    cond = torch.tensor([[0.4, 3.0], [-2.2, 1.5]], dtype=torch.float64)
    lobe = (cond[:, 1:] * torch.stack([cond[:, 0].cos(), cond[:, 0].sin()], -1)).unsqueeze(1)
    expected = -torch.log1p(torch.exp(-0.5 * (2 * cond[:, 1] / 0.6) ** 2))
    assert torch.allclose(ring_energy(lobe, cond)[:, 0], expected, atol=1e-12)


def gaussian_family(z, condition):
    """p(z | theta) = N(2 (cos theta, sin theta), I): U = 0.5 ||z - m||^2, log Z = log 2 pi."""
    mean = 2.0 * angle_features(condition).unsqueeze(1)
    return 0.5 * ((z - mean) ** 2).sum(-1)


def uniform_angles(num, generator):
    return (torch.rand(num, 1, generator=generator) * 2 - 1) * math.pi


def test_monte_carlo_kl_is_zero_when_q_is_the_target():
    model = AmortizedPlanarFlow(dim=2, flow_length=0)
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()  # q = N(0, I) for every condition
    theta = torch.zeros(4, 1)
    energy = lambda z, c: 0.5 * (z ** 2).sum(-1)  # noqa: E731
    kl, stderr = conditional_kl(model, energy, theta, math.log(2 * math.pi), num_samples=500)
    assert torch.allclose(kl, torch.zeros(4), atol=1e-5) and float(stderr.max()) < 1e-5
    # and a hand-made case: log q + U = [1, 3] -> mean 2, std sqrt(2), stderr 1
    kl, stderr = monte_carlo_kl(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 2.0]]), 0.5)
    assert float(kl) == pytest.approx(2.5) and float(stderr) == pytest.approx(1.0)


def test_fit_amortized_learns_a_conditional_gaussian():
    torch.manual_seed(0)
    model = AmortizedPlanarFlow(dim=2, flow_length=0, hidden=32)
    history = fit_amortized(model, gaussian_family, uniform_angles, num_steps=400,
                            conditions_per_step=16, samples_per_condition=32, lr=1e-2,
                            log_Z=math.log(2 * math.pi), log_every=50,
                            generator=torch.Generator().manual_seed(0))
    theta = torch.linspace(-math.pi, math.pi, 9)[:-1]
    kl, _ = conditional_kl(model, gaussian_family, theta, math.log(2 * math.pi), 4000)
    # KL of N(m', diag s^2) to N(m, I) in closed form, independent of the Monte-Carlo estimate
    params = model.flow_params(theta)
    sigma_sq = (2 * params.log_sigma).exp()
    mean = 2.0 * angle_features(theta)
    closed = 0.5 * (sigma_sq - 1 - 2 * params.log_sigma + (params.mu - mean) ** 2).sum(-1)
    closed = closed.detach()
    assert float(closed.max()) < 0.05, closed
    assert torch.allclose(kl, closed, atol=0.02)
    assert history.kl[0] > 1.0 and history.kl[-1] < 0.1
    assert len(history.lr) == len(history.steps) and history.lr[-1] < history.lr[len(history.lr) // 2]


def test_fit_amortized_stops_on_nan():
    model = AmortizedPlanarFlow(dim=2, flow_length=2)
    nan_energy = lambda z, c: z.sum(-1) * float("nan")  # noqa: E731
    with pytest.raises(NonFiniteLossError, match="step 0"):
        fit_amortized(model, nan_energy, uniform_angles, num_steps=5)


def test_interrupted_training_resumes_from_the_checkpoint(tmp_path):
    kwargs = dict(num_steps=20, conditions_per_step=4, samples_per_condition=8, lr=1e-2,
                  log_every=1, checkpoint_every=10)

    torch.manual_seed(0)
    reference = AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8)
    fit_amortized(reference, gaussian_family, uniform_angles,
                  generator=torch.Generator().manual_seed(5), **kwargs)

    calls = {"n": 0}

    def failing_energy(z, c):
        calls["n"] += 1
        if calls["n"] == 16:
            raise KeyboardInterrupt  # the run dies at step 15
        return gaussian_family(z, c)

    path = str(tmp_path / "amortizer.pt")
    torch.manual_seed(0)
    interrupted = AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8)
    with pytest.raises(KeyboardInterrupt):
        fit_amortized(interrupted, failing_energy, uniform_angles, checkpoint_path=path,
                      generator=torch.Generator().manual_seed(5), **kwargs)

    torch.manual_seed(123)  # a different initialization: the checkpoint must overwrite it
    resumed = AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8)
    history = fit_amortized(resumed, gaussian_family, uniform_angles, checkpoint_path=path,
                            generator=torch.Generator().manual_seed(999), **kwargs)
    assert history.resumed_from == [10] and history.steps == list(range(20))
    for name, value in reference.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[name], atol=1e-6), name

    # a finished checkpoint is loaded without training (load-or-train)
    again = AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8)
    history = fit_amortized(again, gaussian_family, uniform_angles, checkpoint_path=path, **kwargs)
    assert history.resumed_from == [10, 20] and history.finished  # every resume, in order
    assert torch.allclose(again.head.bias, reference.head.bias, atol=1e-6)
    loaded, state = load_amortized(path)
    assert loaded.config == reference.config and state["step"] == 20
    assert torch.equal(loaded.head.bias, again.head.bias)
    # a checkpoint of a different configuration is refused, not silently trained over
    before = open(path, "rb").read()
    with pytest.raises(ValueError, match=r"another configuration \(differs in \['num_steps'\]"):
        fit_amortized(AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8), gaussian_family,
                      uniform_angles, checkpoint_path=path, **{**kwargs, "num_steps": 3})
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["amortizer.pt"]  # no temp files left behind


def test_cosine_schedule_matches_its_formula():
    factor = schedule_factor("cosine", 100, warmup_fraction=0.1, final_fraction=0.01)
    values = [factor(t) for t in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    # half-way through the decay (step 10 + 45): f + (1 - f)/2
    assert values[55] == pytest.approx(0.01 + 0.99 * 0.5)
    assert values[99] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert all(a >= b for a, b in zip(values[9:], values[10:]))
    assert schedule_factor("constant", 10)(7) == 1.0
    assert schedule_factor("cosine", 1)(0) == 1.0  # one step: no room for a warm-up
    with pytest.raises(ValueError, match="cosine"):
        schedule_factor("linear", 10)


def test_the_learning_rate_of_each_step_is_recorded():
    torch.manual_seed(0)
    history = fit_amortized(AmortizedPlanarFlow(dim=2, flow_length=1, hidden=8), gaussian_family,
                            uniform_angles, num_steps=20, conditions_per_step=2,
                            samples_per_condition=4, lr=0.5, log_every=1)
    factor = schedule_factor("cosine", 20)
    assert history.lr == pytest.approx([0.5 * factor(t) for t in range(20)])


def test_bad_input_names_expected_shape():
    model = AmortizedPlanarFlow(dim=2, flow_length=2)
    with pytest.raises(ValueError, match=r"\(B, 1\)"):
        model.rsample(torch.zeros(3, 2), 4)
    with pytest.raises(ValueError, match="NaN"):
        model.rsample(torch.tensor([float("nan")]), 4)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        AmortizedPlanarFlow(dim=2, flow_length=2, features="angle_radius").flow_params(torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(B, m, 2\)"):
        model.log_prob(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match=r"\(B, n, 2\)"):
        ring_energy(torch.zeros(4, 2), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="features"):
        AmortizedPlanarFlow(features="degrees")
    assert conditions.FEATURES["angle"][1:] == (1, 2)


def test_corrupt_or_foreign_checkpoint_gives_a_clear_error(tmp_path):
    kwargs = dict(num_steps=2, conditions_per_step=2, samples_per_condition=4, log_every=1)
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt could not be read"):
        fit_amortized(AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8), gaussian_family,
                      uniform_angles, checkpoint_path=str(path), **kwargs)
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="expected a dict with keys"):
        fit_amortized(AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8), gaussian_family,
                      uniform_angles, checkpoint_path=str(path), **kwargs)
    with pytest.raises(ValueError, match="log_every must be an integer >= 1"):
        fit_amortized(AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8), gaussian_family,
                      uniform_angles, **{**kwargs, "log_every": 0})
