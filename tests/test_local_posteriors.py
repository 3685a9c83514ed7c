"""nfutils.local_posteriors: per-image flow posteriors against a frozen decoder."""

import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from nfutils import local_posteriors as lp
from nfutils.vae import VAE, bound, grid_posterior


def tiny_model(latent_dim=2):
    torch.manual_seed(3)
    model = VAE(latent_dim=latent_dim, flow_length=0, hidden=16, data_dim=20)
    with torch.no_grad():  # a decoder with some structure, so the posteriors are not Gaussian
        for parameter in model.decoder.parameters():
            parameter.mul_(3.0)
    return model


def images(n=6):
    return torch.bernoulli(torch.full((n, 20), 0.4), generator=torch.Generator().manual_seed(0))


def test_rsample_log_q_matches_the_change_of_variables_written_out():
    torch.manual_seed(0)
    mu, log_sigma = torch.randn(3, 2), 0.3 * torch.randn(3, 2)
    q = lp.LocalFlowPosterior(mu, log_sigma, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        q.u.add_(torch.randn_like(q.u))  # move the layers away from the identity
        q.b.add_(torch.randn_like(q.b))
    eps = torch.randn((5, 3, 2), generator=torch.Generator().manual_seed(2))
    z_k, log_q = q.rsample(5, generator=torch.Generator().manual_seed(2))
    z = mu + torch.exp(log_sigma) * eps
    log_det = torch.zeros(5, 3)
    w, u, b = q.w.detach(), q.u.detach(), q.b.detach()
    for k in range(4):  # plain App. A.1 and Eq. (10)-(12)
        w_dot_u = (w[:, k] * u[:, k]).sum(-1, keepdim=True)
        u_hat = u[:, k] + (-1 + torch.nn.functional.softplus(w_dot_u) - w_dot_u) * w[:, k] / (
            w[:, k] ** 2).sum(-1, keepdim=True)
        h = torch.tanh((z * w[:, k]).sum(-1) + b[:, k])
        log_det += torch.log(torch.abs(1 + (1 - h ** 2) * (w[:, k] * u_hat).sum(-1)))
        z = z + u_hat * h.unsqueeze(-1)
    log_q0 = torch.distributions.Normal(mu, torch.exp(log_sigma)).log_prob(
        mu + torch.exp(log_sigma) * eps).sum(-1)
    torch.testing.assert_close(z_k.detach(), z, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_q.detach(), log_q0 - log_det, atol=1e-4, rtol=0)


def test_new_local_flows_are_the_identity():
    q = lp.LocalFlowPosterior(torch.zeros(4, 3), torch.zeros(4, 3), 7)
    z_k, log_q = q.rsample(10, generator=torch.Generator().manual_seed(0))
    eps = torch.randn((10, 4, 3), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z_k.detach(), eps, atol=1e-5, rtol=0)


@pytest.mark.parametrize("flow_length", [0, 4])
def test_fitted_bound_improves_on_the_encoder_and_stays_below_log_px_by_quadrature(flow_length):
    torch.set_num_threads(1)
    model = tiny_model().eval()
    x = images()
    generator = torch.Generator().manual_seed(0)
    encoder_elbo = bound(model, x, 2000, generator=generator).elbo.detach().double()
    before = [p.detach().clone() for p in model.parameters()]
    q = lp.fit_local_posteriors(model, x, flow_length, num_steps=300, num_samples=8, lr=2e-2,
                                generator=generator)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())), "decoder changed"
    assert all(p.requires_grad for p in model.parameters())
    elbo = lp.local_elbo(model, q, x, 4000, generator=generator)
    log_px_is = lp.local_log_likelihood(model, q, x, 100_000, chunk=1000, generator=generator)
    log_px_grid = torch.tensor([g.log_px for g in grid_posterior(model, x, resolution=300)],
                               dtype=torch.float64)
    assert float((elbo - encoder_elbo).mean()) > 0.05
    assert bool((elbo < log_px_grid + 0.02).all())
    torch.testing.assert_close(log_px_is, log_px_grid, atol=0.03, rtol=0)


def test_longer_local_flows_fit_a_non_gaussian_posterior_better():
    torch.set_num_threads(1)
    model = tiny_model().eval()
    x = images(4)
    gaps = []
    for flow_length in (0, 8):
        generator = torch.Generator().manual_seed(1)
        q = lp.fit_local_posteriors(model, x, flow_length, num_steps=400, num_samples=16,
                                    lr=2e-2, generator=generator)
        gaps.append(float(lp.local_elbo(model, q, x, 4000, generator=generator).mean()))
    assert gaps[1] > gaps[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        lp.LocalFlowPosterior(torch.zeros(3), torch.zeros(3), 2)
    with pytest.raises(ValueError, match="num_steps"):
        lp.fit_local_posteriors(tiny_model(), images(2), 2, num_steps=0)


@pytest.mark.parametrize("flow_length, error", [(2.5, TypeError), (2.0, TypeError), (True, TypeError),
                                                ("2", TypeError), (-1, ValueError)])
def test_flow_length_must_be_an_integer_of_at_least_zero(flow_length, error):
    mu = torch.zeros(3, 2)
    with pytest.raises(error, match=r"flow_length \(the flow length K\) must be an integer >= 0"):
        lp.LocalFlowPosterior(mu, mu, flow_length)
    with pytest.raises(error, match="flow_length"):
        lp.fit_local_posteriors(tiny_model(), images(2), flow_length, num_steps=1)
    assert lp.LocalFlowPosterior(mu, mu, 0).w.shape == (3, 0, 2)  # K = 0: a Gaussian per image


def test_averaged_fit_returns_the_mean_of_the_last_iterates():
    """The iterates are recorded by a global optimizer hook, independently of the fit's own
    running mean; averaging the last quarter of 40 steps must give the mean of steps 30..39."""
    model = tiny_model().eval()
    x = images(3)
    iterates = []

    def record(optimizer, args, kwargs):
        iterates.append([p.detach().clone() for group in optimizer.param_groups
                         for p in group["params"]])

    handle = register_optimizer_step_post_hook(record)
    try:
        q = lp.fit_local_posteriors(model, x, 3, num_steps=40, num_samples=2, lr=1e-2,
                                    warmup_steps=5, average_fraction=0.25,
                                    generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert len(iterates) == 40
    expected = [torch.stack(values).mean(0) for values in zip(*iterates[30:])]
    for parameter, mean in zip(q.parameters(), expected):
        torch.testing.assert_close(parameter.detach(), mean, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(expected[0], iterates[-1][0])  # the average is not the last iterate
    plain = lp.fit_local_posteriors(model, x, 3, num_steps=40, num_samples=2, lr=1e-2,
                                    warmup_steps=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain.mu.detach(), iterates[-1][0])  # 0: the last iterate
    with pytest.raises(ValueError, match="average_fraction"):
        lp.fit_local_posteriors(model, x, 3, num_steps=4, average_fraction=1.0)
