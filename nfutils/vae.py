"""A variational auto-encoder whose posterior is a planar flow (Rezende & Mohamed 2015, Sec. 4.2, 6.2).

The model of Parts 3 and 4 of the series:

* prior p(z) = N(0, I) in D dimensions (D = 2 in Part 3, 40 in Part 4);
* decoder p(x|z): an MLP D -> 400 -> 400 -> 784 giving the logits of 784 independent
  Bernoulli pixels;
* encoder q(z|x): an MLP 784 -> 400 -> 400 emitting the mean and log standard deviation of
  q_0(z_0|x) = N(mu(x), diag sigma(x)^2) **and** the K (2D + 1) parameters (w, u, b) of K planar
  layers for this very x (the flow is amortized per data point, as in the paper: a flow whose
  parameters are shared by all x gains little). z_K = f_K o ... o f_1(z_0), and by Eq. (13)

      log q_K(z_K|x) = log q_0(z_0|x) - sum_k log |det df_k/dz_{k-1}|.

  K = 0 is the plain VAE.

The bound (negative free energy, Eq. 20), estimated with S samples z_0 ~ q_0(.|x) per x:

    -F(x) = E_q0[ log p(x|z_K) + log p(z_K) - log q_0(z_0|x) + sum_k log|det_k| ]
          = E[log p(x|z_K)]  -  E[log q_K(z_K|x) - log p(z_K)]
          = reconstruction   -  KL part (a Monte-Carlo estimate of KL(q_K(.|x) || p)).

During training the paper anneals the joint (Sec. 6.2): it minimizes
E[log q_K(z_K|x) - beta_t (log p(x|z_K) + log p(z_K))] with beta_t = min(1, 0.01 + t/10_000)
(``flows.annealed_beta``), so early on the posterior is pushed towards high entropy.

The log-likelihood is estimated by importance sampling with the flow posterior as proposal,

    log p(x) ~ log (1/S) sum_s p(x, z_s) / q_K(z_s|x),   z_s ~ q_K(.|x),

computed with logsumexp in chunks of samples so that S = 5000 fits in memory
(``log_likelihood``). It is a stochastic lower bound of log p(x) whose gap shrinks as S grows
(Burda et al., 2016); for S = 1 it is the ELBO.

Activation. The paper's DLGM used maxout units (window 4) in its 400-unit layers. A maxout
unit needs four affine maps (4x the weights of a layer, 4x its matrix arithmetic, and a
checkpoint four times larger). The default here is ``tanh``, chosen by a measurement on this
project's CPU (1 thread, 40-D latent, K = 0, batch 100, Adam 1e-3, the paper's annealing, equal
wall time of 90 s; test -ELBO on 2,000 binarized test images): tanh 164.8 nats (2,891 steps),
relu 204.9 (2,351), softplus 224.3 (2,211), maxout 225.4 (1,899), elu 236.6 (1,649). At equal
steps without annealing (4,000 steps, beta = 1) tanh and relu end level (107.4 and 106.9
nats): choosing tanh costs nothing at equal steps. Reproduce with
``scripts/compare_activations.py`` (``--seconds 90`` and ``--steps 4000 --no-anneal``); the
timings depend on the load of the shared machine. ``activation="maxout"`` gives the paper's
units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .flows import (
    gaussian_log_prob,
    planar_flow,
    planar_flow_inverse,
    planar_param_count,
    split_planar_params,
)

__all__ = [
    "Maxout",
    "VAE",
    "BoundTerms",
    "bound",
    "log_likelihood",
    "build_vae",
    "CONFIG_KEYS",
    "log_q_at",
    "GridPosterior",
    "grid_posterior",
    "ACTIVATIONS",
    "identity_planar_params",
    "DEFAULT_ACTIVATION",
]

LOG_2PI = math.log(2.0 * math.pi)

#: Activations of the deterministic layers ("maxout" is the paper's, window 4).
ACTIVATIONS = ("maxout", "relu", "elu", "softplus", "tanh")
DEFAULT_ACTIVATION = "tanh"


class Maxout(nn.Module):
    """Maxout layer (Goodfellow et al., 2013): each of ``out_features`` units is the maximum of
    ``window`` affine functions of the input, y_j = max_{i < window} (W_{j,i} x + c_{j,i}).

    Args:
        in_features, out_features: sizes. window: pieces per unit (4 in the paper's DLGM).
    """

    def __init__(self, in_features: int, out_features: int, window: int = 4):
        super().__init__()
        self.out_features = out_features
        self.window = window
        self.linear = nn.Linear(in_features, out_features * window)

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) -> (..., out)."""
        pieces = self.linear(x)
        return pieces.view(*pieces.shape[:-1], self.out_features, self.window).amax(-1)


def _mlp(sizes: list[int], activation: str, maxout_window: int) -> nn.Sequential:
    """Hidden layers sizes[0] -> sizes[1] -> ... -> sizes[-1], each followed by ``activation``."""
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        if activation == "maxout":
            layers.append(Maxout(fan_in, fan_out, maxout_window))
        else:
            layers.append(nn.Linear(fan_in, fan_out))
            layers.append({"relu": nn.ReLU, "elu": nn.ELU, "softplus": nn.Softplus,
                           "tanh": nn.Tanh}[activation]())
    return nn.Sequential(*layers)


#: The argument a at which App. A.1's m(a) = -1 + softplus(a) vanishes: a = log(e - 1).
IDENTITY_W_DOT_U = math.log(math.e - 1.0)


def identity_planar_params(latent_dim: int, flow_length: int,
                           generator: torch.Generator | None = None) -> Tensor:
    """Flat planar parameters (w, u, b) of K layers that are each the identity map.

    A planar layer f(z) = z + u_hat h(w.z + b) is the identity when u_hat = 0. With App. A.1,
    u_hat = u + [m(w.u) - w.u] w / ||w||^2, and u = a w / ||w||^2 with m(a) = 0, i.e.
    a = log(e - 1) = 0.541, gives w.u = a and so u_hat = u - a w / ||w||^2 = 0. The w_k are
    drawn with norm ~1 (entries N(0, 1/D)) so that the layers can bend q as soon as u_hat moves
    away from 0; b_k = 0. With the encoder's last flow layer set to zero weights and these
    biases, every layer starts at the identity for every x, so q_K = q_0 at the start of
    training whatever K. (With u = 0 instead, every layer has w.u_hat = m(0) = -0.31, a
    contraction, and 80 of them shrink q_0's volume by about 80 * 0.31 nats at the start.)

    Returns:
        (K (2D + 1),) laid out as ``split_planar_params`` reads it.
    """
    w = torch.randn(flow_length, latent_dim, generator=generator) / math.sqrt(latent_dim)
    u = IDENTITY_W_DOT_U * w / (w * w).sum(-1, keepdim=True)
    b = torch.zeros(flow_length)
    return torch.cat([w.reshape(-1), u.reshape(-1), b])


class VAE(nn.Module):
    """VAE with an amortized planar-flow posterior (paper Sec. 4.2, Fig. 2; Eq. 20).

    Args:
        latent_dim: D (2 in Part 3, 40 in Part 4).
        flow_length: K, the number of planar layers of q (0: the plain Gaussian VAE).
        hidden: units of each deterministic layer (the paper: 400).
        num_hidden_layers: deterministic layers in the encoder and in the decoder (2).
        activation: one of ``ACTIVATIONS``; "maxout" uses ``maxout_window`` pieces per unit.
        maxout_window: pieces per maxout unit (the paper: 4).
        data_dim: number of Bernoulli pixels (784 for MNIST).
        standardized_flow: apply the K layers to the standardized noise eps and then the
            affine map, z_K = mu + sigma * f_K o ... o f_1(eps), instead of the paper's
            z_K = f_K o ... o f_1(mu + sigma * eps). Both give the same family of densities: a
            planar layer (w, u, b) on eps equals one on z_0 = mu + sigma * eps with
            w' = w / sigma, u' = sigma * u, b' = b - w'.mu (and w'.u' = w.u, so App. A.1's
            constraint is unchanged). The standardized form is better conditioned: a posterior
            with sigma ~ 0.05 needs ||w'|| ~ 1 / sigma to bend q, which in the paper's form the
            network must output directly (2-D K = 16 models then learned ||w|| ~ 90, near-step
            layers, and trained worse than K = 0).

    Attributes:
        config: the constructor arguments as a plain dict (saved with checkpoints, so that
            ``build_vae(config)`` rebuilds the same architecture).
    """

    def __init__(
        self,
        latent_dim: int = 2,
        flow_length: int = 0,
        hidden: int = 400,
        num_hidden_layers: int = 2,
        activation: str = DEFAULT_ACTIVATION,
        maxout_window: int = 4,
        data_dim: int = 784,
        standardized_flow: bool = True,
    ):
        super().__init__()
        if latent_dim < 1 or flow_length < 0 or hidden < 1 or num_hidden_layers < 1 or data_dim < 1:
            raise ValueError(
                "need latent_dim >= 1, flow_length >= 0, hidden >= 1, num_hidden_layers >= 1, "
                f"data_dim >= 1; got {latent_dim}, {flow_length}, {hidden}, "
                f"{num_hidden_layers}, {data_dim}"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.config: dict[str, Any] = dict(
            latent_dim=int(latent_dim), flow_length=int(flow_length), hidden=int(hidden),
            num_hidden_layers=int(num_hidden_layers), activation=activation,
            maxout_window=int(maxout_window), data_dim=int(data_dim),
            standardized_flow=bool(standardized_flow),
        )
        self.standardized_flow = bool(standardized_flow)
        self.latent_dim = latent_dim
        self.flow_length = flow_length
        self.data_dim = data_dim
        trunk = [hidden] * num_hidden_layers
        self.encoder = _mlp([data_dim] + trunk, activation, maxout_window)
        self.encoder_gaussian = nn.Linear(hidden, 2 * latent_dim)  # (mu, log sigma)
        self.encoder_flow = (
            nn.Linear(hidden, planar_param_count(latent_dim, flow_length))
            if flow_length > 0 else None
        )
        self.decoder = nn.Sequential(
            _mlp([latent_dim] + trunk, activation, maxout_window), nn.Linear(hidden, data_dim)
        )
        with torch.no_grad():
            # start with a broad q_0 (sigma = 1), and flows that depend little on x at first
            self.encoder_gaussian.weight.mul_(0.1)
            self.encoder_gaussian.bias.zero_()
            if self.encoder_flow is not None:
                self.encoder_flow.weight.zero_()
                self.encoder_flow.bias.copy_(identity_planar_params(latent_dim, flow_length))

    # ----------------------------------------------------------------- encoder / decoder

    def _check_x(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[-1] != self.data_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"x must have shape (B, {self.data_dim}) (a batch of flattened images); "
                f"received {shape}"
            )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor, Tensor] | None]:
        """q(z|x)'s parameters.

        Args:
            x: (B, data_dim).

        Returns:
            (mu (B, D), log_sigma (B, D), flow_params): flow_params is (w, u, b) with shapes
            (B, K, D), (B, K, D), (B, K) (u unconstrained; ``planar_flow`` applies App. A.1),
            or None when K = 0.
        """
        self._check_x(x)
        features = self.encoder(x)
        mu, log_sigma = self.encoder_gaussian(features).chunk(2, dim=-1)
        if self.encoder_flow is None:
            return mu, log_sigma, None
        flat = self.encoder_flow(features)
        return mu, log_sigma, split_planar_params(flat, self.latent_dim, self.flow_length)

    def decode(self, z: Tensor) -> Tensor:
        """Bernoulli logits of p(x|z): z (..., D) -> (..., data_dim)."""
        return self.decoder(z)

    def log_prob_x_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x|z) = sum_i [x_i log pi_i + (1 - x_i) log(1 - pi_i)], pi = sigmoid(logits),
        computed as sum_i [x_i l_i - softplus(l_i)] with l = logits.

        Args:
            x: (B, data_dim), values in {0, 1} (or [0, 1]). z: (S, B, D).

        Returns:
            (S, B).
        """
        logits = self.decode(z)
        # log sigmoid(l) = l - softplus(l), log(1 - sigmoid(l)) = -softplus(l): the x-term is a
        # batched dot product, cheaper than an elementwise binary cross-entropy
        return torch.einsum("...bp,bp->...b", logits, x) - F.softplus(logits).sum(-1)

    @staticmethod
    def log_prior(z: Tensor) -> Tensor:
        """log N(z; 0, I), (..., D) -> (...)."""
        return gaussian_log_prob(z)

    # ----------------------------------------------------------------- posterior

    def posterior_sample(
        self,
        x: Tensor,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        params: tuple | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw z_K ~ q_K(.|x) by the reparameterization trick, with log q_K(z_K|x) (Eq. 13).

        Paper's order (``standardized_flow=False``): z_0 = mu + sigma * eps, z_K = flow(z_0).
        Default (``standardized_flow=True``): z_K = mu + sigma * flow(eps), the same family (see
        the class docstring). Either way
        log q_K(z_K|x) = log N(eps; 0, I) - sum_j log sigma_j - sum_k log|det_k|.

        Args:
            x: (B, data_dim). num_samples: S. generator: random numbers of eps.
            params: the output of ``encode(x)``, to avoid running the encoder again.

        Returns:
            (z_k (S, B, D), log_q (S, B)).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        mu, log_sigma, flow_params = self.encode(x) if params is None else params
        eps = torch.randn((num_samples,) + tuple(mu.shape), generator=generator,
                          device=mu.device, dtype=mu.dtype)
        sigma = torch.exp(log_sigma)
        log_q = gaussian_log_prob(eps, log_sigma)
        if flow_params is None:
            return mu + sigma * eps, log_q
        if self.standardized_flow:  # z_K = mu + sigma * flow(eps)
            eps_k, sum_log_det = planar_flow(eps, *flow_params)
            return mu + sigma * eps_k, log_q - sum_log_det
        z_k, sum_log_det = planar_flow(mu + sigma * eps, *flow_params)  # z_K = flow(mu + sigma eps)
        return z_k, log_q - sum_log_det

    def log_weights(self, x: Tensor, num_samples: int = 1,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Per-sample terms of the bound for z_K ~ q_K(.|x).

        Returns:
            (log_px_given_z, log_prior, log_q), each (S, B); the importance log-weight is
            log_px_given_z + log_prior - log_q.
        """
        z_k, log_q = self.posterior_sample(x, num_samples, generator)
        return self.log_prob_x_given_z(x, z_k), self.log_prior(z_k), log_q


