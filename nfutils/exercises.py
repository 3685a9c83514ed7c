"""Check helpers of the notebooks' exercises: each says right or wrong, and why.

Every ``check_...`` prints one line that starts with ``right``, ``wrong``, ``not yet`` or
``not attempted yet`` and returns ``True`` (right), ``False`` (wrong or not yet) or ``None``
(nothing given yet), so a notebook calls it for its message and a test for its value. A helper
reports an exception raised by the learner's code instead of crashing. The worked solutions are
kept apart, in the repository's ``solutions/`` folder (one file a notebook); ``tests/test_exercises.py``
runs each of them through its helper.

2-D flows: ``check_radial_log_det``, ``check_critical_t``, ``check_fit``.
Conditional flows: ``check_period_features``, ``check_amortized_kl``, ``check_two_lobes``.
A VAE with a 2-D latent: ``check_closed_form_kl``, ``check_posterior_kl``.
A VAE with a 40-D latent: ``check_encoder_outputs``, ``check_log_mean_exp``, ``check_elbo_below_estimate``.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import Tensor

from . import amortized, potentials
from .kl import conditional_kl, flow_kl, monte_carlo_kl

__all__ = ["check_radial_log_det", "check_critical_t", "check_fit", "check_period_features",
           "check_amortized_kl", "check_two_lobes", "check_closed_form_kl", "check_posterior_kl",
           "check_encoder_outputs", "check_log_mean_exp", "check_elbo_below_estimate"]


def _say(ok: bool, message: str, wrong: str = "wrong") -> bool:
    print(f"{'right' if ok else wrong}: {message}")
    return ok


def _not_attempted(what: str) -> None:
    print(f"not attempted yet: {what}")
    return None


# ---------------------------------------------------------------------------------- 2-D flows

def check_radial_log_det(log_det_fn: Callable | None) -> bool | None:
    """Exercise: the log-det of a radial layer (Eq. 14) in D dimensions.

    Compares ``log_det_fn(z, z0, alpha, beta)`` (z: (n, D), z0: (D,), alpha, beta: scalars ->
    (n,)) with the log|det| of autograd's Jacobian of f(z) = z + beta h(alpha, r)(z - z0),
    h = 1 / (alpha + r), in D = 2 and D = 5.
    """
    if log_det_fn is None:
        return _not_attempted("fill in my_radial_log_det")
    check = torch.Generator().manual_seed(7)
    for dim in (2, 5):
        z = torch.randn(20, dim, generator=check, dtype=torch.float64)
        z0 = torch.randn(dim, generator=check, dtype=torch.float64)
        alpha, beta = torch.tensor(0.7, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)
        try:
            mine = torch.as_tensor(log_det_fn(z, z0, alpha, beta), dtype=torch.float64)
        except NotImplementedError:
            return _not_attempted("fill in my_radial_log_det")
        except Exception as error:  # noqa: BLE001 - a check helper reports rather than crashes
            return _say(False, f"your function raised {error!r}")
        f = lambda x: x + beta / (alpha + (x - z0).norm()) * (x - z0)  # noqa: E731
        truth = torch.stack([torch.linalg.slogdet(torch.autograd.functional.jacobian(f, x))[1] for x in z])
        if mine.shape != truth.shape or not torch.allclose(mine, truth, atol=1e-8):
            return _say(False, f"(D = {dim}) expected e.g. {truth[:3].tolist()}, got {mine.reshape(-1)[:3].tolist()}")
    return _say(True, "your radial log-det matches autograd's Jacobian in D = 2 and D = 5")


def check_critical_t(t_star: float | None) -> bool | None:
    """Exercise: with w = (2, 1), b = 0 and u = t (1, 1), the t* below which the unconstrained
    planar layer (Eq. 10) stops being invertible (w^T u = -1, App. A.1)."""
    if t_star is None:
        return _not_attempted("set t_star")
    w, direction = torch.tensor([2.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    # independent of the formula: the slope along w, 1 + t w.d (1 - tanh^2), at its worst point (tanh = 0)
    slope_above = 1 + (t_star + 1e-3) * float(w @ direction)
    slope_below = 1 + (t_star - 1e-3) * float(w @ direction)
    if slope_above > 0 > slope_below:
        return _say(True, "w.u = -1 there")
    return _say(False, f"at t = {t_star} the slope of the map along w is {1 + t_star * float(w @ direction):.3f}, not 0")


def check_fit(model, energy: Callable[[Tensor], Tensor] | None, threshold: float = 0.1) -> bool | None:
    """Exercise: a flow fitted to an energy U of your own. Right if exp(-U) is normalizable on
    [-6, 6]^2 (negligible mass near the border) and KL(q || p) < ``threshold`` nats on 10^4 samples.

    Args:
        model: the fitted flow (``flows.NormalizingFlow``). energy: U, (n, 2) -> (n,).
    """
    if model is None or energy is None:
        return _not_attempted("define my_U and fit my_model")
    border_mass = math.exp(potentials.log_partition(energy, extent=6.0, resolution=600)) - math.exp(
        potentials.log_partition(energy, extent=5.5, resolution=550))
    log_Z = potentials.log_partition(energy, extent=6.0, resolution=1000)
    if border_mass > 1e-3 * math.exp(log_Z):
        return _say(False, "exp(-U) has noticeable mass near the border of [-6, 6]^2; make U grow faster")
    kl = float(flow_kl(model, energy, log_Z, 10_000, generator=torch.Generator().manual_seed(0))[0])
    return _say(kl < threshold, f"KL(q || p) = {kl:.3f} nats (target < {threshold})", wrong="not yet")


# ---------------------------------------------------------------------------------- conditional flows

def check_period_features(features_fn: Callable[[Tensor], Tensor] | None) -> bool | None:
    """Exercise: features of the angle with the family's true period pi.

    Right if ``features_fn(theta)`` (theta: (B,) -> (B, F)) is the same for theta and theta + pi
    and differs for theta + pi/4 (a different target).
    """
    if features_fn is None:
        return _not_attempted("define my_features")
    theta = torch.rand(200, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 2 * math.pi
    try:
        same = torch.as_tensor(features_fn(theta)), torch.as_tensor(features_fn(theta + math.pi))
        other = torch.as_tensor(features_fn(theta + math.pi / 4))
    except Exception as error:  # noqa: BLE001 - a check helper reports rather than crashes
        return _say(False, f"your function raised {error!r}")
    if same[0].dim() != 2 or same[0].shape[0] != 200:
        return _say(False, f"expected features of shape (200, F), got {tuple(same[0].shape)}")
    if not torch.allclose(same[0], same[1], atol=1e-9):
        return _say(False, "theta and theta + pi give the same target but different features")
    if torch.allclose(same[0], other, atol=1e-3):
        return _say(False, "theta and theta + pi/4 (different targets) get the same features")
    return _say(True, "period pi built in, and different targets stay distinguishable")


def check_amortized_kl(value: float | None, amortizer: amortized.AmortizedPlanarFlow, log_Z: float,
                       angle: float = 1.0) -> bool | None:
    """Exercise: KL(q_phi(.|theta) || p(.|theta)) at one angle, by quadrature of the exact density.

    Right if ``value`` is within 4 standard errors + 0.005 nats of a Monte-Carlo estimate with
    50,000 samples (an independent route to the same number).
    """
    if value is None:
        return _not_attempted("set my_kl")
    condition = torch.tensor([[angle]], dtype=torch.float64)
    kl, se = conditional_kl(copy.deepcopy(amortizer).double(), amortized.ring_energy, condition, log_Z,
                            50_000, generator=torch.Generator().manual_seed(11))
    ok = abs(float(value) - float(kl)) < 4 * float(se) + 5e-3
    return _say(ok, f"Monte Carlo says {float(kl):.4f} ± {2 * float(se):.4f} nats; you have {float(value):.4f}")


def check_two_lobes(model, log_Z: float) -> bool | None:
    """Exercise: a planar flow fitted to U1 without annealing that keeps both lobes.

    Right if KL(q || p) < 0.2 nats on 20,000 samples (one lobe alone costs log 2 = 0.693).
    """
    if model is None:
        return _not_attempted("fit my_flow")
    kl = float(flow_kl(model, potentials.U1, log_Z, 20_000, generator=torch.Generator().manual_seed(0))[0])
    return _say(kl < 0.2, f"KL = {kl:.3f} nats ({'both lobes' if kl < 0.2 else 'probably one lobe: log 2 = 0.693'})",
                wrong="not yet")


# ---------------------------------------------------------------------------------- VAE, 2-D latent

def check_closed_form_kl(value: float | None, model, image: Tensor) -> bool | None:
    """Exercise: KL(N(mu, sigma^2) || N(0, I)) of a K = 0 model at one image, in closed form.

    Args:
        value: your number. model: a ``nfutils.vae.VAE``. image: (1, data_dim).
    """
    if value is None:
        return _not_attempted("set my_kl")
    with torch.no_grad():
        mu, log_sigma, _ = model.encode(image)
    expected = float(0.5 * (mu**2 + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum())
    ok = abs(float(value) - expected) < 1e-3
    return _say(ok, f"you have {float(value):.4f}" + ("" if ok else " (hint: sum over the latent dimensions)"))


def check_posterior_kl(value: float | None, model, image: Tensor, log_px: float) -> bool | None:
    """Exercise: how far the flow posterior is from the true one, KL(q_K(.|x) || p(.|x)) in nats.

    KL = log p(x) - E_q[log p(x, z_K) - log q_K(z_K|x)] (Eq. 20 with Eq. 13's log q_K). Right if
    ``value`` is within 4 standard errors + 0.02 nats of an estimate with 20,000 samples.

    Args:
        value: your number. model: a ``nfutils.vae.VAE``. image: (1, data_dim).
        log_px: log p(x) of that image (e.g. by quadrature, ``vae.grid_posterior(...)[0].log_px``).
    """
    if value is None:
        return _not_attempted("set my_posterior_kl")
    with torch.no_grad():
        log_px_given_z, log_prior, log_q = model.log_weights(
            image, 20_000, generator=torch.Generator(device=image.device).manual_seed(5))
    # kl.py's estimator with U(z) = -log p(x, z) and log Z = log p(x)
    kl, se = (float(t) for t in monte_carlo_kl(log_q.reshape(-1).double(),
                                                -(log_px_given_z + log_prior).reshape(-1).double(),
                                                log_px))
    ok = abs(float(value) - kl) < 4 * se + 0.02
    return _say(ok, f"the reference says {kl:.3f} ± {2 * se:.3f} nats; you have {float(value):.3f}")


# ---------------------------------------------------------------------------------- VAE, 40-D latent

def check_encoder_outputs(n: int | None, latent_dim: int = 40, flow_length: int = 40) -> bool | None:
    """Exercise: how many numbers the encoder emits per image: 2D for q_0 plus K(2D + 1) for the
    planar layers (w, u in R^D and b)."""
    if n is None:
        return _not_attempted("set my_count")
    expected = 2 * latent_dim + flow_length * (2 * latent_dim + 1)
    return _say(n == expected, f"{n} numbers per image for D = {latent_dim}, K = {flow_length}" if n == expected
                else f"2D for q_0 plus K(2D+1) for the flow ({n} given)", wrong="not quite")


def check_log_mean_exp(fn: Callable[[Tensor], Tensor] | None) -> bool | None:
    """Exercise: log (1/S) sum_s exp(log_w_s) without overflow, fed log-weights near -100."""
    if fn is None:
        return _not_attempted("define my_log_mean_exp")
    log_w = torch.tensor([-100.0, -101.0, -99.5], dtype=torch.float64)
    expected = float(torch.logsumexp(log_w, 0) - math.log(3))
    try:
        value = float(fn(log_w))
    except Exception as error:  # noqa: BLE001 - a check helper reports rather than crashes
        return _say(False, f"your function raised {error!r}", wrong="not quite")
    ok = abs(value - expected) < 1e-9
    return _say(ok, f"{value:.6f}" if ok else f"expected {expected:.6f}, got {value:.6f}", wrong="not quite")


def check_elbo_below_estimate(answer: bool | None) -> bool | None:
    """Exercise: can the ELBO (mean of the log-weights) exceed log of the mean weight? Answer True
    if it never can."""
    if answer is None:
        return _not_attempted("set my_answer")
    # Jensen: mean(log w) <= log mean(w), with equality only when all weights are equal
    if answer is True:
        return _say(True, "by Jensen's inequality, mean log w <= log mean w")
    return _say(False, "think of Jensen's inequality for the concave log", wrong="not quite")
