"""Normalizing flows of Rezende & Mohamed (2015), Section 4, and NICE for comparison.

One idea a module, read in this order:

* ``base``: the Gaussian base density (``gaussian_log_prob``), ``NormalizingFlow`` (q_0 then a
  stack; log q_K by Eq. 13), the layer-by-layer inversion (``invert_stack``), the free energy
  of Eq. (15) and its annealing, ``make_flow``;
* ``planar``: planar layers, Eq. (10)-(12), with the invertibility condition of App. A.1;
  the reference implementation;
* ``radial``: radial layers, Eq. (14), App. A.2;
* ``coupling``: NICE's additive coupling layers (Dinh et al. 2014), the flow of Figure 3's
  comparison;
* ``fast_planar``: the speed code of the planar stack (custom autograd Functions), tested
  equal to ``planar`` and switched by ``fast_planar.use_fast_path``.

Every public name is available here too: ``nfutils.flows.PlanarFlow`` and so on.
"""

from . import base, coupling, fast_planar, planar, radial
from .base import NormalizingFlow, annealed_beta, free_energy, gaussian_log_prob, invert_stack, make_flow
from .coupling import (
    NICEFlow,
    ShiftMLP,
    additive_coupling,
    additive_coupling_inverse,
    make_nice_flow,
    shift_network,
)
from .planar import (
    SOFTPLUS_FLOOR,
    PlanarFlow,
    PlanarLayer,
    constrain_u,
    planar_flow,
    planar_flow_inverse,
    planar_inverse,
    planar_param_count,
    planar_transform,
    split_planar_params,
)
from .radial import RadialFlow, constrain_radial, radial_flow, radial_inverse, radial_transform

__all__ = [
    # base
    "gaussian_log_prob",
    "invert_stack",
    "NormalizingFlow",
    "free_energy",
    "annealed_beta",
    "make_flow",
    # planar
    "SOFTPLUS_FLOOR",
    "planar_transform",
    "constrain_u",
    "PlanarLayer",
    "planar_flow",
    "PlanarFlow",
    "planar_inverse",
    "planar_flow_inverse",
    "planar_param_count",
    "split_planar_params",
    # radial
    "constrain_radial",
    "radial_transform",
    "radial_inverse",
    "radial_flow",
    "RadialFlow",
    # coupling (NICE)
    "ShiftMLP",
    "shift_network",
    "additive_coupling",
    "additive_coupling_inverse",
    "NICEFlow",
    "make_nice_flow",
    # modules
    "base",
    "planar",
    "radial",
    "coupling",
    "fast_planar",
]