#: The keys of ``VAE.config``: the constructor's arguments.
CONFIG_KEYS = ("latent_dim", "flow_length", "hidden", "num_hidden_layers", "activation",
               "maxout_window", "data_dim", "standardized_flow")


def build_vae(config: dict[str, Any]) -> VAE:
    """Rebuild a ``VAE`` from its ``config`` dict (as saved in a checkpoint).

    Every key of ``CONFIG_KEYS`` must be present: a missing ``standardized_flow`` filled in with
    the constructor's default would silently build a different model from the one saved.

    Raises:
        ValueError: on missing or unknown keys (names the expected ones).
    """
    missing, unknown = set(CONFIG_KEYS) - set(config), set(config) - set(CONFIG_KEYS)
    if missing or unknown:
        raise ValueError(f"a VAE config needs exactly the keys {list(CONFIG_KEYS)}; missing "
                         f"{sorted(missing)}, unknown {sorted(unknown)}")
    return VAE(**config)


# --------------------------------------------------------------------------- the bound


@dataclass
class BoundTerms:
    """The bound of Eq. (20) per example, in nats, averaged over S samples.

    Attributes:
        elbo: -F(x) = reconstruction - kl, (B,).
        reconstruction: E[log p(x|z_K)], (B,).
        kl: E[log q_K(z_K|x) - log p(z_K)], (B,) (a Monte-Carlo estimate of KL(q_K || p)).
        loss: the scalar to minimize, mean over the batch of
            E[log q_K - beta (log p(x|z_K) + log p(z_K))] (equal to -mean(elbo) at beta = 1).
    """

    elbo: Tensor
    reconstruction: Tensor
    kl: Tensor
    loss: Tensor


