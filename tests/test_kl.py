"""nfutils.kl: the Monte Carlo KL and its standard error, against analytic Gaussian KLs."""

import math

import pytest
import torch

from nfutils.amortized import AmortizedPlanarFlow, ring_energy
from nfutils.flows import make_flow
from nfutils.kl import conditional_kl, flow_kl, monte_carlo_kl, quadrature_kl
from nfutils.potentials import density_grid


def gaussian_energy_and_log_Z(mean, std):
    """U(z) = sum_j (z_j - m_j)^2 / (2 s_j^2), with log Z = sum_j log(sqrt(2 pi) s_j)."""
    mean, std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)

    def energy(z):
        return (0.5 * ((z - mean) / std) ** 2).sum(-1)

    return energy, float(torch.log(math.sqrt(2 * math.pi) * std).sum())


def analytic_kl(m1, s1, m2, s2):
    """KL(N(m1, diag s1^2) || N(m2, diag s2^2)) = sum_j [log(s2/s1) + (s1^2 + (m1 - m2)^2) / (2 s2^2) - 1/2]."""
    return sum(math.log(b / a) + (a * a + (x - y) ** 2) / (2 * b * b) - 0.5
               for x, a, y, b in zip(m1, s1, m2, s2))


def test_monte_carlo_kl_matches_the_analytic_kl_of_two_gaussians():
    m1, s1, m2, s2 = (0.3, -1.0), (0.7, 1.5), (1.0, -0.5), (0.5, 2.0)
    energy, log_Z = gaussian_energy_and_log_Z(m2, s2)
    generator = torch.Generator().manual_seed(0)
    n = 200_000
    z = torch.tensor(m1, dtype=torch.float64) + torch.tensor(s1, dtype=torch.float64) * torch.randn(
        n, 2, generator=generator, dtype=torch.float64)
    log_q = -energy_and_log_Z_of_q(z, m1, s1)
    kl, se = monte_carlo_kl(log_q, energy(z), log_Z)
    exact = analytic_kl(m1, s1, m2, s2)
    assert abs(float(kl) - exact) < 4 * float(se)
    # the standard error is the spread of log q + U over sqrt(n), here about 1e-3 nats
    assert float(se) == pytest.approx(float((log_q + energy(z)).std()) / math.sqrt(n))
    assert 1e-4 < float(se) < 1e-2


def energy_and_log_Z_of_q(z, mean, std):
    """-log N(z; mean, diag std^2)."""
    energy, log_Z = gaussian_energy_and_log_Z(mean, std)
    return energy(z) + log_Z


def test_monte_carlo_kl_is_exactly_zero_when_q_is_p_and_batches_over_leading_axes():
    energy, log_Z = gaussian_energy_and_log_Z((1.0, 2.0), (0.5, 3.0))
    z = torch.randn(3, 100, 2, dtype=torch.float64)
    kl, se = monte_carlo_kl(-energy(z) - log_Z, energy(z), log_Z)
    assert kl.shape == se.shape == (3,)
    assert float(kl.abs().max()) < 1e-12 and float(se.abs().max()) < 1e-12
    with pytest.raises(ValueError, match=r"same shape .*\(3, 100\) and \(3, 99\)"):
        monte_carlo_kl(torch.zeros(3, 100), torch.zeros(3, 99))


def test_flow_kl_of_a_gaussian_flow_against_the_analytic_kl():
    m2, s2 = (1.0, -0.5), (0.5, 2.0)
    energy, log_Z = gaussian_energy_and_log_Z(m2, s2)
    model = make_flow("planar", 2, 0).double()
    with torch.no_grad():
        model.mu.copy_(torch.tensor(m2))
        model.log_sigma.copy_(torch.tensor(s2).log())
    kl, se = flow_kl(model, energy, log_Z, num_samples=500)
    assert abs(float(kl)) < 1e-8 and float(se) < 1e-8  # q = p, up to rounding
    with torch.no_grad():
        model.mu.copy_(torch.tensor([0.3, -1.0]))
        model.log_sigma.zero_()
    kl, se = flow_kl(model, energy, log_Z, num_samples=50_000,
                     generator=torch.Generator().manual_seed(1))
    assert abs(float(kl) - analytic_kl((0.3, -1.0), (1.0, 1.0), m2, s2)) < 4 * float(se)


def test_conditional_kl_is_one_estimate_per_condition():
    torch.manual_seed(0)
    model = AmortizedPlanarFlow(dim=2, flow_length=2, hidden=8)
    angles = torch.tensor([[0.0], [1.0], [2.0]])
    kl, se = conditional_kl(model, ring_energy, angles, 0.0, num_samples=300,
                            generator=torch.Generator().manual_seed(0))
    assert kl.shape == se.shape == (3,)
    # the same numbers as the estimator applied by hand to the same samples
    z_k, log_q = model.rsample(angles, 300, generator=torch.Generator().manual_seed(0))
    by_hand = (log_q + ring_energy(z_k, angles)).mean(-1)
    assert torch.allclose(kl, by_hand.detach(), atol=1e-6)
    kl_flat, _ = conditional_kl(model, ring_energy, angles[:, 0], 0.0, num_samples=300,
                                generator=torch.Generator().manual_seed(0))
    assert torch.equal(kl_flat, kl)


def test_quadrature_kl_matches_the_analytic_kl_of_two_gaussians_and_ignores_empty_cells():
    m1, s1, m2, s2 = (0.3, -1.0), (0.7, 1.5), (1.0, -0.5), (0.5, 2.0)
    energy, log_Z = gaussian_energy_and_log_Z(m2, s2)
    points, cell_area = density_grid(9.0, 900)
    points = points.reshape(-1, 2)
    log_q = -energy_and_log_Z_of_q(points, m1, s1)
    kl, mass = quadrature_kl(log_q, energy(points), log_Z, cell_area)
    assert kl == pytest.approx(analytic_kl(m1, s1, m2, s2), abs=1e-6)
    assert mass == pytest.approx(1.0, abs=1e-6)
    # a cell where q is 0 (log q = -inf) adds nothing instead of 0 * inf = nan
    log_q[0] = -math.inf
    assert math.isfinite(quadrature_kl(log_q, energy(points), log_Z, cell_area)[0])
