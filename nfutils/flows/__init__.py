"""Normalizing flows of Rezende & Mohamed (2015), Section 4, and NICE for comparison.

One idea a module, read in this order:

* ``base``: the Gaussian base density (``gaussian_log_prob``), ``NormalizingFlow`` (q_0 then a
  stack; log q_K by Eq. 13), the layer-by-layer inversion (``invert_stack``), the free energy
  of Eq. (15) and its annealing; it names no flow: each stack inverts itself;
* ``planar_layer``: one planar layer, Eq. (10)-(12), the invertibility condition of App. A.1,
  and the layer's inverse (a scalar root find along w); the reference implementation;
* ``planar``: K planar layers stacked (``planar_flow``, ``PlanarFlow``) and their inverse;
* ``radial``: radial layers, Eq. (14), App. A.2;
* ``coupling``: NICE's additive coupling layers (Dinh et al. 2014), the flow of Figure 3's
  comparison;
* ``factory``: ``make_flow``, a ``NormalizingFlow`` with a planar or radial stack by name;
* ``fast_planar``: the speed code of the planar stack (custom autograd Functions), tested
  equal to ``planar`` and switched by ``fast_planar.use_fast_path``; it depends on
  ``planar``, never the other way round.

Every public name is available here too: ``nfutils.flows.PlanarFlow`` and so on.
"""

from . import base, coupling, factory, fast_planar, planar, planar_layer, radial
from .base import *  # noqa: F401,F403 - each module's __all__ is the public list
from .coupling import *  # noqa: F401,F403
from .factory import *  # noqa: F401,F403
from .planar import *  # noqa: F401,F403
from .planar_layer import *  # noqa: F401,F403
from .radial import *  # noqa: F401,F403

__all__ = [*base.__all__, *planar_layer.__all__, *planar.__all__, *radial.__all__,
           *coupling.__all__, *factory.__all__,
           "base", "planar_layer", "planar", "radial", "coupling", "factory", "fast_planar"]