def bound(
    model: VAE,
    x: Tensor,
    num_samples: int = 1,
    beta: float = 1.0,
    generator: torch.Generator | None = None,
) -> BoundTerms:
    """The bound -F(x) of Eq. (20) with S samples per x, and the annealed training loss.

    -F(x) ~ (1/S) sum_s [log p(x|z_K^s) + log p(z_K^s) - log q_0(z_0^s|x) + sum_k log|det_k^s|]

    Args:
        model: a ``VAE`` (or any module with ``log_weights``).
        x: (B, data_dim) binary images.
        num_samples: S, samples z_0 ~ q_0(.|x) per x.
        beta: inverse temperature on log p(x|z_K) + log p(z_K) (Sec. 6.2; ``annealed_beta``).
        generator: random numbers of the samples.

    Returns:
        ``BoundTerms``; differentiable.
    """
    log_px_z, log_pz, log_q = model.log_weights(x, num_samples, generator)
    reconstruction = log_px_z.mean(0)
    kl = (log_q - log_pz).mean(0)
    elbo = reconstruction - kl
    if beta == 1.0:
        loss = -elbo.mean()
    else:
        loss = (log_q - beta * (log_px_z + log_pz)).mean()
    return BoundTerms(elbo=elbo, reconstruction=reconstruction, kl=kl, loss=loss)


