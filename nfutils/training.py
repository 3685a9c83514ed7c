"""Training loops of the series.

* ``fit_flow``: fit a ``NormalizingFlow`` to an unnormalized 2-D target exp(-U) by
  minimizing the free energy of Eq. (15) (Parts 1 and 2).

Every loop stops with ``NonFiniteLossError`` on a NaN or infinite loss instead of training on
it: the message says at which step and what to try.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .flows import NormalizingFlow, annealed_beta, free_energy

__all__ = ["NonFiniteLossError", "FitHistory", "fit_flow", "kl_estimate"]


class NonFiniteLossError(RuntimeError):
    """Raised when a loss is NaN or infinite; training stops rather than continue on it."""


def check_finite_loss(loss: Tensor, step: int) -> None:
    """Raise ``NonFiniteLossError`` when ``loss`` is not finite."""
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(
            f"loss became {float(loss)} at step {step}; training stopped (parameters are those "
            "of the last finite step). Lower the learning rate, anneal the target (anneal=True) "
            "or clip gradients."
        )


@dataclass
class FitHistory:
    """What ``fit_flow`` records: steps, free energies F (Eq. 15, at beta = 1) and, when log Z
    is known, KL(q || p) = F + log Z in nats; plus the wall time in seconds."""

    steps: list[int] = field(default_factory=list)
    free_energy: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    seconds: float = 0.0


def kl_estimate(model: NormalizingFlow, U: Callable[[Tensor], Tensor], log_Z: float,
                num_samples: int = 10_000, generator: torch.Generator | None = None) -> float:
    """Monte-Carlo KL(q_K || p) = E_q[log q_K + U] + log Z in nats (Eq. 15 plus quadrature)."""
    with torch.no_grad():
        z_k, log_q = model.rsample(num_samples, generator=generator)
        return float(free_energy(log_q, U(z_k))) + log_Z


def fit_flow(
    model: NormalizingFlow,
    U: Callable[[Tensor], Tensor],
    num_steps: int = 10_000,
    num_samples: int = 1000,
    lr: float = 2e-3,
    anneal: bool = False,
    log_Z: float | None = None,
    log_every: int = 100,
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> FitHistory:
    """Minimize the free energy F = E_q[log q_K(z_K) + beta_t U(z_K)] (Eq. 15) with Adam.

    Args:
        model: the flow q_K (its parameters are trained in place).
        U: the target's energy, (n, 2) -> (n,).
        num_steps: Adam steps. num_samples: samples per step. lr: learning rate.
        anneal: use the paper's beta_t = min(1, 0.01 + t / 10_000); otherwise beta = 1.
        log_Z: log of the target's normalizer (``potentials.log_partition``); when given, the
            history holds KL(q || p) in nats.
        log_every: record F (at beta = 1, on the step's own samples) every this many steps.
        progress: show a tqdm bar.
        generator: random numbers of the base samples (reproducible runs).

    Returns:
        ``FitHistory``.

    Raises:
        NonFiniteLossError: if the loss is not finite at some step.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = FitHistory()
    steps = range(num_steps)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="fit", leave=False)
    start = time.perf_counter()
    for step in steps:
        z_k, log_q = model.rsample(num_samples, generator=generator)
        energies = U(z_k)
        beta = annealed_beta(step) if anneal else 1.0
        loss = free_energy(log_q, energies, beta)
        check_finite_loss(loss, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % log_every == 0 or step == num_steps - 1:
            with torch.no_grad():
                value = float((log_q + energies).mean()) if beta != 1.0 else float(loss)
            history.steps.append(step)
            history.free_energy.append(value)
            if log_Z is not None:
                history.kl.append(value + log_Z)
    history.seconds = time.perf_counter() - start
    return history
