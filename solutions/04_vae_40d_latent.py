"""Worked solutions of Part 4's exercises (notebooks/04_vae_40d_latent.ipynb).

Run: ``python solutions/04_vae_40d_latent.py``; every line printed starts with "right".
"""

from __future__ import annotations

import math

import torch

from nfutils.exercises import check_elbo_below_estimate, check_encoder_outputs, check_log_mean_exp

# 1. The encoder emits mu and log sigma of q_0 (2D numbers) and, for each of the K planar layers,
# w and u in R^D and the scalar b (2D + 1 numbers): 2 * 40 + 40 * 81 = 3320 for D = K = 40.
my_count = 2 * 40 + 40 * (2 * 40 + 1)


# 2. log (1/S) sum_s w_s = logsumexp(log w) - log S: logsumexp subtracts the largest log-weight
# before exponentiating, so weights near exp(-100) neither underflow nor overflow.
def my_log_mean_exp(log_w):
    return torch.logsumexp(log_w, 0) - math.log(log_w.numel())


# 3. log is concave, so by Jensen mean(log w) <= log mean(w): the ELBO never exceeds the
# importance-sampled estimate from the same samples (equal only when all weights are equal).
my_answer = True


if __name__ == "__main__":
    check_encoder_outputs(my_count, latent_dim=40, flow_length=40)
    check_log_mean_exp(my_log_mean_exp)
    check_elbo_below_estimate(my_answer)