# --------------------------------------------------------------------------- log-likelihood


@torch.no_grad()
def log_likelihood(
    model: VAE,
    x: Tensor,
    num_samples: int = 5000,
    batch: int = 100,
    chunk: int | None = None,
    generator: torch.Generator | None = None,
    return_elbo: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Importance-sampled log p(x) with the flow posterior as proposal (Burda et al., 2016).

    log p(x) ~ logsumexp_s [log p(x|z_s) + log p(z_s) - log q_K(z_s|x)] - log S,  z_s ~ q_K(.|x).

    The S samples are drawn in chunks of ``chunk`` samples; each chunk's logsumexp is kept and
    the chunks are combined with one more logsumexp, so memory grows with ``chunk * batch``,
    not with S.

    Args:
        model: a ``VAE`` (evaluated as is; put it in eval mode yourself if it has dropout).
        x: (N, data_dim) binary images, on the model's device or the CPU.
        num_samples: S (the paper: 200 for Table 2; 5000 for a tighter estimate).
        batch: examples per forward pass.
        chunk: samples per forward pass (default: as many as keep chunk * batch <= 20_000).
        generator: random numbers (reproducible estimates).
        return_elbo: also return the ELBO estimated from the same samples (the mean log-weight).

    Returns:
        log p(x) estimates, (N,) on the CPU (float64); with ``return_elbo``, (log_px, elbo).
    """
    if num_samples < 1 or batch < 1:
        raise ValueError(f"need num_samples >= 1 and batch >= 1; got {num_samples}, {batch}")
    if x.dim() != 2 or x.shape[-1] != model.data_dim:
        raise ValueError(
            f"x must have shape (N, {model.data_dim}) (a batch of flattened images); received "
            f"{tuple(x.shape)}"
        )
    if chunk is None:
        chunk = max(1, min(num_samples, 20_000 // batch))
    device = next(model.parameters()).device
    log_px_all, elbo_all = [], []
    for start in range(0, x.shape[0], batch):
        x_batch = x[start : start + batch].to(device)
        chunk_lse, chunk_sum = [], x_batch.new_zeros(x_batch.shape[0], dtype=torch.float64)
        remaining = num_samples
        while remaining > 0:
            size = min(chunk, remaining)
            log_px_z, log_pz, log_q = model.log_weights(x_batch, size, generator)
            log_w = (log_px_z + log_pz - log_q).double()  # (size, b)
            chunk_lse.append(torch.logsumexp(log_w, dim=0))
            chunk_sum += log_w.sum(0)
            remaining -= size
        log_px = torch.logsumexp(torch.stack(chunk_lse), dim=0) - math.log(num_samples)
        log_px_all.append(log_px.cpu())
        elbo_all.append((chunk_sum / num_samples).cpu())
    log_px = torch.cat(log_px_all)
    return (log_px, torch.cat(elbo_all)) if return_elbo else log_px


# --------------------------------------------------------------------------- exact densities


@torch.no_grad()
def log_q_at(model: VAE, x: Tensor, z_k: Tensor) -> Tensor:
    """Exact log q_K(z_K|x) at arbitrary points, by inverting the per-example flow.

    z_0 = f_1^{-1} o ... o f_K^{-1}(z_K) (``flows.planar_flow_inverse``, layer by layer), then
    log q_K(z_K|x) = log N(z_0; mu(x), sigma(x)^2) - sum_k log|det df_k/dz_{k-1}| (Eq. 13)
    (with ``standardized_flow`` the layers act on (z - mu) / sigma instead).

    Args:
        model: a ``VAE``. x: (B, data_dim). z_k: (G, B, D) points (G per example).

    Returns:
        (G, B).
    """
    mu, log_sigma, flow_params = model.encode(x)
    if z_k.dim() != 3 or z_k.shape[1:] != mu.shape:
        raise ValueError(
            f"z_k must have shape (G, {mu.shape[0]}, {mu.shape[1]}) (G points per example); "
            f"received {tuple(z_k.shape)}"
        )
    standardized = flow_params is not None and model.standardized_flow
    z = (z_k - mu) * torch.exp(-log_sigma) if standardized else z_k
    sum_log_det = z.new_zeros(z.shape[:-1])
    if flow_params is not None:  # (B, K, D), (B, K, D), (B, K) against z (G, B, D)
        z, sum_log_det = planar_flow_inverse(z, *flow_params)
    eps = z if standardized else (z - mu) * torch.exp(-log_sigma)
    return gaussian_log_prob(eps, log_sigma) - sum_log_det


@dataclass
class GridPosterior:
    """The true posterior and q on a fine grid of a 2-D latent plane, for one x.

    Densities are arrays (R, R) indexed [row = z2, column = z1] over ``extent`` =
    (z1_min, z1_max, z2_min, z2_max) (the convention of ``nfutils.plotting``).

    Attributes:
        extent: the square the grid covers.
        log_posterior: log p(z|x) = log p(x|z) + log p(z) - log p(x), (R, R).
        log_q: log q_K(z|x), (R, R).
        log_px: log p(x) by quadrature on the grid (exact up to grid error, 2-D only).
        kl: KL(q || p(.|x)) in nats, by quadrature: sum_i q_i (log q_i - log p_i) dA.
        q_mass: the mass of q inside the grid (close to 1 when the grid covers q; p(.|x) is
            normalized on the grid, so compare ``log_px`` with an importance-sampled estimate
            to check that the grid covers the posterior).
    """

    extent: tuple[float, float, float, float]
    log_posterior: Tensor
    log_q: Tensor
    log_px: float
    kl: float
    q_mass: float


def _grid(extent, resolution: int, dtype) -> tuple[Tensor, float]:
    z1 = torch.linspace(extent[0], extent[1], resolution, dtype=dtype)
    z2 = torch.linspace(extent[2], extent[3], resolution, dtype=dtype)
    rows, cols = torch.meshgrid(z2, z1, indexing="ij")
    points = torch.stack([cols, rows], dim=-1).reshape(-1, 2)  # row-major over (z2, z1)
    cell = float((z1[1] - z1[0]) * (z2[1] - z2[0]))
    return points, cell


@torch.no_grad()
def grid_posterior(
    model: VAE,
    x: Tensor,
    resolution: int = 200,
    extent: tuple[float, float, float, float] | None = None,
    coarse_extent: float = 6.0,
    coarse_resolution: int = 121,
    threshold: float = 1e-4,
    batch: int = 20_000,
) -> list[GridPosterior]:
    """True posterior p(z|x) ∝ p(x|z) p(z) and q_K(z|x) on a grid, with KL(q || p) in nats.

    For a 2-D latent the evidence is a 2-D integral, computed by quadrature:
    log p(x) = logsumexp_i [log p(x|z_i) + log p(z_i)] + log dA. Without ``extent`` the grid
    is fitted to each x: a coarse pass over [-coarse_extent, coarse_extent]^2 finds the cells
    where p(.|x) or q exceeds ``threshold`` times its maximum, and the fine grid covers their
    bounding box with a margin of 25%.

    Args:
        model: a ``VAE`` with latent_dim = 2. x: (B, data_dim).
        resolution: R, points per axis of the fine grid.
        extent: a fixed (z1_min, z1_max, z2_min, z2_max) for every x instead.
        batch: grid points per decoder call.

    Returns:
        one ``GridPosterior`` per row of x.
    """
    if model.latent_dim != 2:
        raise ValueError(f"grid_posterior needs a 2-D latent; the model has {model.latent_dim}")
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    results = []
    for i in range(x.shape[0]):
        x_i = x[i : i + 1].to(device)

        def log_densities(points: Tensor) -> tuple[Tensor, Tensor]:
            log_joint, log_q = [], []
            for start in range(0, points.shape[0], batch):
                z = points[start : start + batch].to(device).unsqueeze(1)  # (G, 1, 2)
                log_joint.append(model.log_prob_x_given_z(x_i, z)[:, 0] + model.log_prior(z)[:, 0])
                log_q.append(log_q_at(model, x_i, z)[:, 0])
            return torch.cat(log_joint).cpu(), torch.cat(log_q).cpu()

        if extent is None:
            box = (-coarse_extent, coarse_extent, -coarse_extent, coarse_extent)
            points, _ = _grid(box, coarse_resolution, dtype)
            log_joint, log_q = log_densities(points)
            keep = ((log_joint > log_joint.max() + math.log(threshold))
                    | (log_q > log_q.max() + math.log(threshold)))
            low, high = points[keep].min(0).values, points[keep].max(0).values
            step = 2 * coarse_extent / (coarse_resolution - 1)
            margin = 0.25 * (high - low) + 2 * step
            fine = (float(low[0] - margin[0]), float(high[0] + margin[0]),
                    float(low[1] - margin[1]), float(high[1] + margin[1]))
        else:
            fine = tuple(float(v) for v in extent)
        points, cell = _grid(fine, resolution, dtype)
        log_joint, log_q = log_densities(points)
        log_px = torch.logsumexp(log_joint.double(), 0) + math.log(cell)
        log_post = log_joint.double() - log_px
        log_q = log_q.double()
        q_cell = torch.exp(log_q) * cell
        kl = float((q_cell * (log_q - log_post)).sum())
        results.append(GridPosterior(
            extent=fine,
            log_posterior=log_post.reshape(resolution, resolution),
            log_q=log_q.reshape(resolution, resolution),
            log_px=float(log_px), kl=kl, q_mass=float(q_cell.sum()),
        ))
    return results
