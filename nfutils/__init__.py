"""nfutils: the shared library of the notebook series "Variational Inference with Normalizing
Flows" (Rezende & Mohamed, ICML 2015, arXiv:1505.05770).

Modules, one concept each:

* ``flows`` (a package: the base distribution and ``NormalizingFlow``, planar, radial and NICE's
  coupling layers, the fast planar path behind one switch), ``potentials`` (the 2-D energies of
  Table 1), ``kl`` (Monte Carlo KL divergences with standard errors);
* ``training`` (the one training loop and its ``History``; ``fit_flow`` for Part 1),
  ``checkpoints`` (atomic save, checked load);
* ``amortized`` (a network that maps a condition to a whole planar flow, Part 2);
* ``vae`` (the VAE with a flow posterior, Parts 3-4), ``vae_training`` (``fit_vae``, saving and
  loading VAEs), ``local_posteriors`` (per-image flow posteriors against a frozen decoder),
  ``inference_gaps`` (the approximation / amortization split of a 2-D VAE's bound);
* ``experiments`` (the runs of Parts 3 and 4 that notebooks and command lines share),
  ``plotting`` and ``widgets`` (figures and the sliders that wrap them), ``data`` (MNIST),
  ``runtime`` (device, seeds, quick mode), ``exercises`` (the notebooks' check helpers).
"""

from . import (amortized, checkpoints, data, flows, inference_gaps, kl, local_posteriors,
               potentials, training, vae, vae_training)
from .runtime import device, quick_mode, seed_everything, set_threads

__version__ = "0.1.0"

__all__ = ["amortized", "checkpoints", "data", "flows", "inference_gaps", "kl", "local_posteriors",
           "potentials", "training", "vae", "vae_training", "device", "quick_mode",
           "seed_everything", "set_threads"]
