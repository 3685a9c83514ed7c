"""Figures of the series: pure functions that draw on given axes or return a Figure.

Every function here only draws: it takes arrays (NumPy or torch) or a model and returns what
it drew, never reads globals, never calls ``plt.show``. Widgets (``nfutils.widgets``) wrap
these functions, and tests call them directly. Functions that return a whole figure build a
``matplotlib.figure.Figure`` without pyplot, so a widget that redraws a hundred times leaks
nothing; the notebook displays it (a Figure is rendered inline by IPython) or saves it.

Conventions: 2-D densities on a grid are arrays of shape (R, R) indexed [row = z2, column = z1]
(``potentials.density_grid``), drawn with ``origin="lower"`` on ``extent = (xmin, xmax, ymin,
ymax)``; a half-width ``e`` means the square [-e, e]^2.

Sections:

* data for figures: ``as_numpy``, ``square_extent``, ``density_on_grid``, ``histogram2d``,
  ``flow_histogram``, ``layer_indices``;
* Part 1 (2-D flows): ``plot_density``, ``plot_potential``, ``plot_layer_samples``,
  ``layer_samples_figure``, ``layer_extent``, ``plot_kl_curve``, ``plot_planar_layer``,
  ``figure3_grid``, ``plot_kl_against_length`` (Figure 3d).
* Part 2 (amortized flows): ``conditional_densities``, ``plot_conditional_pair``,
  ``conditional_pair_figure``, ``plot_density_with_target``, ``conditional_grid``,
  ``plot_amortization_gap``, ``conditional_animation``.
* Part 3 (VAE, 2-D latent): ``plot_latent_codes``, ``decoded_manifold``, ``plot_manifold``,
  ``plot_posterior_pair``, ``posterior_comparison_figure``, ``plot_learning_curves``,
  ``latent_decoder_figure``.
* Part 4 (VAE, 40-D latent): ``tile_images``, ``plot_image_grid``, ``reconstructions_figure``,
  ``plot_bound_against_flow_length``.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from . import flows, potentials

__all__ = [
    "as_numpy",
    "square_extent",
    "density_on_grid",
    "histogram2d",
    "flow_histogram",
    "layer_indices",
    "plot_density",
    "plot_potential",
    "plot_layer_samples",
    "layer_samples_figure",
    "plot_kl_curve",
    "plot_planar_layer",
    "figure3_grid",
    "plot_kl_against_length",
    "layer_extent",
    "conditional_densities",
    "plot_conditional_pair",
    "conditional_pair_figure",
    "plot_density_with_target",
    "conditional_grid",
    "plot_amortization_gap",
    "conditional_animation",
    "plot_latent_codes",
    "decoded_manifold",
    "plot_manifold",
    "plot_posterior_pair",
    "posterior_comparison_figure",
    "plot_learning_curves",
    "latent_decoder_figure",
    "tile_images",
    "plot_image_grid",
    "reconstructions_figure",
    "plot_bound_against_flow_length",
]

Extent = tuple[float, float, float, float]


# --------------------------------------------------------------------------- data for figures


def as_numpy(x) -> np.ndarray:
    """A NumPy copy of a tensor (detached, on the CPU) or array-like."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def square_extent(extent) -> Extent:
    """(xmin, xmax, ymin, ymax) from a half-width ``e`` ([-e, e]^2) or a 4-tuple."""
    if isinstance(extent, (int, float)):
        if extent <= 0:
            raise ValueError(f"a half-width extent must be > 0, got {extent}")
        return (-float(extent), float(extent), -float(extent), float(extent))
    if len(extent) != 4:
        raise ValueError(f"extent must be a half-width or (xmin, xmax, ymin, ymax); got {extent}")
    return tuple(float(e) for e in extent)  # type: ignore[return-value]


def density_on_grid(log_density: Callable[[Tensor], Tensor], extent=4.0, resolution: int = 200,
                    dtype=torch.float64) -> tuple[np.ndarray, float]:
    """exp(log_density) at the cell centres of a grid, for images and quadrature.

    Args:
        log_density: (n, 2) -> (n,), e.g. ``lambda z: -U(z)`` or a flow's ``log_prob``.
        extent: half-width or (xmin, xmax, ymin, ymax). resolution: cells per side.

    Returns:
        (density of shape (resolution, resolution) indexed [z2, z1], area of one cell).
    """
    points, cell_area = potentials.density_grid(square_extent(extent), resolution, dtype=dtype)
    with torch.no_grad():
        log_values = log_density(points.reshape(-1, 2))
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


