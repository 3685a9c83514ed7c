"""Figures of a VAE with a 2-D latent, where posteriors can be seen and integrated.

The codes of the test set in the latent plane, the decoder's images over that plane, the true
posterior p(z|x) next to q(z|x) (both on a ``posterior_grid.GridPosterior``), learning curves
over seeds, a latent point with its decoded digit, and where each model's bound loses (the
approximation and amortization gaps, ``inference_gaps.InferenceGaps``).

A ``posterior_grid.GridPosterior`` holds its densities on the grid points of
``vae.grid_posterior``: R points per side, the first and last on the edges of ``grid.extent``
(``_lattice``).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .common import as_numpy, bare_axes, plot_contours, set_square_limits, square_extent

__all__ = ["DIGIT_COLORS", "plot_latent_codes", "decoded_manifold", "plot_manifold",
           "posterior_comparison_figure", "plot_learning_curves",
           "latent_decoder_figure", "gap_split_figure"]

DIGIT_COLORS = "tab10"


def plot_latent_codes(ax: Axes, z, labels, extent=None, point_size: float = 1.5,
                      title: str | None = None, legend: bool = True):
    """The latent codes of a data set (e.g. the posterior means of the test set), one colour
    per digit. Rasterized, so 10,000 points stay small in a PNG/PDF.

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
        set_square_limits(ax, extent)
    ax.set(aspect="equal", xlabel="$z_1$", ylabel="$z_2$")
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


def _lattice(extent, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """The z1 and z2 values of a grid of ``resolution`` points per side whose first and last
    points lie on the edges of ``extent`` (``vae.grid_posterior``'s grid, ``decoded_manifold``'s
    tiles)."""
    xmin, xmax, ymin, ymax = square_extent(extent)
    return np.linspace(xmin, xmax, resolution), np.linspace(ymin, ymax, resolution)


def _pixel_box(extent, resolution: int) -> tuple[float, float, float, float]:
    """The box an image of a density on ``_lattice(extent, resolution)`` covers: the extent
    widened by half a cell on every side, so that each pixel is centred on its grid point (and
    contour lines drawn at the grid points sit on the image)."""
    xmin, xmax, ymin, ymax = square_extent(extent)
    if resolution < 2:
        return (xmin, xmax, ymin, ymax)
    half_x, half_y = 0.5 * (xmax - xmin) / (resolution - 1), 0.5 * (ymax - ymin) / (resolution - 1)
    return (xmin - half_x, xmax + half_x, ymin - half_y, ymax + half_y)


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
    z1, z2 = (torch.as_tensor(values, dtype=torch.float32) for values in _lattice(extent, num_per_side))
    rows, cols = torch.meshgrid(z2.flip(0), z1, indexing="ij")  # top row = largest z2
    z = torch.stack([cols, rows], -1).reshape(-1, 2)
    device = next(model.parameters()).device
    with torch.no_grad():
        means = torch.sigmoid(model.decode(z.to(device))).cpu()
    tiles = means.reshape(num_per_side, num_per_side, image_side, image_side)
    return as_numpy(tiles.permute(0, 2, 1, 3).reshape(num_per_side * image_side, -1))


def plot_manifold(ax: Axes, image, extent=3.0, title: str | None = None, image_side: int = 28):
    """Draw ``decoded_manifold``'s image with the latent coordinates on the axes: each tile is
    centred on the point z it was decoded from.

    Args:
        image: (n * side, n * side) from ``decoded_manifold``. extent: the one given to it.
    """
    image = as_numpy(image)
    box = _pixel_box(extent, image.shape[0] // image_side)
    artist = ax.imshow(image, cmap="gray_r", vmin=0, vmax=1, extent=box, interpolation="nearest")
    ax.set(xlabel="$z_1$", ylabel="$z_2$")
    if title is not None:
        ax.set_title(title, fontsize=9)
    return artist


def _posterior_window(grid, fraction: float = 0.01, margin: float = 1.4) -> tuple[float, float, float]:
    """(z1 centre, z2 centre, side) of a square around where p(z|x) or q exceeds ``fraction`` of
    its maximum on a ``posterior_grid.GridPosterior``, enlarged by ``margin``."""
    log_p, log_q = as_numpy(grid.log_posterior), as_numpy(grid.log_q)
    keep = (log_p > log_p.max() + math.log(fraction)) | (log_q > log_q.max() + math.log(fraction))
    rows, cols = np.nonzero(keep)
    resolution = log_p.shape[0]
    z1_values, z2_values = _lattice(grid.extent, resolution)
    z1, z2 = z1_values[cols], z2_values[rows]
    cell = max((grid.extent[1] - grid.extent[0]), (grid.extent[3] - grid.extent[2])) / (resolution - 1)
    side = margin * max(z1.max() - z1.min(), z2.max() - z2.min()) + 4 * cell
    return 0.5 * (z1.min() + z1.max()), 0.5 * (z2.min() + z2.max()), float(side)


def posterior_comparison_figure(images: Sequence, grids: Mapping[str, Sequence],
                                panel_size: float = 2.4,
                                levels: Sequence[float] = (0.05, 0.3, 0.7)) -> Figure:
    """One row per digit: the digit, then for every model the true
    posterior p(z|x) of its decoder as an image with q(z|x)'s contour lines on top, and
    KL(q || p) in nats in the panel's title.

    The panels of a row share their scale: each is a square window of the same side (the
    largest needed in the row), centred on where that model's p and q exceed 1% of their
    maxima. (Two models have two different latent planes, so the same digit's posteriors lie at
    unrelated places; what can be compared is their size and shape.) Each density is shown
    relative to its maximum, on one colour scale with a colour bar. Where q's lines enclose no
    colour, q puts mass where the posterior has none; colour outside the lines is posterior mass
    q misses.

    Args:
        images: the digits, each (784,) or (28, 28).
        grids: model name -> one ``posterior_grid.GridPosterior`` per digit
            (``vae.grid_posterior``).
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
        bare_axes(ax_digit)
        windows = [_posterior_window(grids[name][row]) for name in names]
        side = max(window[2] for window in windows)
        for j, name in enumerate(names):
            grid = grids[name][row]
            ax = fig.add_subplot(layout[row, 1 + j])
            posterior_axes[row, j] = ax
            density_p = np.exp(as_numpy(grid.log_posterior))
            image = ax.imshow(density_p / density_p.max(), origin="lower",
                              extent=_pixel_box(grid.extent, density_p.shape[0]),
                              cmap=colour, vmin=0.0, vmax=1.0, aspect="equal",
                              interpolation="nearest")
            density_q = np.exp(as_numpy(grid.log_q))
            plot_contours(ax, density_q, *_lattice(grid.extent, density_q.shape[0]),
                          levels=density_q.max() * np.asarray(levels), color="#4dd0e1",
                          linewidth=0.9)
            ax.set_facecolor(colour(0.0))  # beyond this model's grid the posterior is ~0
            centre = windows[j][:2]
            ax.set(xlim=(centre[0] - side / 2, centre[0] + side / 2),
                   ylim=(centre[1] - side / 2, centre[1] + side / 2))
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
    """Mean over seeds with a min-max band.

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
    """A point of the latent plane (left, over the test set's codes when
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
        set_square_limits(ax_latent, extent)
    ax_latent.plot([z1], [z2], marker="x", color="black", markersize=10, markeredgewidth=2)
    ax_latent.set_title(f"z = ({z1:.2f}, {z2:.2f})", fontsize=9)
    ax_image.imshow(decoded, cmap="gray_r", vmin=0, vmax=1)
    bare_axes(ax_image, "decoder mean E[x | z]")
    fig.tight_layout()
    fig.decoded = decoded
    return fig


def gap_split_figure(gaps: Mapping, panel_size: float = 3.4) -> Figure:
    """Where each model's bound loses, from ``inference_gaps.InferenceGaps``.

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
            fraction = np.arange(1, len(values) + 1) / len(values)  # of images with a smaller gap
            ax_cdf.step(np.sort(values), fraction, where="post", color=colour,
                        linestyle=["-", "--", ":", "-."][i % 4], label=f"{name}: {part}")
    ax_bars.set_xticks(range(len(names)), names)
    ax_bars.set(xlim=(-0.6, len(names) - 0.2), ylabel="mean over images [nats]")
    ax_bars.set_title("KL(q_enc || p(z|x)) = approximation + amortization", fontsize=9)
    ax_bars.legend(fontsize=8, loc="upper left")
    ax_cdf.set_xscale("symlog", linthresh=0.1)
    ax_cdf.set(xlabel="gap of one image [nats]", ylabel="fraction of images with a smaller gap")
    ax_cdf.set_title(f"{len(as_numpy(gaps[names[0]].log_px))} test images", fontsize=9)
    ax_cdf.grid(alpha=0.3)
    ax_cdf.legend(fontsize=8, loc="lower right")
    return fig
