"""nfutils.bounds.evaluate_per_image: the bound and the importance-sampled log p(x) per image,
checked against the model's log-weights drawn by hand from the documented random streams."""

import torch

from nfutils import bounds, vae


def tiny_model_and_images():
    torch.manual_seed(0)
    model = vae.VAE(latent_dim=3, flow_length=2, hidden=16, data_dim=784)
    images = (torch.rand(12, 784, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    return model, images


def test_evaluate_per_image_matches_a_plain_computation():
    model, images = tiny_model_and_images()
    seed = 3
    values = bounds.evaluate_per_image(model, images, elbo_samples=4,
                                       estimates={"few": (6, 12), "many": (50, 7)},
                                       seed=seed, batch=5)
    assert list(values) == ["reconstruction", "kl", "few", "many"]
    assert [v.numel() for v in values.values()] == [12, 12, 12, 7]
    assert all(v.dtype == torch.float64 for v in values.values())
    with torch.no_grad():
        # the bound: stream seed * 10 + 0, drawn batch after batch (5, 5, 2 images)
        stream = torch.Generator().manual_seed(seed * 10)
        reconstruction, kl = [], []
        for start in (0, 5, 10):
            log_px_z, log_pz, log_q = model.log_weights(images[start:start + 5], 4, stream)
            reconstruction.append(log_px_z.mean(0))
            kl.append((log_q - log_pz).mean(0))
        torch.testing.assert_close(values["reconstruction"], torch.cat(reconstruction).double())
        torch.testing.assert_close(values["kl"], torch.cat(kl).double())
        # each estimate: the log-mean-exp of its weights, stream seed * 10 + 1, 2, ...
        for index, (name, (num_samples, num_images)) in enumerate(
                {"few": (6, 12), "many": (50, 7)}.items(), start=1):
            log_px_z, log_pz, log_q = model.log_weights(
                images[:num_images], num_samples, torch.Generator().manual_seed(seed * 10 + index))
            log_w = (log_px_z + log_pz - log_q).double()
            log_mean_exp = log_w.exp().mean(0).log()  # weights near e^-550: fine in float64
            assert torch.isfinite(log_mean_exp).all()
            torch.testing.assert_close(values[name], log_mean_exp)
    # importance sampling with more samples lies above the bound on average (S = 1 is the ELBO)
    elbo = values["reconstruction"] - values["kl"]
    assert float(values["many"].mean()) > float(elbo[:7].mean())


def test_evaluate_per_image_is_reproducible_and_paired_by_the_seed():
    model, images = tiny_model_and_images()
    estimates = {"log_px": (5, 12)}
    first = bounds.evaluate_per_image(model, images, 2, estimates, seed=0)
    again = bounds.evaluate_per_image(model, images, 2, estimates, seed=0)
    other = bounds.evaluate_per_image(model, images, 2, estimates, seed=1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["log_px"], other["log_px"])
