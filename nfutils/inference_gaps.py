"""Where a VAE's bound loses: the inference gap split into approximation and amortization.

For one image x, the bound of Eq. (20) under the encoder's posterior q_enc(z|x) is short of
log p(x) by KL(q_enc || p(z|x)). Cremer, Li & Duvenaud (2018, "Inference Suboptimality in
Variational Autoencoders") split this *inference gap* with q*, the best posterior of the family
for this x alone:

    log p(x) - ELBO(q_enc) = [log p(x) - ELBO(q*)]  +  [ELBO(q*) - ELBO(q_enc)]
                           =  KL(q* || p(z|x))       +  [KL(q_enc || p) - KL(q* || p)]
                           =  approximation gap      +  amortization gap.

The approximation gap is what the family (a diagonal Gaussian for K = 0, a K-layer planar flow)
cannot do even when fitted to this one x; the amortization gap is what the encoder loses by
predicting q from x with one network for all images.

With a 2-D latent all three numbers are measurable:

* log p(x) by quadrature on a grid (``grid_evidence``), for all images at once: the decoder runs
  once on a grid shared by the images, and log p(x|z) of every image at every grid point is
  one matrix product of the logits with the images;
* q* by maximizing each image's ELBO against the frozen decoder
  (``local_posteriors.fit_local_posteriors``, all images in one batch): log p(x) does not
  depend on q, so the largest ELBO is the smallest KL(q || p(z|x)). The fit starts at the
  encoder's q (its Gaussian and, for K > 0, its flow for this x), so q* is never a worse start
  than the encoder;
* the ELBOs of q* and q_enc by Monte Carlo with many samples.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import local_posteriors, vae
from .checkpoints import file_sha256
from .posterior_grid import lattice_points
from .results import save_json
from .vae import VAE

__all__ = ["GridEvidence", "grid_evidence", "InferenceGaps", "inference_gaps", "save_gaps",
           "load_gaps", "gap_summary"]


@dataclass
class GridEvidence:
    """log p(x) of B images by quadrature on one grid of the latent plane.

    Attributes:
        log_px: (B,) float64, logsumexp_i [log p(x|z_i) + log p(z_i)] + log dA.
        log_px_half: (B,) the same sum over every second grid point in each direction (cell
            area 4 dA): equal to ``log_px`` to within the quadrature error when the grid is fine
            enough.
        edge_mass: (B,) the posterior mass on the outermost ring of grid points (small when the
            grid covers the posterior).
    """

    log_px: Tensor
    log_px_half: Tensor
    edge_mass: Tensor


@torch.no_grad()
def grid_evidence(model: VAE, x: Tensor, extent: float = 6.0, resolution: int = 601,
                  chunk: int = 8192) -> GridEvidence:
    """log p(x) = log of the integral of p(x|z) p(z) over the plane, by quadrature, batched over x.

    The grid [-extent, extent]^2 with ``resolution`` points per axis is shared by all images:
    each chunk of grid points goes through the decoder once, and log p(x|z) of every image
    there is x . logits - sum softplus(logits) (``VAE.log_prob_x_given_z``), a matrix product.
    The sums are accumulated with logsumexp in float64. (``vae.grid_posterior`` does the same
    for one image at a time on a grid fitted to it, and also evaluates q.)

    Args:
        model: a ``VAE`` with latent_dim = 2.
        x: (B, data_dim) binary images.
        extent: half-width of the square grid (the prior N(0, I) has mass ~1e-8 outside [-6, 6]^2).
        resolution: points per axis; odd, so that every second point is a grid of its own
            (``log_px_half``).
        chunk: grid points per decoder call.

    Returns:
        ``GridEvidence``; tensors on the CPU.
    """
    if model.latent_dim != 2:
        raise ValueError(f"grid_evidence needs a 2-D latent; the model has {model.latent_dim}")
    if x.dim() != 2 or x.shape[-1] != model.data_dim:
        raise ValueError(f"x must have shape (B, {model.data_dim}); received {tuple(x.shape)}")
    if resolution < 5 or resolution % 2 == 0:
        raise ValueError(f"resolution must be odd and >= 5, got {resolution}")
    parameter = next(model.parameters())
    device, dtype = parameter.device, parameter.dtype
    x = x.to(device, dtype)
    points, cell = lattice_points((-extent, extent, -extent, extent), resolution, torch.float64)
    half = ((torch.arange(resolution) % 2 == 0)[:, None]
            & (torch.arange(resolution) % 2 == 0)[None, :]).reshape(-1)
    edge = torch.zeros(resolution, resolution, dtype=torch.bool)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    edge = edge.reshape(-1)
    num_images = x.shape[0]
    minus_inf = torch.full((num_images,), -math.inf, dtype=torch.float64)
    lse_all, lse_half, lse_edge = minus_inf.clone(), minus_inf.clone(), minus_inf.clone()
    for start in range(0, points.shape[0], chunk):
        z = points[start : start + chunk].to(device, dtype)
        logits = model.decode(z)  # (G, data_dim), shared by the images
        log_joint = (logits @ x.T - torch.nn.functional.softplus(logits).sum(-1, keepdim=True)
                     + model.log_prior(z).unsqueeze(-1)).double().cpu()  # (G, B)
        for total, mask in ((lse_all, None), (lse_half, half), (lse_edge, edge)):
            part = log_joint if mask is None else log_joint[mask[start : start + chunk]]
            if part.shape[0]:
                total.copy_(torch.logaddexp(total, torch.logsumexp(part, 0)))
    log_px = lse_all + math.log(cell)
    return GridEvidence(log_px=log_px, log_px_half=lse_half + math.log(4 * cell),
                        edge_mass=torch.exp(lse_edge + math.log(cell) - log_px))


@dataclass
class InferenceGaps:
    """Per-image decomposition of the inference gap of one model, in nats, (B,) float64 each.

    Attributes:
        log_px: log p(x) by quadrature (``grid_evidence``).
        elbo_encoder: ELBO of the encoder's q_K(.|x) (Monte Carlo).
        elbo_best: ELBO of q*, the member of the family fitted to x alone (Monte Carlo).
        settings: the budget of the fit and the evaluation; seconds: the time of each stage.
    """

    log_px: Tensor
    elbo_encoder: Tensor
    elbo_best: Tensor
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def inference(self) -> Tensor:
        """KL(q_enc || p(z|x)) = log p(x) - ELBO(q_enc)."""
        return self.log_px - self.elbo_encoder

    @property
    def approximation(self) -> Tensor:
        """KL(q* || p(z|x)) = log p(x) - ELBO(q*)."""
        return self.log_px - self.elbo_best

    @property
    def amortization(self) -> Tensor:
        """KL(q_enc || p) - KL(q* || p) = ELBO(q*) - ELBO(q_enc)."""
        return self.elbo_best - self.elbo_encoder

    def as_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON)."""
        return {"log_px": self.log_px.tolist(), "elbo_encoder": self.elbo_encoder.tolist(),
                "elbo_best": self.elbo_best.tolist(), "settings": dict(self.settings),
                "seconds": dict(self.seconds)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "InferenceGaps":
        as_tensor = lambda key: torch.tensor(data[key], dtype=torch.float64)  # noqa: E731
        return cls(as_tensor("log_px"), as_tensor("elbo_encoder"), as_tensor("elbo_best"),
                   dict(data.get("settings", {})), dict(data.get("seconds", {})))


#: The budget of the per-image fits of q* and of the Monte-Carlo ELBOs (the full run of a 2-D latent VAE).
DEFAULT_SETTINGS = dict(num_steps=1000, num_samples=4, lr=1e-2, warmup_steps=25,
                        elbo_samples=1000, grid_extent=6.0, grid_resolution=1201)


def inference_gaps(model: VAE, x: Tensor, settings: dict[str, Any] | None = None,
                   seed: int = 0, progress: bool = False) -> InferenceGaps:
    """Approximation and amortization gaps of ``model`` at the images ``x`` (all in one batch).

    q*'s family is the model's own: a diagonal Gaussian for K = 0, K planar layers otherwise,
    in the model's order of flow and affine map (``standardized_flow``; both orders give the
    same family, see ``vae.VAE``), started at the encoder's q for x.

    Args:
        model: a ``VAE`` with a 2-D latent (its weights are not changed).
        x: (B, data_dim) binary images.
        settings: overrides of ``DEFAULT_SETTINGS`` (fit: num_steps, num_samples, lr,
            warmup_steps; evaluation: elbo_samples; quadrature: grid_extent, grid_resolution).
        seed: seeds the fit's and the evaluation's random numbers.
        progress: a tqdm bar for the fit.

    Returns:
        ``InferenceGaps``.
    """
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; expected some of "
                         f"{sorted(DEFAULT_SETTINGS)}")
    device = next(model.parameters()).device
    x = x.to(device)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    evidence = grid_evidence(model, x, settings["grid_extent"], settings["grid_resolution"])
    seconds["quadrature"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    _, elbo_encoder = vae.log_likelihood(
        model, x, num_samples=settings["elbo_samples"], batch=min(100, x.shape[0]),
        generator=torch.Generator(device=device).manual_seed(seed + 1), return_elbo=True)
    seconds["encoder"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    q_best = local_posteriors.fit_local_posteriors(
        model, x, model.flow_length, num_steps=settings["num_steps"],
        num_samples=settings["num_samples"], lr=settings["lr"],
        warmup_steps=settings["warmup_steps"],
        generator=torch.Generator(device=device).manual_seed(seed), progress=progress,
        standardized=bool(model.standardized_flow), flow_start="encoder")
    elbo_best = local_posteriors.local_elbo(
        model, q_best, x, settings["elbo_samples"],
        generator=torch.Generator(device=device).manual_seed(seed + 2))
    seconds["fit"] = round(time.perf_counter() - started, 1)
    return InferenceGaps(log_px=evidence.log_px, elbo_encoder=elbo_encoder.double(),
                         elbo_best=elbo_best.double(),
                         settings={**settings, "images": int(x.shape[0]), "seed": seed,
                                   "quadrature_check_max_abs":
                                       float((evidence.log_px_half - evidence.log_px).abs().max()),
                                   "edge_mass_max": float(evidence.edge_mass.max())},
                         seconds=seconds)


def save_gaps(path: str | os.PathLike, gaps: dict[int, InferenceGaps],
              checkpoints: dict[int, str | os.PathLike], **about: Any) -> None:
    """Write the split of each model K (``gaps[K]``) as JSON, atomically, with the name and the
    SHA-256 of the checkpoint it was computed from (``checkpoints[K]``) and the entries of
    ``about`` (e.g. device, threads)."""
    models = {str(k): {"checkpoint": Path(checkpoints[k]).name, "sha256": file_sha256(checkpoints[k]),
                       **split.as_dict()} for k, split in gaps.items()}
    save_json({"models": models, **about}, path)


def load_gaps(path: str | os.PathLike, checkpoints: dict[int, str | os.PathLike]
              ) -> dict[int, InferenceGaps]:
    """The splits ``save_gaps`` wrote for those models K whose checkpoint ``checkpoints[K]`` still
    has the SHA-256 saved with them (a retrained model's split is left out); {} without a file."""
    if not Path(path).exists():
        return {}
    saved = json.loads(Path(path).read_text())["models"]
    return {k: InferenceGaps.from_dict(saved[str(k)]) for k, checkpoint in checkpoints.items()
            if str(k) in saved and saved[str(k)]["sha256"] == file_sha256(checkpoint)}


def gap_summary(values: Tensor) -> dict[str, float]:
    """Mean, median, standard error of the mean and count of per-image values (nats)."""
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    count = values.numel()
    se = float(values.std() / math.sqrt(count)) if count > 1 else float("nan")
    return {"mean": float(values.mean()), "median": float(values.quantile(0.5)), "se": se,
            "count": count}