def flow_histogram(model: flows.NormalizingFlow, num_samples: int = 1_000_000, extent=4.0,
                   bins: int = 200, chunk_size: int = 100_000,
                   generator: torch.Generator | None = None) -> np.ndarray:
    """Density histogram of ``num_samples`` draws of q_K, drawn in chunks without gradients
    (10^6 samples of a K = 100 flow need ~20 MB a chunk, not 1 GB at once).

    Returns:
        (bins, bins) array indexed [z2, z1], normalized like ``histogram2d``.
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1; got {num_samples}, {chunk_size}")
    total = np.zeros((bins, bins))
    remaining = num_samples
    with torch.no_grad():
        while remaining > 0:
            n = min(chunk_size, remaining)
            z_k, _ = model.rsample(n, generator=generator)
            total += histogram2d(z_k, extent, bins) * n
            remaining -= n
    return total / num_samples


def layer_indices(num_layers: int) -> list[int]:
    """The layers shown in a samples-from-each-layer figure: 0, 1, 5, 10, 20, ..., K."""
    if num_layers < 0:
        raise ValueError(f"num_layers must be >= 0, got {num_layers}")
    candidates = [0, 1, 5] + list(range(10, num_layers, 10)) + [num_layers]
    return sorted({k for k in candidates if k <= num_layers})


# --------------------------------------------------------------------------- Part 1: 2-D flows


def plot_density(ax: Axes, density, extent=4.0, title: str | None = None, cmap: str = "viridis",
                 vmax: float | None = None):
    """Draw a density on a grid (R, R), indexed [z2, z1], as an image; returns the image."""
    density = as_numpy(density)
    if density.ndim != 2:
        raise ValueError(f"density must have shape (R, R); received shape {density.shape}")
    image = ax.imshow(density, origin="lower", extent=square_extent(extent), cmap=cmap,
                      vmin=0.0, vmax=vmax, aspect="equal", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return image


def plot_potential(ax: Axes, U: Callable[[Tensor], Tensor], extent=4.0, resolution: int = 200,
                   title: str | None = None, cmap: str = "viridis"):
    """Draw the unnormalized target exp(-U(z)) on a grid (the paper's Figure 3a)."""
    density, _ = density_on_grid(lambda z: -U(z), extent, resolution)
    return plot_density(ax, density, extent, title, cmap)


def plot_layer_samples(ax: Axes, z, color_values, extent=4.0, title: str | None = None,
                       cmap: str = "viridis", point_size: float = 1.0, vmax: float | None = None):
    """Scatter samples z (n, 2), each coloured by ``color_values`` (n,) (e.g. the distance of
    its z_0 to the base mean, so one sees where each part of the base density goes).
    Rasterized, so a figure saved as PDF stays small."""
    z = as_numpy(z)
    color_values = as_numpy(color_values)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"z must have shape (n, 2); received shape {z.shape}")
    if color_values.shape != (z.shape[0],):
        raise ValueError(
            f"color_values must have shape ({z.shape[0]},) to match z; received {color_values.shape}"
        )
    xmin, xmax, ymin, ymax = square_extent(extent)
    points = ax.scatter(z[:, 0], z[:, 1], c=color_values, s=point_size, cmap=cmap, vmin=0.0,
                        vmax=vmax, linewidths=0, rasterized=True)
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return points


