"""nfutils.inference_gaps: log p(x) by batched quadrature and the approximation / amortization split,
each checked against an independent computation on a tiny 2-D model."""

import math

import pytest
import torch

from nfutils import inference_gaps as ig
from nfutils import local_posteriors as lp
from nfutils.vae import VAE, bound, grid_posterior

LOG_2PI = math.log(2.0 * math.pi)


def tiny_model(flow_length=0, standardized=True):
    torch.manual_seed(3)
    model = VAE(latent_dim=2, flow_length=flow_length, hidden=16, data_dim=20,
                standardized_flow=standardized)
    with torch.no_grad():  # a decoder with some structure, so the posteriors are not Gaussian
        for parameter in model.decoder.parameters():
            parameter.mul_(3.0)
        if model.encoder_flow is not None:  # an encoder flow away from the identity
            model.encoder_flow.weight.normal_(0, 0.3)
            model.encoder_flow.bias.normal_(0, 1.0)
    return model.eval()


def images(n=5):
    return torch.bernoulli(torch.full((n, 20), 0.4), generator=torch.Generator().manual_seed(0))


FAST = dict(num_steps=300, num_samples=8, lr=2e-2, warmup_steps=20, elbo_samples=4000,
            grid_resolution=301)


def test_grid_evidence_matches_grid_posterior_one_image_at_a_time():
    torch.set_num_threads(1)
    model, x = tiny_model(), images()
    evidence = ig.grid_evidence(model, x, resolution=301)
    reference = torch.tensor([g.log_px for g in grid_posterior(model, x, resolution=300)],
                             dtype=torch.float64)
    torch.testing.assert_close(evidence.log_px, reference, atol=1e-3, rtol=0)
    torch.testing.assert_close(evidence.log_px_half, evidence.log_px, atol=1e-3, rtol=0)
    assert float(evidence.edge_mass.max()) < 1e-6
    assert evidence.log_px.dtype == torch.float64 and evidence.log_px.shape == (5,)


def test_encoder_gap_is_the_quadrature_kl_of_the_encoder():
    """log p(x) - ELBO(q_enc) (Monte Carlo) = KL(q_enc || p(.|x)) by quadrature of log q_at."""
    torch.set_num_threads(1)
    model, x = tiny_model(flow_length=2), images(3)
    gaps = ig.inference_gaps(model, x, dict(FAST, num_steps=5))
    quadrature = torch.tensor([g.kl for g in grid_posterior(model, x, resolution=300)],
                              dtype=torch.float64)
    torch.testing.assert_close(gaps.inference, quadrature, atol=0.05, rtol=0)


def test_gaps_add_up_and_the_fit_improves_on_the_encoder():
    torch.set_num_threads(1)
    for flow_length in (0, 2):
        model, x = tiny_model(flow_length), images()
        gaps = ig.inference_gaps(model, x, FAST)
        torch.testing.assert_close(gaps.approximation + gaps.amortization,
                                   gaps.log_px - gaps.elbo_encoder, atol=1e-12, rtol=0)
        assert float(gaps.amortization.mean()) > 0.05
        assert bool((gaps.amortization > -0.05).all())
        assert bool((gaps.approximation > -0.05).all())  # a KL, up to Monte-Carlo error
        assert gaps.settings["quadrature_check_max_abs"] < 1e-3
        restored = ig.InferenceGaps.from_dict(gaps.as_dict())
        torch.testing.assert_close(restored.amortization, gaps.amortization)


def brute_force_gaussian_kl(model, x, resolution=301, extent=6.0):
    """min over (m, s) of KL(N(m, diag s^2) || p(.|x)) by quadrature on a grid, with L-BFGS."""
    axis = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    z = torch.stack([cols, rows], -1).reshape(-1, 2)
    cell = float(axis[1] - axis[0]) ** 2
    model = model.double()
    with torch.no_grad():
        log_joint = model.log_prob_x_given_z(x.double(), z.unsqueeze(1).expand(-1, x.shape[0], -1)) \
            + model.log_prior(z).unsqueeze(1)  # (G, B)
        log_post = log_joint - (torch.logsumexp(log_joint, 0) + math.log(cell))
        start = (torch.exp(log_post) * cell).unsqueeze(-1) * z.unsqueeze(1)
    mean = start.sum(0).clone().requires_grad_(True)
    log_s = torch.full_like(mean, -0.5).requires_grad_(True)
    optimizer = torch.optim.LBFGS([mean, log_s], max_iter=500, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-10, tolerance_change=1e-12)

    def kl():
        eps = (z.unsqueeze(1) - mean) / torch.exp(log_s)
        log_q = -0.5 * (eps ** 2).sum(-1) - log_s.sum(-1) - LOG_2PI
        return (torch.exp(log_q) * cell * (log_q - log_post)).sum(0)

    def closure():
        optimizer.zero_grad()
        loss = kl().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    model.float()
    return kl().detach()


