"""nfutils.vae: shapes and gradients of the bound (Eq. 20), log q_K against an autograd Jacobian,
and the importance-sampled log p(x) against the closed form of a linear-Gaussian model."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian
from torch.distributions import MultivariateNormal

from nfutils import vae
from nfutils.flows import constrain_u, planar_transform
from nfutils.vae import VAE, bound, build_vae, log_likelihood

DATA_DIM = 20


def tiny_vae(flow_length=3, latent_dim=2, activation="elu", dtype=torch.float32):
    torch.manual_seed(0)
    return VAE(latent_dim=latent_dim, flow_length=flow_length, hidden=16,
               activation=activation, data_dim=DATA_DIM).to(dtype)


def binary_batch(batch=5, dtype=torch.float32):
    return torch.bernoulli(torch.full((batch, DATA_DIM), 0.3, dtype=dtype))


# ---------------------------------------------------------------- shapes, gradients, checks


@pytest.mark.parametrize("flow_length", [0, 3])
@pytest.mark.parametrize("activation", vae.ACTIVATIONS)
def test_shapes_and_gradients_of_the_bound(flow_length, activation):
    model = tiny_vae(flow_length, latent_dim=3, activation=activation)
    x = binary_batch(5)
    mu, log_sigma, flow_params = model.encode(x)
    assert mu.shape == log_sigma.shape == (5, 3)
    if flow_length:
        w, u, b = flow_params
        assert w.shape == u.shape == (5, flow_length, 3) and b.shape == (5, flow_length)
    else:
        assert flow_params is None
    z_k, log_q = model.posterior_sample(x, num_samples=4)
    assert z_k.shape == (4, 5, 3) and log_q.shape == (4, 5)
    assert model.decode(z_k).shape == (4, 5, DATA_DIM)
    terms = bound(model, x, num_samples=4, beta=0.3)
    for value in (terms.elbo, terms.reconstruction, terms.kl):
        assert value.shape == (5,)
    assert terms.loss.shape == ()
    terms.loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_bound_parts_and_annealed_training_loss_match_their_definitions():
    model = tiny_vae(2, dtype=torch.float64)
    x = binary_batch(6, torch.float64)
    beta = 0.25
    terms = bound(model, x, 7, beta, generator=torch.Generator().manual_seed(3))
    log_px_z, log_pz, log_q = model.log_weights(x, 7, torch.Generator().manual_seed(3))
    torch.testing.assert_close(terms.reconstruction, log_px_z.mean(0))
    torch.testing.assert_close(terms.kl, (log_q - log_pz).mean(0))
    torch.testing.assert_close(terms.elbo, (log_px_z + log_pz - log_q).mean(0))
    torch.testing.assert_close(terms.loss, (log_q - beta * (log_px_z + log_pz)).mean())
    at_one = bound(model, x, 7, 1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(at_one.loss, -at_one.elbo.mean())


def test_bernoulli_log_likelihood_against_direct_formula():
    model = tiny_vae(0, dtype=torch.float64)
    x = binary_batch(3, torch.float64)
    z = torch.randn(2, 3, 2, dtype=torch.float64)
    probs = torch.sigmoid(model.decode(z))
    expected = (x * probs.log() + (1 - x) * (1 - probs).log()).sum(-1)
    torch.testing.assert_close(model.log_prob_x_given_z(x, z), expected)


@pytest.mark.parametrize("standardized", [True, False])
@pytest.mark.parametrize("num_samples", [3, 4])  # S != K and S == K (broadcasting traps)
def test_log_q_matches_change_of_variables_with_autograd_jacobian(num_samples, standardized):
    """log q_K(z_K|x) = log N(eps; 0, I) - log|det dz_K/d eps| (Eq. 13) for the whole map
    eps -> z_K, its Jacobian taken by autograd on a per-layer implementation; the map is
    mu + sigma * flow(eps) (standardized) or flow(mu + sigma * eps) (the paper's order)."""
    torch.manual_seed(0)
    model = VAE(latent_dim=3, flow_length=4, hidden=16, data_dim=DATA_DIM,
                standardized_flow=standardized).double()
    x = binary_batch(2, torch.float64)
    mu, log_sigma, (w, u, b) = model.encode(x)
    generator = torch.Generator().manual_seed(0)
    z_k, log_q = model.posterior_sample(x, num_samples, generator)
    assert log_q.requires_grad  # the training path of planar_flow
    eps = torch.randn(num_samples, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    standard_normal = MultivariateNormal(torch.zeros(3, dtype=torch.float64),
                                         torch.eye(3, dtype=torch.float64))
    for i in range(2):
        u_hat = constrain_u(w[i], u[i])

        def layers(z, i=i, u_hat=u_hat):
            for k in range(4):
                z = planar_transform(z, w[i, k], u_hat[k], b[i, k])[0]
            return z

        def sample_map(e, i=i, layers=layers):
            if standardized:
                return mu[i] + log_sigma[i].exp() * layers(e)
            return layers(mu[i] + log_sigma[i].exp() * e)

        for s in range(num_samples):
            torch.testing.assert_close(z_k[s, i], sample_map(eps[s, i]))
            log_det = torch.linalg.slogdet(jacobian(sample_map, eps[s, i])).logabsdet
            expected = standard_normal.log_prob(eps[s, i]) - log_det
            assert abs(float(log_q[s, i].detach() - expected.detach())) < 1e-9
        # log_q_at inverts the same map at the sampled points
        with torch.no_grad():
            torch.testing.assert_close(vae.log_q_at(model, x, z_k.detach()), log_q.detach(),
                                       atol=1e-8, rtol=0)


def test_bad_input_shape_names_expected_and_received():
    model = tiny_vae(0)
    with pytest.raises(ValueError, match=r"\(B, 20\).*\(5, 19\)"):
        model.encode(torch.zeros(5, 19))
    with pytest.raises(ValueError, match="activation"):
        VAE(activation="swish-ish")
    # one image without its batch dimension: the message shows the shape passed in
    with pytest.raises(ValueError, match=r"\(N, 20\).*received \(20,\)"):
        log_likelihood(model, torch.zeros(20), num_samples=2)


def test_build_vae_round_trips_config():
    model = VAE(latent_dim=40, flow_length=10, hidden=8)
    rebuilt = build_vae(model.config)
    assert rebuilt.config == model.config
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in model.parameters()]
    with pytest.raises(ValueError, match=r"unknown \['width'\]"):
        build_vae({**model.config, "width": 3})
    # a missing key is not filled in with the constructor's default (a different model)
    incomplete = {k: v for k, v in model.config.items() if k != "standardized_flow"}
    with pytest.raises(ValueError, match=r"missing \['standardized_flow'\]"):
        build_vae(incomplete)


def test_maxout_is_the_max_over_its_window():
    layer = vae.Maxout(5, 3, window=4)
    x = torch.randn(7, 5)
    pieces = x @ layer.linear.weight.T + layer.linear.bias
    expected = pieces.view(7, 3, 4).max(-1).values
    torch.testing.assert_close(layer(x), expected)


# ---------------------------------------------------------------- importance sampling


class LinearGaussianVAE(VAE):
    """p(z) = N(0, I), p(x|z) = N(W z + c, s^2 I): log p(x) = log N(x; c, W W^T + s^2 I) exactly,
    and the posterior is N(m(x), Sigma) with Sigma = (I + W^T W / s^2)^-1,
    m(x) = Sigma W^T (x - c) / s^2 (diagonal here: W has orthogonal columns).

    ``shift`` moves q's mean by shift * posterior std and ``inflate`` scales its std: q is then
    not the posterior. With ``flow_length`` > 0, fixed random per-example planar layers follow.
    """

    def __init__(self, W, c, noise_std, shift=0.0, inflate=1.0, flow_length=0, flow_scale=0.05):
        super().__init__(latent_dim=W.shape[1], flow_length=flow_length, hidden=2,
                         data_dim=W.shape[0])
        self.W, self.c, self.noise_std = W, c, noise_std
        precision = torch.eye(W.shape[1], dtype=W.dtype) + W.T @ W / noise_std**2
        self.post_cov = torch.linalg.inv(precision)
        self.shift, self.inflate, self.flow_scale = shift, inflate, flow_scale
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=W.dtype))  # a device/dtype anchor

    def encode(self, x):
        post_std = torch.sqrt(torch.diagonal(self.post_cov))
        mean = (x - self.c) @ self.W @ self.post_cov.T / self.noise_std**2
        mu = mean + self.shift * post_std
        log_sigma = torch.log(self.inflate * post_std).expand_as(mu)
        if self.flow_length == 0:
            return mu, log_sigma, None
        generator = torch.Generator().manual_seed(11)
        shape = (x.shape[0], self.flow_length, self.latent_dim)
        # |u| of the order of the smaller posterior std (0.12): a visible warp of q
        w = 3.0 * torch.randn(shape, generator=generator, dtype=x.dtype)
        u = self.flow_scale * torch.randn(shape, generator=generator, dtype=x.dtype)
        b = torch.randn(shape[:2], generator=generator, dtype=x.dtype)
        return mu, log_sigma, (w, u, b)

    def log_prob_x_given_z(self, x, z):
        mean = z @ self.W.T + self.c
        residual = (x - mean) / self.noise_std
        return (-0.5 * (residual**2).sum(-1) - x.shape[-1] * math.log(self.noise_std)
                - 0.5 * x.shape[-1] * math.log(2 * math.pi))

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.noise_std**2 * torch.eye(self.W.shape[0], dtype=x.dtype)
        return MultivariateNormal(self.c, cov).log_prob(x)


