"""Optimizers and learning-rate schedules of the training loop (``training.run_steps``).

``make_optimizer`` gives Adam (the fused kernel where the device has one) or the paper's
RMSprop with momentum (Sec. 6.2); ``warmup_cosine`` is the multiplier of the learning rate at
step t that the loop applies (a function of t alone, so that a resumed run follows it).
"""

from __future__ import annotations

import math

import torch

__all__ = ["make_optimizer", "warmup_cosine"]


def make_optimizer(params, name: str = "adam", lr: float = 1e-3,
                   momentum: float = 0.9) -> torch.optim.Optimizer:
    """Adam (fused kernel where the device supports it) or RMSprop with momentum.

    Fused Adam updates all parameters in one kernel instead of tensor by tensor, which saves a
    large share of a VAE step's time on the CPU (benchmarks/vae.py). The paper trained with
    RMSprop with momentum (Sec. 6.2); ``name="rmsprop"`` gives it.

    Args:
        params: parameters to optimize. name: "adam" or "rmsprop". lr: learning rate.
        momentum: RMSprop's momentum (ignored by Adam).
    """
    params = list(params)
    if name == "adam":
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # fused kernel not available here
            return torch.optim.Adam(params, lr=lr)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
    raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {name!r}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int = 0,
                  final_fraction: float = 0.0) -> float:
    """Learning-rate multiplier: a linear warm-up from ~0 to 1 over ``warmup_steps``, then a
    cosine decay to ``final_fraction`` f at ``total_steps``.

        m(t) = (t + 1) / T_w                                          for t < T_w,
        m(t) = f + (1 - f) (1 + cos(pi (t - T_w) / (T - T_w))) / 2    for T_w <= t < T,
        m(t) = f                                                      for t >= T.

    The warm-up keeps Adam's first updates small while its second-moment estimates are still
    noisy; the decay lets the last steps settle into a minimum instead of bouncing around it
    at a constant step size.

    Args:
        step: t, the global step about to be taken (from 0).
        total_steps: T, the step at which the multiplier reaches f.
        warmup_steps: T_w (0: no warm-up).
        final_fraction: f, in [0, 1].
    """
    if total_steps < 1 or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps < total_steps; got "
                         f"{total_steps} and {warmup_steps}")
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction must be in [0, 1], got {final_fraction}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return final_fraction
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
