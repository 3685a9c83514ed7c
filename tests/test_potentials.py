"""Potentials: Table 1 at hand-computed points, tapering, quadrature, exact-target KL."""

import math
import warnings

import pytest
import torch

from nfutils import flows, potentials
from nfutils.potentials import U1, U2, U3, U4, U8, log_partition, rotated_U1, tapered


def test_table1_at_hand_computed_points():
    # U1 at (2, 0): ring term 0; lobes -log(exp(0) + exp(-0.5 (4/0.6)^2))
    z = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    expected_u1 = [
        -math.log(1 + math.exp(-0.5 * (4 / 0.6) ** 2)),
        0.5 * (2 / 0.4) ** 2 - math.log(2 * math.exp(-0.5 * (2 / 0.6) ** 2)),
        0.5 * ((math.sqrt(2) - 2) / 0.4) ** 2
        - math.log(math.exp(-0.5 * (1 / 0.6) ** 2) + math.exp(-0.5 * (3 / 0.6) ** 2)),
    ]
    assert torch.allclose(U1(z), torch.tensor(expected_u1, dtype=torch.float64), atol=1e-12)

    # at z = (1, 1): w1 = sin(pi/2) = 1, w2 = 3, w3 = 3 sigmoid(0) = 1.5
    point = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert float(U2(point)) == pytest.approx(0.0, abs=1e-12)
    assert float(U3(point)) == pytest.approx(-math.log(1 + math.exp(-0.5 * (3 / 0.35) ** 2)), abs=1e-12)
    assert float(U4(point)) == pytest.approx(-math.log(1 + math.exp(-0.5 * (1.5 / 0.35) ** 2)), abs=1e-12)
    # at z = (0.5, -1): w1 = sin(pi/4), w2 = 3 exp(-0.5 (0.5/0.6)^2), w3 = 3 sigmoid(-0.5/0.3)
    z1, z2 = 0.5, -1.0
    w1 = math.sin(math.pi / 4)
    w2 = 3 * math.exp(-0.5 * (-0.5 / 0.6) ** 2)
    w3 = 3 / (1 + math.exp(0.5 / 0.3))
    point = torch.tensor([z1, z2], dtype=torch.float64)
    assert float(U2(point)) == pytest.approx(0.5 * ((z2 - w1) / 0.4) ** 2, rel=1e-12)
    assert float(U3(point)) == pytest.approx(
        -math.log(math.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + math.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)),
        rel=1e-12,
    )
    assert float(U4(point)) == pytest.approx(
        -math.log(math.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + math.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)),
        rel=1e-12,
    )


def table1_U1(z):
    """U1 exactly as Table 1 writes it, with plain exponentials (the reference)."""
    z1 = z[..., 0]
    norm = torch.sqrt(z[..., 0] ** 2 + z[..., 1] ** 2)
    return 0.5 * ((norm - 2) / 0.4) ** 2 - torch.log(
        torch.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + torch.exp(-0.5 * ((z1 + 2) / 0.6) ** 2))


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_U1_equals_table1_formula_with_gradients(dtype, tol):
    # U1 is computed with logaddexp; same values and gradients as Table 1's log(exp + exp),
    # also far out where those exponentials underflow in float32 (compared in float64 there)
    torch.manual_seed(0)
    z = (3.0 * torch.randn(2000, 2, dtype=dtype)).requires_grad_()
    reference_z = z.detach().double().requires_grad_()
    value, reference = U1(z), table1_U1(reference_z)
    scale = 1.0 + reference.abs()
    assert ((value.double() - reference).abs() / scale).max() < tol
    (grad,) = torch.autograd.grad(value.sum(), z)
    (reference_grad,) = torch.autograd.grad(reference.sum(), reference_z)
    grad_scale = 1.0 + reference_grad.abs()
    assert ((grad.double() - reference_grad).abs() / grad_scale).max() < tol


def test_shapes_and_batching():
    z = torch.randn(3, 4, 2)
    for name, U in potentials.POTENTIALS.items():
        assert U(z).shape == (3, 4), name
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        U1(torch.randn(5, 3))


