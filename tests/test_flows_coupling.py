"""NICE (nfutils.flows.coupling): exact inverse, log-det against autograd's Jacobian, volume preservation."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from nfutils import potentials, training
from nfutils.flows import coupling


def random_nice(dim, flow_length, seed=0):
    """A NICE flow in float64 with every parameter moved away from its (identity) init."""
    torch.manual_seed(seed)
    flow = coupling.NICEFlow(dim, flow_length, hidden=8).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return flow


@pytest.mark.parametrize("dim", [2, 3, 6])
@pytest.mark.parametrize("flow_length", [0, 1, 4])
def test_log_det_matches_autograd_jacobian(dim, flow_length):
    flow = random_nice(dim, flow_length)
    z = torch.randn(5, dim, dtype=torch.float64)
    _, log_det = flow(z)
    for i in range(5):
        expected = torch.linalg.slogdet(jacobian(lambda x: flow(x)[0], z[i])).logabsdet
        assert abs(float(log_det[i].detach() - expected)) < 1e-10
    assert torch.allclose(log_det, flow.log_scale.sum().expand(5))


@pytest.mark.parametrize("dim", [2, 5])
def test_coupling_layers_preserve_volume_and_shift_one_half(dim):
    flow = random_nice(dim, 2)
    z = torch.randn(4, dim, dtype=torch.float64)
    layers = flow.layers(z)
    for k in range(flow.flow_length):  # layer k keeps the second half when k is even
        kept = slice(dim // 2, dim) if k % 2 == 0 else slice(0, dim // 2)
        assert torch.equal(layers[k + 1][:, kept], layers[k][:, kept])
        assert not torch.equal(layers[k + 1], layers[k])
    with torch.no_grad():
        flow.log_scale.zero_()  # the coupling layers alone
    for i in range(4):
        jac = jacobian(lambda x: flow(x)[0], z[i])
        assert abs(float(torch.linalg.det(jac)) - 1.0) < 1e-12


@pytest.mark.parametrize("dim", [2, 5])
def test_inverse_is_exact(dim):
    flow = random_nice(dim, 6)
    z = 3 * torch.randn(100, dim, dtype=torch.float64)
    with torch.no_grad():
        z_k, log_det = flow(z)
        z_back, log_det_back = flow.inverse(z_k)
    assert float((z_back - z).abs().max()) < 1e-12
    assert torch.allclose(log_det, log_det_back)


def test_fresh_flow_is_the_identity_and_layers_are_listed():
    flow = coupling.NICEFlow(2, 3)
    z = torch.randn(10, 2)
    layers = flow.layers(z)
    assert len(layers) == 3 + 2 and all(torch.equal(layer, z) for layer in layers)


def test_normalizing_flow_with_nice_log_prob_and_density_integrates_to_one():
    torch.manual_seed(1)
    model = coupling.make_nice_flow(2, 4, hidden=8).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    z_k, log_q = model.rsample(300)
    assert torch.allclose(model.log_prob(z_k), log_q, atol=1e-10)
    points, area = potentials.density_grid(10.0, 400)
    with torch.no_grad():
        mass = float(model.log_prob(points.reshape(-1, 2)).exp().sum() * area)
    assert abs(mass - 1.0) < 1e-3


def test_nice_trains_and_gradients_flow():
    torch.manual_seed(0)
    model = coupling.make_nice_flow(2, 2, hidden=8)
    z_k, log_q = model.rsample(64)
    (z_k.sum() + log_q.sum()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    U = potentials.POTENTIALS["U2"]
    log_Z = potentials.log_partition(U, extent=6.0, resolution=300)
    history = training.fit_flow(model, U, num_steps=200, num_samples=256, lr=5e-3, log_Z=log_Z,
                                generator=torch.Generator().manual_seed(0))
    assert history.kl[-1] < history.kl[0]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="dim .*must be an integer >= 2; got 1"):
        coupling.NICEFlow(1, 2)
    with pytest.raises(ValueError, match=r"\(\.\.\., 2\)"):
        coupling.NICEFlow(2, 2)(torch.zeros(3, 3))
    assert math.isfinite(float(coupling.NICEFlow(2, 0)(torch.zeros(1, 2))[1].detach()))
