"""Figures of 2-D flows fitted to the paper's target densities.

The target exp(-U(z)) of an energy U (the paper's potentials, Table 1), the samples of a flow
after each of its layers, one planar layer acting on the plane, and the paper's Figure 3: the
densities q_K reached by planar, radial and NICE flows of several flow lengths K, and the final
KL(q || p) against K (Figure 3d). Densities and grids follow ``plotting.common``'s conventions.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from .. import flows
from .common import (as_numpy, bare_axes, density_on_grid, histogram2d, plot_density,
                     set_square_limits)

__all__ = ["flow_histogram", "layer_indices", "plot_potential", "plot_layer_samples",
           "layer_samples_figure", "layer_extent", "plot_planar_layer", "figure3_grid",
           "plot_kl_against_length"]


# --------------------------------------------------------------------------- densities and samples


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


def layer_indices(flow_length: int) -> list[int]:
    """The layers shown in a samples-from-each-layer figure: 0, 1, 5, 10, 20, ..., K."""
    if flow_length < 0:
        raise ValueError(f"flow_length must be >= 0, got {flow_length}")
    candidates = [0, 1, 5] + list(range(10, flow_length, 10)) + [flow_length]
    return sorted({k for k in candidates if k <= flow_length})


def plot_potential(ax: Axes, energy: Callable[[Tensor], Tensor], extent=4.0, resolution: int = 200,
                   title: str | None = None, cmap: str = "viridis"):
    """Draw the unnormalized target exp(-U(z)) of an energy U on a grid (the paper's Figure 3a).

    Args:
        energy: U, (n, 2) -> (n,) (e.g. ``potentials.U1``).
        extent: half-width or (xmin, xmax, ymin, ymax). resolution: cells per side.

    Returns:
        the image.
    """
    density, _ = density_on_grid(lambda z: -energy(z), extent, resolution)
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
    points = ax.scatter(z[:, 0], z[:, 1], c=color_values, s=point_size, cmap=cmap, vmin=0.0,
                        vmax=vmax, linewidths=0, rasterized=True)
    set_square_limits(ax, extent)
    bare_axes(ax, title)
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
    flow_length = len(layers) - 1
    indices = layer_indices(flow_length) if indices is None else list(indices)
    if any(k < 0 or k > flow_length for k in indices):
        raise ValueError(f"layer indices must lie in [0, {flow_length}]; got {indices}")
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




# --------------------------------------------------------------------------- one planar layer


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
        ax.set(xlim=(-extent - 1, extent + 1), ylim=(-extent - 1, extent + 1), aspect="equal")
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


# --------------------------------------------------------------------------- Figure 3


def figure3_grid(target_densities: Mapping[str, np.ndarray],
                 panels: Mapping[tuple[str, str, int], tuple[np.ndarray, float]],
                 kinds: Sequence[str] = ("planar", "radial"),
                 flow_lengths: Sequence[int] = (2, 8, 32),
                 extent=4.0, panel_size: float = 1.6) -> Figure:
    """The paper's Figure 3 as a grid: one row per potential; the target, then q_K for each
    flow kind and flow length K, with the final KL(q || p) in nats written in each panel.

    Args:
        target_densities: name -> exp(-U) on a grid (R, R).
        panels: (name, kind, K) -> (density image of q_K (R', R'), final KL in nats).
        kinds, flow_lengths: column order.
    """
    names = list(target_densities)
    columns = [(kind, flow_length) for kind in kinds for flow_length in flow_lengths]
    missing = [(n, k, K) for n in names for k, K in columns if (n, k, K) not in panels]
    if missing:
        raise ValueError(f"figure3_grid: no panel for {missing[:3]}{' ...' if len(missing) > 3 else ''}")
    fig = Figure(figsize=(panel_size * (1 + len(columns)), panel_size * len(names) + 0.3))
    axes = fig.subplots(len(names), 1 + len(columns), squeeze=False)
    for row, name in enumerate(names):
        plot_density(axes[row, 0], target_densities[name], extent,
                     title="target exp(-U)" if row == 0 else None)
        axes[row, 0].set_ylabel(name, fontsize=10)
        for col, (kind, flow_length) in enumerate(columns, start=1):
            density, kl = panels[(name, kind, flow_length)]
            ax = axes[row, col]
            plot_density(ax, density, extent, title=f"{kind} K={flow_length}" if row == 0 else None,
                         vmax=float(np.percentile(density, 99.8)) or None)
            ax.text(0.03, 0.04, f"KL {kl:.2f}", transform=ax.transAxes, color="white", fontsize=8)
    fig.tight_layout()
    return fig


def plot_kl_against_length(ax: Axes, flow_lengths: Sequence[int],
                           kl: Mapping[tuple[str, str], Sequence[float]],
                           title: str | None = "KL(q || p) against flow length"):
    """The paper's Figure 3d: final KL(q || p) in nats against the flow length K, one line per
    (potential, kind); the colour names the potential, the line style the kind (solid for the
    first kind met, dashed for the second, ...). Returns the drawn lines.

    Args:
        flow_lengths: K of each point, e.g. (2, 8, 32) (drawn on a log2 axis).
        kl: (name, kind) -> final KL for each K of ``flow_lengths``.
    """
    flow_lengths = list(flow_lengths)
    names = list(dict.fromkeys(name for name, _ in kl))
    kinds = list(dict.fromkeys(kind for _, kind in kl))
    styles = ["-", "--", ":", "-."]
    colours = [f"C{i}" for i in range(10)]
    lines = []
    for (name, kind), values in kl.items():
        values = list(values)
        if len(values) != len(flow_lengths):
            raise ValueError(f"{name} {kind}: {len(values)} KL values for {len(flow_lengths)} "
                             f"flow lengths")
        marker = "o" if kinds.index(kind) == 0 else "s"
        lines += ax.plot(flow_lengths, values, styles[kinds.index(kind) % 4], marker=marker, markersize=4,
                         color=colours[names.index(name) % 10], label=f"{name} {kind}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(flow_lengths, [str(k) for k in flow_lengths])
    ax.set(xlabel="flow length K", ylabel="KL(q || p) [nats]")
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.legend(fontsize=7, ncol=2)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return lines
