"""Where and how the notebooks run: device, seeds, threads, quick mode."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["device", "seed_everything", "quick_mode", "set_threads"]


def device() -> torch.device:
    """CUDA when available, else the CPU. Code in nfutils never assumes either."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a ``torch.Generator`` seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def quick_mode(quick: bool = False) -> bool:
    """True when the ``parameters`` cell says ``quick = True`` or the environment has
    ``NF_QUICK=1`` (CI sets it): notebooks then shrink their budgets to run in seconds."""
    env = os.environ.get("NF_QUICK", "").strip().lower()
    return bool(quick) or env in ("1", "true", "yes", "on")


def set_threads(num_threads: int | None) -> int:
    """Set torch's intra-op threads (None leaves the default); return the number in use.

    The 2-D flows are tiny tensors whose run time is per-operation overhead;
    there one thread is as fast as two (see benchmarks/), and it leaves a core free.
    """
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()
