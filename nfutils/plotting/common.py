"""What every figure of the series shares: arrays from tensors, the square box, densities on a
grid, the one density image, the one contour overlay, the training curve, and the bound against
the flow length K (the paper's Figure 4).

Conventions: a 2-D density on a grid is an array of shape (R, R) indexed [row = z2,
column = z1] (``potentials.density_grid``), drawn with ``origin="lower"`` on ``extent = (xmin,
xmax, ymin, ymax)``; a half-width ``e`` means the square [-e, e]^2. Every function only draws
or computes: it takes arrays (NumPy or torch) and returns what it drew, never reads globals,
never calls ``plt.show``.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from torch import Tensor

from .. import potentials
from ..potentials import square_extent  # the square box of the grids, shared with the figures

__all__ = ["Extent", "as_numpy", "square_extent", "cell_centres", "density_on_grid", "histogram2d",
           "bare_axes", "set_square_limits", "plot_density", "plot_contours", "plot_kl_curve",
           "plot_bound_against_flow_length"]

Extent = tuple[float, float, float, float]


# --------------------------------------------------------------------------- arrays and grids


def as_numpy(x) -> np.ndarray:
    """A NumPy copy of a tensor (detached, on the CPU) or array-like."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def cell_centres(extent, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The z1 and z2 coordinates of the cell centres of a ``resolution`` x ``resolution`` grid
    on ``extent`` (those of ``potentials.density_grid``): where the values of an (R, R) density
    image sit, e.g. for contour lines drawn over it.

    Returns:
        (z1 values (R,), z2 values (R,)).
    """
    xmin, xmax, ymin, ymax = square_extent(extent)
    xs = np.linspace(xmin, xmax, resolution + 1)
    ys = np.linspace(ymin, ymax, resolution + 1)
    return 0.5 * (xs[1:] + xs[:-1]), 0.5 * (ys[1:] + ys[:-1])


def density_on_grid(log_density: Callable[[Tensor], Tensor], extent=4.0, resolution: int = 200,
                    dtype=torch.float64, normalize: bool = False) -> tuple[np.ndarray, float]:
    """exp(log_density) at the cell centres of a grid, for images and quadrature.

    Args:
        log_density: (n, 2) -> (n,), e.g. ``lambda z: -energy(z)`` or a flow's ``log_prob``.
        extent: half-width or (xmin, xmax, ymin, ymax). resolution: cells per side.
        normalize: divide by the grid's integral (midpoint rule, as ``potentials.log_partition``
            on this extent), in log space, so an unnormalized exp(-U) becomes a density that
            integrates to 1 on the extent.

    Returns:
        (density of shape (resolution, resolution) indexed [z2, z1], area of one cell).
    """
    points, cell_area = potentials.density_grid(square_extent(extent), resolution, dtype=dtype)
    with torch.no_grad():
        log_values = log_density(points.reshape(-1, 2))
        if normalize:
            log_values = log_values - torch.logsumexp(log_values, 0) - np.log(cell_area)
    return as_numpy(torch.exp(log_values)).reshape(resolution, resolution), cell_area


def histogram2d(samples, extent=4.0, bins: int = 200) -> np.ndarray:
    """Normalized 2-D histogram of samples (n, 2): an estimate of their density on the grid
    (shape (bins, bins), indexed [z2, z1]); samples outside the extent count in the total,
    so the image integrates to the fraction of mass inside it."""
    samples = as_numpy(samples)
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(f"samples must have shape (n, 2); received shape {samples.shape}")
    xmin, xmax, ymin, ymax = square_extent(extent)
    counts, _, _ = np.histogram2d(samples[:, 1], samples[:, 0], bins=bins,
                                  range=[[ymin, ymax], [xmin, xmax]])
    cell_area = (xmax - xmin) * (ymax - ymin) / bins**2
    return counts / (len(samples) * cell_area)


# --------------------------------------------------------------------------- drawing


def bare_axes(ax: Axes, title: str | None = None) -> None:
    """No ticks (a picture, not a chart) and an optional small title."""
    ax.set(xticks=[], yticks=[])
    if title is not None:
        ax.set_title(title, fontsize=9)


def set_square_limits(ax: Axes, extent) -> None:
    """Show exactly ``extent`` (half-width or 4-tuple), with equal scales on both axes."""
    xmin, xmax, ymin, ymax = square_extent(extent)
    ax.set(xlim=(xmin, xmax), ylim=(ymin, ymax), aspect="equal")


def plot_density(ax: Axes, density, extent=4.0, title: str | None = None, cmap: str = "viridis",
                 vmax: float | None = None):
    """Draw a density on a grid (R, R), indexed [z2, z1], as an image; returns the image."""
    density = as_numpy(density)
    if density.ndim != 2:
        raise ValueError(f"density must have shape (R, R); received shape {density.shape}")
    image = ax.imshow(density, origin="lower", extent=square_extent(extent), cmap=cmap,
                      vmin=0.0, vmax=vmax, aspect="equal", interpolation="nearest")
    bare_axes(ax, title)
    return image


def plot_contours(ax: Axes, density, z1, z2, levels: Sequence[float], color: str = "white",
                  linewidth: float = 0.6):
    """Contour lines of a density (R, R), indexed [z2, z1], over whatever the axes show (one
    density's lines over another's image: colour outside the lines, or lines around no colour,
    is where the two disagree).

    Args:
        density: (R, R). z1, z2: (R,) coordinates of its columns and rows (``cell_centres`` for
            a ``density_on_grid`` image). levels: the density values of the lines.

    Returns:
        the ``ContourSet``.
    """
    density = as_numpy(density)
    return ax.contour(as_numpy(z1), as_numpy(z2), density, levels=np.asarray(levels),
                      colors=color, linewidths=linewidth)


def plot_kl_curve(ax: Axes, steps, kl, label: str | None = None, smooth: int = 1,
                  title: str | None = None):
    """KL(q || p) in nats against training steps; ``smooth`` > 1 adds a running mean over that
    many logged points (the raw values stay visible, faint). Returns the drawn line."""
    steps = as_numpy(steps)
    kl = as_numpy(kl)
    if steps.shape != kl.shape or steps.ndim != 1:
        raise ValueError(f"steps and kl must be 1-D of the same length; got {steps.shape}, {kl.shape}")
    if smooth > 1 and len(kl) >= smooth:
        raw = ax.plot(steps, kl, alpha=0.25, linewidth=0.8)[0]
        kernel = np.ones(smooth) / smooth
        smoothed = np.convolve(kl, kernel, mode="valid")
        line = ax.plot(steps[smooth - 1:], smoothed, color=raw.get_color(), label=label)[0]
    else:
        line = ax.plot(steps, kl, label=label)[0]
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set(xlabel="training step", ylabel="KL(q || p) [nats]")
    if title is not None:
        ax.set_title(title, fontsize=10)
    return line


def plot_bound_against_flow_length(ax: Axes, flow_lengths, nll, neg_elbo,
                                   paper: Mapping[int, float] | None = None,
                                   reproduction: Mapping[int, float] | None = None,
                                   nll_label: str = "-ln p(x) (importance sampling)"):
    """The paper's Figure 4: -ln p(x) and the bound -ELBO against the flow length K.

    Args:
        flow_lengths: K values. nll, neg_elbo: measured values in nats, one per K.
        paper, reproduction: optional K -> published -ln p(x), drawn as reference markers.
    """
    flow_lengths = list(flow_lengths)
    ax.plot(flow_lengths, list(neg_elbo), "s--", color="tab:orange", label="-ELBO (this repo)")
    ax.plot(flow_lengths, list(nll), "o-", color="tab:blue", label=nll_label + " (this repo)")
    for values, style, label in ((paper, "k^", "-ln p(x), paper (Table 2)"),
                                 (reproduction, "gv", "-ln p(x), public reproduction")):
        if values:
            keys = sorted(values)
            ax.plot(keys, [values[k] for k in keys], style, linestyle=":", label=label)
    ax.set(xlabel="flow length K", ylabel="nats (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax
