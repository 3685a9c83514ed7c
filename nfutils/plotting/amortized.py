"""Figures of a conditional flow: one amortized flow q(z | c) against a family of targets p(z | c).

For a condition c (an angle θ, or an angle and a radius) the target is exp(-U(z; c)) of a
conditional energy (``amortized.ring_energy``), and q(z | c) is what one forward pass of the
amortizer gives. The figures put the two side by side on one colour scale, draw q under the
target's contour lines for many conditions at once, compare the amortized KL with flows fitted
to one condition each (the amortization gap), and animate a sweep over the conditions.
Densities and grids follow ``plotting.common``'s conventions.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from .common import as_numpy, cell_centres, density_on_grid, histogram2d, plot_contours, plot_density

__all__ = ["conditional_densities", "plot_conditional_pair", "conditional_pair_figure",
           "conditional_grid", "plot_amortization_gap",
           "conditional_animation"]


def _check_one_panel_per_label(labels: Sequence, q_densities: Sequence, target_densities: Sequence) -> None:
    if not (len(labels) == len(q_densities) == len(target_densities)) or not labels:
        raise ValueError(
            f"need as many q and target densities as labels (>= 1); got {len(labels)} labels, "
            f"{len(q_densities)} q densities, {len(target_densities)} target densities")


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
    target_density, _ = density_on_grid(lambda z: -energy(z.unsqueeze(0), condition)[0], extent,
                                        bins, normalize=True)
    param = next(model.parameters())
    with torch.no_grad():
        z_k, _ = model.rsample(condition.to(dtype=param.dtype, device=param.device), num_samples,
                               generator=generator)
    return target_density, histogram2d(z_k[0], extent, bins)


def plot_conditional_pair(ax_target: Axes, ax_q: Axes, target_density, q_density, extent=4.0,
                          title_target: str | None = "target p(z | θ)",
                          title_q: str | None = "amortized q(z | θ), samples",
                          vmax: float | None = None):
    """Target density and q's empirical density side by side, on one colour scale
    (``vmax`` defaults to the target's maximum). Returns the two images."""
    target_density = as_numpy(target_density)
    q_density = as_numpy(q_density)
    if target_density.shape != q_density.shape or target_density.ndim != 2:
        raise ValueError(f"target_density and q_density must have the same shape (R, R); received "
                         f"{target_density.shape} and {q_density.shape}")
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


def conditional_grid(labels: Sequence[str], q_densities: Sequence, target_densities: Sequence,
                     extent=4.0, ncols: int = 5, panel_size: float = 1.9,
                     suptitle: str | None = None, levels: int = 4) -> Figure:
    """One panel per condition: q's density as an image with the target's contour lines on top
    (white), e.g. 10 angles on a 2 x 5 grid. Where the two disagree, colour lies outside the
    lines or lines enclose no colour.

    Args:
        labels: one title per panel (e.g. "θ = 36°, KL 0.04").
        q_densities, target_densities: the images, (R, R) each, as many as labels.
        levels: contour lines per panel, evenly spaced between 0 and the target's maximum.
    """
    _check_one_panel_per_label(labels, q_densities, target_densities)
    ncols = max(1, min(ncols, len(labels)))
    nrows = math.ceil(len(labels) / ncols)
    # each row: a square panel plus room for its title; constrained layout keeps titles clear
    fig = Figure(figsize=(panel_size * ncols, (panel_size + 0.3) * nrows + (0.35 if suptitle else 0.0)),
                 layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, label, q_density, target_density in zip(axes.flat, labels, q_densities, target_densities):
        target_density = as_numpy(target_density)
        if target_density.ndim != 2 or target_density.shape[0] != target_density.shape[1]:
            raise ValueError(f"target_density must be square (R, R); received {target_density.shape}")
        vmax = float(target_density.max())
        plot_density(ax, q_density, extent, label, vmax=vmax)
        z1, z2 = cell_centres(extent, target_density.shape[0])
        plot_contours(ax, target_density, z1, z2, levels=np.linspace(0.0, vmax, levels + 2)[1:-1])
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
        raise ValueError(f"angles, kl_amortized and kl_per_target must be 1-D of one length; got "
                         f"{angles.shape}, {kl_amortized.shape}, {kl_per_target.shape}")
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
    ax.set(xlabel="θ [degrees]", ylabel="KL(q || p) [nats]")
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

    _check_one_panel_per_label(labels, q_densities, target_densities)
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
