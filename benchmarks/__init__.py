"""Benchmarks of the series (not part of nfutils; not run by the tests).

* ``python -m benchmarks.flows``: one Part 1 training step (planar flows on U1) of normflows,
  a textbook per-layer implementation and nfutils, timed side by side in one process.
* ``python -m benchmarks.vae``: one VAE training step (Parts 3-4), K = 0 against K = 80, and
  the importance-sampled log-likelihood.

Shared helpers: the machine description and the round-robin timer.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch

__all__ = ["machine_description", "round_robin", "median_ms", "load_average"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    """The 1-minute load average (other processes on a shared machine), as text."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def machine_description() -> str:
    """One line: CPU model, cores, torch version, device."""
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores (nproc), torch {torch.__version__}, "
        f"Python {platform.python_version()}, load average {load_average()} at start"
    )


def round_robin(steps: dict[str, Callable[[], None]], num_steps: int, warmup: int,
                block: int = 1) -> dict[str, dict[str, list[float]]]:
    """Time each callable ``num_steps`` times, interleaved: the implementations take turns,
    each turn ``block`` consecutive steps of one of them, and the starting implementation
    rotates every round, so that load from other processes and slow drifts hit all of them
    alike. With ``block`` > 1 the first step of a turn is not timed: it starts with the caches
    that another implementation filled, where a training loop runs its steps back to back.

    Two clocks per step: wall time (``time.perf_counter``, what a user waits) and the
    process's CPU time (``time.process_time``, all threads), which other processes on a shared
    machine inflate much less (they take turns on the cores, which stretches wall time only).

    Returns:
        name -> {"wall": seconds per step, "cpu": seconds per step} (warm-up excluded).
    """
    names = list(steps)
    times = {name: {"wall": [], "cpu": []} for name in names}
    timed_per_turn = max(block - 1, 1)
    warmup_rounds = -(-warmup // block)
    for round_ in range(warmup_rounds + -(-num_steps // timed_per_turn)):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            for index in range(block):
                cpu_start = time.process_time()
                start = time.perf_counter()
                steps[name]()
                elapsed = time.perf_counter() - start
                cpu = time.process_time() - cpu_start
                timed = round_ >= warmup_rounds and (index > 0 or block == 1)
                if timed and len(times[name]["cpu"]) < num_steps:
                    times[name]["wall"].append(elapsed)
                    times[name]["cpu"].append(cpu)
    return times


def median_ms(seconds: list[float]) -> float:
    return 1000.0 * statistics.median(seconds)