def linear_gaussian_problem(**kwargs):
    generator = torch.Generator().manual_seed(5)
    q, _ = torch.linalg.qr(torch.randn(6, 2, generator=generator, dtype=torch.float64))
    W = q * torch.tensor([2.0, 0.7], dtype=torch.float64)  # orthogonal columns, norms 2 and 0.7
    c = torch.randn(6, generator=generator, dtype=torch.float64)
    model = LinearGaussianVAE(W, c, noise_std=0.5, **kwargs)
    z = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    x = z @ W.T + c + 0.5 * torch.randn(4, 6, generator=generator, dtype=torch.float64)
    return model, x


def test_is_estimate_is_exact_when_q_is_the_posterior():
    model, x = linear_gaussian_problem()
    log_px, elbo = log_likelihood(model, x, num_samples=50, batch=3,
                                  generator=torch.Generator().manual_seed(0), return_elbo=True)
    exact = model.exact_log_px(x)
    # every importance weight equals p(x): zero variance, so the estimate is exact
    assert torch.allclose(log_px, exact, atol=1e-9)
    assert torch.allclose(elbo, exact, atol=1e-9)


@pytest.mark.parametrize("flow_length", [0, 4])
def test_is_estimate_matches_closed_form_with_an_imperfect_q(flow_length):
    model, x = linear_gaussian_problem(shift=0.5, inflate=1.3, flow_length=flow_length)
    exact = model.exact_log_px(x)
    log_px, elbo = log_likelihood(model, x, num_samples=5000, batch=2, chunk=700,
                                  generator=torch.Generator().manual_seed(1), return_elbo=True)
    assert (log_px - exact).abs().max() < 0.1
    gap = exact - elbo  # = KL(q || posterior) up to Monte-Carlo noise
    assert gap.min() > 0.05, "q was made imperfect on purpose: the ELBO must sit below log p(x)"
    assert (log_px - elbo).min() > 0  # IS >= ELBO (Jensen, on the same samples)


