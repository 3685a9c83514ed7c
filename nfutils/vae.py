"""A variational auto-encoder whose posterior is a planar flow (Rezende & Mohamed 2015, Sec. 4.2, 6.2).

The model:

* prior p(z) = N(0, I) in D dimensions (D = 2 to see the latent plane, 40 as in the paper's
  MNIST models);
* decoder p(x|z): an MLP D -> 400 -> 400 -> 784 giving the logits of 784 independent
  Bernoulli pixels;
* encoder q(z|x): an MLP 784 -> 400 -> 400 emitting the mean and log standard deviation of
  q_0(z_0|x) = N(mu(x), diag sigma(x)^2) **and** the K (2D + 1) parameters (w, u, b) of K planar
  layers for this very x (the flow is amortized per data point, as in the paper: a flow whose
  parameters are shared by all x gains little). z_K = f_K o ... o f_1(z_0), and by Eq. (13)

      log q_K(z_K|x) = log q_0(z_0|x) - sum_k log |det df_k/dz_{k-1}|.

  K = 0 is the plain VAE.

The bound of Eq. (20), the importance-sampled log-likelihood and the exact log q_K(z|x) are in
``bounds`` (and importable from here: ``vae.bound``, ``vae.log_likelihood``, ``vae.log_q_at``);
the grid posterior of a 2-D latent is in ``posterior_grid`` (``vae.grid_posterior``).

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
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bounds import bound, log_likelihood, log_q_at  # noqa: F401  (as the notebooks name them)
from . import gaussian_flow
from .flows import gaussian_log_prob, planar_param_count, split_planar_params
from .posterior_grid import GridPosterior, grid_posterior  # noqa: F401  (as the notebooks name them)

__all__ = ["Maxout", "VAE", "build_vae", "CONFIG_KEYS", "ACTIVATIONS", "identity_planar_params",
           "DEFAULT_ACTIVATION"]


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
        latent_dim: D (2: a latent plane to look at; 40: the paper's MNIST models).
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

    def __init__(self, latent_dim: int = 2, flow_length: int = 0, hidden: int = 400,
                 num_hidden_layers: int = 2, activation: str = DEFAULT_ACTIVATION,
                 maxout_window: int = 4, data_dim: int = 784, standardized_flow: bool = True):
        super().__init__()
        if latent_dim < 1 or flow_length < 0 or hidden < 1 or num_hidden_layers < 1 or data_dim < 1:
            raise ValueError(
                "need latent_dim >= 1, flow_length >= 0, hidden >= 1, num_hidden_layers >= 1, "
                f"data_dim >= 1; got {latent_dim}, {flow_length}, {hidden}, "
                f"{num_hidden_layers}, {data_dim}")
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
            if flow_length > 0 else None)
        self.decoder = nn.Sequential(
            _mlp([latent_dim] + trunk, activation, maxout_window), nn.Linear(hidden, data_dim))
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
                f"received {shape}")

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

    def posterior_sample(self, x: Tensor, num_samples: int = 1,
                         generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw z_K ~ q_K(.|x) by the reparameterization trick, with log q_K(z_K|x) (Eq. 13).

        Paper's order (``standardized_flow=False``): z_0 = mu + sigma * eps, z_K = flow(z_0).
        Default (``standardized_flow=True``): z_K = mu + sigma * flow(eps), the same family (see
        the class docstring). Either way
        log q_K(z_K|x) = log N(eps; 0, I) - sum_j log sigma_j - sum_k log|det_k|.

        Args:
            x: (B, data_dim). num_samples: S. generator: random numbers of eps.

        Returns:
            (z_k (S, B, D), log_q (S, B)).
        """
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        mu, log_sigma, flow_params = self.encode(x)
        eps = torch.randn((num_samples,) + tuple(mu.shape), generator=generator,
                          device=mu.device, dtype=mu.dtype)
        return gaussian_flow.sample(mu, log_sigma, flow_params, eps, self.standardized_flow)

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
