"""Part 4's figures: a VAE with a 40-D latent on binarized MNIST, whose posteriors can no
longer be drawn, so the figures show images and numbers.

Flattened digits tiled into one picture, test digits above their reconstructions, and the
paper's Figure 4: -ln p(x) and the bound -ELBO against the flow length K.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .common import as_numpy, bare_axes

__all__ = [
    "tile_images",
    "plot_image_grid",
    "reconstructions_figure",
    "plot_bound_against_flow_length",
]


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
    bare_axes(ax, title)
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
