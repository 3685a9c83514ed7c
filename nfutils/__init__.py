"""nfutils: the shared library of the notebook series "Variational Inference with Normalizing
Flows" (Rezende & Mohamed, ICML 2015, arXiv:1505.05770).

Modules, one concept each: ``flows`` (planar, radial and NICE's coupling flows, free energy),
``potentials`` (the 2-D targets of Table 1), ``data`` (MNIST), ``runtime`` (device, seeds, quick
mode), ``vae`` (the VAE with a flow posterior, Parts 3-4), ``training`` (fit loops, checkpoints), ``amortized``
(a network that maps a condition to a whole planar flow, Part 2), ``local_posteriors``
(per-image flow posteriors against a frozen decoder), ``inference_gaps`` (the approximation /
amortization split of a 2-D VAE's bound, Part 3).
"""

from . import amortized, data, flows, inference_gaps, local_posteriors, potentials, training, vae
from .runtime import device, quick_mode, seed_everything, set_threads

__version__ = "0.1.0"

__all__ = ["amortized", "data", "flows", "inference_gaps", "local_posteriors", "potentials",
           "training", "vae", "device", "quick_mode", "seed_everything", "set_threads"]
