"""``make_flow``: a ``NormalizingFlow`` with a planar or radial stack, chosen by name.

The one place that knows the stacks by name; ``base`` (the Gaussian q_0, Eq. 13, Eq. 15) knows
none of them.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .base import NormalizingFlow, _check_count
from .planar import PlanarFlow
from .radial import RadialFlow

__all__ = ["make_flow"]

STACKS: dict[str, Callable[[int, int], nn.Module]] = {"planar": PlanarFlow, "radial": RadialFlow}


def make_flow(kind: str, dim: int, flow_length: int) -> NormalizingFlow:
    """A ``NormalizingFlow`` on R^D: a learnable Gaussian q_0, then K = ``flow_length`` planar
    (Eq. 10) or radial (Eq. 14) layers.

    Args:
        kind: "planar" or "radial".
        dim: D, an integer >= 1.
        flow_length: K, an integer >= 0 (K = 0 gives the plain Gaussian).

    Raises:
        ValueError: for an unknown kind or a negative count. TypeError: for a count that is
            not an integer (2.5, True).
    """
    if kind not in STACKS:
        raise ValueError(f"kind must be one of {sorted(STACKS)}, got {kind!r}")
    flow_length = _check_count(flow_length, "flow_length", 0,
                               "the flow length K; 0 gives the plain Gaussian")
    # the stack and NormalizingFlow check dim
    return NormalizingFlow(dim, STACKS[kind](dim, flow_length) if flow_length > 0 else None)