def layer_samples_figure(layers: Sequence, color_values, indices: Sequence[int] | None = None,
                         extent=4.0, ncols: int = 7, panel_size: float = 1.7,
                         suptitle: str | None = None) -> Figure:
    """Samples after layers ``indices`` of a flow, one panel each (same colours throughout).

    Args:
        layers: [z_0, ..., z_K], each (n, 2) (``NormalizingFlow.sample_layers``).
        color_values: (n,), e.g. ||z_0 - mu||.
        indices: which layers; default ``layer_indices(K)``.
    """
    num_layers = len(layers) - 1
    indices = layer_indices(num_layers) if indices is None else list(indices)
    if any(k < 0 or k > num_layers for k in indices):
        raise ValueError(f"layer indices must lie in [0, {num_layers}]; got {indices}")
    ncols = max(1, min(ncols, len(indices)))
    nrows = math.ceil(len(indices) / ncols)
    fig = Figure(figsize=(panel_size * ncols, panel_size * nrows + (0.3 if suptitle else 0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    vmax = float(np.max(as_numpy(color_values)))
    for ax, k in zip(axes.flat, indices):
        plot_layer_samples(ax, layers[k], color_values, extent, title=f"after layer {k}" if k else "z_0 (base)",
                           vmax=vmax)
    for ax in list(axes.flat)[len(indices):]:
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def layer_extent(layers: Sequence, minimum: float = 4.0, quantile: float = 0.995) -> float:
    """A half-width that shows the bulk of every layer's samples: the largest ``quantile`` of
    |z_i| over all layers, rounded up to a whole number, and at least ``minimum``. (Between the
    first and the last layer a flow may carry its samples far outside the target's box.)"""
    largest = max(float(np.quantile(np.abs(as_numpy(z)), quantile)) for z in layers)
    return float(max(minimum, math.ceil(largest)))


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
    ax.set_xlabel("training step")
    ax.set_ylabel("KL(q || p) [nats]")
    if title is not None:
        ax.set_title(title, fontsize=10)
    return line


def plot_planar_layer(w: Sequence[float], u: Sequence[float], b: float, constrain: bool = False,
                      extent: float = 3.0, grid_lines: int = 21, resolution: int = 120) -> Figure:
    """One planar layer f(z) = z + u tanh(w^T z + b) (Eq. 10) acting on the plane.

    Four panels: a grid of points coloured by w^T z + b; its image under f (the same colours,
    so a fold shows as colours landing on one another); the base density N(0, I); the density
    after the layer, q_1(y) = N(f^{-1}(y)) / |1 + u^T psi| (Eq. 11-12), computed exactly by
    inversion when w^T u > -1 (``flows.planar_inverse``), and otherwise, when the layer folds
    the plane and has no inverse, as a histogram of 200,000 pushed samples.

    Args:
        w, u: two numbers each. b: the offset.
        constrain: replace u by u_hat = ``constrain_u(w, u)`` (App. A.1) first.
        extent: half-width of the square shown. grid_lines: points per side of the grid.
        resolution: cells per side of the density images.

    Returns:
        a Figure with four axes; its suptitle states w^T u (or w^T u_hat).
    """
    w_t = torch.as_tensor(w, dtype=torch.float64)
    u_t = torch.as_tensor(u, dtype=torch.float64)
    if w_t.shape != (2,) or u_t.shape != (2,):
        raise ValueError(f"w and u must have shape (2,); received {tuple(w_t.shape)}, {tuple(u_t.shape)}")
    b_t = torch.tensor(float(b), dtype=torch.float64)
    u_used = flows.constrain_u(w_t, u_t) if constrain else u_t
    w_dot_u = float(w_t @ u_used)

    ticks = torch.linspace(-extent, extent, grid_lines, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(ticks, ticks, indexing="xy"), dim=-1).reshape(-1, 2)
    image, _ = flows.planar_transform(grid, w_t, u_used, b_t)
    colour = as_numpy(grid @ w_t + b_t)

    fig = Figure(figsize=(11.0, 3.0))
    axes = fig.subplots(1, 4)
    limit = float(np.abs(colour).max())
    for ax, points, title in ((axes[0], grid, "grid z"), (axes[1], image, "image f(z)")):
        ax.scatter(*as_numpy(points).T, c=colour, cmap="coolwarm", s=6, vmin=-limit, vmax=limit,
                   linewidths=0)
        ax.set_xlim(-extent - 1, extent + 1)
        ax.set_ylim(-extent - 1, extent + 1)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
    # the hyperplane w.z + b = 0 in the first panel
    if float(w_t.norm()) > 0:
        direction = torch.stack([-w_t[1], w_t[0]]) / w_t.norm()
        foot = -b_t * w_t / (w_t @ w_t)
        ends = torch.stack([foot - 10 * direction, foot + 10 * direction])
        axes[0].plot(*as_numpy(ends).T, color="black", linewidth=0.8)

    base = torch.distributions.MultivariateNormal(torch.zeros(2, dtype=torch.float64),
                                                  torch.eye(2, dtype=torch.float64))
    density_before, _ = density_on_grid(base.log_prob, extent, resolution)
    if w_dot_u > -1:
        def log_q1(y: Tensor) -> Tensor:
            z = flows.planar_inverse(y, w_t, u_used, b_t)
            return base.log_prob(z) - flows.planar_transform(z, w_t, u_used, b_t)[1]

        density_after, _ = density_on_grid(log_q1, extent, resolution)
        after_title = "density after (exact, by inversion)"
    else:
        generator = torch.Generator().manual_seed(0)
        z_0 = torch.randn(200_000, 2, generator=generator, dtype=torch.float64)
        density_after = histogram2d(flows.planar_transform(z_0, w_t, u_used, b_t)[0], extent,
                                    resolution)
        after_title = "density after (histogram: not invertible)"
    vmax = float(max(density_before.max(), np.percentile(density_after, 99.5)))
    plot_density(axes[2], density_before, extent, "base density N(0, I)", vmax=vmax)
    plot_density(axes[3], density_after, extent, after_title, vmax=vmax)
    name = "w.u_hat" if constrain else "w.u"
    verdict = "invertible" if w_dot_u > -1 else "NOT invertible: the plane folds"
    fig.suptitle(f"planar layer, {name} = {w_dot_u:.2f} ({verdict})", fontsize=10)
    fig.tight_layout()
    return fig


def figure3_grid(target_densities: Mapping[str, np.ndarray],
                 panels: Mapping[tuple[str, str, int], tuple[np.ndarray, float]],
                 kinds: Sequence[str] = ("planar", "radial"), lengths: Sequence[int] = (2, 8, 32),
                 extent=4.0, panel_size: float = 1.6) -> Figure:
    """The paper's Figure 3 as a grid: one row per potential; the target, then q_K for each
    flow kind and length K, with the final KL(q || p) in nats written in each panel.

    Args:
        target_densities: name -> exp(-U) on a grid (R, R).
        panels: (name, kind, K) -> (density image of q_K (R', R'), final KL in nats).
        kinds, lengths: column order.
    """
    names = list(target_densities)
    columns = [(kind, length) for kind in kinds for length in lengths]
    missing = [(n, k, K) for n in names for k, K in columns if (n, k, K) not in panels]
    if missing:
        raise ValueError(f"figure3_grid: no panel for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    fig = Figure(figsize=(panel_size * (1 + len(columns)), panel_size * len(names) + 0.3))
    axes = fig.subplots(len(names), 1 + len(columns), squeeze=False)
    for row, name in enumerate(names):
        plot_density(axes[row, 0], target_densities[name], extent,
                     title="target exp(-U)" if row == 0 else None)
        axes[row, 0].set_ylabel(name, fontsize=10)
        for col, (kind, length) in enumerate(columns, start=1):
            density, kl = panels[(name, kind, length)]
            ax = axes[row, col]
            plot_density(ax, density, extent, title=f"{kind} K={length}" if row == 0 else None,
                         vmax=float(np.percentile(density, 99.8)) or None)
            ax.text(0.03, 0.04, f"KL {kl:.2f}", transform=ax.transAxes, color="white", fontsize=8)
    fig.tight_layout()
    return fig


def plot_kl_against_length(ax: Axes, lengths: Sequence[int],
                           kl: Mapping[tuple[str, str], Sequence[float]],
                           title: str | None = "KL(q || p) against flow length"):
    """The paper's Figure 3d: final KL(q || p) in nats against the flow length K, one line per
    (potential, kind); the colour names the potential, the line style the kind (solid for the
    first kind met, dashed for the second, ...). Returns the drawn lines.

    Args:
        lengths: K of each point, e.g. (2, 8, 32) (drawn on a log2 axis).
        kl: (name, kind) -> final KL for each K of ``lengths``.
    """
    lengths = list(lengths)
    names = list(dict.fromkeys(name for name, _ in kl))
    kinds = list(dict.fromkeys(kind for _, kind in kl))
    styles = ["-", "--", ":", "-."]
    colours = [f"C{i}" for i in range(10)]
    lines = []
    for (name, kind), values in kl.items():
        values = list(values)
        if len(values) != len(lengths):
            raise ValueError(f"{name} {kind}: {len(values)} KL values for {len(lengths)} lengths")
        marker = "o" if kinds.index(kind) == 0 else "s"
        lines += ax.plot(lengths, values, styles[kinds.index(kind) % 4], marker=marker, markersize=4,
                         color=colours[names.index(name) % 10], label=f"{name} {kind}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths)
    ax.set_xticklabels([str(k) for k in lengths])
    ax.set_xlabel("flow length K")
    ax.set_ylabel("KL(q || p) [nats]")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.legend(fontsize=7, ncol=2)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return lines


# --------------------------------------------------------------------------- Part 2: amortized flows


def conditional_densities(model, energy: Callable[[Tensor, Tensor], Tensor], condition,
                          num_samples: int = 100_000, extent=4.0, bins: int = 100,
                          generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The target p(z | c) and an amortized flow's q(z | c) on the same grid, for one condition.

    The target is exp(-U(z; c)) normalized by its sum over the grid (the midpoint rule of
    ``potentials.log_partition`` restricted to the extent); q is the normalized histogram of
    ``num_samples`` draws (``histogram2d``), so both images are densities on one scale.

    Args:
        model: an amortizer with ``rsample(condition (1, C), n) -> (z (1, n, 2), log_q)``
            (``amortized.AmortizedPlanarFlow``).
        energy: U(z; c), (1, m, 2) and (1, C) -> (1, m) (``amortized.ring_energy``).
        condition: one condition: a number (an angle) or a sequence of C numbers.
        num_samples: draws of q. extent: half-width or box. bins: cells per side.

    Returns:
        (target_density, q_density), each (bins, bins) indexed [z2, z1].
    """
    condition = torch.as_tensor(condition, dtype=torch.float64).reshape(1, -1)
    points, cell_area = potentials.density_grid(square_extent(extent), bins, dtype=torch.float64)
    with torch.no_grad():
        log_p = -energy(points.reshape(1, -1, 2), condition)[0]
        log_p = log_p - torch.logsumexp(log_p, 0) - math.log(cell_area)
        param = next(model.parameters())
        z_k, _ = model.rsample(condition.to(dtype=param.dtype, device=param.device), num_samples,
                               generator=generator)
    return as_numpy(log_p.exp()).reshape(bins, bins), histogram2d(z_k[0], extent, bins)


def plot_conditional_pair(ax_target: Axes, ax_q: Axes, target_density, q_density, extent=4.0,
                          title_target: str | None = "target p(z | θ)",
                          title_q: str | None = "amortized q(z | θ), samples",
                          vmax: float | None = None):
    """Target density and q's empirical density side by side, on one colour scale
    (``vmax`` defaults to the target's maximum). Returns the two images."""
    target_density = as_numpy(target_density)
    q_density = as_numpy(q_density)
    if target_density.shape != q_density.shape or target_density.ndim != 2:
        raise ValueError(
            f"target_density and q_density must have the same shape (R, R); received "
            f"{target_density.shape} and {q_density.shape}"
        )
    vmax = float(target_density.max()) if vmax is None else vmax
    return (plot_density(ax_target, target_density, extent, title_target, vmax=vmax),
            plot_density(ax_q, q_density, extent, title_q, vmax=vmax))


def conditional_pair_figure(target_density, q_density, extent=4.0, suptitle: str | None = None,
                            panel_size: float = 3.0) -> Figure:
    """A Figure with ``plot_conditional_pair``'s two panels (the θ slider's figure)."""
    fig = Figure(figsize=(2 * panel_size, panel_size + (0.35 if suptitle else 0.0)))
    ax_target, ax_q = fig.subplots(1, 2)
    plot_conditional_pair(ax_target, ax_q, target_density, q_density, extent)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def plot_density_with_target(ax: Axes, q_density, target_density, extent=4.0,
                             title: str | None = None, levels: int = 4):
    """q's density as an image with the target's contour lines on top (white): where the two
    disagree, colour lies outside the lines or lines enclose no colour. Returns the image."""
    q_density = as_numpy(q_density)
    target_density = as_numpy(target_density)
    if q_density.ndim != 2 or target_density.ndim != 2:
        raise ValueError(f"densities must have shape (R, R); received {q_density.shape} and "
                         f"{target_density.shape}")
    vmax = float(target_density.max())
    image = plot_density(ax, q_density, extent, title, vmax=vmax)
    xmin, xmax, ymin, ymax = square_extent(extent)
    rows, cols = target_density.shape
    xs = np.linspace(xmin, xmax, cols + 1)
    ys = np.linspace(ymin, ymax, rows + 1)
    ax.contour(0.5 * (xs[1:] + xs[:-1]), 0.5 * (ys[1:] + ys[:-1]), target_density,
               levels=np.linspace(0.0, vmax, levels + 2)[1:-1], colors="white", linewidths=0.6)
    return image


def conditional_grid(labels: Sequence[str], q_densities: Sequence, target_densities: Sequence,
                     extent=4.0, ncols: int = 5, panel_size: float = 1.9,
                     suptitle: str | None = None) -> Figure:
    """One panel per condition: q's density with the target's contours
    (``plot_density_with_target``), e.g. 10 angles on a 2 x 5 grid.

    Args:
        labels: one title per panel (e.g. "θ = 36°, KL 0.04").
        q_densities, target_densities: the images, (R, R) each, as many as labels.
    """
    if not (len(labels) == len(q_densities) == len(target_densities)) or not labels:
        raise ValueError(
            f"need as many q and target densities as labels (>= 1); got {len(labels)} labels, "
            f"{len(q_densities)} q densities, {len(target_densities)} target densities"
        )
    ncols = max(1, min(ncols, len(labels)))
    nrows = math.ceil(len(labels) / ncols)
    # each row: a square panel plus room for its title; constrained layout keeps titles clear
    fig = Figure(figsize=(panel_size * ncols, (panel_size + 0.3) * nrows + (0.35 if suptitle else 0.0)),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, label, q_density, target_density in zip(axes.flat, labels, q_densities, target_densities):
        plot_density_with_target(ax, q_density, target_density, extent, title=label)
    for ax in list(axes.flat)[len(labels):]:
        ax.set_axis_off()
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return fig


def plot_amortization_gap(ax: Axes, angles, kl_amortized, kl_per_target,
                          stderr_amortized=None, stderr_per_target=None,
                          curve_angles=None, curve_kl=None):
    """KL(q || p) in nats over the angle: the amortized flow against flows fitted to one
    angle each (points with ±2 standard errors when given); ``curve_angles``/``curve_kl``
    add the amortized KL on a fine grid of angles (one forward pass gives them all).

    Returns:
        the line of the per-target KLs.
    """
    angles = as_numpy(angles)
    kl_amortized = as_numpy(kl_amortized)
    kl_per_target = as_numpy(kl_per_target)
    if not (angles.shape == kl_amortized.shape == kl_per_target.shape) or angles.ndim != 1:
        raise ValueError(
            f"angles, kl_amortized and kl_per_target must be 1-D of one length; got "
            f"{angles.shape}, {kl_amortized.shape}, {kl_per_target.shape}"
        )
    degrees = np.degrees(angles)
    if curve_angles is not None and curve_kl is not None:
        ax.plot(np.degrees(as_numpy(curve_angles)), as_numpy(curve_kl), color="C0", linewidth=1.0,
                alpha=0.6, label="amortized (fine grid of θ)")
    ax.errorbar(degrees, kl_amortized,
                yerr=None if stderr_amortized is None else 2 * as_numpy(stderr_amortized),
                fmt="o", color="C0", label="amortized q(z | θ)", capsize=2)
    line = ax.errorbar(degrees, kl_per_target,
                       yerr=None if stderr_per_target is None else 2 * as_numpy(stderr_per_target),
                       fmt="s", color="C1", label="flow fitted to this θ alone", capsize=2)
    for x, low, high in zip(degrees, kl_per_target, kl_amortized):
        ax.plot([x, x], [low, high], color="grey", linewidth=0.8, zorder=0)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel("θ [degrees]")
    ax.set_ylabel("KL(q || p) [nats]")
    ax.legend(fontsize=8)
    return line


def conditional_animation(labels: Sequence[str], target_densities: Sequence, q_densities: Sequence,
                          extent=4.0, interval_ms: int = 100, panel_size: float = 2.4):
    """An animation over conditions: target and q side by side (``plot_conditional_pair``),
    one frame per label. Save it with ``anim.save(path, writer=PillowWriter(fps=...), dpi=...)``.

    Returns:
        a ``matplotlib.animation.FuncAnimation`` (its figure is ``anim._fig``).
    """
    from matplotlib.animation import FuncAnimation

    if not (len(labels) == len(q_densities) == len(target_densities)) or not labels:
        raise ValueError(
            f"need as many q and target densities as labels (>= 1); got {len(labels)} labels, "
            f"{len(q_densities)} q densities, {len(target_densities)} target densities"
        )
    vmax = float(max(as_numpy(t).max() for t in target_densities))
    fig = Figure(figsize=(2 * panel_size, panel_size + 0.3))
    ax_target, ax_q = fig.subplots(1, 2)
    images = plot_conditional_pair(ax_target, ax_q, target_densities[0], q_densities[0], extent,
                                   title_target="target p(z | θ)", title_q="amortized q(z | θ)",
                                   vmax=vmax)
    title = fig.suptitle(labels[0], fontsize=10)
    fig.tight_layout()

    def update(frame: int):
        images[0].set_data(as_numpy(target_densities[frame]))
        images[1].set_data(as_numpy(q_densities[frame]))
        title.set_text(labels[frame])
        return (*images, title)

    return FuncAnimation(fig, update, frames=len(labels), interval=interval_ms, blit=False)


# --------------------------------------------------------------------------- Part 3: VAE, 2-D latent

DIGIT_COLORS = "tab10"


def plot_latent_codes(ax: Axes, z, labels, extent=None, point_size: float = 1.5,
                      title: str | None = None, legend: bool = True):
    """The latent codes of a data set (e.g. the posterior means of the test set), one colour
    per digit (figure (a) of Part 3). Rasterized, so 10,000 points stay small in a PNG/PDF.

    Args:
        z: (n, 2) codes. labels: (n,) digits 0-9. extent: half-width or 4-tuple of the axes
            (None: matplotlib's limits).

    Returns:
        the ``PathCollection``.
    """
    z, labels = as_numpy(z), as_numpy(labels)
    if z.ndim != 2 or z.shape[1] != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"z must have shape (n, 2) and labels (n,); received {z.shape} and "
                         f"{labels.shape}")
    points = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap=DIGIT_COLORS, vmin=-0.5, vmax=9.5,
                        s=point_size, linewidths=0, rasterized=True)
    if extent is not None:
        xmin, xmax, ymin, ymax = square_extent(extent)
        ax.set_xlim(xmin, xmax)
        ax.set_ylim(ymin, ymax)
    ax.set_aspect("equal")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if legend:
        from matplotlib.lines import Line2D

        cmap = points.cmap
        handles = [Line2D([], [], marker="o", linestyle="", markersize=4,
                          color=cmap((digit + 0.5) / 10.0))
                   for digit in range(10)]
        ax.legend(handles, [str(d) for d in range(10)], fontsize=7, ncol=2, loc="upper right",
                  handletextpad=0.1, columnspacing=0.4, framealpha=0.7)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return points


def decoded_manifold(model, num_per_side: int = 20, extent=3.0, image_side: int = 28) -> np.ndarray:
    """The decoder's mean image E[x|z] = sigmoid(logits) on a regular grid of the latent plane.

    Args:
        model: a ``vae.VAE`` with a 2-D latent. num_per_side: n (the paper's figures: 20).
        extent: half-width or 4-tuple of the grid of z.

    Returns:
        one image (n * 28, n * 28) in [0, 1]; the tile in row i (from the top), column j shows
        z = (z1_j, z2_{n-1-i}), so the picture is oriented like the latent plane.
    """
    if getattr(model, "latent_dim", None) != 2:
        raise ValueError("decoded_manifold needs a model with a 2-D latent")
    xmin, xmax, ymin, ymax = square_extent(extent)
    z1 = torch.linspace(xmin, xmax, num_per_side)
    z2 = torch.linspace(ymax, ymin, num_per_side)  # top row = largest z2
    rows, cols = torch.meshgrid(z2, z1, indexing="ij")
    z = torch.stack([cols, rows], -1).reshape(-1, 2)
    device = next(model.parameters()).device
    with torch.no_grad():
        means = torch.sigmoid(model.decode(z.to(device))).cpu()
    tiles = means.reshape(num_per_side, num_per_side, image_side, image_side)
    return as_numpy(tiles.permute(0, 2, 1, 3).reshape(num_per_side * image_side, -1))


def plot_manifold(ax: Axes, image, extent=3.0, title: str | None = None):
    """Draw ``decoded_manifold``'s image with the latent coordinates on the axes."""
    image = as_numpy(image)
    artist = ax.imshow(image, cmap="gray_r", vmin=0, vmax=1, extent=square_extent(extent),
                       interpolation="nearest")
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if title is not None:
        ax.set_title(title, fontsize=9)
    return artist


def plot_posterior_pair(ax_p: Axes, ax_q: Axes, log_posterior, log_q, extent, kl: float,
                        title_p: str = "true p(z|x)", title_q: str = "q(z|x)") -> None:
    """The true posterior (left) and q (right) on the same grid and colour scale; q's panel
    carries p's contours (white) and KL(q || p) in nats (figure (c) of Part 3).

    Args:
        log_posterior, log_q: (R, R) arrays indexed [z2, z1]. extent: the grid's 4-tuple.
        kl: KL(q || p(.|x)) on the grid.
    """
    density_p, density_q = np.exp(as_numpy(log_posterior)), np.exp(as_numpy(log_q))
    vmax = float(max(density_p.max(), density_q.max()))
    plot_density(ax_p, density_p, extent, title_p, cmap="magma", vmax=vmax)
    plot_density(ax_q, density_q, extent, f"{title_q}\nKL = {kl:.2f} nats", cmap="magma",
                 vmax=vmax)
    xmin, xmax, ymin, ymax = square_extent(extent)
    resolution = density_p.shape[0]
    grid_x = np.linspace(xmin, xmax, resolution)
    grid_y = np.linspace(ymin, ymax, resolution)
    levels = density_p.max() * np.array([0.05, 0.3, 0.7])
    ax_q.contour(grid_x, grid_y, density_p, levels=levels, colors="white", linewidths=0.6)


def _posterior_window(grid, fraction: float = 0.01, margin: float = 1.4) -> tuple[float, float, float]:
    """(z1 centre, z2 centre, side) of a square around where p(z|x) or q exceeds ``fraction`` of
    its maximum on a ``vae.GridPosterior``, enlarged by ``margin``."""
    log_p, log_q = as_numpy(grid.log_posterior), as_numpy(grid.log_q)
    keep = (log_p > log_p.max() + math.log(fraction)) | (log_q > log_q.max() + math.log(fraction))
    rows, cols = np.nonzero(keep)
    resolution = log_p.shape[0]
    z1 = np.linspace(grid.extent[0], grid.extent[1], resolution)[cols]
    z2 = np.linspace(grid.extent[2], grid.extent[3], resolution)[rows]
    cell = max((grid.extent[1] - grid.extent[0]), (grid.extent[3] - grid.extent[2])) / (resolution - 1)
    side = margin * max(z1.max() - z1.min(), z2.max() - z2.min()) + 4 * cell
    return 0.5 * (z1.min() + z1.max()), 0.5 * (z2.min() + z2.max()), float(side)


def posterior_comparison_figure(images: Sequence, grids: Mapping[str, Sequence],
                                panel_size: float = 2.4,
                                levels: Sequence[float] = (0.05, 0.3, 0.7)) -> Figure:
    """Figure (c) of Part 3: one row per digit: the digit, then for every model the true
    posterior p(z|x) of its decoder as an image with q(z|x)'s contour lines on top, and
    KL(q || p) in nats in the panel's title.

    The panels of a row share their scale: each is a square window of the same side (the
    largest needed in the row), centred on where that model's p and q exceed 1% of their maxima. (Two models have two different
    latent planes, so the same digit's posteriors lie at unrelated places; what can be compared
    is their size and shape.) Each density is shown relative to its maximum, on one colour scale
    with a colour bar. Where q's lines enclose no colour, q puts
    mass where the posterior has none; colour outside the lines is posterior mass q misses.

    Args:
        images: the digits, each (784,) or (28, 28).
        grids: model name -> one ``vae.GridPosterior`` per digit (``vae.grid_posterior``).
        panel_size: inches per posterior panel.
        levels: q's contour lines, as fractions of its maximum.

    Returns:
        a Figure; ``fig.posterior_axes`` is the (rows, models) array of posterior panels.
    """
    names = list(grids)
    if not names or any(len(grids[name]) != len(images) for name in names):
        raise ValueError(f"need one grid per image for every model; got {len(images)} images and "
                         f"{ {name: len(grids[name]) for name in names} }")
    n_rows = len(images)
    fig = Figure(figsize=(panel_size * (0.55 + len(names)) + 0.9, panel_size * n_rows + 0.5),
                 layout="constrained")
    layout = fig.add_gridspec(n_rows, len(names) + 2, width_ratios=[0.55] + [1.0] * len(names) + [0.05])
    posterior_axes = np.empty((n_rows, len(names)), dtype=object)
    colour = colormaps["magma"]
    image = None
    for row, digit in enumerate(images):
        ax_digit = fig.add_subplot(layout[row, 0])
        ax_digit.imshow(as_numpy(digit).reshape(28, 28), cmap="gray_r")
        ax_digit.set_xticks([])
        ax_digit.set_yticks([])
        windows = [_posterior_window(grids[name][row]) for name in names]
        side = max(window[2] for window in windows)
        for j, name in enumerate(names):
            grid = grids[name][row]
            ax = fig.add_subplot(layout[row, 1 + j])
            posterior_axes[row, j] = ax
            density_p = np.exp(as_numpy(grid.log_posterior))
            image = ax.imshow(density_p / density_p.max(), origin="lower", extent=grid.extent,
                              cmap=colour, vmin=0.0, vmax=1.0, aspect="equal",
                              interpolation="nearest")
            density_q = np.exp(as_numpy(grid.log_q))
            resolution = density_q.shape[0]
            ax.contour(np.linspace(grid.extent[0], grid.extent[1], resolution),
                       np.linspace(grid.extent[2], grid.extent[3], resolution), density_q,
                       levels=density_q.max() * np.asarray(levels), colors="#4dd0e1",
                       linewidths=0.9)
            ax.set_facecolor(colour(0.0))  # beyond this model's grid the posterior is ~0
            centre = windows[j][:2]
            ax.set_xlim(centre[0] - side / 2, centre[0] + side / 2)
            ax.set_ylim(centre[1] - side / 2, centre[1] + side / 2)
            ax.tick_params(labelsize=7)
            ax.set_title(f"{name}: KL(q || p) = {grid.kl:.2f} nats", fontsize=9)
    colour_bar = fig.colorbar(image, cax=fig.add_subplot(layout[:, -1]))
    colour_bar.set_label("true posterior p(z|x) / its maximum", fontsize=9)
    fig.suptitle("colour: true posterior p(z|x) of each model's decoder; lines: q(z|x) at "
                 + ", ".join(f"{100 * level:g}" for level in levels) + "% of its maximum",
                 fontsize=9)
    fig.posterior_axes = posterior_axes
    return fig


def plot_learning_curves(ax: Axes, epochs, values, label: str, color=None,
                         linestyle: str = "-"):
    """Mean over seeds with a min-max band (figure (d) of Part 3, as in the seeds' "Training
    VAEs" figure).

    Args:
        epochs: (E,). values: (n_seeds, E) bounds. label, color, linestyle: of the mean line.

    Returns:
        the mean line.
    """
    epochs, values = as_numpy(epochs), np.atleast_2d(as_numpy(values))
    if values.shape[1] != epochs.shape[0]:
        raise ValueError(f"values must have shape (n_seeds, {epochs.shape[0]}); received "
                         f"{values.shape}")
    (line,) = ax.plot(epochs, values.mean(0), label=f"{label} ({values.shape[0]} seeds)",
                      color=color, linestyle=linestyle)
    ax.fill_between(epochs, values.min(0), values.max(0), color=line.get_color(), alpha=0.2,
                    linewidth=0)
    ax.set_xlabel("epoch")
    return line


def latent_decoder_figure(model, z1: float, z2: float, codes=None, labels=None, extent=3.0,
                          panel_size: float = 2.8) -> Figure:
    """Figure (e) of Part 3: a point of the latent plane (left, over the test set's codes when
    given) and the decoder's mean image sigmoid(logits(z)) there (right).

    Args:
        model: a ``vae.VAE`` with a 2-D latent. z1, z2: the latent point.
        codes, labels: optional (n, 2) codes and (n,) digits drawn behind the marker.
        extent: half-width or 4-tuple of the latent panel.

    Returns:
        a Figure; ``fig.decoded`` holds the (28, 28) image drawn (for tests).
    """
    if getattr(model, "latent_dim", None) != 2:
        raise ValueError("latent_decoder_figure needs a model with a 2-D latent")
    device = next(model.parameters()).device
    with torch.no_grad():
        z = torch.tensor([[float(z1), float(z2)]], device=device)
        decoded = as_numpy(torch.sigmoid(model.decode(z)).cpu()).reshape(28, 28)
    fig = Figure(figsize=(2 * panel_size, panel_size))
    ax_latent, ax_image = fig.subplots(1, 2)
    if codes is not None:
        plot_latent_codes(ax_latent, codes, labels, extent, point_size=1.0, legend=False)
    else:
        xmin, xmax, ymin, ymax = square_extent(extent)
        ax_latent.set_xlim(xmin, xmax)
        ax_latent.set_ylim(ymin, ymax)
        ax_latent.set_aspect("equal")
    ax_latent.plot([z1], [z2], marker="x", color="black", markersize=10, markeredgewidth=2)
    ax_latent.set_title(f"z = ({z1:.2f}, {z2:.2f})", fontsize=9)
    ax_image.imshow(decoded, cmap="gray_r", vmin=0, vmax=1)
    ax_image.set_xticks([])
    ax_image.set_yticks([])
    ax_image.set_title("decoder mean E[x | z]", fontsize=9)
    fig.tight_layout()
    fig.decoded = decoded
    return fig


# --------------------------------------------------------------------------- Part 4: VAE, 40-D latent


def tile_images(images, num_columns: int, image_side: int = 28) -> np.ndarray:
    """Tile n flattened images (n, side * side) into one array, row by row.

    Args:
        images: (n, side * side) values in [0, 1]. num_columns: tiles per row.

    Returns:
        (rows * side, num_columns * side); empty tiles of the last row are 0.
    """
    images = as_numpy(images)
    if images.ndim != 2 or images.shape[1] != image_side * image_side:
        raise ValueError(f"images must have shape (n, {image_side * image_side}); received "
                         f"{images.shape}")
    if num_columns < 1:
        raise ValueError(f"num_columns must be >= 1, got {num_columns}")
    count = images.shape[0]
    rows = max(1, math.ceil(count / num_columns))
    canvas = np.zeros((rows * num_columns, image_side * image_side), dtype=images.dtype)
    canvas[:count] = images
    tiles = canvas.reshape(rows, num_columns, image_side, image_side)
    return tiles.transpose(0, 2, 1, 3).reshape(rows * image_side, num_columns * image_side)


def plot_image_grid(ax: Axes, images, num_columns: int, title: str | None = None):
    """Draw flattened 28x28 images as one tiled picture (black digits on white)."""
    artist = ax.imshow(tile_images(images, num_columns), cmap="gray_r", vmin=0, vmax=1,
                       interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=9)
    return artist


def reconstructions_figure(originals, reconstructions, title: str | None = None,
                           panel_height: float = 1.3) -> Figure:
    """Test digits (top row) and their reconstructions (bottom row).

    Args:
        originals: (n, 784) binary test images.
        reconstructions: (n, 784) decoder means E[x | z_K] with z_K ~ q_K(z | x).
        title: the figure's title (e.g. the flow length K).

    Returns:
        a Figure; ``fig.reconstructions`` holds the (n, 784) array drawn (for tests).
    """
    originals, reconstructions = as_numpy(originals), as_numpy(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"originals {originals.shape} and reconstructions "
                         f"{reconstructions.shape} must have the same shape (n, 784)")
    count = originals.shape[0]
    fig = Figure(figsize=(0.75 * count, 2 * panel_height))
    ax_top, ax_bottom = fig.subplots(2, 1)
    plot_image_grid(ax_top, originals, count, title="test digits x")
    plot_image_grid(ax_bottom, reconstructions, count, title="reconstructions E[x | z_K], z_K ~ q_K(z | x)")
    if title is not None:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.reconstructions = reconstructions
    return fig


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
    ax.set_xlabel("flow length K")
    ax.set_ylabel("nats (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return ax


def gap_split_figure(gaps: Mapping, panel_size: float = 3.4) -> Figure:
    """Figure (g) of Part 3: where each model's bound loses, from ``inference_gaps.InferenceGaps``.

    Left: per model, the mean approximation gap KL(q* || p(z|x)) and the mean amortization gap
    KL(q_enc || p) - KL(q* || p) stacked (their sum is the mean KL(q_enc || p)), with error bars
    of one standard error over images. Right: the distribution over images of both gaps (the
    fraction of images whose gap is at most the value; symmetric-log axis, as a few images
    have gaps ten times the median).

    Args:
        gaps: model name -> ``InferenceGaps`` (the same images for every model).

    Returns:
        a Figure.
    """
    names = list(gaps)
    if not names:
        raise ValueError("need at least one model's gaps")
    fig = Figure(figsize=(2.4 * panel_size, panel_size), layout="constrained")
    ax_bars, ax_cdf = fig.subplots(1, 2, width_ratios=[1, 1.4])
    colours = {"approximation": "C0", "amortization": "C1"}
    for i, name in enumerate(names):
        bottom = 0.0
        for part, colour in colours.items():
            values = as_numpy(getattr(gaps[name], part)).astype(float)
            mean, se = values.mean(), values.std(ddof=1) / math.sqrt(len(values))
            ax_bars.bar(i, mean, bottom=bottom, color=colour, width=0.6,
                        label=f"{part} gap" if i == 0 else None)
            ax_bars.errorbar(i, bottom + mean, yerr=se, color="black", capsize=3, linewidth=1)
            ax_bars.text(i + 0.33, bottom + mean / 2, f"{mean:.2f}", va="center", fontsize=8)
            bottom += mean
        for j, (part, colour) in enumerate(colours.items()):
            values = np.sort(as_numpy(getattr(gaps[name], part)).astype(float))
            fraction = np.arange(1, len(values) + 1) / len(values)
            ax_cdf.step(values, fraction, where="post", color=colour,
                        linestyle=["-", "--", ":", "-."][i % 4], label=f"{name}: {part}")
    ax_bars.set_xticks(range(len(names)), names)
    ax_bars.set_xlim(-0.6, len(names) - 0.2)
    ax_bars.set_ylabel("mean over images [nats]")
    ax_bars.set_title("KL(q_enc || p(z|x)) = approximation + amortization", fontsize=9)
    ax_bars.legend(fontsize=8, loc="upper left")
    ax_cdf.set_xscale("symlog", linthresh=0.1)
    ax_cdf.set_xlabel("gap of one image [nats]")
    ax_cdf.set_ylabel("fraction of images with a smaller gap")
    ax_cdf.set_title(f"{len(as_numpy(gaps[names[0]].log_px))} test images", fontsize=9)
    ax_cdf.grid(alpha=0.3)
    ax_cdf.legend(fontsize=8, loc="lower right")
    return fig
