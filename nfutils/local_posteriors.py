"""Per-image flow posteriors against a frozen decoder: the bound as a function of K alone.

A VAE's bound has two gaps to log p(x) (Cremer, Li & Duvenaud, 2018): the family of q cannot
match the true posterior (the *approximation* gap), and the encoder does not find the best
member of the family for each x (the *amortization* gap). Training a whole VAE for each K also
changes the decoder, and so log p(x) itself. Here the decoder is held fixed and, for each test
image separately, the posterior's parameters are free variables: the base Gaussian
(mu, log sigma) and the K planar layers (w_k, u_k, b_k), optimized directly to maximize the
bound of Eq. (20)

    ELBO(x) = E_{z_0 ~ N(mu, sigma^2)} [ log p(x|z_K) + log p(z_K) - log q_0(z_0)
                                         + sum_k log|det df_k/dz_{k-1}| ].

log p(x) does not depend on K, so any change of the ELBO with K is a change of the gap
KL(q_K || p(z|x)) = log p(x) - ELBO(x): the cleanest test of the paper's claim that longer
flows approximate the posterior better (Sec. 6.2).

Every image's parameters get their own Adam state, so fitting B images in one batch is the same
as B separate fits (Adam is elementwise), only faster.

Two orders of the base Gaussian and the flow give the same family of densities (see ``vae.VAE``):
the paper's z_K = f_K o ... o f_1(mu + sigma * eps) (the default here) and the standardized
z_K = mu + sigma * f_K o ... o f_1(eps) (``standardized=True``, the default order of ``vae.VAE``).
With the standardized order a fit can start exactly at an encoder's q_K(.|x)
(``flow_start="encoder"``), so it can only improve on the encoder (``nfutils.inference_gaps``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from . import gaussian_flow
from .flows import split_planar_params
from .flows.base import _check_count
from .training import History, check_positive, make_optimizer, run_steps, warmup_cosine
from .vae import VAE, identity_planar_params

__all__ = ["LocalFlowPosterior", "fit_local_posteriors", "local_elbo", "local_log_likelihood"]


class LocalFlowPosterior(nn.Module):
    """q_K(z|x_i) for B images at once: N(mu_i, diag sigma_i^2) followed by K planar layers
    with parameters of their own for each image.

    Args:
        mu, log_sigma: (B, D) starting values of the base Gaussian (e.g. an encoder's output).
        flow_length: K (0: a diagonal Gaussian per image).
        generator: random numbers of the starting w_k (the layers start at the identity,
            u_hat_k = 0, see ``vae.identity_planar_params``).
        standardized: the layers act on eps, z_K = mu + sigma * f(eps), instead of the paper's
            z_K = f(mu + sigma * eps) (the same family of densities, see ``vae.VAE``).
        flow_params: optional starting (w, u, b) of shapes (B, K, D), (B, K, D), (B, K) (u
            before App. A.1's constraint, as ``vae.VAE.encode`` returns them) instead of the
            identity.
    """

    def __init__(self, mu: Tensor, log_sigma: Tensor, flow_length: int,
                 generator: torch.Generator | None = None, standardized: bool = False,
                 flow_params: tuple[Tensor, Tensor, Tensor] | None = None):
        super().__init__()
        if mu.dim() != 2 or log_sigma.shape != mu.shape:
            raise ValueError(f"mu and log_sigma must both have shape (B, D); received "
                             f"{tuple(mu.shape)} and {tuple(log_sigma.shape)}")
        flow_length = _check_count(flow_length, "flow_length", 0, "the flow length K")
        num_images, dim = mu.shape
        self.flow_length = flow_length
        self.standardized = bool(standardized)
        self.mu = nn.Parameter(mu.detach().clone())
        self.log_sigma = nn.Parameter(log_sigma.detach().clone())
        dtype, device = mu.dtype, mu.device
        if flow_params is not None:
            w, u, b = (t.detach().clone().to(device, dtype) for t in flow_params)
            expected = ((num_images, flow_length, dim),) * 2 + ((num_images, flow_length),)
            if (tuple(w.shape), tuple(u.shape), tuple(b.shape)) != expected:
                raise ValueError(f"flow_params must have shapes {expected}; received "
                                 f"{tuple(w.shape)}, {tuple(u.shape)}, {tuple(b.shape)}")
        else:
            flat = torch.stack([identity_planar_params(dim, flow_length, generator=generator)
                                for _ in range(num_images)]).to(device, dtype)
            w, u, b = (t.clone(memory_format=torch.contiguous_format)
                       for t in split_planar_params(flat, dim, flow_length))
        self.w = nn.Parameter(w)  # (B, K, D)
        self.u = nn.Parameter(u)  # (B, K, D), before App. A.1
        self.b = nn.Parameter(b)  # (B, K)

    def rsample(self, num_samples: int, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
        """z_K ~ q_K(.|x_i) by reparameterization, with log q_K(z_K|x_i) (Eq. 13).

        Returns:
            (z_k (S, B, D), log_q (S, B)).
        """
        eps = torch.randn((num_samples,) + tuple(self.mu.shape), generator=generator,
                          device=self.mu.device, dtype=self.mu.dtype)
        flow_params = (self.w, self.u, self.b) if self.flow_length > 0 else None
        return gaussian_flow.sample(self.mu, self.log_sigma, flow_params, eps, self.standardized)


def _log_weights(decoder_model: VAE, q: LocalFlowPosterior, x: Tensor, num_samples: int,
                 generator: torch.Generator | None) -> Tensor:
    """log p(x, z_K) - log q_K(z_K|x) for S samples per image, (S, B)."""
    z_k, log_q = q.rsample(num_samples, generator)
    return decoder_model.log_prob_x_given_z(x, z_k) + decoder_model.log_prior(z_k) - log_q


def _check_fit_arguments(decoder_model: VAE, flow_length: int, num_steps: int,
                         num_samples: int, standardized: bool, flow_start: str,
                         average_fraction: float) -> None:
    """fit_local_posteriors' arguments, with what was expected and received."""
    check_positive(num_steps=num_steps, num_samples=num_samples)
    if not 0.0 <= average_fraction < 1.0:
        raise ValueError(f"average_fraction must be in [0, 1), got {average_fraction}")
    if flow_start not in ("identity", "encoder"):
        raise ValueError(f'flow_start must be "identity" or "encoder", got {flow_start!r}')
    if flow_start == "encoder" and flow_length > 0 and (
            decoder_model.flow_length != flow_length
            or bool(decoder_model.standardized_flow) != bool(standardized)):
        raise ValueError(
            f'flow_start="encoder" needs the model\'s K and order: the model has K = '
            f"{decoder_model.flow_length}, standardized_flow = {decoder_model.standardized_flow}; "
            f"asked for K = {flow_length}, standardized = {standardized}")


def _iterate_average(module: nn.Module, first_step: int
                     ) -> tuple[list[Tensor], Callable[[int, Tensor, float | None], None]]:
    """The running mean of ``module``'s parameters after each step >= ``first_step``: the
    averages (updated in place) and the ``after_step`` of ``training.run_steps`` that updates
    them, mean_n = mean_{n-1} + (theta_n - mean_{n-1}) / n."""
    averages = [p.detach().clone() for p in module.parameters()]

    def update(step: int, loss: Tensor, grad_norm: float | None) -> None:
        if step < first_step:
            return
        count = step - first_step + 1
        with torch.no_grad():
            for average, parameter in zip(averages, module.parameters()):
                if count == 1:
                    average.copy_(parameter)
                else:
                    average.add_(parameter - average, alpha=1.0 / count)

    return averages, update


def fit_local_posteriors(decoder_model: VAE, x: Tensor, flow_length: int, num_steps: int = 2000,
                         num_samples: int = 4, lr: float = 3e-3, warmup_steps: int = 100,
                         generator: torch.Generator | None = None, progress: bool = False,
                         standardized: bool = False, flow_start: str = "identity",
                         average_fraction: float = 0.0) -> LocalFlowPosterior:
    """Maximize each image's ELBO over its own posterior parameters, the decoder fixed.

    Starts from the model's encoder (its mu(x), sigma(x); the flow layers at the identity, or
    with ``flow_start="encoder"`` at the encoder's own flow for x, so that the fit starts at
    the encoder's q_K(.|x) exactly), then runs ``num_steps`` Adam steps on -sum_i ELBO(x_i)
    with ``num_samples`` samples per image and step, the learning rate warmed up over
    ``warmup_steps`` and decayed to 0 by a cosine (``training.warmup_cosine``), in the series'
    one loop (``training.run_steps``, which stops with ``NonFiniteLossError`` on a NaN bound).
    The decoder's weights are not changed.

    With ``average_fraction`` > 0 the returned parameters are the mean of the iterates of the
    last ``average_fraction`` of the steps (Polyak & Juditsky, 1992) instead of the last
    iterate: the stochastic gradients leave each iterate jittering around the optimum, and the
    mean of the iterates lies closer to it than a typical one. Any parameters give a valid
    bound, so the averaged posterior is as legitimate a q as the last iterate.

    Args:
        decoder_model: a trained ``VAE`` (its decoder and prior define p(x, z)).
        x: (B, data_dim) binary images.
        flow_length: K of the per-image flows.
        num_steps, num_samples, lr, warmup_steps: the optimization budget (use the same for
            every K to compare them).
        generator: random numbers of the samples and of the starting w_k.
        progress: show a tqdm bar.
        standardized: the order z_K = mu + sigma * f(eps) instead of the paper's
            f(mu + sigma * eps) (``LocalFlowPosterior``).
        flow_start: "identity" or "encoder" (needs a model with the same K and the same order).
        average_fraction: in [0, 1): the share of the final steps whose iterates are averaged
            (0: the last iterate).

    Returns:
        the fitted ``LocalFlowPosterior`` (B images).
    """
    _check_fit_arguments(decoder_model, flow_length, num_steps, num_samples, standardized,
                         flow_start, average_fraction)
    device = next(decoder_model.parameters()).device
    x = x.to(device)
    with torch.no_grad():
        mu, log_sigma, flow_params = decoder_model.encode(x)
    start = flow_params if flow_start == "encoder" and flow_length > 0 else None
    q = LocalFlowPosterior(mu, log_sigma, flow_length, generator=generator,
                           standardized=standardized, flow_params=start).to(device)
    optimizer = make_optimizer(q.parameters(), "adam", lr)
    warmup = min(warmup_steps, num_steps - 1)

    def step_loss(step: int) -> Tensor:
        return -_log_weights(decoder_model, q, x, num_samples, generator).mean(0).sum()

    first_averaged = num_steps - int(round(average_fraction * num_steps))
    averages, average_iterates = _iterate_average(q, first_averaged)
    trainable = [p for p in decoder_model.parameters() if p.requires_grad]
    for parameter in trainable:  # the decoder stays fixed (and no gradients are computed for it)
        parameter.requires_grad_(False)
    try:
        run_steps(q, optimizer, step_loss, History(), num_steps, lr,
                  lr_factor=lambda step: warmup_cosine(step, num_steps, warmup),
                  after_step=average_iterates if first_averaged < num_steps else None,
                  progress=progress, desc=f"K={flow_length}")
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
    if first_averaged < num_steps:
        with torch.no_grad():
            for average, parameter in zip(averages, q.parameters()):
                parameter.copy_(average)
    return q


@torch.no_grad()
def local_elbo(decoder_model: VAE, q: LocalFlowPosterior, x: Tensor, num_samples: int = 1000,
               chunk: int = 100, generator: torch.Generator | None = None) -> Tensor:
    """Each image's ELBO (Eq. 20) under q, averaged over ``num_samples`` samples, (B,) float64."""
    x = x.to(q.mu.device)
    total = torch.zeros(x.shape[0], dtype=torch.float64, device=q.mu.device)
    for start in range(0, num_samples, chunk):
        size = min(chunk, num_samples - start)
        total += _log_weights(decoder_model, q, x, size, generator).double().sum(0)
    return (total / num_samples).cpu()


@torch.no_grad()
def local_log_likelihood(decoder_model: VAE, q: LocalFlowPosterior, x: Tensor,
                         num_samples: int = 5000, chunk: int = 100,
                         generator: torch.Generator | None = None) -> Tensor:
    """Importance-sampled log p(x_i) with q as the proposal (Burda et al., 2016), (B,) float64:
    logsumexp_s [log p(x, z_s) - log q(z_s|x)] - log S."""
    x = x.to(q.mu.device)
    chunks = []
    for start in range(0, num_samples, chunk):
        size = min(chunk, num_samples - start)
        chunks.append(torch.logsumexp(
            _log_weights(decoder_model, q, x, size, generator).double(), 0))
    return (torch.logsumexp(torch.stack(chunks), 0) - math.log(num_samples)).cpu()
