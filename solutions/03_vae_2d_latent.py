"""Worked solutions of Part 3's exercises (notebooks/03_vae_2d_latent.ipynb) that the helpers of
``nfutils.exercises`` check: the closed-form KL (exercise 1) and the flow posterior's distance to
the true posterior (exercise 4, on flows).

Run: ``python solutions/03_vae_2d_latent.py``; every line printed starts with "right". It uses the
committed models (data/checkpoints/vae2d_K0.pt, vae2d_K16.pt) on a test digit, or on a random
binary image where MNIST is not downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from nfutils import vae, vae_training
from nfutils.exercises import check_closed_form_kl, check_posterior_kl

CHECKPOINTS = Path(__file__).resolve().parent.parent / "data" / "checkpoints"


# 1. KL(N(mu, sigma^2) || N(0, I)) = 1/2 sum_j (mu_j^2 + sigma_j^2 - 1 - 2 log sigma_j).
def my_closed_form_kl(model, image) -> float:
    with torch.no_grad():
        mu, log_sigma, _ = model.encode(image)
    return float(0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum())


# 4. On flows. KL(q_K(.|x) || p(.|x)) = log p(x) - ELBO: the ELBO is the mean of the log-weights
# log p(x | z_K) + log p(z_K) - log q_K(z_K | x) over z_K ~ q_K (log q_K by Eq. 13, which
# posterior_sample returns), and log p(x) comes from the grid (a 2-D latent can be integrated).
def my_posterior_kl(model, image, num_samples: int = 5000, seed: int = 0) -> tuple[float, float]:
    """(KL in nats, log p(x) by quadrature)."""
    log_px = vae.grid_posterior(model, image, resolution=300)[0].log_px
    with torch.no_grad():
        log_px_given_z, log_prior, log_q = model.log_weights(image, num_samples, torch.Generator().manual_seed(seed))
    elbo = float((log_px_given_z + log_prior - log_q).mean())
    return log_px - elbo, log_px


def first_image() -> torch.Tensor:
    try:
        from nfutils import data

        return data.binarized_test_set()[0][:1]
    except Exception:  # noqa: BLE001 - MNIST not downloaded: any binary image will do
        return torch.bernoulli(torch.full((1, 784), 0.2), generator=torch.Generator().manual_seed(0))


if __name__ == "__main__":
    image = first_image()
    model_k0, _ = vae_training.load_vae(CHECKPOINTS / "vae2d_K0.pt")
    model_k16, _ = vae_training.load_vae(CHECKPOINTS / "vae2d_K16.pt")
    check_closed_form_kl(my_closed_form_kl(model_k0, image), model_k0, image)
    kl, log_px = my_posterior_kl(model_k16, image)
    check_posterior_kl(kl, model_k16, image, log_px)
