"""Worked solutions of Part 1's exercises (notebooks/01_planar_flows_2d.ipynb).

Run: ``python solutions/01_planar_flows_2d.py``; every line printed starts with "right".
"""

from __future__ import annotations

import torch

from nfutils import flows, training
from nfutils.exercises import check_critical_t, check_fit, check_radial_log_det


# 1. The radial log-det (Eq. 14). f(z) = z + beta h(r) (z - z0), h = 1 / (alpha + r), r = |z - z0|.
# The Jacobian (1 + beta h) I + beta h'(r) (z - z0)(z - z0)^T / r has the eigenvalue 1 + beta h on
# the D - 1 directions orthogonal to z - z0, and 1 + beta h + beta h'(r) r along it, so
#   log|det| = (D - 1) log|1 + beta h| + log|1 + beta h + beta h' r|,  h' = -1 / (alpha + r)^2.
def my_radial_log_det(z, z0, alpha, beta):
    """z: (n, D), z0: (D,), alpha, beta: scalars -> log|det df/dz| of shape (n,)."""
    dim = z.shape[-1]
    r = (z - z0).norm(dim=-1)
    h = 1 / (alpha + r)
    h_prime = -h * h
    return (dim - 1) * torch.log(torch.abs(1 + beta * h)) + torch.log(torch.abs(1 + beta * h + beta * h_prime * r))


# 2. Where invertibility breaks. Along w the layer's slope is 1 + w^T u (1 - tanh^2(w^T z + b)),
# smallest where tanh = 0: 1 + w^T u. With u = t (1, 1): w^T u = 3t, so t* = -1/3 (App. A.1).
t_star = -1 / 3


# 3. A potential of your own: a banana, a Gaussian bent along z_2 = z_1^2 / 4 - 1. Normalizable on
# [-6, 6]^2 means exp(-U) is negligible near the border: z_1 has standard deviation 1, so the bend
# stays inside (the notebook's hint, with z_2 = z_1^2 / 2 and z_1 of scale 1.5, reaches past z_2 = 6).
def my_U(z):
    return 0.5 * ((z[..., 1] - 0.25 * z[..., 0] ** 2 + 1) / 0.4) ** 2 + 0.5 * z[..., 0] ** 2


def my_model(seed: int = 0, num_steps: int = 3000):
    torch.manual_seed(seed)
    model = flows.make_flow("planar", 2, 16)
    training.fit_flow(model, my_U, num_steps=num_steps, num_samples=500, lr=5e-3,
                      generator=torch.Generator().manual_seed(seed))
    return model


if __name__ == "__main__":
    check_radial_log_det(my_radial_log_det)
    check_critical_t(t_star)
    check_fit(my_model(), my_U)