def test_fitted_gaussian_is_the_brute_force_best_gaussian():
    torch.set_num_threads(1)
    model, x = tiny_model(), images(4)
    gaps = ig.inference_gaps(model, x, dict(FAST, num_steps=600))
    best = brute_force_gaussian_kl(model, x)
    torch.testing.assert_close(gaps.approximation, best, atol=0.03, rtol=0)
    assert bool((gaps.inference >= best - 0.03).all())  # no Gaussian beats the best one


def test_encoder_start_reproduces_the_encoders_q_exactly():
    for standardized in (True, False):
        model, x = tiny_model(flow_length=3, standardized=standardized), images(4)
        with torch.no_grad():
            mu, log_sigma, flow_params = model.encode(x)
            z_enc, log_q_enc = model.posterior_sample(x, 7, torch.Generator().manual_seed(1))
            q = lp.LocalFlowPosterior(mu, log_sigma, 3, standardized=standardized,
                                      flow_params=flow_params)
            z_loc, log_q_loc = q.rsample(7, torch.Generator().manual_seed(1))
        torch.testing.assert_close(z_loc, z_enc, atol=1e-6, rtol=0)
        torch.testing.assert_close(log_q_loc, log_q_enc, atol=1e-5, rtol=0)


def test_gap_summary():
    summary = ig.gap_summary(torch.tensor([1.0, 2.0, 3.0, 10.0]))
    assert summary["mean"] == 4.0 and summary["median"] == 2.5 and summary["count"] == 4
    assert math.isclose(summary["se"], float(torch.tensor([1.0, 2.0, 3.0, 10.0]).std()) / 2, rel_tol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="2-D latent"):
        ig.grid_evidence(VAE(latent_dim=3, hidden=8, data_dim=20), images(2))
    with pytest.raises(ValueError, match="odd"):
        ig.grid_evidence(tiny_model(), images(2), resolution=100)
    with pytest.raises(ValueError, match=r"\(B, 20\)"):
        ig.grid_evidence(tiny_model(), torch.zeros(3, 21))
    with pytest.raises(ValueError, match="unknown settings"):
        ig.inference_gaps(tiny_model(), images(2), {"steps": 3})
    with pytest.raises(ValueError, match="flow_start"):
        lp.fit_local_posteriors(tiny_model(flow_length=2), images(2), 4, flow_start="encoder")


def test_saved_gaps_load_back_only_for_the_checkpoints_they_were_computed_from(tmp_path):
    gaps = {k: ig.InferenceGaps(torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64),
                                            torch.randn(3, dtype=torch.float64), {"images": 3}, {"fit": 1.0})
            for k in (0, 16)}
    checkpoints = {k: tmp_path / f"vae2d_K{k}.pt" for k in gaps}
    for k, path in checkpoints.items():
        path.write_bytes(f"weights of K = {k}".encode())
    path = tmp_path / "gaps.json"
    assert ig.load_gaps(path, checkpoints) == {}
    ig.save_gaps(path, gaps, checkpoints, device="cpu", threads=1)
    loaded = ig.load_gaps(path, checkpoints)
    assert set(loaded) == {0, 16}
    for k in gaps:
        assert torch.equal(loaded[k].log_px, gaps[k].log_px) and torch.equal(loaded[k].elbo_best, gaps[k].elbo_best)
        assert loaded[k].settings == {"images": 3} and loaded[k].seconds == {"fit": 1.0}
    checkpoints[16].write_bytes(b"retrained")  # another checkpoint: its saved split no longer applies
    assert set(ig.load_gaps(path, checkpoints)) == {0}
