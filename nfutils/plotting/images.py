"""Images of a VAE: flattened digits tiled into one picture, test digits above their
reconstructions (what a VAE whose latent space is too large to draw still lets one see).
"""

from __future__ import annotations

import math
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .common import as_numpy, bare_axes

__all__ = ["tile_images", "plot_image_grid", "reconstructions_figure"]


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
