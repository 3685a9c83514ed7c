"""Where and how the notebooks run: device, seeds, threads, quick mode, CPU memory reuse."""

from __future__ import annotations

import ctypes
import os
import random

import numpy as np
import torch

__all__ = ["device", "seed_everything", "quick_mode", "set_threads", "keep_freed_memory"]


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

    The 2-D flows of Parts 1-2 are tiny tensors whose run time is per-operation overhead;
    there one thread is as fast as two (see benchmarks/), and it leaves a core free.
    """
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()


_MALLOC_TUNED: bool | None = None


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Let glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    A training step allocates and frees the same few buffers of 0.1-1 MB every time (the flow's
    stored activations, gradients). With glibc's default thresholds (blocks >= 128 KB are
    mmap-ed; more than a few hundred KB free at the top of the heap is handed back), each step
    maps fresh pages and pays one page fault per 4 KB: about 200-450 faults, 0.5-1 ms of a 4 ms
    step in ``benchmarks/flows.py``. ``mallopt`` with M_MMAP_THRESHOLD = 32 MB (the largest
    value glibc's own dynamic adjustment reaches) and M_TRIM_THRESHOLD = 128 MB keeps those
    pages mapped; the cost is that up to 128 MB of freed memory stays with the process.

    Called once, automatically, by ``flows.planar_flow``'s training path on the CPU; calling it
    again does nothing. Elsewhere than Linux with glibc it does nothing.

    Returns:
        True when the thresholds are set (now or earlier), False where malloc is not glibc's.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED is None:
        try:
            mallopt = ctypes.CDLL(None).mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            # M_MMAP_THRESHOLD = -3, M_TRIM_THRESHOLD = -1 (malloc.h)
            _MALLOC_TUNED = bool(mallopt(-3, int(mmap_threshold))) and bool(
                mallopt(-1, int(trim_threshold)))
        except (OSError, AttributeError, TypeError):
            _MALLOC_TUNED = False
    return _MALLOC_TUNED
