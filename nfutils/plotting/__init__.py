"""Figures of the series: pure functions that draw on given axes or return a Figure.

Every function here only draws: it takes arrays (NumPy or torch) or a model and returns what
it drew, never reads globals, never calls ``plt.show``. Widgets (``nfutils.widgets``) wrap
these functions, and tests call them directly. Functions that return a whole figure build a
``matplotlib.figure.Figure`` without pyplot, so a widget that redraws a hundred times leaks
nothing; the notebook displays it (IPython renders a Figure inline) or saves it.

One module per idea; every public name is also importable from here (``plotting.X``):

* ``common``: arrays, the square box, densities on a grid (``density_on_grid``,
  ``histogram2d``), the one density image (``plot_density``), the one contour overlay
  (``plot_contours``), the KL training curve (``plot_kl_curve``), the paper's Figure 4
  (``plot_bound_against_flow_length``);
* ``flows2d`` (2-D flows): ``plot_potential``, samples after each layer
  (``layer_samples_figure``), one planar layer (``plot_planar_layer``), the paper's Figure 3
  (``figure3_grid``, ``plot_kl_against_length``);
* ``amortized`` (conditional flows): q(z | c) against p(z | c) (``conditional_densities``,
  ``conditional_pair_figure``, ``conditional_grid``, ``conditional_animation``) and the
  amortization gap (``plot_amortization_gap``);
* ``latent_plane`` (a VAE with a 2-D latent): latent codes, the decoded manifold, true
  posterior against q (``posterior_comparison_figure``), learning curves, the gap split;
* ``images`` (a VAE's images): image grids, reconstructions.
"""

from __future__ import annotations

from . import amortized, common, flows2d, images, latent_plane
from .amortized import *  # noqa: F403
from .common import *  # noqa: F403
from .flows2d import *  # noqa: F403
from .images import *  # noqa: F403
from .latent_plane import *  # noqa: F403

__all__ = [*common.__all__, *flows2d.__all__, *amortized.__all__, *latent_plane.__all__,
           *images.__all__]
