"""Flows at the edges: nearly singular planar layers in float32, a root find that runs out of
iterations, and arguments of the wrong type, each with an independent computation or an
explicit expected message."""

import copy
import math
import re
import warnings

import mpmath
import pytest
import torch

from nfutils import flows
from nfutils.flows import (
    NormalizingFlow,
    PlanarFlow,
    coupling,
    planar_flow,
    planar_flow_inverse,
    planar_inverse,
    planar_transform,
)

# ---------------------------------------------------------------- nearly singular layers


def nearly_singular_model(c: float, dim: int, flow_length: int) -> NormalizingFlow:
    """A float32 planar flow whose first layer has u = -c w: w.u = -c ||w||^2, so App. A.1's
    floor gives 1 + w.u_hat = 1e-4 (the layer is almost flat across its hyperplane); the other
    layers are random."""
    torch.manual_seed(0)
    model = NormalizingFlow(dim, PlanarFlow(dim, flow_length))
    with torch.no_grad():
        model.flow.w.mul_(3.0)
        model.flow.u.normal_()
        model.flow.u[0] = -c * model.flow.w[0]
        model.flow.b.normal_()
        model.log_sigma.fill_(0.5)
    return model


def float64_log_q(model: NormalizingFlow, z_k: torch.Tensor) -> torch.Tensor:
    """The same flow (the float32 parameters, exactly) evaluated in float64."""
    with torch.no_grad():
        return copy.deepcopy(model).double().log_prob(z_k.double())


@pytest.mark.parametrize("c", [10.0, 1e5])
@pytest.mark.parametrize("dim, flow_length", [(2, 1), (2, 4), (40, 3)])
def test_float32_log_prob_of_a_nearly_singular_layer_matches_float64(c, dim, flow_length):
    model = nearly_singular_model(c, dim, flow_length)
    with torch.no_grad():
        z_k, _ = model.rsample(4000, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the result must be right without a warning
        with torch.no_grad():
            log_q = model.log_prob(z_k)
            z_0, _ = model.flow.inverse(z_k)
    assert log_q.dtype == z_0.dtype == torch.float32
    expected = float64_log_q(model, z_k)
    assert float((log_q.double() - expected).abs().max()) < 1e-3
    with torch.no_grad():
        z_0_expected, _ = copy.deepcopy(model.flow).double().inverse(z_k.double())
    assert torch.allclose(z_0.double(), z_0_expected, rtol=1e-6, atol=1e-6)


def mpmath_log_q_one_layer(model: NormalizingFlow, z_k: torch.Tensor) -> list[float]:
    """log q_1 of a one-layer flow at each point, independently of nfutils: the scalar
    equation a + c tanh(a + b) = w.y solved by bisection with 40 significant digits, then
    log q = log N(z_0; mu, sigma^2) - log(1 + c (1 - tanh^2(a + b))) (Eq. 12, 13)."""
    mpmath.mp.dps = 40
    flow = copy.deepcopy(model.flow).double().requires_grad_(False)
    w = [mpmath.mpf(float(x)) for x in flow.w[0]]
    u_hat_64, c_64 = flows.constrain_u(flow.w, flow.u, return_w_dot_u_hat=True)
    u_hat = [mpmath.mpf(float(x)) for x in u_hat_64[0]]
    c, b = mpmath.mpf(float(c_64[0])), mpmath.mpf(float(flow.b[0]))
    mu = [mpmath.mpf(float(x)) for x in model.mu.detach()]
    log_sigma = [mpmath.mpf(float(x)) for x in model.log_sigma.detach()]
    values = []
    for point in z_k.double().tolist():
        y = [mpmath.mpf(x) for x in point]
        w_dot_y = mpmath.fsum(wi * yi for wi, yi in zip(w, y))
        lower, upper = w_dot_y - abs(c) - 1, w_dot_y + abs(c) + 1
        for _ in range(160):  # g(a) = a + c tanh(a + b) - w.y is increasing
            mid = (lower + upper) / 2
            if mid + c * mpmath.tanh(mid + b) - w_dot_y < 0:
                lower = mid
            else:
                upper = mid
        h = mpmath.tanh((lower + upper) / 2 + b)
        z_0 = [yi - ui * h for yi, ui in zip(y, u_hat)]
        log_q0 = mpmath.fsum(-((zi - mi) * mpmath.exp(-si)) ** 2 / 2 - si - mpmath.log(2 * mpmath.pi) / 2
                             for zi, mi, si in zip(z_0, mu, log_sigma))
        values.append(float(log_q0 - mpmath.log(1 + c * (1 - h * h))))
    return values


@pytest.mark.parametrize("c", [10.0, 1e5])
def test_log_prob_of_a_nearly_singular_layer_against_high_precision(c):
    """float32 within 1e-3 nats and float64 within 1e-8 nats of a 40-digit computation, at the
    points nearest the hyperplane (where the layer is almost flat) and at random ones."""
    model = nearly_singular_model(c, 2, 1)
    with torch.no_grad():
        z_k, _ = model.rsample(4000, generator=torch.Generator().manual_seed(2))
        z_0, _ = model.flow.inverse(z_k.double().float())
        distance = (z_0 @ model.flow.w[0] + model.flow.b[0]).abs()
        points = torch.cat([z_k[distance.argsort()[:60]], z_k[:20]])
        log_q_32 = model.log_prob(points).double()
        log_q_64 = copy.deepcopy(model).double().log_prob(points.double())
    expected = torch.tensor(mpmath_log_q_one_layer(model, points), dtype=torch.float64)
    assert float((log_q_64 - expected).abs().max()) < 1e-8
    assert float((log_q_32 - expected).abs().max()) < 1e-3


def test_per_example_inverse_in_float32_matches_float64():
    # per-example parameters (B, 1, K, D) against (B, m, D) points, as the VAE and Part 2 use
    torch.manual_seed(3)
    w = 3.0 * torch.randn(5, 1, 3, 2)
    u = torch.randn(5, 1, 3, 2)
    u[:, :, 1] = -1e3 * w[:, :, 1]
    b = torch.randn(5, 1, 3)
    with torch.no_grad():
        z_k, _ = planar_flow(torch.randn(5, 200, 2), w, u, b)
        z_0, sum_log_det = planar_flow_inverse(z_k, w, u, b)
        z_0_64, sum_log_det_64 = planar_flow_inverse(z_k.double(), w.double(), u.double(),
                                                     b.double())
    assert z_0.dtype == sum_log_det.dtype == torch.float32
    assert float((sum_log_det.double() - sum_log_det_64).abs().max()) < 1e-4
    assert torch.allclose(z_0.double(), z_0_64, rtol=1e-6, atol=1e-6)


def test_a_root_find_out_of_iterations_warns_with_layer_and_residual():
    torch.manual_seed(4)
    w = torch.randn(3, 2, dtype=torch.float64)
    u = 5.0 * torch.randn(3, 2, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64)
    z_k = 4.0 * torch.randn(50, 2, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        planar_flow_inverse(z_k, w, u, b, max_iter=1)
    messages = [str(record.message) for record in caught]
    assert all(record.category is RuntimeWarning for record in caught)
    assert [re.search(r"layer (\d) of 3 did not converge in 1 iterations: largest residual "
                      r"[0-9.]+", message).group(1) for message in messages] == ["3", "2", "1"]
    u_hat = flows.constrain_u(w[0], u[0])
    with pytest.warns(RuntimeWarning, match=r"did not converge.*residual [0-9.e+-]+"):
        planar_inverse(z_k, w[0], u_hat, b[0], max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough iterations: no warning
        z = planar_inverse(z_k, w[0], u_hat, b[0])
    assert torch.allclose(planar_transform(z, w[0], u_hat, b[0])[0], z_k, atol=1e-9)


# ---------------------------------------------------------------- argument types


FLOW_LENGTH_USERS = {
    "PlanarFlow": lambda K: PlanarFlow(2, K),
    "RadialFlow": lambda K: flows.RadialFlow(2, K),
    "NICEFlow": lambda K: flows.NICEFlow(2, K),
    "make_nice_flow": lambda K: coupling.make_nice_flow(2, K),
    "make_flow planar": lambda K: flows.make_flow("planar", 2, K),
    "make_flow radial": lambda K: flows.make_flow("radial", 2, K),
    "planar_param_count": lambda K: flows.planar_param_count(2, K),
    "split_planar_params": lambda K: flows.split_planar_params(torch.zeros(4, 15), 2, K),
}


@pytest.mark.parametrize("bad, shown", [(2.5, "2.5 (float)"), (True, "True (bool)"),
                                        (3.0, "3.0 (float)"), ("3", "'3' (str)")])
@pytest.mark.parametrize("user", sorted(FLOW_LENGTH_USERS))
def test_flow_length_must_be_an_integer(user, bad, shown):
    with pytest.raises(TypeError, match=rf"flow_length .*an integer >= 0.*got {re.escape(shown)}"):
        FLOW_LENGTH_USERS[user](bad)


def test_flow_length_of_numpy_integer_type_is_accepted_and_negative_refused():
    import numpy as np

    assert PlanarFlow(2, np.int64(3)).flow_length == 3
    assert flows.planar_param_count(2, np.int64(3)) == 15
    for user in FLOW_LENGTH_USERS.values():
        with pytest.raises(ValueError, match=r"flow_length .*>= 0.*got -1"):
            user(-1)


def test_dim_and_num_samples_must_be_integers():
    with pytest.raises(TypeError, match=r"dim .*an integer >= 1.*got 2.0 \(float\)"):
        PlanarFlow(2.0, 3)
    with pytest.raises(TypeError, match=r"dim .*an integer >= 1.*got True \(bool\)"):
        NormalizingFlow(True)
    with pytest.raises(TypeError, match=r"num_samples .*an integer >= 1.*got 2.5 \(float\)"):
        flows.make_flow("planar", 2, 3).rsample(2.5)


def test_the_vae_flow_length_is_checked_by_the_flows():
    from nfutils import vae

    for bad, shown in [(2.5, "2.5 (float)"), (True, "True (bool)")]:
        with pytest.raises(TypeError, match=rf"flow_length .*got {re.escape(shown)}"):
            vae.VAE(latent_dim=2, flow_length=bad, hidden=8, data_dim=6)


INTEGER_Z_CALLS = {
    "PlanarFlow.forward": lambda z: PlanarFlow(2, 3)(z),
    "PlanarFlow.forward, parameters without gradient": lambda z: PlanarFlow(2, 3).requires_grad_(False)(z),
    "PlanarFlow.inverse": lambda z: PlanarFlow(2, 3).inverse(z),
    "NormalizingFlow.log_prob": lambda z: flows.make_flow("planar", 2, 3).log_prob(z),
    "NormalizingFlow.log_prob, K = 0": lambda z: flows.make_flow("planar", 2, 0).log_prob(z),
    "RadialFlow.forward": lambda z: flows.RadialFlow(2, 3)(z),
    "RadialFlow.inverse": lambda z: flows.RadialFlow(2, 3).inverse(z),
    "NICEFlow.forward": lambda z: flows.NICEFlow(2, 3)(z),
    "NICEFlow.inverse": lambda z: flows.NICEFlow(2, 3).inverse(z),
    "planar_flow": lambda z: planar_flow(z, torch.randn(3, 2), torch.randn(3, 2), torch.zeros(3)),
    "planar_flow_inverse": lambda z: planar_flow_inverse(z, torch.randn(3, 2), torch.randn(3, 2),
                                                         torch.zeros(3)),
    "planar_transform": lambda z: planar_transform(z, torch.randn(2), torch.randn(2), 0.0),
    "planar_inverse": lambda y: planar_inverse(y, torch.randn(2), torch.zeros(2), 0.0),
}


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
@pytest.mark.parametrize("call", sorted(INTEGER_Z_CALLS))
def test_a_non_floating_z_is_refused_naming_it_and_its_dtype(call, dtype):
    z = torch.ones(5, 2, dtype=dtype)
    name = "y" if call == "planar_inverse" else "z(_k)?"  # each function's own argument name
    with pytest.raises(TypeError, match=rf"^{name} must be a floating-point tensor.*got {dtype}"):
        INTEGER_Z_CALLS[call](z)


def test_log_prob_still_accepts_float32_and_float64_points():
    model = flows.make_flow("planar", 2, 3)
    for dtype in [torch.float32, torch.float64]:
        log_q = model.to(dtype).log_prob(torch.zeros(4, 2, dtype=dtype))
        assert log_q.dtype == dtype and bool(torch.isfinite(log_q).all())
    assert math.isfinite(float(model.double().log_prob(torch.zeros(1, 2, dtype=torch.float64)).detach()))


@pytest.mark.parametrize("w_dot_u_hat, b, w_dot_y", [(29.757806272028574, -25.68608856201172, -2.7480742232127175),
                                                     (39.51851252986614, 32.831398010253906, 5.36620019012048),
                                                     (13.817839322243248, -26.430797576904297, 13.972236047118809)])
def test_root_find_of_a_nearly_saturated_layer_converges_without_warning(w_dot_u_hat, b, w_dot_y):
    # layers of a trained 2-D VAE's flow on which a Newton step crawling to one end of the
    # bracket once stalled the root find for 100 iterations
    w = torch.tensor([1.0, 0.0], dtype=torch.float64)
    u_hat = torch.tensor([w_dot_u_hat, 0.0], dtype=torch.float64)
    y = torch.tensor([[w_dot_y, 0.3]], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z = planar_inverse(y, w, u_hat, torch.tensor(b, dtype=torch.float64))
    forward = z + u_hat * torch.tanh(z @ w + b).unsqueeze(-1)  # Eq. (10), computed here
    assert float((forward - y).abs().max()) < 1e-10
