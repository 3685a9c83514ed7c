"""nfutils: the shared building blocks of the notebook series "Variational Inference with
Normalizing Flows" (Rezende & Mohamed, ICML 2015, arXiv:1505.05770).

Modules, one concept each, in reading order:

* ``flows`` (a package): the base density and ``NormalizingFlow``, planar, radial and NICE's
  coupling layers, the free energy of Eq. (15), the fast planar path behind one switch;
* ``potentials``: the 2-D energies of Table 1; ``kl``: Monte Carlo KL with standard errors;
* ``training``: the one training loop (``run_steps``, resumable through a ``Checkpoint``), its
  ``History``, ``fit_flow``; ``optim``: optimizers and learning-rate schedules;
  ``checkpoints``: atomic save, checked load;
* ``conditions``: a family of 2-D targets and its condition features; ``amortized``: a network
  that maps a condition to a whole planar flow, and ``fit_amortized``;
* ``gaussian_flow``: a diagonal Gaussian then planar layers with per-example parameters, the
  posterior family of the models below (sampling by Eq. 13, exact density by inversion);
* ``vae``: the VAE with a flow posterior; ``bounds``: the bound of Eq. (20), the
  importance-sampled log-likelihood, exact log q; ``posterior_grid``: the true posterior of a
  2-D latent on a grid; ``vae_training``: ``fit_vae``, saving and loading VAEs;
  ``local_posteriors``: per-image flow posteriors against a frozen decoder; ``inference_gaps``:
  the approximation / amortization split of a 2-D VAE's bound;
* ``data``: MNIST, binarization, minibatches; ``plotting`` and ``widgets``: pure figure
  functions and the sliders that wrap them; ``runtime``: device, seeds, quick mode, threads;
  ``exercises``: the notebooks' check helpers; ``colab``: the Colab setup cell.

The public API the notebooks use:

* ``nfutils.device``, ``quick_mode``, ``seed_everything``, ``set_threads``, ``colab.setup``;
* ``flows.NormalizingFlow``, ``PlanarFlow``, ``constrain_u``, ``make_flow``,
  ``planar_transform``, ``annealed_beta``, ``flows.coupling``;
* ``potentials.POTENTIALS``, ``U1``, ``rotated_U1``, ``density_grid``, ``gaussian_energy``,
  ``log_partition``; ``kl.conditional_kl``;
* ``training.fit_flow``, ``warmup_cosine``;
* ``amortized.AmortizedPlanarFlow``, ``fit_amortized``, ``ring_energy``;
* ``vae.VAE``, ``bound``, ``log_likelihood``, ``grid_posterior``;
  ``bounds.evaluate_per_image``; ``vae_training.load_vae``;
  ``local_posteriors``; ``inference_gaps.gap_summary``, ``save_gaps``, ``load_gaps``;
  ``checkpoints.file_sha256``;
  ``data.binarized_test_set``;
* ``plotting.<name>`` for every figure (see ``nfutils.plotting``) and ``widgets.<name>``:
  ``planar_layer_explorer``, ``layer_slider``, ``theta_slider``, ``latent_slider``,
  ``flow_length_slider``;
* ``exercises.check_...`` (see ``nfutils.exercises``).
"""

from . import (amortized, bounds, checkpoints, conditions, data, flows, gaussian_flow,
               inference_gaps, kl, local_posteriors, optim, posterior_grid, potentials, training,
               vae, vae_training)
from .runtime import device, quick_mode, seed_everything, set_threads

__version__ = "0.1.0"

__all__ = ["amortized", "bounds", "checkpoints", "conditions", "data", "flows", "gaussian_flow",
           "inference_gaps", "kl", "local_posteriors", "optim", "posterior_grid", "potentials",
           "training", "vae", "vae_training", "device", "quick_mode", "seed_everything", "set_threads"]