def test_tapering_leaves_the_box_and_kills_the_tails():
    U = tapered(U2, radius=4.0)
    inside = torch.tensor([[0.3, 0.2], [-2.5, -0.7]], dtype=torch.float64)
    assert torch.allclose(U(inside), U2(inside), atol=1e-10)
    far = torch.tensor([[6.0, 1.0]], dtype=torch.float64)
    assert float(U(far) - U2(far)) > 15.0


def test_rotated_U1_family():
    z = torch.randn(100, 2, dtype=torch.float64)
    assert torch.allclose(rotated_U1(z, 0.0), U1(z))
    angles = torch.linspace(-math.pi, math.pi, 100, dtype=torch.float64)
    rotation = torch.stack(
        [torch.stack([angles.cos(), -angles.sin()], -1), torch.stack([angles.sin(), angles.cos()], -1)], -2
    )
    rotated = (rotation @ z.unsqueeze(-1)).squeeze(-1)  # R(theta) z
    assert torch.allclose(rotated_U1(rotated, angles), U1(z), atol=1e-10)
    with pytest.raises(ValueError, match="broadcast"):
        rotated_U1(z, torch.zeros(7))


def test_U8_has_eight_lobes():
    angles = torch.arange(16, dtype=torch.float64) * math.pi / 8
    ring = 3.0 * torch.stack([angles.cos(), angles.sin()], -1)
    values = U8(ring)
    # lobes at pi/8 + j pi/4: energy at least 3 nats below the points half-way between
    lobes, gaps = values[1::2], values[0::2]
    assert bool(lobes.max() + 3.0 < gaps.min())
    assert torch.allclose(lobes, lobes[0].expand(8), atol=1e-9)
    # and U8 is exactly the sum of four rotated radius-3 rings
    z = torch.randn(50, 2, dtype=torch.float64)
    total = sum(rotated_U1(z, j * math.pi / 4, radius=3.0) for j in range(4))
    assert torch.allclose(U8(z), total, atol=1e-10)


@pytest.mark.parametrize("name", ["U1", "U2", "U3", "U4", "U8"])
def test_log_partition_converges(name):
    U = potentials.POTENTIALS[name]
    coarse = log_partition(U, extent=6.0, resolution=800)
    fine = log_partition(U, extent=6.0, resolution=1600)
    assert abs(coarse - fine) < 1e-3


def test_log_partition_of_a_gaussian_is_exact():
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    std = torch.tensor([0.7, 1.3], dtype=torch.float64)
    U = potentials.gaussian_energy(mean, std)
    exact = float(torch.log(std).sum()) + math.log(2 * math.pi)
    assert log_partition(U, extent=9.0, resolution=600) == pytest.approx(exact, abs=1e-6)


def test_kl_is_zero_for_a_flow_that_is_the_target():
    model = flows.NormalizingFlow(2).double()
    with torch.no_grad():
        model.mu.copy_(torch.tensor([0.5, -1.0]))
        model.log_sigma.copy_(torch.tensor([0.7, 1.3]).log())
    U = potentials.gaussian_energy(model.mu.detach().clone(), model.log_sigma.detach().exp())
    log_Z = log_partition(U, extent=9.0, resolution=600)
    z_k, log_q = model.rsample(10_000)
    kl = float(flows.free_energy(log_q, U(z_k)).detach()) + log_Z
    assert abs(kl) < 1e-5
    # and a mismatched flow has KL clearly above 0
    with torch.no_grad():
        model.mu.add_(1.0)
    z_k, log_q = model.rsample(10_000)
    assert float(flows.free_energy(log_q, U(z_k)).detach()) + log_Z > 0.3


def test_log_partition_warns_when_the_grid_cuts_off_mass():
    with pytest.warns(UserWarning, match="outermost cells of the grid hold"):
        log_partition(U1, extent=1.0, resolution=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_partition(U1, extent=6.0, resolution=200)


def test_log_partition_refuses_nan_energies():
    def U_with_nan(z):
        energies = U1(z)
        return torch.where(z[..., 0] > 5.0, torch.nan, energies)

    with pytest.raises(ValueError, match="NaN or -inf at .* grid points"):
        log_partition(U_with_nan, extent=6.0, resolution=200)
