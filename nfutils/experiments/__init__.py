"""The experiments of Parts 3 and 4 (training, evaluation, saved results) that the notebooks
and the command lines under ``scripts/`` share: ``vae2d`` (Part 3, a 2-D latent) and
``mnist40`` (Part 4, the paper's 40-D latent, Table 2).

Paths (``data/checkpoints/``, ``data/results/``, ``outputs/runs/``, ``README.md``) are resolved
from the repository root, the folder above this package.
"""
