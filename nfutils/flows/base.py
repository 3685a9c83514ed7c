"""What every flow of the series shares: the Gaussian base density, the change of variables
(Eq. 13), the layer-by-layer inversion, and the free energy that training minimizes (Eq. 15).
No flow is named here: each stack inverts itself (its ``inverse`` undoes its layers, last to
first, with ``invert_stack``), and ``factory.make_flow`` picks a stack by name.

A flow pushes samples of a simple base density q_0 through invertible maps f_1, ..., f_K; the
density of z_K = f_K o ... o f_1(z_0) follows from the change of variables (Eq. 13):

    log q_K(z_K) = log q_0(z_0) - sum_k log |det d f_k / d z_{k-1}|.

Shapes follow one convention everywhere: a point is a tensor ``z`` of shape ``(..., D)``, a
density value or a log-det has shape ``(...)``. The layers themselves live in
``planar_layer.py`` (Eq. 10-12; stacked in ``planar.py``), ``radial.py`` (Eq. 14) and
``coupling.py`` (NICE).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "gaussian_log_prob",
    "invert_stack",
    "NormalizingFlow",
    "free_energy",
    "annealed_beta",
]

LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- checks


def _check_count(value: int, name: str, minimum: int, meaning: str) -> int:
    """``value`` as an int, or a clear error: an integer (not a bool, not a float such as 2.0)
    of at least ``minimum``; ``meaning`` says what it counts, e.g. "the flow length K"."""
    expected = f"{name} ({meaning}) must be an integer >= {minimum}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{expected}; got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{expected}; got {value!r}")
    return int(value)


def _check_point(z: Tensor, name: str = "z", dim: int | None = None) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (float32 or float64); got "
                        f"{z.dtype}: convert it first, e.g. {name}.float()")
    if z.dim() < 1:
        raise ValueError(f"{name} must have shape (..., D) with D >= 1; received a scalar")
    if dim is not None and z.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape (..., {dim}) (last dimension D = {dim}); "
            f"received shape {tuple(z.shape)}"
        )


def _check_finite(**tensors: Tensor) -> None:
    for name, tensor in tensors.items():
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{name} contains NaN or infinite values (shape {tuple(tensor.shape)}); "
                "check the inputs or lower the learning rate"
            )


def _check_vector_param(param: Tensor, name: str, dim: int) -> None:
    _check_point(param, name)
    if param.shape[-1] != dim:
        raise ValueError(
            f"{name} must have shape (..., {dim}) to match z's last dimension D = {dim}; "
            f"received shape {tuple(param.shape)}"
        )


def _check_broadcast(z: Tensor, **params: Tensor) -> None:
    """Leading dimensions of the parameters must broadcast against z.shape[:-1]."""
    batch_shape = z.shape[:-1]
    for name, param in params.items():
        lead = param.shape[:-1] if name in ("w", "u", "z0") else param.shape
        try:
            torch.broadcast_shapes(batch_shape, lead)
        except RuntimeError:
            suffix = " + (D,)" if name in ("w", "u", "z0") else ""
            raise ValueError(
                f"{name} of shape {tuple(param.shape)} does not broadcast against z of shape "
                f"{tuple(z.shape)}: expected leading shape broadcastable to "
                f"{tuple(batch_shape)}{suffix}"
            ) from None


# --------------------------------------------------------------------------- base density


def gaussian_log_prob(eps: Tensor, log_sigma: Tensor | None = None) -> Tensor:
    """log N(z; mu, diag(sigma^2)) at z = mu + sigma * eps, from the standardized eps:

        log N(z; mu, diag(sigma^2)) = -1/2 ||eps||^2 - sum_j log sigma_j - D/2 log(2 pi),

    the Gaussian's log-density after the change of variables z = mu + sigma eps (whose
    log-det is sum_j log sigma_j). Every Gaussian q_0 and prior of the series goes through
    this one function.

    Args:
        eps: standardized points (z - mu) / sigma, shape (..., D).
        log_sigma: log standard deviations, shape (..., D), broadcast against eps (for
            instance (D,) for one Gaussian, or (B, 1, D) against eps (B, n, D)); None for the
            standard normal N(0, I).

    Returns:
        log-density, shape (...).
    """
    log_q = -0.5 * (eps * eps).sum(-1) - 0.5 * eps.shape[-1] * LOG_2PI
    if log_sigma is None:
        return log_q
    return log_q - log_sigma.sum(-1)


# --------------------------------------------------------------------------- inversion


def invert_stack(z_k: Tensor, inverse_step: Callable[[Tensor, int], tuple[Tensor, Tensor]],
                 flow_length: int) -> tuple[Tensor, Tensor]:
    """Undo K layers, last to first: z_{k-1} = f_k^{-1}(z_k) for k = K, ..., 1.

    Used to evaluate log q_K at points that were not sampled (Eq. 13 read backwards):
    log q_K(z_K) = log q_0(z_0) - sum_k log|det df_k/dz_{k-1}|, each log-det taken at the
    recovered z_{k-1}.

    Args:
        z_k: points after the K-th layer, shape (..., D).
        inverse_step: ``inverse_step(z, k)`` -> (f_{k+1}^{-1}(z), log|det df_{k+1}/dz| at that
            preimage), for the 0-based layer index k; shapes (..., D) and (...).
        flow_length: K.

    Returns:
        (z_0, sum_k log|det df_k/dz_{k-1}|), shapes (..., D) and (...).
    """
    z = z_k
    sum_log_det = z.new_zeros(z.shape[:-1])
    for k in reversed(range(flow_length)):
        z, log_det = inverse_step(z, k)
        sum_log_det = sum_log_det + log_det
    return z, sum_log_det


# --------------------------------------------------------------------------- the flow


class NormalizingFlow(nn.Module):
    """A learnable diagonal Gaussian q_0 = N(mu, diag(sigma^2)) followed by a flow stack.

    ``rsample(n)`` draws z_0 = mu + sigma eps by the reparameterization trick, pushes it through
    the stack and returns z_K with log q_K(z_K) = log q_0(z_0) - sum_k log|det_k| (Eq. 13).

    Args:
        dim: D.
        flow: a ``PlanarFlow``, ``RadialFlow`` or ``NICEFlow`` (any module mapping
            z -> (z, sum_log_det)); ``None`` gives the plain Gaussian (K = 0).
    """

    def __init__(self, dim: int, flow: nn.Module | None = None):
        super().__init__()
        dim = _check_count(dim, "dim", 1, "the dimension D")
        flow_dim = getattr(flow, "dim", dim)
        if flow_dim != dim:
            raise ValueError(
                f"the flow acts on D = {flow_dim} dimensions but the base density has "
                f"dim = {dim}; expected a flow built with dim = {dim}"
            )
        self.dim = dim
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_sigma = nn.Parameter(torch.zeros(dim))
        self.flow = flow

    @property
    def flow_length(self) -> int:
        """K, the number of layers of the stack (0 for the plain Gaussian)."""
        return 0 if self.flow is None else int(getattr(self.flow, "flow_length", 0))

    def base_log_prob(self, z_0: Tensor) -> Tensor:
        """log N(z_0; mu, diag(sigma^2)), shape (...)."""
        eps = (z_0 - self.mu) * torch.exp(-self.log_sigma)
        return gaussian_log_prob(eps, self.log_sigma)

    def _base_sample(self, num_samples: int, generator: torch.Generator | None):
        """z_0 = mu + sigma eps, eps ~ N(0, I), and log q_0(z_0); shapes (n, D), (n,)."""
        num_samples = _check_count(num_samples, "num_samples", 1, "the number of points")
        eps = torch.randn(num_samples, self.dim, generator=generator,
                          device=self.mu.device, dtype=self.mu.dtype)
        z_0 = torch.addcmul(self.mu, eps, torch.exp(self.log_sigma))
        return z_0, gaussian_log_prob(eps, self.log_sigma)

    def rsample(self, num_samples: int, generator: torch.Generator | None = None
                ) -> tuple[Tensor, Tensor]:
        """Draw (z_K (n, D), log q_K(z_K) (n,)), differentiable in all parameters (Eq. 13)."""
        z_0, log_q0 = self._base_sample(num_samples, generator)
        if self.flow is None:
            return z_0, log_q0
        z_k, sum_log_det = self.flow(z_0)
        return z_k, log_q0 - sum_log_det

    def sample_layers(self, num_samples: int, generator: torch.Generator | None = None
                      ) -> list[Tensor]:
        """[z_0, ..., z_K], each (n, D), for figures (no gradient)."""
        with torch.no_grad():
            z_0, _ = self._base_sample(num_samples, generator)
            if self.flow is None:
                return [z_0]
            return self.flow.layers(z_0)

    def log_prob(self, z_k: Tensor) -> Tensor:
        """Exact log q_K(z_K) at arbitrary points by inverting the stack layer by layer:
        log q_K(z_K) = log q_0(f^{-1}(z_K)) - sum_k log|det_k| (Eq. 13), with the stack's
        ``inverse`` (``invert_stack``)."""
        _check_point(z_k, "z_k", self.dim)
        if self.flow is None:
            return self.base_log_prob(z_k)
        if not hasattr(self.flow, "inverse"):
            raise ValueError(f"{type(self.flow).__name__} has no inverse; cannot evaluate log q")
        z_0, sum_log_det = self.flow.inverse(z_k)
        return self.base_log_prob(z_0) - sum_log_det


# --------------------------------------------------------------------------- objective


def free_energy(log_q: Tensor, energy_values: Tensor, beta: float = 1.0) -> Tensor:
    """Monte-Carlo free energy, Eq. (15): F = E_q[log q_K(z_K) + beta U(z_K)].

    For a target p(z) = exp(-U(z)) / Z, F = KL(q_K || p) - log Z when beta = 1, so
    KL = F + log Z >= 0 (see ``potentials.log_partition``).

    Args:
        log_q: log q_K(z_K) of the samples, shape (n,).
        energy_values: the energy U(z_K) of the samples, shape (n,).
        beta: inverse temperature (annealing; ``annealed_beta``).

    Returns:
        scalar tensor: mean(log_q + beta U).
    """
    if log_q.shape != energy_values.shape:
        raise ValueError(
            f"log_q and energy_values must have the same shape (n,); received "
            f"{tuple(log_q.shape)} and {tuple(energy_values.shape)}"
        )
    return torch.add(log_q, energy_values, alpha=beta).mean()  # log_q + beta U in one call


def annealed_beta(step: int, start: float = 0.01, num_steps: int = 10_000) -> float:
    """The paper's annealing schedule (Sec. 6.2): beta_t = min(1, 0.01 + t / 10_000)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return min(1.0, start + step / num_steps)