def test_is_estimate_with_one_sample_averages_to_the_elbo():
    model, x = linear_gaussian_problem(shift=0.8, inflate=0.7)
    x_many = x.repeat(500, 1)
    one_sample = log_likelihood(model, x_many, num_samples=1, batch=1000,
                                generator=torch.Generator().manual_seed(3)).view(500, 4).mean(0)
    elbo = bound(model, x, 20_000, generator=torch.Generator().manual_seed(4)).elbo
    assert (one_sample - elbo).abs().max() < 0.15
    assert (model.exact_log_px(x) - elbo).min() > 0.2


def test_log_likelihood_chunks_do_not_change_the_estimate_beyond_noise():
    model, x = linear_gaussian_problem(shift=0.3, inflate=1.2, flow_length=2)
    a = log_likelihood(model, x, 3000, chunk=3000, generator=torch.Generator().manual_seed(0))
    b = log_likelihood(model, x, 3000, chunk=13, generator=torch.Generator().manual_seed(0))
    assert a.shape == b.shape == (4,) and a.dtype == torch.float64
    assert (a - b).abs().max() < 0.05


# ---------------------------------------------------------------- exact densities on a grid


def test_log_q_at_inverts_the_flow_and_matches_the_sampled_log_q():
    model = tiny_vae(4, latent_dim=2, dtype=torch.float64)
    x = binary_batch(3, torch.float64)
    with torch.no_grad():
        z_k, log_q = model.posterior_sample(x, 5)
    torch.testing.assert_close(vae.log_q_at(model, x, z_k), log_q, atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match=r"\(G, 3, 2\)"):
        vae.log_q_at(model, x, z_k[:, :2])


def gaussian_kl_diagonal(mean_q, std_q, mean_p, std_p):
    return float((torch.log(std_p / std_q) + (std_q**2 + (mean_q - mean_p) ** 2) / (2 * std_p**2)
                  - 0.5).sum())


