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
from .base import *  # noqa: F401,F403 - each module's __all__ is the public list
from .coupling import *  # noqa: F401,F403
from .planar import *  # noqa: F401,F403
from .radial import *  # noqa: F401,F403

__all__ = [*base.__all__, *planar.__all__, *radial.__all__, *coupling.__all__,
           "base", "planar", "radial", "coupling", "fast_planar"]