def test_grid_posterior_matches_closed_forms_of_the_linear_gaussian_model():
    model, x = linear_gaussian_problem(shift=0.7, inflate=1.4)
    model = model.double()
    grids = vae.grid_posterior(model, x[:2], resolution=201)
    exact = model.exact_log_px(x[:2])
    post_std = torch.sqrt(torch.diagonal(model.post_cov))
    mu, log_sigma, _ = model.encode(x[:2])
    for i, grid in enumerate(grids):
        assert grid.log_q.shape == grid.log_posterior.shape == (201, 201)
        assert abs(grid.log_px - float(exact[i])) < 1e-3
        assert abs(grid.q_mass - 1.0) < 1e-3
        post_mean = mu[i] - 0.7 * post_std
        expected = gaussian_kl_diagonal(mu[i], log_sigma[i].exp(), post_mean, post_std)
        assert expected > 0.5
        assert abs(grid.kl - expected) < 1e-3
        # row = z2, column = z1: the posterior's maximum sits at its mean
        row, col = divmod(int(grid.log_posterior.argmax()), 201)
        z1 = grid.extent[0] + col * (grid.extent[1] - grid.extent[0]) / 200
        z2 = grid.extent[2] + row * (grid.extent[3] - grid.extent[2]) / 200
        assert abs(z1 - float(post_mean[0])) < 0.05 and abs(z2 - float(post_mean[1])) < 0.05


def test_grid_kl_of_a_flow_posterior_matches_log_px_minus_elbo():
    model, x = linear_gaussian_problem(shift=0.4, inflate=1.2, flow_length=3)
    model = model.double()
    grid = vae.grid_posterior(model, x[:1], resolution=161, coarse_resolution=61)[0]
    with torch.no_grad():
        elbo = bound(model, x[:1], 20_000, generator=torch.Generator().manual_seed(0)).elbo
    assert abs(grid.q_mass - 1.0) < 1e-3
    assert abs(grid.kl - float(model.exact_log_px(x[:1]) - elbo)) < 0.03
    with pytest.raises(ValueError, match="2-D latent"):
        vae.grid_posterior(tiny_vae(0, latent_dim=3), torch.zeros(1, DATA_DIM))


def test_standardized_flow_equals_a_planar_flow_on_z0_with_rescaled_parameters():
    """The docstring's claim: layers (w, u_hat, b) on eps, then mu + sigma * (.), equal layers
    (w / sigma, sigma * u_hat, b - (w / sigma).mu) on z_0 = mu + sigma * eps (same w.u_hat)."""
    from nfutils.flows import planar_flow

    torch.manual_seed(0)
    model = VAE(latent_dim=3, flow_length=5, hidden=16, data_dim=DATA_DIM).double()
    x = binary_batch(4, torch.float64)
    with torch.no_grad():
        mu, log_sigma, (w, u, b) = model.encode(x)
        z_k, log_q = model.posterior_sample(x, 6, torch.Generator().manual_seed(1))
        eps = torch.randn(6, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        sigma = log_sigma.exp().unsqueeze(1)  # (B, 1, D)
        u_hat = constrain_u(w, u)
        w_z, u_z = w / sigma, sigma * u_hat
        b_z = b - (w_z * mu.unsqueeze(1)).sum(-1)
        torch.testing.assert_close((w_z * u_z).sum(-1), (w * u_hat).sum(-1))
        z_paper, log_det = planar_flow(mu + log_sigma.exp() * eps, w_z, u_z, b_z, constrain=False)
    torch.testing.assert_close(z_paper, z_k)
    log_q_paper = (-0.5 * (eps * eps).sum(-1) - log_sigma.sum(-1) - 1.5 * math.log(2 * math.pi)
                   - log_det)
    torch.testing.assert_close(log_q_paper, log_q)


@pytest.mark.parametrize("standardized", [False, True])
def test_flow_layers_start_at_the_identity(standardized):
    """A new model's K layers are the identity for every x: z_K = z_0 and sum log|det| = 0,
    so q_K = q_0 (checked against the flow-free Gaussian with the same noise)."""
    torch.manual_seed(0)
    model = VAE(latent_dim=5, flow_length=12, hidden=16, standardized_flow=standardized)
    x = torch.bernoulli(torch.full((7, 784), 0.3))
    mu, log_sigma, (w, u, b) = model.encode(x)
    u_hat = constrain_u(w, u)
    assert float(u_hat.detach().abs().max()) < 1e-6
    z_k, log_q = model.posterior_sample(x, 3, generator=torch.Generator().manual_seed(1))
    eps = torch.randn((3,) + tuple(mu.shape), generator=torch.Generator().manual_seed(1))
    z_0 = mu + torch.exp(log_sigma) * eps
    log_q0 = (torch.distributions.Normal(mu, torch.exp(log_sigma)).log_prob(z_0)).sum(-1)
    torch.testing.assert_close(z_k, z_0, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_q, log_q0, atol=1e-4, rtol=0)


def test_identity_planar_params_give_zero_u_hat_and_unit_norm_w():
    flat = vae.identity_planar_params(40, 80, generator=torch.Generator().manual_seed(0))
    w, u, b = vae.split_planar_params(flat, 40, 80)
    assert float(constrain_u(w, u).abs().max()) < 1e-6
    assert float(b.abs().max()) == 0.0
    assert 0.7 < float(w.norm(dim=-1).mean()) < 1.3
